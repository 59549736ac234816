"""Trace parsing over hand-written samples of several runner versions (runner-facts.md section 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pytest_runnerconf.errors import ProbeProtocolError
from pytest_runnerconf.trace import Trace, parse_trace, strip_timestamps

TRACES = Path(__file__).resolve().parent / "data" / "traces"
POD = "runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4"
BASE = 1795392000  # 2026-11-23T00:00:00Z, the samples' epoch
DNS = {
    "nameservers": ["10.0.0.2"],
    "search": ["ci.svc.cluster.local", "svc.cluster.local", "cluster.local"],
    "options": ["ndots:2", "timeout:2"],
}
ORDERING = {"probe": "ordering", "t": 1795392010.5, "container": "build"}


def sample(name: str) -> Trace:
    return parse_trace((TRACES / name).read_bytes())


def lines_of(trace: Trace, section: str) -> list[str]:
    return trace.section_text(section)


def test_17_11_without_timestamps() -> None:
    trace = sample("runner-17.11-success.txt")
    assert trace.runner_version == "17.11.0"
    assert trace.section_names() == [
        "prepare_executor",
        "prepare_script",
        "get_sources",
        "step_script",
        "cleanup_file_variables",
    ]
    assert all(line.time is None and line.stream is None for line in trace.lines)
    assert "\x1b" not in trace.text and "section_" not in trace.text and "\r" not in trace.text
    prepare = trace.section("prepare_script")
    assert prepare is not None and (prepare.start, prepare.end, prepare.duration) == (BASE + 1, BASE + 4, 3)
    assert lines_of(trace, "prepare_executor")[0] == 'Preparing the "kubernetes" executor'
    # Output that ended without a newline, followed by the end marker, stays in step_script; the next
    # section's header on the same raw line becomes its own line.
    assert lines_of(trace, "step_script")[-1] == "probe done"
    assert lines_of(trace, "cleanup_file_variables") == [
        "Cleaning up project directory and file based variables"
    ]
    assert trace.pod_name == POD
    assert trace.records_for("ordering") == [ORDERING]
    assert trace.records_for("aliases") == [
        {"hosts": ["127.0.0.1 localhost", "127.0.0.1 svc-0 db"], "ok": True}
    ]
    assert trace.records_for("dns") == []
    # The echoed `$ printf 'RUNNERCONF aliases ...'` line is not a record.
    assert [r.probe for r in trace.records] == ["ordering", "aliases"]
    assert (trace.final, trace.failure, trace.system_failure, trace.succeeded) == (
        "Job succeeded",
        None,
        False,
        True,
    )


def test_18_11_with_timestamps_continuations_and_collapsed_sections() -> None:
    trace = sample("runner-18.11-timestamps-success.txt")
    assert trace.runner_version == "18.11.4"
    assert trace.lines[0].time == pytest.approx(BASE + 0.1)
    assert trace.lines[0].stream == "00O"
    step = trace.section("section_script_step_0")
    assert step is not None and step.options == {"hide_duration": "true", "collapsed": "true"}
    assert lines_of(trace, "section_script_step_0") == [
        "$ for p in ordering dns; do",
        "  sh fixtures/probes/$p.sh",
        "done",
    ]
    assert trace.section_names().index("get_sources") < trace.section_names().index("step_script")
    # A record split over a '+' continuation line is joined before decoding; its time is its first chunk's.
    dns = [r for r in trace.records if r.probe == "dns"]
    assert [r.data for r in dns] == [DNS]
    assert dns[0].time == pytest.approx(BASE + 6.5)
    assert trace.lines[dns[0].line].stream == "01O"
    # The section_end that arrived as a continuation still closes step_script after "probe done".
    assert lines_of(trace, "step_script")[-1] == "probe done"
    assert trace.section("step_script").end == BASE + 6  # type: ignore[union-attr]
    # stderr keeps its stream tag; a carriage-return progress line shows only its last state.
    git_init = next(line for line in trace.lines if line.text.startswith("Initialized empty Git"))
    assert git_init.stream == "01E"
    assert "Receiving objects: 100% (2/2), done." in lines_of(trace, "get_sources")
    assert not any("50%" in line.text for line in trace.lines)
    assert trace.succeeded and trace.pod_name == POD


def test_18_11_oom_is_a_system_failure() -> None:
    trace = sample("runner-18.11-timestamps-oom-system-failure.txt")
    assert trace.system_failure is True
    assert trace.failure == "Error in container build: exit code: 137, reason: 'OOMKilled'"
    assert trace.final == f"ERROR: Job failed (system failure): {trace.failure}"
    assert trace.records_for("oom") == [{"rss_kb": 524288, "note": "allocating past the limit"}]
    assert trace.records[0].time == pytest.approx(BASE + 3.0)
    assert not trace.succeeded


def test_18_3_process_oom_is_a_script_failure() -> None:
    trace = sample("runner-18.3-oom-process.txt")
    assert trace.runner_version == "18.3.0"
    assert (trace.failure, trace.system_failure) == ("command terminated with exit code 137", False)
    upload = trace.section("upload_artifacts_on_failure")
    assert upload is not None and upload.options == {"collapsed": "true"}
    assert lines_of(trace, "step_script")[-1] == "Killed"


def test_bad_record_names_its_line() -> None:
    with pytest.raises(ProbeProtocolError) as info:
        sample("runner-18.11-bad-record.txt")
    message = str(info.value)
    assert message.startswith("trace line 6: the RUNNERCONF record of probe 'dns' does not decode")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("RUNNERCONF dns", "must be 'RUNNERCONF <probe> <base64 json>'"),
        ("RUNNERCONF dns WzEsMl0=", "holds list, not a JSON object"),  # base64 of [1,2]
        ("RUNNERCONF dns bm90IGpzb24=", "does not decode"),  # base64 of "not json"
    ],
)
def test_malformed_records(line: str, expected: str) -> None:
    with pytest.raises(ProbeProtocolError, match=expected):
        parse_trace(f"Running with gitlab-runner 18.11.4 (5b1ba4d9)\n{line}\n")


def test_echoed_command_and_prose_are_not_records() -> None:
    trace = parse_trace(
        "$ echo RUNNERCONF dns not-json\nsaying RUNNERCONF in prose\n\x1b[32;1m$ rc_emit x\x1b[0;m\n"
    )
    assert trace.records == []


def test_strip_timestamps_joins_continuations_and_keeps_the_rest() -> None:
    raw = (
        "2026-11-23T00:00:01.123456Z 01O hello \x1b[1mwor\n"
        "2026-11-23T00:00:01.223456Z 01O+ld\x1b[0m\n"
        "2026-11-23T00:00:02.000000Z 00E second\n"
        "no prefix here\n"
    )
    assert strip_timestamps(raw) == "hello \x1b[1mworld\x1b[0m\nsecond\nno prefix here\n"
    trace = parse_trace(raw)
    assert [line.text for line in trace.lines] == ["hello world", "second", "no prefix here"]
    expected = datetime(2026, 11, 23, 0, 0, 1, 123456, tzinfo=UTC).timestamp()
    assert trace.lines[0].time == pytest.approx(expected)
    assert [line.stream for line in trace.lines] == ["01O", "00E", None]


def test_unclosed_section_runs_to_the_end_and_markers_need_their_escape() -> None:
    raw = (
        "section_start:100:step_script\r\x1b[0KExecuting\n"
        "$ echo section_end:101:step_script\n"  # echoed text without \r\x1b[0K is not a marker
        "section_end:101:step_script\n"
        "ERROR: Job failed: canceled\n"
    )
    trace = parse_trace(raw)
    section = trace.section("step_script")
    assert section is not None
    assert (section.end, section.first_line, section.last_line) == (None, 0, 3)
    assert trace.failure == "canceled" and not trace.system_failure


def test_empty_section_and_bytes_input() -> None:
    trace = parse_trace(b"a\nsection_start:5:restore_cache\r\x1b[0Ksection_end:5:restore_cache\r\x1b[0K\nb\n")
    section = trace.section("restore_cache")
    assert section is not None and section.duration == 0
    assert trace.section_text("restore_cache") == []
    assert trace.text == "a\nb"
    assert parse_trace("").lines == []


def test_final_line_and_revision() -> None:
    trace = sample("runner-18.3-oom-process.txt")
    assert trace.runner_revision == "9ba718cd"
    assert trace.final_line is not None and trace.lines[trace.final_line].text == trace.final
    # Runners before 18.6 build the failure message with fmt.Sprintln: the colour reset lands on a line
    # of its own after the final line, which stays the final line.
    cancel = sample("runner-17.11-cancel.txt")
    assert cancel.final == "ERROR: Job failed: canceled"
    assert cancel.final_line == len(cancel.lines) - 2 and cancel.lines[-1].text == ""
    assert parse_trace("no header\n").final_line is None
