"""The progress display: a CI log gets one plain line per change, a terminal one live row; -q/-qq/-v honoured."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyte
import pytest

from pytest_runnerconf.display import HEARTBEAT_S, ProgressDisplay
from pytest_runnerconf.progress import END, PAUSE, RunChanges, note

PIPELINE = {"id": 7, "web_url": "https://g.test/p/-/pipelines/7"}
PYTEST_ROW = "suites/test_a.py "  # what pytest has written on its row when the run starts
WIDTH = 100


@dataclass
class FakeOutput:
    """A terminal that pytest writes its row prefix to, as pytest does around the display."""

    written: list[str] = field(default_factory=list)
    resumed: int = 0
    columns: int = WIDTH

    def write(self, text: str) -> None:
        self.written.append(text)

    def resume(self) -> None:
        self.resumed += 1
        self.written.append("\n" + PYTEST_ROW)  # what pytest's own logstart writes

    def width(self) -> int:
        return self.columns

    @property
    def text(self) -> str:
        return PYTEST_ROW + "".join(self.written)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def _jobs(**statuses: str) -> dict[int, dict[str, Any]]:
    return {i: {"name": n, "status": s, "duration": 3.0} for i, (n, s) in enumerate(statuses.items(), 1)}


def _run(display: ProgressDisplay, *, quiet_s: float = 0.0, stop_early: bool = False) -> None:
    """A run of three jobs as the run reports it: a look every second, QUIET_S seconds where nothing changes."""
    clock = Clock()
    changes = RunChanges(display, "prod", clock=clock)
    display(note("runnerconf local: docker engine ready (0.1s)"))
    changes.preflight("https://g.test", "ci")

    def look(
        seconds: float, jobs: dict[int, dict[str, Any]], pods: dict[str, tuple[int, bool]], waiting=("", 0)
    ):
        end = clock.now + seconds
        while clock.now < end:
            clock.now += 1.0
            changes.look(PIPELINE, jobs, pods, waiting)

    look(2, _jobs(a="pending", b="pending", c="pending"), {})
    look(3, _jobs(a="running", b="running", c="pending"), {"pa": (1, False), "pb": (2, False)})
    look(quiet_s, _jobs(a="running", b="running", c="pending"), {"pa": (1, False), "pb": (2, False)})
    if stop_early:
        display(END)
        return
    look(
        2, _jobs(a="success", b="running", c="running"), {"pa": (1, True), "pb": (2, False), "pc": (3, False)}
    )
    done = _jobs(a="success", b="failed", c="success")
    look(2, done, {"pa": (1, True), "pb": (2, True), "pc": (3, False)}, ("pods", 1))
    look(2, done, {"pa": (1, True), "pb": (2, True), "pc": (3, True)}, ("secrets", 1))
    look(1, done, {"pa": (1, True), "pb": (2, True), "pc": (3, True)})
    changes.done(0)
    display(END)


def _log(verbosity: int = 0, **run: Any) -> tuple[FakeOutput, list[str]]:
    out = FakeOutput()
    _run(ProgressDisplay(out, live=False, verbosity=verbosity), **run)
    return out, out.text.split("\n")


def _screen(out: FakeOutput) -> list[str]:
    """What a terminal of WIDTH columns shows after the output."""
    screen = pyte.Screen(WIDTH, 60)
    stream = pyte.Stream(screen)
    stream.feed(out.text.replace("\n", "\r\n"))  # the tty's onlcr
    rows = [row.rstrip() for row in screen.display]
    while rows and not rows[-1]:
        rows.pop()
    return rows


# ---------------------------------------------------------------- the log form


def test_the_log_has_one_plain_line_per_change_and_every_job_end_once() -> None:
    out, lines = _log()
    assert "\r" not in out.text and "\x1b" not in out.text
    assert lines[0] == PYTEST_ROW  # pytest's row is left as it was
    assert lines[-1] == PYTEST_ROW and out.resumed == 1  # and pytest gets a row of its own again
    ours = lines[1:-1]
    assert [line for line, n in Counter(ours).items() if n > 1] == []
    assert ours == [
        "runnerconf local: docker engine ready (0.1s)",
        "runnerconf prod: [    0s] preflight: GitLab https://g.test, namespace ci",
        "runnerconf prod: [    1s] pipeline #7 created with 3 jobs https://g.test/p/-/pipelines/7",
        "runnerconf prod: [    3s] job a started",
        "runnerconf prod: [    3s] job b started",
        "runnerconf prod: [    6s] job a finished: success (3.0s)",
        "runnerconf prod: [    6s] job c started",
        "runnerconf prod: [    8s] job b finished: failed (3.0s)",
        "runnerconf prod: [    8s] job c finished: success (3.0s)",
        "runnerconf prod: [    8s] all 3 jobs finished (2 success, 1 failed); waiting for 1 pod to be deleted",
        "runnerconf prod: [   10s] waiting for 1 per-job Secret to be deleted",
        "runnerconf prod: [   12s] done: 3 jobs (2 success, 1 failed), 3 of 3 pods deleted",
    ]
    for job in "abc":
        assert sum(1 for line in ours if f"job {job} finished" in line) == 1


def test_a_quiet_stretch_gets_one_heartbeat_per_30_seconds() -> None:
    _, lines = _log(quiet_s=100)
    beats = [line for line in lines if "still running" in line]
    assert len(beats) == 3, beats
    assert beats[0] == (
        "runnerconf prod: [   33s] still running: pipeline #7: 0/3 jobs finished, running: a, b, pods 0/2 deleted"
    )
    times = [_seconds(line) for line in lines if line.startswith("runnerconf prod")]
    assert all(b - a <= HEARTBEAT_S + 1 for a, b in itertools.pairwise(times))  # never silent long
    at = [_seconds(b) for b in beats]
    assert all(later - earlier >= HEARTBEAT_S for earlier, later in itertools.pairwise(at))


def _seconds(line: str) -> int:
    found = re.search(r"\[ *(?:(\d+)m)?(\d+)s\]", line)
    assert found, line
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def test_quiet_shows_the_pipeline_heartbeats_and_the_end_only() -> None:
    _, lines = _log(verbosity=-1, quiet_s=40)
    ours = [line for line in lines if line.startswith("runnerconf")]
    assert [re.sub(r"\[ *\d+s\] ", "", line).split(":")[1].split()[0] for line in ours] == [
        "pipeline",
        "still",
        "done",
    ]


def test_very_quiet_shows_nothing() -> None:
    out, _ = _log(verbosity=-2)
    assert out.written == [] and out.resumed == 0


def test_verbose_adds_the_pods() -> None:
    _, lines = _log(verbosity=1)
    assert "runnerconf prod: [    3s] pod pa created (job a)" in lines
    assert "runnerconf prod: [   10s] pod pc deleted (job c)" in lines
    assert len(lines[1:-1]) == len(set(lines[1:-1]))


def test_a_stopped_run_ends_on_its_last_state_and_leaves_the_row_to_pytest() -> None:
    out, lines = _log(stop_early=True)
    assert lines[-1] == (
        "runnerconf prod: [    5s] stopped: pipeline #7: 0/3 jobs finished, running: a, b, pods 0/2 deleted"
    )
    assert out.resumed == 0  # no result follows: pytest ends the row before its message


# ---------------------------------------------------------------- the live form


def _live(verbosity: int = 0, **run: Any) -> FakeOutput:
    out = FakeOutput()
    _run(ProgressDisplay(out, live=True, verbosity=verbosity), **run)
    return out


def test_the_live_row_ends_as_the_done_line_and_pytest_goes_on_below() -> None:
    out = _live(quiet_s=40)
    assert "\r" in out.text  # rewritten in place
    assert _screen(out) == [
        PYTEST_ROW.rstrip(),
        "runnerconf prod: [   52s] done: 3 jobs (2 success, 1 failed), 3 of 3 pods deleted",
        PYTEST_ROW.rstrip(),
    ]
    assert out.resumed == 1


def test_the_live_row_is_only_rewritten_when_its_text_changes_and_never_wraps() -> None:
    out = FakeOutput(columns=40)
    _run(ProgressDisplay(out, live=True, verbosity=0), quiet_s=5)
    rows = [chunk.split("\r")[-1].lstrip("\n").removesuffix("\x1b[K") for chunk in out.written]
    live = [row for row in rows if "done:" not in row]  # the done line stays, and may wrap
    assert len(live) > 5 and all(len(row) <= 39 for row in live)
    assert all(a != b for a, b in itertools.pairwise(rows))


def test_verbose_live_keeps_the_log_lines_above_the_live_row() -> None:
    out = _live(verbosity=1)
    rows = _screen(out)
    assert rows[0] == PYTEST_ROW.rstrip() and rows[-1] == PYTEST_ROW.rstrip()
    _, log = _log(verbosity=1)
    assert rows[1:-1] == log[1:-1]  # the same lines as the log, in the same order


@pytest.mark.parametrize("verbosity", [-1, 0])
def test_a_stopped_live_run_keeps_its_last_state(verbosity: int) -> None:
    out = _live(verbosity=verbosity, stop_early=True)
    rows = _screen(out)
    assert rows == [
        PYTEST_ROW.rstrip(),
        "runnerconf prod: [    5s] stopped: pipeline #7: 0/3 jobs finished, running: a, b, pods 0/2 deleted",
    ]
    assert out.resumed == 0


@pytest.mark.parametrize("live", [False, True])
def test_a_pause_hands_the_row_back_to_pytest_and_later_events_open_a_new_row(live: bool) -> None:
    """Several clusters: one cluster's checks run while another's run goes on (MultiSession holds its events)."""
    out = FakeOutput()
    display = ProgressDisplay(out, live=live, verbosity=0)
    display(note("runnerconf local: docker engine ready (0.1s)"))
    display(PAUSE)
    assert out.resumed == 1
    # pytest's result letters go on a row of their own
    assert _screen(out)[-2:] == ["runnerconf local: docker engine ready (0.1s)", PYTEST_ROW.rstrip()]
    display(PAUSE)  # nothing of ours since: nothing to hand back
    assert out.resumed == 1
    display(note("runnerconf local: another line"))
    assert _screen(out)[-2:] == [PYTEST_ROW.rstrip(), "runnerconf local: another line"]
