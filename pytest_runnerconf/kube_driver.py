"""The only module that talks to Kubernetes (kubernetes client): the pod and Secret watches, events, errors."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3.exceptions
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pytest_runnerconf.errors import ConfigError, KubeError
from pytest_runnerconf.profile import insecure_http
from pytest_runnerconf.rbac import Rule
from pytest_runnerconf.scrub import remember

if TYPE_CHECKING:
    from pytest_runnerconf.profile import Profile

# The Accept header of a metadata-only list: the API server answers with a PartialObjectMetadataList.
METADATA_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# A metadata-only watch names the item kind: each event's object is then a PartialObjectMetadata.
METADATA_WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
RUNNER_SECRET_TYPE = "kubernetes.io/dockercfg"  # the runner's per-job registry-credentials Secret
SECRET_SELECTOR = f"type={RUNNER_SECRET_TYPE}"  # a field selector: the per-job Secrets carry no labels
JOB_ID_ANNOTATION = "job.runner.gitlab.com/id"
PROJECT_ID_LABEL = "project.runner.gitlab.com/id"
WATCH_WINDOW_S = 10  # server-side watch timeout: how often the thread notices a stop request
REQUEST_TIMEOUT_S = 30  # an int: kubernetes 29 ignores a float request timeout
MAX_WATCH_FAILURES = 5  # watch windows in a row that broke before delivering anything
MAX_EXPIRIES = 8  # relists in a row whose watch expired again before delivering anything
# A read (list, get) that answers one of these, drops its connection or sends a body that does not parse is
# asked again, this many times in all, waiting RETRY_BASE_S doubled each time (or the server's Retry-After)
# and at most RETRY_MAX_S: an API server behind a load balancer does this now and then.
READ_ATTEMPTS = 4
RETRY_BASE_S = 0.25
RETRY_MAX_S = 5.0
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


PODS, SECRETS = "pods", "secrets"  # what a watch follows: the job pods, or the Secrets' metadata


@dataclass(frozen=True)
class PodEvent:
    """One watch event as received: its type, the object as the API sent it, and when it arrived.

    A Secret watch's objects are PartialObjectMetadata (never a Secret's data); `pod` is then that object.
    """

    type: str  # ADDED | MODIFIED | DELETED | RELISTED (state re-read after the watch expired)
    pod: dict[str, Any]
    time: float
    # Made by a relist, not sent by the watch: a RELISTED state, or the DELETED of a pod that vanished while
    # the watch was expired (its pod is the last state seen; what came between, and when it went, is unknown).
    relisted: bool = False
    resource: str = PODS

    @property
    def name(self) -> str:
        return str(self.pod.get("metadata", {}).get("name", ""))


@dataclass(frozen=True)
class WatchFailed:
    """Queued by a watch thread when it gives up, so the run handles it in the main thread."""

    error: KubeError
    time: float
    resource: str = PODS


def job_id_of(pod: dict[str, Any]) -> int | None:
    """The GitLab job ID a runner pod belongs to (annotation job.runner.gitlab.com/id)."""
    value = (pod.get("metadata", {}).get("annotations") or {}).get(JOB_ID_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def exec_plugin_command(file: str | None, context: str | None) -> str | None:
    """The exec credential plugin command of CONTEXT's user (None: no exec plugin, or unreadable config)."""
    paths = [file] if file else os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    docs = []
    for path in paths:
        try:
            docs.append(yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8")) or {})
        except (OSError, yaml.YAMLError):
            continue
    docs = [d for d in docs if isinstance(d, dict)]
    current = context or next((d.get("current-context") for d in docs if d.get("current-context")), None)
    contexts = {c.get("name"): c.get("context") or {} for d in docs for c in d.get("contexts") or []}
    users = {u.get("name"): u.get("user") or {} for d in reversed(docs) for u in d.get("users") or []}
    user = users.get((contexts.get(current) or {}).get("user")) or {}
    command = (user.get("exec") or {}).get("command") if isinstance(user, dict) else None
    return str(command) if command else None


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        return "its TLS certificate is not signed by the kubeconfig's certificate-authority"
    if "connection refused" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "name or service not known" in text or "failed to resolve" in text:
        return "name does not resolve"
    return type(exc).__name__


def _guard_pool(api_client: client.ApiClient) -> None:
    """No redirects and no hidden retries in the client's connection pool.

    urllib3 follows redirects by default: a Kubernetes API never redirects, so any 3xx is answered as the
    response it is (and refused in _translate) instead of carrying the credentials elsewhere. Nor does urllib3
    retry here: it would sleep whatever a Retry-After asks, unbounded; the retries are the driver's own
    (counted, bounded, reads only).
    """
    pool = api_client.rest_client.pool_manager
    urlopen = pool.urlopen

    def guarded(method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        kw["retries"] = False
        return urlopen(method, url, redirect=False, **kw)

    pool.urlopen = guarded  # type: ignore[method-assign]


class SecretsForbidden(KubeError):
    """RBAC does not allow listing Secrets: the check that needs them is skipped, the run goes on."""


class KubeAPIFailing(KubeError):
    """The Kubernetes API kept failing (5xx, malformed answers, broken watches) after the retries."""

    cause = "api-error"


class _Malformed(Exception):
    """A body or a watch line that is not the JSON the API promises (a truncated answer)."""


def retry_wait(attempt: int, headers: Any = None) -> float:
    """How long to wait before retry ATTEMPT (1, 2, ...): the server's Retry-After seconds, else back-off."""
    value = headers.get("Retry-After") if headers is not None and hasattr(headers, "get") else None
    try:
        asked = float(value) if value is not None else None
    except ValueError:
        asked = None
    wait = asked if asked is not None and asked >= 0 else RETRY_BASE_S * 2 ** (attempt - 1)
    return min(wait, RETRY_MAX_S)


class KubeDriver:
    """The job namespace of one cluster, reached through the profile's kubeconfig and context."""

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._setting = f"clusters.{profile.name}"
        self.namespace = profile.namespace
        self._api_client = self._load_client()
        self._guard_client()
        self._core = client.CoreV1Api(self._api_client)
        # Metadata-only lists go through a client of their own whose default Accept asks for them: a per-call
        # header (`_headers`) exists only in recent clients, and the shared client's Accept is the watch's.
        meta_client = client.ApiClient(self._api_client.configuration)
        meta_client.set_default_header("Accept", METADATA_LIST_ACCEPT)
        _guard_pool(meta_client)
        self._meta = client.CoreV1Api(meta_client)
        meta_watch_client = client.ApiClient(self._api_client.configuration)
        meta_watch_client.set_default_header("Accept", METADATA_WATCH_ACCEPT)
        _guard_pool(meta_watch_client)
        self._meta_watch = client.CoreV1Api(meta_watch_client)
        # Transient failures met and survived, by kind ("503", "malformed", "watch 410", ...): evidence that
        # a run coped, and what the fault tests count.
        self.retries: dict[str, int] = {}
        self._retries_lock = threading.Lock()

    def count_retry(self, kind: str) -> None:
        with self._retries_lock:
            self.retries[kind] = self.retries.get(kind, 0) + 1

    def _guard_client(self) -> None:
        """No clear-text credentials to another machine, no redirects, and the bearer token kept out of output."""
        problem = insecure_http(self.host, self._profile.allow_insecure_http)
        if problem:
            raise ConfigError(
                f"the kubeconfig's server {self.host} {problem}; use an https:// server or set "
                f"{self._setting}.allow_insecure_http = true"
            )
        configuration = self._api_client.configuration
        # The header value is under "authorization" in older clients, "BearerToken" in newer ones.
        for value in (configuration.api_key or {}).values():
            remember(str(value).removeprefix("Bearer ").strip())
        remember(configuration.password)
        _guard_pool(self._api_client)

    @property
    def host(self) -> str:
        return str(self._api_client.configuration.host)

    @property
    def tls_verified(self) -> bool:
        """True when the API is reached over https and its certificate is checked (a kubeconfig can turn
        that off with insecure-skip-tls-verify; the driver never does)."""
        cfg = self._api_client.configuration
        return self.host.startswith("https://") and bool(cfg.verify_ssl)

    def _load_client(self) -> client.ApiClient:
        path = self._profile.kubeconfig
        context = self._profile.kube_context
        if path is None and "KUBECONFIG" not in os.environ and os.environ.get("KUBERNETES_SERVICE_HOST"):
            # Running inside a pod (nightly CI): the service account is the credential.
            config.load_incluster_config()
            return client.ApiClient()
        if path is not None and not Path(path).expanduser().is_file():
            raise KubeError(f"the kubeconfig {path} does not exist; check {self._setting}.kubeconfig")
        file = str(Path(path).expanduser()) if path else None
        if context is not None:
            self._check_context(file, context)
        self._check_exec_plugin(file, context)
        try:
            api_client: client.ApiClient = config.new_client_from_config(config_file=file, context=context)
            return api_client
        except (ConfigException, OSError, ValueError) as exc:
            raise KubeError(
                f"cannot use the kubeconfig {file or '~/.kube/config'} ({exc}); "
                f"check {self._setting}.kubeconfig"
            ) from None

    def _check_context(self, file: str | None, context: str) -> None:
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=file)
        except (ConfigException, OSError, ValueError) as exc:
            raise KubeError(
                f"cannot read the kubeconfig {file or '~/.kube/config'} ({exc}); "
                f"check {self._setting}.kubeconfig"
            ) from None
        names = [str(c.get("name")) for c in contexts or []]
        if context not in names:
            raise KubeError(
                f"the kubeconfig context {context!r} does not exist (have: {', '.join(names) or 'none'}); "
                f"check {self._setting}.kube_context"
            )

    def _check_exec_plugin(self, file: str | None, context: str | None) -> None:
        """A context whose exec credential plugin is not installed would go anonymous (and blame RBAC)."""
        command = exec_plugin_command(file, context)
        if command is None:
            return
        if os.sep in command and Path(command).expanduser().is_file():
            return
        if os.sep not in command and shutil.which(command):
            return
        which = f"context {context!r}" if context else "current context"
        raise KubeError(
            f"the kubeconfig's {which} gets its credentials from the exec plugin {command!r}, which is not "
            f"installed on this machine; install it (or put it on PATH) or pick another "
            f"{self._setting}.kube_context"
        )

    @contextmanager
    def _translate(
        self, action: str, forbidden: str | None = None, not_found: str | None = None
    ) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            if exc.status == 0:  # the client's wrapping of a transport failure (TLS) that urllib3 raised
                raise KubeError(self._unreachable(exc)) from None
            if exc.status == 403 and forbidden:
                raise KubeError(forbidden) from None
            if exc.status == 404 and not_found:
                raise KubeError(not_found) from None
            if exc.status in (301, 302, 303, 307, 308):
                target = (exc.headers or {}).get("Location", "another address")
                raise KubeError(
                    f"the Kubernetes API at {self.host} redirected a request to {target} and the credentials "
                    f"were not sent there; check the server URL in {self._setting}.kubeconfig"
                ) from None
            if exc.status == 401:
                raise KubeError(
                    f"the Kubernetes API at {self.host} rejected the kubeconfig credentials (401); "
                    f"check {self._setting}.kubeconfig and {self._setting}.kube_context"
                ) from None
            if exc.status in TRANSIENT_STATUS:
                raise KubeAPIFailing(
                    f"the Kubernetes API at {self.host} failed to {action} {READ_ATTEMPTS} times in a row "
                    f"(last: {exc.status} {exc.reason}); check the API server's health"
                ) from None
            raise KubeError(
                f"the Kubernetes API at {self.host} failed to {action} ({exc.status} {exc.reason}); "
                f"check {self._setting}.namespace and the service account's RBAC"
            ) from None
        except _Malformed as exc:
            raise KubeAPIFailing(
                f"the Kubernetes API at {self.host} answered {READ_ATTEMPTS} requests to {action} with a "
                f"malformed body (last: {exc}); check the API server and any proxy in front of it"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(self._unreachable(exc)) from None

    def _unreachable(self, exc: BaseException) -> str:
        return (
            f"cannot reach the Kubernetes API at {self.host} ({_reason(exc)}); "
            f"check {self._setting}.kubeconfig and {self._setting}.kube_context"
        )

    def _retrying(self, attempt_once: Callable[[], Any]) -> Any:
        """ATTEMPT_ONCE() again after a transient failure (5xx/429, a dropped connection, a malformed body),
        READ_ATTEMPTS times in all; the last failure is raised as it came, for _translate to phrase.

        Only for reads: asking again cannot do anything twice.
        """
        for attempt in range(1, READ_ATTEMPTS + 1):
            last = attempt == READ_ATTEMPTS
            try:
                return attempt_once()
            except ApiException as exc:
                if exc.status not in TRANSIENT_STATUS or last:
                    raise
                self.count_retry(str(exc.status))
                time.sleep(retry_wait(attempt, exc.headers))
            except _Malformed:
                if last:
                    raise
                self.count_retry("malformed")
                time.sleep(retry_wait(attempt))
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
                # The connection died mid-answer (a proxy restarting) or the answer was too slow; refused or
                # unresolvable is not retried.
                if last:
                    raise
                slow = isinstance(exc, urllib3.exceptions.ReadTimeoutError)
                self.count_retry("timeout" if slow else "dropped")
                time.sleep(retry_wait(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _raw(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call the API and return the JSON as the server sent it (camelCase, RFC 3339 times), retried."""

        def once() -> dict[str, Any]:
            resp = call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
            data = resp.data
            try:
                body = json.loads(data)
            except ValueError:
                raise _Malformed(f"{len(data)} bytes that are not JSON") from None
            if not isinstance(body, dict):
                raise _Malformed(f"a JSON {type(body).__name__}, not an object")
            return body

        result: dict[str, Any] = self._retrying(once)
        return result

    def _no_rbac(self, what: str) -> str:
        return (
            f"no RBAC to {what} in namespace {self.namespace} (403); "
            "grant get/list/watch on pods and events to the kubeconfig's user"
        )

    # ------------------------------------------------------------ preflight

    def preflight(self, selector: str, rules: Iterable[Rule] = ()) -> tuple[str, str]:
        """Namespace exists, the identity has every grant RULES name, pods can be listed and watched.

        Returns the resourceVersion to watch from, and why the Secrets will not be looked at ("" when they
        will): a missing Secret grant skips the one check that needs it, every other missing grant ends the
        run before anything is pushed, all named in one sentence.
        """
        not_found = f"namespace {self.namespace} not found; check {self._setting}.namespace"
        with self._translate(f"read namespace {self.namespace}", not_found=not_found):
            try:
                self._raw(self._core.read_namespace, self.namespace)
            except ApiException as exc:
                # A namespace-scoped service account may not read Namespace objects; the pod list decides.
                if exc.status != 403:
                    raise
        secret_gap = self._check_access(rules)
        pods = self.list_pods(selector)
        version = str(pods.get("metadata", {}).get("resourceVersion", ""))
        self._check_watch(selector, version)
        return version, secret_gap

    def _check_access(self, rules: Iterable[Rule]) -> str:
        """Ask for every grant at once (SelfSubjectAccessReview); raise naming all the run lacks.

        A server that cannot answer reviews leaves the decision to the lists and the watch that follow.
        """
        try:
            missing = self.missing_grants(rules)
        except KubeError:
            return ""
        needed = [(rule, verb, why) for rule, verb, why in missing if rule.resource != SECRETS]
        if needed:
            grants = ", ".join(f"{verb} {_named(rule, self.namespace)}" for rule, verb, _why in needed)
            uses = "; ".join(f"{verb} {rule.resource}: {why}" for rule, verb, why in needed)
            raise KubeError(
                f"no RBAC to {grants} in namespace {self.namespace} (asked by SelfSubjectAccessReview before "
                f"anything was pushed); grant them to the identity of {self._setting}.kubeconfig and "
                f"{self._setting}.kube_context, `runnerconf rbac` prints the Role (what each is for: {uses})"
            )
        secret_verbs = [verb for _rule, verb, _why in missing]
        if not secret_verbs:
            return ""
        return (
            f"no RBAC to {' or '.join(secret_verbs)} secrets in namespace {self.namespace}; the per-job Secret "
            "check needs `list` and `watch` on secrets (see `runnerconf rbac`)"
        )

    def can_i(self, verb: str, resource: str, namespace: str | None = None, name: str = "") -> bool:
        """Whether the kubeconfig's identity may VERB RESOURCE in the namespace (a SelfSubjectAccessReview).

        Every authenticated identity may ask this (system:basic-user); the review creates nothing, so it is
        retried like a read.
        """
        # "pods/eviction" is asked as RBAC sees it: resource pods, subresource eviction.
        plural, _, subresource = resource.partition("/")
        attributes = {"namespace": namespace or self.namespace, "verb": verb, "resource": plural}
        if subresource:
            attributes["subresource"] = subresource
        if name:
            attributes["name"] = name
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        with self._translate(f"ask whether it may {verb} {resource} (SelfSubjectAccessReview)"):
            body = self._raw(
                client.AuthorizationV1Api(self._api_client).create_self_subject_access_review, review
            )
        return bool((body.get("status") or {}).get("allowed"))

    def missing_grants(self, rules: Iterable[Rule]) -> list[tuple[Rule, str, str]]:
        """Every (rule, verb, what it is for) of RULES the identity lacks, asked all at once before the run."""
        return [
            (rule, verb, why)
            for rule in rules
            for verb, why in rule.verbs
            if not self.can_i(verb, rule.resource, rule.namespace, next(iter(rule.names), ""))
        ]

    def evict_pod(self, name: str) -> Eviction:
        """POST an Eviction (policy/v1) for pod NAME, once: a write is never retried.

        201: the API server marked the pod (DisruptionTarget) and deletes it gracefully; 429: a
        PodDisruptionBudget refused it (the answer a disruption check judges, not an error). Anything else is
        a KubeError naming what to fix.
        """
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": self.namespace},
        }
        try:
            with self._translate(
                f"evict pod {name}",
                forbidden=f"no RBAC to create pods/eviction in namespace {self.namespace} (403); the disruption "
                "checks need it (see `runnerconf rbac`)",
            ):
                try:
                    # a plain dict body is sent as it is (the client serialises dicts unchanged)
                    self._core.create_namespaced_pod_eviction(
                        name,
                        self.namespace,
                        body,  # type: ignore[arg-type]
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT_S,
                    )
                except ApiException as exc:
                    if exc.status != 429:
                        raise
                    return Eviction(name, 429, _status_message(exc.body))
        except KubeAPIFailing as exc:  # phrased for reads ("failed N times"): a write was tried once
            raise KubeError(str(exc)) from None
        return Eviction(name, 201, "")

    def server_version(self) -> str:
        """The API server's gitVersion ("v1.31.2") for the report's header; "" when it cannot be read."""
        try:
            with self._translate("read the server version"):
                body = self._raw(client.VersionApi(self._api_client).get_code)
        except KubeError:
            return ""
        return str(body.get("gitVersion") or "")

    def _check_watch(self, selector: str, resource_version: str) -> None:
        """Open one watch and drop it at once: a missing watch grant must stop the run before any push."""
        with self._translate(
            f"watch pods in namespace {self.namespace}", forbidden=self._no_rbac("watch pods")
        ):
            # Unread (_preload_content=False), the call returns with the status line: no wait for events.
            resp: Any = self._retrying(
                lambda: self._core.list_namespaced_pod(  # unread: a urllib3 response, not a V1PodList
                    self.namespace,
                    label_selector=selector,
                    watch=True,
                    timeout_seconds=1,
                    resource_version=resource_version or None,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            )
            resp.close()

    def list_pods(self, selector: str) -> dict[str, Any]:
        with self._translate(
            f"list pods in namespace {self.namespace}", forbidden=self._no_rbac("list pods")
        ):
            return self._raw(self._core.list_namespaced_pod, self.namespace, label_selector=selector)

    def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        """The data of one ConfigMap (the runner's config): one `get`, nothing listed, nothing kept here.

        Raises:
            ConfigMapUnreadable: it does not exist or may not be read (the profile's reference needs fixing).
            KubeError: the API could not be reached or failed.
        """
        from pytest_runnerconf.runner_config import ConfigMapUnreadable

        with self._translate(f"get ConfigMap {namespace}/{name}"):
            try:
                body = self._raw(self._core.read_namespaced_config_map, name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise ConfigMapUnreadable(
                        f"it does not exist (404 from {self.host}); check the namespace and name (the Helm chart "
                        "names it RELEASE-gitlab-runner, in the release's namespace)"
                    ) from None
                if exc.status == 403:
                    raise ConfigMapUnreadable(
                        f"the identity of {self._setting}.kubeconfig and {self._setting}.kube_context may not "
                        f"get it (403); grant `get` on configmaps named {name} in namespace {namespace} "
                        "(`runnerconf rbac` prints the rule)"
                    ) from None
                raise
        data = body.get("data") or {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def pod_events(self, pod_name: str) -> list[dict[str, Any]]:
        """The namespace's events about one pod; [] when events may not be read (reported, not fatal)."""
        try:
            with self._translate(f"list events of pod {pod_name}", forbidden=self._no_rbac("list events")):
                body = self._raw(
                    self._core.list_namespaced_event,
                    self.namespace,
                    field_selector=f"involvedObject.name={pod_name}",
                )
        except KubeError:
            return []
        return list(body.get("items") or [])

    def list_secret_meta(self, name_part: str) -> tuple[list[dict[str, Any]], str]:
        """Metadata of the per-job registry Secrets whose name contains NAME_PART, and the list's
        resourceVersion (to watch from); their data never comes.

        Raises:
            SecretsForbidden: RBAC does not allow listing Secrets (the check that needs them is skipped).
            KubeError: any other failure, including a server that cannot list metadata only.
        """
        body = self.secret_meta_list()
        found = [secret_meta(item) for item in body.get("items") or []]
        version = str(body.get("metadata", {}).get("resourceVersion", ""))
        return [f for f in found if name_part in str(f["name"])], version

    def secret_meta_list(self) -> dict[str, Any]:
        """The runner-type Secrets as a PartialObjectMetadataList (metadata only: no data, no type).

        Only the runner's type is asked for: its per-job Secrets carry no labels, so the type is the selector
        there is.
        """
        forbidden = (
            f"listing Secrets in namespace {self.namespace} is not allowed (403); the per-job Secret check "
            "needs `list` and `watch` on secrets (see `runnerconf rbac`)"
        )
        with self._translate(f"list secret metadata in namespace {self.namespace}"):
            try:
                body = self._raw(
                    self._meta.list_namespaced_secret, self.namespace, field_selector=SECRET_SELECTOR
                )
            except ApiException as exc:
                if exc.status == 403:
                    raise SecretsForbidden(forbidden) from None
                raise
        if body.get("kind") != "PartialObjectMetadataList":
            # Never keep what we did not ask for: a server that ignored the Accept header sent the data.
            raise KubeError(
                f"the Kubernetes API at {self.host} answered a metadata-only Secret list with "
                f"{body.get('kind')!r}; the per-job Secret check is not run against it"
            )
        return body

    def watch_pods(
        self, selector: str, resource_version: str, events: queue.Queue[PodEvent | WatchFailed] | None = None
    ) -> PodWatch:
        return PodWatch(self, selector, resource_version, events=events)

    def watch_secrets(
        self, resource_version: str, events: queue.Queue[PodEvent | WatchFailed] | None = None
    ) -> PodWatch:
        """A watch on the runner-type Secrets' metadata (never their data), from RESOURCE_VERSION."""
        return PodWatch(self, SECRET_SELECTOR, resource_version, events=events, resource=SECRETS)

    # the watch threads' only entries into the SDK

    def relist(self, resource: str, selector: str) -> dict[str, Any]:
        """The current list a watch restarts from after its resourceVersion expired."""
        return self.secret_meta_list() if resource == SECRETS else self.list_pods(selector)

    def open_watch(self, selector: str, resource_version: str, resource: str = PODS) -> Any:
        """Open one watch window on the job pods (or the Secrets' metadata); returns the unread response.

        The stream is parsed here, not by the client's Watch: its deserialize=False path fails on ERROR events
        (KeyError 'raw_object' in some releases) before a caller can relist.

        Raises:
            _Expired: the resourceVersion is too old (410): relist, then watch again.
            _Broken: a transient failure (5xx, 429, no connection): open again after a back-off.
            KubeError: anything else (RBAC, credentials), phrased by _translate.
        """
        kwargs: dict[str, Any] = {
            ("field_selector" if resource == SECRETS else "label_selector"): selector,
            "watch": True,
            "timeout_seconds": WATCH_WINDOW_S,
            "allow_watch_bookmarks": True,
            "_preload_content": False,
            "_request_timeout": (REQUEST_TIMEOUT_S, WATCH_WINDOW_S + REQUEST_TIMEOUT_S),
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        action = f"watch {resource} in namespace {self.namespace}"
        try:
            if resource == SECRETS:
                return self._meta_watch.list_namespaced_secret(self.namespace, **kwargs)
            return self._core.list_namespaced_pod(self.namespace, **kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise _Expired from None
            if exc.status in TRANSIENT_STATUS:
                raise _Broken(f"{exc.status} {exc.reason}") from None
            if exc.status == 403 and resource == SECRETS:
                raise SecretsForbidden(
                    f"watching Secrets in namespace {self.namespace} is not allowed (403); the per-job Secret "
                    "check needs `list` and `watch` on secrets (see `runnerconf rbac`)"
                ) from None
            with self._translate(action, forbidden=self._no_rbac("watch pods")):
                raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Broken(_reason(exc)) from None

    def watch_events(self, resp: Any, resource: str = PODS) -> Iterator[dict[str, Any]]:
        """The ADDED/MODIFIED/DELETED/BOOKMARK events of one open watch window, parsed line by line.

        Blank lines are keep-alives; a connection that ends (mid-line or between events) ends the window,
        and the caller resumes from the last resourceVersion it saw.

        Raises:
            _Expired: an ERROR event with code 410 (the watch cache was reset or the version compacted).
            _Broken: an ERROR event with a transient code, a line that is not JSON, a read that timed out.
            KubeAPIFailing: an ERROR event with any other code.
        """
        try:
            for line in _lines(resp):
                if not line.strip():
                    continue  # a keep-alive
                try:
                    event = json.loads(line)
                except ValueError:
                    raise _Broken(f"a malformed watch event ({len(line)} bytes)") from None
                if not isinstance(event, dict):
                    raise _Broken("a watch event that is not a JSON object")
                if event.get("type") == "ERROR":
                    self._watch_error(event.get("object") or {}, resource)
                if resource == SECRETS and event.get("type") != "BOOKMARK":
                    event["object"] = self._metadata_only(event.get("object"))
                yield event
        except urllib3.exceptions.ProtocolError:
            return  # the server ended the stream without its last chunk: a window ending, or a dropped line
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Broken(_reason(exc)) from None
        finally:
            resp.close()

    def _metadata_only(self, obj: Any) -> dict[str, Any]:
        """A Secret watch event's object, checked to be metadata only (else dropped before anyone keeps it)."""
        if not isinstance(obj, dict) or obj.get("kind") != "PartialObjectMetadata":
            kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
            raise KubeError(
                f"the Kubernetes API at {self.host} answered a metadata-only Secret watch with {kind!r}; "
                "the per-job Secret check is not run against it"
            )
        return obj

    def _watch_error(self, status: dict[str, Any], resource: str = PODS) -> None:
        code = status.get("code")
        if code == 410:
            raise _Expired
        if code in TRANSIENT_STATUS or code is None:
            raise _Broken(f"an ERROR event ({code} {status.get('reason', '')})".replace(" )", ")"))
        raise KubeAPIFailing(
            f"the {_noun(resource)} watch on namespace {self.namespace} ended with an error from the Kubernetes API at "
            f"{self.host} ({code} {status.get('reason', '')}: {status.get('message', '')}); check the API "
            "server's health and the service account's RBAC"
        )


def _named(rule: Rule, namespace: str) -> str:
    """A rule's resource as a sentence names it: "pods", "configmaps gitlab-runner", or with " in namespace X"
    when the object is outside the job NAMESPACE."""
    if not rule.names:
        return rule.resource
    where = f" in namespace {rule.namespace}" if rule.namespace not in (None, namespace) else ""
    return f"{rule.resource} {', '.join(rule.names)}{where}"


@dataclass(frozen=True)
class Eviction:
    """What the API server answered to the run's Eviction of a pod."""

    pod: str
    code: int  # 201 evicted, 429 refused by a PodDisruptionBudget
    message: str  # the API server's Status message when refused

    @property
    def refused(self) -> bool:
        return self.code == 429


def _status_message(body: Any) -> str:
    """The message of a metav1.Status body (bytes or text); the raw text when it is not one."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:300]
    return str(parsed.get("message") or "") if isinstance(parsed, dict) else text[:300]


def _noun(resource: str) -> str:
    return "Secret" if resource == SECRETS else "pod"


def secret_meta(item: dict[str, Any]) -> dict[str, Any]:
    """What the run keeps of a per-job Secret: its name, creation time and owners (never its data)."""
    meta = item.get("metadata") or {}
    return {
        "name": meta.get("name"),
        "type": RUNNER_SECRET_TYPE,
        "creationTimestamp": meta.get("creationTimestamp"),
        "owner_references": meta.get("ownerReferences") or [],
    }


def _lines(resp: Any) -> Iterator[bytes]:
    """The lines of a streamed body, without their newline; a last line without one is not a whole event."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
    if buffer.strip():
        raise _Broken(f"a truncated watch event ({len(buffer)} bytes without a line end)")


def _shutdown(resp: Any) -> None:
    """Unblock a thread reading RESP: close its socket under it (urllib3 2.3+ has shutdown() for this)."""
    shutdown = getattr(resp, "shutdown", None)
    try:
        if callable(shutdown):
            shutdown()
            return
        conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist, then watch again."""


class _Broken(Exception):
    """A watch window broke in a way that asking again can cure (5xx, a malformed line, no connection)."""


class PodWatch:
    """ONE watch on the job pods (or, with resource=SECRETS, on the runner Secrets' metadata), in a thread,
    feeding `events`; restarts from the last resourceVersion. Both watches of a run may share one queue.

    When the server says the resourceVersion is too old (410, at the start or as an ERROR event in the stream)
    the thread relists and queues what changed meanwhile: RELISTED for each pod that is new or has a newer
    resourceVersion than the last event about it, DELETED for each pod that vanished. A pod whose state did
    not change is not queued again, so the run sees every state once. Windows that break (5xx, malformed or
    truncated lines, a dropped connection) are reopened from the last resourceVersion after a back-off.
    """

    def __init__(
        self,
        driver: KubeDriver,
        selector: str,
        resource_version: str,
        *,
        events: queue.Queue[PodEvent | WatchFailed] | None = None,
        resource: str = PODS,
    ) -> None:
        self._driver = driver
        self._selector = selector
        self._rv = resource_version
        self.resource = resource
        self._what = f"the {_noun(resource)} watch on namespace {driver.namespace}"
        self._stop = threading.Event()
        self._resp: Any = None
        self._delivered = False  # the current window has delivered an event (however it then ended)
        self._known: dict[str, dict[str, Any]] = {}
        self.events: queue.Queue[PodEvent | WatchFailed] = queue.Queue() if events is None else events
        self._thread = threading.Thread(target=self._run, name=f"runnerconf-{resource}-watch", daemon=True)

    def start(self) -> PodWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            _shutdown(resp)
        # The stream returns within WATCH_WINDOW_S; the thread is a daemon, so do not wait for all of it.
        self._thread.join(timeout=1.0)

    def __enter__(self) -> PodWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _emit(self, kind: str, pod: dict[str, Any], relisted: bool = False) -> None:
        name = pod.get("metadata", {}).get("name", "")
        if kind == "DELETED":
            self._known.pop(name, None)
        else:
            self._known[name] = pod
        self.events.put(PodEvent(kind, pod, time.time(), relisted, self.resource))

    def _fail(self, error: KubeError) -> None:
        self.events.put(WatchFailed(error, time.time(), self.resource))
        self._stop.set()

    def _run(self) -> None:
        # Whatever ends this thread must reach the run as a queued WatchFailed, never as a lost traceback.
        try:
            self._loop()
        except KubeError as exc:
            self._fail(exc)
        except Exception as exc:
            self._fail(KubeError(f"{self._what} stopped unexpectedly: {exc!r}"))

    def _loop(self) -> None:
        failures = 0
        expiries = 0
        while not self._stop.is_set():
            try:
                delivered = self._watch_once()
                failures = 0  # a window that ended as windows end: the failures were not in a row
                if delivered:
                    expiries = 0
                else:
                    self._stop.wait(0.2)  # an empty window: do not spin if the server ends streams at once
            except _Expired:
                self._driver.count_retry("watch 410")
                # Only expiries right after a relist, with nothing delivered between, are in a row.
                expiries = 1 if self._delivered else expiries + 1
                if expiries > MAX_EXPIRIES:
                    raise KubeAPIFailing(
                        f"{self._what} expired {expiries} times in a row right after a fresh list; the "
                        f"Kubernetes API at {self._driver.host} keeps resetting its watch cache"
                    ) from None
                if expiries > 1:  # the first relist is at once; a server that keeps expiring gets a back-off
                    self._stop.wait(min(RETRY_BASE_S * 2 ** (expiries - 2), RETRY_MAX_S))
                self._relist()
                # A fresh list is the current state: broken windows before it are not in a row with those
                # after it (an expiring cache behind a flaky proxy). Expiries alone still bound the loop.
                failures = 0
            except _Broken as exc:
                self._driver.count_retry("watch broken")
                failures = 1 if self._delivered else failures + 1  # in a row: with nothing delivered between
                if failures >= MAX_WATCH_FAILURES:
                    raise KubeAPIFailing(
                        f"{self._what} failed {failures} times in a row (last: {exc}); the Kubernetes API at "
                        f"{self._driver.host} is not serving watches"
                    ) from None
                self._stop.wait(min(0.5 * 2**failures, RETRY_MAX_S))

    def _watch_once(self) -> bool:
        """One watch window; True when it delivered any event about a pod."""
        delivered = self._delivered = False
        self._resp = self._driver.open_watch(self._selector, self._rv, self.resource)
        try:
            for event in self._driver.watch_events(self._resp, self.resource):
                if self._stop.is_set():
                    return delivered
                kind = event.get("type")
                obj = event.get("object") or {}
                rv = obj.get("metadata", {}).get("resourceVersion")
                if rv:
                    self._rv = str(rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    delivered = self._delivered = True
                    self._emit(str(kind), obj)
        finally:
            self._resp = None
        return delivered

    def _relist(self) -> None:
        """Read the current state (retried) and queue what changed since the last event about each pod."""
        body = self._driver.relist(self.resource, self._selector)
        self._rv = str(body.get("metadata", {}).get("resourceVersion", ""))
        current = {p.get("metadata", {}).get("name", ""): p for p in body.get("items") or []}
        for name in [n for n in self._known if n not in current]:
            self._emit("DELETED", self._known[name], relisted=True)
        for name, pod in current.items():
            seen = self._known.get(name)
            version = pod.get("metadata", {}).get("resourceVersion")
            if seen is None or seen.get("metadata", {}).get("resourceVersion") != version:
                self._emit("RELISTED", pod, relisted=True)
