"""RC-CAP: a runner's `limit` (or `concurrent`) jobs really run at once and one more waits.

The capacity probe sends limit + 1 short jobs to the runner the profile names (expect.capacity.runner_tag);
each sleeps a few seconds and records when its sleep began and ended. Overlap is judged on those spans (the
jobs' own work, on the nodes' clocks), which do not depend on how fast pods are deleted (RC-CLN-*'s
business). The pods' Running spans as the run's watch saw them (this machine's clock) are reported beside
them: a pod runs from its first Running event until it leaves Running or its deletion is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_runnerconf import (
    JobEvidence,
    PodObservation,
    Profile,
    api_time,
    check,
    could_not_test,
    fail,
    held,
)

JobLookup = Callable[[str], JobEvidence]
PROBE = "capacity"
REMEDIATION = (
    "a runner takes at most `limit` jobs of its [[runners]] entry (0 = no limit) and `concurrent` jobs of the "
    "whole process; check limit and concurrent in config.toml, request_concurrency, the runner's tags (the "
    "capacity jobs must reach this runner only) and whether other pipelines share the runner meanwhile"
)


@dataclass(frozen=True)
class RunSpan:
    """When one job ran (held by the runner, its sleep, or its pod); end None: still running when the run
    stopped watching."""

    job: str
    pod: str
    start: float
    end: float | None

    def data(self, origin: float) -> dict[str, Any]:
        return {
            "job": self.job,
            "pod": self.pod,
            "running from s": round(self.start - origin, 2),
            "until s": None if self.end is None else round(self.end - origin, 2),
        }


def running_span(job: str, pod: PodObservation) -> RunSpan | None:
    """The pod's first Running span: from the first Running event to the first event that leaves Running
    (another phase, a deletionTimestamp, DELETED), else its deletion; None: never seen Running."""
    start: float | None = None
    for entry in pod.timeline:
        at = entry.get("time") if isinstance(entry, dict) else None
        if not isinstance(at, int | float) or isinstance(at, bool):
            continue
        running = entry.get("phase") == "Running" and entry.get("type") != "DELETED"
        if start is None:
            if running and not entry.get("deletionTimestamp"):
                start = float(at)
            continue
        if not running or entry.get("deletionTimestamp"):
            return RunSpan(job, pod.name, start, float(at))
    if start is None:
        return None
    return RunSpan(job, pod.name, start, pod.deleted_at)


def max_overlap(spans: list[RunSpan]) -> tuple[int, float | None]:
    """The most spans running at one instant and the first instant it happened (spans that only touch, one
    ending as the next starts, do not overlap); an open span runs to the end."""
    points: list[tuple[float, int]] = []
    for span in spans:
        points.append((span.start, 1))
        if span.end is not None:
            points.append((span.end, -1))
    points.sort(key=lambda p: (p[0], p[1]))  # at equal times an end counts before a start
    best, at, now = 0, None, 0
    for when, step in points:
        now += step
        if now > best:
            best, at = now, when
    return best, at


def late_starter(spans: list[RunSpan], limit: int) -> tuple[RunSpan, float | None] | None:
    """The span that started last and the earliest end among the others: it must start after that end,
    since it can only start once one of the LIMIT before it ended. None when there are no more than LIMIT."""
    if len(spans) <= limit:
        return None
    ordered = sorted(spans, key=lambda s: s.start)
    last = ordered[-1]
    ends = [s.end for s in ordered[:-1] if s.end is not None]
    return last, (min(ends) if ends else None)


def _capacity(profile: Profile) -> tuple[str, int]:
    capacity = profile.expect.capacity
    if capacity is None:
        pytest.skip(
            f"the profile of cluster {profile.name} names no capacity runner (expect.capacity runner_tag and "
            "limit); nothing to measure"
        )
    return capacity.runner_tag, capacity.limit


def sleep_span(job: JobEvidence) -> RunSpan | None:
    """When the job's sleep ran, from its capacity record; None: no record with both times."""
    record = (job.records.get(PROBE) or [{}])[0]
    start, end = record.get("start"), record.get("end")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, end)):
        return None
    return RunSpan(job.name, job.pod.name if job.pod else "", float(start), float(end))  # type: ignore[arg-type]


def held_span(job: JobEvidence) -> RunSpan | None:
    """When the runner held the job, on GitLab's clock (started_at: the runner took it; finished_at: it
    handed it back); None without both stamps. The limit is the runner's: on a busy node two held jobs' pods
    may start their scripts 15 s apart, so an 8 s sleep alone would not show that both slots were in use."""
    if job.started_at is None or job.finished_at is None:
        return None
    return RunSpan(job.name, job.pod.name if job.pod else "", float(job.started_at), float(job.finished_at))


