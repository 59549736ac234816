"""The local GitLab driven over real HTTP by python-gitlab, with an in-test runner queue."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gitlab
import gitlab.exceptions
import pytest
import requests

from pytest_runnerconf.local.gitlab_api import GitLabAPI
from pytest_runnerconf.local.gitlab_state import GitLabState
from pytest_runnerconf.local.gitrepo import FileAction
from pytest_runnerconf.local.model import JobPayload

TOKEN = "glpat-local-test-token"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

CI = """
stages: [build, test]
variables:
  GLOBAL_VAR: global
  SHARED: from-global
build:
  stage: build
  image: alpine:3.20
  tags: [local]
  services:
    - name: redis:7
      alias: cache
  variables:
    SHARED: from-job
  script:
    - ./probe.sh
  artifacts:
    paths: [out/]
    when: always
test:
  stage: test
  image: {name: busybox:1.36, entrypoint: [""]}
  tags: [local]
  script: echo test
"""


@dataclass
class RecordingQueue:
    """Stands in for the emulated runner: records what GitLab hands over and what it asks to cancel."""

    tags: frozenset[str] = frozenset({"local"})
    state: GitLabState | None = None
    autostart: bool = False  # start jobs from inside submit(), as a runner thread racing the caller would
    submitted: list[JobPayload] = field(default_factory=list)
    canceled: list[int] = field(default_factory=list)

    def submit(self, payload: JobPayload) -> None:
        self.submitted.append(payload)
        if self.autostart and self.state is not None:
            self.state.job_started(payload.id, "autostart runner")

    def cancel(self, job_id: int) -> None:
        self.canceled.append(job_id)

    def runner_tags(self) -> frozenset[str]:
        return self.tags

    def names(self) -> list[str]:
        return [p.name for p in self.submitted]


@dataclass
class Local:
    state: GitLabState
    queue: RecordingQueue
    url: str
    gl: gitlab.Gitlab
    project: Any

    def commit(self, files: dict[str, str], branch: str = "main", message: str = "probe files") -> str:
        existing = {e["path"] for e in self.project.repository_tree(ref="main", recursive=True, get_all=True)}
        actions = [
            {"action": "update" if p in existing else "create", "file_path": p, "content": c}
            for p, c in files.items()
        ]
        return str(
            self.project.commits.create({"branch": branch, "commit_message": message, "actions": actions}).id
        )

    def pipeline(self, ci: str, variables: list[dict[str, str]] | None = None) -> Any:
        self.commit({".gitlab-ci.yml": ci})
        return self.project.pipelines.create({"ref": "main", "variables": variables or []})

    def finish(self, job_id: int, status: str = "success", reason: str | None = None) -> None:
        self.state.job_started(job_id, "test runner")
        self.state.job_finished(job_id, status, reason)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    queue = RecordingQueue()
    state = GitLabState(tmp_path, queue, token=TOKEN)
    queue.state = state
    state.create_project("scratch")
    server = GitLabAPI(state, TOKEN).start()
    gl = gitlab.Gitlab(server.url, private_token=TOKEN)
    try:
        yield Local(state, queue, server.url, gl, gl.projects.get("runnerconf/scratch"))
    finally:
        server.stop()


def by_name(pipeline: Any) -> dict[str, Any]:
    return {j.name: j for j in pipeline.jobs.list(get_all=True)}


# auth, version, project -----------------------------------------------------------------------------


def test_version_user_and_auth(local: Local) -> None:
    assert local.gl.version() == ("18.0.0", "runnerconf-local")
    local.gl.auth()
    assert local.gl.user is not None
    assert (local.gl.user.id, local.gl.user.username) == (1, "runnerconf")

    bearer = gitlab.Gitlab(local.url, oauth_token=TOKEN)
    bearer.auth()
    assert bearer.user is not None and bearer.user.username == "runnerconf"

    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gitlab.Gitlab(local.url, private_token="wrong").auth()
    anonymous = requests.get(f"{local.url}/api/v4/projects/1", timeout=5)
    assert (anonymous.status_code, anonymous.json()) == (401, {"message": "401 Unauthorized"})


def test_project_by_path_and_id(local: Local) -> None:
    project = local.project
    assert (project.id, project.path_with_namespace, project.default_branch) == (
        1,
        "runnerconf/scratch",
        "main",
    )
    assert project.web_url == f"{local.url}/runnerconf/scratch"
    assert project.namespace["id"] == 2
    assert local.gl.projects.get(1).name == "scratch"
    with pytest.raises(gitlab.exceptions.GitlabGetError) as caught:
        local.gl.projects.get("runnerconf/nope")
    assert caught.value.response_code == 404
    assert caught.value.error_message == "404 Project Not Found"


# repository -----------------------------------------------------------------------------------------


def test_branch_lifecycle(local: Local) -> None:
    branches = local.project.branches
    main_sha = branches.get("main").commit["id"]
    created = branches.create({"branch": "runnerconf/rc-1", "ref": "main"})
    assert created.commit["id"] == main_sha
    assert {b.name for b in branches.list(get_all=True)} == {"main", "runnerconf/rc-1"}
    assert branches.get("runnerconf/rc-1").name == "runnerconf/rc-1"

    with pytest.raises(gitlab.exceptions.GitlabCreateError) as exists:
        branches.create({"branch": "runnerconf/rc-1", "ref": "main"})
    assert (exists.value.response_code, exists.value.error_message) == (400, "Branch already exists")
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as bad_ref:
        branches.create({"branch": "other", "ref": "no-such-ref"})
    assert bad_ref.value.error_message == "Invalid reference name: no-such-ref"

    branches.delete("runnerconf/rc-1")
    with pytest.raises(gitlab.exceptions.GitlabGetError) as gone:
        branches.get("runnerconf/rc-1")
    assert (gone.value.response_code, gone.value.error_message) == (404, "404 Branch Not Found")
    with pytest.raises(gitlab.exceptions.GitlabDeleteError) as again:
        branches.delete("runnerconf/rc-1")
    assert again.value.response_code == 404


def test_commit_actions_files_and_tree(local: Local) -> None:
    project = local.project
    commit = project.commits.create(
        {
            "branch": "scratch",
            "start_branch": "main",
            "commit_message": "Add probe pipeline",
            "actions": [
                {"action": "create", "file_path": ".gitlab-ci.yml", "content": CI},
                {
                    "action": "create",
                    "file_path": "probes/probe.sh",
                    "content": base64.b64encode(b"#!/bin/sh\necho probe\n").decode(),
                    "encoding": "base64",
                    "execute_filemode": True,
                },
            ],
        }
    )
    assert commit.title == "Add probe pipeline" and commit.author_name == "runnerconf"
    assert project.commits.get(commit.id).parent_ids == [project.branches.get("main").commit["id"]]

    ci_file = project.files.get(file_path=".gitlab-ci.yml", ref="scratch")
    assert base64.b64decode(ci_file.content).decode() == CI
    assert ci_file.last_commit_id == commit.id
    assert project.files.raw(file_path="probes/probe.sh", ref="scratch") == b"#!/bin/sh\necho probe\n"
    tree = {e["path"]: e for e in project.repository_tree(ref="scratch", recursive=True, get_all=True)}
    assert tree["probes"]["type"] == "tree"
    assert tree["probes/probe.sh"]["mode"] == "100755"

    with pytest.raises(gitlab.exceptions.GitlabCreateError) as dup:
        project.commits.create(
            {
                "branch": "scratch",
                "commit_message": "again",
                "actions": [{"action": "create", "file_path": ".gitlab-ci.yml", "content": "x"}],
            }
        )
    assert (dup.value.response_code, dup.value.error_message) == (400, "A file with this name already exists")

    second = project.commits.create(
        {
            "branch": "scratch",
            "commit_message": "shuffle",
            "actions": [
                {"action": "move", "file_path": "bin/probe.sh", "previous_path": "probes/probe.sh"},
                {"action": "chmod", "file_path": "README.md", "execute_filemode": True},
                {"action": "update", "file_path": ".gitlab-ci.yml", "content": "changed\n"},
                {"action": "delete", "file_path": "README.md"},
            ],
        }
    )
    paths = {e["path"] for e in project.repository_tree(ref=second.id, recursive=True, get_all=True)}
    assert paths == {".gitlab-ci.yml", "bin", "bin/probe.sh"}
    with pytest.raises(gitlab.exceptions.GitlabGetError) as missing:
        project.files.get(file_path="README.md", ref="scratch")
    assert missing.value.error_message == "404 File Not Found"
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as off_branch:
        project.commits.create(
            {"branch": "nowhere", "commit_message": "x", "actions": [{"action": "create", "file_path": "a"}]}
        )
    assert off_branch.value.error_message == "You can only create or edit files when you are on a branch"


# pipelines ------------------------------------------------------------------------------------------


def test_pipeline_hands_payloads_to_the_runner_stage_by_stage(local: Local) -> None:
    sha = local.commit({"probe.sh": "#!/bin/sh\nmkdir -p out && echo probe > out/result\n"})
    pipeline = local.pipeline(CI, [{"key": "RUN_VAR", "value": "from-api", "variable_type": "env_var"}])
    assert (pipeline.status, pipeline.source, pipeline.ref) == ("pending", "api", "main")
    assert pipeline.sha != sha  # the CI commit came after the probe commit
    assert local.queue.names() == ["build"]  # test waits for the build stage

    payload = local.queue.submitted[0]
    assert (payload.image, payload.tags, payload.stage, payload.script) == (
        "alpine:3.20",
        ("local",),
        "build",
        ("./probe.sh",),
    )
    assert [(s.name, s.alias) for s in payload.services] == [("redis:7", "cache")]
    assert payload.artifacts is not None and payload.artifacts.paths == ("out/",)
    assert payload.artifacts.when == "always"
    assert payload.timeout_s == 3600
    assert payload.project_path == "runnerconf/scratch" and payload.namespace_id == 2
    vars_ = {v.key: v for v in payload.variables}
    expected = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_JOB_ID": str(payload.id),
        "CI_JOB_NAME": "build",
        "CI_JOB_STAGE": "build",
        "CI_JOB_URL": f"{local.url}/runnerconf/scratch/-/jobs/{payload.id}",
        "CI_PIPELINE_ID": str(pipeline.id),
        "CI_PIPELINE_SOURCE": "api",
        "CI_COMMIT_SHA": pipeline.sha,
        "CI_COMMIT_SHORT_SHA": pipeline.sha[:8],
        "CI_COMMIT_BEFORE_SHA": "0" * 40,
        "CI_COMMIT_REF_NAME": "main",
        "CI_COMMIT_REF_SLUG": "main",
        "CI_COMMIT_BRANCH": "main",
        "CI_PROJECT_ID": "1",
        "CI_PROJECT_NAME": "scratch",
        "CI_PROJECT_PATH": "runnerconf/scratch",
        "CI_PROJECT_NAMESPACE": "runnerconf",
        "CI_PROJECT_NAMESPACE_ID": "2",
        "CI_PROJECT_ROOT_NAMESPACE": "runnerconf",
        "CI_PROJECT_URL": f"{local.url}/runnerconf/scratch",
        "CI_SERVER_URL": local.url,
        "CI_API_V4_URL": f"{local.url}/api/v4",
        "GITLAB_USER_LOGIN": "runnerconf",
        "GLOBAL_VAR": "global",
        "RUN_VAR": "from-api",
    }
    assert {k: vars_[k].value for k in expected} == expected
    assert vars_["CI_REPOSITORY_URL"].value.startswith("file://")
    token = vars_["CI_JOB_TOKEN"]
    assert (token.value, token.public, token.masked) == (payload.token, False, True)
    assert payload.variable("SHARED") == "from-job"  # job yaml beats global yaml
    keys = [v.key for v in payload.variables]
    assert keys.index("CI_JOB_ID") < keys.index("GLOBAL_VAR") < keys.index("SHARED") < keys.index("RUN_VAR")

    jobs = by_name(pipeline)
    assert (jobs["build"].status, jobs["test"].status) == ("pending", "created")
    assert jobs["build"].tag_list == ["local"] and jobs["build"].runner is None

    local.state.job_started(payload.id, "runnerconf-local emulated runner")
    pipeline.refresh()
    job = local.project.jobs.get(payload.id)
    assert (job.status, pipeline.status) == ("running", "running")
    assert job.runner["description"] == "runnerconf-local emulated runner"
    assert ISO_MS.match(job.started_at) and job.finished_at is None

    local.state.append_trace(payload.id, b"\x1b[0KRunning with gitlab-runner\n")
    local.state.append_trace(payload.id, b"RUNNERCONF probe e30=\n")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("out/result", "probe\n")
    local.state.store_artifacts(payload.id, "artifacts.zip", archive.getvalue())
    local.state.job_finished(payload.id, "success", None)

    job = local.project.jobs.get(payload.id)
    assert job.status == "success" and "failure_reason" not in job.attributes
    assert ISO_MS.match(job.finished_at) and job.duration >= 0 and job.queued_duration >= 0
    assert job.artifacts_file == {"filename": "artifacts.zip", "size": len(archive.getvalue())}
    assert job.pipeline["id"] == pipeline.id and job.commit["id"] == pipeline.sha
    assert job.trace() == b"\x1b[0KRunning with gitlab-runner\nRUNNERCONF probe e30=\n"
    with zipfile.ZipFile(io.BytesIO(job.artifacts())) as zf:
        assert zf.read("out/result") == b"probe\n"

    assert local.queue.names() == ["build", "test"]
    test_payload = local.queue.submitted[1]
    assert test_payload.image == "busybox:1.36" and test_payload.image_entrypoint == ("",)
    local.finish(test_payload.id)
    pipeline.refresh()
    assert pipeline.status == "success"
    assert ISO_MS.match(pipeline.finished_at) and isinstance(pipeline.duration, int)
    with pytest.raises(gitlab.exceptions.GitlabGetError) as no_artifacts:
        local.project.jobs.get(test_payload.id, lazy=True).artifacts()
    assert no_artifacts.value.response_code == 404


def test_clone_of_the_bare_repo_at_the_pipeline_sha_has_the_files(local: Local, tmp_path: Path) -> None:
    local.commit({"probe.sh": "echo probe\n"})
    pipeline = local.pipeline(CI)
    payload = local.queue.submitted[0]
    clone = tmp_path / "clone"
    repo_url = payload.variable("CI_REPOSITORY_URL")
    subprocess.run(["git", "clone", "--quiet", repo_url, str(clone)], check=True, capture_output=True)
    subprocess.run(
        ["git", "-C", str(clone), "checkout", "--quiet", payload.sha], check=True, capture_output=True
    )
    head = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert head == pipeline.sha == payload.sha
    assert (clone / ".gitlab-ci.yml").read_text() == CI
    assert (clone / "probe.sh").read_text() == "echo probe\n"
    assert payload.repo_path.is_dir() and repo_url == payload.repo_path.resolve().as_uri()


def test_failure_skips_later_stages_unless_allowed(local: Local) -> None:
    ci = """
