"""RC-DIS (opt-in, ``-m disruptive``): an evicted job pod fails its job with the runner's message, leaves nothing.

The run itself evicts the pod of the probe job "disruption-evict" through the Eviction API once the probe's
record is in the trace (x-runnerconf evict_on_record), as a node drain would: it needs `create pods/eviction`,
which `runnerconf rbac` grants only when these checks are selected. The API server marks the pod with the
DisruptionTarget condition (reason EvictionByEvictionAPI, message "Eviction API: evicting") and deletes it
gracefully; the runner's pod informer (v17.9.0 on) ends the job with
``ERROR: Job failed (system failure): pod "NS/NAME" is disrupted: reason "EvictionByEvictionAPI", message
"Eviction API: evicting"`` (executors/kubernetes/internal/watchers/pod.go; the same line is quoted from a real
cluster in aws/karpenter-provider-aws issue #8276).

RC-DIS-003 evicts the pod of "disruption-pdb" the same way, on a runner whose config.toml sets
``[runners.kubernetes] pod_disruption_budget = true`` (v18.11.0 on, CHANGELOG.md !6331): the runner creates a
policy/v1 PodDisruptionBudget "<pod>-pdb" (minAvailable 1, owned by the pod, selecting its
job.runner.gitlab.com/pod label; executors/kubernetes/kubernetes.go v18.11.1 createPodDisruptionBudget), so the
API server refuses the eviction with 429 TooManyRequests "Cannot evict pod as it would violate the pod's
disruption budget." (kubernetes pkg/registry/core/pod/storage/eviction.go checkAndDecrement) and the job goes on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from pytest_runnerconf import (
    JobEvidence,
    Profile,
    RunEvidence,
    check,
    could_not_test,
    fail,
    has_behaviour,
    held,
    require_behaviour,
)
from pytest_runnerconf import job_end as classify_end

JobLookup = Callable[[str], JobEvidence]
JOB = "disruption-evict"
EVICTION_NOTE = "evict job"  # run.EVICTION_NOTE: how the run notes what the API server answered
# watchers/pod.go checkTerminalPodErrors (v17.9.0 to v19.3.0)
DISRUPTED = re.compile(
    r'pod "(?P<pod>[^"]+)" is disrupted: reason "(?P<reason>[^"]*)", message "(?P<message>[^"]*)"'
)
REMEDIATION = (
    "the runner ends a job whose pod carries the DisruptionTarget condition through its pod informer, which "
    "needs list and watch on pods in the runner's RBAC (else the trace says \"won't use informers\"); check "
    "the runner's Role, that the job pod is not replaced by a controller, and the runner version"
)
CLEANUP_REMEDIATION = (
    "the API server deletes an evicted pod gracefully (its terminationGracePeriodSeconds) and the runner's "
    "Cleanup deletes it again; check finalizers on the pod, pod_termination_grace_period_seconds, and 'Error "
    "cleaning up pod' in the job log"
)


def untestable(job: JobEvidence, why: str) -> NoReturn:
    """could_not_test: the runner's own infrastructure failure, the run's diagnosis of a stuck pod, else WHY.

    (As suites/test_cleanup.py does: suite modules are copied and installed one by one, so none imports another.)
    """
    __tracebackhide__ = True
    end = classify_end(job)
    if end.infrastructure and not end.probe_started:
        could_not_test(end.cause or "runner-system-failure", end.sentence(job.name))
    if job.diagnosis is not None:
        could_not_test(job.diagnosis.cause, job.diagnosis.sentence)
    could_not_test("no-evidence", why)


def eviction_note(run: RunEvidence, job: str = JOB) -> str:
    """What the API server answered to the run's Eviction of JOB's pod ("" when the run made none)."""
    prefix = f"{EVICTION_NOTE} {job}: "
    return next((n[len(prefix) :] for n in reversed(run.notes) if n.startswith(prefix)), "")


def disruption_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's DisruptionTarget condition when it is True (the API server's mark of an eviction)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and str(cond.get("status")) == "True":
            return dict(cond)
    return None


def evicted(job: JobEvidence, run: RunEvidence) -> dict[str, Any]:
    """The DisruptionTarget condition of JOB's evicted pod; could_not_test when no eviction took place."""
    __tracebackhide__ = True
    answer = eviction_note(run, job.name)
    if job.pod is None:
        untestable(job, f"no pod was seen for job {job.name} ({job.status}), so the run evicted nothing")
    cond = disruption_condition(job.pod.last)
    if cond is None:
        if not answer:
            untestable(job, f"the run did not evict the pod of job {job.name} (its probe record never came)")
        if "accepted" not in answer:
            could_not_test("api-error", f"the run's eviction of the pod of job {job.name}: {answer}")
        could_not_test(
            "no-evidence",
            f"the eviction of pod {job.pod.name} was accepted, but the pod watch never showed its "
            "DisruptionTarget condition",
        )
    return cond


