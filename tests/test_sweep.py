"""`runnerconf sweep`: what dead runs left is found by its run marker; pipelines cancelled, branches deleted,
pods listed only; nothing without the marker is touched. Against the local GitLab and Kubernetes APIs
in-process (loopback, no Docker)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gitlab
import pytest

from pytest_runnerconf import rbac, sweep
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.gitlab_driver import GitLabDriver
from pytest_runnerconf.kube_driver import KubeDriver
from pytest_runnerconf.local.gitlab_api import GitLabAPI
from pytest_runnerconf.local.gitlab_state import GitLabState
from pytest_runnerconf.local.kstore import KubeStore
from pytest_runnerconf.local.kube_api import KubeAPI, write_kubeconfig
from pytest_runnerconf.marker import commit_message, scratch_branch
from pytest_runnerconf.profile import profile_from_table
from pytest_runnerconf.scrub import KNOWN

TOKEN = "glpat-sweep-test-token-0123"
TOKEN_ENV = "RUNNERCONF_SWEEP_TEST_TOKEN"
CI = "stages: [t]\nprobe:\n  stage: t\n  script: [echo probe]\n"
DEAD = "20261130-010203-0a1b2c"


@dataclass
class World:
    gitlab: GitLabDriver
    kube: KubeDriver
    gl: gitlab.Gitlab
    store: KubeStore

    def branches(self) -> set[str]:
        return {b.name for b in self.gl.projects.get("runnerconf/scratch").branches.list(get_all=True)}

    def commit(self, branch: str, message: str) -> None:
        actions = [{"action": "create", "file_path": ".gitlab-ci.yml", "content": CI}]
        self.gl.projects.get("runnerconf/scratch").commits.create(
            {"branch": branch, "start_branch": "main", "commit_message": message, "actions": actions}
        )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    state = GitLabState(tmp_path / "gitlab", None, token=TOKEN)
    state.create_project("scratch")
    server = GitLabAPI(state, TOKEN).start()
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": "ci"}})
    kube_api = KubeAPI(store, {"least-token-sweep-1": rbac.grants([])})
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", kube_api.start().url, {"least": "least-token-sweep-1"}, "least", "ci"
    )
    table = {
        "gitlab_url": server.url,
        "token_env": TOKEN_ENV,
        "project": "runnerconf/scratch",
        "namespace": "ci",
        "kubeconfig": str(kubeconfig),
        "kube_context": "least",
    }
    profile = profile_from_table("t", table, "runnerconf.toml")
    driver = GitLabDriver(profile)
    driver.preflight()
    yield World(driver, KubeDriver(profile), gitlab.Gitlab(server.url, private_token=TOKEN), store)
    server.stop()
    kube_api.stop()
    KNOWN.clear()


def _dead_run(world: World) -> tuple[int, int]:
    """What a SIGKILLed run leaves: its branch, its pipeline (no runner here: pending), a pod of its job."""
    branch = scratch_branch(DEAD)
    world.gitlab.push_files(branch, {".gitlab-ci.yml": CI}, commit_message(DEAD))
    pipeline = world.gitlab.create_pipeline(branch, {})
    job_id = int(world.gitlab.pipeline_jobs(int(pipeline["id"]))[0]["id"])
    world.store.create(
        {
            "kind": "Pod",
            "metadata": {
                "name": "runner-abc-project-1-concurrent-0-deadbeef",
                "namespace": "ci",
                "labels": {
                    "pod": "runner-abc-project-1-concurrent-0-deadbeef",
                    "project.runner.gitlab.com/id": str(world.gitlab.project_id),
                },
                "annotations": {"job.runner.gitlab.com/id": str(job_id)},
            },
            "spec": {"containers": [{"name": "build", "image": "alpine"}]},
            "status": {"phase": "Running"},
        }
    )
    # A runner before 17.9 marks its pods with the `pod` label alone; the job is in the build's env.
    old = f"runner-abc-project-{world.gitlab.project_id}-concurrent-1-0ld0ld00"
    env = [
        {"name": "CI_JOB_ID", "value": str(job_id)},
        {"name": "CI_PROJECT_ID", "value": str(world.gitlab.project_id)},
    ]
    world.store.create(
        {
            "kind": "Pod",
            "metadata": {"name": old, "namespace": "ci", "labels": {"pod": old}},
            "spec": {"containers": [{"name": "build", "image": "alpine", "env": env}]},
            "status": {"phase": "Pending"},
        }
    )
    # Another project's pod of a job with the same id on another GitLab project: not ours.
    other = "runner-abc-project-99-concurrent-0-0th3r000"
    world.store.create(
        {
            "kind": "Pod",
            "metadata": {"name": other, "namespace": "ci", "labels": {"pod": other}},
            "spec": {"containers": [{"name": "build", "image": "alpine", "env": env[:1]}]},
            "status": {"phase": "Running"},
        }
    )
    return int(pipeline["id"]), job_id


def test_sweep_finds_cancels_deletes_and_only_lists_pods(world: World) -> None:
    pipeline_id, job_id = _dead_run(world)
    world.commit("runnerconf/not-a-run-id", "a person's branch under our prefix")
    world.commit(scratch_branch("20261130-010203-ffffff"), "a commit runnerconf never writes")
    found = sweep.find(world.gitlab, world.kube, older_than_s=0)
    assert [(f.kind, f.name) for f in found] == [
        ("pipeline", f"#{pipeline_id}"),
        ("branch", scratch_branch(DEAD)),
        ("pod", "runner-abc-project-1-concurrent-0-deadbeef"),
        ("pod", "runner-abc-project-1-concurrent-1-0ld0ld00"),
    ], "the pre-17.9 pod is found by its marks; the other project's is not"
    assert f"job {job_id} of pipeline #{pipeline_id}" in found[2].detail

    dry = sweep.act(world.gitlab, found, dry_run=True)
    assert [line.split(": ", 1)[1] for line, ok in dry][:2] == [
        "would cancel (dry run)",
        "would delete (dry run)",
    ]
    assert scratch_branch(DEAD) in world.branches()

    done = sweep.act(world.gitlab, found, dry_run=False)
    assert [line.rsplit(": ", 1)[-1] for line, _ok in done[:2]] == ["cancelled", "deleted"]
    assert "listed, not deleted" in done[2][0] and all(ok for _line, ok in done)
    assert world.gitlab.pipeline(pipeline_id)["status"] == "canceled"
    assert world.branches() == {"main", "runnerconf/not-a-run-id", scratch_branch("20261130-010203-ffffff")}
    assert world.store.list("Pod", "ci")[0], "pods are the runner's: never deleted"


def test_young_leftovers_are_left_to_the_run_that_may_still_own_them(world: World) -> None:
    _dead_run(world)
    assert sweep.find(world.gitlab, world.kube, older_than_s=3600) == []


def test_a_pipeline_whose_branch_is_gone_is_still_found(world: World) -> None:
    pipeline_id, _ = _dead_run(world)
    world.gitlab.delete_branch(scratch_branch(DEAD))
    found = sweep.find(world.gitlab, None, older_than_s=0)
    assert [(f.kind, f.name) for f in found] == [("pipeline", f"#{pipeline_id}")]


def test_the_start_warning_names_the_command() -> None:
    items = [sweep.Leftover("branch", f"runnerconf/{DEAD}", "2.0h old")]
    text = sweep.warning(items, "prod")
    assert text == (
        f"earlier runs left 1 object(s) on cluster prod: branch runnerconf/{DEAD} (2.0h old); "
        "`runnerconf sweep --runner-cluster=prod` removes them"
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert sweep.parse_duration(text) == seconds


def test_a_bad_duration_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--older-than='soon' is not a duration; use a form such as 90s"):
        sweep.parse_duration("soon")