stages: [one, two, three]
flaky: {stage: one, script: x, allow_failure: true, tags: [local]}
solid: {stage: one, script: x}
broken: {stage: two, script: x}
after: {stage: three, script: x}
report: {stage: three, script: x, when: on_failure}
"""
    pipeline = local.pipeline(ci)
    first = {p.name: p.id for p in local.queue.submitted}
    assert set(first) == {"flaky", "solid"}
    local.finish(first["flaky"], "failed", "script_failure")
    local.finish(first["solid"])
    assert local.queue.names()[-1] == "broken"  # allowed failure does not block the next stage
    local.finish(local.queue.submitted[-1].id, "failed", "script_failure")
    assert local.queue.names()[-1] == "report"
    local.finish(local.queue.submitted[-1].id)

    jobs = by_name(pipeline)
    assert {n: j.status for n, j in jobs.items()} == {
        "flaky": "failed",
        "solid": "success",
        "broken": "failed",
        "after": "skipped",
        "report": "success",
    }
    assert jobs["broken"].failure_reason == "script_failure"
    assert jobs["after"].started_at is None
    pipeline.refresh()
    assert pipeline.status == "failed"


def test_allowed_failure_still_gives_a_successful_pipeline(local: Local) -> None:
    pipeline = local.pipeline("a: {script: x, allow_failure: true}\n")
    local.finish(local.queue.submitted[0].id, "failed", "script_failure")
    pipeline.refresh()
    assert pipeline.status == "success"


def test_cancel_pipeline_and_job(local: Local) -> None:
    ci = """
