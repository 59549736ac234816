"""Several clusters in one invocation: IDs per cluster, runs at once, the matrix report, the combined exit status.

The pytester sessions replace run.execute with a stand-in that saves a small bundle (or fails the way the test
asks) per cluster; the stand-ins of both clusters wait for each other, so the runs can only finish when they
run at the same time. tests/local/test_multicluster_local.py runs two real pipelines on the local cluster.
"""

from __future__ import annotations

import pytest

from pytest_runnerconf.multicluster import ClusterError, combine_exit, outcome_exit
from pytest_runnerconf.report_multi import matrix, multi_doc, render_html, render_md
from pytest_runnerconf.session import split_clusters
from tests.report_schema import assert_valid_report, assert_valid_report_file

pytest_plugins = ["pytester"]

TOKEN_ENV = "RUNNERCONF_MULTI_TEST_TOKEN"

# ---------------------------------------------------------------- offline units


def test_cluster_names_split_on_commas_once_each() -> None:
    assert split_clusters("a,b") == ("a", "b")
    assert split_clusters(" a , b,a,,") == ("a", "b")
    assert split_clusters("local") == ("local",)
    assert split_clusters(",") == ()


@pytest.mark.parametrize(
    ("codes", "combined"),
    [
        ([0, 0], 0),
        ([0, 6], 6),
        ([6, 0], 6),
        ([6, 1], 1),
        ([1, 0, 6], 1),
        ([4, 1], 4),  # bad input for one cluster is the session's usage error
        ([1, 2], 2),  # an interrupt says the most
        ([5, 0], 0),  # a cluster whose checks were all deselected does not hide another's pass
        ([], 0),
    ],
)
def test_exit_statuses_combine_failed_over_untested_over_ok(codes: list[int], combined: int) -> None:
    assert combine_exit(codes) == combined


def test_a_clusters_exit_status_follows_its_outcomes() -> None:
    assert outcome_exit(["passed", "skipped"]) == 0
    assert outcome_exit(["passed", "could_not_test"]) == 6
    assert outcome_exit(["could_not_test", "failed"]) == 1
    assert outcome_exit(["error"]) == 1
    assert outcome_exit([]) == 0


def _result(
    check_id: str, outcome: str, cluster: str, nodeid: str = "", **fields: object
) -> dict[str, object]:
    base: dict[str, object] = {
        "id": check_id,
        "claim": f"claim of {check_id}",
        "area": "ordering",
        "outcome": outcome,
        "message": "",
        "job": None,
        "duration": 0.1,
        "nodeid": nodeid or f"suites/test_x.py::test_{check_id}[{cluster}]",
        "cause": None,
        "sentence": "",
        "remediation": "look at the runner",
        "expected": None,
        "observed": None,
        "pod": None,
        "job_url": None,
        "detail": "",
        "expectations": [],
        "read": [],
        "attempts": [],
        "summary": "",
        "cluster": cluster,
    }
    base.update(fields)
    return base


def test_matrix_shows_each_checks_worst_outcome_per_cluster() -> None:
    results = [
        _result("RC-ORD-001", "passed", "a"),
        _result("RC-ORD-001", "failed", "b", summary="init ran after build"),
        _result("RC-VOL-001", "passed", "a", nodeid="x::t[one-a]"),
        _result("RC-VOL-001", "could_not_test", "a", nodeid="x::t[two-a]", cause="api-error", sentence="502"),
    ]
    found = matrix(["a", "b"], results)
    assert found["clusters"] == ["a", "b"]
    rows = {row["id"]: row for row in found["rows"]}
    assert rows["RC-ORD-001"]["outcomes"] == {"a": "passed", "b": "failed"}
    assert rows["RC-ORD-001"]["why"]["b"] == "observed: init ran after build"
    assert rows["RC-VOL-001"]["outcomes"] == {"a": "could_not_test", "b": None}  # not run on b
    assert rows["RC-VOL-001"]["why"]["a"] == "api-error: 502"


def _cluster_doc(results: list[dict[str, object]], wall: float) -> dict[str, object]:
    return {
        "results": results,
        "notes": ["a note"],
        "jobs": 2,
        "gitlab_url": "https://g.test",
        "gitlab_version": "18.11.0",
        "kubernetes_version": "v1.31.0",
        "project": "group/scratch",
        "pipeline_url": "https://g.test/group/scratch/-/pipelines/7",
        "runner_versions": ["18.11.0"],
        "cgroup_versions": ["v2"],
        "wall_s": wall,
        "slowest_job": {"name": "ordering", "duration_s": 3.0},
        "evidence": "/tmp/e",
    }