def _spans(job_evidence: JobLookup, limit: int) -> tuple[list[JobEvidence], list[RunSpan]]:
    """The capacity jobs (limit + 1) and when the runner held each (their sleeps' records without GitLab's
    stamps); could_not_test when one is missing or did not run its sleep."""
    __tracebackhide__ = True
    jobs = [job_evidence(f"{PROBE}-{n}") for n in range(1, limit + 2)]
    spans = []
    for job in jobs:
        if job.status != "success":
            could_not_test(
                "no-evidence", f"job {job.name} should succeed (it only sleeps) but is {job.status}"
            )
        span = sleep_span(job)
        if span is None:
            could_not_test("no-evidence", f"job {job.name} printed no capacity record with its start and end")
        spans.append(held_span(job) or span)
    _queued_together(jobs)
    return jobs, spans


def _queued_together(jobs: list[JobEvidence]) -> None:
    """could_not_test unless every job's judged attempt was created before any of them ended: only jobs that
    wait for the runner's slots at the same time show its limit. A pipeline creates them together; a
    --runnerconf-retry re-creates each when its first attempt ends, and retries spread out say nothing."""
    __tracebackhide__ = True
    created = [api_time(j.job.get("created_at")) for j in jobs]
    ended = [j.finished_at for j in jobs]
    if any(t is None for t in [*created, *ended]):
        return  # no stamps to judge by: the spans alone
    latest = max(t for t in created if t is not None)
    first_end = min(t for t in ended if t is not None)
    if latest >= first_end:
        retried = [j.name for j in jobs if j.retried]
        could_not_test(
            "inconclusive",
            f"the capacity jobs did not wait for the runner together: {jobs[created.index(latest)].name} was "
            f"created {latest - first_end:.1f} s after another ended"
            + (f" (retried: {', '.join(retried)})" if retried else ""),
        )


def _pod_spans(jobs: list[JobEvidence]) -> list[dict[str, Any]]:
    """The pods' Running spans (the watch's clock, from the first pod's start), for the report."""
    spans = [s for j in jobs if j.pod is not None for s in [running_span(j.name, j.pod)] if s is not None]
    origin = min((s.start for s in spans), default=0.0)
    return [s.data(origin) for s in spans]


