"""pytest11 entry point: options, markers, planning after deselection, the runnerconf fixtures, reports."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.terminal import TerminalReporter

from pytest_runnerconf import interrupts, jobend, multicluster, retry
from pytest_runnerconf.allure_report import AllureAdapter
from pytest_runnerconf.checks import MARKER_HELP, info_for
from pytest_runnerconf.display import ProgressDisplay
from pytest_runnerconf.disruptive import HELP as DISRUPTIVE_HELP
from pytest_runnerconf.disruptive import deselect as deselect_disruptive
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.evidence import JobEvidence, RunEvidence
from pytest_runnerconf.outcome import NEVER_RAN, could_not_test
from pytest_runnerconf.outcome_hooks import (
    EXIT_COULD_NOT_TEST,
    OutcomeHooks,
    add_junit_properties,
    could_not_test_details,
    is_check_bug,
    is_could_not_test,
    shape_report,
)
from pytest_runnerconf.plan import PROBE_MARKER, plan_for_items
from pytest_runnerconf.profile import Profile
from pytest_runnerconf.progress import Progress, ProgressEvent
from pytest_runnerconf.report import CheckResult, GateFinding
from pytest_runnerconf.scrub import ScrubbingStream, scrub_data, scrub_text
from pytest_runnerconf.verdict import expectations_of

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController
from pytest_runnerconf.session import (
    EXIT_USAGE,
    OPTIONS,
    SHARED_KEY,
    SKIP_REASON,
    PathValue,
    RunnerConfSession,
    is_worker,
    make_shared_dir,
    remove_shared_dir,
    resolve_settings,
    stored_error,
    validate,
)

STATE = pytest.StashKey[RunnerConfSession]()
OUTCOME_HOOKS = pytest.StashKey[OutcomeHooks]()
RESULTS = pytest.StashKey["_Results"]()
GATE = pytest.StashKey["_Gate"]()
REPORT_ERROR = pytest.StashKey[str]()
DRY_RUN_EXIT = pytest.StashKey[int]()
MULTI = pytest.StashKey[multicluster.MultiSession]()  # only with several --runner-cluster names
CHECK_PROPERTY = "runnerconf_check"
JOB_PROPERTY = "runnerconf_job"  # one per probe job a check looked up: the report shows those jobs' attempts


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runnerconf", "GitLab Runner conformance (pytest-runnerconf)")
    for option in OPTIONS:
        group.addoption(
            option.flag,
            dest=option.dest,
            default=None,
            action="store_true"
            if option.switch
            else "append"
            if option.multiple or option.repeatable
            else "store",
            **(
                {} if option.switch else {"metavar": option.metavar or ("PATH" if option.is_path else "NAME")}
            ),
            help=f"{option.help}. ini: {option.ini}, env: {option.env}",
        )
        if option.switch:
            parser.addini(option.ini, help=option.help, type="bool", default=False)
        elif option.multiple:
            parser.addini(option.ini, help=option.help, type="linelist", default=[])
        else:
            parser.addini(option.ini, help=option.help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.addinivalue_line(
        "markers", f"{PROBE_MARKER}(*names): probe jobs a test needs besides its @check probes"
    )
    config.addinivalue_line("markers", DISRUPTIVE_HELP)
    settings = resolve_settings(config)
    if not (config.option.help or config.option.version):
        validate(settings)
    workerinput = getattr(config, "workerinput", {})
    owns_shared = SHARED_KEY not in workerinput
    shared = make_shared_dir() if owns_shared else Path(workerinput[SHARED_KEY])
    # Several clusters' runs share the display: their plain lines, each naming its cluster, not one live row.
    config.stash[STATE] = RunnerConfSession(
        config, settings, shared, _progress(config, live=not settings.multi)
    )
    if settings.multi:
        config.stash[MULTI] = multi = multicluster.MultiSession(config.stash[STATE], settings.clusters)
        config.pluginmanager.register(multicluster.MultiHooks(multi), "runnerconf-multicluster")
    hooks = config.stash[OUTCOME_HOOKS] = OutcomeHooks(config)
    config.pluginmanager.register(hooks, "runnerconf-outcomes")
    results = _Results()
    config.stash[RESULTS] = results
    if not is_worker(config):
        config.pluginmanager.register(results, "runnerconf-results")
    if owns_shared:
        config.add_cleanup(lambda: remove_shared_dir(shared))
    # Registered everywhere; it acts only where allure-pytest is active and only where tests run.
    state = config.stash[STATE]
    config.pluginmanager.register(AllureAdapter(config, lambda: state.plan.library), "runnerconf-allure")
    if (
        settings.baseline is not None
        and not is_worker(config)
        and not (config.option.help or config.option.version)
    ):
        config.stash[GATE] = _Gate(settings.baseline.path, _load_baseline(settings.baseline))
    if settings.dry_run and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--runnerconf-dry-run plans and preflights in one process; drop -n")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(shared), "runnerconf-xdist")
    if settings.active:
        # SIGTERM/SIGHUP clean up like Ctrl-C; an xdist controller hands them to the worker that runs.
        controller = not is_worker(config) and getattr(config.option, "dist", "no") != "no"
        interrupts.install(forward_to_children=controller)
        config.add_cleanup(interrupts.uninstall)


class _XdistController:
    """Hands the session's shared directory to every xdist worker."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: WorkerController) -> None:
        node.workerinput[SHARED_KEY] = str(self.shared)