def test_the_combined_report_has_sections_a_matrix_and_a_valid_schema() -> None:
    docs = {
        "a": _cluster_doc([_result("RC-ORD-001", "passed", "a")], 12.0),
        "b": _cluster_doc(
            [_result("RC-ORD-001", "could_not_test", "b", cause="api-error", sentence="502")], 1.0
        ),
    }
    errors = {"b": ClusterError("GitLab answered 502", 6, cause="api-error")}
    doc = multi_doc(["a", "b"], docs, errors, {"a": "a/report.html", "b": "b/report.html"}, ["pytest", "-x"])
    assert_valid_report(doc)
    assert doc["verdict"] == "could not test"
    assert doc["exit_code"] == 6
    assert doc["counts"]["passed"] == 1 and doc["counts"]["could_not_test"] == 1
    assert [r["cluster"] for r in doc["results"]] == ["a", "b"]
    assert doc["cluster"] is None  # the run facts are each cluster's
    a, b = doc["clusters"]
    assert (a["name"], a["verdict"], a["exit_code"], a["wall_s"]) == ("a", "conformant", 0, 12.0)
    assert (b["verdict"], b["exit_code"], b["error"]["cause"]) == ("could not test", 6, "api-error")
    assert b["not_passing"] == [
        {
            "id": "RC-ORD-001",
            "claim": "claim of RC-ORD-001",
            "outcome": "could_not_test",
            "why": "api-error: 502",
        }
    ]
    assert doc["notes"] == ["a: a note", "b: a note"]
    md = render_md(doc)
    assert "| check | claim | a | b |" in md
    assert "| RC-ORD-001 | claim of RC-ORD-001 | PASS | COULD NOT TEST |" in md
    assert "## a: conformant (exit 0)" in md and "## b: could not test (exit 6)" in md
    assert "- no evidence: GitLab answered 502" in md
    html = render_html(doc)
    assert '<a href="a/report.html">' in html and '<span class="outcome could_not_test"' in html
    assert html.count('<section class="cluster"') == 2


def test_a_failure_on_one_cluster_fails_the_invocation() -> None:
    docs = {
        "a": _cluster_doc([_result("RC-ORD-001", "failed", "a")], 1.0),
        "b": _cluster_doc([_result("RC-ORD-001", "could_not_test", "b", cause="api-error")], 1.0),
    }
    doc = multi_doc(["a", "b"], docs, {}, {}, None)
    assert (doc["verdict"], doc["exit_code"]) == ("not conformant", 1)
    assert [s["exit_code"] for s in doc["clusters"]] == [1, 6]


def test_a_cell_cannot_inject_markup() -> None:
    docs = {"a": _cluster_doc([_result("RC-ORD-001", "failed", "a", summary="<script>x</script>|")], 1.0)}
    doc = multi_doc(["a"], docs, {}, {}, None)
    assert "<script>" not in render_html(doc)
    assert "<script>" not in render_md(doc)


# ---------------------------------------------------------------- pytester sessions

CHECKS = """
from pytest_runnerconf.checks import check


@check(id="RC-MUL-001", claim="the job ran", remediation="look at the probe", area="multi", probes=("ordering",))
def test_job_ran(job_evidence):
    assert job_evidence("ordering").job["status"] == "success"


@check(id="RC-MUL-002", claim="the namespace is ci", remediation="set namespace", area="multi", probes=("ordering",))
def test_namespace(runnerconf_profile):
    assert runnerconf_profile.namespace == "ci"


def test_not_a_check():
    pass
"""