def disruption_message(trace: str) -> dict[str, str] | None:
    """The runner's `pod "NS/NAME" is disrupted: ...` words in TRACE, as fields (None when absent)."""
    found = DISRUPTED.search(trace)
    return found.groupdict() if found else None


@check(
    id="RC-DIS-001",
    claim="a job whose pod is evicted fails as a runner system failure with the runner's disruption message",
    remediation=REMEDIATION,
    area="disruption",
    probes=("disruption",),
    reads=("pods/eviction",),
    judges_failures=(JOB,),
)
@pytest.mark.disruptive
def test_evicted_job_fails_with_disruption_message(
    job_evidence: JobLookup, runnerconf_evidence: RunEvidence
) -> None:
    job = job_evidence(JOB)
    cond = evicted(job, runnerconf_evidence)
    assert job.pod is not None
    end = classify_end(job)
    full = f"{job.pod.spec.get('metadata', {}).get('namespace', '')}/{job.pod.name}"
    expected = (
        f'job failed (system failure): pod "{full}" is disrupted: reason "{cond.get("reason")}", message '
        f'"{cond.get("message")}"'
    )
    said = disruption_message(job.trace)
    if job.status != "failed" or not end.infrastructure:
        fail(
            "RC-DIS-001",
            expected,
            f"job {job.status} ({end.kind}): {end.message or 'no failure message'}",
            job=job,
            summary=f"evicted pod's job ended {job.status}, not as a system failure",
        )
    if not has_behaviour("pod_disruption_message", job) or "won't use informers" in job.trace:
        # No pod informer: the runner finds the pod gone when it polls; any system failure is its promise.
        held(
            "RC-DIS-001",
            "job failed (system failure) (no pod informer: no disruption message)",
            end.message,
            job=job,
            summary=f"evicted pod's job failed as a system failure: {end.message}",
        )
        return
    if said is None or said["pod"] != full or said["reason"] != cond.get("reason"):
        fail(
            "RC-DIS-001",
            expected,
            end.message,
            job=job,
            detail=f"pod condition: {cond}",
            summary="evicted pod's job failed without the runner's disruption message",
        )
    held(
        "RC-DIS-001",
        expected,
        end.message,
        job=job,
        summary=f'job failed (system failure): pod is disrupted, reason "{said["reason"]}"',
    )


@check(
    id="RC-DIS-002",
    claim="the pod of an evicted job is gone within the cleanup deadline after the job ended",
    remediation=CLEANUP_REMEDIATION,
    area="disruption",
    probes=("disruption",),
    reads=("pods/eviction",),
    judges_failures=(JOB,),
)
@pytest.mark.disruptive
def test_evicted_pod_leaves_nothing(
    job_evidence: JobLookup, runnerconf_evidence: RunEvidence, runnerconf_profile: Profile
) -> None:
    # The evicted job's per-job Secret is judged by RC-CLN-005 with every other job's Secret (it goes by its
    # ownerReference to the pod, as theirs do), so a leaking Secret fails the cleanup area once, not twice.
    job = job_evidence(JOB)
    evicted(job, runnerconf_evidence)
    assert job.pod is not None
    deadline = runnerconf_profile.expect.cleanup_deadline_s
    # The job's end and the pod's deletion on this machine's clock (the run observed both).
    end = job.observed_end if job.observed_end is not None else job.finished_at
    if end is None:
        untestable(job, f"job {job.name} ({job.status}) has no finished time")
    gone = job.pod.deleted_at
    delay = None if gone is None else gone - end
    if delay is None or delay > deadline:
        said = (
            "still present when the run stopped watching" if delay is None else f"deleted {delay:.1f} s after"
        )
        fail(
            "RC-DIS-002",
            f"evicted pod {job.pod.name} deleted within {deadline:g} s of the job's end (expect.cleanup_deadline_s)",
            said,
            job=job,
            summary=f"evicted pod {said}, deadline {deadline:g} s",
        )
    held(
        "RC-DIS-002",
        {"deleted within s": deadline},
        {"pod": job.pod.name, "job ended": end, "pod deleted": gone, "delay s": round(delay, 2)},
        job=job,
        summary=f"evicted pod deleted {delay:.1f} s after the job ended, deadline {deadline:g} s",
    )


