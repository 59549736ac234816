"""The Kubernetes API subset the plugin uses, served on loopback from a KubeStore for the official client."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pytest_runnerconf.local.errors import LocalConfigError
from pytest_runnerconf.local.httpserve import LoopbackServer, Request, Response, Router
from pytest_runnerconf.local.kstore import BadRequest, Gone, KubeStore, NotFound, StoreError, plural

GIT_VERSION = "v1.31.0-runnerconf-local"
CLUSTER_NAME = "runnerconf-local"
ALL_VERBS = frozenset({"get", "list", "watch", "delete"})
DEFAULT_GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds
DEFAULT_WATCH_TIMEOUT_S = 1800  # the API server's minRequestTimeout when the client asks for none

# resource -> (kind, short names); all are core/v1
RESOURCES: dict[str, tuple[str, list[str]]] = {
    "pods": ("Pod", ["po"]),
    "events": ("Event", ["ev"]),
    "secrets": ("Secret", []),
    "configmaps": ("ConfigMap", ["cm"]),
    "namespaces": ("Namespace", ["ns"]),
}
_NAME = r"[^/]+"


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metav1.Status object, as every API error body is."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _status_response(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> Response:
    return Response(code, status(code, reason, message, details))


def _not_found_path(path: str) -> Response:
    return _status_response(404, "NotFound", "the server could not find the requested resource", {})


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int_or_none(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"invalid integer value: {value!r}") from None


def _without_type(obj: dict[str, Any]) -> dict[str, Any]:
    """List items carry no kind/apiVersion in the real API."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


