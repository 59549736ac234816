"""Spans and marks from hand-built evidence: what the report's pictures are drawn from."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence
from pytest_runnerconf.rfc3339 import epoch
from pytest_runnerconf.timeline import (
    CLEANUP,
    DELETED,
    DELETION,
    EVENT,
    EXITED,
    JOB_END,
    PENDING,
    QUEUED,
    RUNNING,
    SCHEDULED,
    WAITING,
    WARNING,
    Row,
    Span,
    cleanup_tail,
    job_spans,
    pod_timeline,
    run_picture,
    section_spans,
)
from pytest_runnerconf.trace import parse_trace

T0 = 1795392000.0  # 2026-11-23T00:00:00Z
TRACES = Path(__file__).resolve().parent / "data" / "traces"


def iso(offset: float) -> str:
    """Kubernetes writes whole seconds."""
    return datetime.fromtimestamp(T0 + int(offset), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting(reason: str) -> dict[str, Any]:
    return {"waiting": {"reason": reason}}


def running(started: float) -> dict[str, Any]:
    return {"running": {"startedAt": iso(started)}}


def terminated(started: float, finished: float, code: int = 0, reason: str = "Completed") -> dict[str, Any]:
    return {
        "terminated": {
            "startedAt": iso(started),
            "finishedAt": iso(finished),
            "exitCode": code,
            "reason": reason,
        }
    }


def entry(offset: float, phase: str, kind: str = "MODIFIED", **containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": T0 + offset,
        "type": kind,
        "phase": phase,
        "containers": containers,
        "deletionTimestamp": None,
    }


def make_pod(deleted: float | None = 9.4) -> PodObservation:
    """A pod as the watch sees one on a real cluster: an init container, build and helper, an OOM kill."""
    spec = {
        "metadata": {"name": "runner-x-project-1-concurrent-0-abc", "creationTimestamp": iso(1.0)},
        "spec": {
            "initContainers": [{"name": "init-permissions"}],
            "containers": [{"name": "build"}, {"name": "helper"}],
        },
        "status": {"phase": "Pending"},
    }
    last = {
        **spec,
        "spec": {**spec["spec"], "nodeName": "worker-1"},
        "status": {
            "phase": "Failed",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": iso(1.0)}],
        },
    }
    timeline = [
        entry(1.2, "Pending", "ADDED"),
        entry(1.5, "Pending", **{"init-permissions": waiting("PodInitializing")}),
        # The init container ran inside one second: the watch only ever saw it terminated.
        entry(
            2.6,
            "Pending",
            **{"init-permissions": terminated(2.0, 2.0)},
            build=waiting("PodInitializing"),
            helper=waiting("PodInitializing"),
        ),
        entry(3.1, "Pending", build=waiting("ContainerCreating"), helper=waiting("ContainerCreating")),
        # build says it started at 3 (whole seconds), but it was still waiting at 3.1.
        entry(3.8, "Running", build=running(3.0), helper=running(3.0)),
        entry(7.7, "Running", build=terminated(3.0, 7.0, 137, "OOMKilled"), helper=running(3.0)),
        entry(
            8.5,
            "Failed",
            build=terminated(3.0, 7.0, 137, "OOMKilled"),
            helper=terminated(3.0, 7.0, 137, "Error"),
        ),
    ]
    timeline[-1]["deletionTimestamp"] = iso(8.0)
    if deleted is not None:
        timeline.append(entry(deleted, "Failed", "DELETED"))
    events = [
        {"type": "Normal", "reason": "Scheduled", "message": "assigned to worker-1", "eventTime": iso(1.0)},
        {
            "type": "Normal",
            "reason": "Pulled",
            "message": "image present",
            "lastTimestamp": iso(2.0),
            "count": 3,
        },
        {
            "type": "Warning",
            "reason": "OOMKilling",
            "message": "Memory cgroup out of memory",
            "firstTimestamp": iso(7.0),
        },
        {"type": "Normal", "reason": "NoTime", "message": "an event with no time is left out"},
    ]
    return PodObservation(
        name="runner-x-project-1-concurrent-0-abc",
        first_seen=T0 + 1.2,
        spec=spec,
        last=last,
        timeline=timeline,
        events=events,
        deleted_at=None if deleted is None else T0 + deleted,
    )


def make_job(pod: PodObservation | None, trace: str = "", status: str = "failed") -> JobEvidence:
    return JobEvidence(
        name="oom",
        job={
            "status": status,
            "created_at": "2026-11-23T00:00:00.400Z",
            "web_url": "http://gitlab.example/j/1",
        },
        trace=trace,
        pod=pod,
        started_at=T0 + 0.9,
        finished_at=T0 + 8.1,
    )


def row(rows: tuple[Row, ...], label: str) -> Row:
    (found,) = [r for r in rows if r.label == label]
    return found


def spans_of(r: Row) -> list[tuple[str, str, float, float]]:
    return [(s.label, s.kind, round(s.start - T0, 2), round(s.end - T0, 2)) for s in r.spans]


def test_epoch_reads_rfc3339_and_refuses_junk() -> None:
    assert epoch("2026-11-23T00:00:01Z") == T0 + 1
    assert epoch("2026-11-23T00:00:01.250000Z") == T0 + 1.25
    assert epoch(12) == 12.0
    assert epoch(None) is None and epoch("") is None and epoch("yesterday") is None


def test_job_spans_queued_pending_running_cleanup() -> None:
    spans = job_spans(make_job(make_pod()), pushed_at=T0, watched_until=T0 + 20)
    assert [(s.kind, round(s.start - T0, 2), round(s.end - T0, 2), s.open_end) for s in spans] == [
        (QUEUED, 0.4, 0.9, False),  # from the job's creation (after the push) to a runner taking it
        (PENDING, 0.9, 3.8, False),  # until the watch saw the pod Running
        (RUNNING, 3.8, 8.1, False),
        (CLEANUP, 8.1, 9.4, False),  # the job's end to the pod's DELETED event
    ]


def test_job_spans_without_a_deletion_run_to_the_end_of_watching() -> None:
    (*_, cleanup) = job_spans(make_job(make_pod(deleted=None)), pushed_at=T0, watched_until=T0 + 20)
    assert (cleanup.kind, cleanup.end - T0, cleanup.open_end, cleanup.detail) == (
        CLEANUP,
        20.0,
        True,
        "pod not seen deleted",
    )


def test_job_spans_without_a_pod_have_no_pending_or_cleanup() -> None:
    spans = job_spans(make_job(None), pushed_at=T0, watched_until=T0 + 20)
    assert [(s.kind, round(s.start - T0, 2), round(s.end - T0, 2)) for s in spans] == [
        (QUEUED, 0.4, 0.9),
        (RUNNING, 0.9, 8.1),
    ]
    assert pod_timeline(make_job(None)) is None


def test_a_job_that_never_started_was_queued_until_it_ended() -> None:
    job = make_job(None)
    job.started_at = None
    (queued,) = job_spans(job, pushed_at=T0, watched_until=T0 + 20)
    assert (queued.kind, round(queued.start - T0, 2), round(queued.end - T0, 2), queued.detail) == (
        QUEUED,
        0.4,
        8.1,
        "never started",
    )


def test_run_picture_spans_push_to_last_pod_gone_in_plan_order() -> None:
    late = make_job(make_pod(deleted=12.0))
    late.name = "late"
    run = RunEvidence(
        started_at=T0,
        finished_at=T0 + 10,
        plan=["oom", "late"],
        jobs={"late": late, "oom": make_job(make_pod())},
    )
    picture = run_picture(run)
    assert [r.label for r in picture.rows] == ["oom", "late"]
    assert picture.start == T0 and picture.end == T0 + 12.0  # the last pod gone, after the run's end
    assert [m.kind for m in picture.rows[0].marks] == [JOB_END]
    assert cleanup_tail(run) == pytest.approx(12.0 - 8.1)


def test_pod_row_phases_and_marks() -> None:
    timeline = pod_timeline(make_job(make_pod()))
    assert timeline is not None and timeline.pod == "runner-x-project-1-concurrent-0-abc"
    pod = row(timeline.rows, "pod")
    assert spans_of(pod) == [
        ("Pending", "phase", 1.2, 3.8),
        ("Running", "phase", 3.8, 8.5),
        ("Failed", "phase", 8.5, 9.4),
    ]
    assert [(m.kind, round(m.time - T0, 2)) for m in pod.marks] == [
        ("created", 1.0),
        (SCHEDULED, 1.0),
        (DELETION, 8.5),
        (DELETED, 9.4),
    ]
    assert pod.marks[1].detail == "on node worker-1"
    assert timeline.start == T0 + 0.9 and timeline.end == T0 + 9.4  # job start to pod gone


def test_container_rows_follow_the_status_states() -> None:
    timeline = pod_timeline(make_job(make_pod()))
    assert timeline is not None
    assert [r.label for r in timeline.rows[1:4]] == [
        "init container init-permissions",
        "container build",
        "container helper",
    ]
    init = row(timeline.rows, "init container init-permissions")
    # Seen waiting at 1.5, then already terminated: drawn from its own terminated state (started and
    # finished within second 2).
    assert spans_of(init) == [("waiting: PodInitializing", WAITING, 1.5, 2.0), ("running", RUNNING, 2.0, 2.0)]
    assert [m.detail for m in init.marks] == ["exit code 0 (Completed)"]
    build = row(timeline.rows, "container build")
    assert spans_of(build) == [
        ("waiting: PodInitializing", WAITING, 2.6, 3.1),
        ("waiting: ContainerCreating", WAITING, 3.1, 3.1),
        # startedAt says 3.0 but the watch saw it waiting at 3.1: the finer bound wins.
        ("running", RUNNING, 3.1, 7.0),
    ]
    assert [(m.kind, m.label, m.detail) for m in build.marks] == [
        (EXITED, "build exited 137", "exit code 137 (OOMKilled)")
    ]
    helper = row(timeline.rows, "container helper")
    # finishedAt says 7 (whole seconds) but the watch still saw it running at 7.7.
    assert spans_of(helper)[-1] == ("running", RUNNING, 3.1, 7.7)


def test_a_restarted_container_gets_one_running_span_per_start() -> None:
    pod = make_pod()
    pod.timeline[5:] = [
        entry(7.7, "Running", build=waiting("CrashLoopBackOff"), helper=running(3.0)),
        entry(8.2, "Running", build=running(8.0), helper=running(3.0)),
    ]
    pod.deleted_at = T0 + 9.0
    timeline = pod_timeline(make_job(pod))
    assert timeline is not None
    build = row(timeline.rows, "container build")
    assert [(s.label, s.open_end) for s in build.spans if s.kind in (RUNNING, WAITING)][-3:] == [
        ("running", True),
        ("waiting: CrashLoopBackOff", False),
        ("running", True),
    ]
    assert round(build.spans[-1].start - T0, 2) == 8.0 and build.spans[-1].end == T0 + 9.0


def test_events_are_marks_and_warnings_stand_out() -> None:
    timeline = pod_timeline(make_job(make_pod()))
    assert timeline is not None
    events = row(timeline.rows, "events")
    assert [(m.kind, m.label, round(m.time - T0, 2)) for m in events.marks] == [
        (EVENT, "Scheduled", 1.0),
        (EVENT, "Pulled", 2.0),
        (WARNING, "OOMKilling", 7.0),
    ]
    assert events.marks[1].detail == "Normal Pulled (x3): image present"
    assert events.marks[2].detail == "Warning OOMKilling: Memory cgroup out of memory"


def test_job_row_marks_its_start_and_end() -> None:
    timeline = pod_timeline(make_job(make_pod()))
    assert timeline is not None
    job = row(timeline.rows, "job")
    assert [(m.kind, m.label, round(m.time - T0, 2)) for m in job.marks] == [
        (RUNNING, "job started", 0.9),
        (JOB_END, "job failed", 8.1),
    ]


def test_sections_use_ff_timestamps_within_the_marker_second() -> None:
    trace = parse_trace((TRACES / "runner-18.11-timestamps-success.txt").read_bytes())
    spans = {s.label: s for s in section_spans(trace)}
    prepare = spans["prepare_executor"]
    # Markers say 1795392001 for both ends; the stamped lines inside say 1.2 and 1.3.
    assert (round(prepare.start - T0, 2), round(prepare.end - T0, 2)) == (1.2, 1.3)
    assert "script" in spans  # step_script is shown as "script"
    assert all(s.end >= s.start for s in spans.values())


def test_sections_without_timestamps_use_the_marker_seconds() -> None:
    trace = parse_trace((TRACES / "runner-17.11-success.txt").read_bytes())
    prepare = next(s for s in section_spans(trace) if s.label == "prepare_script")
    assert (prepare.start - T0, prepare.end - T0) == (1.0, 4.0)


def test_nested_sections_get_a_lane_of_their_own() -> None:
    raw = (TRACES / "runner-18.11-timestamps-success.txt").read_bytes().decode()  # \r kept, as saved
    trace = parse_trace(raw)
    timeline = pod_timeline(make_job(make_pod(), trace=raw))
    assert timeline is not None
    lanes = [r for r in timeline.rows if r.label in ("trace sections", "")]
    assert len(lanes) >= 2  # section_script_step_0 lies inside step_script
    for lane in lanes:
        ordered = sorted(lane.spans, key=lambda s: s.start)
        assert all(a.end <= b.start for a, b in itertools.pairwise(ordered))
    assert sum(len(lane.spans) for lane in lanes) == len(trace.sections)


def test_span_duration() -> None:
    assert Span("x", RUNNING, 1.0, 3.5).duration == 2.5


def test_a_damaged_timeline_is_drawn_from_what_is_readable() -> None:
    pod = make_pod()
    pod.timeline[1:1] = [
        {"type": "MODIFIED"},
        {"time": "soon", "phase": "Running"},
        "junk",
        {"time": T0 + 1.3, "containers": []},
    ]  # type: ignore[list-item]
    pod.events.append("junk")  # type: ignore[arg-type]
    timeline = pod_timeline(make_job(pod))
    assert timeline is not None
    assert spans_of(row(timeline.rows, "pod")) == spans_of(
        row(pod_timeline(make_job(make_pod())).rows, "pod")
    )  # type: ignore[union-attr]