# ---------------------------------------------------------------- RC-DIS-003: a PodDisruptionBudget refuses it

PDB_JOB = "disruption-pdb"
# pkg/registry/core/pod/storage/eviction.go checkAndDecrement: the API server's words when a budget refuses.
PDB_REFUSAL = "would violate the pod's disruption budget"
PDB_SETTING = "[runners.kubernetes] pod_disruption_budget = true"
PDB_REMEDIATION = (
    f"set {PDB_SETTING} on the runner (gitlab-runner 18.11.0 or later): it then creates a PodDisruptionBudget "
    '"<pod>-pdb" with minAvailable 1 for each job pod, owned by the pod, so a node drain cannot evict a running '
    "job; the runner's RBAC needs create and get on poddisruptionbudgets (API group policy)"
)


def pdb_configured(profile: Profile) -> str:
    """Where the profile says job pods get a PodDisruptionBudget; skips when it does not say so."""
    __tracebackhide__ = True
    said = profile.expect.disruption
    key = "expect.disruption.pod_disruption_budget"
    origin = profile.expect_set.get("disruption.pod_disruption_budget") or profile.expect_set.get(
        "disruption"
    )
    where = f"{key}, {origin[0]}: {origin[1]}" if origin else key
    if said is None:
        pytest.skip(
            f"the profile of cluster {profile.name} does not say whether the runner's job pods get a "
            f"PodDisruptionBudget ({key}, or runner_config naming a config.toml that sets pod_disruption_budget)"
        )
    if not said.pod_disruption_budget:
        pytest.skip(
            f"the profile of cluster {profile.name} says the runner's job pods get no PodDisruptionBudget ({where})"
        )
    return where


@check(
    id="RC-DIS-003",
    claim="with pod_disruption_budget the runner's job pod cannot be evicted (429, the pod's disruption budget) "
    "and its job succeeds",
    remediation=PDB_REMEDIATION,
    area="disruption",
    probes=("disruption",),
    reads=("pods/eviction",),
    judges_failures=(PDB_JOB,),
)
@pytest.mark.disruptive
def test_budgeted_pod_is_not_evicted(
    job_evidence: JobLookup, runnerconf_evidence: RunEvidence, runnerconf_profile: Profile
) -> None:
    where = pdb_configured(runnerconf_profile)
    job = job_evidence(PDB_JOB)
    require_behaviour("pod_disruption_budget", job)
    expected = {
        "eviction": f"refused (429): Cannot evict pod as it {PDB_REFUSAL}.",
        "job": "success",
        "because": where,
    }
    if job.pod is None:
        untestable(job, f"no pod was seen for job {job.name} ({job.status}), so the run evicted nothing")
    answer = eviction_note(runnerconf_evidence, job.name)
    if not answer:
        untestable(job, f"the run did not evict the pod of job {job.name} (its probe record never came)")
    accepted = "accepted" in answer
    refused = "refused (429)" in answer and PDB_REFUSAL in answer
    if not accepted and not refused:
        could_not_test("api-error", f"the run's eviction of the pod of job {job.name}: {answer}")
    end = classify_end(job)
    ended = f"job {job.status}" + (f": {end.message}" if end.message and job.status != "success" else "")
    observed = {"eviction": answer, "job": job.status}
    if accepted:
        fail(
            "RC-DIS-003",
            expected,
            observed,
            job=job,
            detail=f"{ended}; no PodDisruptionBudget over pod {job.pod.name} refused its eviction",
            summary=f"eviction accepted (201), job {job.status}: no PodDisruptionBudget protected the pod",
        )
    if job.status != "success":
        if end.infrastructure and not end.probe_started:
            untestable(job, f"job {job.name} ended {job.status} before its probe ran")
        fail(
            "RC-DIS-003",
            expected,
            observed,
            job=job,
            detail=ended,
            summary=f"eviction refused, but {ended}",
        )
    held(
        "RC-DIS-003",
        expected,
        observed,
        job=job,
        summary="eviction refused (429, the pod's disruption budget); job succeeded",
    )
