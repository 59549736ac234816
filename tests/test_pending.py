"""A pod that stays Pending: the deadline below the runner's poll_timeout, and the diagnosis of its events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pytest_runnerconf.pending import diagnose, likely_cause, ordered_events, pending_deadline
from pytest_runnerconf.profile import Expectations

SCHEDULER = (
    "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption "
    "victims found for incoming pod."
)


def event(reason: str, message: str, at: str, type_: str = "Warning") -> dict[str, Any]:
    return {"type": type_, "reason": reason, "message": message, "lastTimestamp": at, "count": 1}


def test_deadline_from_poll_timeout() -> None:
    base = Expectations(pending_deadline_s=180.0)
    assert pending_deadline(base) == (180.0, "expect.pending_deadline_s")
    limit, why = pending_deadline(replace(base, poll_timeout_s=30.0))
    assert limit == 25.0 and "poll_timeout of 30s" in why
    assert pending_deadline(replace(base, poll_timeout_s=600.0))[0] == 180.0  # the smaller bound wins
    assert pending_deadline(replace(base, poll_timeout_s=8.0))[0] == 4.0  # never at or past the runner's


def test_warnings_first_each_by_time() -> None:
    events = [
        event("Scheduled", "assigned", "2026-01-01T00:00:03Z", "Normal"),
        event("FailedScheduling", SCHEDULER, "2026-01-01T00:00:02Z"),
        event("Pulling", "pulling", "2026-01-01T00:00:01Z", "Normal"),
        event("BackOff", "Back-off pulling image", "2026-01-01T00:00:01Z"),
    ]
    assert [e["reason"] for e in ordered_events(events)] == [
        "BackOff",
        "FailedScheduling",
        "Pulling",
        "Scheduled",
    ]


PENDING: dict[str, Any] = {"status": {"phase": "Pending"}}


@pytest.mark.parametrize(
    ("pod", "events", "cause", "fragment"),
    [
        (PENDING, [event("FailedScheduling", SCHEDULER, "t1")], "pod-not-started", "could not be scheduled"),
        (
            PENDING,
            [event("FailedCreate", 'pods "x" is forbidden: exceeded quota: q, requested: pods=1', "t1")],
            "quota",
            "a quota refused it",
        ),
        (
            {
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": "build",
                            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}},
                        }
                    ],
                }
            },
            [event("Failed", 'Failed to pull image "a:b": not found', "t1")],
            "image-pull",
            "container build is ImagePullBackOff",
        ),
        (
            PENDING,
            [
                event(
                    "FailedScheduling",
                    "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.",
                    "t1",
                )
            ],
            "pod-not-started",
            "node is not ready",
        ),
        (
            {
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [{"name": "build", "state": {"running": {}}}],
                }
            },
            [event("Started", "Started container build", "t1", "Normal")],
            "pod-not-started",
            "containers build started but the phase stayed Pending",
        ),
        (PENDING, [], "pod-not-started", "no event explains it"),
    ],
)
def test_likely_cause(pod: dict[str, Any], events: list[dict[str, Any]], cause: str, fragment: str) -> None:
    found, phrase = likely_cause(pod, events)
    assert found == cause and fragment in phrase, phrase


def test_diagnosis_sentence_quotes_the_events() -> None:
    events = [
        event("Scheduled", "never", "2026-01-01T00:00:09Z", "Normal"),
        event("FailedScheduling", SCHEDULER, "2026-01-01T00:00:02Z"),
    ]
    d = diagnose("runner-a-project-1-concurrent-0-abcdefgh", PENDING, events, 26.4, 25.0, "why")
    assert d.cause == "pod-not-started" and d.pod.startswith("runner-a") and d.pending_s == 26.4
    assert d.sentence.startswith("pod runner-a-project-1-concurrent-0-abcdefgh stayed Pending for 26s")
    assert d.sentence.index("Warning FailedScheduling") < d.sentence.index("Normal Scheduled")
    assert [e["reason"] for e in d.events] == ["FailedScheduling", "Scheduled"]


def test_every_diagnosed_cause_is_a_documented_one() -> None:
    from pytest_runnerconf.outcome import CAUSES

    pods = [
        PENDING,
        {"status": {"phase": "Pending", "containerStatuses": [{"name": "b", "state": {"running": {}}}]}},
    ]
    events = [
        [event("FailedScheduling", SCHEDULER, "t")],
        [event("FailedCreate", "exceeded quota: q", "t")],
        [event("Failed", "Failed to pull image x", "t")],
        [event("NodeNotReady", "Node is not ready", "t")],
        [],
    ]
    assert {likely_cause(p, e)[0] for p in pods for e in events} <= set(CAUSES)


def test_never_ran() -> None:
    from pytest_runnerconf.pending import never_ran

    assert never_ran([{"type": "ADDED", "phase": "Pending"}, {"type": "DELETED", "phase": "Running"}])
    assert not never_ran([{"type": "ADDED", "phase": "Pending"}, {"type": "MODIFIED", "phase": "Running"}])
    assert not never_ran([])


def test_diagnosis_after_the_runner_gave_up() -> None:
    d = diagnose(
        "p", PENDING, [event("FailedScheduling", SCHEDULER, "t")], 31.0, None, "until the runner gave up"
    )
    assert not d.cancelled and d.sentence.startswith(
        "pod p stayed Pending for 31s (until the runner gave up)"
    )
    assert diagnose("p", PENDING, [], 26.0, 25.0, "why").cancelled
