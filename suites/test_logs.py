"""RC-LOG: the build container's output reaches the job log whole and in order, and the job ends with its script."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pytest_runnerconf import JobEvidence, Profile, RunEvidence, check, fail, held

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]
_LINE = re.compile(r"^runnerconf-logs (\d+)/(\d+) (\S+)$")
_SILENT_START = re.compile(r"^runnerconf-silent start (\d+)$")
_SILENT_MARKER = re.compile(r"^runnerconf-silent marker (\S+) (\d+)$")
_AFTER_SCRIPT = re.compile(r"^runnerconf-after-script status=(\S*) run=(\S*)$")
_BURST = re.compile(r"^runnerconf-burst (\d+)/(\d+) ")


@check(
    id="RC-LOG-001",
    claim="what the build container prints reaches the job log whole and in order, and the job ends when its script ends",
    remediation="in attach mode the runner reads the output and the script's exit status back from the pod's "
    "logs emptyDir (/logs-<project>-<job>/output.log, through the helper): check that the logs volume is one "
    "emptyDir shared by every container (pod_spec patches, webhooks, volume plugins), that the helper can "
    "read what the build writes (chmod 777 by init-permissions, security contexts), and the node's disk",
    area="logs",
    probes=("logs",),
    judges_failures=("logs",),  # a job that outlives its script runs into its timeout: that is the failure
)
def test_build_output_reaches_the_job_log(job_evidence: JobLookup) -> None:
    job = job_evidence("logs")
    trace = job.trace_parsed
    seen = [m for m in (_LINE.match(line.strip()) for line in trace.section_text("step_script")) if m]
    numbers = [int(m.group(1)) for m in seen]
    want = list(range(1, int(seen[0].group(2)) + 1)) if seen else list(range(1, 201))
    if job.status != "success" or numbers != want:
        missing = sorted(set(want) - set(numbers))
        observed = (
            f"job {job.status or 'unknown status'} ({trace.failure or trace.final or 'no final line'}); "
            f"{len(numbers)} of {len(want)} lines in the job log"
            + (f", missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "")
            + ("" if numbers == sorted(numbers) else ", out of order")
        )
        fail("RC-LOG-001", f"job success with lines 1..{len(want)} in order", observed, job=job)
    long_lines = [m.group(3) for m in seen if int(m.group(1)) == 100]
    if not long_lines or len(long_lines[0]) != 3600:
        fail(
            "RC-LOG-001",
            "line 100 whole (3600 characters)",
            f"{len(long_lines[0]) if long_lines else 0} characters",
            job=job,
        )
    held(
        "RC-LOG-001",
        {"job": "success", "lines": len(want), "line 100 characters": 3600},
        {"job": job.status, "lines in order": len(numbers), "line 100 characters": len(long_lines[0])},
        job=job,
        summary=f"{len(numbers)} of {len(want)} lines in order, line 100 whole ({len(long_lines[0])} "
        f"characters), job {job.status}",
    )


def _silent_lines(job: JobEvidence, run_id: str) -> tuple[int | None, int | None]:
    """The silent step's start and marker clocks (epoch seconds), None for a line the log lacks."""
    start = marker = None
    for line in job.trace_parsed.section_text("step_script"):
        if m := _SILENT_START.match(line.strip()):
            start = int(m.group(1))
        elif (m := _SILENT_MARKER.match(line.strip())) and m.group(1) == run_id:
            marker = int(m.group(2))
    return start, marker


@check(
    id="RC-LOG-002",
    claim="a step that stays silent for expect.silent_step_s and then fails makes the job fail, with what "
    "it printed after the silence in the log",
    remediation="the runner follows a step through a long-lived pods/attach (or exec) stream and a "
    "read-logs exec in the helper; something that cuts idle streams (a load balancer's or API server "
    "proxy's idle timeout, often 300 s) must not end the step: raise that idle timeout above your longest "
    "silent step, keep the default attach strategy (FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY off), and "
    "upgrade runners that report a cut stream as success",
    area="logs",
    probes=("logs-silent",),
    judges_failures=("logs-silent",),  # its script fails on purpose: the failure is what is judged
)
def test_silent_step_keeps_its_end(
    job_evidence: JobLookup, runnerconf_profile: Profile, runnerconf_evidence: RunEvidence
) -> None:
    job = job_evidence("logs-silent")
    wanted_s = runnerconf_profile.expect.silent_step_s
    start, marker = _silent_lines(job, runnerconf_evidence.run_id)
    silence = None if start is None or marker is None else marker - start
    expected = {
        "job": "failed",
        "failure_reason": "script_failure",
        "marker": "in the log",
        "silence_s": wanted_s,
    }
    observed = {
        "job": job.status,
        "failure_reason": job.job.get("failure_reason"),
        "marker": "in the log" if marker is not None else "missing",
        "silence_s": silence,
    }
    if job.status != "failed" or job.job.get("failure_reason") != "script_failure" or marker is None:
        fail(
            "RC-LOG-002",
            expected,
            observed,
            job=job,
            summary=f"during a step meant to stay silent for {wanted_s:g} s the job ended {job.status or 'unknown'}"
            + ("" if marker is not None else ", without the line printed after the silence"),
        )
    if silence is not None and silence < wanted_s - 1:
        fail(
            "RC-LOG-002",
            expected,
            observed,
            job=job,
            summary=f"the step was silent for {silence} s only, not {wanted_s:g} s",
        )
    held(
        "RC-LOG-002",
        expected,
        observed,
        job=job,
        summary=f"silent for {silence if silence is not None else '?'} s, then the marker; job failed "
        "(script_failure)",
    )