def pytest_unconfigure(config: pytest.Config) -> None:
    multi = config.stash.get(MULTI, None)
    if multi is not None:
        multi.close()
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()


def _progress(config: pytest.Config, *, live: bool = True) -> Progress:
    """The run's progress display: live on a terminal, a plain log in CI (and wherever output is no TTY).

    Made at the first event: at pytest_configure the terminal reporter may not exist yet.
    """
    if is_worker(config):
        return lambda event: None  # a worker's output does not reach the terminal
    out = _TerminalOutput(config)
    config.pluginmanager.register(out, "runnerconf-terminal")
    display: list[Progress] = []

    def show(event: ProgressEvent) -> None:
        if not display:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            shown_live = live and reporter is not None and bool(reporter.isatty) and not in_ci()
            quiet = reporter is None
            verbosity = -2 if quiet else config.get_verbosity()
            display.append(ProgressDisplay(out, live=shown_live, verbosity=verbosity))
        display[0](event)

    return show


def in_ci() -> bool:
    """The variables pytest itself takes for CI (it then shows full assertion diffs): CI, BUILD_NUMBER."""
    return bool(os.environ.get("CI") or os.environ.get("BUILD_NUMBER"))


class _TerminalOutput:
    """Progress text onto pytest's terminal, past output capturing (fixture setup output is captured)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.item: tuple[str, tuple[str, int | None, str]] | None = None

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self.item = (nodeid, location)  # the test whose row pytest has open; resume() reopens it

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[TerminalReporter]:
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            yield self.config.pluginmanager.getplugin("terminalreporter")

    def write(self, text: str) -> None:
        with self._terminal() as reporter:
            reporter.write(scrub_text(text), flush=True)  # the terminal stream scrubs too, line by line

    def resume(self) -> None:
        # pytest writes its result letters where the cursor is: let it print its own row prefix again (the
        # module's path, or the test's location with -v) so that they do not land after our last line.
        with self._terminal() as reporter:
            reporter.currentfspath = None
            if self.item is not None and (reporter.showfspath or reporter.showlongtestinfo):
                reporter.pytest_runtest_logstart(*self.item)
            else:
                reporter.write("\n", flush=True)

    def width(self) -> int:
        with self._terminal():  # while fd-capturing, stdout is a file: measure the real terminal
            return shutil.get_terminal_size().columns


# ---------------------------------------------------------------- scrubbing what pytest writes


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # Everything the terminal shows (headers, failures, captured output, summaries, the progress line, an
    # exit message) goes through the reporter's writer: scrub it there, line by line.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    writer = getattr(reporter, "_tw", None)
    stream = getattr(writer, "_file", None)
    if stream is not None and not isinstance(stream, ScrubbingStream):
        writer._file = ScrubbingStream(stream)  # type: ignore[union-attr]


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Innermost wrapper: JUnit, xdist's transfer to the controller, report.json and allure's captured-output
    # attachments all read this report object after it is scrubbed.
    report = yield
    shape_report(item, call, report)
    add_junit_properties(item, report)
    scrub_report(report)
    return report


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    scrub_report(report)
    return report


def scrub_report(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Mask secrets in a report's failure text, skip reason, captured sections and user properties."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        report.longrepr = (longrepr[0], longrepr[1], scrub_text(str(longrepr[2])))
    elif longrepr is not None:
        text = report.longreprtext
        clean = scrub_text(text)
        if clean != text:  # a rendered repr loses only its colours; untouched reports keep their structure
            report.longrepr = clean
    report.sections = [(title, scrub_text(content)) for title, content in report.sections]
    if isinstance(report, pytest.TestReport):
        report.user_properties = [(name, scrub_data(value)) for name, value in report.user_properties]


def _is_check(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return info_for(item) is not None or bool(names & {"runnerconf_evidence", "job_evidence"})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: -k/-m deselection has already run, so the plan covers exactly the selected checks.
    state = config.stash[STATE]
    state.disruptive_note = deselect_disruptive(config, items)
    if not state.settings.active:
        for item in items:
            if _is_check(item):
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        return
    try:
        state.plan = plan_for_items(items, state.settings.probe_library())
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    return config.stash[STATE].disruptive_note or None


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """--runnerconf-dry-run: plan and preflight instead of running the checks (dry_run.py); nothing is created."""
    config = session.config
    state = config.stash[STATE]
    if not state.settings.dry_run or is_worker(config) or session.config.option.collectonly:
        return None
    from pytest_runnerconf.dry_run import perform

    passed, lines = perform(state)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "runnerconf dry run")
        for line in lines:
            reporter.write_line(line)
    config.stash[DRY_RUN_EXIT] = 0 if passed else EXIT_COULD_NOT_TEST
    return True  # the checks do not run: there is no evidence to judge


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def runnerconf_cluster(request: pytest.FixtureRequest) -> str | None:
    """The name of the cluster a check judges: --runner-cluster's, or with several, this test's parameter."""
    settings = request.config.stash[STATE].settings
    return str(request.param) if hasattr(request, "param") else settings.cluster


@pytest.fixture(scope="session")
def runnerconf(pytestconfig: pytest.Config, runnerconf_cluster: str | None) -> RunnerConfSession:
    """The session's runnerconf state: settings, plan, profile and evidence (of this check's cluster)."""
    state = pytestconfig.stash[STATE]
    if not state.settings.active:
        pytest.skip(SKIP_REASON)
    multi = pytestconfig.stash.get(MULTI, None)
    if multi is not None and runnerconf_cluster is not None:
        return multi.session(runnerconf_cluster)
    return state


@pytest.fixture(scope="session")
def runnerconf_evidence(runnerconf: RunnerConfSession) -> RunEvidence:
    """The evidence of the session's run (one pipeline for all selected checks, or a replayed bundle).

    Example: ``runnerconf_evidence.jobs["builds"].pod.spec``
    """
    return runnerconf.evidence()


@pytest.fixture(scope="session")
def runnerconf_profile(runnerconf: RunnerConfSession, runnerconf_evidence: RunEvidence) -> Profile:
    """The profile of the cluster under test, as the run used it (or as the replayed evidence recorded it).

    Example: ``runnerconf_profile.expect.builds_dir``
    """
    return runnerconf.profile()


@pytest.fixture
def job_evidence(
    request: pytest.FixtureRequest, runnerconf: RunnerConfSession, runnerconf_evidence: RunEvidence
) -> Callable[[str], JobEvidence]:
    """Look up one probe job of the run by name: ``job = job_evidence("builds")``.

    A job the runner failed before its probe finished (a system failure, a pod that never started) is no
    evidence: the check ends as could_not_test with the runner's words, unless it judges that job's failures
    itself (``@check(judges_failures=("oom",))``) and the job's pod did run (outcome.NEVER_RAN).
    """
    info = info_for(request.node)
    judged = info.judges_failures if info is not None else ()

    def get(name: str) -> JobEvidence:
        __tracebackhide__ = True
        if (JOB_PROPERTY, name) not in request.node.user_properties:
            request.node.user_properties.append((JOB_PROPERTY, name))
        job = runnerconf_evidence.jobs.get(name)
        if job is None:
            have = ", ".join(sorted(runnerconf_evidence.jobs)) or "none"
            source = "replayed evidence" if runnerconf.settings.replay_dir is not None else "run"
            could_not_test("no-evidence", f"the {source} has no job {name!r} (it has: {have})")
        end = jobend.classify(job)
        if end.unsupported:
            # Below the oldest runner the suite knows, its verdicts would be guesses: one sentence instead.
            could_not_test("unsupported-runner", end.unsupported, job=job)
        if end.infrastructure and (name not in judged or end.cause in NEVER_RAN):
            could_not_test(end.cause or "runner-system-failure", runner_failed(job, end), job=job)
        return job

    return get


def runner_failed(job: JobEvidence, end: jobend.JobEnd) -> str:
    """One sentence: which job the runner failed (and where to see it), in the runner's own words."""
    return end.sentence(f"{job.name} ({job.web_url})" if job.web_url else job.name)


