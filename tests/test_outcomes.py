"""The five outcomes seen from outside (pytester, replayed evidence): terminal, JUnit, Allure, report.json, exit.

passed, failed, could_not_test (with its cause and one sentence), skipped, and error for a bug in a check.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence, RunEvidence, save
from pytest_runnerconf.outcome import CAUSES
from tests.report_schema import assert_valid_report_file

pytest_plugins = ["pytester"]

PROFILE = {"name": "prod", "token_env": "RUNNERCONF_OUTCOME_TEST_TOKEN"}
URL = "https://gitlab.example.test/group/scratch/-/jobs"
# The runner's poll-timeout system failure (gitlab-runner executors/kubernetes: waitForPodRunning).
POD_NOT_STARTED = (
    "ERROR: Job failed (system failure): prepare environment: waiting for pod running: "
    "timed out waiting for pod to start"
)
SCRIPT_FAILED = "ERROR: Job failed: command terminated with exit code 1"
# An override above its cap, as runner 19.2+ refuses it (executors/kubernetes: Prepare, couldn't prepare overwrites).
CAPPED = (
    'ERROR: Job failed: couldn\'t prepare overwrites: provided value "2" for CPU limit is higher than limit '
    'allowed "1500m"'
)

CHECKS = """
import pytest
from pytest_runnerconf import check, could_not_test, expect_equal


@check(id="RC-OUT-001", claim="the good job succeeds", remediation="look at the good probe", area="out",
       probes=("ordering",))
def test_passes(job_evidence):
    expect_equal("RC-OUT-001", "success", job_evidence("good").status, job=job_evidence("good"))


@check(id="RC-OUT-002", claim="the stuck job succeeds", remediation="look at the stuck probe", area="out",
       probes=("ordering",))
def test_could_not_test(job_evidence):
    expect_equal("RC-OUT-002", "success", job_evidence("stuck").status)


@check(id="RC-OUT-003", claim="the broken job succeeds", remediation="look at the broken probe", area="out",
       probes=("ordering",))
def test_fails(job_evidence):
    job = job_evidence("broken")
    expect_equal("RC-OUT-003", "success", job.status, job=job, detail="the probe exits 1")


@check(id="RC-OUT-004", claim="dns matches the profile", remediation="set expect.dns", area="out",
       probes=("ordering",))
def test_skipped(job_evidence):
    pytest.skip("the profile sets no expect.dns; nothing to compare with")


@check(id="RC-OUT-005", claim="a check with a bug", remediation="fix the check", area="out", probes=("ordering",))
def test_bug(job_evidence):
    return job_evidence("good").job["no-such-key"]


@check(id="RC-OUT-006", claim="the missing job succeeds", remediation="run the missing probe", area="out",
       probes=("ordering",))
def test_missing(job_evidence):
    job_evidence("missing")


@check(id="RC-OUT-007", claim="the capped job is refused", remediation="look at the cap", area="out",
       probes=("ordering",), judges_failures=("capped",))
def test_judges_failures(job_evidence):
    job = job_evidence("capped")
    assert "couldn't prepare overwrites" in job.trace_parsed.final


@check(id="RC-OUT-011", claim="the stuck job is refused", remediation="look at the cap", area="out",
       probes=("ordering",), judges_failures=("stuck",))
def test_judges_failures_of_a_pod_that_never_ran(job_evidence):
    job_evidence("stuck")  # its pod never started: nothing to judge, whatever the check judges


@check(id="RC-OUT-008", claim="the stuck job's probe prints", remediation="look at the probe", area="out",
       probes=("ordering",), judges_failures=("stuck",))
def test_probe_record_of_an_infrastructure_failure(job_evidence, probe_record):
    probe_record(job_evidence("stuck"), "stuck")


@check(id="RC-OUT-009", claim="the broken job's probe prints", remediation="look at the probe", area="out",
       probes=("ordering",), judges_failures=("broken",))
def test_probe_record_of_a_script_failure(job_evidence, probe_record):
    probe_record(job_evidence("broken"), "broken")