@check(
    id="RC-LOG-003",
    claim="a burst of output arrives in the job log whole and in order, or is cut exactly at the runner's "
    "output_limit with the runner's message",
    remediation="the runner keeps [[runners]] output_limit kilobytes of trace (4096 when unset) and says "
    '"Job\'s log exceeded limit" where it stops; lines lost without that message point at the log path '
    "(the logs emptyDir, the helper's read-logs, the API server's stream limits) or at output_limit differing "
    "from expect.output_limit_kb",
    area="logs",
    probes=("logs-burst",),
)
def test_output_burst_whole_or_cut_at_the_limit(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    job = job_evidence("logs-burst")
    record = probe_record(job, "logs-burst")
    count = int(record.get("lines") or 0)
    numbers = [
        int(m.group(1)) for m in (_BURST.match(t) for t in job.trace_parsed.section_text("step_script")) if m
    ]
    cut = job.output_limit_cut
    limit = runnerconf_profile.expect.output_limit_kb * 1024
    in_order = numbers == list(range(1, len(numbers) + 1))
    observed: dict[str, Any] = {
        "job": job.status,
        "lines": len(numbers),
        "in order": in_order,
        "cut": None if cut is None else {"stated limit": cut.limit, "at byte": cut.offset},
    }
    if job.status != "success":
        fail(
            "RC-LOG-003",
            {"job": "success"},
            observed,
            job=job,
            summary=f"job {job.status or 'unknown'} after printing {len(numbers)} of {count} lines",
        )
    if cut is None:
        expected: dict[str, Any] = {"lines": count, "in order": True}
        if numbers != list(range(1, count + 1)):
            missing = count - len(set(numbers))
            fail(
                "RC-LOG-003",
                expected,
                observed,
                job=job,
                summary=f"{len(numbers)} of {count} lines{'' if in_order else ' out of order'}"
                + (f", {missing} lost" if missing > 0 else "")
                + ' and no "Job\'s log exceeded limit" message',
            )
        held(
            "RC-LOG-003",
            expected,
            observed,
            job=job,
            summary=f"all {count} lines ({count * 100 // 1024} KiB) in order",
        )
        return
    expected = {"lines": "a prefix 1..k, in order", "cut": {"stated limit": limit, "at byte": limit}}
    if cut.limit != limit or cut.offset != cut.limit or not in_order or not numbers:
        fail(
            "RC-LOG-003",
            expected,
            observed,
            job=job,
            summary=f"cut at byte {cut.offset} saying {cut.limit} bytes (expect.output_limit_kb = "
            f"{runnerconf_profile.expect.output_limit_kb}: {limit} bytes)"
            + ("" if in_order and numbers else f"; {len(numbers)} lines, not in order"),
        )
    held(
        "RC-LOG-003",
        expected,
        observed,
        job=job,
        summary=f"cut exactly at {limit} bytes with the runner's message, after line {numbers[-1]} of {count} "
        "in order; the job went on",
    )


@check(
    id="RC-LOG-004",
    claim="after_script runs after a failed script and sees CI_JOB_STATUS=failed",
    remediation="after_script runs in its own shell in the build container once the script ended, however "
    "it ended; a missing after_script section means the runner lost the pod or the stream (see RC-LOG-002); "
    "a status other than failed means the runner took the failed step for a success",
    area="logs",
    probes=("logs-silent",),
    judges_failures=("logs-silent",),
)
def test_after_script_runs_after_failure(job_evidence: JobLookup, runnerconf_evidence: RunEvidence) -> None:
    job = job_evidence("logs-silent")
    run_id = runnerconf_evidence.run_id
    seen = [
        m.group(1)
        for m in (_AFTER_SCRIPT.match(t.strip()) for t in job.trace_parsed.section_text("after_script"))
        if m and m.group(2) == run_id
    ]
    expected = {"after_script": "ran", "CI_JOB_STATUS": "failed"}
    observed = {"after_script": "ran" if seen else "no output", "CI_JOB_STATUS": seen[0] if seen else None}
    if seen != ["failed"]:
        fail(
            "RC-LOG-004",
            expected,
            observed,
            job=job,
            summary="after_script never printed" if not seen else f"after_script saw CI_JOB_STATUS={seen[0]}",
        )
    held(
        "RC-LOG-004",
        expected,
        observed,
        job=job,
        summary="after_script ran after the failure with CI_JOB_STATUS=failed",
    )