stages: [one, two]
running: {stage: one, script: x}
waiting: {stage: one, script: x}
later: {stage: two, script: x}
"""
    pipeline = local.pipeline(ci)
    ids = {p.name: p.id for p in local.queue.submitted}
    local.state.job_started(ids["running"], "test runner")
    pipeline.cancel()
    jobs = by_name(pipeline)
    assert {n: j.status for n, j in jobs.items()} == {
        "running": "running",
        "waiting": "canceled",
        "later": "canceled",
    }
    assert sorted(local.queue.canceled) == sorted([ids["running"], ids["waiting"]])
    pipeline.refresh()
    assert pipeline.status == "running"

    local.state.job_finished(ids["running"], "failed", "script_failure")  # killed by the cancel
    pipeline.refresh()
    assert pipeline.status == "canceled"
    assert by_name(pipeline)["running"].status == "canceled"
    assert local.queue.names() == ["running", "waiting"]  # stage two was never released

    second = local.project.pipelines.create({"ref": "main"})
    job_id = next(p.id for p in local.queue.submitted if p.pipeline_id == second.id and p.name == "waiting")
    local.project.jobs.get(job_id, lazy=True).cancel()
    assert local.project.jobs.get(job_id).status == "canceled"
    assert job_id in local.queue.canceled


def test_retry_job_replaces_a_failed_job_and_the_runner_gets_the_new_one(local: Local) -> None:
    pipeline = local.pipeline("solid: {script: x}\nflaky: {script: x}\n")
    ids = {p.name: p.id for p in local.queue.submitted}
    local.finish(ids["solid"])
    local.finish(ids["flaky"], "failed", "runner_system_failure")
    pipeline.refresh()
    assert pipeline.status == "failed"

    answer = local.project.jobs.get(ids["flaky"]).retry()  # python-gitlab: POST .../jobs/:id/retry
    assert answer["id"] not in ids.values()
    assert (answer["name"], answer["stage"], answer["status"]) == ("flaky", "test", "pending")
    assert local.queue.submitted[-1].id == answer["id"]  # the runner is handed the new job like any other
    assert local.queue.submitted[-1].token != next(
        p.token for p in local.queue.submitted if p.id == ids["flaky"]
    )
    pipeline.refresh()
    assert pipeline.status == "running"  # the pipeline is going again

    latest = {j.name: j.id for j in pipeline.jobs.list(get_all=True)}
    assert latest == {"solid": ids["solid"], "flaky": answer["id"]}  # the retried job is left out...
    everything = sorted(j.id for j in pipeline.jobs.list(get_all=True, include_retried=True))
    assert everything == sorted([ids["solid"], ids["flaky"], answer["id"]])  # ...unless asked for
    assert ids["flaky"] in {j.id for j in local.project.jobs.list(get_all=True)}
    assert local.project.jobs.get(ids["flaky"]).status == "failed"  # the old attempt keeps its end

    local.finish(answer["id"])
    pipeline.refresh()
    assert pipeline.status == "success"  # judged on the latest attempts only


@pytest.mark.parametrize("which", ["retried", "running", "success"])
def test_retry_of_a_job_that_cannot_be_retried_is_403(local: Local, which: str) -> None:
    local.pipeline("a: {script: x}\n")
    job_id = local.queue.submitted[0].id
    if which == "running":
        local.state.job_started(job_id, "test runner")
    else:
        local.finish(job_id, "failed" if which == "retried" else "success", "script_failure")
    if which == "retried":
        local.project.jobs.get(job_id).retry()
    if which == "success":  # a finished job that succeeded can be retried once, as on GitLab
        local.project.jobs.get(job_id).retry()
    submitted = len(local.queue.submitted)
    with pytest.raises(gitlab.exceptions.GitlabJobRetryError) as raised:
        local.project.jobs.get(job_id).retry()
    assert raised.value.response_code == 403
    assert "Job is not retryable" in raised.value.error_message
    assert len(local.queue.submitted) == submitted  # nothing was queued


def test_delete_pipeline(local: Local) -> None:
    pipeline = local.pipeline("a: {script: x}\n")
    job_id = local.queue.submitted[0].id
    pipeline.delete()
    with pytest.raises(gitlab.exceptions.GitlabGetError):
        local.project.pipelines.get(pipeline.id)
    assert job_id in local.queue.canceled
    local.state.job_finished(job_id, "canceled", None)  # a late report for a deleted job is ignored
    assert local.project.pipelines.list(get_all=True) == []


def test_config_errors_are_400_with_gitlabs_message(local: Local) -> None:
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as no_config:
        local.project.pipelines.create({"ref": "main"})
    assert no_config.value.error_message == {"base": ["Missing CI config file"]}

    local.commit({".gitlab-ci.yml": "# probe\n\nstages: [build]\n build: {script: x}\n"})
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as bad_yaml:
        local.project.pipelines.create({"ref": "main"})
    assert bad_yaml.value.response_code == 400
    assert bad_yaml.value.error_message == {
        "base": ["(<unknown>): did not find expected key while parsing a block mapping at line 3 column 1"]
    }

    with pytest.raises(gitlab.exceptions.GitlabCreateError) as bad_ref:
        local.project.pipelines.create({"ref": "no-such-branch"})
    assert bad_ref.value.error_message == {"base": ["Reference not found"]}
    assert local.project.pipelines.list(get_all=True) == []
    assert local.queue.submitted == []


def test_jobs_with_tags_no_runner_has_stay_pending(local: Local) -> None:
    pipeline = local.pipeline("gpu: {script: x, tags: [gpu]}\nplain: {script: x, tags: [local]}\n")
    assert local.queue.names() == ["plain"]
    local.finish(local.queue.submitted[0].id)
    jobs = by_name(pipeline)
    assert (jobs["gpu"].status, jobs["gpu"].started_at) == ("pending", None)
    pipeline.refresh()
    assert pipeline.status == "running"  # success + pending, as GitLab shows it


def test_job_list_pagination(local: Local) -> None:
    ci = "".join(f"job-{i:02d}: {{script: x}}\n" for i in range(25))
    pipeline = local.pipeline(ci)
    page2 = pipeline.jobs.list(per_page=10, page=2)
    assert len(page2) == 10
    assert len(pipeline.jobs.list(get_all=True)) == 25
    names = [j.name for j in pipeline.jobs.list(iterator=True, per_page=7)]
    assert sorted(names) == [f"job-{i:02d}" for i in range(25)]
    raw = requests.get(
        f"{local.url}/api/v4/projects/1/pipelines/{pipeline.id}/jobs",
        params={"per_page": 10},
        headers={"PRIVATE-TOKEN": TOKEN},
        timeout=5,
    )
    headers = raw.headers
    assert (headers["x-total"], headers["x-total-pages"], headers["x-page"], headers["x-next-page"]) == (
        "25",
        "3",
        "1",
        "2",
    )
    assert raw.links["next"]["url"].startswith(f"{local.url}/api/v4/projects/1/pipelines/{pipeline.id}/jobs?")
    assert "page=2" in raw.links["next"]["url"]


def test_runner_callbacks_from_many_threads_release_the_next_stage_once(local: Local) -> None:
    ci = "stages: [one, two]\n" + "".join(f"j{i}: {{stage: one, script: x}}\n" for i in range(16))
    ci += "final: {stage: two, script: x}\n"
    local.queue.autostart = True  # job_started is called from inside submit()
    pipeline = local.pipeline(ci)
    first = [p.id for p in local.queue.submitted]
    assert len(first) == 16
    barrier = threading.Barrier(len(first))

    def report(job_id: int) -> None:
        barrier.wait()
        local.state.job_finished(job_id, "success", None)

    threads = [threading.Thread(target=report, args=(job_id,)) for job_id in first]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert local.queue.names().count("final") == 1
    local.state.job_finished(local.queue.submitted[-1].id, "success", None)
    pipeline.refresh()
    assert pipeline.status == "success"


def test_state_accepts_token_first_and_a_queue_attached_later(tmp_path: Path) -> None:
    state = GitLabState(tmp_path, TOKEN, None)  # how the local cluster wires it: runner created afterwards
    assert (state.token, state.job_queue) == (TOKEN, None)
    project = state.create_project("runnerconf/scratch")
    assert state.repo_path(project.id) == tmp_path / "git" / "runnerconf" / "scratch.git"
    project.repo.commit("main", "ci", [FileAction("create", ".gitlab-ci.yml", b"a: {script: x}\n")])
    early = state.create_pipeline("runnerconf/scratch", "main")
    assert [j.status for j in state.jobs(early)] == ["pending"]  # no runner yet: waits, like GitLab
    queue = RecordingQueue()
    state.job_queue = queue
    late = state.create_pipeline(project.id, "main")
    assert [p.pipeline_id for p in queue.submitted] == [late.id]


# HTTPS (runnerconf local up --tls-gitlab) and the profile's gitlab_ca_file ---------------------------------


def test_https_gitlab_verified_with_the_profiles_ca_file(tmp_path: Path) -> None:
    from pytest_runnerconf.errors import ConfigError, GitLabError
    from pytest_runnerconf.gitlab_driver import GitLabDriver
    from pytest_runnerconf.local.tlsca import LocalCA
    from pytest_runnerconf.profile import profile_from_table

    queue = RecordingQueue()
    state = GitLabState(tmp_path / "gitlab", queue, token=TOKEN)
    state.create_project("scratch")
    ca = LocalCA.create(tmp_path / "pki")
    server = GitLabAPI(state, TOKEN).start(tls=ca.issue("gitlab").server_context())
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)

    def driver(**extra: str) -> GitLabDriver:
        table = {
            "gitlab_url": server.url,
            "token_file": str(token_file),
            "project": "runnerconf/scratch",
            "namespace": "ci",
        }
        return GitLabDriver(profile_from_table("tls", table | extra, "test"))

    try:
        assert server.url.startswith("https://127.0.0.1:")
        facts = driver(gitlab_ca_file=str(ca.cert_file)).preflight()
        assert facts["project_path"] == "runnerconf/scratch"
        # Pagination links keep the https scheme the client came in with.
        page = gitlab.Gitlab(server.url, private_token=TOKEN, ssl_verify=str(ca.cert_file))
        assert page.projects.get("runnerconf/scratch").pipelines.list(get_all=True) == []
        with pytest.raises(
            GitLabError,
            match=r"presented a certificate that the system's CAs do not verify; set clusters\.tls\.gitlab_ca_file",
        ):
            driver().preflight()
        other = LocalCA.create(tmp_path / "other")
        with pytest.raises(GitLabError, match=r"certificate that the CA in .*other/ca\.crt do not verify"):
            driver(gitlab_ca_file=str(other.cert_file)).preflight()
        with pytest.raises(
            GitLabError, match=r"the CA file .*missing\.pem does not exist; fix clusters\.tls\.gitlab_ca_file"
        ):
            driver(gitlab_ca_file=str(tmp_path / "missing.pem"))
        with pytest.raises(
            ConfigError, match=r"gitlab_ca_file is set but gitlab_url 'http://127\.0\.0\.1:1' is not https://"
        ):
            profile_from_table(
                "tls",
                {
                    "gitlab_url": "http://127.0.0.1:1",
                    "token_env": "T",
                    "project": "p/q",
                    "namespace": "ci",
                    "gitlab_ca_file": "/x",
                },
                "test",
            )
    finally:
        server.stop()


def test_needs_runs_a_job_once_its_needed_jobs_succeeded_with_their_artifacts(local: Local) -> None:
    ci = """
