"""RC-LOG-002..004 over hand-written evidence, the output-limit cut in traces, and the emulator's trace limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence, RunEvidence
from pytest_runnerconf.local.strategies import user_stage
from pytest_runnerconf.local.tracewriter import LimitedSink, limit_message
from pytest_runnerconf.trace import LimitCut, output_limit_cut
from pytest_runnerconf.verdict import ConformanceFailure
from tests.test_catalogue import PROFILE, _load, lookup, probe_record

logs = _load("test_logs")
TRACES = Path(__file__).parent / "data" / "traces"
CUT_SAMPLE = (TRACES / "runner-18.11-timestamps-output-limit.txt").read_bytes().decode()
RUN = RunEvidence(run_id="r1")
STEP = "section_start:1795392002:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting step_script\x1b[0;m\n"
STEP_END = "section_end:1795392030:step_script\r\x1b[0K\n"
AFTER = "section_start:1795392030:after_script\r\x1b[0K\x1b[0K\x1b[36;1mRunning after_script\x1b[0;m\n"
AFTER_END = "section_end:1795392031:after_script\r\x1b[0K\n"


def fails(call: Callable[[], Any], *fragments: str) -> None:
    """CALL fails its check; each fragment is in the failure's message or in its summary (the report's cell)."""
    with pytest.raises(ConformanceFailure) as info:
        call()
    said = f"{info.value}\n{info.value.expectation.summary}"
    for fragment in fragments:
        assert fragment in said, said


def burst_line(i: int, n: int) -> str:
    head = f"runnerconf-burst {i:07d}/{n:07d} "
    return head + "x" * (99 - len(head))


def burst_job(trace: str, lines: int = 20, status: str = "success") -> JobEvidence:
    return JobEvidence(
        name="logs-burst",
        job={"status": status},
        trace=trace,
        records={"logs-burst": [{"run_id": "r1", "lines": lines, "line_bytes": 100}]},
    )


def run_burst(job: JobEvidence, limit_kb: int) -> None:
    profile = replace(PROFILE, expect=replace(PROFILE.expect, output_limit_kb=limit_kb))
    logs.test_output_burst_whole_or_cut_at_the_limit(lookup(job), probe_record, profile)


# ---------------------------------------------------------------- the cut in a trace


def test_the_runners_cut_is_found_at_its_byte() -> None:
    assert output_limit_cut(CUT_SAMPLE) == LimitCut(limit=1024, offset=1024)


def test_a_trace_that_only_quotes_the_message_is_not_cut() -> None:
    # A script that echoes the wording has a timestamp prefix before it, not the runner's bare newline.
    quoted = "2026-11-23T00:00:02.000000Z 01O Job's log exceeded limit of 1024 bytes.\n"
    assert output_limit_cut(quoted) is None


# ---------------------------------------------------------------- RC-LOG-003


def test_burst_cut_exactly_at_the_expected_limit_passes() -> None:
    run_burst(burst_job(CUT_SAMPLE), limit_kb=1)


def test_burst_cut_at_another_limit_fails_naming_both() -> None:
    fails(lambda: run_burst(burst_job(CUT_SAMPLE), limit_kb=4096), "4194304", "1024")


def test_burst_lost_without_the_message_fails() -> None:
    silent = CUT_SAMPLE[: CUT_SAMPLE.index("\n\x1b[33;1mJob's log")]
    fails(lambda: run_burst(burst_job(silent), limit_kb=1), "lost", 'no "Job\'s log exceeded limit"')


def test_burst_whole_and_in_order_passes_and_out_of_order_fails() -> None:
    body = [burst_line(i, 5) for i in range(1, 6)]
    run_burst(burst_job(STEP + "\n".join(body) + "\n" + STEP_END, lines=5), limit_kb=4096)
    swapped = [body[1], body[0], *body[2:]]
    fails(
        lambda: run_burst(burst_job(STEP + "\n".join(swapped) + "\n" + STEP_END, lines=5), limit_kb=4096),
        "out of order",
    )


def test_a_cut_that_is_not_at_the_stated_limit_fails() -> None:
    # The message says 1024 bytes but follows 1000 of them: lines were lost before the runner's limit.
    early = CUT_SAMPLE[:1000] + CUT_SAMPLE[1024:]
    assert output_limit_cut(early) == LimitCut(limit=1024, offset=1000)
    fails(lambda: run_burst(burst_job(early), limit_kb=1), "cut at byte 1000 saying 1024 bytes")


def test_a_failed_burst_job_fails() -> None:
    fails(lambda: run_burst(burst_job(CUT_SAMPLE, status="failed"), limit_kb=1), "job failed")


# ---------------------------------------------------------------- RC-LOG-002 and RC-LOG-004


def silent_job(
    status: str = "failed", reason: str = "script_failure", marker: bool = True, after: str | None = "failed"
) -> JobEvidence:
    lines = ["runnerconf-silent start 1795392003"]
    if marker:
        lines.append("runnerconf-silent marker r1 1795392023")
    trace = STEP + "\n".join(lines) + "\n" + STEP_END
    if after is not None:
        trace += AFTER + f"runnerconf-after-script status={after} run=r1\n" + AFTER_END
    return JobEvidence(name="logs-silent", job={"status": status, "failure_reason": reason}, trace=trace)


def silent(job: JobEvidence, silent_s: float = 20.0) -> None:
    profile = replace(PROFILE, expect=replace(PROFILE.expect, silent_step_s=silent_s))
    logs.test_silent_step_keeps_its_end(lookup(job), profile, RUN)


def test_a_silent_step_that_fails_with_its_marker_passes() -> None:
    silent(silent_job())


def test_a_silent_step_reported_as_success_fails() -> None:
    fails(lambda: silent(silent_job(status="success", reason="", marker=False)), "ended success", "without")


def test_a_silence_shorter_than_asked_fails() -> None:
    fails(lambda: silent(silent_job(), silent_s=330.0), "silent for 20 s only, not 330 s")


def test_a_marker_of_another_run_does_not_count() -> None:
    other = silent_job()
    other.trace = other.trace.replace("marker r1", "marker r0")
    fails(lambda: silent(other), "without the line printed after the silence")


@pytest.mark.parametrize(
    ("after", "fragment"), [(None, "after_script never printed"), ("success", "CI_JOB_STATUS=success")]
)
def test_after_script_must_run_and_see_the_failure(after: str | None, fragment: str) -> None:
    logs.test_after_script_runs_after_failure(lookup(silent_job()), RUN)
    fails(lambda: logs.test_after_script_runs_after_failure(lookup(silent_job(after=after)), RUN), fragment)


# ---------------------------------------------------------------- the emulator's limitWriter


def sink(limit: int, *, announce: bool = True) -> tuple[LimitedSink, list[bytes]]:
    written: list[bytes] = []
    return LimitedSink(written.append, limit, announce=announce), written


def test_emulated_trace_keeps_exactly_limit_bytes_then_says_so_once() -> None:
    limited, written = sink(50)
    for chunk in (b"a" * 30 + b"\n", b"b" * 30 + b"\n", b"c\n", b"d\n"):
        limited(chunk)
    raw = b"".join(written)
    assert raw == b"a" * 30 + b"\n" + b"b" * 19 + limit_message(50)
    assert output_limit_cut(raw.decode()) == LimitCut(50, 50)


def test_the_silent_truncation_fault_cuts_without_the_message() -> None:
    limited, written = sink(50, announce=False)
    limited(b"x" * 80)
    assert b"".join(written) == b"x" * 50


@pytest.mark.parametrize(
    ("stage", "user"),
    [("step_script", True), ("step_release", True), ("build_script", True), ("get_sources", False),
     ("after_script", False), ("prepare_script", False)],
)  # fmt: skip
def test_only_the_jobs_own_steps_are_cut_by_the_silent_stream_fault(stage: str, user: bool) -> None:
    assert user_stage(stage) is user
