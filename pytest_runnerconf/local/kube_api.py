"""The Kubernetes API subset the plugin and kubectl use, served (over TLS) on loopback from a KubeStore.

Routing, authentication and authorisation live here; what a response looks like is decided by content
negotiation (kube_negotiate), Table printing (kube_tables), protobuf request bodies (kube_proto) and the exec
stream (kube_exec). Logs and exec reach the containers through the node (`NodeAPI`, the kubelet's side).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from pytest_runnerconf.local import kube_exec, kube_proto, kube_tables, pdb
from pytest_runnerconf.local.apifaults import KubeFaults, RunFaults, truncated
from pytest_runnerconf.local.errors import LocalConfigError
from pytest_runnerconf.local.httpserve import LoopbackServer, Request, Response, Router, Takeover
from pytest_runnerconf.local.kstore import (
    BadRequest,
    Gone,
    KubeStore,
    NotFound,
    StoreError,
    api_version,
    plural,
)
from pytest_runnerconf.local.kube_negotiate import Negotiated, Representation, is_protobuf, negotiate
from pytest_runnerconf.local.podstatus import rfc3339

# kubectl's dispatcher runs kubectl.1.<minor> for the server's minor: answer as the version emulated here.
KUBE_MAJOR, KUBE_MINOR = "1", "32"
GIT_VERSION = f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-runnerconf-local"  # semver: kubectl version parses it
CLUSTER_NAME = "runnerconf-local"
ALL_VERBS = frozenset({"get", "list", "watch", "delete"})
# What an operator's context may also do: read logs and exec into containers (verb "resource/subresource").
OPERATOR_VERBS = ALL_VERBS | {"get pods/log", "create pods/exec"}
DEFAULT_GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds
DEFAULT_WATCH_TIMEOUT_S = 1800  # the API server's minRequestTimeout when the client asks for none
AUTHORIZATION_GROUP = "authorization.k8s.io"
POLICY_GROUP = "policy"
_NAME = r"[^/]+"
_NS_ITEM = f"/api/v1/namespaces/(?P<ns>{_NAME})/pods/(?P<name>{_NAME})"
_DISCOVERY_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class ResourceInfo:
    kind: str
    short_names: tuple[str, ...] = ()
    namespaced: bool = True
    verbs: tuple[str, ...] = ("get", "list", "watch")
    categories: tuple[str, ...] = ()


# core/v1 resources served, with what discovery says about them
RESOURCES: dict[str, ResourceInfo] = {
    "pods": ResourceInfo("Pod", ("po",), verbs=("delete", "get", "list", "watch"), categories=("all",)),
    "events": ResourceInfo("Event", ("ev",)),
    "secrets": ResourceInfo("Secret"),
    "configmaps": ResourceInfo("ConfigMap", ("cm",)),
    "namespaces": ResourceInfo("Namespace", ("ns",), namespaced=False),
}
# policy/v1 resources served (PodDisruptionBudgets, which the runner creates with pod_disruption_budget = true).
POLICY_RESOURCES: dict[str, ResourceInfo] = {
    "poddisruptionbudgets": ResourceInfo(
        "PodDisruptionBudget", ("pdb",), verbs=("create", "delete", "get", "list", "watch")
    ),
}
SUBRESOURCES = {
    "pods/log": ("Pod", ("get",)),
    "pods/exec": ("PodExecOptions", ("create", "get")),
    "pods/eviction": ("Eviction", ("create",)),
}
# The API server's mark on a pod it evicts through the Eviction API (pkg/registry/core/pod/storage/eviction.go,
# addConditionAndDeletePod, PodDisruptionConditions GA in 1.31), before the graceful delete.
EVICTION_CONDITION = {
    "type": "DisruptionTarget",
    "status": "True",
    "reason": "EvictionByEvictionAPI",
    "message": "Eviction API: evicting",
}
REVIEWS = {
    "selfsubjectaccessreviews": "SelfSubjectAccessReview",
    "selfsubjectrulesreviews": "SelfSubjectRulesReview",
}


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
    """Go's strconv.ParseBool, as query booleans are read (clients send true/True/1)."""
    return (value or "").lower() in ("true", "1", "t")


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


