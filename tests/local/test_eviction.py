"""The local cluster's Eviction subresource and the emulated runner's view of an evicted pod (no Docker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from pytest_runnerconf import rbac
from pytest_runnerconf.errors import KubeError
from pytest_runnerconf.kube_driver import KubeDriver
from pytest_runnerconf.local.kstore import KubeStore
from pytest_runnerconf.local.kube_api import EVICTION_CONDITION, KubeAPI, write_kubeconfig
from pytest_runnerconf.local.runner import LocalRunner, disruption_target, evicted_or_gone
from pytest_runnerconf.local.tlsca import LocalCA
from pytest_runnerconf.profile import profile_from_table

NS = "ci"
POD = "runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeAPI, Path]]:
    tokens = {
        "evicts": frozenset({"get", "list", "watch", "create pods/eviction"}),
        "reads": frozenset({"get", "list", "watch"}),
    }
    server = KubeAPI(KubeStore(), tokens)
    ca = LocalCA.create(tmp_path_factory.mktemp("pki"))
    url = server.start(tls=ca.issue("kube-apiserver").server_context()).url
    kubeconfig = write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "kubeconfig",
        url,
        {"evicts": "evicts", "reads": "reads"},
        "evicts",
        NS,
        ca_pem=ca.pem,
    )
    yield server, kubeconfig
    server.stop()


def core(kubeconfig: Path, context: str) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def running_pod(grace: int | None = 5) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "build", "image": "alpine:3.20"}],
        "restartPolicy": "Never",
    }
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS},
        "spec": spec,
        "status": {"phase": "Running"},
    }


def fresh(server: KubeAPI) -> tuple[KubeStore, list[tuple[str, str, int]]]:
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    calls: list[tuple[str, str, int]] = []

    def on_delete(namespace: str, name: str, grace_s: int) -> None:
        calls.append((namespace, name, grace_s))
        store.update(
            "Pod", namespace, name, lambda o: o["metadata"].update(deletionTimestamp="2026-11-23T00:01:00Z")
        )

    store.on_delete["Pod"] = on_delete
    server.store = store
    return store, calls


def eviction(grace: int | None = None) -> client.V1Eviction:
    options = client.V1DeleteOptions(grace_period_seconds=grace) if grace is not None else None
    return client.V1Eviction(metadata=client.V1ObjectMeta(name=POD, namespace=NS), delete_options=options)


def test_eviction_marks_the_pod_and_deletes_it_gracefully(api: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = api
    store, calls = fresh(server)
    store.create(running_pod(grace=5))
    answer = core(kubeconfig, "evicts").create_namespaced_pod_eviction(
        POD, NS, eviction(), _preload_content=False
    )
    assert answer.status == 201
    pod = store.get("Pod", NS, POD)
    conditions = [c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert len(conditions) == 1 and conditions[0]["reason"] == "EvictionByEvictionAPI"
    assert conditions[0]["message"] == "Eviction API: evicting" and conditions[0]["status"] == "True"
    assert pod["metadata"]["deletionTimestamp"]
    assert calls == [(NS, POD, 5)]  # the pod's own grace period, as a plain DELETE would take


def test_eviction_takes_the_delete_options_grace(api: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = api
    store, calls = fresh(server)
    store.create(running_pod(grace=None))
    core(kubeconfig, "evicts").create_namespaced_pod_eviction(POD, NS, eviction(grace=2))
    assert calls == [(NS, POD, 2)]


def test_a_terminating_pod_is_not_evicted_twice(api: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = api
    store, calls = fresh(server)
    store.create(running_pod())
    api_client = core(kubeconfig, "evicts")
    api_client.create_namespaced_pod_eviction(POD, NS, eviction())
    api_client.create_namespaced_pod_eviction(POD, NS, eviction())
    assert len(calls) == 1


def test_eviction_needs_its_grant_and_an_existing_pod(api: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = api
    store, calls = fresh(server)
    store.create(running_pod())
    with pytest.raises(ApiException) as refused:
        core(kubeconfig, "reads").create_namespaced_pod_eviction(POD, NS, eviction())
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403 and f'pods "{POD}" is forbidden' in message
    assert 'cannot create resource "pods/eviction" in API group "" in the namespace "ci"' in message
    with pytest.raises(ApiException) as missing:
        core(kubeconfig, "evicts").create_namespaced_pod_eviction("no-such-pod", NS, eviction())
    assert missing.value.status == 404
    assert calls == [] and "conditions" not in store.get("Pod", NS, POD)["status"]


def test_the_runner_fails_the_stage_with_the_informers_words() -> None:
    pod = running_pod()
    pod["status"]["conditions"] = [dict(EVICTION_CONDITION)]
    fake = SimpleNamespace(_pod=lambda ns, name: pod)
    said = LocalRunner._pod_failure(fake, NS, POD, ("build", "helper"))  # type: ignore[arg-type]
    assert said == (
        f'pod "{NS}/{POD}" is disrupted: reason "EvictionByEvictionAPI", message "Eviction API: evicting"'
    )
    assert evicted_or_gone(pod) and evicted_or_gone({}) and not evicted_or_gone(running_pod())


# ---------------------------------------------------------------- the plugin's side: KubeDriver.evict_pod


def _driver(kubeconfig: Path, context: str) -> KubeDriver:
    table = {
        "gitlab_url": "https://gitlab.example.com",
        "token_env": "T",
        "project": "g/p",
        "namespace": NS,
        "kubeconfig": str(kubeconfig),
        "kube_context": context,
    }
    return KubeDriver(profile_from_table("t", table, "runnerconf.toml"))


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[KubeStore, Path]]:
    """The local API over plain loopback HTTP with the Role `runnerconf rbac` makes, with and without eviction."""
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    tokens = {
        "with-eviction-0001": rbac.grants(["secrets", "pods/eviction"]),
        "without-eviction-2": rbac.grants(["secrets"]),
    }
    server = KubeAPI(store, tokens)
    url = server.start().url
    contexts = {"with": "with-eviction-0001", "without": "without-eviction-2"}
    yield store, write_kubeconfig(tmp_path / "kubeconfig", url, contexts, "with", NS)
    server.stop()


def test_the_driver_evicts_and_says_what_it_was_answered(plain: tuple[KubeStore, Path]) -> None:
    store, kubeconfig = plain
    graces: list[int] = []
    store.on_delete["Pod"] = lambda _ns, _name, grace_s: graces.append(grace_s)  # the node's side: keep it
    store.create(running_pod(grace=5))
    answer = _driver(kubeconfig, "with").evict_pod(POD)
    assert (answer.code, answer.refused) == (201, False)
    assert disruption_target(store.get("Pod", NS, POD)) is not None and graces == [5]


def test_the_eviction_grant_is_asked_as_pods_subresource_eviction(plain: tuple[KubeStore, Path]) -> None:
    _store, kubeconfig = plain
    assert _driver(kubeconfig, "with").can_i("create", "pods/eviction")
    without = _driver(kubeconfig, "without")
    assert not without.can_i("create", "pods/eviction")
    missing = without.missing_grants(rbac.rules(["secrets", "pods/eviction"]))
    assert [(rule.resource, verb) for rule, verb, _why in missing] == [("pods/eviction", "create")]
    with pytest.raises(KubeError, match=r"no RBAC to create pods/eviction in namespace ci \(403\)"):
        without.evict_pod(POD)
    with pytest.raises(KubeError, match=r"no RBAC to create pods/eviction in namespace ci \(asked by"):
        without.preflight("x=y", rbac.rules(["secrets", "pods/eviction"]))
