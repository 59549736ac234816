"""Which probe jobs a run retries, and the attempts it keeps: only ends the infrastructure caused.

A job the runner or the cluster ended before its probe could show anything (a runner system failure, a pod that
never started, an API error) says nothing about conformance, so with --runnerconf-retry=N the run asks GitLab to
retry it, up to N times per job. A job whose end is evidence is never retried: a script failure, and any failure
of a job a check judges itself (an OOM kill, a refused override, a job timeout) unless its pod never ran
(outcome.NEVER_RAN), which is exactly when that check could not judge it either (plugin.job_evidence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_runnerconf import jobend
from pytest_runnerconf.evidence import Attempt, JobEvidence, RunEvidence
from pytest_runnerconf.outcome import NEVER_RAN


def worth_retrying(end: jobend.JobEnd, name: str, judged: frozenset[str]) -> bool:
    """Whether a job NAME that ended as END is retried, given the jobs whose failures a check judges."""
    if not end.infrastructure or end.unsupported:
        return False  # a conformance end, or a runner too old to judge: another attempt would say the same
    return name not in judged or end.cause in NEVER_RAN


def attempt_of(job: JobEvidence, end: jobend.JobEnd | None = None) -> Attempt:
    """JOB as one attempt: its GitLab facts and how the classification saw its end."""
    end = end or jobend.classify(job)
    return Attempt(
        job_id=int(job.job.get("id") or 0),
        web_url=job.web_url,
        status=job.status,
        failure_reason=str(job.job.get("failure_reason") or ""),
        end=end.kind,
        cause=end.cause,
        sentence=end.sentence(job.name),
        started_at=job.started_at,
        finished_at=job.finished_at,
        pod=job.pod.name if job.pod is not None else "",
    )


def attempts(job: JobEvidence) -> list[Attempt]:
    """Every attempt of JOB, oldest first: the ones retried, then the job itself (the one the checks judge)."""
    return [*job.retried, attempt_of(job)]


def attempt_rows(job: JobEvidence) -> list[dict[str, Any]]:
    """JOB's attempts as report.json keeps them, each naming its job."""
    return [{"job": job.name, **asdict(a)} for a in attempts(job)]


def summary_lines(run: RunEvidence) -> list[str]:
    """One terminal line per retried job: every attempt, with how it ended."""
    lines = []
    for name, job in run.jobs.items():
        if not job.retried:
            continue
        told = [
            f"#{a.job_id} {a.status}" + (f" ({a.cause})" if a.end == jobend.INFRASTRUCTURE else "")
            for a in attempts(job)
        ]
        lines.append(f"runnerconf: job {name} ran {len(told)} times: {', '.join(told)}")
    return lines


@dataclass
class Retries:
    """One run's retry budget (LIMIT per job name) and the attempts it replaced, by job name."""

    limit: int = 0
    judged: frozenset[str] = frozenset()
    replaced: dict[str, list[Attempt]] = field(default_factory=dict)
    looked_at: set[int] = field(default_factory=set)  # job ids already decided on

    @property
    def replaced_ids(self) -> set[int]:
        return {a.job_id for found in self.replaced.values() for a in found}

    def consider(self, job: JobEvidence) -> Attempt | None:
        """Decide once per job id: the attempt JOB is, when the run is to retry it (None: keep this end)."""
        job_id = int(job.job.get("id") or 0)
        if job_id in self.looked_at:
            return None
        self.looked_at.add(job_id)
        if len(self.replaced.get(job.name, ())) >= self.limit:
            return None
        end = jobend.classify(job)
        return attempt_of(job, end) if worth_retrying(end, job.name, self.judged) else None

    def retried(self, name: str, attempt: Attempt) -> None:
        """GitLab made a new job for ATTEMPT: it counts against NAME's budget and is kept for the report."""
        self.replaced.setdefault(name, []).append(attempt)

    def earlier(self, name: str, pod_of: Callable[[int], str | None] = lambda _job_id: None) -> list[Attempt]:
        """NAME's replaced attempts; POD_OF names an attempt's pod that the watch reported only after the retry
        (a pod that failed at once may reach the watch after GitLab reported its job failed)."""
        found = list(self.replaced.get(name, ()))
        for attempt in found:
            attempt.pod = attempt.pod or pod_of(attempt.job_id) or ""
        return found
