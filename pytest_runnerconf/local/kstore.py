"""The local cluster's Kubernetes object store: plain JSON dicts, one resourceVersion counter, watches."""

from __future__ import annotations

import builtins
import copy
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pytest_runnerconf.local.errors import LocalError

NAMESPACED_KINDS = frozenset({"Pod", "Event", "Secret", "ConfigMap", "PodDisruptionBudget"})
KINDS = NAMESPACED_KINDS | {"Namespace", "Node"}
# Kinds outside the core group, with their group/version (the rest are core "v1").
API_VERSIONS = {"PodDisruptionBudget": "policy/v1"}

# Fields each kind may be selected on, as the real API server registers them (plus metadata.*).
_FIELDS: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "Event": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "Secret": frozenset({"type"}),
    "ConfigMap": frozenset(),
    "PodDisruptionBudget": frozenset(),
    "Namespace": frozenset({"status.phase"}),
}
_META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})

DeleteHook = Callable[[str, str, int], None]
# Called with (kind, object) before an object is stored: may change it (defaulting) or raise a StoreError
# (validation, admission), as the API server's create path does.
AdmissionHook = Callable[[str, dict[str, Any]], None]
ExpireHook = Callable[[str, str, dict[str, Any]], bool]


class StoreError(LocalError):
    """A store operation was refused; code/reason are what the Kubernetes API answers with."""

    code = 500
    reason = "InternalError"


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Gone(StoreError):
    code = 410
    reason = "Expired"


class BadRequest(StoreError):
    code = 400
    reason = "BadRequest"


class Invalid(StoreError):
    """The object fails the API server's validation (422)."""

    code = 422
    reason = "Invalid"


class Forbidden(StoreError):
    """An admission plugin refused the object (403)."""

    code = 403
    reason = "Forbidden"


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_version(kind: str) -> str:
    """The group/version a kind is served under ("v1" for the core kinds, "policy/v1" for PDBs)."""
    return API_VERSIONS.get(kind, "v1")


def plural(kind: str) -> str:
    """Resource name of a kind, as the API's error messages spell it ("pods", "namespaces")."""
    return kind.lower() + "s"


# ---------------------------------------------------------------- selectors


@dataclass(frozen=True)
class _LabelReq:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return present
            case "!":
                return not present
            case "=" | "in":
                return present and value in self.values
            case _:  # "!=" and "notin" also match objects without the label, as Kubernetes does
                return not present or value not in self.values


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RX = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)\s*$")
_EQ_RX = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<val>{_VALUE})\s*$")
_EXISTS_RX = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _parse_label_req(text: str) -> _LabelReq:
    if m := _SET_RX.match(text):
        values = frozenset(v.strip() for v in m["vals"].split(",") if v.strip())
        return _LabelReq(m["key"], m["op"], values)
    if m := _EQ_RX.match(text):
        return _LabelReq(m["key"], "!=" if m["op"] == "!=" else "=", frozenset({m["val"]}))
    if m := _EXISTS_RX.match(text):
        return _LabelReq(m["key"], "!" if m["neg"] else "exists")
    raise BadRequest(f"unable to parse requested label selector: {text.strip()!r}")


def parse_label_selector(selector: str | None) -> tuple[_LabelReq, ...]:
    if not selector or not selector.strip():
        return ()
    return tuple(_parse_label_req(part) for part in _split_top_level(selector))


@dataclass(frozen=True)
class _FieldReq:
    path: str
    value: str
    negate: bool

    def matches(self, obj: dict[str, Any]) -> bool:
        return (_field_value(obj, self.path) == self.value) != self.negate


def _field_value(obj: dict[str, Any], path: str) -> str:
    if path == "source":  # the real field selector "source" means source.component
        path = "source.component"
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def parse_field_selector(kind: str, selector: str | None) -> tuple[_FieldReq, ...]:
    if not selector or not selector.strip():
        return ()
    reqs = []
    for part in selector.split(","):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise BadRequest(f"invalid selector: '{selector}'; can't understand '{part}'")
        path, op, value = m.groups()
        if path not in _META_FIELDS and path not in _FIELDS.get(kind, frozenset()):
            raise BadRequest(f"field label not supported: {path}")
        reqs.append(_FieldReq(path, value, op == "!="))
    return tuple(reqs)


