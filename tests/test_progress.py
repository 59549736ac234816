"""The run's progress events: one per change of state, whatever how often the run looks."""

from __future__ import annotations

from typing import Any

from pytest_runnerconf.progress import ProgressEvent, RunChanges

PIPELINE = {"id": 7, "web_url": "https://g.test/p/-/pipelines/7"}


def _jobs(**statuses: str) -> dict[int, dict[str, Any]]:
    return {
        i: {"name": name, "status": status, "duration": 2.5 if status in ("success", "failed") else None}
        for i, (name, status) in enumerate(statuses.items(), start=1)
    }


def _changes() -> tuple[RunChanges, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    return RunChanges(events.append, "prod"), events


def _kinds(events: list[ProgressEvent]) -> list[tuple[str, str, str]]:
    return [(e.kind, e.name, e.status) for e in events if e.kind != "tick"]


def test_each_change_is_one_event_however_often_the_run_looks() -> None:
    changes, events = _changes()
    changes.preflight("https://g.test", "ci")
    for _ in range(3):
        changes.look(PIPELINE, _jobs(a="pending", b="pending"), {})
    for _ in range(3):
        changes.look(PIPELINE, _jobs(a="running", b="pending"), {"pod-a": (1, False)})
    for _ in range(3):
        changes.look(PIPELINE, _jobs(a="success", b="running"), {"pod-a": (1, True), "pod-b": (2, False)})
    for _ in range(3):
        changes.look(
            PIPELINE, _jobs(a="success", b="failed"), {"pod-a": (1, True), "pod-b": (2, False)}, ("pods", 1)
        )
    changes.look(PIPELINE, _jobs(a="success", b="failed"), {"pod-a": (1, True), "pod-b": (2, True)})
    changes.done(0)
    assert _kinds(events) == [
        ("preflight", "ci", ""),
        ("pipeline", "", ""),
        ("job-started", "a", "running"),
        ("pod-created", "pod-a", ""),
        ("job-finished", "a", "success"),
        ("job-started", "b", "running"),
        ("pod-deleted", "pod-a", ""),
        ("pod-created", "pod-b", ""),
        ("job-finished", "b", "failed"),
        ("waiting", "pods", ""),
        ("pod-deleted", "pod-b", ""),
        ("done", "", ""),
    ]
    assert sum(1 for e in events if e.kind == "tick") == 13  # one per look
    pipeline = next(e for e in events if e.kind == "pipeline")
    assert (pipeline.number, pipeline.url, pipeline.count) == (7, PIPELINE["web_url"], 2)
    finished = [e for e in events if e.kind == "job-finished"]
    assert [e.seconds for e in finished] == [2.5, 2.5]
    assert all(e.cluster == "prod" for e in events)
    assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)


def test_the_state_counts_jobs_pods_and_what_the_run_waits_for() -> None:
    changes, events = _changes()
    pods = {"p1": (1, True), "p2": (2, False), "p3": (3, False)}
    changes.look(PIPELINE, _jobs(a="success", b="running", c="running", d="canceled"), pods)
    state = events[-1].state
    assert state.pipeline == 7 and state.jobs == 4 and state.jobs_finished == 2
    assert state.finished == (("canceled", 1), ("success", 1))
    assert state.running == ("b", "c")
    assert (state.pods_seen, state.pods_deleted) == (3, 1)
    changes.look(PIPELINE, _jobs(a="success", b="success", c="success", d="canceled"), pods, ("secrets", 2))
    assert (events[-1].state.waiting, events[-1].state.waiting_count) == ("secrets", 2)


def test_a_job_that_ends_between_two_looks_still_ends_once() -> None:
    changes, events = _changes()
    changes.look(PIPELINE, _jobs(quick="pending"), {})
    changes.look(PIPELINE, _jobs(quick="success"), {"pod-q": (1, True)})  # never seen running
    changes.look(PIPELINE, _jobs(quick="success"), {"pod-q": (1, True)})
    assert _kinds(events) == [
        ("pipeline", "", ""),
        ("job-finished", "quick", "success"),
        ("pod-created", "pod-q", ""),
        ("pod-deleted", "pod-q", ""),
    ]


def test_a_pipeline_whose_jobs_are_not_listed_yet_is_still_announced_once() -> None:
    changes, events = _changes()
    changes.look(PIPELINE, {}, {})
    changes.look(PIPELINE, _jobs(a="pending"), {})
    assert [(e.kind, e.count) for e in events if e.kind == "pipeline"] == [("pipeline", 0)]
