"""What the evidence says happened when: spans and marks on one time axis, for the run and for each job pod.

Pure functions from the evidence (RunEvidence, JobEvidence, PodObservation) to plain data; drawing is the
HTML report's job. Times are epoch seconds. Three clocks meet here: GitLab's (a job's started/finished), the
Kubernetes API's (creationTimestamp, startedAt, whole seconds) and this tool's (when a watch event arrived);
on one cluster they agree to well under a second, which is the resolution a picture needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence
from pytest_runnerconf.rfc3339 import epoch
from pytest_runnerconf.trace import Trace

# Span kinds (the report styles them by these names).
QUEUED, PENDING, RUNNING, CLEANUP = "queued", "pending", "running", "cleanup"
WAITING, TERMINATED, SECTION, PHASE = "waiting", "terminated", "section", "phase"
# Mark kinds.
CREATED, SCHEDULED, EVENT, WARNING = "created", "scheduled", "event", "warning"
JOB_END, DELETION, DELETED, EXITED = "job-end", "deletion", "deleted", "exited"


@dataclass(frozen=True)
class Span:
    label: str
    kind: str
    start: float
    end: float
    detail: str = ""
    open_end: bool = False  # the end was not observed: the span runs to the end of what was watched

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Mark:
    label: str
    kind: str
    time: float
    detail: str = ""


@dataclass(frozen=True)
class Row:
    label: str
    spans: tuple[Span, ...] = ()
    marks: tuple[Mark, ...] = ()


@dataclass(frozen=True)
class Timeline:
    title: str
    start: float
    end: float
    rows: tuple[Row, ...] = field(default_factory=tuple)
    pod: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


def _bounds(rows: list[Row], *floor: float | None) -> tuple[float, float]:
    times = [t for t in floor if t is not None]
    for row in rows:
        for span in row.spans:
            times += [span.start, span.end]
        times += [mark.time for mark in row.marks]
    if not times:
        return 0.0, 0.0
    return min(times), max(times)


# ---------------------------------------------------------------- the pod


def _observed(pod: PodObservation) -> list[tuple[float, dict[str, Any]]]:
    """The watch events with their times; an entry a damaged bundle holds without one is passed over."""
    return [
        (float(e["time"]), e)
        for e in pod.timeline
        if isinstance(e, dict) and isinstance(e.get("time"), int | float) and not isinstance(e["time"], bool)
    ]


def _running_since(pod: PodObservation) -> float | None:
    """When the watch first saw the pod Running (its containers started)."""
    return next((at for at, e in _observed(pod) if e.get("phase") == "Running"), None)


def _last_seen(pod: PodObservation, fallback: float) -> float:
    if pod.deleted_at is not None:
        return pod.deleted_at
    return max([fallback, *(at for at, _ in _observed(pod))])


def _phase_row(pod: PodObservation, end: float) -> Row:
    """The pod's phases as the watch saw them change, then its creation, scheduling and deletion."""
    spans: list[Span] = []
    current: tuple[str, float] | None = None
    for at, entry in _observed(pod):
        phase = entry.get("phase")
        if entry.get("type") == "DELETED" or not phase:
            continue
        if current is None or current[0] != phase:
            if current is not None:
                spans.append(Span(current[0], PHASE, current[1], at))
            current = (str(phase), at)
    if current is not None:
        stop = pod.deleted_at if pod.deleted_at is not None else end
        spans.append(
            Span(current[0], PHASE, current[1], max(stop, current[1]), open_end=pod.deleted_at is None)
        )
    marks: list[Mark] = []
    meta = pod.spec.get("metadata") or {}
    created = epoch(meta.get("creationTimestamp"))
    marks.append(Mark("created", CREATED, created if created is not None else pod.first_seen))
    for source in (pod.last, pod.spec):
        conditions = (source.get("status") or {}).get("conditions") or []
        scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        when = epoch((scheduled or {}).get("lastTransitionTime"))
        if scheduled is not None and when is not None and scheduled.get("status") == "True":
            node = (source.get("spec") or {}).get("nodeName") or ""
            marks.append(Mark("scheduled", SCHEDULED, when, f"on node {node}" if node else ""))
            break
    asked = next(((at, e) for at, e in _observed(pod) if e.get("deletionTimestamp")), None)
    if asked is not None:
        marks.append(Mark("deletion requested", DELETION, asked[0], str(asked[1]["deletionTimestamp"])))
    if pod.deleted_at is not None:
        marks.append(Mark("pod deleted", DELETED, pod.deleted_at))
    return Row("pod", tuple(spans), tuple(marks))


def _container_names(pod: PodObservation) -> list[tuple[str, bool]]:
    """(name, is_init) in the pod spec's order: init containers first, then any the timeline adds."""
    spec = pod.spec.get("spec") or {}
    names = [(str(c.get("name")), True) for c in spec.get("initContainers") or []]
    names += [(str(c.get("name")), False) for c in spec.get("containers") or []]
    known = {n for n, _ in names}
    for _, entry in _observed(pod):
        containers = entry.get("containers")
        for name in containers if isinstance(containers, dict) else ():
            if name not in known:
                known.add(name)
                names.append((name, False))
    return names


