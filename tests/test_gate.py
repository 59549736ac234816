"""The upgrade gate (--runnerconf-baseline) seen from outside: replayed runs compared with a previous report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_runnerconf.evidence import JobEvidence, RunEvidence, save
from pytest_runnerconf.report import CheckResult, write_reports
from tests.report_schema import assert_valid_report_file

pytest_plugins = ["pytester"]

# Two checks, each judging one probe job's status: the bundle decides which of them pass.
CHECKS = """
from pytest_runnerconf.checks import check


@check(id="RC-GAT-001", claim="the ordering job succeeds", remediation="look at the ordering probe",
       area="gate", probes=("ordering",))
def test_ordering(job_evidence):
    assert job_evidence("ordering").status == "success"


@check(id="RC-GAT-002", claim="the builds job succeeds", remediation="look at the builds probe",
       area="gate", probes=("builds",))
def test_builds(job_evidence):
    assert job_evidence("builds").status == "success"
"""
PROFILE = {"name": "prod", "token_env": "RUNNERCONF_GATE_TEST_TOKEN"}


@pytest.fixture
def gate(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


# The runner's own poll-timeout system failure: the job's checks could not be tested.
POD_NOT_STARTED = (
    "ERROR: Job failed (system failure): prepare environment: waiting for pod running: "
    "timed out waiting for pod to start\n"
)


def _bundle(pytester: pytest.Pytester, name: str, **statuses: str) -> Path:
    """Jobs by status; the status "stuck" is a job the runner failed before its pod started."""
    jobs = {
        job: JobEvidence(
            name=job,
            job={"name": job, "status": "failed" if status == "stuck" else status},
            trace=POD_NOT_STARTED if status == "stuck" else "Job succeeded\n",
        )
        for job, status in statuses.items()
    }
    directory = pytester.path / name
    save(RunEvidence(run_id=name, cluster="prod", profile=PROFILE, jobs=jobs), directory)
    return directory


def _baseline(pytester: pytest.Pytester, **outcomes: str) -> Path:
    results = [CheckResult(check_id, f"claim of {check_id}", "gate", o) for check_id, o in outcomes.items()]
    return write_reports(results, None, pytester.path / "baseline")["json"]


def _replay(pytester: pytest.Pytester, bundle: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--runnerconf-replay={bundle}", *args)


def test_same_results_as_a_previous_run_pass_the_gate(gate: pytest.Pytester) -> None:
    bundle = _bundle(gate, "good", ordering="success", builds="success")
    first = _replay(gate, bundle)
    assert first.ret == 0
    baseline = gate.path / "previous-report.json"
    shutil.copy(gate.path / "runnerconf-report" / "report.json", baseline)

    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"runnerconf: no regression against the baseline {baseline}"])
    assert "regression RC-" not in result.stdout.str()


def test_a_check_that_passed_in_the_baseline_and_fails_now_exits_1(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed"})
    bundle = _bundle(gate, "regressed", ordering="success", builds="failed")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["runnerconf: regression RC-GAT-002: passed in baseline, failed now: *"])
    assert "RC-GAT-001: passed in baseline" not in result.stdout.str()
    assert "no regression" not in result.stdout.str()
    # The gate runs after the reports: the current report.json is written and shows the failure.
    report = json.loads((gate.path / "runnerconf-report" / "report.json").read_text())
    assert report["counts"]["failed"] == 1


def test_only_failures_known_from_the_baseline_exit_0(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "failed"})
    bundle = _bundle(gate, "known", ordering="success", builds="failed")
    without_gate = _replay(gate, bundle)
    assert without_gate.ret == pytest.ExitCode.TESTS_FAILED

    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == 0
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "runnerconf: 1 known failure (also failed in the baseline): RC-GAT-002",
            f"runnerconf: no regression against the baseline {baseline}",
        ]
    )


def test_a_known_failure_does_not_hide_a_regression(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "failed"})
    bundle = _bundle(gate, "both", ordering="failed", builds="failed")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "runnerconf: regression RC-GAT-001: passed in baseline, failed now: *",
            "runnerconf: 1 known failure (also failed in the baseline): RC-GAT-002",
        ]
    )


def test_a_failing_test_that_is_no_check_keeps_the_session_failing(gate: pytest.Pytester) -> None:
    gate.makepyfile(test_other="def test_plain():\n    assert False\n")
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "failed"})
    bundle = _bundle(gate, "known", ordering="success", builds="failed")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["runnerconf: 1 known failure (also failed in the baseline): RC-GAT-002"])


def test_baseline_from_the_environment(gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed"})
    monkeypatch.setenv("RUNNERCONF_BASELINE", str(baseline))
    result = _replay(gate, _bundle(gate, "regressed", ordering="failed", builds="success"))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["runnerconf: regression RC-GAT-001: passed in baseline, failed now: *"])


def test_regression_with_xdist(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "failed"})
    bundle = _bundle(gate, "regressed", ordering="failed", builds="failed")
    result = gate.runpytest_subprocess(
        f"--runnerconf-replay={bundle}", f"--runnerconf-baseline={baseline}", "-n", "2"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["runnerconf: regression RC-GAT-001: passed in baseline, failed now: *"])
    assert result.stdout.str().count("runnerconf: regression") == 1


def test_passed_in_the_baseline_and_could_not_test_now_is_not_verified_and_exits_6(
    gate: pytest.Pytester,
) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed"})
    bundle = _bundle(gate, "stuck", ordering="success", builds="stuck")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == 6
    result.stdout.fnmatch_lines(
        [
            "runnerconf: not verified RC-GAT-002: passed in baseline, could not test now: pod-not-started: "
            "The runner failed job builds before its probe ran: prepare environment: waiting for pod running: timed out waiting for pod to start.",
            f"runnerconf: no regression against the baseline {baseline}, but 1 check that passed there not "
            "verified: the upgrade is not approved",
        ]
    )
    assert "regression RC-" not in result.stdout.str()


def test_passed_in_the_baseline_and_skipped_now_exits_6(gate: pytest.Pytester) -> None:
    gate.makepyfile(
        test_optional="""
