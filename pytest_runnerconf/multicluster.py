"""Several clusters in one invocation: one run per cluster, all at once, and every check once per cluster.

`--runner-cluster=a,b` (or the flag repeated) parametrises each check with the session-scoped fixture
`runnerconf_cluster` (test IDs end in `[a]`, `[b]`). The first check that needs evidence starts every
cluster's run in a thread of its own (one pipeline and one Kubernetes watch per cluster); a check waits only
for its own cluster. Each cluster has its own RunnerConfSession and shared directory, so the xdist recipe (the
first worker through a cluster's lock runs it, the others load its bundle) holds per cluster.

A cluster that cannot be tested does not end the session as it does alone: its checks end as could_not_test
with the cause and its sentence (or, for bad input and interrupts, are skipped with it), the other clusters
are judged, and the exit status combines them (combine_exit).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import pytest

from pytest_runnerconf.errors import ConfigError, GitLabError, KubeError, RunTimeout
from pytest_runnerconf.evidence import RunEvidence, load
from pytest_runnerconf.interrupts import Interrupted
from pytest_runnerconf.outcome import could_not_test
from pytest_runnerconf.progress import END, PAUSE, Progress, ProgressEvent
from pytest_runnerconf.scrub import scrub_text
from pytest_runnerconf.session import (
    COULD_NOT_TEST,
    EXIT_COULD_NOT_TEST,
    RunnerConfSession,
    _store_error,
    stored_error,
)

CLUSTER_FIXTURE = "runnerconf_cluster"
CLUSTER_PROPERTY = "runnerconf_cluster"  # user property: the cluster a check's result belongs to
# Which exit status wins when clusters end differently: an interrupt, a bug in the plugin and bad input say
# the most about the session; then 1 (something failed) > 6 (something could not be tested) > 0.
_PRECEDENCE = (
    int(pytest.ExitCode.INTERRUPTED),
    int(pytest.ExitCode.INTERNAL_ERROR),
    int(pytest.ExitCode.USAGE_ERROR),
    int(pytest.ExitCode.TESTS_FAILED),
    EXIT_COULD_NOT_TEST,
    int(pytest.ExitCode.OK),
    int(
        pytest.ExitCode.NO_TESTS_COLLECTED
    ),  # a cluster with nothing selected does not hide another's verdict
)


def combine_exit(codes: Iterable[int]) -> int:
    """The session's exit status from each cluster's: 1 > 6 > 0 (interrupts, bugs and bad input above all)."""
    found = {int(c) for c in codes}
    if not found:
        return int(pytest.ExitCode.OK)
    rank = {code: n for n, code in enumerate(_PRECEDENCE)}
    return min(found, key=lambda c: (rank.get(c, -1), c))  # an unknown status is the most serious


def outcome_exit(outcomes: Iterable[str]) -> int:
    """A cluster's exit status from its checks' outcomes, as a session of that cluster alone would end."""
    seen = set(outcomes)
    if seen & {"failed", "error"}:
        return int(pytest.ExitCode.TESTS_FAILED)
    if "could_not_test" in seen:
        return EXIT_COULD_NOT_TEST
    return int(pytest.ExitCode.OK)


def cause_of(exc: BaseException | None) -> str:
    """The could-not-test cause of an error that stopped a cluster's run before it had evidence."""
    if isinstance(exc, RunTimeout):
        return "deadline"
    text = str(exc).lower()
    if isinstance(exc, (GitLabError, KubeError)) and any(
        w in text for w in ("403", "forbidden", "permission")
    ):
        return "permissions"
    return "api-error"


@dataclass(frozen=True)
class ClusterError:
    """Why a cluster's run gave no evidence: the sentence, the exit status it would have had alone, the cause."""

    message: str
    code: int
    prefix: str = COULD_NOT_TEST
    cause: str = "api-error"

    def line(self, name: str) -> str:
        return f"cluster {name}: {self.prefix}{self.message}"


class ClusterStopped(Exception):
    """Raised in a cluster's thread where a session alone would exit: the other clusters go on."""

    def __init__(self, error: ClusterError) -> None:
        super().__init__(error.message)
        self.error = error