@dataclass
class _Start:
    """One start of a container (its startedAt) while its states are folded into spans."""

    start: float
    end: float | None = None
    detail: str = ""
    seen_running: float | None = None  # the last time the watch saw it running


def _container_row(pod: PodObservation, name: str, init: bool, end: float) -> Row:
    """One container's life from its status states: waiting (with the reason), running, terminated.

    startedAt and finishedAt count whole seconds; the watch's own times bound them more finely: a container
    seen waiting at T started after T, one seen running at T finished after T. A container too quick for the
    watch to see running is still drawn, from its terminated state.
    """
    spans: list[Span] = []
    marks: list[Mark] = []
    waiting: list[Any] | None = None  # [reason, first seen, last seen]
    runs: dict[str, _Start] = {}  # by startedAt
    last_at = pod.first_seen

    def close_waiting(at: float) -> None:
        nonlocal waiting
        if waiting is not None:
            label = f"waiting: {waiting[0]}" if waiting[0] else "waiting"
            spans.append(Span(label, WAITING, waiting[1], max(at, waiting[1])))
            waiting = None

    for at, entry in _observed(pod):
        containers = entry.get("containers")
        state = containers.get(name) if isinstance(containers, dict) else None
        if not isinstance(state, dict):
            continue
        last_at = at
        if "waiting" in state:
            reason = str((state.get("waiting") or {}).get("reason") or "")
            if waiting is not None and waiting[0] != reason:
                close_waiting(at)
            if waiting is None:
                waiting = [reason, at, at]
            waiting[2] = at
            continue
        key = "running" if isinstance(state.get("running"), dict) else "terminated"
        body = state.get(key)
        if not isinstance(body, dict):
            continue
        started_key = str(body.get("startedAt") or f"seen-{at}")
        if started_key not in runs:
            started = epoch(body.get("startedAt"))
            floor = waiting[2] if waiting is not None else None
            start = at if started is None else max(started, floor if floor is not None else started)
            start = min(start, at)
            runs[started_key] = _Start(start)
            close_waiting(start)
        run = runs[started_key]
        if key == "running":
            run.seen_running = at
        elif run.end is None:
            finished = epoch(body.get("finishedAt"))
            floor = run.seen_running if run.seen_running is not None else run.start
            ended = at if finished is None else min(max(finished, floor), at)
            code, why = body.get("exitCode"), body.get("reason") or ""
            run.end, run.detail = ended, f"exit code {code}" + (f" ({why})" if why else "")
            marks.append(Mark(f"{name} exited {code}", EXITED, ended, run.detail))
    stop = pod.deleted_at if pod.deleted_at is not None else max(end, last_at)
    if waiting is not None:
        label = f"waiting: {waiting[0]}" if waiting[0] else "waiting"
        spans.append(Span(label, WAITING, waiting[1], max(stop, waiting[1]), open_end=True))
    for run in runs.values():
        if run.end is None:
            spans.append(Span("running", RUNNING, run.start, max(stop, run.start), open_end=True))
        else:
            spans.append(Span("running", RUNNING, run.start, max(run.end, run.start), run.detail))
    spans.sort(key=lambda s: s.start)
    return Row(f"{'init ' if init else ''}container {name}", tuple(spans), tuple(marks))


def _event_time(event: dict[str, Any]) -> float | None:
    for key in ("eventTime", "lastTimestamp", "firstTimestamp"):
        at = epoch(event.get(key))
        if at is not None:
            return at
    return epoch((event.get("metadata") or {}).get("creationTimestamp"))


def _event_row(pod: PodObservation) -> Row | None:
    marks = []
    # Typed as dicts, but read from a bundle someone may have edited.
    events: list[Any] = list(pod.events)
    for event in events:
        if not isinstance(event, dict):
            continue
        at = _event_time(event)
        if at is None:
            continue
        kind = WARNING if event.get("type") == "Warning" else EVENT
        count = event.get("count")
        times = f" (x{count})" if isinstance(count, int) and count > 1 else ""
        reason = str(event.get("reason") or "event")
        marks.append(
            Mark(reason, kind, at, f"{event.get('type') or ''} {reason}{times}: {event.get('message') or ''}")
        )
    if not marks:
        return None
    marks.sort(key=lambda m: m.time)
    return Row("events", (), tuple(marks))


# ---------------------------------------------------------------- the trace