@pytest.fixture
def probe_record() -> Callable[[JobEvidence, str], dict[str, Any]]:
    """The last record a probe printed in a job: ``rec = probe_record(job, "builds")``."""

    def get(job: JobEvidence, probe: str) -> dict[str, Any]:
        __tracebackhide__ = True
        records = job.records.get(probe) or []
        if records:
            return records[-1]
        end = jobend.classify(job)
        if end.infrastructure:
            # The probe did not print because the runner ended the job first: no verdict on the cluster.
            could_not_test(end.cause or "runner-system-failure", runner_failed(job, end), job=job)
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
        item.user_properties.append((CHECK_PROPERTY, [info.id, info.claim, info.area, info.remediation]))


class _Results:
    """Collects one CheckResult per check report; on the controller only (workers send it their reports)."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        check = dict(report.user_properties).get(CHECK_PROPERTY)
        outcome = _outcome(report)
        if not check or outcome is None:
            return
        check_id, claim, area, remediation = (str(part) for part in check)  # type: ignore[attr-defined]
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
                read=[str(v) for k, v in report.user_properties if k == JOB_PROPERTY],
                remediation=remediation,
                **_verdict_fields(report, outcome),
            )
        )


def _verdict_fields(report: pytest.TestReport, outcome: str) -> dict[str, Any]:
    """The structured verdict the report carries: the deciding expectation, or why it could not be tested."""
    if outcome == "could_not_test":
        details = could_not_test_details(report)
        return {
            "cause": details.get("cause"),
            "sentence": str(details.get("sentence") or ""),
            "job": details.get("job"),
            "job_url": details.get("job_url"),
            "pod": details.get("pod"),
        }
    judged = expectations_of(report.user_properties)
    fields: dict[str, Any] = {"expectations": judged}
    failing = [e for e in judged if e.get("held") is False]
    # A failure's own expectation (none when a plain assert failed), or a pass's only one.
    deciding: dict[str, Any] | None = None
    if outcome == "failed" and failing:
        deciding = failing[-1]
    elif outcome == "passed" and len(judged) == 1:
        deciding = judged[0]
    if deciding is not None:
        fields.update(
            {name: deciding.get(name) for name in ("expected", "observed", "job", "job_url", "pod")}
        )
        fields["detail"] = str(deciding.get("detail") or "")
    # The result's few words: the failing expectation's, or every held one's in the order judged.
    said = judged if outcome == "passed" else [deciding] if deciding is not None else []
    fields["summary"] = "; ".join(str(e.get("summary")) for e in said if e.get("summary"))
    return fields


def _outcome(report: pytest.TestReport) -> str | None:
    if is_could_not_test(report):
        return "could_not_test"
    if is_check_bug(report):
        return "error"
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
    if DRY_RUN_EXIT in config.stash:
        session.exitstatus = config.stash[DRY_RUN_EXIT]
        return
    error = stored_error(state.shared)
    if error is not None:
        # With xdist the workers only skipped; the controller turns the stored error into the exit status.
        session.exitstatus = error[1]
    multi = config.stash.get(MULTI, None)
    if multi is not None:
        # A cluster that gave no evidence ended its checks; its own exit status joins the others' (1 > 6 > 0).
        codes = [int(session.exitstatus), *(e.code for e in multi.errors().values())]
        session.exitstatus = multicluster.combine_exit(codes)
    try:
        report_json = _write_reports(config, state)
    except OSError as exc:
        # Checked before the run; what remains (a full disk, permissions changed meanwhile) is one sentence.
        given = state.settings.report
        named = given.describe() if given is not None else str(state.settings.report_dir)
        config.stash[REPORT_ERROR] = f"the report could not be written to {named}: {exc.strerror or exc}"
        session.exitstatus = EXIT_USAGE
        return
    gate = config.stash.get(GATE, None)
    if gate is not None and report_json is not None and error is None:
        _apply_gate(session, gate, report_json)
    alluredir = getattr(config.option, "allure_report_dir", None)
    if alluredir and report_json is not None:
        _write_allure_files(Path(alluredir), report_json, state)


def _write_allure_files(directory: Path, report_json: Path, state: RunnerConfSession) -> None:
    """The Allure results directory's environment, categories and executor files, from report.json."""
    import json

    from pytest_runnerconf.allure_report import run_secrets, write_results_files

    run = _session_run(state)
    secrets = run_secrets(run) if run is not None else ()
    doc = json.loads(report_json.read_text(encoding="utf-8"))
    write_results_files(directory, doc, os.environ, secrets)


