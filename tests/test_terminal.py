"""Progress as pytest users see it (pytester; a pseudo-terminal for the live form), with a scripted run.

The run is scripted (the session's `execute` replaced in the test's conftest) so that these tests need no
cluster; tests/local/test_cluster_terminal.py shows the same on real runs of the local cluster.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter

import pytest

from tests.pty_session import run_in_pty

pytest_plugins = ["pytester"]

CONFTEST = '''
import importlib

from pytest_runnerconf.evidence import RunEvidence, save
from pytest_runnerconf.progress import RunChanges

PIPELINE = {"id": 3, "web_url": "https://gitlab.test/g/s/-/pipelines/3"}


def jobs(**statuses):
    return {i: {"name": n, "status": s, "duration": 2.0} for i, (n, s) in enumerate(statuses.items(), 1)}


def scripted_execute(profile, plan, run_id, evidence_dir, progress, variables=None, **options):
    """A run as run.execute reports it: looks once a second, 40 s of them without any change."""
    now = [0.0]
    changes = RunChanges(progress, profile.name, clock=lambda: now[0])

    def look(seconds, js, pods, waiting=("", 0)):
        for _ in range(seconds):
            now[0] += 1.0
            changes.look(PIPELINE, js, pods, waiting)

    changes.preflight(profile.gitlab_url, profile.namespace)
    look(2, jobs(alpha="pending", beta="pending"), {})
    look(40, jobs(alpha="running", beta="running"), {"pod-a": (1, False), "pod-b": (2, False)})
    look(2, jobs(alpha="success", beta="running"), {"pod-a": (1, True), "pod-b": (2, False)})
    look(2, jobs(alpha="success", beta="failed"), {"pod-a": (1, True), "pod-b": (2, False)}, ("pods", 1))
    look(1, jobs(alpha="success", beta="failed"), {"pod-a": (1, True), "pod-b": (2, True)})
    evidence = RunEvidence(run_id=run_id, cluster=profile.name, profile=profile.summary())
    save(evidence, evidence_dir)
    changes.done(0)
    return evidence


# import_module, not `from pytest_runnerconf import run`: pytester drops the modules a run imported, and the
# package attribute would then name an old copy that the session no longer imports.
importlib.import_module("pytest_runnerconf.run").execute = scripted_execute
'''
PROFILE = """
[clusters.lab]
gitlab_url = "https://gitlab.test"
token_env = "RUNNERCONF_TERMINAL_TEST_TOKEN"
project = "g/s"
namespace = "ci"
"""
CHECKS = """
def test_one(runnerconf_evidence):
    pass

def test_two(runnerconf_evidence):
    pass
"""
OURS = re.compile(r"^runnerconf lab: ")


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("CI", "BUILD_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\n")
    (pytester.path / "runnerconf.toml").write_text(PROFILE)
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def _ours(lines: list[str]) -> list[str]:
    return [line for line in lines if OURS.match(line)]


def _assert_log_form(lines: list[str]) -> None:
    ours = _ours(lines)
    assert ours, "\n".join(lines)
    assert not any("\r" in line or "\x1b" in line for line in ours)
    assert [line for line, n in Counter(ours).items() if n > 1] == []
    for job, status in (("alpha", "success"), ("beta", "failed")):
        assert sum(1 for line in ours if f"job {job} finished: {status}" in line) == 1
    # pytest's result letters never land at the end of an otherwise empty line, nor after our lines
    assert not any(re.fullmatch(r"\s*[.FEsx]+\s*(\[\s*\d+%\])?", line) for line in lines), "\n".join(lines)


def test_without_a_terminal_each_change_is_one_line_with_the_time(project: pytest.Pytester) -> None:
    result = project.runpytest("--runner-cluster=lab")
    result.assert_outcomes(passed=2)
    lines = result.stdout.lines
    _assert_log_form(lines)
    ours = _ours(lines)
    assert [re.sub(r"^runnerconf lab: \[ *\d+s\] ", "", line) for line in ours] == [
        "preflight: GitLab https://gitlab.test, namespace ci",
        "pipeline #3 created with 2 jobs https://gitlab.test/g/s/-/pipelines/3",
        "job alpha started",
        "job beta started",
        "still running: pipeline #3: 0/2 jobs finished, running: alpha, beta, pods 0/2 deleted",
        "job alpha finished: success (2.0s)",
        "job beta finished: failed (2.0s)",
        "all 2 jobs finished (1 success, 1 failed); waiting for 1 pod to be deleted",
        "done: 2 jobs (1 success, 1 failed), 2 of 2 pods deleted",
    ]
    # pytest's own row: its module prefix before our lines, and again (with the results) after them
    first, last = lines.index(ours[0]), lines.index(ours[-1])
    assert lines[first - 1] == "test_checks.py "
    assert re.fullmatch(r"test_checks\.py \.\. +\[100%\]", lines[last + 1])


def test_quiet_and_very_quiet(project: pytest.Pytester) -> None:
    quiet = _ours(project.runpytest("--runner-cluster=lab", "-q").stdout.lines)
    assert [line.split("] ", 1)[1].split()[0].rstrip(":") for line in quiet] == ["pipeline", "still", "done"]
    result = project.runpytest("--runner-cluster=lab", "-qq")
    assert result.ret == 0  # -qq drops pytest's own summary line too
    assert not [line for line in result.stdout.lines if line.startswith("runnerconf")]


def test_verbose_shows_pods_and_pytest_keeps_its_test_rows(project: pytest.Pytester) -> None:
    result = project.runpytest("--runner-cluster=lab", "-v")
    lines = result.stdout.lines
    _assert_log_form(lines)
    assert any("pod pod-b deleted (job beta)" in line for line in _ours(lines))
    last = lines.index(_ours(lines)[-1])
    assert re.fullmatch(r"test_checks\.py::test_one PASSED +\[ 50%\]", lines[last + 1])


def _pty(project: pytest.Pytester, *args: str, ci: bool = False):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BUILD_NUMBER", "PYTEST_ADDOPTS")}
    env.pop("COLUMNS", None)
    if ci:
        env["CI"] = "true"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--runner-cluster=lab", *args]
    return run_in_pty(argv, cwd=project.path, env=env, columns=100, timeout_s=120)


def test_on_a_terminal_one_live_row_ends_as_the_done_line(project: pytest.Pytester) -> None:
    result = _pty(project)
    assert result.returncode == 0, result.raw
    assert "\r" + "runnerconf lab: [" in result.raw  # the row is rewritten in place
    rows = result.screen()
    done = next(i for i, row in enumerate(rows) if OURS.match(row))
    assert rows[done - 1] == "test_checks.py"
    assert re.fullmatch(
        r"runnerconf lab: \[ *\d+s\] done: 2 jobs \(1 success, 1 failed\), 2 of 2 pods deleted", rows[done]
    )
    assert re.fullmatch(r"test_checks\.py \.\. +\[100%\]", rows[done + 1])
    assert len(_ours(rows)) == 1  # everything else of ours was the live row


def test_on_a_terminal_in_ci_the_log_form_is_used(project: pytest.Pytester) -> None:
    result = _pty(project, ci=True)
    assert result.returncode == 0, result.raw
    _assert_log_form(result.lines())
    assert len(_ours(result.screen())) == len(_ours(result.lines())) == 9
