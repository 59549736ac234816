"""pytest11 entry point: options, markers, planning after deselection, the runnerconf fixtures, reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.checks import MARKER_HELP, info_for
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.evidence import JobEvidence, RunEvidence
from pytest_runnerconf.plan import PROBE_MARKER, plan_for_items
from pytest_runnerconf.profile import Profile
from pytest_runnerconf.session import (
    OPTIONS,
    SHARED_KEY,
    SKIP_REASON,
    RunnerConfSession,
    is_worker,
    make_shared_dir,
    remove_shared_dir,
    resolve_settings,
    stored_error,
    validate,
)

STATE = pytest.StashKey[RunnerConfSession]()
RESULTS = pytest.StashKey["_Results"]()
CHECK_PROPERTY = "runnerconf_check"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runnerconf", "GitLab Runner conformance (pytest-runnerconf)")
    for option in OPTIONS:
        group.addoption(
            option.flag,
            dest=option.dest,
            default=None,
            metavar="NAME" if option.dest == "runner_cluster" else "PATH",
            help=f"{option.help}. ini: {option.ini}, env: {option.env}",
        )
        parser.addini(option.ini, help=option.help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.addinivalue_line(
        "markers", f"{PROBE_MARKER}(*names): probe jobs a test needs besides its @check probes"
    )
    settings = resolve_settings(config)
    if not (config.option.help or config.option.version):
        validate(settings)
    workerinput = getattr(config, "workerinput", {})
    owns_shared = SHARED_KEY not in workerinput
    shared = make_shared_dir() if owns_shared else Path(workerinput[SHARED_KEY])
    config.stash[STATE] = RunnerConfSession(config, settings, shared, _progress(config))
    results = _Results()
    config.stash[RESULTS] = results
    if not is_worker(config):
        config.pluginmanager.register(results, "runnerconf-results")
    if owns_shared:
        config.add_cleanup(lambda: remove_shared_dir(shared))
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(shared), "runnerconf-xdist")


class _XdistController:
    """Hands the session's shared directory to every xdist worker."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SHARED_KEY] = str(self.shared)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()


