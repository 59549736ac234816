"""PodDisruptionBudgets in the local cluster (no Docker): served as policy/v1 to the Python client and kubectl,
judged on eviction (429, the pod untouched), garbage-collected with their pod, created by the emulated runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from pytest_runnerconf.kube_driver import KubeDriver
from pytest_runnerconf.local import pdb
from pytest_runnerconf.local.kstore import KubeStore
from pytest_runnerconf.local.kube_api import OPERATOR_VERBS, KubeAPI, write_kubeconfig
from pytest_runnerconf.local.poddeletion import PodDeletion
from pytest_runnerconf.local.runner import LocalRunner
from pytest_runnerconf.local.tlsca import LocalCA
from pytest_runnerconf.profile import profile_from_table
from tests.local.kubectl import Kubectl, kubectl_binary

NS = "ci"
POD = "runner-rccacheru-project-42-concurrent-0-x1y2z3w4"
LABEL = "job.runner.gitlab.com/pod"
UNIQUE = "runner-rccacheru-project-42-concurrent-0"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeAPI, Path]]:
    # Tokens unlike any word: the driver remembers its token as a secret and masks it in all output after.
    tokens = {
        # what the runner's Role needs with pod_disruption_budget = true, plus what the run's eviction needs
        "pdb-runner-token-0001": OPERATOR_VERBS | {"create poddisruptionbudgets", "create pods/eviction"},
        "pdb-reads-token-0002": frozenset({"get", "list", "watch"}),
    }
    server = KubeAPI(KubeStore(), tokens)
    ca = LocalCA.create(tmp_path_factory.mktemp("pki"))
    url = server.start(tls=ca.issue("kube-apiserver").server_context()).url
    kubeconfig = write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "kubeconfig",
        url,
        {"runner": "pdb-runner-token-0001", "reads": "pdb-reads-token-0002"},
        "runner",
        NS,
        ca_pem=ca.pem,
    )
    yield server, kubeconfig
    server.stop()


def fresh(server: KubeAPI) -> KubeStore:
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    store.admission.append(pdb.admit)
    server.store = store
    return store


def _config(kubeconfig: Path, context: str) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg)
    return client.ApiClient(cfg)


def policy(kubeconfig: Path, context: str = "runner") -> client.PolicyV1Api:
    return client.PolicyV1Api(_config(kubeconfig, context))


def core(kubeconfig: Path, context: str = "runner") -> client.CoreV1Api:
    return client.CoreV1Api(_config(kubeconfig, context))


def job_pod(phase: str = "Running", ready: bool = True, name: str = POD) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {LABEL: UNIQUE}},
        "spec": {
            "containers": [{"name": "build", "image": "alpine:3.20"}],
            "terminationGracePeriodSeconds": 5,
        },
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def budget_for(pod: dict[str, Any]) -> client.V1PodDisruptionBudget:
    """What the runner sends (kubernetes.go v18.11.1 createPodDisruptionBudget), through the client's model."""
    meta = pod["metadata"]
    owner = client.V1OwnerReference(api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"])
    return client.V1PodDisruptionBudget(
        api_version="policy/v1",
        kind="PodDisruptionBudget",
        metadata=client.V1ObjectMeta(name=f"{meta['name']}-pdb", namespace=NS, owner_references=[owner]),
        spec=client.V1PodDisruptionBudgetSpec(
            min_available=1, selector=client.V1LabelSelector(match_labels={LABEL: UNIQUE})
        ),
    )


def eviction() -> client.V1Eviction:
    return client.V1Eviction(metadata=client.V1ObjectMeta(name=POD, namespace=NS))


def test_create_get_list_delete_through_the_client(served: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = served
    store = fresh(server)
    pod = store.create(job_pod())
    api = policy(kubeconfig)
    created = api.create_namespaced_pod_disruption_budget(NS, budget_for(pod))
    assert created.metadata.name == f"{POD}-pdb" and created.metadata.uid
    assert created.metadata.owner_references[0].uid == pod["metadata"]["uid"]
    got = api.read_namespaced_pod_disruption_budget(f"{POD}-pdb", NS)
    assert got.spec.min_available == 1 and got.spec.selector.match_labels == {LABEL: UNIQUE}
    # the disruption controller's view: one healthy pod, one needed, nothing may go
    assert (got.status.current_healthy, got.status.desired_healthy, got.status.disruptions_allowed) == (
        1,
        1,
        0,
    )
    assert got.status.expected_pods == 1
    assert [b.metadata.name for b in api.list_namespaced_pod_disruption_budget(NS).items] == [f"{POD}-pdb"]
    assert len(api.list_pod_disruption_budget_for_all_namespaces().items) == 1
    with pytest.raises(ApiException) as again:  # the runner then GETs the existing one
        api.create_namespaced_pod_disruption_budget(NS, budget_for(pod))
    assert again.value.status == 409 and json.loads(again.value.body)["reason"] == "AlreadyExists"
    api.delete_namespaced_pod_disruption_budget(f"{POD}-pdb", NS)
    assert api.list_namespaced_pod_disruption_budget(NS).items == []


def test_create_needs_its_grant(served: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = served
    store = fresh(server)
    pod = store.create(job_pod())
    with pytest.raises(ApiException) as refused:
        policy(kubeconfig, "reads").create_namespaced_pod_disruption_budget(NS, budget_for(pod))
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403
    assert (
        'cannot create resource "poddisruptionbudgets" in API group "policy" in the namespace "ci"' in message
    )


def test_eviction_is_refused_with_the_api_servers_429(served: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = served
    store = fresh(server)
    pod = store.create(job_pod())
    policy(kubeconfig).create_namespaced_pod_disruption_budget(NS, budget_for(pod))
    with pytest.raises(ApiException) as refused:
        core(kubeconfig).create_namespaced_pod_eviction(POD, NS, eviction())
    body = json.loads(refused.value.body)
    assert refused.value.status == 429
    assert body["reason"] == "TooManyRequests" and body["status"] == "Failure" and body["code"] == 429
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": f"The disruption budget {POD}-pdb needs 1 healthy pods and has 1 currently",
        }
    ]
    after = store.get("Pod", NS, POD)  # untouched: no DisruptionTarget, no deletion
    assert after["metadata"].get("deletionTimestamp") is None
    assert [c["type"] for c in after["status"]["conditions"]] == ["Ready"]
    # the plugin's driver takes the 429 as the answer it is (not an error) and keeps the message
    driver = KubeDriver(
        profile_from_table(
            "t",
            {
                "gitlab_url": "https://gitlab.example.com",
                "token_env": "T",
                "project": "g/p",
                "namespace": NS,
                "kubeconfig": str(kubeconfig),
                "kube_context": "runner",
            },
            "runnerconf.toml",
        )
    )
    answer = driver.evict_pod(POD)
    assert answer.refused and answer.code == 429
    assert answer.message == "Cannot evict pod as it would violate the pod's disruption budget."


def test_budgets_that_do_not_hold_the_pod_let_the_eviction_through(served: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = served
    store = fresh(server)
    graces: list[float] = []
    store.on_delete["Pod"] = lambda _ns, _name, grace_s: graces.append(grace_s)
    pod = store.create(job_pod(phase="Pending", ready=False))  # canIgnorePDB: a Pending pod goes
    policy(kubeconfig).create_namespaced_pod_disruption_budget(NS, budget_for(pod))
    core(kubeconfig).create_namespaced_pod_eviction(POD, NS, eviction())
    assert graces == [5]
    other = fresh(server)
    other.on_delete["Pod"] = lambda _ns, _name, grace_s: graces.append(grace_s)
    other.create(job_pod())
    budget = budget_for(other.get("Pod", NS, POD))
    budget.spec.selector = client.V1LabelSelector(match_labels={LABEL: "another-job"})
    policy(kubeconfig).create_namespaced_pod_disruption_budget(NS, budget)
    core(kubeconfig).create_namespaced_pod_eviction(POD, NS, eviction())  # no budget selects it
    assert graces == [5, 5]


def test_an_unready_pod_under_a_budget_not_met_is_refused_too() -> None:
    pod = job_pod(ready=False)
    pod["metadata"]["uid"] = "u1"
    body = {
        "metadata": {"name": "b"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {LABEL: UNIQUE}}},
    }
    with pytest.raises(pdb.TooManyRequests, match="disruption budget"):
        pdb.check_eviction(pod, [body], [pod])
    with pytest.raises(Exception, match="more than one PodDisruptionBudget"):
        pdb.check_eviction(job_pod(), [body, {**body, "metadata": {"name": "c"}}], [job_pod()])
    # a percentage needs the pods' controller, which bare pods lack: nothing allowed
    pct = {"metadata": {"name": "p"}, "spec": {"minAvailable": "50%", "selector": {}}}
    assert pdb.status(pct, [job_pod(), job_pod(name="x")])["disruptionsAllowed"] == 0
    assert pdb.status(body, [job_pod(), job_pod(name="x")])["disruptionsAllowed"] == 1


def test_the_budget_goes_with_its_pod() -> None:
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    pod = store.create(job_pod())
    node = SimpleNamespace(terminate=lambda ns, name, grace: None, forget=lambda ns, name: None)
    LocalRunner._create_pdb(  # type: ignore[arg-type]
        SimpleNamespace(store=store),
        pod,
        {"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": pod["metadata"]["uid"]},
    )
    kept = store.create(
        {"kind": "PodDisruptionBudget", "metadata": {"name": "not-owned", "namespace": NS}, "spec": {}}
    )
    made = store.get("PodDisruptionBudget", NS, f"{POD}-pdb")
    assert made["apiVersion"] == "policy/v1"
    assert made["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {LABEL: UNIQUE}}}
    assert made["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    # a second creation (a retried setup) reads the existing one instead of failing
    LocalRunner._create_pdb(SimpleNamespace(store=store), pod, made["metadata"]["ownerReferences"][0])  # type: ignore[arg-type]
    deletion = PodDeletion(store, node)
    deletion._finish(NS, POD, 0)
    names = [b["metadata"]["name"] for b in store.list("PodDisruptionBudget", NS)[0]]
    assert names == [kept["metadata"]["name"]]  # the owned one went with the pod; the other stays


def test_a_failed_node_clean_up_still_removes_the_pod_and_its_budget() -> None:
    """The node's clean-up raising (the engine lost a container while it was listed) must not leave the
    deleted pod in the API: it would be a stray for every later run."""
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    pod = store.create(job_pod())
    owner = {"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": pod["metadata"]["uid"]}
    LocalRunner._create_pdb(SimpleNamespace(store=store), pod, owner)  # type: ignore[arg-type]

    def forget(ns: str, name: str) -> None:
        raise RuntimeError("No such container")

    node = SimpleNamespace(terminate=lambda ns, name, grace: None, forget=forget)
    with pytest.raises(RuntimeError):
        PodDeletion(store, node)._finish(NS, POD, 0)
    assert store.list("Pod", NS)[0] == []
    assert store.list("PodDisruptionBudget", NS)[0] == []


# ---------------------------------------------------------------- kubectl


@pytest.fixture(scope="module")
def kubectl(served: tuple[KubeAPI, Path], tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(kubectl_binary(), served[1], tmp_path_factory.mktemp("home"))


def test_kubectl_get_pdb_prints_the_budget(served: tuple[KubeAPI, Path], kubectl: Kubectl) -> None:
    server, kubeconfig = served
    store = fresh(server)
    pod = store.create(job_pod())
    policy(kubeconfig).create_namespaced_pod_disruption_budget(NS, budget_for(pod))
    lines = kubectl.ok("get", "pdb", "-n", NS).splitlines()
    assert lines[0].split() == [
        "NAME",
        "MIN",
        "AVAILABLE",
        "MAX",
        "UNAVAILABLE",
        "ALLOWED",
        "DISRUPTIONS",
        "AGE",
    ]
    assert lines[1].split()[:4] == [f"{POD}-pdb", "1", "N/A", "0"]
    doc = json.loads(kubectl.ok("get", "poddisruptionbudgets", f"{POD}-pdb", "-n", NS, "-o", "json"))
    assert doc["apiVersion"] == "policy/v1" and doc["kind"] == "PodDisruptionBudget"
    assert doc["status"]["disruptionsAllowed"] == 0
    resources = kubectl.ok("api-resources", "--api-group=policy").splitlines()
    assert resources[1].split() == ["poddisruptionbudgets", "pdb", "policy/v1", "true", "PodDisruptionBudget"]
    assert kubectl.ok("auth", "can-i", "create", "poddisruptionbudgets.policy", "-n", NS).strip() == "yes"


def test_only_the_cache_runner_of_the_local_config_asks_for_budgets() -> None:
    from pytest_runnerconf.local.runner_config import load_runner_config

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "local" / "config.toml"
    cfg = load_runner_config(fixture, {"@local-dns": "172.17.0.1", "@gitlab-url": "http://127.0.0.1:8929/"})
    # RC-DIS-001/002 need the main runner's eviction accepted; RC-DIS-003 needs the cache runner's refused.
    wanted = {e.name: e.kubernetes.pod_disruption_budget for e in cfg.entries()}
    assert wanted == {"runnerconf-local": False, "runnerconf-capacity": False, "runnerconf-cache": True}


def test_a_budget_with_both_bounds_is_invalid(served: tuple[KubeAPI, Path]) -> None:
    server, kubeconfig = served
    store = fresh(server)
    budget = budget_for(store.create(job_pod()))
    budget.spec.max_unavailable = 0
    with pytest.raises(ApiException) as invalid:
        policy(kubeconfig).create_namespaced_pod_disruption_budget(NS, budget)
    assert invalid.value.status == 422
    assert "minAvailable and maxUnavailable cannot be both set" in json.loads(invalid.value.body)["message"]
