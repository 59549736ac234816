"""The local Kubernetes API, driven only through the official client as a user's script would."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from pytest_runnerconf.local.errors import LocalConfigError as ConfigError
from pytest_runnerconf.local.kstore import BadRequest, Gone, KubeStore
from pytest_runnerconf.local.kube_api import GIT_VERSION, KubeAPI, write_kubeconfig
from pytest_runnerconf.local.tlsca import LocalCA

FULL = frozenset({"get", "list", "watch", "delete"})
NS = "ci"
HELPER_IMAGE = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v18.11.4"


@dataclass
class Cluster:
    store: KubeStore
    api: KubeAPI
    kubeconfig: Path

    def core(self, context: str = "runnerconf-local") -> client.CoreV1Api:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), context=context, client_configuration=cfg)
        return client.CoreV1Api(client.ApiClient(cfg))

    def version(self) -> client.VersionInfo:
        cfg = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), context="runnerconf-local", client_configuration=cfg
        )
        return client.VersionApi(client.ApiClient(cfg)).get_code()


@dataclass
class Server:
    api: KubeAPI
    kubeconfig: Path

    def fresh(self, history_limit: int = 20000) -> Cluster:
        """Point the running API at a new, empty store (one server per module keeps the tests fast)."""
        store = KubeStore(history_limit=history_limit)
        store.create({"kind": "Namespace", "metadata": {"name": NS}})
        self.api.store = store
        return Cluster(store, self.api, self.kubeconfig)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tokens = {"full-token-1": FULL, "restricted-token-2": frozenset({"get", "list"})}
    api = KubeAPI(KubeStore(), tokens)
    # Over TLS with verification on, as every client of the local cluster talks to it.
    ca = LocalCA.create(tmp_path_factory.mktemp("pki"))
    url = api.start(tls=ca.issue("kube-apiserver").server_context()).url
    assert url.startswith("https://127.0.0.1:")
    contexts = {
        "runnerconf-local": "full-token-1",
        "runnerconf-local-restricted": "restricted-token-2",
        "wrong-token": "not-a-known-token",
    }
    kubeconfig = write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "kubeconfig", url, contexts, "runnerconf-local", NS, ca_pem=ca.pem
    )
    yield Server(api, kubeconfig)
    api.stop()


@pytest.fixture
def cluster(server: Server) -> Cluster:
    return server.fresh()


def pod(
    name: str, ns: str = NS, labels: dict[str, str] | None = None, phase: str = "Pending"
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "build", "image": "alpine:3.20"}], "restartPolicy": "Never"},
        "status": {"phase": phase},
    }


def event(name: str, involved: str, reason: str = "Scheduled", type_: str = "Normal") -> dict[str, Any]:
    return {
        "kind": "Event",
        "metadata": {"name": name, "namespace": NS},
        "involvedObject": {"kind": "Pod", "namespace": NS, "name": involved, "apiVersion": "v1"},
        "reason": reason,
        "message": f"{reason} {involved}",
        "type": type_,
        "count": 1,
        "source": {"component": "runnerconf-local"},
        "firstTimestamp": "2026-11-23T00:00:01Z",
        "lastTimestamp": "2026-11-23T00:00:01Z",
    }


def realistic_pod() -> dict[str, Any]:
    mounts = [
        {"name": "repo", "mountPath": "/builds"},
        {"name": "scripts", "mountPath": "/scripts-42-7"},
        {"name": "logs", "mountPath": "/logs-42-7"},
    ]
    resources = {"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "250m", "memory": "128Mi"}}
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "runner-abcdefghi-project-42-concurrent-0-x1y2z3w4",
            "namespace": NS,
            "labels": {
                "pod": "runner-abcdefghi-project-42-concurrent-0",
                "project.runner.gitlab.com/id": "42",
            },
            "annotations": {"job.runner.gitlab.com/id": "7", "job.runner.gitlab.com/timeout": "1h0m0s"},
        },
        "spec": {
            "initContainers": [
                {
                    "name": "init-permissions",
                    "image": HELPER_IMAGE,
                    "command": ["sh", "-c", "touch /logs-42-7/output.log"],
                    "resources": resources,
                    "volumeMounts": mounts,
                    "securityContext": {"capabilities": {"drop": ["NET_RAW"]}, "privileged": False},
                }
            ],
            "containers": [
                {
                    "name": "build",
                    "image": "alpine:3.20",
                    "command": ["sh", "-c", "sleep 1"],
                    "env": [{"name": "CI_JOB_ID", "value": "7"}],
                    "resources": resources,
                    "volumeMounts": mounts,
                    "stdin": True,
                    "securityContext": {"capabilities": {"drop": ["NET_RAW"]}, "runAsUser": 1000},
                },
                {"name": "helper", "image": HELPER_IMAGE, "volumeMounts": mounts, "stdin": True},
            ],
            "volumes": [{"name": n, "emptyDir": {}} for n in ("repo", "scripts", "logs")],
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["postgres", "db"]}],
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["10.0.0.2"],
                "searches": ["svc.cluster.local"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            },
            "securityContext": {"fsGroup": 1000, "runAsNonRoot": True},
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 3601,
            "terminationGracePeriodSeconds": 5,
        },
        "status": {
            "phase": "Failed",
            "startTime": "2026-11-23T00:00:02Z",
            "containerStatuses": [
                {
                    "name": "build",
                    "image": "alpine:3.20",
                    "imageID": "docker-pullable://alpine@sha256:00",
                    "containerID": "docker://abc",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "OOMKilled",
                            "startedAt": "2026-11-23T00:00:03Z",
                            "finishedAt": "2026-11-23T00:00:09Z",
                            "containerID": "docker://abc",
                        }
                    },
                    "lastState": {},
                }
            ],
        },
    }


_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def normalise_times(value: Any) -> Any:
    """The client renders datetimes as +00:00 where the API sent Z; compare instants, not spellings."""
    if isinstance(value, dict):
        return {k: normalise_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_times(v) for v in value]
    if isinstance(value, str) and _TIME.match(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def stream_until(w: watch.Watch, iterator: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    seen = []
    for ev in iterator:
        seen.append(ev)
        if len(seen) == count:
            w.stop()
    return seen


# ---------------------------------------------------------------- discovery, namespaces, auth


def test_version_and_discovery(cluster: Cluster) -> None:
    assert cluster.version().git_version == GIT_VERSION
    resources = cluster.core().get_api_resources()
    assert {r.name for r in resources.resources} == {
        "pods",
        "pods/log",
        "pods/exec",
        "pods/eviction",
        "events",
        "secrets",
        "configmaps",
        "namespaces",
    }
    assert next(r for r in resources.resources if r.name == "pods").namespaced is True
    version = cluster.version()
    # kubectl's dispatcher runs kubectl.1.<minor>: the emulated API server is 1.32, and says so in semver.
    assert (version.major, version.minor) == ("1", "32")
    assert re.fullmatch(r"v1\.32\.0-[a-z-]+", version.git_version)


def test_namespace_get_and_not_found(cluster: Cluster) -> None:
    core = cluster.core()
    assert core.read_namespace(NS).metadata.name == NS
    assert [n.metadata.name for n in core.list_namespace().items] == [NS]
    with pytest.raises(ApiException) as err:
        core.read_namespace("nope")
    assert err.value.status == 404
    assert '"message": "namespaces \\"nope\\" not found"' in err.value.body
    assert '"reason": "NotFound"' in err.value.body


def test_wrong_token_is_unauthorized(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as err:
        cluster.core("wrong-token").list_namespaced_pod(NS)
    assert err.value.status == 401
    assert '"reason": "Unauthorized"' in err.value.body


def test_restricted_context_may_list_but_not_watch_or_delete(cluster: Cluster) -> None:
    cluster.store.create(pod("p1"))
    core = cluster.core("runnerconf-local-restricted")
    assert [p.metadata.name for p in core.list_namespaced_pod(NS).items] == ["p1"]
    with pytest.raises(ApiException) as err:
        next(iter(watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=5)))
    assert err.value.status == 403
    expected = (
        'pods is forbidden: User \\"system:serviceaccount:runnerconf:restricted\\" cannot watch resource '
        '\\"pods\\" in API group \\"\\" in the namespace \\"ci\\"'
    )
    assert expected in err.value.body
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("p1", NS)
    assert err.value.status == 403
    assert 'pods \\"p1\\" is forbidden' in err.value.body
    assert cluster.store.get("Pod", NS, "p1")  # still there


def test_unsupported_method_answers_a_status(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as err:
        cluster.core().create_namespaced_pod(NS, client.V1Pod(metadata=client.V1ObjectMeta(name="x")))
    assert err.value.status == 405
    assert '"reason": "MethodNotAllowed"' in err.value.body


# ---------------------------------------------------------------- lists, selectors, objects


def test_list_pods_with_label_and_field_selectors(cluster: Cluster) -> None:
    store = cluster.store
    store.create(pod("a1", labels={"app": "x", "tier": "build"}, phase="Running"))
    store.create(pod("a2", labels={"app": "y"}, phase="Pending"))
    store.create(pod("a3", labels={"tier": "svc"}, phase="Running"))
    store.create(pod("other", ns="elsewhere", labels={"app": "x"}))
    core = cluster.core()

    def names(**kw: str) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod(NS, **kw).items]

    assert names() == ["a1", "a2", "a3"]
    assert names(label_selector="app=x") == ["a1"]
    assert names(label_selector="app==y") == ["a2"]
    assert names(label_selector="app!=x") == ["a2", "a3"]
    assert names(label_selector="app") == ["a1", "a2"]
    assert names(label_selector="!app") == ["a3"]
    assert names(label_selector="app in (x, y),tier notin (svc)") == ["a1", "a2"]
    assert names(label_selector="app in (x,y),tier") == ["a1"]
    assert names(field_selector="status.phase=Running") == ["a1", "a3"]
    assert names(field_selector="status.phase!=Running,metadata.name!=a1") == ["a2"]
    assert names(field_selector="metadata.name==a3", label_selector="tier=svc") == ["a3"]
    every = core.list_pod_for_all_namespaces(label_selector="app=x")
    assert [(p.metadata.namespace, p.metadata.name) for p in every.items] == [
        (NS, "a1"),
        ("elsewhere", "other"),
    ]
    assert every.metadata.resource_version == store.resource_version


def test_bad_selectors_answer_400(cluster: Cluster) -> None:
    core = cluster.core()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(NS, field_selector="spec.foo=bar")
    assert err.value.status == 400
    assert "field label not supported: spec.foo" in err.value.body
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(NS, label_selector="app in x")
    assert err.value.status == 400


def test_list_items_carry_no_kind_but_get_does(cluster: Cluster) -> None:
    cluster.store.create(pod("p1"))
    core = cluster.core()
    raw = core.api_client.sanitize_for_serialization(core.list_namespaced_pod(NS))
    assert raw["kind"] == "PodList"
    assert "kind" not in raw["items"][0]
    assert core.read_namespaced_pod("p1", NS).kind == "Pod"


def test_realistic_pod_round_trips_through_the_client_models(cluster: Cluster) -> None:
    stored = cluster.store.create(realistic_pod())
    core = cluster.core()
    got = core.read_namespaced_pod(stored["metadata"]["name"], NS)
    assert isinstance(got, client.V1Pod)
    assert normalise_times(core.api_client.sanitize_for_serialization(got)) == normalise_times(stored)
    build = got.status.container_statuses[0].state.terminated
    assert (build.reason, build.exit_code) == ("OOMKilled", 137)


def test_secrets_list_get_delete_and_configmap_get(cluster: Cluster) -> None:
    store = cluster.store
    store.create(
        {"kind": "Secret", "metadata": {"name": "s1", "namespace": NS}, "type": "kubernetes.io/dockercfg"}
    )
    store.create({"kind": "Secret", "metadata": {"name": "s2", "namespace": NS}, "type": "Opaque"})
    store.create(
        {"kind": "ConfigMap", "metadata": {"name": "runner-config", "namespace": NS}, "data": {"k": "v"}}
    )
    core = cluster.core()
    assert [s.metadata.name for s in core.list_namespaced_secret(NS).items] == ["s1", "s2"]
    only = core.list_namespaced_secret(NS, field_selector="type=kubernetes.io/dockercfg")
    assert [s.metadata.name for s in only.items] == ["s1"]
    assert core.read_namespaced_secret("s2", NS).type == "Opaque"
    gone = core.delete_namespaced_secret("s1", NS)
    assert gone["status"] == "Success" and gone["details"]["name"] == "s1"
    assert [s.metadata.name for s in core.list_namespaced_secret(NS).items] == ["s2"]
    assert core.read_namespaced_config_map("runner-config", NS).data == {"k": "v"}
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["runner-config"]
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("missing", NS)
    assert err.value.status == 404


# ---------------------------------------------------------------- watches


def test_watch_from_resource_version_sees_changes_in_order(cluster: Cluster) -> None:
    store = cluster.store
    store.create(pod("before", labels={"app": "x"}))
    core = cluster.core()
    start_rv = core.list_namespaced_pod(NS, label_selector="app=x").metadata.resource_version
    store.create(pod("p1", labels={"app": "x"}))
    store.create(pod("noise", labels={"app": "other"}))
    store.create(pod("p1", ns="elsewhere", labels={"app": "x"}))

    def next_change(n: int) -> None:  # each step happens only after the previous event arrived
        if n == 1:
            store.update("Pod", NS, "p1", lambda o: o["status"].update(phase="Running"))
        elif n == 2:
            store.delete("Pod", NS, "p1")

    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_pod, NS, label_selector="app=x", resource_version=start_rv):
        seen.append(ev)
        next_change(len(seen))
        if len(seen) == 3:
            w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("ADDED", "p1"),
        ("MODIFIED", "p1"),
        ("DELETED", "p1"),
    ]
    assert isinstance(seen[0]["object"], client.V1Pod)
    assert seen[1]["object"].status.phase == "Running"
    assert seen[2]["raw_object"]["status"]["phase"] == "Running"
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in seen]
    assert rvs == sorted(rvs) and rvs[0] > int(start_rv)
    assert seen[2]["raw_object"]["kind"] == "Pod"
    assert w.resource_version == str(rvs[-1])


def test_watch_without_resource_version_starts_with_current_objects(cluster: Cluster) -> None:
    cluster.store.create(pod("p1"))
    cluster.store.create(pod("p2"))
    w = watch.Watch()
    seen = stream_until(w, w.stream(cluster.core().list_namespaced_pod, NS, timeout_seconds=10), 2)
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [("ADDED", "p1"), ("ADDED", "p2")]


def test_watch_timeout_ends_the_stream(cluster: Cluster) -> None:
    cluster.store.create(pod("p1"))
    core = cluster.core()
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    started = time.monotonic()
    seen = list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1))
    elapsed = time.monotonic() - started
    assert seen == []
    assert 0.9 <= elapsed < 3


def test_watch_bookmark_at_timeout_when_asked(cluster: Cluster) -> None:
    cluster.store.create(pod("p1"))
    core = cluster.core()
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    cluster.store.create(pod("x", ns="elsewhere"))  # moves the version on without touching this watch
    w = watch.Watch()
    seen = list(
        w.stream(
            core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1, allow_watch_bookmarks=True
        )
    )
    assert [e["type"] for e in seen] == ["BOOKMARK"]
    assert seen[0]["raw_object"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": cluster.store.resource_version},
    }
    assert w.resource_version == cluster.store.resource_version


def test_watch_on_too_old_resource_version_is_410(server: Server) -> None:
    cluster = server.fresh(history_limit=5)
    for i in range(10):
        cluster.store.create(pod(f"p{i}"))
    core = cluster.core()
    for extra in ({"timeout_seconds": 5}, {}):  # without a timeout the client retries once, then raises
        with pytest.raises(ApiException) as err:
            list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version="2", **extra))
        assert err.value.status == 410
        assert "too old resource version: 2" in err.value.reason
    # a version inside the window still works
    recent = str(int(cluster.store.resource_version) - 2)
    w = watch.Watch()
    seen = stream_until(w, w.stream(core.list_namespaced_pod, NS, resource_version=recent), 2)
    assert [e["object"].metadata.name for e in seen] == ["p8", "p9"]


def test_watch_reports_leaving_a_field_selection_as_deleted(cluster: Cluster) -> None:
    store = cluster.store
    store.create(pod("p1", phase="Running"))
    core = cluster.core()
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    store.update("Pod", NS, "p1", lambda o: o["status"].update(phase="Succeeded"))
    store.create(pod("p2", phase="Pending"))
    store.update("Pod", NS, "p2", lambda o: o["status"].update(phase="Running"))
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_pod, NS, field_selector="status.phase=Running", resource_version=rv
    )
    seen = stream_until(w, stream, 2)
    assert [(e["type"], e["object"].metadata.name, e["object"].status.phase) for e in seen] == [
        ("DELETED", "p1", "Succeeded"),
        ("ADDED", "p2", "Running"),
    ]


def test_events_list_and_watch_with_involved_object_selector(cluster: Cluster) -> None:
    store = cluster.store
    store.create(event("e1", "p1"))
    store.create(event("e2", "p2", reason="BackOff", type_="Warning"))
    core = cluster.core()
    listed = core.list_namespaced_event(NS, field_selector="involvedObject.name=p1")
    assert [e.metadata.name for e in listed.items] == ["e1"]
    warnings = core.list_namespaced_event(NS, field_selector="type=Warning,involvedObject.kind=Pod")
    assert [e.reason for e in warnings.items] == ["BackOff"]

    def after(n: int) -> None:
        if n == 1:  # the p2 event must be filtered out; the p1 one delivered
            store.create(event("e3", "p2"))
            store.create(event("e4", "p1", reason="OOMKilling", type_="Warning"))

    w = watch.Watch()
    seen = []
    for ev in w.stream(
        core.list_namespaced_event, NS, field_selector="involvedObject.name=p1", timeout_seconds=10
    ):
        seen.append(ev)
        after(len(seen))
        if len(seen) == 2:
            w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [("ADDED", "e1"), ("ADDED", "e4")]
    assert isinstance(seen[1]["object"], client.CoreV1Event)
    assert seen[1]["object"].reason == "OOMKilling"


# ---------------------------------------------------------------- deletion


def test_graceful_delete_calls_the_hook_and_returns_the_terminating_pod(cluster: Cluster) -> None:
    store = cluster.store
    calls: list[tuple[str, str, int]] = []

    def on_delete(namespace: str, name: str, grace_s: int) -> None:
        calls.append((namespace, name, grace_s))
        store.update(
            "Pod", namespace, name, lambda o: o["metadata"].update(deletionTimestamp="2026-11-23T00:01:00Z")
        )

    store.on_delete["Pod"] = on_delete
    store.create(pod("p1"))
    store.create(pod("p2"))
    with_default = realistic_pod()
    store.create(with_default)
    core = cluster.core()
    returned = core.delete_namespaced_pod("p1", NS, body=client.V1DeleteOptions(grace_period_seconds=7))
    assert isinstance(returned, client.V1Pod)
    assert returned.metadata.deletion_timestamp is not None
    assert core.read_namespaced_pod("p1", NS).metadata.deletion_timestamp is not None  # still there
    core.delete_namespaced_pod("p2", NS, grace_period_seconds=3)
    core.delete_namespaced_pod(with_default["metadata"]["name"], NS)
    assert calls == [(NS, "p1", 7), (NS, "p2", 3), (NS, with_default["metadata"]["name"], 5)]


def test_delete_without_hook_removes_at_once_and_watch_sees_it(cluster: Cluster) -> None:
    cluster.store.create(pod("p1"))
    core = cluster.core()
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    returned = core.delete_namespaced_pod("p1", NS)
    assert returned.metadata.name == "p1"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("p1", NS)
    assert err.value.status == 404
    assert 'pods \\"p1\\" not found' in err.value.body
    w = watch.Watch()
    seen = stream_until(w, w.stream(core.list_namespaced_pod, NS, resource_version=rv), 1)
    assert seen[0]["type"] == "DELETED"
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("p1", NS)
    assert err.value.status == 404


# ---------------------------------------------------------------- the store itself


def test_store_create_sets_identity_and_refuses_duplicates() -> None:
    store = KubeStore()
    a = store.create(pod("p1"))
    b = store.create({"kind": "Namespace", "metadata": {"name": "n", "namespace": "ignored"}})
    assert a["apiVersion"] == "v1" and len(a["metadata"]["uid"]) == 36
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["metadata"]["creationTimestamp"])
    assert int(b["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1
    assert "namespace" not in b["metadata"]
    with pytest.raises(Exception, match='pods "p1" already exists'):
        store.create(pod("p1"))
    with pytest.raises(BadRequest):
        store.create({"kind": "Pod", "metadata": {"name": "no-namespace"}})
    a["metadata"]["labels"]["mutated"] = "yes"  # a returned copy must not alias the stored object
    assert "mutated" not in store.get("Pod", NS, "p1")["metadata"]["labels"]


def test_store_update_is_atomic_and_keeps_identity() -> None:
    store = KubeStore()
    created = store.create(pod("p1"))

    def bad(o: dict[str, Any]) -> None:
        o["status"]["phase"] = "Running"
        raise RuntimeError("mutator failed")

    with pytest.raises(RuntimeError):
        store.update("Pod", NS, "p1", bad)
    assert store.get("Pod", NS, "p1")["status"]["phase"] == "Pending"

    def rename(o: dict[str, Any]) -> None:
        o["metadata"]["name"] = "other"
        o["metadata"]["uid"] = "forged"

    updated = store.update("Pod", NS, "p1", rename)
    assert updated["metadata"]["name"] == "p1" and updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_store_concurrent_updates_lose_nothing() -> None:
    store = KubeStore()
    store.create({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": NS}, "data": {"n": "0"}})

    def bump(o: dict[str, Any]) -> None:
        o["data"]["n"] = str(int(o["data"]["n"]) + 1)

    def worker() -> None:
        for _ in range(200):
            store.update("ConfigMap", NS, "c", bump)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("ConfigMap", NS, "c")["data"]["n"] == "800"


def test_store_watch_that_falls_behind_the_history_gets_gone() -> None:
    store = KubeStore(history_limit=3)
    events = store.watch("Pod", NS, resource_version=store.resource_version, timeout_s=5)
    store.create(pod("p0"))
    assert next(events)[0] == "ADDED"
    for i in range(1, 6):  # more changes than the history keeps, before the watcher reads again
        store.create(pod(f"p{i}"))
    with pytest.raises(Gone):
        next(events)


def test_store_reset_of_one_kinds_watch_cache_leaves_other_kinds_watching() -> None:
    """A real API server keeps a watch cache per resource: the pods' reset sends 410 to pod watches only."""
    store = KubeStore()
    store.expire_history = lambda type_, kind, obj: kind == "Pod" and obj["metadata"]["name"] == "p1"
    store.create(pod("p0"))
    start = store.resource_version
    pods = store.watch("Pod", NS, resource_version=start, timeout_s=5)
    maps = store.watch("ConfigMap", NS, resource_version=start, timeout_s=5)
    store.create(pod("p1"))
    store.create({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": NS}, "data": {}})
    with pytest.raises(Gone):
        next(pods)
    assert next(maps)[0] == "ADDED"
    with pytest.raises(Gone):  # a pod watch from before the reset cannot reopen either
        next(store.watch("Pod", NS, resource_version=start, timeout_s=1))


def test_store_watch_ends_when_stop_is_set() -> None:
    store = KubeStore()
    stop = threading.Event()
    events = store.watch("Pod", NS, resource_version="0", timeout_s=30, stop=stop)
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.extend(events))
    reader.start()
    stop.set()
    store.wake()
    reader.join(timeout=5)
    assert not reader.is_alive() and result == []


def test_store_returned_watch_objects_are_copies() -> None:
    store = KubeStore()
    store.create(pod("p1"))
    events = store.watch("Pod", NS, timeout_s=1)
    _, obj = next(events)
    obj["metadata"]["name"] = "changed"
    assert store.get("Pod", NS, "p1")["metadata"]["name"] == "p1"


# ---------------------------------------------------------------- kubeconfig


def test_write_kubeconfig_is_private_and_validates_current(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", {"a": "t1", "b": "t2"}, "b", "ci")
    assert os.stat(path).st_mode & 0o777 == 0o600
    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert [c["name"] for c in contexts] == ["a", "b"]
    assert active["name"] == "b" and active["context"] == {
        "cluster": "runnerconf-local",
        "user": "b",
        "namespace": "ci",
    }
    with pytest.raises(ConfigError):
        write_kubeconfig(tmp_path / "kc2", "http://127.0.0.1:1", {"a": "t1"}, "missing", "ci")


def test_store_watch_sends_periodic_bookmarks() -> None:
    store = KubeStore()
    store.create(pod("p1"))
    started = time.monotonic()
    seen = list(
        store.watch("Pod", NS, resource_version=store.resource_version, timeout_s=0.35, bookmark_s=0.1)
    )
    assert 0.3 <= time.monotonic() - started < 2
    assert len(seen) >= 3 and {t for t, _ in seen} == {"BOOKMARK"}
    assert seen[-1][1] == {"metadata": {"resourceVersion": store.resource_version}}