class ClusterSession(RunnerConfSession):
    """One cluster's session within a multi-cluster invocation: its evidence comes through the MultiSession."""

    def __init__(self, multi: MultiSession, name: str, progress: Progress) -> None:
        parent = multi.parent
        settings = parent.settings
        evidence_dir = settings.evidence_dir / name if settings.evidence_dir is not None else None
        shared = parent.shared / "clusters" / name
        shared.mkdir(parents=True, exist_ok=True)
        super().__init__(
            parent.config, replace(settings, cluster=name, evidence_dir=evidence_dir), shared, progress
        )
        self.multi = multi
        self.name = name
        self.plan = parent.plan

    def fatal(self, message: str, code: int, prefix: str = COULD_NOT_TEST) -> NoReturn:
        message = scrub_text(message)
        _store_error(self.shared, message, code, prefix)
        raise ClusterStopped(ClusterError(message, code, prefix, cause_of(sys.exc_info()[1])))

    def evidence(self) -> RunEvidence:
        return self.multi.evidence(self.name)

    def produce(self) -> RunEvidence:
        """In the cluster's thread: the run (or, with xdist, the bundle another worker's run saved)."""
        return RunnerConfSession.evidence(self)


class MultiSession:
    """The clusters of one invocation: their sessions, their runs in threads, and how each ended."""

    def __init__(self, parent: RunnerConfSession, names: tuple[str, ...]) -> None:
        self.parent = parent
        self.names = names
        self._lock = threading.Lock()  # one display, events from every cluster's thread
        self._sessions: dict[str, ClusterSession] = {}
        self._threads: dict[str, threading.Thread] = {}
        # Set when a cluster's run is over. Waited on instead of Thread.join: a join that a signal interrupts
        # marks the thread stopped while it still runs (CPython's bpo-45274 handling), and it would not be told.
        self._over = {name: threading.Event() for name in names}
        self._runs: dict[str, RunEvidence] = {}
        self._failures: dict[str, BaseException] = {}
        self._ended = False
        # Progress reaches the display only while the main thread waits for a run: while checks run, pytest
        # owns the terminal's row, so other clusters' events are held and shown at the next wait.
        self._waiting = False
        self._held: list[ProgressEvent] = []
        self.cluster_of: dict[str, str] = {}  # nodeid -> cluster, from the reports (also an xdist worker's)

    def _progress(self, event: ProgressEvent) -> None:
        if event.kind == "end":
            return  # the display ends once, when every cluster's run has (see _finish)
        with self._lock:
            if self._waiting:
                self.parent.progress(event)
            else:
                self._held.append(event)

    def _showing(self, waiting: bool) -> None:
        """Start (flushing what was held) or stop showing progress as the main thread waits or not."""
        with self._lock:
            self._waiting = waiting
            held, self._held = self._held, []
            for event in held:
                self.parent.progress(event)
            if not waiting and not all(over.is_set() for over in self._over.values()):
                self.parent.progress(PAUSE)

    def session(self, name: str) -> ClusterSession:
        if name not in self._sessions:
            self._sessions[name] = ClusterSession(self, name, self._progress)
        self._sessions[name].plan = self.parent.plan  # planned after collection, before any check runs
        return self._sessions[name]

    def start(self) -> None:
        """Start every cluster's run at once (idempotent): one thread, one pipeline and one watch each."""
        if self._threads:
            return
        for name in self.names:
            thread = threading.Thread(
                target=self._produce, args=(name,), name=f"runnerconf-{name}", daemon=True
            )
            self._threads[name] = thread
        for thread in self._threads.values():
            thread.start()

    def _produce(self, name: str) -> None:
        try:
            self._runs[name] = self.session(name).produce()
        except BaseException as exc:  # kept for the checks of this cluster, and re-raised there
            self._failures[name] = exc
        finally:
            self._over[name].set()

    def wait(self, name: str) -> None:
        """Wait for NAME's run; Ctrl-C (or SIGTERM) here interrupts every run, which then cleans up."""
        self.start()
        self._showing(True)
        try:
            while not self._over[name].wait(0.2):
                pass
        except KeyboardInterrupt:
            self._interrupt_all()
            raise
        finally:
            self._showing(False)
        if all(over.is_set() for over in self._over.values()):
            self._finish()

    def _interrupt_all(self) -> None:
        # Signals reach the main thread only; the runs' clean-up (cancel, delete the branch, watch the pods go)
        # runs on a KeyboardInterrupt, so each run thread gets one raised in it.
        for name, thread in self._threads.items():
            if not self._over[name].is_set() and thread.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread.ident), ctypes.py_object(Interrupted)
                )
        for over in self._over.values():
            while not over.is_set():
                try:
                    over.wait(0.5)
                except KeyboardInterrupt:
                    continue  # a repeated Ctrl-C: let the clean-up finish within its deadline
        self._finish()

    def _finish(self) -> None:
        if not self._ended:
            self._ended = True
            with self._lock:
                held, self._held = self._held, []
                for event in held:
                    self.parent.progress(event)
                self.parent.progress(END)

    def evidence(self, name: str) -> RunEvidence:
        """NAME's evidence for a check; raises what makes that check could_not_test (or skipped) otherwise."""
        __tracebackhide__ = True
        self.wait(name)
        if name in self._runs:
            return self._runs[name]
        failure = self._failures.get(name)
        if isinstance(failure, ClusterStopped):
            stop(name, failure.error)
        assert failure is not None
        raise failure

    def error(self, name: str) -> ClusterError | None:
        """Why NAME gave no evidence, as stored in its shared directory (by this process or another worker)."""
        failure = self._failures.get(name)
        if isinstance(failure, ClusterStopped):
            return failure.error
        stored = stored_error(self.parent.shared / "clusters" / name)
        return ClusterError(*stored) if stored is not None else None

    def errors(self) -> dict[str, ClusterError]:
        found = {name: self.error(name) for name in self.names}
        return {name: error for name, error in found.items() if error is not None}

    def run(self, name: str) -> RunEvidence | None:
        """NAME's saved evidence, for the reports (None: it has none)."""
        if name in self._runs:
            return self._runs[name]
        pointer = self.parent.shared / "clusters" / name / "evidence.path"
        if not pointer.is_file():
            return None
        try:
            return load(Path(pointer.read_text(encoding="utf-8")))
        except ConfigError:  # an unreadable bundle leaves the section without run facts
            return None

    def summary_lines(self, informative: bool) -> list[tuple[str, dict[str, bool]]]:
        return _summary_lines(self, informative)

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


