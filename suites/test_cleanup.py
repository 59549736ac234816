"""RC-CLN: job pods and per-job Secrets are deleted within the deadline, whatever way the job ended."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_runnerconf import JobEvidence, Profile, RunEvidence, check, fail

JobLookup = Callable[[str], JobEvidence]
REMEDIATION = (
    "the runner deletes the pod in Cleanup (before the final job line); check cleanup_grace_period_seconds, "
    "pod_termination_grace_period_seconds, cleanup_resources_timeout, 'Error cleaning up pod' in the job "
    "log, the runner's RBAC (pods delete) and finalizers on the pods"
)


def deletion_delay(job: JobEvidence) -> float | None:
    """Seconds from the job's end to its pod's DELETED event (None: not deleted, or end unknown)."""
    if job.pod is None or job.pod.deleted_at is None or job.finished_at is None:
        return None
    return job.pod.deleted_at - job.finished_at


def judge_deleted(check_id: str, job: JobEvidence, deadline_s: float) -> None:
    if job.pod is None:
        pytest.fail(f"could not test: no pod was seen for job {job.name} ({job.status})", pytrace=False)
    if job.finished_at is None:
        pytest.fail(f"could not test: job {job.name} ({job.status}) has no finished time", pytrace=False)
    delay = deletion_delay(job)
    if delay is None or delay > deadline_s:
        observed = (
            "still present when the run stopped watching" if delay is None else f"deleted after {delay:.1f}s"
        )
        fail(
            check_id,
            f"pod {job.pod.name} deleted within {deadline_s:.0f}s of the job's end "
            "(expect.cleanup_deadline_s)",
            observed,
            job=job,
        )


def _claim(case: str) -> str:
    return f"the pod of a {case} job is deleted within the cleanup deadline after the job ended"


@check(
    id="RC-CLN-001", claim=_claim("successful"), remediation=REMEDIATION, area="cleanup", probes=("cleanup",)
)
def test_pod_deleted_after_success(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("cleanup-ok")
    if job.status != "success":
        pytest.fail(f"could not test: job {job.name} should succeed but is {job.status}", pytrace=False)
    judge_deleted("RC-CLN-001", job, runnerconf_profile.expect.cleanup_deadline_s)


@check(id="RC-CLN-002", claim=_claim("failed"), remediation=REMEDIATION, area="cleanup", probes=("cleanup",))
def test_pod_deleted_after_failure(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("cleanup-fail")
    if job.status != "failed":
        pytest.fail(f"could not test: job {job.name} should fail (exit 1) but is {job.status}", pytrace=False)
    judge_deleted("RC-CLN-002", job, runnerconf_profile.expect.cleanup_deadline_s)


@check(
    id="RC-CLN-003",
    claim=_claim("OOM-killed"),
    remediation=REMEDIATION,
    area="cleanup",
    probes=("cleanup", "oom"),
    judges_failures=("oom",),
)
def test_pod_deleted_after_oom(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    # Judged whatever the OOM job's outcome: how the kill is reported is RC-OOM-*'s business.
    judge_deleted("RC-CLN-003", job_evidence("oom"), runnerconf_profile.expect.cleanup_deadline_s)


@check(
    id="RC-CLN-004",
    claim=_claim("canceled"),
    remediation=REMEDIATION,
    area="cleanup",
    probes=("cleanup",),
    judges_failures=("cleanup-cancel",),
)
def test_pod_deleted_after_cancel(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("cleanup-cancel")
    if job.status != "canceled":
        pytest.fail(
            f"could not test: job {job.name} should have been canceled by the run but is {job.status}",
            pytrace=False,
        )
    judge_deleted("RC-CLN-004", job, runnerconf_profile.expect.cleanup_deadline_s)


def job_secret_names(job: JobEvidence) -> list[str]:
    """The per-job Secrets of a pod: imagePullSecrets named like the pod (same prefix, own random suffix)."""
    if job.pod is None:
        return []
    prefix = job.pod.name.rsplit("-", 1)[0] + "-"
    pulls = (job.pod.spec.get("spec") or {}).get("imagePullSecrets") or []
    names = [str(p.get("name") or "") for p in pulls]
    return [n for n in names if n.startswith(prefix) and len(n) == len(job.pod.name)]


@check(
    id="RC-CLN-005",
    claim="the per-job registry-credentials Secret is deleted with its pod, within the cleanup deadline",
    remediation="the runner gives the Secret an ownerReference to the pod (garbage collection) or deletes "
    "it in Cleanup; check the garbage collector, the runner's RBAC (secrets delete) and 'Error cleaning up "
    "secrets' in the job log",
    area="cleanup",
    probes=("cleanup",),
    reads=("secrets",),
)
def test_secrets_deleted(runnerconf_evidence: RunEvidence, runnerconf_profile: Profile) -> None:
    secrets = runnerconf_evidence.secrets
    if secrets is None and runnerconf_evidence.secrets_skipped:
        pytest.skip(runnerconf_evidence.secrets_skipped)
    if secrets is None:
        pytest.fail(
            "could not test: the run could not list Secrets in the job namespace (see the evidence notes; "
            "the run needs RBAC to list secrets)",
            pytrace=False,
        )
    deadline = runnerconf_profile.expect.cleanup_deadline_s
    owned = {
        name: job
        for job in runnerconf_evidence.jobs.values()
        if job.pod is not None
        for name in job_secret_names(job)
    }
    if not owned:
        pytest.skip(
            "no job pod referenced a per-job Secret (GitLab sent no registry credentials); nothing to clean"
        )
    late: dict[str, str] = {}
    for name, job in sorted(owned.items()):
        seen = secrets.get(name)
        deleted = seen.get("deleted_at") if seen else None
        end = job.finished_at
        if seen is None:
            # The Secret watch starts before the pipeline, so a referenced Secret it never saw is an anomaly.
            late[name] = f"job {job.name}: referenced by the pod but never observed"
        elif deleted is None:
            late[name] = f"job {job.name}: still present"
        elif end is not None and deleted - end > deadline:
            late[name] = f"job {job.name}: deleted {deleted - end:.1f}s after the job ended"
    if late:
        fail(
            "RC-CLN-005",
            f"every per-job Secret deleted within {deadline:.0f}s of its job's end",
            late,
            detail=f"ownerReferences: { {n: (secrets.get(n) or {}).get('owner_references') for n in late} }",
        )


@check(
    id="RC-CLN-006",
    claim="no runner pods outlive their jobs: none left at the cleanup deadline, none older than their job "
    "timeout in the namespace",
    remediation=REMEDIATION + "; run gitlab-runner-pod-cleanup for pods left by killed runner managers",
    area="cleanup",
    probes=("cleanup",),
)
def test_no_stray_pods(runnerconf_evidence: RunEvidence) -> None:
    left = list((runnerconf_evidence.leftover or {}).get("pods") or [])
    stray = [
        f"{p.get('name')} (created {p.get('creationTimestamp')}, job {p.get('job_id')})"
        for p in runnerconf_evidence.stray_pods
    ]
    if left or stray:
        fail(
            "RC-CLN-006",
            "no pod of this run left at the deadline and no stray runner pods",
            {"left by this run": left, "stray (older than their timeout)": stray},
            detail=f"deadline {runnerconf_evidence.leftover.get('deadline_s', '?')}s",
        )