"""

NODE = "test_checks.py::"
OUTCOMES = {
    "RC-OUT-001": "passed",
    "RC-OUT-002": "could_not_test",
    "RC-OUT-003": "failed",
    "RC-OUT-004": "skipped",
    "RC-OUT-005": "error",  # a bug in the check: no verdict on the cluster
    "RC-OUT-006": "could_not_test",
    "RC-OUT-007": "passed",
    "RC-OUT-008": "could_not_test",
    "RC-OUT-009": "failed",
    "RC-OUT-011": "could_not_test",  # judges the stuck job's failures, but its pod never started
}


def _job(name: str, status: str, final: str, reason: str | None = None) -> JobEvidence:
    job: dict[str, Any] = {"name": name, "status": status, "web_url": f"{URL}/{len(name)}"}
    if reason is not None:
        job["failure_reason"] = reason
    trace = f'Running with gitlab-runner 18.11.4 (5b1ba4d9)\nPreparing the "kubernetes" executor\n{final}\n'
    return JobEvidence(name=name, job=job, trace=trace)


def _bundle(directory: Path, *, stuck: bool = True, broken: bool = True) -> Path:
    jobs = {
        "good": _job("good", "success", "Job succeeded"),
        "capped": _job("capped", "failed", CAPPED, "runner_configuration_error"),
        "stuck": _job("stuck", "failed", POD_NOT_STARTED, "runner_system_failure")
        if stuck
        else _job("stuck", "success", "Job succeeded"),
        "broken": _job("broken", "failed", SCRIPT_FAILED, "script_failure")
        if broken
        else _job("broken", "success", "Job succeeded"),
    }
    save(RunEvidence(run_id="r1", cluster="prod", profile=PROFILE, jobs=jobs), directory)
    return directory


@pytest.fixture
def checks(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def _report(pytester: pytest.Pytester) -> dict[str, Any]:
    """The session's report.json, which must satisfy the schema the package ships."""
    return assert_valid_report_file(pytester.path / "runnerconf-report" / "report.json")


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["results"]}