def _session_run(state: RunnerConfSession) -> RunEvidence | None:
    from pytest_runnerconf.evidence import load

    pointer = state.shared / "evidence.path"
    if state.settings.replay_dir is not None:
        pointer_dir: Path | None = state.settings.replay_dir
    elif pointer.is_file():
        pointer_dir = Path(pointer.read_text(encoding="utf-8"))
    else:
        return None
    if pointer_dir is None:
        return None
    try:
        return load(pointer_dir)
    except ConfigError:
        return None


def _write_reports(config: pytest.Config, state: RunnerConfSession) -> Path | None:
    """The report.json written, or None when no check ran."""
    from pytest_runnerconf.report import write_reports

    results = config.stash[RESULTS].results
    if not results:
        return None
    gate = config.stash.get(GATE, None)
    baseline = (str(gate.path), gate.baseline) if gate is not None else None
    multi = config.stash.get(MULTI, None)
    if multi is not None:
        from pytest_runnerconf import report_multi

        return report_multi.write_reports(
            results, multi, state.settings.report_dir, baseline=baseline, argv=config_argv(config)
        )
    paths = write_reports(
        results, _session_run(state), state.settings.report_dir, baseline=baseline, argv=config_argv(config)
    )
    return paths["json"]


def config_argv(config: pytest.Config) -> list[str]:
    """The command that started the session: the program as invoked, then pytest's own arguments."""
    return [sys.argv[0] if sys.argv else "pytest", *config.invocation_params.args]


