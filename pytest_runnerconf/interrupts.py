"""SIGTERM and SIGHUP end a session the way Ctrl-C does, so a cancelled CI job still cleans up.

CI cancels a job and ends a timed-out one with SIGTERM (a closed terminal sends SIGHUP); Python's default is
to die on the spot, leaving the scratch branch, a running pipeline and its pods behind. While installed, the
first SIGTERM/SIGHUP raises :class:`Interrupted` (a KeyboardInterrupt, so pytest and every ``finally`` treat
it as Ctrl-C) in the main thread; repeats are recorded and ignored, so a CI system that signals twice does
not cut the cleanup short. SIGINT keeps Python's own behaviour (a second Ctrl-C still forces the way out),
only timed, so the cleanup time can be reported.

An xdist controller runs no pipeline: it forwards the signal to its workers, one of which owns the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The session was told to stop by a signal; ``summary`` says what the run cleaned up and left."""

    def __init__(self, signame: str = "SIGINT", summary: str = "") -> None:
        super().__init__(summary or f"interrupted by {signame}")
        self.signame = signame
        self.summary = summary


@dataclass
class _State:
    installed: dict[int, object] = field(default_factory=dict)
    forward: bool = False
    first: str | None = None  # the signal that ended the session
    at: float | None = None  # time.monotonic() when it arrived
    repeats: int = 0


_STATE = _State()


def signal_name(exc: BaseException) -> str:
    return exc.signame if isinstance(exc, Interrupted) else "SIGINT"


def since_signal() -> float | None:
    """Seconds since the ending signal arrived (None: no signal, or one this module did not handle)."""
    return None if _STATE.at is None else time.monotonic() - _STATE.at


def _children() -> list[int]:
    """This process's child pids (Linux /proc); the xdist workers of a controller."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in task.read_text().split()]
    return pids


def _handle(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if signum == signal.SIGINT:  # as Python's own handler, but timed: every Ctrl-C interrupts
        if _STATE.first is None:
            _STATE.first, _STATE.at = name, time.monotonic()
        raise Interrupted(name)
    if _STATE.forward:
        for pid in _children():
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        return
    if _STATE.first is not None:
        _STATE.repeats += 1  # already cleaning up: let it finish within its deadline
        return
    _STATE.first, _STATE.at = name, time.monotonic()
    raise Interrupted(name)


def install(*, forward_to_children: bool = False) -> bool:
    """Handle SIGTERM/SIGHUP for this process; False where signals cannot be handled (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    _STATE.forward = forward_to_children
    for signum in (*SIGNALS, signal.SIGINT):
        if signum == signal.SIGINT and signal.getsignal(signum) is not signal.default_int_handler:
            continue  # someone else (a debugger, a test runner) owns Ctrl-C
        if signum not in _STATE.installed:
            _STATE.installed[signum] = signal.signal(signum, _handle)
    return True


def uninstall() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in _STATE.installed.items():
        signal.signal(signum, previous)  # type: ignore[arg-type]
    _STATE.installed.clear()
    _STATE.first = _STATE.at = None
    _STATE.repeats = 0