@dataclass(frozen=True)
class Selector:
    """Namespace + label + field filter of a list or watch."""

    namespace: str | None
    labels: tuple[_LabelReq, ...]
    fields: tuple[_FieldReq, ...]

    @classmethod
    def parse(
        cls, kind: str, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Selector:
        return cls(
            namespace or None,
            parse_label_selector(label_selector),
            parse_field_selector(kind, field_selector),
        )

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(r.matches(obj) for r in self.fields)


# ---------------------------------------------------------------- the store


@dataclass(frozen=True)
class _Change:
    rv: int
    type: str
    kind: str
    obj: dict[str, Any]  # the object after the change (the final object for DELETED)
    prev: dict[str, Any] | None  # before the change, so a watch can tell "stopped matching"


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class KubeStore:
    """Thread-safe store of Kubernetes objects (JSON dicts) with resourceVersions and watches."""

    def __init__(self, history_limit: int = 20000) -> None:
        self._cond = threading.Condition()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._rv = 0
        self._history: dict[int, _Change] = {}  # rv -> change; rvs are consecutive, so this is a window
        self._oldest = 1
        # kind -> the resourceVersion its watch cache was last re-initialised at. A real API server keeps one
        # watch cache per resource, so a reset of the pods' cache sends 410 to pod watches only.
        self._reset_at: dict[str, int] = {}
        self._history_limit = history_limit
        # kind -> hook(namespace, name, grace_s) the API's DELETE calls instead of removing at once
        self.on_delete: dict[str, DeleteHook] = {}
        # run in order on every create (defaulting first, then validation and admission plugins)
        self.admission: list[AdmissionHook] = []
        # Called under the lock with (type, kind, object) as each change is recorded; True drops the whole
        # kind's history, that change included, as its watch cache re-initialised then: watches of that kind
        # behind it get 410.
        self.expire_history: ExpireHook | None = None

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    # -- writes (all under the lock; each bumps the one counter and records one change)

    def _record(self, type_: str, kind: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        self._history[self._rv] = _Change(self._rv, type_, kind, obj, prev)
        while len(self._history) > self._history_limit:
            del self._history[self._oldest]
            self._oldest += 1
        if self.expire_history is not None and self.expire_history(type_, kind, obj):
            self._reset_at[kind] = self._rv
        self._cond.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        kind = _check_kind(obj.get("kind"))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _random_suffix()
        if not meta.get("name"):
            raise BadRequest(
                f"{kind} is invalid: metadata.name: Required value: name or generateName is required"
            )
        if kind in NAMESPACED_KINDS and not meta.get("namespace"):
            raise BadRequest(f"{kind} is invalid: metadata.namespace: Required value")
        if kind not in NAMESPACED_KINDS:
            meta.pop("namespace", None)
        obj.setdefault("apiVersion", api_version(kind))
        for admit in self.admission:
            admit(kind, obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339_now()
        with self._cond:
            table = self._objects[kind]
            if _key(obj) in table:
                raise AlreadyExists(f'{plural(kind)} "{meta["name"]}" already exists')
            self._bump(obj)
            table[_key(obj)] = obj
            self._record("ADDED", kind, obj, None)
            return copy.deepcopy(obj)

    def update(
        self, kind: str, namespace: str | None, name: str, mutate: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Apply `mutate` to a copy of the object and store it atomically; identity fields cannot change."""
        kind = _check_kind(kind)
        key = _obj_key(kind, namespace, name)
        with self._cond:
            current = self._objects[kind].get(key)
            if current is None:
                raise NotFound(f'{plural(kind)} "{name}" not found')
            new = copy.deepcopy(current)
            mutate(new)
            new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
            new["metadata"] = new.get("metadata") or {}
            for field in ("name", "namespace", "uid", "creationTimestamp"):
                if field in current["metadata"]:
                    new["metadata"][field] = current["metadata"][field]
            self._bump(new)
            self._objects[kind][key] = new
            self._record("MODIFIED", kind, new, current)
            return copy.deepcopy(new)

    def delete(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Remove at once; returns the final object, or None when it was not there."""
        kind = _check_kind(kind)
        key = _obj_key(kind, namespace, name)
        with self._cond:
            current = self._objects[kind].pop(key, None)
            if current is None:
                return None
            final = copy.deepcopy(current)
            self._bump(final)
            self._record("DELETED", kind, final, current)
            return copy.deepcopy(final)

    def wake(self) -> None:
        """Wake every blocked watch so it re-checks its stop event."""
        with self._cond:
            self._cond.notify_all()

    # -- reads

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        kind = _check_kind(kind)
        key = _obj_key(kind, namespace, name)
        with self._cond:
            obj = self._objects[kind].get(key)
            if obj is None:
                raise NotFound(f'{plural(kind)} "{name}" not found')
            return copy.deepcopy(obj)

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Matching objects sorted by (namespace, name), and the resourceVersion of this snapshot."""
        kind = _check_kind(kind)
        selector = Selector.parse(kind, namespace, label_selector, field_selector)
        with self._cond:
            items = [copy.deepcopy(o) for k, o in sorted(self._objects[kind].items()) if selector.matches(o)]
            return items, str(self._rv)

    def watch(
        self,
        kind: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
        bookmark_s: float | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Changes after `resource_version` (or the current objects as ADDED first when it is unset/"0").

        Raises BadRequest/Gone before the first event is produced. With `bookmark_s`, also yields
        ("BOOKMARK", {"metadata": {"resourceVersion": rv}}) that often and once at the timeout.
        """
        kind = _check_kind(kind)
        selector = Selector.parse(kind, namespace, label_selector, field_selector)
        with self._cond:
            if resource_version in (None, "", "0"):
                cursor = self._rv
                initial = [
                    copy.deepcopy(o) for _, o in sorted(self._objects[kind].items()) if selector.matches(o)
                ]
            else:
                cursor = _parse_rv(resource_version)
                self._check_window(kind, cursor)
                initial = []
        return self._stream(kind, selector, cursor, initial, timeout_s, stop, bookmark_s)

    def _check_window(self, kind: str, cursor: int) -> None:
        oldest = max(self._oldest - 1, self._reset_at.get(kind, 0))
        if cursor < oldest:
            raise Gone(f"too old resource version: {cursor} ({oldest})")

    def _stream(
        self,
        kind: str,
        selector: Selector,
        cursor: int,
        initial: builtins.list[dict[str, Any]],
        timeout_s: float | None,
        stop: threading.Event | None,
        bookmark_s: float | None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for obj in initial:
            yield "ADDED", obj
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        next_bookmark = None if bookmark_s is None else time.monotonic() + bookmark_s
        while True:
            batch, cursor, ended = self._next_batch(kind, selector, cursor, deadline, stop, next_bookmark)
            yield from batch
            if bookmark_s is not None and (ended or time.monotonic() >= (next_bookmark or 0)):
                yield "BOOKMARK", {"metadata": {"resourceVersion": str(cursor)}}
                next_bookmark = time.monotonic() + bookmark_s
            if ended:
                return

    def _next_batch(
        self,
        kind: str,
        selector: Selector,
        cursor: int,
        deadline: float | None,
        stop: threading.Event | None,
        next_bookmark: float | None,
    ) -> tuple[builtins.list[tuple[str, dict[str, Any]]], int, bool]:
        """Wait for changes after `cursor`; return (events for this watch, new cursor, watch ended)."""
        with self._cond:
            while self._rv <= cursor:
                if stop is not None and stop.is_set():
                    return [], cursor, True
                waits = [t - time.monotonic() for t in (deadline, next_bookmark) if t is not None]
                if stop is not None:
                    waits.append(1.0)  # a plain Event cannot notify our Condition; re-check it this often
                remaining = min(waits) if waits else None
                if remaining is not None and remaining <= 0:
                    ended = deadline is not None and time.monotonic() >= deadline
                    return [], cursor, ended
                self._cond.wait(remaining)
            self._check_window(kind, cursor)
            events = []
            for rv in range(cursor + 1, self._rv + 1):
                change = self._history[rv]
                if change.kind == kind and (event := _filtered(change, selector)) is not None:
                    events.append(event)
            return events, max(cursor, self._rv), False


def _filtered(change: _Change, selector: Selector) -> tuple[str, dict[str, Any]] | None:
    """The event a filtered watch sees: like the API server's watch cache, an object entering or leaving
    the selection is reported as ADDED or DELETED."""
    now = selector.matches(change.obj) if change.type != "DELETED" else False
    before = selector.matches(change.prev)
    if change.type == "DELETED":
        return ("DELETED", copy.deepcopy(change.obj)) if before else None
    if now and before:
        return "MODIFIED", copy.deepcopy(change.obj)
    if now:
        return "ADDED", copy.deepcopy(change.obj)
    if before:
        return "DELETED", copy.deepcopy(change.obj)
    return None


def _obj_key(kind: str, namespace: str | None, name: str) -> tuple[str, str]:
    return ((namespace or "") if kind in NAMESPACED_KINDS else "", name)


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise BadRequest(
            f"kind {kind!r} is not served by the local cluster (known: {', '.join(sorted(KINDS))})"
        )
    return kind


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise BadRequest(f"invalid resource version: {value!r}") from None
    if rv < 0:
        raise BadRequest(f"invalid resource version: {value!r}")
    return rv


def _random_suffix() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(5))
