"""Progress on the terminal: one live line on a terminal; in a CI log one plain line per change of state."""

from __future__ import annotations

from typing import Protocol

from pytest_runnerconf.progress import END, ProgressEvent, RunState

HEARTBEAT_S = 30.0  # a log gets at most one "still running" line this often while nothing changes
STATUS_ORDER = ("success", "failed", "canceled", "skipped", "manual")
CLEAR = "\x1b[K"  # erase to the end of the row (only ever written to a terminal)
# The least verbosity (-q = -1, -v = 1) at which the log form shows an event; others are never lines.
LEVEL = {
    "pipeline": -1,
    "done": -1,
    "note": 0,
    "preflight": 0,
    "job-started": 0,
    "job-finished": 0,
    "waiting": 0,
    "pod-created": 1,
    "pod-deleted": 1,
}


class Output(Protocol):
    """Where progress goes: pytest's terminal, with pytest's own row open when the display starts."""

    def write(self, text: str) -> None:
        """Write TEXT as it is (the one place progress text leaves the process)."""

    def resume(self) -> None:
        """Hand the terminal back: pytest goes on on a row of its own (its prefix printed again)."""

    def width(self) -> int:
        """Columns of the terminal."""


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _statuses(state: RunState) -> str:
    order = {status: i for i, status in enumerate(STATUS_ORDER)}
    counts = sorted(state.finished, key=lambda pair: (order.get(pair[0], len(order)), pair[0]))
    return ", ".join(f"{count} {status}" for status, count in counts) or "none finished"


