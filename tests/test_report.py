"""Check metadata and failure messages, the conformance report files, the summary line and the gate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_runnerconf import checks
from pytest_runnerconf.checks import CHECKS, CheckInfo, check, expect_equal, expect_true, fail, format_failure
from pytest_runnerconf.checks import held as checks_held
from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence
from pytest_runnerconf.report import CheckResult, compare, not_verified, summary_line, write_reports
from pytest_runnerconf.verdict import RECORDER, ConformanceFailure

TRACES = Path(__file__).resolve().parent / "data" / "traces"
CLAIM = "get_sources (helper) ends before step_script (build) starts"
FIX = "check FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY and the helper image version"


@pytest.fixture(autouse=True)
def clean_registry(pytestconfig: pytest.Config) -> Iterator[None]:
    # The plugin registers the marker; these tests must also pass under --strict-markers without it.
    pytestconfig.addinivalue_line("markers", checks.MARKER_HELP)
    # Tests register made-up IDs; the real suite's registry must not keep them.
    saved = dict(CHECKS)
    yield
    CHECKS.clear()
    CHECKS.update(saved)


def job(
    name: str = "probe-ordering", *, pod: bool = True, started: float = 10.0, finished: float = 20.0
) -> JobEvidence:
    trace = (TRACES / "runner-18.11-timestamps-success.txt").read_text(encoding="utf-8")
    observed = (
        PodObservation(name="runner-abc-project-42-concurrent-0-x1y2z3w4", first_seen=started)
        if pod
        else None
    )
    return JobEvidence(
        name=name,
        job={"id": 101, "web_url": "http://127.0.0.1:8929/runnerconf/scratch/-/jobs/101"},
        trace=trace,
        pod=observed,
        started_at=started,
        finished_at=finished,
    )


def test_check_decorator_registers_and_marks() -> None:
    @check(id="RC-ORD-901", claim=CLAIM, remediation=FIX, area="ordering", probes=("ordering",))
    def test_sources_first() -> None:
        pass

    info = CHECKS["RC-ORD-901"]
    assert info == CheckInfo("RC-ORD-901", CLAIM, FIX, "ordering", ("ordering",))
    assert test_sources_first.runnerconf_check is info  # type: ignore[attr-defined]
    marks = [(m.name, m.kwargs) for m in test_sources_first.pytestmark]  # type: ignore[attr-defined]
    assert marks == [(checks.MARKER, {"id": "RC-ORD-901"})]


def test_check_ids_are_validated() -> None:
    with pytest.raises(ValueError, match="must look like RC-ORD-001"):
        check(id="ORD-1", claim=CLAIM, remediation=FIX, area="ordering")
    check(id="RC-ORD-902", claim=CLAIM, remediation=FIX, area="ordering")
    check(id="RC-ORD-902", claim=CLAIM, remediation=FIX, area="ordering")  # same metadata: re-import is fine
    with pytest.raises(ValueError, match="registered twice with different metadata"):
        check(id="RC-ORD-902", claim="another claim", remediation=FIX, area="ordering")
    with pytest.raises(ValueError, match="needs a non-empty remediation"):
        check(id="RC-ORD-903", claim=CLAIM, remediation=" ", area="ordering")


def test_fail_message_format() -> None:
    check(id="RC-ORD-904", claim=CLAIM, remediation=FIX, area="ordering")
    with pytest.raises(pytest.fail.Exception) as info:
        fail(
            "RC-ORD-904",
            "get_sources ends <= step_script starts",
            "step_script started 1.2s early",
            job=job(),
        )
    assert str(info.value) == (
        f"RC-ORD-904 {CLAIM}\n"
        "  expected: get_sources ends <= step_script starts\n"
        "  observed: step_script started 1.2s early\n"
        "  job: probe-ordering http://127.0.0.1:8929/runnerconf/scratch/-/jobs/101  "
        "pod: runner-abc-project-42-concurrent-0-x1y2z3w4\n"
        f"  fix: {FIX}"
    )
    assert info.value.pytrace is False


def test_failure_message_variants() -> None:
    info = CheckInfo("RC-DNS-901", "resolv.conf matches dns_config", "set dns_config", "dns")
    # Without a pod observation the pod named in the trace is shown; structured values are JSON.
    text = format_failure(
        info, ["10.0.0.2"], {"nameservers": ["8.8.8.8"]}, job=job(pod=False), detail="two\nlines"
    )
    assert text.splitlines() == [
        "RC-DNS-901 resolv.conf matches dns_config",
        '  expected: ["10.0.0.2"]',
        '  observed: {"nameservers": ["8.8.8.8"]}',
        "  detail:   two",
        "            lines",
        "  job: probe-ordering http://127.0.0.1:8929/runnerconf/scratch/-/jobs/101  "
        "pod: runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4",
        "  fix: set dns_config",
    ]
    with pytest.raises(ValueError, match="unknown check id 'RC-XXX-000'"):
        format_failure("RC-XXX-000", 1, 2)


def test_expect_helpers() -> None:
    info = CheckInfo("RC-RES-901", "build cpu limit matches", "set cpu_limit", "resources")
    expect_equal(info, "1", "1")
    expect_true(info, True, "throttled", "throttled")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)expected: '?1500m'?.*observed: 1"):
        expect_equal(info, "1500m", "1")
    with pytest.raises(pytest.fail.Exception, match="observed: nr_throttled=0"):
        expect_true(info, False, "nr_throttled > 0", "nr_throttled=0")


def make_run(tmp_path: Path) -> RunEvidence:
    jobs = {
        "probe-ordering": job(started=10.0, finished=14.25),
        "probe-oom": job("probe-oom", started=11.0, finished=33.5),
    }
    return RunEvidence(
        run_id="r1",
        cluster="local",
        gitlab_url="http://127.0.0.1:8929",
        project="runnerconf/scratch",
        pipeline={"id": 7},
        started_at=5.0,
        finished_at=47.04,
        jobs=jobs,
        evidence_dir=str(tmp_path / "evidence"),
        notes=["local emulation, not a real runner"],
    )


RESULTS = [
    CheckResult("RC-ORD-002", CLAIM, "ordering", "passed", "", "probe-ordering", 0.01),
    CheckResult(
        "RC-DNS-002",
        "resolv.conf <matches> dns_config | all containers",
        "dns",
        "failed",
        "RC-DNS-002 resolv.conf matches\n  expected: 10.0.0.2\n  observed: nameserver 8.8.8.8\n"
        "  fix: set dns_config",
        "probe-dns",
        0.02,
        expected="10.0.0.2",
        observed="nameserver 8.8.8.8",
        expectations=[{"expected": "10.0.0.2", "observed": "nameserver 8.8.8.8", "held": False}],
    ),
    CheckResult(
        "RC-VOL-001",
        "the repo volume is in every container",
        "builds_volume",
        "could_not_test",
        "could not test (pod-not-started): the runner failed job builds",
        "builds",
        0.0,
        cause="pod-not-started",
        sentence="the runner failed job builds",
    ),
    CheckResult(
        "RC-CLN-001",
        "pods deleted",
        "cleanup",
        "skipped",
        "Skipped: cleanup deadline not observed",
        None,
        0.0,
    ),
    CheckResult("RC-OOM-001", "oom reported", "oom", "error", "KubeError: watch failed", "probe-oom", 0.0),
]


def test_summary_line(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert summary_line(run) == (
        f"runnerconf: wall 42.0s, slowest job 22.5s (probe-oom), 2 jobs, evidence {tmp_path / 'evidence'}"
    )
    assert summary_line(RunEvidence(started_at=1.0, finished_at=1.04), "ev") == (
        "runnerconf: wall 0.0s, slowest job 0.0s (-), 0 jobs, evidence ev"
    )


def test_write_reports(tmp_path: Path) -> None:
    paths = write_reports(RESULTS, make_run(tmp_path), tmp_path / "out")
    assert set(paths) == {"json", "md", "html"} and all(p.is_file() for p in paths.values())

    doc = json.loads(paths["json"].read_text())
    assert doc["counts"] == {"passed": 1, "failed": 1, "could_not_test": 1, "error": 1, "skipped": 1}
    assert doc["runner_versions"] == ["18.11.4"]
    assert doc["slowest_job"] == {"name": "probe-oom", "duration_s": 22.5}
    assert [r["id"] for r in doc["results"]] == [
        "RC-CLN-001",
        "RC-DNS-002",
        "RC-OOM-001",
        "RC-ORD-002",
        "RC-VOL-001",
    ]
    by_id = {r["id"]: r for r in doc["results"]}
    assert (by_id["RC-VOL-001"]["outcome"], by_id["RC-VOL-001"]["cause"]) == (
        "could_not_test",
        "pod-not-started",
    )
    assert by_id["RC-VOL-001"]["sentence"] == "the runner failed job builds"
    assert by_id["RC-DNS-002"]["observed"] == "nameserver 8.8.8.8" and by_id["RC-DNS-002"]["cause"] is None

    md = paths["md"].read_text()
    for line in (
        "## runnerconf: not conformant",
        "**not conformant**: 1 passed, 1 failed, 1 could not test, 1 skipped, 1 error. "
        "[Full report (report.html)](report.html)",
        "- cluster: `local`, GitLab http://127.0.0.1:8929",
        "- versions: GitLab unknown, Kubernetes unknown, runner 18.11.4",
        "- time: 42.0s wall, slowest job probe-oom 22.5s",
        "| outcome | check | claim | observed | expected | why / remediation |",
        # Worst first; text from a check is escaped for Markdown and for the HTML GitLab renders in it.
        "| FAIL | RC-DNS-002 | resolv.conf &lt;matches&gt; dns_config \\| all containers | nameserver 8.8.8.8 "
        "| 10.0.0.2 |  |",
        "| ERROR | RC-OOM-001 | oom reported |  |  | KubeError: watch failed |",
        "| COULD NOT TEST | RC-VOL-001 | the repo volume is in every container |  |  "
        "| pod-not-started: the runner failed job builds |",
        "| PASS | RC-ORD-002 | " + CLAIM + " |  |",
    ):
        assert line in md.splitlines(), line

    page = paths["html"].read_text()
    assert (
        page.startswith("<!DOCTYPE html>") and "<script" not in page and "://" not in page.split("<body>")[0]
    )
    assert "resolv.conf &lt;matches&gt; dns_config | all containers" in page
    assert 'data-outcome="failed"' in page and "nameserver 8.8.8.8" in page
    assert 'data-outcome="could_not_test"' in page


def test_write_reports_without_a_run(tmp_path: Path) -> None:
    paths = write_reports(RESULTS[:1], None, tmp_path)
    md = paths["md"].read_text()
    assert "- versions: GitLab unknown, Kubernetes unknown, runner unknown" in md and "- cluster" not in md
    assert json.loads(paths["json"].read_text())["wall_s"] is None


def test_compare_reports_regressions_only(tmp_path: Path) -> None:
    baseline = [
        CheckResult("RC-ORD-002", CLAIM, "ordering", "passed"),
        CheckResult("RC-DNS-002", "dns", "dns", "passed"),
        CheckResult("RC-DNS-003", "dns3", "dns", "passed"),
        CheckResult("RC-CLN-001", "cleanup", "cleanup", "failed", "observed: 90s"),
        CheckResult("RC-RES-001", "limits", "resources", "passed", nodeid="t[build]"),
        CheckResult("RC-RES-001", "limits", "resources", "passed", nodeid="t[helper]"),
    ]
    current = [
        CheckResult("RC-ORD-002", CLAIM, "ordering", "passed"),
        CheckResult(
            "RC-DNS-002",
            "dns",
            "dns",
            "failed",
            "x",
            observed="nameserver 8.8.8.8",
            expectations=[{"held": False}],
        ),
        CheckResult("RC-DNS-003", "dns3", "dns", "error", "InfraError"),  # not a conformance regression
        CheckResult("RC-CLN-001", "cleanup", "cleanup", "failed", "observed: 95s"),  # already failing
        CheckResult("RC-RES-001", "limits", "resources", "passed", nodeid="t[build]"),
        CheckResult(
            "RC-RES-001",
            "limits",
            "resources",
            "failed",
            "",
            observed=2,
            expectations=[{"held": False}],
            nodeid="t[helper]",
        ),
    ]
    base_path = write_reports(baseline, None, tmp_path / "base")["json"]
    cur_path = write_reports(current, None, tmp_path / "cur")["json"]
    assert compare(base_path, cur_path) == [
        "RC-DNS-002 dns: passed in baseline, failed now: observed: nameserver 8.8.8.8",
        "RC-RES-001 limits: passed in baseline, failed now: observed: 2",
    ]
    assert compare(cur_path, cur_path) == []


def test_why_reads_the_structured_verdict_not_the_message() -> None:
    # A message that says "observed:" is not read back: only the structured fields count.
    said = CheckResult("RC-DNS-002", "dns", "dns", "failed", "RC-DNS-002 dns\n  observed: 8.8.8.8")
    assert said.why() == "RC-DNS-002 dns"
    judged = CheckResult(
        "RC-DNS-002", "dns", "dns", "failed", "x", observed={"b": 1, "a": [2]}, expectations=[{"held": False}]
    )
    assert judged.why() == 'observed: {"a": [2], "b": 1}'
    passed = CheckResult(
        "RC-DNS-002", "dns", "dns", "passed", observed="10.0.0.2", expectations=[{"held": True}]
    )
    assert passed.why() == "observed: 10.0.0.2"
    # A plain assert after a held expectation: the message, not the held value, says why.
    asserted = CheckResult(
        "RC-DNS-002", "dns", "dns", "failed", "AssertionError: x", expectations=[{"held": True}]
    )
    assert asserted.why() == "AssertionError: x"


def test_not_verified_lists_what_passed_before_and_is_not_judged_now(tmp_path: Path) -> None:
    baseline = [
        CheckResult("RC-ORD-001", "a", "ordering", "passed"),
        CheckResult("RC-ORD-002", "b", "ordering", "passed"),
        CheckResult("RC-ORD-003", "c", "ordering", "passed"),
        CheckResult("RC-ORD-004", "d", "ordering", "passed"),
        CheckResult("RC-DNS-001", "e", "dns", "failed"),
        CheckResult("RC-DNS-002", "f", "dns", "passed"),
    ]
    current = [
        CheckResult("RC-ORD-001", "a", "ordering", "could_not_test", cause="quota", sentence="refused"),
        CheckResult("RC-ORD-002", "b", "ordering", "skipped", "no dns expected"),
        CheckResult("RC-ORD-003", "c", "ordering", "passed"),
        CheckResult("RC-DNS-001", "e", "dns", "could_not_test", cause="quota", sentence="refused"),
        CheckResult("RC-DNS-002", "f", "dns", "failed", "x", observed=1, expectations=[{"held": False}]),
    ]
    base_path = write_reports(baseline, None, tmp_path / "base")["json"]
    cur_path = write_reports(current, None, tmp_path / "cur")["json"]
    assert not_verified(base_path, cur_path) == [
        "RC-ORD-001 a: passed in baseline, could not test now: quota: refused",
        "RC-ORD-002 b: passed in baseline, skipped now: no dns expected",
        "RC-ORD-004 d: passed in baseline, not run now",
    ]
    assert compare(base_path, cur_path) == ["RC-DNS-002 f: passed in baseline, failed now: observed: 1"]


def test_helpers_record_structured_expectations_on_pass_and_failure() -> None:
    info = CheckInfo("RC-RES-902", "build memory limit matches", "set memory_limit", "resources")
    RECORDER.take()
    expect_equal(info, "1Gi", "1Gi", job=job())
    with pytest.raises(ConformanceFailure) as failure:
        expect_true(info, False, "nr_throttled > 0", {"nr_throttled": 0}, detail="cgroup v2")
    held, failed = RECORDER.take()
    assert (held.held, held.expected, held.observed, held.job) == (True, "1Gi", "1Gi", "probe-ordering")
    assert held.pod == "runner-abc-project-42-concurrent-0-x1y2z3w4"
    assert held.job_url == "http://127.0.0.1:8929/runnerconf/scratch/-/jobs/101"
    assert failure.value.expectation == failed
    assert failed.data() == {
        "check": "RC-RES-902",
        "expected": "nr_throttled > 0",
        "observed": {"nr_throttled": 0},
        "held": False,
        "job": None,
        "job_url": None,
        "pod": None,
        "detail": "cgroup v2",
        "summary": '{"nr_throttled": 0}',  # no summary given: the observed value on one line
    }
    assert held.summary == "1Gi"


def test_held_records_the_check_s_own_summary_and_the_result_carries_it(tmp_path: Path) -> None:
    info = CheckInfo("RC-RES-903", "build limits match", "set cpu_limit", "resources")
    RECORDER.take()
    seen = {"limits": {"cpu": "500m"}}
    checks_held(info, {"limits": {"cpu": "500m"}}, seen, job=job(), summary="build:  limits cpu\n500m")
    with pytest.raises(ConformanceFailure):
        fail(info, "500m", {"cpu": "1"}, summary="build: limits cpu 1")
    kept, failed = RECORDER.take()
    assert (kept.held, kept.observed, kept.summary) == (True, seen, "build: limits cpu 500m")  # one line
    assert (failed.held, failed.summary) == (False, "build: limits cpu 1")
    passed = CheckResult(
        "RC-RES-903", "c", "resources", "passed", expectations=[kept.data()], summary=kept.summary
    )
    doc = json.loads(write_reports([passed], None, tmp_path)["json"].read_text())
    assert doc["results"][0]["summary"] == "build: limits cpu 500m"
    assert doc["results"][0]["expectations"][0]["summary"] == "build: limits cpu 500m"
    assert passed.why() == "observed: build: limits cpu 500m"


def test_result_outcomes_are_validated() -> None:
    with pytest.raises(ValueError, match="outcome 'xfailed' is not one of"):
        CheckResult("RC-ORD-001", "c", "ordering", "xfailed")
