"""A run's progress as structured events, one per change of its state; displays decide what to show."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal[
    "note",  # a target provider's own line (e.g. the local cluster starting), in text
    "preflight",  # the run checks GitLab (url) and the namespace (name)
    "pipeline",  # the pipeline was created: number, url, count = its jobs
    "job-started",  # name, status running
    "job-finished",  # name, status, seconds = GitLab's duration
    "pod-created",  # name = the pod, job = its job
    "pod-deleted",  # name = the pod, job = its job
    "waiting",  # every job finished; count = pods (name "pods") or Secrets (name "secrets") still there
    "done",  # the evidence is saved; count = pods still there at the cleanup deadline
    "tick",  # nothing changed; a live display refreshes its clock, a log may write a heartbeat
    "pause",  # the session runs checks while other runs go on: displays hand the row back to pytest
    "end",  # the session is done with the run, whatever happened; displays finish their output
]
FINISHED = frozenset({"success", "failed", "canceled", "skipped", "manual"})


@dataclass(frozen=True)
class RunState:
    """The whole run at one moment: what a live line shows."""

    pipeline: int | None = None
    jobs: int = 0
    finished: tuple[tuple[str, int], ...] = ()  # (status, count) of the finished jobs, by status
    running: tuple[str, ...] = ()  # names of the running jobs
    pods_seen: int = 0
    pods_deleted: int = 0
    waiting: str = ""  # "pods" or "secrets" once every job finished
    waiting_count: int = 0

    @property
    def jobs_finished(self) -> int:
        return sum(count for _, count in self.finished)


@dataclass(frozen=True)
class ProgressEvent:
    """One change of a run's state (or a tick), with the whole state for live displays."""

    kind: Kind
    cluster: str = ""
    elapsed: float = 0.0  # seconds since the run started
    name: str = ""
    job: str = ""
    status: str = ""
    number: int | None = None
    count: int = 0
    seconds: float | None = None
    url: str = ""
    text: str = ""
    state: RunState = field(default_factory=RunState)


Progress = Callable[[ProgressEvent], None]


def note(text: str) -> ProgressEvent:
    return ProgressEvent("note", text=text)


END = ProgressEvent("end")
PAUSE = ProgressEvent("pause")


@dataclass
class RunChanges:
    """Compares successive looks at a run and emits one event per change (and a tick per look)."""

    emit: Progress
    cluster: str
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    _pipeline: int | None = None
    _status: dict[int, str] = field(default_factory=dict)
    _pods: dict[str, bool] = field(default_factory=dict)  # pod name -> deleted
    _waiting: str = ""
    _state: RunState = field(default_factory=RunState)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def _send(self, kind: Kind, **values: Any) -> None:
        elapsed = self.clock() - self.started
        self.emit(ProgressEvent(kind, self.cluster, elapsed, state=self._state, **values))

    def preflight(self, gitlab_url: str, namespace: str) -> None:
        self._send("preflight", url=gitlab_url, name=namespace)

    def look(
        self,
        pipeline: Mapping[str, Any],
        jobs: Mapping[int, Mapping[str, Any]],
        pods: Mapping[str, tuple[int, bool]],
        waiting: tuple[str, int] = ("", 0),
    ) -> None:
        """PIPELINE and JOBS as GitLab shows them, PODS of those jobs (name -> (job id, deleted)), and
        what the run waits for once every job finished ("pods"/"secrets" and how many)."""
        names = {job_id: str(job.get("name")) for job_id, job in jobs.items()}
        statuses = {job_id: str(job.get("status")) for job_id, job in jobs.items()}
        self._state = RunState(
            pipeline=_int(pipeline.get("id")),
            jobs=len(jobs),
            finished=tuple(sorted(Counter(s for s in statuses.values() if s in FINISHED).items())),
            running=tuple(sorted(names[i] for i, s in statuses.items() if s == "running")),
            pods_seen=len(pods),
            pods_deleted=sum(1 for _, deleted in pods.values() if deleted),
            waiting=waiting[0],
            waiting_count=waiting[1],
        )
        if self._pipeline is None and self._state.pipeline is not None:
            self._pipeline = self._state.pipeline
            self._send(
                "pipeline", number=self._pipeline, url=str(pipeline.get("web_url") or ""), count=len(jobs)
            )
        for job_id, status in sorted(statuses.items()):
            before = self._status.get(job_id, "")
            if status == before:
                continue
            self._status[job_id] = status
            if status in FINISHED and before not in FINISHED:
                duration = jobs[job_id].get("duration")
                seconds = float(duration) if isinstance(duration, int | float) else None
                self._send("job-finished", name=names[job_id], status=status, seconds=seconds)
            elif status == "running" and before not in FINISHED:
                self._send("job-started", name=names[job_id], status=status)
        for pod, (job_id, deleted) in sorted(pods.items()):
            known = self._pods.get(pod)
            job = names.get(job_id, str(job_id))
            if known is None:
                self._send("pod-created", name=pod, job=job)
            if deleted and not known:
                self._send("pod-deleted", name=pod, job=job)
            self._pods[pod] = deleted
        if waiting[0] != self._waiting:
            self._waiting = waiting[0]
            if waiting[0]:
                self._send("waiting", name=waiting[0], count=waiting[1])
        self._send("tick")

    def done(self, pods_left: int) -> None:
        self._send("done", count=pods_left)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