def stop(name: str, error: ClusterError) -> NoReturn:
    """End a check of cluster NAME whose run stopped: could_not_test with its cause, else skipped with why."""
    __tracebackhide__ = True
    if error.code == EXIT_COULD_NOT_TEST:
        could_not_test(error.cause, f"cluster {name}: {error.message}")
    # Bad input, an interrupt, a worker that died: no verdict on the cluster; the exit status says which.
    pytest.skip(error.line(name))


def _summary_lines(multi: MultiSession, informative: bool) -> list[tuple[str, dict[str, bool]]]:
    """(line, markup) per cluster for the terminal summary: its run's summary, or why it has none."""
    from pytest_runnerconf.report import summary_line

    lines: list[tuple[str, dict[str, bool]]] = []
    errors = multi.errors()
    for name in multi.names:
        error = errors.get(name)
        if error is not None:
            lines.append((f"runnerconf: {error.line(name)}", {"red": True, "bold": True}))
            continue
        run = multi.run(name)
        if run is not None and informative:
            lines.append((summary_line(run).replace("runnerconf:", f"runnerconf [{name}]:", 1), {}))
    return lines


class MultiHooks:
    """The pytest side: every check once per cluster, and each result marked with its cluster."""

    def __init__(self, multi: MultiSession) -> None:
        self.multi = multi

    @pytest.hookimpl(trylast=True)
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        # trylast: after the checks' own parametrisation, so the cluster is the last part of the ID ("[x-a]").
        if CLUSTER_FIXTURE in metafunc.fixturenames:
            names = list(self.multi.names)
            metafunc.parametrize(CLUSTER_FIXTURE, names, indirect=True, ids=names, scope="session")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get(CLUSTER_FIXTURE) if callspec is not None else None
        if name is not None:
            item.user_properties.append((CLUSTER_PROPERTY, str(name)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = dict(report.user_properties).get(CLUSTER_PROPERTY)
        if name is not None:
            self.multi.cluster_of[report.nodeid] = str(name)
