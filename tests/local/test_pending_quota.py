"""The pod-pending-timeout and quota-exceeded faults on the local cluster, seen as a user's client sees them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_runnerconf.local.faults import PENDING_POLL_TIMEOUT_S
from pytest_runnerconf.podjob import POD_NAME_IN_TEXT, name_prefix
from tests.local.pipelines import Cluster, JobRun

TAG = "runnerconf-local"
ONE_JOB = f"""
stages: [test]
probe:
  image: alpine:3.20
  tags: [{TAG}]
  script:
    - echo never runs
"""
HINT = ". Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information"
SCHEDULER = (
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption "
    "victims found for incoming pod."
)
# One after another: a Secret is told apart from another job's only by its concurrency slot's name prefix,
# and a slot freed by one job is taken by the next. The leaking run goes last, its Secret stays.
CASES = ("quota-exceeded", "pod-pending-timeout", "quota-exceeded,leak-secrets")


@pytest.fixture(scope="module")
def cluster(local_cluster: Any) -> Cluster:
    return Cluster(local_cluster)


@pytest.fixture(scope="module")
def runs(cluster: Cluster) -> Iterator[dict[str, tuple[JobRun, float, set[str]]]]:
    def one(faults: str) -> tuple[str, tuple[JobRun, float, set[str]]]:
        started = time.monotonic()
        run = cluster.run(ONE_JOB, {"RUNNERCONF_LOCAL_FAULTS": faults}, timeout=180)["probe"]
        took = time.monotonic() - started
        secrets = {s.metadata.name for s in cluster.core.list_namespaced_secret(cluster.info.namespace).items}
        return faults, (run, took, secrets)

    # One after another: a Secret is told apart from another job's only by its concurrency slot's name prefix,
    # and a slot freed by one job is taken by the next. The leaking run goes last, its Secret stays.
    results = dict(
        one(case) for case in ("quota-exceeded", "pod-pending-timeout", "quota-exceeded,leak-secrets")
    )
    yield results
    # The leaked Secret is left on purpose by the fault: remove it as an operator would.
    run, _, secrets = results["quota-exceeded,leak-secrets"]
    for name in secrets:
        if any(name.startswith(name_prefix(p)) for p in POD_NAME_IN_TEXT.findall(run.raw)):
            cluster.core.delete_namespaced_secret(name, cluster.info.namespace)


def test_pending_pod_ends_in_the_runners_poll_timeout(
    runs: dict[str, tuple[JobRun, float, set[str]]], cluster: Cluster
) -> None:
    run, took, _ = runs["pod-pending-timeout"]
    assert run.job.status == "failed" and run.job.failure_reason == "runner_system_failure"
    assert run.trace.system_failure
    assert run.trace.failure == (
        "prepare environment: waiting for pod running: timed out waiting for pod to start" + HINT
    )
    assert re.search(r"Waiting for pod \S+ to be running on the node <unknown>, status is Pending", run.raw)
    assert f'Unschedulable: "{SCHEDULER}"' in run.raw
    assert f"Event retrieved from the cluster: {SCHEDULER}" in run.raw
    assert PENDING_POLL_TIMEOUT_S <= took < PENDING_POLL_TIMEOUT_S + 40
    pod = run.pod
    assert pod is not None and pod.deleted_at() is not None
    assert all((obj.get("status") or {}).get("phase") == "Pending" for _, _, obj in pod.events)
    assert not any((obj.get("spec") or {}).get("nodeName") for _, _, obj in pod.events)


def test_pending_pod_has_failed_scheduling_events(
    runs: dict[str, tuple[JobRun, float, set[str]]], cluster: Cluster
) -> None:
    run, _, _ = runs["pod-pending-timeout"]
    assert run.pod is not None
    events = cluster.core.list_namespaced_event(
        cluster.info.namespace, field_selector=f"involvedObject.name={run.pod.name}"
    ).items
    failed = [e for e in events if e.reason == "FailedScheduling"]
    assert failed and all(e.type == "Warning" and e.message == SCHEDULER for e in failed)
    assert failed[0].source.component == "default-scheduler"
    assert not any(e.reason == "Scheduled" for e in events)


@pytest.mark.parametrize("faults", ["quota-exceeded", "quota-exceeded,leak-secrets"])
def test_quota_refusal_after_the_secret(faults: str, runs: dict[str, tuple[JobRun, float, set[str]]]) -> None:
    run, _, secrets = runs[faults]
    assert run.pod is None  # refused: the API server never stored it
    assert run.job.status == "failed" and run.job.failure_reason == "runner_system_failure"
    failure = run.trace.failure or ""
    match = re.fullmatch(
        r'prepare environment: setting up build pod: pods "(?P<pod>[a-z0-9-]+)" is forbidden: exceeded quota: '
        r"runnerconf-jobs, requested: pods=1, used: pods=10, limited: pods=10" + re.escape(HINT),
        failure,
    )
    assert match, failure
    ours = {s for s in secrets if s.startswith(name_prefix(match["pod"]))}
    if "leak-secrets" in faults:
        assert len(ours) == 1  # created before the pod, and left behind by the broken cleanup
    else:
        assert ours == set()  # the runner deletes a Secret whose pod was never created
