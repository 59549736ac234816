"""A job pod that never starts: when the run gives up on it, and what its events say the cause is.

The run gives up a little before the runner would (its poll_timeout), so the diagnosis comes from the pod and
its events while they still exist, and the job is cancelled instead of the whole run being aborted.
"""

from __future__ import annotations

import re
from typing import Any

from pytest_runnerconf.evidence import Diagnosis
from pytest_runnerconf.profile import Expectations

# Below the runner's poll_timeout by this share of it (at least MIN_MARGIN_S), so the run notices first even
# though it looks only every few seconds.
MARGIN_SHARE = 0.1
MIN_MARGIN_S = 5.0
QUOTED_EVENTS = 5

_IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_NOT_READY = re.compile(r"NodeNotReady|node\.kubernetes\.io/(not-ready|unreachable)|NotReady", re.I)
_QUOTA = re.compile(r"exceeded quota|forbidden: failed quota|must specify limits|LimitRange", re.I)


def pending_deadline(expect: Expectations) -> tuple[float, str]:
    """Seconds a pod may stay Pending before the run gives up on it, and the setting that decided."""
    limit, why = expect.pending_deadline_s, "expect.pending_deadline_s"
    poll = expect.poll_timeout_s
    if poll is not None and poll > 0:
        margin = max(MIN_MARGIN_S, poll * MARGIN_SHARE)
        derived = poll - margin if poll > 2 * margin else poll / 2
        if derived < limit:
            limit, why = derived, f"below the runner's poll_timeout of {poll:g}s (expect.poll_timeout_s)"
    return limit, why


def _event_time(event: dict[str, Any]) -> str:
    # RFC 3339 strings of one cluster sort in time order; eventTime is the newer API's field.
    meta = event.get("metadata") or {}
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or meta.get("creationTimestamp")
        or ""
    )


def ordered_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings first, each group oldest first."""
    return sorted(events, key=lambda e: (e.get("type") != "Warning", _event_time(e)))


def _kept(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": event.get("message"),
        "time": _event_time(event),
        "count": event.get("count"),
        "source": (event.get("source") or {}).get("component") or event.get("reportingComponent"),
    }


def _started_containers(pod: dict[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    return [
        str(cs.get("name"))
        for cs in status.get("containerStatuses") or []
        if "running" in (cs.get("state") or {}) or cs.get("started")
    ]


def _waiting_pull(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL:
            return f"container {cs.get('name')} is {waiting.get('reason')}: {waiting.get('message') or ''}".strip()
    return None


def _unschedulable(pod: dict[str, Any]) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "not scheduled")
    return None


def likely_cause(pod: dict[str, Any], events: list[dict[str, Any]]) -> tuple[str, str]:
    """(cause, phrase): the first explanation the pod's status and Warning events give."""
    warnings = [e for e in ordered_events(events) if e.get("type") == "Warning"]
    for e in warnings:
        message = str(e.get("message") or "")
        if _QUOTA.search(message):
            return "quota", f"a quota refused it ({e.get('reason')}: {message})"
    for e in warnings:
        message = str(e.get("message") or "")
        if e.get("reason") == "FailedScheduling":
            if _NOT_READY.search(message):
                return "pod-not-started", f"its node is not ready (FailedScheduling: {message})"
            return "pod-not-started", f"it could not be scheduled (FailedScheduling: {message})"
    pull = _waiting_pull(pod)
    pulled = next(
        (
            e
            for e in warnings
            if e.get("reason") in ("Failed", "BackOff", *_IMAGE_PULL)
            and "pull" in str(e.get("message") or "").lower()
        ),
        None,
    )
    if pull or pulled:
        said = pull or f"{pulled.get('reason')}: {pulled.get('message')}"  # type: ignore[union-attr]
        return "image-pull", f"an image could not be pulled ({said})"
    for e in warnings:
        if _NOT_READY.search(f"{e.get('reason')} {e.get('message')}"):
            return "pod-not-started", f"its node is not ready ({e.get('reason')}: {e.get('message')})"
    unscheduled = _unschedulable(pod)
    if unscheduled:
        return "pod-not-started", f"it could not be scheduled ({unscheduled})"
    started = _started_containers(pod)
    if started:
        return (
            "pod-not-started",
            f"its containers {', '.join(started)} started but the phase stayed Pending (the kubelet never "
            "reported the pod Running)",
        )
    return "pod-not-started", "no event explains it"


def never_ran(timeline: list[dict[str, Any]]) -> bool:
    """Whether a pod's watch timeline shows it Pending from first sight to the end (never Running)."""
    phases = [entry.get("phase") for entry in timeline if entry.get("type") != "DELETED"]
    return bool(phases) and all(phase in (None, "Pending") for phase in phases)


def diagnose(
    name: str,
    pod: dict[str, Any],
    events: list[dict[str, Any]],
    pending_s: float,
    limit_s: float | None,
    why: str,
) -> Diagnosis:
    """The diagnosis of pod NAME, Pending for PENDING_S with EVENTS.

    LIMIT_S is the deadline past which the run gave up on it (WHY says where it comes from); None when the
    runner gave up first and the run diagnoses the pod afterwards (WHY then says how the job ended).
    """
    cause, phrase = likely_cause(pod, events)
    used = [_kept(e) for e in ordered_events(events)[:QUOTED_EVENTS]]
    quoted = "; ".join(f"{e['type']} {e['reason']}: {e['message']}" for e in used) or "no events"
    when = f"the run gives up after {limit_s:g}s, {why}" if limit_s is not None else why
    sentence = (
        f"pod {name} stayed Pending for {pending_s:.0f}s ({when}); likely cause: {phrase}; "
        f"events, Warnings first: {quoted}"
    )
    return Diagnosis(
        cause=cause,
        sentence=sentence,
        pod=name,
        pending_s=round(pending_s, 1),
        events=used,
        cancelled=limit_s is not None,
    )