@check(
    id="RC-CAP-001",
    claim="as many jobs as the capacity runner's limit run at once: GitLab shows them running at the same "
    "time (started by the runner, not yet finished)",
    remediation=REMEDIATION,
    area="capacity",
    probes=(PROBE,),
)
def test_limit_jobs_run_at_once(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    tag, limit = _capacity(runnerconf_profile)
    jobs, spans = _spans(job_evidence, limit)
    most, at = max_overlap(spans)
    origin = min(s.start for s in spans)
    observed = {"at once": most, "jobs": [s.data(origin) for s in spans], "pods": _pod_spans(jobs)}
    if most < limit:
        fail(
            "RC-CAP-001",
            f"{limit} jobs of runner {tag!r} running at once (expect.capacity.limit)",
            observed,
            job=jobs[0],
            summary=f"at most {most} of {len(spans)} jobs ran at once, limit {limit}",
        )
    held(
        "RC-CAP-001",
        {"at once": limit, "runner tag": tag},
        observed,
        job=jobs[0],
        summary=f"{most} jobs ran at once ({at - origin if at is not None else 0:.1f} s after the first "
        f"started), limit {limit}",
    )


@check(
    id="RC-CAP-002",
    claim="one job more than the capacity runner's limit waits: never more than limit of its jobs run at "
    "once, and the extra one starts only after another ended",
    remediation=REMEDIATION,
    area="capacity",
    probes=(PROBE,),
)
def test_one_more_waits(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    tag, limit = _capacity(runnerconf_profile)
    jobs, spans = _spans(job_evidence, limit)
    most, _ = max_overlap(spans)
    origin = min(s.start for s in spans)
    shown = {"jobs": [s.data(origin) for s in spans], "pods": _pod_spans(jobs)}
    late = late_starter(spans, limit)
    assert late is not None  # limit + 1 spans
    last, first_end = late
    waited = None if first_end is None else last.start - first_end
    if most > limit or waited is None or waited < 0:
        said = (
            f"{most} jobs ran at once"
            if most > limit
            else f"{last.job} started {-(waited or 0):.1f} s before any other ended"
            if waited is not None
            else f"{last.job} started while none of the others had ended"
        )
        fail(
            "RC-CAP-002",
            f"at most {limit} jobs of runner {tag!r} at once; the last one starts after another ended",
            {"at once": most, **shown},
            job=last_job(jobs, last),
            summary=f"{said}, limit {limit}",
        )
    held(
        "RC-CAP-002",
        {"at most at once": limit, "runner tag": tag},
        {"at once": most, **shown, "extra job waited s": round(waited, 2)},
        job=last_job(jobs, last),
        summary=f"{last.job} started {waited:.1f} s after another ended; at most {most} at once, limit {limit}",
    )


def last_job(jobs: list[JobEvidence], span: RunSpan) -> JobEvidence:
    return next(j for j in jobs if j.name == span.job)


def bound_after(pod: PodObservation) -> tuple[float | None, str]:
    """Seconds from the pod's creation to its binding, on the API server's own stamps (creationTimestamp and
    the PodScheduled=True condition's lastTransitionTime, whole seconds), and the node; None: never bound."""
    created = api_time((pod.spec.get("metadata") or {}).get("creationTimestamp"))
    for source in (pod.last, pod.spec):
        conditions = (source.get("status") or {}).get("conditions") or []
        scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        bound = api_time((scheduled or {}).get("lastTransitionTime"))
        if scheduled is not None and scheduled.get("status") == "True" and bound is not None:
            node = str((source.get("spec") or {}).get("nodeName") or "")
            return (None if created is None else max(0.0, bound - created)), node
    return None, ""


def scheduler_said(pod: PodObservation) -> str:
    """The scheduler's last word on why the pod waited (a FailedScheduling event), if any."""
    said = [e for e in pod.events if e.get("reason") == "FailedScheduling"]
    return str(said[-1].get("message") or "") if said else ""


@check(
    id="RC-CAP-003",
    claim="the capacity runner's pods, whose requests fit a node, are bound to a node within "
    "expect.capacity.schedule_within_s of their creation",
    remediation="a pod waits for a node when none has the CPU or memory it requests free (FailedScheduling: "
    "Insufficient cpu/memory), when node_selector, node_tolerations or affinity match no node, or while a "
    "cluster autoscaler adds one; check the capacity runner's cpu_request/memory_request (and the helper_ and "
    "service_ requests) against the node pool's allocatable, its node_selector and node_tolerations, and the "
    "autoscaler's scale-up time",
    area="capacity",
    probes=(PROBE,),
)
def test_pods_scheduled_promptly(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    tag, limit = _capacity(runnerconf_profile)
    capacity = runnerconf_profile.expect.capacity
    assert capacity is not None  # _capacity skipped otherwise
    within = capacity.schedule_within_s
    setting = "expect.capacity.schedule_within_s"
    if within is None:
        within, setting = runnerconf_profile.expect.pickup_deadline_s, "expect.pickup_deadline_s"
    jobs = [job_evidence(f"{PROBE}-{n}") for n in range(1, limit + 2)]
    rows: list[dict[str, Any]] = []
    late: list[str] = []
    first_late: JobEvidence | None = None
    for job in jobs:
        if job.pod is None:
            could_not_test("no-evidence", f"the run saw no pod of job {job.name}", job=job)
        after, node = bound_after(job.pod)
        if after is None and api_time((job.pod.spec.get("metadata") or {}).get("creationTimestamp")) is None:
            could_not_test("no-evidence", f"pod {job.pod.name} of job {job.name} has no creationTimestamp")
        row: dict[str, Any] = {"job": job.name, "pod": job.pod.name, "bound after s": after, "node": node}
        if after is None or after > within:
            row["scheduler"] = scheduler_said(job.pod)
            late.append(f"{job.pod.name} " + ("never bound" if after is None else f"bound after {after:g} s"))
            first_late = first_late or job
        rows.append(row)
    slowest = max((r["bound after s"] or 0.0 for r in rows), default=0.0)
    want = {"bound within s": within, "setting": setting, "runner tag": tag}
    if late:
        said = next((r["scheduler"] for r in rows if r.get("scheduler")), "")
        fail(
            "RC-CAP-003",
            want,
            {"pods": rows},
            job=first_late,
            summary=f"{'; '.join(late)}, allowed {within:g} s" + (f" (scheduler: {said})" if said else ""),
        )
    held(
        "RC-CAP-003",
        want,
        {"pods": rows},
        job=jobs[0],
        summary=f"{len(rows)} pods bound within {slowest:g} s of their creation, allowed {within:g} s",
    )
