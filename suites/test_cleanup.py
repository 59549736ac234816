"""RC-CLN: job pods and per-job Secrets are deleted within the deadline, whatever way the job ended."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from pytest_runnerconf import (
    POD_NAME_IN_TEXT,
    JobEvidence,
    Profile,
    RunEvidence,
    check,
    could_not_test,
    fail,
    held,
)
from pytest_runnerconf import job_end as classify_end
from pytest_runnerconf import pod_name_prefix as name_prefix
from pytest_runnerconf import same_runner_token as same_token

JobLookup = Callable[[str], JobEvidence]
REMEDIATION = (
    "the runner deletes the pod in Cleanup (before the final job line); check cleanup_grace_period_seconds, "
    "pod_termination_grace_period_seconds, cleanup_resources_timeout, 'Error cleaning up pod' in the job "
    "log, the runner's RBAC (pods delete) and finalizers on the pods"
)


# How far after a Secret's creation the run may first see it: it lists Secrets every few seconds and GitLab's
# job status (when the job was seen running) every few more.
SECRET_SEEN_SLACK_S = 10.0


def job_end(job: JobEvidence) -> float | None:
    """When the job ended on this machine's clock: the run's own observation of it.

    Pod and Secret deletions are timed on this machine, so the end must be too; GitLab's finished_at is on
    GitLab's clock, which may be minutes off. Bundles from before the run observed it fall back to it.
    """
    return job.observed_end if job.observed_end is not None else job.finished_at


def deletion_delay(job: JobEvidence) -> float | None:
    """Seconds from the job's end to its pod's DELETED event (None: not deleted, or end unknown)."""
    end = job_end(job)
    if job.pod is None or job.pod.deleted_at is None or end is None:
        return None
    return job.pod.deleted_at - end


def untestable(job: JobEvidence, why: str) -> NoReturn:
    """End the check as could_not_test: the runner's failure, the run's diagnosis of a stuck pod, else WHY."""
    __tracebackhide__ = True
    end = classify_end(job)
    if end.infrastructure:
        could_not_test(end.cause or "runner-system-failure", end.sentence(job.name))
    if job.diagnosis is not None:
        could_not_test(job.diagnosis.cause, job.diagnosis.sentence)
    could_not_test("no-evidence", why)


def judge_deleted(check_id: str, job: JobEvidence, deadline_s: float) -> None:
    if job.pod is None:
        untestable(job, f"no pod was seen for job {job.name} ({job.status})")
    if job_end(job) is None:
        untestable(job, f"job {job.name} ({job.status}) has no finished time")
    delay = deletion_delay(job)
    if delay is None or delay > deadline_s:
        observed = (
            "still present when the run stopped watching" if delay is None else f"deleted after {delay:.1f}s"
        )
        said = (
            "pod still present when the run stopped watching"
            if delay is None
            else (f"pod deleted {delay:.1f} s after the job ended")
        )
        fail(
            check_id,
            f"pod {job.pod.name} deleted within {deadline_s:.0f}s of the job's end "
            "(expect.cleanup_deadline_s)",
            observed,
            job=job,
            summary=f"{said}, deadline {deadline_s:g} s",
        )
    end = job_end(job)
    held(
        check_id,
        {"deleted within s": deadline_s},
        {
            "pod": job.pod.name,
            "job ended": end,
            "pod deleted": job.pod.deleted_at,
            "delay s": round(delay, 2),
        },
        job=job,
        summary=f"pod deleted {delay:.1f} s after the job ended, deadline {deadline_s:g} s",
    )


def _claim(case: str) -> str:
    return f"the pod of a {case} job is deleted within the cleanup deadline after the job ended"


@check(
    id="RC-CLN-001", claim=_claim("successful"), remediation=REMEDIATION, area="cleanup", probes=("cleanup",)
)
def test_pod_deleted_after_success(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("cleanup-ok")
    if job.status != "success":
        untestable(job, f"job {job.name} should succeed but is {job.status}")
    judge_deleted("RC-CLN-001", job, runnerconf_profile.expect.cleanup_deadline_s)


@check(id="RC-CLN-002", claim=_claim("failed"), remediation=REMEDIATION, area="cleanup", probes=("cleanup",))
def test_pod_deleted_after_failure(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("cleanup-fail")
    if job.status != "failed":
        untestable(job, f"job {job.name} should fail (exit 1) but is {job.status}")
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
        untestable(job, f"job {job.name} should have been canceled by the run but is {job.status}")
    if job.diagnosis is not None:
        untestable(job, "")  # the run cancelled it because its pod never started, not as the probe asks
    judge_deleted("RC-CLN-004", job, runnerconf_profile.expect.cleanup_deadline_s)


def job_secret_names(job: JobEvidence) -> list[str]:
    """The per-job Secrets of a pod: imagePullSecrets named like the pod (same prefix, own random suffix)."""
    if job.pod is None:
        return []
    prefix = name_prefix(job.pod.name)
    pulls = (job.pod.spec.get("spec") or {}).get("imagePullSecrets") or []
    names = [str(p.get("name") or "") for p in pulls]
    return [n for n in names if n.startswith(prefix) and len(n) == len(job.pod.name)]


def refused_pod_secrets(job: JobEvidence, secrets: dict[str, dict[str, Any]]) -> list[str]:
    """Per-job Secrets of a pod the API server refused: the runner creates the Secret first, then the pod.

    No pod was seen, but the runner's error names the pod it tried ("setting up build pod: pods "NAME" is
    forbidden: ..."); the Secret shares that name's prefix. Only Secrets new since the run started and first
    seen while the job ran count, so another run's Secret in the same concurrency slot is not taken for ours.
    """
    prefixes = {name_prefix(n) for n in POD_NAME_IN_TEXT.findall(job.trace)}
    if job.pod is not None:
        prefixes.discard(name_prefix(job.pod.name))
    start, end = job.observed_start, job_end(job)
    found = []
    for name, seen in secrets.items():
        if seen.get("before") or not any(name.startswith(p) for p in prefixes):
            continue
        first = seen.get("first_seen")
        if start is not None and isinstance(first, int | float) and first < start - SECRET_SEEN_SLACK_S:
            continue
        if end is not None and isinstance(first, int | float) and first > end + SECRET_SEEN_SLACK_S:
            continue
        found.append(name)
    return found


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
        notes = [n for n in runnerconf_evidence.notes if "per-job Secrets" in n]
        could_not_test(
            "api-error",
            "the run could not observe the per-job Secrets in the job namespace"
            + (f" ({notes[-1]})" if notes else "; see the evidence notes"),
        )
    deadline = runnerconf_profile.expect.cleanup_deadline_s
    owned = {name: job for job in runnerconf_evidence.jobs.values() for name in job_secret_names(job)}
    refused = {
        name: job for job in runnerconf_evidence.jobs.values() for name in refused_pod_secrets(job, secrets)
    }
    others = runnerconf_evidence.other_pipelines
    unattributed: list[str] = []
    if refused and others != []:
        # Another pipeline's job may have used the same runner slot meanwhile: a Secret without a pod carries
        # nothing that says whose it is, so only what is certainly ours is judged.
        unattributed = sorted(n for n in refused if (secrets.get(n) or {}).get("deleted_at") is None)
        refused = {}
    owned.update(refused)
    if not owned and not unattributed:
        refused_pods = [
            j.name
            for j in runnerconf_evidence.jobs.values()
            if j.pod is None and POD_NAME_IN_TEXT.search(j.trace)
        ]
        if refused_pods:
            pytest.skip(
                f"no per-job Secret of this run was seen: the pods of {len(refused_pods)} jobs were refused and "
                "the Secret watch saw no Secret made for them"
            )
        pytest.skip(
            "no job pod referenced a per-job Secret (GitLab sent no registry credentials); nothing to clean"
        )
    late: dict[str, str] = {}
    for name, job in sorted(owned.items()):
        seen = secrets.get(name)
        deleted = seen.get("deleted_at") if seen else None
        end = job_end(job)
        if seen is None:
            # The run records every referenced Secret, listed or not: one missing from the evidence is an anomaly.
            late[name] = f"job {job.name}: referenced by the pod but never observed"
        elif deleted is None:
            why = "" if job.pod is not None else " (its pod was refused)"
            late[name] = f"job {job.name}: still present{why}"
        elif end is not None and deleted - end > deadline:
            # never_listed / upper_bound: it went while the Secret watch was expired (or before the watch
            # delivered its deletion); deleted_at is the look that no longer found it.
            bound = "at most " if seen.get("never_listed") or seen.get("upper_bound") else ""
            late[name] = f"job {job.name}: deleted {bound}{deleted - end:.1f}s after the job ended"
    if not late and unattributed:
        which = "could not be listed" if others is None else f"#{', #'.join(map(str, others))}"
        could_not_test(
            "no-evidence",
            f"{len(unattributed)} per-job Secrets named like this run's refused pods are still present, but "
            f"other pipelines of the project ({which}) ran meanwhile in the same runner slots and a Secret "
            "carries no job mark, so whether they are this run's cannot be told",
        )
    if late:
        fail(
            "RC-CLN-005",
            f"every per-job Secret deleted within {deadline:.0f}s of its job's end",
            late,
            detail=f"ownerReferences: { {n: (secrets.get(n) or {}).get('owner_references') for n in late} }",
            summary=f"{len(late)} of {len(owned)} per-job Secrets not deleted within {deadline:g} s of their "
            "job's end",
        )
    delays = {
        name: round(float(secrets[name]["deleted_at"]) - end, 2)
        for name, job in owned.items()
        if (end := job_end(job)) is not None
    }
    slowest = max(delays.values(), default=None)
    within = f", the last {slowest:.1f} s after its job ended" if slowest is not None else ""
    held(
        "RC-CLN-005",
        {"deleted within s": deadline},
        {"secrets": {n: {"job": j.name, "delay s": delays.get(n)} for n, j in sorted(owned.items())}},
        summary=f"{len(owned)} per-job Secrets deleted{within}, deadline {deadline:g} s",
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
    run = runnerconf_evidence
    if run.stray_error:
        could_not_test("api-error", f"the namespace's runner pods could not be listed: {run.stray_error}")
    left = list((run.leftover or {}).get("pods") or [])
    ours = [p for p in run.stray_pods if any(same_token(p.get("token"), t) for t in run.runner_tokens)]
    if run.stray_pods and not run.runner_tokens and not left:
        could_not_test(
            "no-evidence",
            f"{len(run.stray_pods)} old runner pods are in the namespace, but no job of this run showed which "
            "runner is under test (no pod seen, no trace header), so none of them can be judged",
        )
    stray = [f"{p.get('name')} (created {p.get('creationTimestamp')}, job {p.get('job_id')})" for p in ours]
    if left or stray:
        fail(
            "RC-CLN-006",
            "no pod of this run left at the deadline and no stray pods of the runner under test",
            {"left by this run": left, "stray (older than their timeout)": stray},
            detail=f"deadline {run.leftover.get('deadline_s', '?')}s; runner tokens {', '.join(run.runner_tokens) or '?'}",
            summary=f"{len(left)} pods of this run left at the deadline, {len(stray)} stray pods of runner "
            f"{', '.join(run.runner_tokens) or '?'}",
        )
    others = len(run.stray_pods) - len(ours)
    elsewhere = f"; {others} old pods of other runners not judged" if others else ""
    held(
        "RC-CLN-006",
        "no pod of this run left at the deadline and no stray pods of the runner under test",
        {"left by this run": left, "stray": stray, "runner tokens": list(run.runner_tokens)},
        summary=f"no pod of this run left at the deadline, no stray pod of runner "
        f"{', '.join(run.runner_tokens) or '?'}{elsewhere}",
    )


@check(
    id="RC-CLN-007",
    claim="the pod (and the per-job Secret) of a job whose image does not exist are deleted by the cleanup "
    "deadline",
    remediation="the runner deletes the pod in Cleanup also after a failed Prepare; check the runner's RBAC "
    "(pods and secrets delete), 'Error cleaning up' lines in the job log and the garbage collector",
    area="cleanup",
    probes=("images",),
    reads=("secrets",),
)
def test_missing_image_leaves_nothing(runnerconf_evidence: RunEvidence, runnerconf_profile: Profile) -> None:
    job = runnerconf_evidence.jobs.get("images-missing")
    if job is None:
        could_not_test("no-evidence", "the run has no job images-missing (the images probe did not run)")
    deadline = runnerconf_profile.expect.cleanup_deadline_s
    if job.pod is None:
        ended = classify_end(job)
        if ended.infrastructure:  # a refused pod (a quota), an API outage: no pod to judge, and why
            could_not_test(ended.cause or "no-evidence", ended.sentence(job.name), job=job)
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    end = float(job.finished_at) if job.finished_at is not None else None
    gone = job.pod.deleted_at
    problems = []
    if gone is None:
        problems.append(f"pod {job.pod.name} still there at the cleanup deadline")
    elif end is not None and gone - end > deadline:
        problems.append(f"pod deleted {gone - end:.1f}s after the job ended (deadline {deadline:g}s)")
    secrets = runnerconf_evidence.secrets
    left: list[str] = []
    if secrets is not None:
        prefix = job.pod.name.rsplit("-", 1)[0]
        mine = {n: s for n, s in secrets.items() if n.startswith(prefix) and
                any(o.get("name") == job.pod.name for o in s.get("owner_references") or [])}  # fmt: skip
        left = sorted(n for n, s in mine.items() if s.get("deleted_at") is None)
        if left:
            problems.append(f"Secret(s) {', '.join(left)} left behind")
    said_secret = (
        "its Secret not watched" if secrets is None else f"{'no' if not left else len(left)} Secret left"
    )
    if gone is None:
        said_pod = "still present when the run stopped watching"
    else:
        said_pod = f"deleted {gone - end:.1f} s after the job ended" if end is not None else "deleted"
    summary = f"missing-image pod {said_pod}, deadline {deadline:g} s; {said_secret}"
    observed = {"pod deleted_at": gone, "job finished_at": end, "secrets left": left}
    if problems:
        fail("RC-CLN-007", {"deleted within_s": deadline}, observed, job=job, detail="; ".join(problems),
             summary=summary)  # fmt: skip
    held("RC-CLN-007", {"deleted within_s": deadline}, observed, job=job, summary=summary)