def _names(names: tuple[str, ...], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _waiting(state: RunState) -> str:
    what = "pod" if state.waiting == "pods" else "per-job Secret"
    return f"waiting for {_plural(state.waiting_count, what)} to be deleted"


def describe(event: ProgressEvent) -> str:
    """The text of EVENT's line (without the cluster and time); '' for ticks and the end."""
    state = event.state
    match event.kind:
        case "note":
            return event.text
        case "preflight":
            return f"preflight: GitLab {event.url}, namespace {event.name}"
        case "pipeline":
            jobs = f" with {_plural(event.count, 'job')}" if event.count else ""
            return f"pipeline #{event.number} created{jobs} {event.url}".rstrip()
        case "job-started":
            return f"job {event.name} started"
        case "job-finished":
            took = f" ({event.seconds:.1f}s)" if event.seconds is not None else ""
            return f"job {event.name} finished: {event.status}{took}"
        case "pod-created":
            return f"pod {event.name} created (job {event.job})"
        case "pod-deleted":
            return f"pod {event.name} deleted (job {event.job})"
        case "waiting":
            if event.name == "pods":
                return f"all {_plural(state.jobs, 'job')} finished ({_statuses(state)}); {_waiting(state)}"
            return _waiting(state)
        case "done":
            left = (
                f"; {_plural(event.count, 'pod')} still there at the cleanup deadline" if event.count else ""
            )
            return (
                f"done: {_plural(state.jobs, 'job')} ({_statuses(state)}), "
                f"{state.pods_deleted} of {_plural(state.pods_seen, 'pod')} deleted{left}"
            )
    return ""


def summary(state: RunState) -> str:
    """The run's state in a few words: the live line, heartbeats, and the last line of a stopped run."""
    if state.waiting:
        return f"pipeline #{state.pipeline}: all {_plural(state.jobs, 'job')} finished, {_waiting(state)}"
    running = f", running: {_names(state.running)}" if state.running else ""
    pods = f", pods {state.pods_deleted}/{state.pods_seen} deleted" if state.pods_seen else ""
    return f"pipeline #{state.pipeline}: {state.jobs_finished}/{state.jobs} jobs finished{running}{pods}"


class ProgressDisplay:
    """Renders progress events: live (a terminal) or as a log; honours pytest's -q/-qq/-v.

    Live: one row rewritten in place; with -v the log's lines stay above it. At the end the row keeps the
    run's last line ("done: ..."). Log: one line per change of state with the time since the run started,
    at most one heartbeat per HEARTBEAT_S, no carriage returns, never the same line twice in a row. -qq shows
    nothing; -q only the pipeline, heartbeats and the end.
    """

    def __init__(self, out: Output, *, live: bool, verbosity: int) -> None:
        self.out = out
        self.live = live
        self.verbosity = verbosity
        self._row = ""  # "" pytest's row, "live" our live row, "line" a line of ours (cursor at its end)
        self._last = ""  # the last line written
        self._last_at = 0.0  # when (run time) the log last got a line
        self._headline = ""  # the live line's text before the pipeline exists
        self._event: ProgressEvent | None = None  # the last run event
        self._done = False
        self._live_shown = ""

    def __call__(self, event: ProgressEvent) -> None:
        if self.verbosity <= -2:
            return
        if event.kind == "end":
            self._end()
            return
        if event.kind == "pause":
            self._pause()
            return
        if event.kind != "note":
            self._event = event
        text = describe(event)
        if text and event.kind != "done":
            self._headline = text
        if event.kind == "done":
            self._done = True
        level = LEVEL.get(event.kind)
        shown = level is not None and level <= self.verbosity
        if self.live:
            # Above the live row only -v keeps lines; the done line always stays (it replaces the row).
            if event.kind == "done" or (shown and self.verbosity > 0):
                self._line(event, self._prefix(event) + text)
            if event.kind != "done":
                self._live(self._prefix(event) + self._live_text(event))
        elif shown:
            self._line(event, self._prefix(event) + text)
        elif event.kind == "tick" and event.elapsed - self._last_at >= HEARTBEAT_S:
            self._line(event, self._prefix(event) + "still running: " + summary(event.state))

    def _prefix(self, event: ProgressEvent) -> str:
        if event.kind == "note":
            return ""  # a provider's line names itself and carries its own timing
        return f"runnerconf {event.cluster}: [{clock(event.elapsed):>6}] "

    def _live_text(self, event: ProgressEvent) -> str:
        if event.kind == "note" or event.state.pipeline is None:
            return self._headline
        return summary(event.state)

    # ---------------------------------------------------------------- writing

    def _show(self, text: str) -> None:
        # Every byte of progress goes through here (and through Output.write): one place to scrub.
        self.out.write(text)

    def _live(self, text: str) -> None:
        text = text[: max(self.out.width() - 1, 10)]  # a row that wraps could not be rewritten in place
        if self._row == "live" and text == self._live_shown:
            return
        self._live_shown = text
        self._show(("\r" if self._row == "live" else "\n") + text + CLEAR)
        self._row = "live"

    def _line(self, event: ProgressEvent, text: str) -> None:
        """A line that stays: it replaces the live row, or goes on a row of its own."""
        if text == self._last:
            return
        self._last = text
        if event.kind != "note":
            self._last_at = event.elapsed
        self._show("\r" + text + CLEAR if self._row == "live" else "\n" + text)
        self._row = "line"

    def _pause(self) -> None:
        # Checks of a finished cluster run while another cluster's run goes on: end our row so that pytest's
        # result letters start a row of their own; the next event opens a new row of ours.
        if self._row == "live":
            self._line(END, self._live_shown)
        if self._row:
            self._row = ""
            self.out.resume()

    def _end(self) -> None:
        if not self._row:
            return
        if self._done:
            self._row = ""
            self.out.resume()
            return
        # The run stopped early; pytest reports why next. Leave the last known state as our last line and the
        # cursor at its end: pytest ends that row itself before its message (no test result follows).
        event = self._event
        if event is not None and event.state.pipeline is not None:
            self._line(event, self._prefix(event) + "stopped: " + summary(event.state))
        elif self._row == "live":
            self._line(END, self._live_shown)
        self._row = ""