def test_each_outcome_in_the_terminal_and_report_json(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    result = checks.runpytest(f"--runnerconf-replay={bundle}", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # a real failure wins over could-not-test
    result.stdout.fnmatch_lines(["test_checks.py .CFsEC.CCF*"])
    result.stdout.fnmatch_lines(["*= 2 failed, 2 passed, 1 skipped, *1 error, 4 could not test in *"])
    result.stdout.fnmatch_lines(
        [
            "*short test summary info*",
            f"COULD NOT TEST {NODE}test_could_not_test - pod-not-started: The runner failed job stuck "
            f"({URL}/5) before its probe ran: prepare environment: waiting for pod running: timed out waiting for pod to start.",
            f"COULD NOT TEST {NODE}test_missing - no-evidence: the replayed evidence has no job 'missing' "
            "(it has: broken, capped, good, stuck)",
        ]
    )
    text = result.stdout.str()
    # could_not_test is no failure: not under FAILURES, no traceback, not in pytest's FAILED lines.
    assert f"FAILED {NODE}test_could_not_test" not in text
    assert "_ test_could_not_test _" not in text
    assert text.count("short test summary info") == 1  # ours joins pytest's section
    assert "KeyError: 'no-such-key'" in text  # the bug keeps its traceback

    doc = _report(checks)
    assert doc["version"] == 2
    assert doc["counts"] == {"passed": 2, "failed": 2, "could_not_test": 4, "skipped": 1, "error": 1}
    assert doc["causes"] == {c: CAUSES[c] for c in ("no-evidence", "pod-not-started")}
    results = _by_id(doc)
    assert {i: r["outcome"] for i, r in results.items()} == OUTCOMES
    assert results["RC-OUT-002"]["outcome"] == "could_not_test"
    assert results["RC-OUT-002"]["cause"] == "pod-not-started"
    assert results["RC-OUT-002"]["job"] == "stuck" and results["RC-OUT-002"]["job_url"] == f"{URL}/5"
    assert "timed out waiting for pod to start" in results["RC-OUT-002"]["sentence"]
    assert results["RC-OUT-006"]["cause"] == "no-evidence"
    assert results["RC-OUT-008"]["cause"] == "pod-not-started"  # probe_record: no record, runner's failure
    assert results["RC-OUT-009"]["outcome"] == "failed"  # probe_record: no record, the script failed
    assert results["RC-OUT-007"]["outcome"] == "passed"  # judges the capped job's refusal itself
    assert results["RC-OUT-011"]["cause"] == "pod-not-started"  # judged, but the pod never ran
    assert results["RC-OUT-004"]["outcome"] == "skipped" and results["RC-OUT-004"]["cause"] is None
    failed = results["RC-OUT-003"]
    assert (failed["outcome"], failed["expected"], failed["observed"]) == ("failed", "success", "failed")
    assert (failed["job"], failed["job_url"], failed["detail"]) == ("broken", f"{URL}/6", "the probe exits 1")
    passed = results["RC-OUT-001"]
    assert (passed["expected"], passed["observed"], passed["job"]) == ("success", "success", "good")
    assert passed["expectations"] == [
        {
            "check": "RC-OUT-001",
            "expected": "success",
            "observed": "success",
            "held": True,
            "job": "good",
            "job_url": f"{URL}/4",
            "pod": None,
            "detail": "",
            "summary": "success",  # expect_equal without a summary: the observed value
        }
    ]
    assert passed["summary"] == "success"

    md = (checks.path / "runnerconf-report" / "report.md").read_text()
    assert "**not conformant**: 2 passed, 2 failed, 4 could not test, 1 skipped, 1 error." in md
    # What did not pass, worst first, with the job's link, the cause or the observed value, and the fix.
    assert (
        f"| COULD NOT TEST | [RC-OUT-002]({URL}/5) | the stuck job succeeds |  |  "
        "| pod-not-started: The runner failed job" in md
    )
    assert f"| FAIL | [RC-OUT-003]({URL}/6) | the broken job succeeds | failed | success " in md
    assert "fix: look at the broken probe |" in md and "fix: look at the stuck probe |" in md
    assert md.index("| FAIL | [RC-OUT-003]") < md.index("| COULD NOT TEST | [RC-OUT-002]")
    assert results["RC-OUT-003"]["remediation"] == "look at the broken probe"
    page = (checks.path / "runnerconf-report" / "report.html").read_text()
    row = page.split('data-check="RC-OUT-002"')[1].split("</tr>")[0]
    assert (
        'data-outcome="could_not_test"' in row
        and '<span class="outcome could_not_test">could not test</span>' in row
    )
    assert "pod-not-started" in page.split('data-detail-of="RC-OUT-002"')[1].split("</tr>")[0]


def test_only_could_not_test_exits_6_and_all_passed_exits_0(checks: pytest.Pytester) -> None:
    stuck = _bundle(checks.path / "stuck", broken=False)
    result = checks.runpytest(f"--runnerconf-replay={stuck}", "-k", "test_passes or test_could_not_test")
    assert result.ret == 6
    result.stdout.fnmatch_lines(["*= 1 passed, * 1 could not test in *"])
    assert _report(checks)["counts"]["could_not_test"] == 1

    good = _bundle(checks.path / "good", stuck=False, broken=False)
    result = checks.runpytest(f"--runnerconf-replay={good}", "-k", "test_passes or test_could_not_test")
    assert result.ret == 0
    result.assert_outcomes(passed=2)


def test_a_check_bug_is_an_error_with_its_traceback(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    result = checks.runpytest(f"--runnerconf-replay={bundle}", "-k", "test_bug")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*return job_evidence(*no-such-key*", "*", "E       KeyError: *"])
    result.stdout.fnmatch_lines(["ERROR test_checks.py::test_bug - KeyError: *"])
    assert _by_id(_report(checks))["RC-OUT-005"]["outcome"] == "error"


def test_could_not_test_in_a_fixture_setup_is_still_could_not_test(checks: pytest.Pytester) -> None:
    checks.makeconftest(
        """
import pytest
from pytest_runnerconf import could_not_test


@pytest.fixture
def quota_refused():
    could_not_test("quota", "the namespace's ResourceQuota refused the job's pod")
"""
    )
    checks.makepyfile(
        test_setup="""
from pytest_runnerconf import check


@check(id="RC-OUT-010", claim="a pod fits the quota", remediation="raise the quota", area="out")
def test_quota(quota_refused):
    pass
"""
    )
    bundle = _bundle(checks.path / "bundle")
    result = checks.runpytest(f"--runnerconf-replay={bundle}", "test_setup.py")
    assert result.ret == 6
    result.stdout.fnmatch_lines(["test_setup.py C*", "*= *1 could not test in *"])
    result.stdout.fnmatch_lines(["COULD NOT TEST test_setup.py::test_quota - quota: the namespace's *"])
    assert "error" not in result.stdout.lines[-1]
    assert _by_id(_report(checks))["RC-OUT-010"]["cause"] == "quota"


def test_junit_reports_could_not_test_as_an_error_with_its_cause(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    checks.runpytest(f"--runnerconf-replay={bundle}", "--junitxml=junit.xml")
    root = ET.parse(checks.path / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root[0]
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    stuck = cases["test_could_not_test"]
    assert stuck.find("failure") is None
    error = stuck.find("error")
    assert error is not None
    assert error.get("type") == "could_not_test:pod-not-started"
    assert (error.get("message") or "").startswith(
        "could not test (pod-not-started): The runner failed job stuck"
    )
    assert cases["test_fails"].find("failure") is not None and cases["test_fails"].find("error") is None
    bug = cases["test_bug"].find("error")
    assert bug is not None and "KeyError" in (bug.text or "")
    # 2 failures (two checks that fail), 5 errors (4 could not test, 1 bug in a check).
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("2", "5", "1")


def _properties(case: ET.Element) -> list[tuple[str, str]]:
    return [(p.get("name") or "", p.get("value") or "") for p in case.iter("property")]


def test_junit_testcases_carry_check_id_area_job_url_and_cause(checks: pytest.Pytester) -> None:
    checks.runpytest(f"--runnerconf-replay={_bundle(checks.path / 'bundle')}", "--junitxml=junit.xml")
    root = ET.parse(checks.path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    plain = {name: value for name, value in _properties(cases["test_could_not_test"])}
    assert plain["runnerconf_check_id"] == "RC-OUT-002" and plain["runnerconf_area"] == "out"
    assert plain["runnerconf_job_url"] == f"{URL}/5" and plain["runnerconf_cause"] == "pod-not-started"
    failed = _properties(cases["test_fails"])
    assert ("runnerconf_check_id", "RC-OUT-003") in failed and ("runnerconf_job_url", f"{URL}/6") in failed
    assert not any(name == "runnerconf_cause" for name, _ in failed)  # a failure has no cause
    passed = _properties(cases["test_passes"])
    assert ("runnerconf_job_url", f"{URL}/4") in passed
    # Each property once, even though every phase of the test adds what it found.
    assert len(passed) == len(set(passed))


def test_allure_marks_could_not_test_broken(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    checks.runpytest(f"--runnerconf-replay={bundle}", "--alluredir=allure")
    docs = [json.loads(p.read_text()) for p in (checks.path / "allure").glob("*-result.json")]
    status = {doc["fullName"].rsplit("#", 1)[-1]: doc["status"] for doc in docs}
    assert status["test_could_not_test"] == "broken"
    assert status["test_missing"] == "broken"
    assert status["test_fails"] == "failed"
    assert status["test_passes"] == "passed"
    assert status["test_skipped"] == "skipped"
    details = next(d for d in docs if d["fullName"].endswith("#test_could_not_test"))["statusDetails"]
    assert "could not test (pod-not-started)" in details["message"]
    # categories.json sorts them as Allure does: the first category whose status and message match.
    categories = json.loads((checks.path / "allure" / "categories.json").read_text())

    def category(doc: dict[str, Any]) -> str:
        message = (doc.get("statusDetails") or {}).get("message") or ""
        return next(
            c["name"]
            for c in categories
            if doc["status"] in c["matchedStatuses"]
            and re.fullmatch(c.get("messageRegex", "(?s).*"), message)
        )

    sorted_into = {d["fullName"].rsplit("#", 1)[-1]: category(d) for d in docs if d["status"] != "passed"}
    assert sorted_into["test_could_not_test"] == "could not test: pod-not-started"
    assert sorted_into["test_missing"] == "could not test: no-evidence"
    assert sorted_into["test_fails"] == "conformance failures"
    assert sorted_into["test_bug"] == "errors in a check or the plugin"
    assert sorted_into["test_skipped"] == "not applicable"


def test_with_xdist_the_controller_sees_could_not_test(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle", broken=False)
    result = checks.runpytest_subprocess(
        f"--runnerconf-replay={bundle}",
        "-n",
        "2",
        "--junitxml=junit.xml",
        "-k",
        "not test_bug and not script_failure",
    )
    assert result.ret == 6
    result.stdout.fnmatch_lines(["*4 could not test*"])
    result.stdout.fnmatch_lines([f"COULD NOT TEST {NODE}test_could_not_test - pod-not-started: *"])
    results = _by_id(_report(checks))
    assert results["RC-OUT-002"]["cause"] == "pod-not-started"
    assert results["RC-OUT-003"]["observed"] == "success"  # expectations travel from the workers
    junit = (checks.path / "junit.xml").read_text()
    assert 'type="could_not_test:pod-not-started"' in junit


def test_maxfail_counts_could_not_test_as_it_counts_an_error(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    result = checks.runpytest(f"--runnerconf-replay={bundle}", "-x", "-p", "no:randomly")
    assert result.ret == 6
    result.stdout.fnmatch_lines(["*= 1 passed, *1 could not test in *"])


def test_short_summary_shows_could_not_test_with_C_and_with_failures(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    only = checks.runpytest(f"--runnerconf-replay={bundle}", "-rC")
    only.stdout.fnmatch_lines(["*short test summary info*", f"COULD NOT TEST {NODE}test_could_not_test - *"])
    assert "FAILED " not in only.stdout.str() and only.stdout.str().count("short test summary info") == 1
    skips = checks.runpytest(f"--runnerconf-replay={bundle}", "-rs")
    assert "COULD NOT TEST " not in skips.stdout.str()
    skips.stdout.fnmatch_lines(["SKIPPED * the profile sets no expect.dns*"])


def test_verbose_rows_say_could_not_test(checks: pytest.Pytester) -> None:
    bundle = _bundle(checks.path / "bundle")
    result = checks.runpytest(f"--runnerconf-replay={bundle}", "-v", "-k", "could_not_test or missing")
    result.stdout.fnmatch_lines(
        [f"{NODE}test_could_not_test COULD NOT TEST*", f"{NODE}test_missing COULD NOT TEST*"]
    )


def test_readme_documents_every_cause() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Outcomes", 1)[1].split("Exit codes:", 1)[0]
    assert [c for c in CAUSES if f"`{c}`" not in section] == []