# The stand-in run: saves a one-job bundle, after waiting (up to 20 s) until every cluster's run has started;
# or fails as MULTI_MODE_<cluster> says.
CONFTEST = """
import os
import time
from pathlib import Path

import pytest_runnerconf.run as run
from pytest_runnerconf.errors import ConfigError, GitLabError
from pytest_runnerconf.evidence import JobEvidence, RunEvidence, save


def attempt(profile, plan, run_id, directory, progress, variables=None, **options):
    log = Path(os.environ["MULTI_LOG"])
    with log.open("a") as f:
        f.write(f"start {profile.name} {run_id} {os.getpid()}\\n")
    mode = os.environ.get(f"MULTI_MODE_{profile.name}", "pass")
    if mode == "hang":  # until interrupted; then "clean up" as the real run does, and let the interrupt go on
        try:
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            with log.open("a") as f:
                f.write(f"cleaned {profile.name} {run_id}\\n")
            raise
    if mode == "config":
        raise ConfigError(f"the environment variable RUNNERCONF_UNSET holding the GitLab token of {profile.name} is not set")
    if mode == "gitlab":
        raise GitLabError(f"GitLab at {profile.gitlab_url} answered 502 to POST /pipeline")
    deadline = time.monotonic() + 20
    while log.read_text().count("start ") < int(os.environ["MULTI_CLUSTERS"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    job = JobEvidence(name="ordering", job={"name": "ordering", "status": "success"}, trace="")
    evidence = RunEvidence(run_id=run_id, cluster=profile.name, profile=profile.summary(), jobs={"ordering": job},
                           plan=["ordering"], started_at=1.0, finished_at=3.0)
    save(evidence, directory)
    with log.open("a") as f:
        f.write(f"end {profile.name} {run_id}\\n")
    return evidence


run.execute = attempt
"""


