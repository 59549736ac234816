"""Under xdist a session makes exactly one pipeline attempt, whatever ends the worker that makes it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TOKEN_ENV = "RUNNERCONF_ONE_PIPELINE_TOKEN"
CHECKS = "\n".join(
    f"""
@check(id="RC-ONE-00{n}", claim="check {n} has its job", remediation="look at the probe", area="one",
       probes=("ordering",))
def test_check_{n}(job_evidence):
    assert job_evidence("ordering").status == "success"
"""
    for n in range(1, 7)
)
# Every worker loads this: the run's execute() is replaced by one that logs the attempt and then fails the way
# the test asks. Each test's setup logs the worker that ran it.
CONFTEST = """
import os

import pytest_runnerconf.run as run
from pytest_runnerconf.errors import GitLabError


def attempt(profile, plan, run_id, directory, progress, variables=None, **options):
    with open(os.environ["ONE_PIPELINE_ATTEMPTS"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    mode = os.environ["ONE_PIPELINE_MODE"]
    if mode == "bug":
        raise ValueError("a bug in the run")
    if mode == "gitlab":
        raise GitLabError("GitLab at https://gitlab.example.test answered 502 to POST /pipeline")
    os._exit(3)  # the worker dies in the middle of the run


run.execute = attempt


def pytest_runtest_setup(item):
    with open(os.environ["ONE_PIPELINE_WORKERS"], "a") as log:
        log.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv(TOKEN_ENV, "glpat-not-a-real-token-111111")
    monkeypatch.setenv("ONE_PIPELINE_ATTEMPTS", str(pytester.path / "attempts.log"))
    monkeypatch.setenv("ONE_PIPELINE_WORKERS", str(pytester.path / "workers.log"))
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_checks="from pytest_runnerconf.checks import check\n" + CHECKS)
    (pytester.path / "runnerconf.toml").write_text(
        f"""
[clusters.prod]
gitlab_url = "https://gitlab.example.test"
token_env = "{TOKEN_ENV}"
project = "group/scratch"
runner_tags = ["k8s"]
namespace = "ci"
"""
    )
    return pytester


@pytest.mark.parametrize(
    ("mode", "code", "said"),
    [
        ("bug", 1, "*the run stopped on an unexpected error (ValueError: a bug in the run)*"),
        ("gitlab", 6, "*could not test: GitLab at https://gitlab.example.test answered 502*"),
        ("crash", 1, "*the worker that ran the pipeline ended before it finished*"),
    ],
)
def test_whatever_ends_the_producer_no_second_pipeline(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str, code: int, said: str
) -> None:
    monkeypatch.setenv("ONE_PIPELINE_MODE", mode)
    result = project.runpytest_subprocess("--runner-cluster=prod", "-n", "2", "-p", "no:randomly")
    attempts = (project.path / "attempts.log").read_text().split()
    assert len(attempts) == 1, result.stdout.str()
    workers = set((project.path / "workers.log").read_text().split())
    assert len(workers) >= 2  # more than one worker needed the run
    assert result.ret == code
    result.stdout.fnmatch_lines([said])