def section_spans(trace: Trace) -> list[Span]:
    """The trace's sections; with FF_TIMESTAMPS their first and last lines' times refine the marker seconds."""
    spans = []
    for section in trace.sections:
        start, end = float(section.start), float(section.end if section.end is not None else section.start)
        lines = trace.lines[section.first_line : section.last_line + 1]
        stamped = [line.time for line in lines if line.time is not None]
        # A section marker counts whole seconds; a stamped line inside the same second is the finer time.
        if stamped and start <= stamped[0] < start + 1:
            start = stamped[0]
        if stamped and section.end is not None and end <= stamped[-1] < end + 1:
            end = stamped[-1]
        label = section.name.removeprefix("step_") if section.name.startswith("step_") else section.name
        detail = f"{len(lines)} lines" + ("" if section.end is not None else ", no end marker")
        spans.append(Span(label, SECTION, start, max(end, start), detail, open_end=section.end is None))
    return spans


def _lanes(spans: list[Span]) -> list[list[Span]]:
    """Spans spread over as few lanes as keep them from overlapping (nested sections get a lane below)."""
    lanes: list[list[Span]] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        for lane in lanes:
            if lane[-1].end <= span.start:
                lane.append(span)
                break
        else:
            lanes.append([span])
    return lanes


# ---------------------------------------------------------------- timelines


def pod_timeline(job: JobEvidence, *, watched_until: float | None = None) -> Timeline | None:
    """The life of JOB's pod beside its trace and its end; None when no pod was seen for the job."""
    pod = job.pod
    if pod is None:
        return None
    end = _last_seen(pod, max(t for t in (job.finished_at, watched_until, pod.first_seen) if t is not None))
    rows = [_phase_row(pod, end)]
    rows += [_container_row(pod, name, init, end) for name, init in _container_names(pod)]
    for n, lane in enumerate(_lanes(section_spans(job.trace_parsed)) if job.trace else []):
        rows.append(Row("trace sections" if n == 0 else "", tuple(lane)))
    events = _event_row(pod)
    if events is not None:
        rows.append(events)
    job_marks = []
    if job.started_at is not None:
        job_marks.append(Mark("job started", RUNNING, job.started_at))
    if job.finished_at is not None:
        job_marks.append(Mark(f"job {job.status or 'ended'}", JOB_END, job.finished_at, job.status))
    rows.append(Row("job", (), tuple(job_marks)))
    start, stop = _bounds(rows, pod.first_seen)
    return Timeline(job.name, start, stop, tuple(rows), pod.name)


def job_spans(job: JobEvidence, *, pushed_at: float, watched_until: float) -> list[Span]:
    """Queued (until a runner took it), pending (until its pod ran), running (until the job ended), cleanup
    (until its pod was gone). A span the evidence cannot place is left out rather than guessed."""
    spans: list[Span] = []
    created = epoch(job.job.get("created_at"))
    queued_from = max(created, pushed_at) if created is not None else pushed_at
    started, finished = job.started_at, job.finished_at
    if started is not None:
        spans.append(Span(QUEUED, QUEUED, queued_from, max(started, queued_from)))
    elif finished is not None:
        # Ended without ever starting (refused, cancelled while queued): it waited the whole time.
        spans.append(Span(QUEUED, QUEUED, queued_from, max(finished, queued_from), "never started"))
    pod = job.pod
    running = _running_since(pod) if pod is not None else None
    if started is not None and running is not None and running > started:
        spans.append(Span(PENDING, PENDING, started, running, f"pod {pod.name}" if pod else ""))
    run_from = running if running is not None and (started is None or running > started) else started
    if run_from is not None:
        until = finished if finished is not None else watched_until
        spans.append(
            Span(RUNNING, RUNNING, run_from, max(until, run_from), job.status, open_end=finished is None)
        )
    if pod is not None and finished is not None:
        gone = pod.deleted_at
        spans.append(
            Span(
                CLEANUP,
                CLEANUP,
                finished,
                max(gone if gone is not None else watched_until, finished),
                "pod deleted" if gone is not None else "pod not seen deleted",
                open_end=gone is None,
            )
        )
    return spans


def run_picture(run: RunEvidence) -> Timeline:
    """One row per probe job (the plan's order, then any other job) from the push to the last pod gone."""
    names = [n for n in run.plan if n in run.jobs] + [n for n in run.jobs if n not in run.plan]
    watched_until = max(run.finished_at, run.started_at)
    rows = []
    for name in names:
        job = run.jobs[name]
        marks: tuple[Mark, ...] = ()
        if job.finished_at is not None:
            marks = (Mark(f"job {job.status or 'ended'}", JOB_END, job.finished_at, job.status),)
        spans = job_spans(job, pushed_at=run.started_at, watched_until=watched_until)
        rows.append(Row(name, tuple(spans), marks))
    start, end = _bounds(rows, run.started_at if run.started_at else None)
    return Timeline("run", start, end, tuple(rows))


def cleanup_tail(run: RunEvidence) -> float | None:
    """Seconds from the last job's end to the last pod gone (the cleanup tail the picture shows)."""
    ends = [j.finished_at for j in run.jobs.values() if j.finished_at is not None]
    gone = [j.pod.deleted_at for j in run.jobs.values() if j.pod is not None and j.pod.deleted_at is not None]
    if not ends or not gone:
        return None
    return max(gone) - max(ends)