import pytest
from pytest_runnerconf.checks import check


@check(id="RC-GAT-003", claim="dns matches", remediation="set expect.dns", area="gate", probes=("dns",))
def test_dns(job_evidence):
    pytest.skip("the profile sets no expect.dns")
"""
    )
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed", "RC-GAT-003": "passed"})
    bundle = _bundle(gate, "good", ordering="success", builds="success")
    without_gate = _replay(gate, bundle)
    assert without_gate.ret == 0  # a skip alone is no reason to fail a run
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == 6
    result.stdout.fnmatch_lines(
        ["runnerconf: not verified RC-GAT-003: passed in baseline, skipped now: *no expect.dns"]
    )


def test_passed_in_the_baseline_and_missing_now_exits_6(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed"})
    bundle = _bundle(gate, "good", ordering="success", builds="success")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}", "-k", "test_ordering")
    assert result.ret == 6
    result.stdout.fnmatch_lines(["runnerconf: not verified RC-GAT-002: passed in baseline, not run now"])


def test_a_regression_wins_over_not_verified(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed"})
    bundle = _bundle(gate, "both", ordering="failed", builds="stuck")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "runnerconf: regression RC-GAT-001: passed in baseline, failed now: *",
            "runnerconf: not verified RC-GAT-002: passed in baseline, could not test now: *",
        ]
    )


def test_a_known_failure_and_a_could_not_test_exit_6(gate: pytest.Pytester) -> None:
    baseline = _baseline(gate, **{"RC-GAT-001": "failed", "RC-GAT-002": "failed"})
    bundle = _bundle(gate, "mixed", ordering="failed", builds="stuck")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == 6  # the failure is forgiven, the check that could not be tested is not
    result.stdout.fnmatch_lines(["runnerconf: 1 known failure (also failed in the baseline): RC-GAT-001"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "report not found; give the report.json of a previous run"),
        ("{not json", "not a report.json (*)"),
        ('{"version": 1}', "not a runnerconf report.json (no results list)"),
        ('{"results": [{"id": "RC-GAT-001", "outcome": "green"}]}', "result 0 is not a check result (*)"),
    ],
    ids=["missing", "not-json", "no-results", "bad-outcome"],
)
def test_unusable_baseline_is_one_sentence_and_exit_4(
    gate: pytest.Pytester, content: str | None, problem: str
) -> None:
    path = gate.path / "baseline.json"
    if content is not None:
        path.write_text(content)
    bundle = _bundle(gate, "good", ordering="success", builds="success")
    result = _replay(gate, bundle, f"--runnerconf-baseline={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --runnerconf-baseline={path}: {problem}"])
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text
    # Refused before anything ran: no report was written.
    assert not (gate.path / "runnerconf-report").exists()


def test_the_reports_show_what_changed_as_the_gate_decided_it(gate: pytest.Pytester) -> None:
    """report.json's baseline section, report.html's and report.md's are the gate's one comparison."""
    gate.makepyfile(
        test_more="""
