"""could_not_test as its own outcome in pytest: its report, terminal letter and count, short summary, JUnit.

A check that raises CouldNotTest gets a failed report (so allure-pytest, which sees an exception that is no
assertion, marks it `broken`, and -x/--maxfail stop on it as on an error) that carries the attribute
`runnerconf_outcome`; reports serialise their attributes, so an xdist controller sees it too. Its
teststatus category is "could not test": pytest counts it apart ("3 could not test") and lists it neither under
FAILURES nor as failed. The session's exit status: 1 if anything else failed, else 6, else pytest's own.

A check whose body raises anything but a conformance failure (an assertion, checks.fail, pytest.fail) has a bug:
its report says `error` (letter E, JUnit <error>), with its traceback, and is never counted as non-conformance.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import pytest
from _pytest.junitxml import xml_key
from _pytest.terminal import TerminalReporter

from pytest_runnerconf.checks import info_for
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.verdict import (
    COULD_NOT_TEST_PROPERTY,
    EXPECTATIONS_PROPERTY,
    RECORDER,
    could_not_test_of,
    expectations_of,
    where,
)

OUTCOME_ATTRIBUTE = "runnerconf_outcome"
COULD_NOT_TEST = "could_not_test"
ERROR = "error"
CATEGORY = "could not test"  # the terminal's word: "3 could not test"
LETTER = "C"
EXIT_COULD_NOT_TEST = 6
# The -r characters under which pytest's short summary shows a failed or errored test; "C" shows ours alone.
_SHOWN_WITH = frozenset("fEaAC")
# What pytest's own short summary lists per -r character: it writes its header when any of these is non-empty.
_PYTEST_SUMMARY = {"f": "failed", "E": "error", "s": "skipped", "x": "xfailed", "X": "xpassed", "p": "passed"}


def is_could_not_test(report: pytest.TestReport) -> bool:
    return getattr(report, OUTCOME_ATTRIBUTE, None) == COULD_NOT_TEST


def is_check_bug(report: pytest.TestReport) -> bool:
    """The body of a check raised an exception that is no verdict: a bug, reported as error."""
    return getattr(report, OUTCOME_ATTRIBUTE, None) == ERROR


def could_not_test_details(report: pytest.TestReport) -> dict[str, Any]:
    """{"cause", "sentence", "job", "job_url"} of a could_not_test report."""
    found = dict(report.user_properties).get(COULD_NOT_TEST_PROPERTY)
    return dict(found) if isinstance(found, dict) else {}


def shape_report(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """Put the expectations a check judged on its report and turn a CouldNotTest into its outcome."""
    if call.when == "call":
        judged = [e.data() for e in RECORDER.take()]
        if judged:
            report.user_properties.append((EXPECTATIONS_PROPERTY, judged))
    excinfo = call.excinfo
    if excinfo is None or call.when == "teardown" or hasattr(report, "wasxfail"):
        return
    if not isinstance(excinfo.value, CouldNotTest):
        verdicts = (AssertionError, pytest.fail.Exception, pytest.skip.Exception)
        a_verdict = isinstance(excinfo.value, verdicts)
        if call.when == "call" and report.failed and not a_verdict and info_for(item) is not None:
            setattr(report, OUTCOME_ATTRIBUTE, ERROR)
        return
    exc = excinfo.value
    report.outcome = "failed"
    report.longrepr = str(exc)  # one sentence, no traceback: nothing is wrong with the check
    setattr(report, OUTCOME_ATTRIBUTE, COULD_NOT_TEST)
    details = {"cause": exc.cause, "sentence": exc.sentence, **where(exc.job)}
    report.user_properties.append((COULD_NOT_TEST_PROPERTY, details))


# Plain testcase properties for JUnit readers (GitLab's test report, dashboards): one value each, no JSON.
CHECK_ID_PROPERTY = "runnerconf_check_id"
AREA_PROPERTY = "runnerconf_area"
JOB_URL_PROPERTY = "runnerconf_job_url"
CAUSE_PROPERTY = "runnerconf_cause"


def add_junit_properties(item: pytest.Item, report: pytest.TestReport) -> None:
    """Put the check's ID and area, the URL of each job it judged and a could-not-test cause on the item.

    JUnit writes a testcase's properties from its teardown report, which copies the item's user_properties:
    what a phase's report found is added to the item, so the teardown report (and JUnit) carries it.
    """
    info = info_for(item)
    if info is None:
        return
    present = {(name, str(value)) for name, value in item.user_properties}

    def add(name: str, value: object) -> None:
        if isinstance(value, str) and value and (name, value) not in present:
            item.user_properties.append((name, value))
            present.add((name, value))

    add(CHECK_ID_PROPERTY, info.id)
    add(AREA_PROPERTY, info.area)
    for expectation in expectations_of(report.user_properties):
        add(JOB_URL_PROPERTY, expectation.get("job_url"))
    details = could_not_test_of(report.user_properties)
    if details is not None:
        add(JOB_URL_PROPERTY, details.get("job_url"))
        add(CAUSE_PROPERTY, details.get("cause"))


class OutcomeHooks:
    """Registered on every process: teststatus where reports are shown, counting where the session ends."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.could_not_test = 0  # reports of this session (on an xdist controller: of all workers)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        RECORDER.take()  # a test records only what it judges itself

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport
    ) -> tuple[str, str, tuple[str, Mapping[str, bool]]] | None:
        if isinstance(report, pytest.TestReport) and is_could_not_test(report):
            return CATEGORY, LETTER, ("COULD NOT TEST", {"yellow": True})
        if isinstance(report, pytest.TestReport) and is_check_bug(report):
            return "error", "E", ("ERROR", {"red": True})
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if is_check_bug(report):
            _junit_error(self.config, report, "", "")
        if not is_could_not_test(report):
            return
        self.could_not_test += 1
        details = could_not_test_details(report)
        cause = str(details.get("cause"))
        message = f"could not test ({cause}): {details.get('sentence')}"
        _junit_error(self.config, report, f"could_not_test:{cause}", message)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.could_not_test == 0 or hasattr(self.config, "workerinput"):
            return
        if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return  # usage errors, interrupts and a run that never happened keep their status
        others = session.testsfailed - self.could_not_test  # failed and errored tests that are not ours
        session.exitstatus = pytest.ExitCode.TESTS_FAILED if others > 0 else EXIT_COULD_NOT_TEST

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> Generator[None]:
        try:
            return (yield)
        finally:
            # After pytest's short test summary (written in its own wrapper's finally, inside this one).
            _short_summary(terminalreporter)


