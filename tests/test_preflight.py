"""Preflight before anything is pushed: the token's scopes, CI/CD on, pushing runnerconf/* allowed, an online
runner with the tags; every problem in one sentence. Against the local GitLab API in-process (loopback) with
python-gitlab as the client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gitlab
import pytest

from pytest_runnerconf.errors import GitLabError
from pytest_runnerconf.gitlab_driver import GitLabDriver
from pytest_runnerconf.local.gitlab_api import GitLabAPI
from pytest_runnerconf.local.gitlab_state import GitLabState
from pytest_runnerconf.local.model import JobPayload
from pytest_runnerconf.marker import BRANCH_PREFIX
from pytest_runnerconf.profile import profile_from_table
from pytest_runnerconf.scrub import KNOWN

TOKEN = "glpat-preflight-test-0123"
TOKEN_ENV = "RUNNERCONF_PREFLIGHT_TEST_TOKEN"


class Runner:
    """The JobQueue side of an online runner with these tags."""

    def __init__(self, tags: frozenset[str]) -> None:
        self.tags = tags

    def submit(self, payload: JobPayload) -> None:
        raise AssertionError("a preflight creates no job")

    def cancel(self, job_id: int) -> None:
        raise AssertionError("a preflight cancels nothing")

    def runner_tags(self) -> frozenset[str]:
        return self.tags


@dataclass
class World:
    api: GitLabAPI
    url: str
    gl: gitlab.Gitlab

    def driver(self, tags: tuple[str, ...] = ("runnerconf-local",)) -> GitLabDriver:
        table = {
            "gitlab_url": self.url,
            "token_env": TOKEN_ENV,
            "project": "runnerconf/scratch",
            "namespace": "ci",
            "runner_tags": list(tags),
        }
        driver = GitLabDriver(profile_from_table("t", table, "runnerconf.toml"))
        driver.preflight()
        return driver

    def writes(self) -> tuple[int, int]:
        project = self.gl.projects.get("runnerconf/scratch")
        return len(project.branches.list(get_all=True)), len(project.pipelines.list(get_all=True))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    state = GitLabState(tmp_path / "gitlab", Runner(frozenset({"runnerconf-local", "dind"})), token=TOKEN)
    state.create_project("scratch")
    api = GitLabAPI(state, TOKEN)
    server = api.start()
    yield World(api, server.url, gitlab.Gitlab(server.url, private_token=TOKEN))
    server.stop()
    KNOWN.clear()


def test_a_ready_project_passes_and_nothing_is_written(world: World) -> None:
    before = world.writes()
    world.driver(("runnerconf-local", "dind")).readiness(BRANCH_PREFIX)
    world.driver(()).readiness(BRANCH_PREFIX)  # untagged jobs: the runner list cannot tell, so not judged
    assert world.writes() == before


def test_every_problem_is_named_at_once(world: World) -> None:
    world.api.token_scopes = ("read_api", "read_repository")
    world.api.builds_access_level = "disabled"
    world.api.protected_branches = {"runnerconf/*": 0}
    driver = world.driver(("runnerconf-local", "gpu"))
    before = world.writes()
    with pytest.raises(GitLabError) as info:
        driver.readiness(BRANCH_PREFIX)
    sentence = str(info.value)
    parts = sentence.split("; ")
    assert any(
        p.startswith(f"the token from ${TOKEN_ENV} has the scopes [read_api, read_repository]") for p in parts
    ), sentence
    assert "CI/CD is disabled in project runnerconf/scratch" in sentence
    assert "the protected branch rule 'runnerconf/*' of project runnerconf/scratch" in sentence
    assert "no online runner with tags [runnerconf-local, gpu] is available" in sentence
    for setting in ("token_env", "project", "runner_tags"):
        assert f"clusters.t.{setting}" in sentence
    assert ". " not in sentence and TOKEN not in sentence
    assert world.writes() == before, "a preflight writes nothing"


@pytest.mark.parametrize(
    ("rules", "refused"),
    [
        ({"runnerconf/*": 0}, True),  # no one may push
        ({"*": 0}, True),
        ({"runnerconf/*": 30}, False),  # developers may
        ({"release/*": 0}, False),  # another branch's rule
    ],
)
def test_protected_branch_rules_that_refuse_the_scratch_branch(
    world: World, rules: dict[str, int], refused: bool
) -> None:
    world.api.protected_branches = rules
    driver = world.driver()
    if refused:
        with pytest.raises(GitLabError, match="does not let this token's user push runnerconf/\\* branches"):
            driver.readiness(BRANCH_PREFIX)
    else:
        driver.readiness(BRANCH_PREFIX)