# ---------------------------------------------------------------- upgrade gate


@dataclass
class _Gate:
    """The baseline of --runnerconf-baseline and what comparing the session's report with it found."""

    path: Path
    baseline: dict[str, Any]
    regressions: list[GateFinding] = field(default_factory=list)  # passed there, failed now
    not_verified: list[GateFinding] = field(default_factory=list)  # passed there, not judged now
    known: list[str] = field(default_factory=list)  # check IDs failing now and in the baseline
    error: str = ""
    compared: bool = False


def _load_baseline(baseline: PathValue) -> dict[str, Any]:
    from pytest_runnerconf.report import load_report

    try:
        return load_report(baseline.path)
    except ConfigError as exc:
        raise pytest.UsageError(
            f"{baseline.describe()}: {str(exc).removeprefix(f'{baseline.path}: ')}"
        ) from None


def _apply_gate(session: pytest.Session, gate: _Gate, report_json: Path) -> None:
    """Exit 1 for regressions (and failures the baseline does not share), 6 if a check that passed there is not
    verified now (could not test, skipped, errored, missing) or any could not be tested, else 0."""
    from pytest_runnerconf.report import compare_reports

    if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, EXIT_COULD_NOT_TEST):
        return  # usage errors and interrupts keep their own status
    try:
        # The same comparison as the reports' baseline section (report.json's `baseline`).
        found = compare_reports(gate.baseline, report_json)
        gate.regressions, gate.not_verified, gate.known = found.regressions, found.not_verified, found.known
    except ConfigError as exc:
        gate.error = str(exc)
        session.exitstatus = EXIT_USAGE
        return
    gate.compared = True
    config = session.config
    untested = config.stash[OUTCOME_HOOKS].could_not_test
    failed = session.testsfailed - untested  # failed and errored tests, checks or not
    if gate.regressions or (failed > 0 and not _only_known(session, failed, gate.known)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif gate.not_verified or untested:
        session.exitstatus = EXIT_COULD_NOT_TEST
    else:
        session.exitstatus = pytest.ExitCode.OK


def _only_known(session: pytest.Session, failed: int, known: list[str]) -> bool:
    """Every failed test of the session is a check that also failed in the baseline."""
    failing = [r for r in session.config.stash[RESULTS].results if r.outcome in ("failed", "error")]
    # testsfailed also counts failed tests that are not checks; those keep the session failing.
    return failed == len(failing) and all(r.id in known for r in failing)


def _gate_lines(gate: _Gate) -> list[tuple[str, dict[str, bool]]]:
    """(line, markup) for the terminal summary."""
    bad, warn = {"red": True, "bold": True}, {"yellow": True, "bold": True}
    if gate.error:
        return [(f"runnerconf: baseline: {gate.error}", bad)]
    if not gate.compared:
        return []
    lines = []
    for finding in gate.regressions:
        lines.append((f"runnerconf: regression {finding.id}: {finding.change()}", bad))
    for finding in gate.not_verified:
        lines.append((f"runnerconf: not verified {finding.id}: {finding.change()}", warn))
    if gate.known:
        count = len(gate.known)
        noun = "failure" if count == 1 else "failures"
        lines.append(
            (
                f"runnerconf: {count} known {noun} (also failed in the baseline): {', '.join(gate.known)}",
                {},
            )
        )
    if not gate.regressions and gate.not_verified:
        count = len(gate.not_verified)
        noun = "check" if count == 1 else "checks"
        lines.append(
            (
                f"runnerconf: no regression against the baseline {gate.path}, but {count} {noun} that passed "
                "there not verified: the upgrade is not approved",
                warn,
            )
        )
    elif not gate.regressions:
        lines.append((f"runnerconf: no regression against the baseline {gate.path}", {}))
    return lines


def pytest_terminal_summary(
    terminalreporter: TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.settings.active or DRY_RUN_EXIT in config.stash:
        return  # a dry run has said everything in its own section
    from pytest_runnerconf.report import summary_line

    error = stored_error(state.shared)
    if error is not None and config.pluginmanager.hasplugin("dsession"):
        terminalreporter.write_line(f"runnerconf: {error[2]}{error[0]}", red=True, bold=True)
    run = _session_run(state)
    informative = config.get_verbosity() > -2  # -qq: only what decides the outcome, as pytest does
    if run is not None and informative:
        terminalreporter.write_line(summary_line(run))
        for line in retry.summary_lines(run):
            terminalreporter.write_line(line, yellow=True)
    multi = config.stash.get(MULTI, None)
    for line, markup in multi.summary_lines(informative) if multi is not None else ():
        terminalreporter.write_line(line, **markup)
    report_error = config.stash.get(REPORT_ERROR, None)
    if report_error is not None:
        terminalreporter.write_line(f"runnerconf: {report_error}", red=True, bold=True)
    elif config.stash[RESULTS].results and informative:
        terminalreporter.write_line(f"runnerconf: report in {state.settings.report_dir}")
    gate = config.stash.get(GATE, None)
    for line, markup in _gate_lines(gate) if gate is not None else ():
        terminalreporter.write_line(line, **markup)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    if not state.settings.active:
        return [f"runnerconf: checks skipped: {SKIP_REASON}"]
    if state.settings.multi:
        names = state.settings.clusters
        return [f"runnerconf: {len(names)} clusters {', '.join(names)} (one pipeline each, at once)"]
    target = state.settings.cluster or f"replay of {state.settings.replay_dir}"
    return [f"runnerconf: cluster {target}{' (dry run)' if state.settings.dry_run else ''}"]