def _progress(config: pytest.Config) -> Callable[[str], None]:
    """One updating terminal line while the pipeline runs (fixture setup output is captured otherwise)."""

    def show(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or is_worker(config):
            return
        if capture is None:
            _rewrite(reporter, line)
            return
        with capture.global_and_fixture_disabled():
            _rewrite(reporter, line)

    return show


def _rewrite(reporter: Any, line: str) -> None:
    reporter.rewrite(line, erase=True)
    if not line:
        # The live line overwrote pytest's "path/to/test_x.py" prefix; make pytest print it again.
        reporter.currentfspath = None


def _is_check(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return info_for(item) is not None or bool(names & {"runnerconf_evidence", "job_evidence"})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: -k/-m deselection has already run, so the plan covers exactly the selected checks.
    state = config.stash[STATE]
    if not state.settings.active:
        for item in items:
            if _is_check(item):
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        return
    try:
        state.plan = plan_for_items(items)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def runnerconf(pytestconfig: pytest.Config) -> RunnerConfSession:
    """The session's runnerconf state: settings, plan, profile and evidence."""
    state = pytestconfig.stash[STATE]
    if not state.settings.active:
        pytest.skip(SKIP_REASON)
    return state


@pytest.fixture(scope="session")
def runnerconf_evidence(runnerconf: RunnerConfSession) -> RunEvidence:
    """The evidence of the session's run (one pipeline for all selected checks, or a replayed bundle).

    Example: ``runnerconf_evidence.jobs["builds"].pod.spec``
    """
    return runnerconf.evidence()


@pytest.fixture(scope="session")
def runnerconf_profile(runnerconf: RunnerConfSession, runnerconf_evidence: RunEvidence) -> Profile:
    """The profile of the cluster under test (after the run: the local one is only known then).

    Example: ``runnerconf_profile.expect.builds_dir``
    """
    return runnerconf.profile()


@pytest.fixture
def job_evidence(
    runnerconf: RunnerConfSession, runnerconf_evidence: RunEvidence
) -> Callable[[str], JobEvidence]:
    """Look up one probe job of the run by name: ``job = job_evidence("builds")``."""

    def get(name: str) -> JobEvidence:
        __tracebackhide__ = True
        job = runnerconf_evidence.jobs.get(name)
        if job is not None:
            return job
        have = ", ".join(sorted(runnerconf_evidence.jobs)) or "none"
        if runnerconf.settings.replay_dir is not None:
            pytest.skip(f"the replayed evidence has no job {name!r} (it has: {have})")
        pytest.fail(f"could not test: the run has no job {name!r} (it has: {have})", pytrace=False)

    return get


@pytest.fixture
def probe_record() -> Callable[[JobEvidence, str], dict[str, Any]]:
    """The last record a probe printed in a job: ``rec = probe_record(job, "builds")``."""

    def get(job: JobEvidence, probe: str) -> dict[str, Any]:
        __tracebackhide__ = True
        records = job.records.get(probe) or []
        if records:
            return records[-1]
        trace = job.trace_parsed
        ending = trace.final or "no final line"
        said = " | ".join(line for line in trace.section_text("step_script")[-3:] if line.strip())
        pytest.fail(
            f"job {job.name} ({job.status or 'unknown status'}) printed no RUNNERCONF {probe} record; "
            f"the probe script did not run to its end ({ending}); "
            f"step_script ended with: {said or 'nothing'} {job.web_url}",
            pytrace=False,
        )

    return get


# ---------------------------------------------------------------- results and reports


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    info = info_for(item)
    if info is not None:
        # user_properties travel with the reports, also from xdist workers to the controller.
        item.user_properties.append((CHECK_PROPERTY, [info.id, info.claim, info.area]))


class _Results:
    """Collects one CheckResult per check report; on the controller only (workers send it their reports)."""

    def __init__(self) -> None:
        self.results: list[Any] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        check = dict(report.user_properties).get(CHECK_PROPERTY)
        outcome = _outcome(report)
        if not check or outcome is None:
            return
        from pytest_runnerconf.report import CheckResult

        check_id, claim, area = check
        message = report.longreprtext if outcome != "passed" else ""
        if outcome == "skipped" and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        self.results.append(
            CheckResult(
                id=check_id,
                claim=claim,
                area=area,
                outcome=outcome,
                message=message,
                duration=report.duration,
                nodeid=report.nodeid,
            )
        )


def _outcome(report: pytest.TestReport) -> str | None:
    if report.when == "call":
        return str(report.outcome)
    if report.outcome == "failed":
        return "error"
    if report.outcome == "skipped":
        return "skipped"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None or is_worker(config) or not state.settings.active:
        return
    error = stored_error(state.shared)
    if error is not None:
        # With xdist the workers only skipped; the controller turns the stored error into the exit status.
        session.exitstatus = error[1]
    _write_reports(config, state)


def _session_run(state: RunnerConfSession) -> RunEvidence | None:
    from pytest_runnerconf.evidence import load

    pointer = state.shared / "evidence.path"
    if state.settings.replay_dir is not None:
        pointer_dir: Path | None = state.settings.replay_dir
    elif pointer.is_file():
        pointer_dir = Path(pointer.read_text(encoding="utf-8"))
    else:
        return None
    try:
        return load(pointer_dir)
    except ConfigError:
        return None


def _write_reports(config: pytest.Config, state: RunnerConfSession) -> None:
    from pytest_runnerconf.report import write_reports

    results = config.stash[RESULTS].results
    if results:
        write_reports(results, _session_run(state), state.settings.report_dir)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.settings.active:
        return
    from pytest_runnerconf.report import summary_line

    error = stored_error(state.shared)
    if error is not None and config.pluginmanager.hasplugin("dsession"):
        terminalreporter.write_line(f"runnerconf: could not test: {error[0]}", red=True, bold=True)
    run = _session_run(state)
    if run is not None:
        terminalreporter.write_line(summary_line(run))
    if config.stash[RESULTS].results:
        terminalreporter.write_line(f"runnerconf: report in {state.settings.report_dir}")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE, None)
    if state is None or not state.settings.active:
        return None
    target = state.settings.cluster or f"replay of {state.settings.replay_dir}"
    return [f"runnerconf: cluster {target}"]
