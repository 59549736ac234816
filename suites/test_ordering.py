"""RC-ORD: init containers, get_sources, services and the script start in the order the runner promises."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from pytest_runnerconf import (
    JobEvidence,
    PodObservation,
    RunEvidence,
    check,
    could_not_test,
    fail,
    has_behaviour,
    held,
    require_behaviour,
)

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]
RUNNER_CONTAINERS = ("build", "helper")


def _time(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _iso(value: float | None) -> str:
    return "never observed" if value is None else datetime.fromtimestamp(value).astimezone().isoformat()


def _pod_states(pod: PodObservation) -> list[dict[str, Any]]:
    """Every container state the watch saw, oldest first, ending with the last pod object."""
    states = [entry.get("containers") or {} for entry in pod.timeline]
    status = pod.last.get("status") or {}
    last = {cs.get("name"): cs.get("state") or {} for key in ("initContainerStatuses", "containerStatuses")
            for cs in status.get(key) or []}  # fmt: skip
    return [*states, last]


def container_times(pod: PodObservation) -> dict[str, tuple[float | None, float | None]]:
    """name -> (earliest startedAt, latest finishedAt) over the whole status timeline."""
    times: dict[str, tuple[float | None, float | None]] = {}
    for containers in _pod_states(pod):
        for name, state in containers.items():
            started, finished = times.get(name, (None, None))
            for phase in ("running", "terminated"):
                detail = state.get(phase) or {}
                begin = _time(detail.get("startedAt"))
                if begin is not None and (started is None or begin < started):
                    started = begin
            end = _time((state.get("terminated") or {}).get("finishedAt"))
            if end is not None and (finished is None or end > finished):
                finished = end
            times[name] = (started, finished)
    return times


def _started_before_inits(pod: PodObservation, inits: list[str], regular: list[str]) -> dict[str, Any] | None:
    """The first status snapshot showing a regular container started while an init container had not ended.

    Container times have one-second resolution, so an init container that ends in the same second as a regular
    one starts cannot be ordered by time; one pod status holding both states orders them without a clock.
    """
    for containers in _pod_states(pod):
        started = [n for n in regular if {"running", "terminated"} & set(containers.get(n) or {})]
        unfinished = [n for n in inits if n in containers and "terminated" not in (containers.get(n) or {})]
        if started and unfinished:
            return {"started": started, "init containers not terminated": unfinished}
    return None


def _spec_names(pod: PodObservation, key: str) -> list[str]:
    return [c.get("name", "") for c in (pod.spec.get("spec") or {}).get(key) or []]


def _jobs_with_pods(run: RunEvidence) -> list[JobEvidence]:
    jobs = [job for job in run.jobs.values() if job.pod is not None]
    if not jobs:
        could_not_test("no-evidence", "the watch saw no pod for any job of the run")
    return jobs


@check(
    id="RC-ORD-001",
    claim="init containers finish before any regular container starts",
    remediation="look for pod_spec patches or FF_USE_ADVANCED_POD_SPEC_CONFIGURATION that turn "
    "init-permissions into a regular or native-sidecar container; the runner itself always creates it "
    "as an initContainer",
    area="ordering",
    probes=("ordering",),
)
def test_init_containers_finish_first(runnerconf_evidence: RunEvidence, job_evidence: JobLookup) -> None:
    job_evidence("ordering")
    seen: dict[str, dict[str, Any]] = {}
    for job in _jobs_with_pods(runnerconf_evidence):
        assert job.pod is not None
        inits = _spec_names(job.pod, "initContainers")
        if not inits:
            pytest.skip(
                f"pod {job.pod.name} has no init containers (legacy execution strategy); nothing to order"
            )
        times = container_times(job.pod)
        regular = _spec_names(job.pod, "containers")
        snapshot = _started_before_inits(job.pod, inits, regular)
        if snapshot is not None:
            fail(
                "RC-ORD-001",
                "no pod status with a regular container started before every init container terminated",
                snapshot,
                job=job,
            )
        unfinished = [n for n in inits if times.get(n, (None, None))[1] is None]
        if unfinished:
            fail(
                "RC-ORD-001",
                "every init container terminated",
                f"no finishedAt seen for {unfinished}",
                job=job,
            )
        last_init = max(inits, key=lambda n: times[n][1] or 0.0)
        started = {n: times.get(n, (None, None))[0] for n in regular}
        early = {n: t for n, t in started.items() if t is not None and t < (times[last_init][1] or 0.0)}
        if early:
            first = min(early, key=lambda n: early[n])
            fail(
                "RC-ORD-001",
                f"{last_init} finished ({_iso(times[last_init][1])}) before any regular container started",
                f"{first} started at {_iso(early[first])}",
                job=job,
                detail=f"regular containers started before the init containers finished: {sorted(early)}",
            )
        begun = {n: t for n, t in started.items() if t is not None}
        soonest = min(begun, key=lambda n: begun[n]) if begun else None
        seen[job.name] = {
            "init containers": inits,
            "last init finished": _iso(times[last_init][1]),
            "first regular started": None if soonest is None else _iso(begun[soonest]),
            "gap s": None if soonest is None else round(begun[soonest] - (times[last_init][1] or 0.0), 1),
        }
    gaps = {name: row["gap s"] for name, row in seen.items() if row["gap s"] is not None}
    closest = min(gaps, key=lambda n: gaps[n]) if gaps else None
    said = f"; closest: {closest} {gaps[closest]:.0f} s (1 s clock)" if closest is not None else ""
    held(
        "RC-ORD-001",
        "every init container terminated before any regular container started",
        seen,
        summary=f"init containers terminated before any regular container started in {len(seen)} pods{said}",
    )


def _line_time(job: JobEvidence, index: int) -> float | None:
    lines = job.trace_parsed.lines
    return lines[index].time if 0 <= index < len(lines) else None


@check(
    id="RC-ORD-002",
    claim="get_sources (helper) ends before step_script (build) starts",
    remediation="check FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY and any custom helper image or "
    "entrypoint; in attach mode the runner runs the stages one after another",
    area="ordering",
    probes=("ordering",),
)
def test_sources_before_script(runnerconf_evidence: RunEvidence, job_evidence: JobLookup) -> None:
    job_evidence("ordering")
    seen: dict[str, dict[str, Any]] = {}
    for job in runnerconf_evidence.jobs.values():
        trace = job.trace_parsed
        sources, script = trace.section("get_sources"), trace.section("step_script")
        if sources is None and script is None and job.name != "ordering":
            continue  # this job ended before its stages (some probes fail in preparation on purpose)
        if sources is None or script is None:
            fail(
                "RC-ORD-002",
                "sections get_sources and step_script in the trace",
                f"sections: {trace.section_names()}",
                job=job,
            )
        if sources.end is None or sources.end > script.start:
            fail(
                "RC-ORD-002",
                f"get_sources ends at or before step_script starts ({script.start})",
                f"get_sources ends at {sources.end}",
                job=job,
            )
        # Section markers have whole seconds; FF_TIMESTAMPS line times catch overlaps within one second.
        last_source = _line_time(job, sources.last_line)
        first_script = _line_time(job, script.first_line)
        if last_source is not None and first_script is not None and last_source > first_script:
            fail(
                "RC-ORD-002",
                "the last get_sources line before the first step_script line",
                f"get_sources printed at {_iso(last_source)}, "
                f"after step_script printed at {_iso(first_script)}",
                job=job,
            )
        # The finer measure when FF_TIMESTAMPS stamped the lines, else the sections' whole seconds.
        gap, measured = float(script.start - sources.end), "section markers"
        if last_source is not None and first_script is not None:
            gap, measured = round(first_script - last_source, 3), "line times"
        seen[job.name] = {
            "get_sources end": sources.end,
            "step_script start": script.start,
            "gap s": gap,
            "measured by": measured,
        }
        if measured != "line times" and has_behaviour("trace_timestamps_default", job):
            # The runner stamps lines by default from 18.7 (versions.TABLE): unstamped, its config turned it off.
            seen[job.name]["note"] = (
                "FF_TIMESTAMPS is on by default from 18.7; this runner's config turns it off"
            )
    closest = min(seen, key=lambda n: seen[n]["gap s"])
    held(
        "RC-ORD-002",
        "get_sources ends before step_script starts in every job",
        seen,
        summary=f"get_sources ended before step_script started in {len(seen)} jobs; closest: {closest}, "
        f"{seen[closest]['gap s']:.3f} s ({seen[closest]['measured by']})",
    )


@check(
    id="RC-ORD-003",
    claim="service containers are started before the script starts",
    remediation="services are regular containers of the job pod; check pod_spec patches, image pull times "
    "(pull_policy) and poll_timeout, which bound how long the runner waits for the pod",
    area="ordering",
    probes=("ordering",),
)
def test_services_started_before_script(job_evidence: JobLookup) -> None:
    job = job_evidence("ordering")
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name}", job=job)
    script = job.trace_parsed.section("step_script")
    if script is None:
        fail("RC-ORD-003", "a step_script section", f"sections: {job.trace_parsed.section_names()}", job=job)
    services = [n for n in _spec_names(job.pod, "containers") if n not in RUNNER_CONTAINERS]
    if not services:
        fail("RC-ORD-003", "a service container in the pod (the job declares one)", "none", job=job)
    times = container_times(job.pod)
    for name in services:
        started = times.get(name, (None, None))[0]
        # startedAt has whole seconds, like the section marker; equal counts as before.
        if started is None or int(started) > script.start:
            fail(
                "RC-ORD-003",
                f"service {name} started at or before step_script ({_iso(script.start)})",
                f"started {_iso(started)}",
                job=job,
            )
    ahead = {n: round(script.start - (times[n][0] or 0.0), 1) for n in services}
    held(
        "RC-ORD-003",
        f"services started at or before step_script ({_iso(script.start)})",
        {n: {"started": _iso(times[n][0]), "before step_script s": ahead[n]} for n in services},
        job=job,
        summary="; ".join(
            f"service {n} started {ahead[n]:.0f} s before step_script (1 s clock)" for n in services
        ),
    )


@check(
    id="RC-ORD-004",
    claim="with HEALTHCHECK_TCP_PORT the service accepts connections when the script starts",
    remediation="the runner waits for a service only when the service sets HEALTHCHECK_TCP_PORT in its own "
    "variables; check the runner version (>= 16.9), that the helper image has `gitlab-runner-helper "
    "health-check`, and FF_NETWORK_PER_BUILD-style network changes",
    area="ordering",
    probes=("ordering",),
)
def test_healthcheck_port_open_at_script_start(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("ordering")
    require_behaviour("service_health_check", job)  # before 16.9 the runner waits for no service
    record = probe_record(job, "ordering")
    if record.get("tool") == "none":
        pytest.skip(
            "the build image has neither python3 nor nc to test a TCP connection; set expect.images.build"
        )
    if record.get("immediate") is not True:
        late = record.get("connected_at")
        delay = "never within the probe's wait"
        if isinstance(late, int | float) and isinstance(record.get("script_started_at"), int | float):
            delay = f"{late - record['script_started_at']:.1f}s after the script started"
        fail(
            "RC-ORD-004",
            f"localhost:{record.get('port')} accepts a connection as the script starts",
            f"connection refused at script start; port opened {delay}",
            job=job,
        )
    held(
        "RC-ORD-004",
        f"localhost:{record.get('port')} accepts a connection as the script starts",
        {k: record.get(k) for k in ("port", "immediate", "tool", "connected_at", "script_started_at")},
        job=job,
        summary=f"localhost:{record.get('port')} accepted a connection as the script started "
        f"(tested with {record.get('tool')})",
    )