def _short_summary(reporter: TerminalReporter) -> None:
    reports = [r for r in reporter.stats.get(CATEGORY, []) if isinstance(r, pytest.TestReport)]
    chars = set(reporter.reportchars)
    if not reports or not chars & _SHOWN_WITH or reporter.config.option.no_summary:
        return
    if not any(reporter.stats.get(_PYTEST_SUMMARY[c]) for c in reporter.reportchars if c in _PYTEST_SUMMARY):
        reporter.write_sep("=", "short test summary info", cyan=True, bold=True)
    for report in reports:
        details = could_not_test_details(report)
        reporter.write_line(
            f"COULD NOT TEST {report.nodeid} - {details.get('cause')}: {details.get('sentence')}", yellow=True
        )


def _junit_error(config: pytest.Config, report: pytest.TestReport, kind: str, message: str) -> None:
    """JUnit's <error> (the test could not run as meant), not the <failure> pytest wrote, typed KIND."""
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    reporter = xml.node_reporter(report)
    for node in reversed(reporter.nodes):
        if node.tag in ("failure", "error"):
            if node.tag == "failure":
                xml.stats["failure"] -= 1
                xml.stats["error"] += 1
            node.tag = "error"
            if kind:
                node.set("type", kind)
            if message:
                node.set("message", message)
            return