from pytest_runnerconf.checks import check


@check(id="RC-GAT-004", claim="the dns job succeeds", remediation="look at the dns probe", area="gate",
       probes=("dns",))
def test_dns(job_evidence):
    assert job_evidence("dns").status == "success"
"""
    )
    baseline = _baseline(gate, **{"RC-GAT-001": "passed", "RC-GAT-002": "passed", "RC-GAT-004": "failed"})
    bundle = _bundle(gate, "changed", ordering="failed", builds="stuck", dns="success")
    result = _replay(gate, bundle, f"--runnerconf-baseline={baseline}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    reports = gate.path / "runnerconf-report"
    section = assert_valid_report_file(reports / "report.json")["baseline"]
    assert section["path"] == str(baseline)
    assert [(f["id"], f["before"], f["now"]) for f in section["regressions"]] == [
        ("RC-GAT-001", "passed", "failed")
    ]
    assert [(f["id"], f["now"]) for f in section["not_verified"]] == [("RC-GAT-002", "could_not_test")]
    assert [(f["id"], f["before"], f["now"]) for f in section["fixed"]] == [
        ("RC-GAT-004", "failed", "passed")
    ]
    # The terminal said the same.
    result.stdout.fnmatch_lines(
        [
            "runnerconf: regression RC-GAT-001: passed in baseline, failed now: *",
            "runnerconf: not verified RC-GAT-002: passed in baseline, could not test now: *",
        ]
    )
    page = (reports / "report.html").read_text()
    html = page.split('<section id="baseline">')[1].split("</section>")[0]
    groups = {
        key: html.split(f'data-baseline="{key}"')[1].split("</ul>")[0]
        for key in ("regressions", "fixed", "not_verified")
    }
    assert [g.count("<li") for g in groups.values()] == [1, 1, 1]
    assert 'data-change="RC-GAT-001"' in groups["regressions"]
    assert 'data-change="RC-GAT-004"' in groups["fixed"]
    assert 'data-change="RC-GAT-002"' in groups["not_verified"]
    assert 'href="#check-RC-GAT-001"' in html and 'id="check-RC-GAT-001"' in page
    md = (reports / "report.md").read_text()
    assert "1 regressed, 1 fixed, 1 not verified, 0 known failures" in md
    assert "- regression **RC-GAT-001** the ordering job succeeds: passed in baseline, failed now" in md
    assert "- fixed **RC-GAT-004** the dns job succeeds: failed in baseline, passed now" in md


def test_without_a_baseline_the_reports_have_no_such_section(gate: pytest.Pytester) -> None:
    result = _replay(gate, _bundle(gate, "good", ordering="success", builds="success"))
    assert result.ret == 0
    reports = gate.path / "runnerconf-report"
    assert assert_valid_report_file(reports / "report.json")["baseline"] is None
    assert 'id="baseline"' not in (reports / "report.html").read_text()
    assert "Since the baseline" not in (reports / "report.md").read_text()