@dataclass(frozen=True)
class LogOptions:
    """The query of a pods/log request (PodLogOptions)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: str | None = None
    limit_bytes: int | None = None


class NodeAPI(Protocol):
    """What the API server asks of the node (the kubelet) for a pod's containers."""

    def logs(self, namespace: str, pod: str, container: str, options: LogOptions) -> Iterator[bytes]:
        """Raises StoreError (BadRequest with the kubelet's message) when the container has no such log."""

    def exec_ready(self, namespace: str, pod: str, container: str) -> None:
        """Raises StoreError (the kubelet's message) when commands cannot run in the container now."""

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> kube_exec.ExecSession:
        """Start the command; raises StoreError when it cannot be started in the container."""


@dataclass
class KubeAPI:
    """Routes for the core/v1 subset; `tokens` maps bearer token -> its grants, like Role rules.

    A grant is a verb on every served resource ("list"), a verb on one resource ("list pods"), or a verb on a
    subresource ("get pods/log", "create pods/exec"), as an RBAC rule naming "pods/log" grants it alone.
    """

    store: KubeStore
    tokens: dict[str, frozenset[str]]
    users: dict[str, str] = field(default_factory=dict)  # token -> user name shown in 403 messages
    node: NodeAPI | None = None
    bookmark_interval_s: float = 60.0
    faults: frozenset[str] = frozenset()  # the cluster's own; a run's are found by its pods' job ids
    run_faults: RunFaults = field(default_factory=RunFaults)  # shared with the GitLab API
    api_faults: KubeFaults = field(init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _server: LoopbackServer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.api_faults = KubeFaults(own=self.faults, runs=self.run_faults)
        self.store.expire_history = self.api_faults.on_record

    # -- lifecycle

    def router(self) -> Router:
        router = Router()
        self._route(router, "/version", {"GET": self._guarded(self._version, None)})
        for probe in ("/healthz", "/livez", "/readyz"):
            self._route(
                router,
                probe,
                {"GET": self._guarded(lambda r: Response(200, "ok", content_type="text/plain"), None)},
            )
        self._route(router, "/api", {"GET": self._guarded(self._api_versions, None)})
        self._route(router, "/api/v1", {"GET": self._guarded(self._resource_list, None)})
        self._route(router, "/apis", {"GET": self._guarded(self._group_list, None)})
        self._route(router, f"/apis/{AUTHORIZATION_GROUP}", {"GET": self._guarded(self._group, None)})
        self._route(
            router, f"/apis/{AUTHORIZATION_GROUP}/v1", {"GET": self._guarded(self._review_list, None)}
        )
        for resource in REVIEWS:
            self._route(
                router,
                f"/apis/{AUTHORIZATION_GROUP}/v1/{resource}",
                {"POST": self._guarded(self._review(resource), None)},
            )
        for resource, info in RESOURCES.items():
            self._add_resource(router, resource, info.kind)
        self._route(router, f"/apis/{POLICY_GROUP}", {"GET": self._guarded(self._policy_group, None)})
        self._route(
            router, f"/apis/{POLICY_GROUP}/v1", {"GET": self._guarded(self._policy_resource_list, None)}
        )
        for resource, info in POLICY_RESOURCES.items():
            self._add_group_resource(router, f"/apis/{POLICY_GROUP}/v1", resource, info.kind)
        self._route(router, _NS_ITEM + "/log", {"GET": self._guarded(self._log, "get", "log")})
        exec_handler = self._guarded(self._exec, "create", "exec")
        self._route(router, _NS_ITEM + "/exec", {"GET": exec_handler, "POST": exec_handler})
        self._route(
            router, _NS_ITEM + "/eviction", {"POST": self._guarded(self._evict, "create", "eviction")}
        )
        return router

    def start(self, port: int = 0, tls: Any = None) -> LoopbackServer:
        """Serve on loopback; `tls` is an ssl.SSLContext (the cluster's CA-signed server certificate)."""
        self._server = LoopbackServer(self.router(), _not_found_path, port=port, tls=tls).start()
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

    def _add_group_resource(self, router: Router, prefix: str, resource: str, kind: str) -> None:
        """A namespaced resource of an API group: list (all namespaces or one), create, get and delete."""
        self._route(
            router, f"{prefix}/{resource}", {"GET": self._guarded(self._collection(kind, True), "list")}
        )
        self._route(
            router,
            f"{prefix}/namespaces/(?P<ns>{_NAME})/{resource}",
            {
                "GET": self._guarded(self._collection(kind, all_ns=False), "list"),
                "POST": self._guarded(self._create(kind), "create"),
            },
        )
        item = {
            "GET": self._guarded(self._get(kind), "get"),
            "DELETE": self._guarded(self._delete(kind), "delete"),
        }
        self._route(router, f"{prefix}/namespaces/(?P<ns>{_NAME})/{resource}/(?P<name>{_NAME})", item)

    def _method_not_allowed(self, request: Request) -> Response:
        return _status_response(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
        )

    # -- authentication and authorisation

    def allowed(self, token: str, verb: str, resource: str, subresource: str = "") -> bool:
        """What RBAC would answer for this token; reviews are open to every authenticated user."""
        verbs = self.tokens.get(token)
        if verbs is None:
            return False
        if subresource:
            return f"{verb} {resource}/{subresource}" in verbs
        served = resource in RESOURCES or resource in POLICY_RESOURCES
        return served and (verb in verbs or f"{verb} {resource}" in verbs)

    def _guarded(
        self, handler: Callable[[Request], Response], verb: str | None, subresource: str = ""
    ) -> Callable[[Request], Response]:
        """Authenticate, authorise the verb, and turn store errors into Status responses."""

        def guarded(request: Request) -> Response:
            token = _bearer(request)
            if token not in self.tokens:
                return _status_response(401, "Unauthorized", "Unauthorized")
            if verb is not None:
                effective = "watch" if verb == "list" and _flag(request.query.get("watch")) else verb
                if not self.allowed(token, effective, _resource_of(request.path), subresource):
                    return self._forbidden(token, effective, request, subresource)
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

    def _forbidden(self, token: str, verb: str, request: Request, subresource: str = "") -> Response:
        resource = _resource_of(request.path)
        shown = f"{resource}/{subresource}" if subresource else resource
        name = request.params.get("name")
        subject = f'{resource} "{name}"' if name else resource
        # for a namespace object the API server authorises "in the namespace" named by the object
        ns = request.params.get("ns") or (name if resource == "namespaces" else None)
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{self._user(token)}" cannot {verb} resource "{shown}" '
            f'in API group "{_group_of(request.path)}" {scope}'
        )
        details = {"kind": resource} | ({"name": name} if name else {})
        return _status_response(403, "Forbidden", message, details)

    def _user(self, token: str) -> str:
        if token in self.users:
            return self.users[token]
        role = "runnerconf" if self.tokens[token] >= ALL_VERBS else "restricted"
        return f"system:serviceaccount:runnerconf:{role}"

    # -- discovery (the legacy form: kubectl then reads each group version)

    def _version(self, request: Request) -> Response:
        return Response(
            200,
            {
                "major": KUBE_MAJOR,
                "minor": KUBE_MINOR,
                "gitVersion": GIT_VERSION,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-11-23T00:00:00Z",
                "goVersion": "go1.23.4",
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
        resources: list[dict[str, Any]] = []
        for resource, info in RESOURCES.items():
            entry: dict[str, Any] = {
                "name": resource,
                "singularName": info.kind.lower(),
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(info.verbs),
            }
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            if info.categories:
                entry["categories"] = list(info.categories)
            resources.append(entry)
        for name, (kind, verbs) in SUBRESOURCES.items():
            entry = {"name": name, "singularName": "", "namespaced": True, "kind": kind, "verbs": list(verbs)}
            if kind == "Eviction":  # the API server lists it so: its body is policy/v1
                entry.update(group="policy", version="v1")
            resources.append(entry)
        return Response(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})

    def _group(self, request: Request | None = None) -> Response:
        version = {"groupVersion": f"{AUTHORIZATION_GROUP}/v1", "version": "v1"}
        body = {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": AUTHORIZATION_GROUP,
            "versions": [version],
            "preferredVersion": version,
        }
        return Response(200, body)

    def _policy_group(self, request: Request | None = None) -> Response:
        version = {"groupVersion": f"{POLICY_GROUP}/v1", "version": "v1"}
        body = {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": POLICY_GROUP,
            "versions": [version],
            "preferredVersion": version,
        }
        return Response(200, body)

    def _policy_resource_list(self, request: Request) -> Response:
        resources: list[dict[str, Any]] = []
        for resource, info in POLICY_RESOURCES.items():
            resources.append(
                {
                    "name": resource,
                    "singularName": info.kind.lower(),
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": list(info.verbs),
                    "shortNames": list(info.short_names),
                }
            )
            resources.append(  # the API server lists the status subresource beside it
                {
                    "name": f"{resource}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": info.kind,
                    "verbs": ["get"],
                }
            )
        return Response(
            200, {"kind": "APIResourceList", "groupVersion": f"{POLICY_GROUP}/v1", "resources": resources}
        )

    def _group_list(self, request: Request) -> Response:
        groups = []
        for group in (self._group().body, self._policy_group().body):
            group.pop("kind")
            group.pop("apiVersion")
            groups.append(group)
        return Response(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _review_list(self, request: Request) -> Response:
        resources = [
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": False,
                "kind": kind,
                "verbs": ["create"],
            }
            for name, kind in REVIEWS.items()
        ]
        return Response(
            200,
            {"kind": "APIResourceList", "groupVersion": f"{AUTHORIZATION_GROUP}/v1", "resources": resources},
        )

    # -- authorization reviews (kubectl auth can-i)

    def _review(self, resource: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            body = _request_body(request, "review")
            spec = body.get("spec") or {}
            token = _bearer(request)
            result = dict(body)
            result.update(
                kind=REVIEWS[resource],
                apiVersion=f"{AUTHORIZATION_GROUP}/v1",
                metadata={"creationTimestamp": None},
                spec=spec,
            )
            if resource == "selfsubjectaccessreviews":
                result["status"] = {"allowed": self._review_allowed(token, spec)}
            else:
                result["status"] = self._rules(token)
            return Response(201, result)

        return handle

    def _review_allowed(self, token: str, spec: dict[str, Any]) -> bool:
        attrs = spec.get("resourceAttributes")
        if attrs is not None:
            group = attrs.get("group", "")
            if group not in ("", POLICY_GROUP) or (group == POLICY_GROUP) != (
                attrs.get("resource", "") in POLICY_RESOURCES
            ):
                return False
            return self.allowed(
                token, attrs.get("verb", ""), attrs.get("resource", ""), attrs.get("subresource", "")
            )
        non_resource = spec.get("nonResourceAttributes") or {}
        path = non_resource.get("path", "")
        return non_resource.get("verb") == "get" and any(
            path == p or (p.endswith("/*") and path.startswith(p[:-1])) for p in _DISCOVERY_PATHS
        )

    def _rules(self, token: str) -> dict[str, Any]:
        verbs = self.tokens.get(token, frozenset())
        plain = sorted(v for v in verbs if " " not in v)
        rules: list[dict[str, Any]] = [
            {"verbs": ["create"], "apiGroups": [AUTHORIZATION_GROUP], "resources": list(REVIEWS)}
        ]
        if plain:
            rules.append({"verbs": plain, "apiGroups": [""], "resources": list(RESOURCES)})
            rules.append({"verbs": plain, "apiGroups": [POLICY_GROUP], "resources": list(POLICY_RESOURCES)})
        for grant in sorted(v for v in verbs if " " in v):
            verb, resource = grant.split(" ", 1)
            group = POLICY_GROUP if resource in POLICY_RESOURCES else ""
            rules.append({"verbs": [verb], "apiGroups": [group], "resources": [resource]})
        return {
            "resourceRules": rules,
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": list(_DISCOVERY_PATHS)}],
            "incomplete": False,
        }

    # -- objects

    def _collection(self, kind: str, all_ns: bool) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            namespace = None if all_ns else request.params["ns"]
            watching = _flag(request.query.get("watch"))
            failed = self.api_faults.failed_request(request.path, watching)
            if isinstance(failed, Response):
                return failed
            if watching:
                if failed == "truncated":  # the stream ends inside its first event
                    return Response(200, iter([b'{"type":"ADDED","object":{"kind":"Pod","metadata":{"na']))
                return self._watch(kind, namespace, request)
            items, rv = self.store.list(
                kind, namespace, request.query.get("labelSelector"), request.query.get("fieldSelector")
            )
            items = [self._with_status(kind, o) for o in items]
            wanted = negotiate(request.headers.get("accept"), is_list=True)
            body = self._render_list(kind, items, rv, wanted, request.query)
            if failed == "truncated":
                return Response(200, truncated(json.dumps(body).encode()))
            return Response(200, body)

        return handle

    def _render_list(
        self, kind: str, items: list[dict[str, Any]], rv: str, wanted: Negotiated, query: dict[str, str]
    ) -> dict[str, Any]:
        if wanted.representation is Representation.TABLE:
            return kube_tables.table(kind, items, rv, include_object=query.get("includeObject", "Metadata"))
        if wanted.representation is Representation.PARTIAL_METADATA_LIST:
            return {
                "kind": "PartialObjectMetadataList",
                "apiVersion": f"meta.k8s.io/{wanted.meta_version}",
                "metadata": {"resourceVersion": rv},
                "items": [kube_tables.partial_metadata(o) for o in items],
            }
        return {
            "kind": f"{kind}List",
            "apiVersion": api_version(kind),
            "metadata": {"resourceVersion": rv},
            "items": [_without_type(o) for o in items],
        }

    def _render_one(self, kind: str, obj: dict[str, Any], request: Request) -> dict[str, Any]:
        wanted = negotiate(request.headers.get("accept"), is_list=False)
        if wanted.representation is Representation.TABLE:
            rv = obj["metadata"].get("resourceVersion", "")
            return kube_tables.table(
                kind, [obj], rv, include_object=request.query.get("includeObject", "Metadata")
            )
        if wanted.representation is Representation.PARTIAL_METADATA:
            return kube_tables.partial_metadata(obj)
        return obj

    def _get(self, kind: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            obj = self.store.get(kind, request.params.get("ns"), request.params["name"])
            return Response(200, self._render_one(kind, self._with_status(kind, obj), request))

        return handle

    def _with_status(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A PDB as read: with the status the disruption controller would have written (see pdb.py)."""
        if kind != pdb.KIND:
            return obj
        pods, _ = self.store.list("Pod", obj["metadata"].get("namespace"))
        return pdb.with_status(obj, pods)

    def _create(self, kind: str) -> Callable[[Request], Response]:
        """POST to a namespaced collection: the object in the body, in the path's namespace (201)."""

        def handle(request: Request) -> Response:
            body = _request_body(request, kind)
            if not isinstance(body, dict) or body.get("kind", kind) != kind:
                raise BadRequest(f"the body of a {plural(kind)} create must be a {kind}")
            ns = request.params["ns"]
            meta = body.setdefault("metadata", {}) or {}
            body["metadata"] = meta
            if meta.get("namespace", ns) != ns:
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
            body["kind"], body["apiVersion"] = kind, api_version(kind)
            body.pop("status", None)  # a create sets no status: the controller does
            created = self.store.create(body)
            return Response(201, self._with_status(kind, created))

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

    def _evict(self, request: Request) -> Response:
        """POST pods/NAME/eviction (policy/v1 Eviction): mark the pod DisruptionTarget, delete it gracefully.

        A PodDisruptionBudget over the pod that allows no disruption refuses it first: 429 TooManyRequests
        "Cannot evict pod as it would violate the pod's disruption budget.", the pod untouched (pdb.py,
        eviction.go checkAndDecrement). A pod already terminating is accepted again, as the API server does.
        """
        ns, name = request.params["ns"], request.params["name"]
        try:
            body = request.json() if request.body else {}
        except ValueError as exc:
            raise BadRequest(f"the Eviction body cannot be read: {exc}") from None
        current = self.store.get("Pod", ns, name)
        pods, _ = self.store.list("Pod", ns)
        budgets = _live_budgets(self.store, ns, pods)
        if budgets:
            try:
                pdb.check_eviction(current, budgets, pods)
            except pdb.TooManyRequests as exc:
                details = {"causes": exc.causes}
                return _status_response(exc.code, exc.reason, str(exc), details)
        options = (body or {}).get("deleteOptions") or {}
        grace = _int_or_none(options.get("gracePeriodSeconds"))
        if grace is None:
            grace = _int_or_none(current.get("spec", {}).get("terminationGracePeriodSeconds"))
        if not current["metadata"].get("deletionTimestamp"):

            def mark(obj: dict[str, Any]) -> None:
                conditions = [
                    c
                    for c in obj.setdefault("status", {}).get("conditions") or []
                    if c.get("type") != "DisruptionTarget"
                ]
                conditions.append({**EVICTION_CONDITION, "lastTransitionTime": rfc3339()})
                obj["status"]["conditions"] = conditions

            self.store.update("Pod", ns, name, mark)
            hook = self.store.on_delete.get("Pod")
            if hook is not None:
                hook(ns, name, DEFAULT_GRACE_S if grace is None else max(grace, 0))
            else:
                self.store.delete("Pod", ns, name)
        return Response(201, status(201, "", "") | {"status": "Success"})

    def _grace(self, request: Request, obj: dict[str, Any]) -> int:
        options = request.json() if request.body else {}
        grace = _int_or_none((options or {}).get("gracePeriodSeconds"))
        if grace is None:
            grace = _int_or_none(request.query.get("gracePeriodSeconds"))
        if grace is None:
            grace = _int_or_none(obj.get("spec", {}).get("terminationGracePeriodSeconds"))
        return DEFAULT_GRACE_S if grace is None else max(grace, 0)

    # -- pods/log and pods/exec

    def _pod_container(self, request: Request, *, for_exec: bool) -> tuple[dict[str, Any], str]:
        """The pod and the container a log or exec request means, checked as the API server does."""
        ns, name = request.params["ns"], request.params["name"]
        pod = self.store.get("Pod", ns, name)
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        inits = [c["name"] for c in spec.get("initContainers") or []]
        container = request.query.get("container", "")
        if not container:
            if len(names) == 1:
                return pod, names[0]
            choices = f"choose one of: [{' '.join(names)}]"
            if inits:
                choices += f" or one of the init containers: [{' '.join(inits)}]"
            raise BadRequest(f"a container name must be specified for pod {name}, {choices}")
        if container not in names and container not in inits:
            raise BadRequest(f"container {container} is not valid for pod {name}")
        if for_exec and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            phase = pod["status"]["phase"]
            raise BadRequest(f"cannot exec into a container in a completed pod; current phase is {phase}")
        return pod, container

    def _node(self) -> NodeAPI:
        if self.node is None:
            raise StoreError("no node serves this cluster's containers")
        return self.node

    def _log(self, request: Request) -> Response:
        pod, container = self._pod_container(request, for_exec=False)
        q = request.query
        options = LogOptions(
            follow=_flag(q.get("follow")),
            previous=_flag(q.get("previous")),
            timestamps=_flag(q.get("timestamps")),
            tail_lines=_int_or_none(q.get("tailLines")),
            since_seconds=_int_or_none(q.get("sinceSeconds")),
            since_time=q.get("sinceTime") or None,
            limit_bytes=_int_or_none(q.get("limitBytes")),
        )
        meta = pod["metadata"]
        chunks = self._node().logs(meta["namespace"], meta["name"], container, options)
        if options.follow:
            return Response(200, _until_stopped(chunks, self._stop), content_type="text/plain")
        return Response(200, b"".join(chunks), content_type="text/plain")

    def _exec(self, request: Request) -> Response:
        pod, container = self._pod_container(request, for_exec=True)
        command = request.query_all.get("command", [])
        if not command:
            raise BadRequest("you must specify at least 1 command")
        meta = pod["metadata"]
        node = self._node()
        node.exec_ready(meta["namespace"], meta["name"], container)
        protocol = kube_exec.choose_protocol(request.headers.get("sec-websocket-protocol"))
        upgrade = request.headers.get("upgrade", "").lower()
        key = request.headers.get("sec-websocket-key", "")
        if request.method != "GET" or upgrade != "websocket" or protocol is None or not key:
            # SPDY (kubectl's fallback, or KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false) is not spoken here;
            # errors above are answered the same on both attempts, so kubectl prints the real cause.
            raise BadRequest(
                "the local cluster serves exec over WebSocket only (subprotocols "
                f"{', '.join(kube_exec.PROTOCOLS)}); SPDY/3.1 is not implemented"
            )
        q = request.query
        session = node.exec(
            meta["namespace"],
            meta["name"],
            container,
            command,
            stdin=_flag(q.get("stdin")),
            tty=_flag(q.get("tty")),
        )

        def run(conn: Any) -> None:
            kube_exec.serve(conn, protocol, session, command)

        return Response(101, Takeover(run), headers=kube_exec.handshake_headers(key, protocol))

    # -- watch

    def _watch(self, kind: str, namespace: str | None, request: Request) -> Response:
        query = request.query
        timeout = _int_or_none(query.get("timeoutSeconds")) or DEFAULT_WATCH_TIMEOUT_S
        bookmark_s = self.bookmark_interval_s if _flag(query.get("allowWatchBookmarks")) else None
        wanted = negotiate(request.headers.get("accept"), is_list=False)
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
        render = _watch_renderer(kind, wanted, query.get("includeObject", "Metadata"))
        return Response(200, _encode_events(kind, events, render, self.api_faults.keep_alive))


Render = Callable[[str, dict[str, Any]], dict[str, Any]]


def _watch_renderer(kind: str, wanted: Negotiated, include: str) -> Render:
    """How each watch event's object is shaped: a one-row Table (headers on the first only), metadata, or as is."""
    if wanted.representation is Representation.TABLE:
        first = {"headers": True}

        def as_table(type_: str, obj: dict[str, Any]) -> dict[str, Any]:
            rv = obj.get("metadata", {}).get("resourceVersion", "")
            row = kube_tables.table(kind, [obj], rv, include_object=include, headers=first["headers"])
            first["headers"] = False
            return row

        return as_table
    if wanted.representation is Representation.PARTIAL_METADATA:
        return lambda type_, obj: kube_tables.partial_metadata(obj)
    return lambda type_, obj: obj


def _event_line(type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _encode_events(
    kind: str,
    events: Iterator[tuple[str, dict[str, Any]]],
    render: Render | None = None,
    keep_alive: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[bytes]:
    """Watch events as JSON lines; a blank keep-alive line follows each event KEEP_ALIVE(object) asks for."""
    render = render or (lambda type_, obj: obj)
    try:
        for type_, raw in events:
            if type_ == "BOOKMARK":
                obj = {"kind": kind, "apiVersion": api_version(kind), "metadata": raw["metadata"]}
            else:
                obj = render(type_, raw)
            yield _event_line(type_, obj)
            if keep_alive is not None and type_ != "BOOKMARK" and keep_alive(raw):
                yield b"\n"
    except Gone as exc:  # the watcher fell behind the bounded history
        yield _event_line("ERROR", status(410, exc.reason, str(exc)))
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _until_stopped(chunks: Iterator[bytes], stop: threading.Event) -> Iterator[bytes]:
    """A followed log ends with its container, or when the API server stops."""
    try:
        for chunk in chunks:
            yield chunk
            if stop.is_set():
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _resource_of(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["apis"]:  # /apis/<group>/<version>/... reads as /api/<version>/...
        parts = parts[1:]
    # /api/v1/<res>[...] or /api/v1/namespaces/<ns>/<res>[/<name>]
    if len(parts) >= 5 and parts[2] == "namespaces":
        return parts[4]
    return parts[2] if len(parts) > 2 else ""


def _group_of(path: str) -> str:
    """The API group a request path is in ("" for /api/v1, "policy" for /apis/policy/v1/...)."""
    parts = [p for p in path.split("/") if p]
    return parts[1] if parts[:1] == ["apis"] and len(parts) > 1 else ""


def write_kubeconfig(
    path: Path | str,
    server_url: str,
    contexts: dict[str, str],
    current: str,
    namespace: str,
    ca_pem: bytes | None = None,
) -> Path:
    """Write a kubeconfig with one cluster and one user + context per token (mode 0600: it holds tokens).

    With `ca_pem` the cluster entry trusts that CA (certificate-authority-data), as a real cluster's does.
    """
    if current not in contexts:
        raise LocalConfigError(f"kubeconfig current context {current!r} is not one of {sorted(contexts)}")
    cluster: dict[str, Any] = {"server": server_url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
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


def _live_budgets(store: Any, ns: str, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NS's PodDisruptionBudgets, less those whose owner pod is gone, which are deleted as the garbage
    collector would by now (a budget the runner created just after its pod was deleted outlives it here,
    since the pod's own deletion collected its dependents before the budget existed)."""
    uids = {p["metadata"].get("uid") for p in pods}
    live = []
    for budget in store.list(pdb.KIND, ns)[0]:
        owners = [o for o in budget["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"]
        if owners and not any(o.get("uid") in uids for o in owners):
            with contextlib.suppress(NotFound):
                store.delete(pdb.KIND, ns, budget["metadata"]["name"])
            continue
        live.append(budget)
    return live


def _request_body(request: Request, what: str) -> Any:
    """A request's body as kubectl (protobuf) or the Python client (JSON) sends it; BadRequest naming WHAT."""
    try:
        if is_protobuf(request.headers.get("content-type")):
            return kube_proto.decode(request.body)
        return request.json()
    except (kube_proto.ProtoError, ValueError) as exc:
        raise BadRequest(f"the {what} body cannot be read: {exc}") from None