stages: [only]
save: {stage: only, script: x, artifacts: {paths: [out/]}}
slow: {stage: only, script: x}
restore: {stage: only, script: x, needs: [save]}
no-artifacts: {stage: only, script: x, needs: [{job: save, artifacts: false}]}
"""
    pipeline = local.pipeline(ci)
    first = {p.name: p.id for p in local.queue.submitted}
    assert set(first) == {"save", "slow"}  # the needing jobs wait in created
    assert by_name(pipeline)["restore"].status == "created"
    local.state.job_started(first["save"], "test runner")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("out/nonce", "n-1\n")
    local.state.store_artifacts(first["save"], "artifacts.zip", archive.getvalue())
    local.state.job_finished(first["save"], "success", None)
    # slow is still running: a job with needs waits for its needs only, not for the stage
    started = {p.name: p for p in local.queue.submitted}
    assert set(started) == {"save", "slow", "restore", "no-artifacts"}
    (dep,) = started["restore"].dependencies
    assert (dep.id, dep.name, dep.artifacts_filename) == (first["save"], "save", "artifacts.zip")
    assert started["no-artifacts"].dependencies == ()
    assert local.state.artifacts(dep.id) == ("artifacts.zip", archive.getvalue())
    assert started["slow"].dependencies == ()  # stage order: nothing before its stage


def test_a_job_whose_need_failed_is_skipped(local: Local) -> None:
    pipeline = local.pipeline("save: {script: x}\nrestore: {script: x, needs: [save]}\n")
    (save,) = local.queue.submitted
    local.finish(save.id, "failed", "script_failure")
    jobs = by_name(pipeline)
    assert (jobs["save"].status, jobs["restore"].status) == ("failed", "skipped")
    assert local.queue.names() == ["save"]
    pipeline.refresh()
    assert pipeline.status == "failed"


def test_a_job_whose_need_was_skipped_is_skipped_but_a_later_stage_runs(local: Local) -> None:
    # Ci::ProcessBuildService#valid_statuses_for_build: on_success is %w[success] for a job with needs:, and
    # %w[success skipped] for one that follows the stage order.
    ci = (
        "stages: [one, two, three]\n"
        "a: {stage: one, script: x}\n"
        "b: {stage: two, script: x, needs: [a]}\n"
        "c: {stage: three, script: x, needs: [b]}\n"
        "d: {stage: three, script: x, when: on_failure}\n"
    )
    pipeline = local.pipeline(ci)
    (a,) = local.queue.submitted
    local.finish(a.id, "failed", "script_failure")
    jobs = by_name(pipeline)
    assert {n: j.status for n, j in jobs.items()} == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "d": "pending",
    }
    assert local.queue.names() == ["a", "d"]


def test_project_variables_reach_jobs_non_public_after_the_yaml_ones(local: Local) -> None:
    # GitLab hands project CI/CD variables to the runner as non-public (Ci::HasVariable#to_runner_variable),
    # after the .gitlab-ci.yml ones so they win, and before pipeline variables.
    local.state.set_project_variable("runnerconf/scratch", "SHARED", "from-project")
    local.state.set_project_variable("runnerconf/scratch", "REG_PASSWORD", "s3cr3t-value", masked=True)
    local.state.set_project_variable("runnerconf/scratch", "REG_PASSWORD", "rotated-value", masked=True)
    local.pipeline(CI, [{"key": "SHARED", "value": "from-pipeline", "variable_type": "env_var"}])
    payload = local.queue.submitted[0]
    shared = [v.value for v in payload.variables if v.key == "SHARED"]
    assert shared == ["from-global", "from-job", "from-project", "from-pipeline"]
    passwords = [v for v in payload.variables if v.key == "REG_PASSWORD"]
    assert [(v.value, v.public, v.masked) for v in passwords] == [("rotated-value", False, True)]


NEEDS_CI = """
stages: [build, test]
first:
  stage: build
  tags: [local]
  script: echo first
second:
  stage: build
  tags: [local]
  needs: [first]
  script: echo second
"""


def test_a_retried_job_brings_back_the_jobs_skipped_for_its_failure(local: Local) -> None:
    # Ci::ResetSkippedJobsService: what needs the retried job runs after the retry.
    pipeline = local.pipeline(NEEDS_CI)
    first = local.queue.submitted[0]
    local.finish(first.id, "failed", "runner_system_failure")
    jobs = {j.name: j.status for j in local.project.pipelines.get(pipeline.id).jobs.list()}
    assert jobs == {"first": "failed", "second": "skipped"}
    local.project.jobs.get(first.id).retry()
    retry = local.queue.submitted[-1]
    assert retry.name == "first" and retry.id != first.id
    local.finish(retry.id)
    assert [p.name for p in local.queue.submitted] == ["first", "first", "second"]