def _table(name: str, namespace: str) -> str:
    return f"""
[clusters.{name}]
gitlab_url = "https://{name}.gitlab.example.test"
token_env = "{TOKEN_ENV}"
project = "group/scratch"
runner_tags = ["k8s"]
namespace = "{namespace}"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv(TOKEN_ENV, "glpat-not-a-real-token-222222")
    monkeypatch.setenv("MULTI_LOG", str(pytester.path / "runs.log"))
    monkeypatch.setenv("MULTI_CLUSTERS", "2")
    for name in ("RUNNERCONF_CLUSTER", "RUNNERCONF_CONFIG", "RUNNERCONF_REPORT", "RUNNERCONF_EVIDENCE", "CI"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_checks=CHECKS)
    (pytester.path / "runnerconf.toml").write_text(
        _table("a", "ci") + _table("b", "other") + _table("c", "ci")
    )
    return pytester


def _log(project: pytest.Pytester) -> list[list[str]]:
    return [line.split() for line in (project.path / "runs.log").read_text().splitlines()]


def _report(project: pytest.Pytester) -> dict[str, object]:
    return assert_valid_report_file(project.path / "runnerconf-report" / "report.json")


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_two_clusters_run_at_once_and_each_check_runs_per_cluster(
    project: pytest.Pytester, xdist: bool
) -> None:
    args = ["--runner-cluster=a,b", "-v", "-p", "no:randomly", *(["-n", "2"] if xdist else [])]
    result = project.runpytest_subprocess(*args)
    out = result.stdout.str()
    for nodeid in ("test_job_ran[a]", "test_job_ran[b]", "test_namespace[a]", "test_namespace[b]"):
        assert f"test_checks.py::{nodeid} " in out, out
    assert "test_checks.py::test_not_a_check" in out and "test_not_a_check[" not in out  # no cluster to judge
    result.assert_outcomes(passed=4, failed=1)  # b's namespace is "other"
    assert result.ret == 1
    log = _log(project)
    starts = [entry for entry in log if entry[0] == "start"]
    assert sorted(entry[1] for entry in starts) == ["a", "b"]  # one pipeline per cluster, across workers too
    assert [entry[0] for entry in log[:2]] == ["start", "start"]  # both began before either finished
    assert starts[0][2] != starts[1][2]  # distinct run ids (and so scratch branches)
    result.stdout.fnmatch_lines(["runnerconf [[]a[]]: wall 2.0s*", "runnerconf [[]b[]]: wall 2.0s*"])
    report = _report(project)
    assert report["exit_code"] == 1 and report["verdict"] == "not conformant"
    rows = {row["id"]: row["outcomes"] for row in report["matrix"]["rows"]}  # type: ignore[index]
    assert rows == {
        "RC-MUL-001": {"a": "passed", "b": "passed"},
        "RC-MUL-002": {"a": "passed", "b": "failed"},
    }
    sections = {s["name"]: s for s in report["clusters"]}  # type: ignore[attr-defined]
    assert (sections["a"]["verdict"], sections["a"]["exit_code"]) == ("conformant", 0)
    assert (sections["b"]["verdict"], sections["b"]["exit_code"]) == ("not conformant", 1)
    for name in ("a", "b"):
        own = assert_valid_report_file(project.path / "runnerconf-report" / name / "report.json")
        assert own["cluster"] == name and {r["nodeid"][-3:] for r in own["results"]} == {f"[{name}]"}
        assert (project.path / "runnerconf-report" / name / "report.html").is_file()
    md = (project.path / "runnerconf-report" / "report.md").read_text()
    assert "| RC-MUL-002 | the namespace is ci | PASS | FAIL |" in md


def test_a_cluster_that_cannot_be_tested_leaves_the_other_judged(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTI_MODE_c", "gitlab")
    result = project.runpytest_subprocess("--runner-cluster=a", "--runner-cluster=c", "-p", "no:randomly")
    assert result.ret == 6  # a conformant, c could not be tested
    result.stdout.fnmatch_lines(
        ["*runnerconf: cluster c: could not test: GitLab at https://c.gitlab.example.test answered 502*"]
    )
    assert "Traceback" not in result.stdout.str()
    report = _report(project)
    rows = {row["id"]: row["outcomes"] for row in report["matrix"]["rows"]}  # type: ignore[index]
    assert rows["RC-MUL-001"] == {"a": "passed", "c": "could_not_test"}
    sections = {s["name"]: s for s in report["clusters"]}  # type: ignore[attr-defined]
    assert sections["c"]["error"]["cause"] == "api-error"
    assert sections["a"]["exit_code"] == 0 and sections["c"]["exit_code"] == 6
    c_results = [r for r in report["results"] if r["cluster"] == "c"]  # type: ignore[index, union-attr]
    assert {r["outcome"] for r in c_results} == {"could_not_test"}
    assert all(r["sentence"].startswith("cluster c: GitLab at") for r in c_results)


def test_bad_input_for_one_cluster_is_the_sessions_usage_error(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTI_MODE_c", "config")
    result = project.runpytest_subprocess("--runner-cluster=a,c", "-p", "no:randomly", "-rs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes(passed=3, skipped=2)  # c's checks: no verdict, and the reason says why
    result.stdout.fnmatch_lines(
        [
            "runnerconf: cluster c: could not test: the environment variable RUNNERCONF_UNSET*",
            "SKIPPED * cluster c: could not test: the environment variable RUNNERCONF_UNSET holding the GitLab*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    sections = {s["name"]: s for s in _report(project)["clusters"]}  # type: ignore[attr-defined]
    assert (sections["c"]["exit_code"], sections["c"]["verdict"]) == (4, "could not test")
    assert (sections["a"]["exit_code"], sections["a"]["verdict"]) == (0, "conformant")


def test_one_cluster_keeps_ids_and_report_as_they_were(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTI_CLUSTERS", "1")
    result = project.runpytest_subprocess("--runner-cluster=a", "-v", "-p", "no:randomly")
    assert "test_checks.py::test_job_ran PASSED" in result.stdout.str()
    assert result.ret == 0
    report = _report(project)
    assert "matrix" not in report and "clusters" not in report and report["cluster"] == "a"
    assert all("cluster" not in r for r in report["results"])  # type: ignore[union-attr]


def test_an_unknown_cluster_among_several_names_it_and_the_known_ones(project: pytest.Pytester) -> None:
    result = project.runpytest("--runner-cluster=a,nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *runnerconf.toml: no cluster 'nope' under [[]clusters]; known clusters: a, b, c*"]
    )


def test_replay_takes_one_cluster(project: pytest.Pytester) -> None:
    (project.path / "bundle").mkdir()
    result = project.runpytest("--runner-cluster=a,b", f"--runnerconf-replay={project.path / 'bundle'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --runnerconf-replay re-asserts one evidence bundle, but --runner-cluster*"]
    )


def test_the_report_dir_for_an_odd_cluster_name_stays_inside() -> None:
    from pytest_runnerconf.report_multi import cluster_dir

    assert cluster_dir("prod-eu_1", 0) == "prod-eu_1"
    assert cluster_dir("../etc", 1) == "cluster-2"
    assert cluster_dir("..", 0) == "cluster-1"


def test_a_signal_interrupts_every_clusters_run_and_each_cleans_up(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys
    import time

    monkeypatch.setenv("MULTI_MODE_a", "hang")
    monkeypatch.setenv("MULTI_MODE_b", "hang")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "--runner-cluster=a,b",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
    ]
    proc = subprocess.Popen(
        argv, cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = project.path / "runs.log"
    deadline = time.monotonic() + 60
    while proc.poll() is None and (not log.exists() or log.read_text().count("start ") < 2):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    cleaned = sorted(entry[1] for entry in _log(project) if entry[0] == "cleaned")
    assert cleaned == ["a", "b"], out  # the signal reached the thread of each run