@dataclass
class KubeAPI:
    """Routes for the core/v1 subset; `tokens` maps bearer token -> its grants.

    A grant is a verb on every resource ("list") or a verb on one resource ("list pods"), like a Role rule.
    """

    store: KubeStore
    tokens: dict[str, frozenset[str]]
    users: dict[str, str] = field(default_factory=dict)  # token -> user name shown in 403 messages
    bookmark_interval_s: float = 60.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _server: LoopbackServer | None = field(default=None, init=False, repr=False)

    # -- lifecycle

    def router(self) -> Router:
        router = Router()
        self._route(router, "/version", {"GET": self._guarded(self._version, None)})
        self._route(router, "/api", {"GET": self._guarded(self._api_versions, None)})
        self._route(router, "/api/v1", {"GET": self._guarded(self._resource_list, None)})
        for resource, (kind, _) in RESOURCES.items():
            self._add_resource(router, resource, kind)
        return router

    def start(self, port: int = 0) -> LoopbackServer:
        self._server = LoopbackServer(self.router(), _not_found_path, port=port).start()
        return self._server

    def stop(self) -> None:
        """End every open watch, then the server."""
        self._stop.set()
        self.store.wake()
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- routing

    def _route(
        self, router: Router, pattern: str, handlers: dict[str, Callable[[Request], Response]]
    ) -> None:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            # Kubernetes answers a wrong method with a Status too, not a bare 405
            router.add(method, pattern + "/?", handlers.get(method, self._method_not_allowed))

    def _add_resource(self, router: Router, resource: str, kind: str) -> None:
        listing = self._guarded(self._collection(kind, all_ns=True), "list")
        self._route(router, f"/api/v1/{resource}", {"GET": listing})
        if kind == "Namespace":
            self._route(
                router,
                f"/api/v1/namespaces/(?P<name>{_NAME})",
                {"GET": self._guarded(self._get(kind), "get")},
            )
            return
        in_ns = self._guarded(self._collection(kind, all_ns=False), "list")
        self._route(router, f"/api/v1/namespaces/(?P<ns>{_NAME})/{resource}", {"GET": in_ns})
        item = {
            "GET": self._guarded(self._get(kind), "get"),
            "DELETE": self._guarded(self._delete(kind), "delete"),
        }
        self._route(router, f"/api/v1/namespaces/(?P<ns>{_NAME})/{resource}/(?P<name>{_NAME})", item)

    def _method_not_allowed(self, request: Request) -> Response:
        return _status_response(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
        )

    def _guarded(
        self, handler: Callable[[Request], Response], verb: str | None
    ) -> Callable[[Request], Response]:
        """Authenticate, authorise the verb, and turn store errors into Status responses."""

        def guarded(request: Request) -> Response:
            token = _bearer(request)
            if token not in self.tokens:
                return _status_response(401, "Unauthorized", "Unauthorized")
            if verb is not None:
                effective = "watch" if verb == "list" and _flag(request.query.get("watch")) else verb
                grants = self.tokens[token]
                if effective not in grants and f"{effective} {_resource_of(request.path)}" not in grants:
                    return self._forbidden(token, effective, request)
            try:
                return handler(request)
            except StoreError as exc:
                return _status_response(exc.code, exc.reason, str(exc), self._details(request))
            except Exception as exc:  # a bug here must still answer as the API would
                return _status_response(500, "InternalError", f"Internal error occurred: {exc}")

        return guarded

    def _details(self, request: Request) -> dict[str, Any]:
        details: dict[str, Any] = {"kind": _resource_of(request.path)}
        if "name" in request.params:
            details["name"] = request.params["name"]
        return details

    def _forbidden(self, token: str, verb: str, request: Request) -> Response:
        resource = _resource_of(request.path)
        name = request.params.get("name")
        subject = f'{resource} "{name}"' if name else resource
        # for a namespace object the API server authorises "in the namespace" named by the object
        ns = request.params.get("ns") or (name if resource == "namespaces" else None)
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{self._user(token)}" cannot {verb} resource "{resource}" '
            f'in API group "" {scope}'
        )
        details = {"kind": resource} | ({"name": name} if name else {})
        return _status_response(403, "Forbidden", message, details)

    def _user(self, token: str) -> str:
        if token in self.users:
            return self.users[token]
        role = "runnerconf" if self.tokens[token] >= ALL_VERBS else "restricted"
        return f"system:serviceaccount:runnerconf:{role}"

    # -- discovery

    def _version(self, request: Request) -> Response:
        return Response(
            200,
            {
                "major": "1",
                "minor": "31",
                "gitVersion": GIT_VERSION,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-11-23T00:00:00Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            },
        )

    def _api_versions(self, request: Request) -> Response:
        host = request.headers.get("host", "127.0.0.1")
        return Response(
            200,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            },
        )

    def _resource_list(self, request: Request) -> Response:
        resources = [
            {
                "name": resource,
                "singularName": kind.lower(),
                "namespaced": kind != "Namespace",
                "kind": kind,
                "verbs": sorted(ALL_VERBS),
                "shortNames": short,
            }
            for resource, (kind, short) in RESOURCES.items()
        ]
        return Response(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})

    # -- objects

    def _collection(self, kind: str, all_ns: bool) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            namespace = None if all_ns else request.params["ns"]
            if _flag(request.query.get("watch")):
                return self._watch(kind, namespace, request.query)
            items, rv = self.store.list(
                kind, namespace, request.query.get("labelSelector"), request.query.get("fieldSelector")
            )
            if _wants_metadata_list(request):
                return Response(200, _metadata_list(items, rv))
            body = {
                "kind": f"{kind}List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": rv},
                "items": [_without_type(o) for o in items],
            }
            return Response(200, body)

        return handle

    def _get(self, kind: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            return Response(200, self.store.get(kind, request.params.get("ns"), request.params["name"]))

        return handle

    def _delete(self, kind: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            ns, name = request.params["ns"], request.params["name"]
            current = self.store.get(kind, ns, name)
            hook = self.store.on_delete.get(kind)
            if hook is not None:
                hook(ns, name, self._grace(request, current))
                try:
                    return Response(200, self.store.get(kind, ns, name))
                except NotFound:  # the hook removed it at once (grace 0)
                    return Response(200, current)
            deleted = self.store.delete(kind, ns, name)
            if deleted is None:
                raise NotFound(f'{plural(kind)} "{name}" not found')
            if kind == "Pod":  # the pod registry returns the deleted object; others a Status
                return Response(200, deleted)
            details = {"name": name, "kind": plural(kind), "uid": deleted["metadata"]["uid"]}
            return Response(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                },
            )

        return handle

    def _grace(self, request: Request, obj: dict[str, Any]) -> int:
        options = request.json() if request.body else {}
        grace = _int_or_none((options or {}).get("gracePeriodSeconds"))
        if grace is None:
            grace = _int_or_none(request.query.get("gracePeriodSeconds"))
        if grace is None:
            grace = _int_or_none(obj.get("spec", {}).get("terminationGracePeriodSeconds"))
        return DEFAULT_GRACE_S if grace is None else max(grace, 0)

    # -- watch

    def _watch(self, kind: str, namespace: str | None, query: dict[str, str]) -> Response:
        timeout = _int_or_none(query.get("timeoutSeconds")) or DEFAULT_WATCH_TIMEOUT_S
        bookmark_s = self.bookmark_interval_s if _flag(query.get("allowWatchBookmarks")) else None
        try:
            events = self.store.watch(
                kind,
                namespace,
                query.get("resourceVersion"),
                query.get("labelSelector"),
                query.get("fieldSelector"),
                timeout_s=timeout,
                stop=self._stop,
                bookmark_s=bookmark_s,
            )
        except Gone as exc:  # the real API reports an expired version inside a 200 watch stream
            return Response(200, iter([_event_line("ERROR", status(410, exc.reason, str(exc)))]))
        return Response(200, _encode_events(kind, events))


def _wants_metadata_list(request: Request) -> bool:
    """`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` (kubectl, client-go)."""
    for media in request.headers.get("accept", "").split(","):
        params = dict(p.strip().partition("=")[::2] for p in media.split(";")[1:] if "=" in p)
        if params.get("as") == "PartialObjectMetadataList" and params.get("g") == "meta.k8s.io":
            return True
    return False


def _metadata_list(items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
    """What the API server sends for a metadata-only list: every item's metadata and nothing else."""
    meta = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1"}
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "items": [{**meta, "metadata": obj.get("metadata", {})} for obj in items],
    }


def _event_line(type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _encode_events(kind: str, events: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[bytes]:
    try:
        for type_, obj in events:
            if type_ == "BOOKMARK":
                obj = {"kind": kind, "apiVersion": "v1", "metadata": obj["metadata"]}
            yield _event_line(type_, obj)
    except Gone as exc:  # the watcher fell behind the bounded history
        yield _event_line("ERROR", status(410, exc.reason, str(exc)))
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _resource_of(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    # /api/v1/<res>[...] or /api/v1/namespaces/<ns>/<res>[/<name>]
    if len(parts) >= 5 and parts[2] == "namespaces":
        return parts[4]
    return parts[2] if len(parts) > 2 else ""


def write_kubeconfig(
    path: Path | str, server_url: str, contexts: dict[str, str], current: str, namespace: str
) -> Path:
    """Write a kubeconfig with one cluster and one user + context per token (mode 0600: it holds tokens)."""
    if current not in contexts:
        raise LocalConfigError(f"kubeconfig current context {current!r} is not one of {sorted(contexts)}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server_url}}],
        "users": [{"name": name, "user": {"token": token}} for name, token in contexts.items()],
        "contexts": [
            {"name": name, "context": {"cluster": CLUSTER_NAME, "user": name, "namespace": namespace}}
            for name in contexts
        ],
        "current-context": current,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    os.replace(tmp, target)
    return target
