"""The local GitLab's projects, pipelines and jobs, with GitLab's stage-by-stage job state machine."""

from __future__ import annotations

import itertools
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_runnerconf.local.ciyaml import CIConfigError, JobDef, parse_config
from pytest_runnerconf.local.errors import LocalAPIError
from pytest_runnerconf.local.gitrepo import ZERO_SHA, Commit, GitRepo, RepoError
from pytest_runnerconf.local.model import Dependency, JobPayload, JobQueue, Variable

USER_ID = 1
USERNAME = "runnerconf"
NAMESPACE = "runnerconf"
NAMESPACE_ID = 2
RUNNER_ID = 1
DEFAULT_TIMEOUT_S = 3600
CI_CONFIG_PATH = ".gitlab-ci.yml"
FINISHED = frozenset({"success", "failed", "canceled", "skipped"})
_SINK_STATUSES = frozenset({"success", "failed", "canceled"})
# Ci::Processable#retryable?: a finished build that was not retried already (skipped ones are not retryable).
_RETRYABLE = frozenset({"success", "failed", "canceled"})
NOT_RETRYABLE = "403 Forbidden - Job is not retryable"  # the API's forbidden!('Job is not retryable')


class StateError(LocalAPIError):
    """A request GitLab would refuse; `message` is GitLab's (a string, or a dict such as {"base": [...]})."""

    def __init__(self, message: str | dict[str, Any], status: int = 400) -> None:
        super().__init__(str(message))
        self.message = message
        self.status = status


def iso(ts: float | None) -> str | None:
    """GitLab's timestamp format: ISO 8601 UTC with milliseconds and Z."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ref_slug(ref: str) -> str:
    """CI_COMMIT_REF_SLUG: lower-cased, non-alphanumerics to '-', at most 63 chars, no edge dashes."""
    return re.sub(r"[^a-z0-9]", "-", ref.lower())[:63].strip("-")


@dataclass
class Project:
    id: int
    name: str
    namespace: str
    repo: GitRepo
    created_at: float
    description: str = ""
    # The project's CI/CD variables (Settings > CI/CD > Variables): every job of the project gets them.
    variables: list[Variable] = field(default_factory=list)

    @property
    def path_with_namespace(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Job:
    id: int
    pipeline_id: int
    project_id: int
    definition: JobDef
    token: str = field(repr=False)  # reprs end up in logs and assertion messages
    created_at: float = 0.0
    status: str = "created"
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    failure_reason: str | None = None
    runner_description: str | None = None
    runner_tags: tuple[str, ...] = ()
    trace: bytearray = field(default_factory=bytearray, repr=False)
    artifact: tuple[str, bytes] | None = field(default=None, repr=False)
    submitted: bool = False
    cancel_requested: bool = False
    payload: JobPayload | None = field(default=None, repr=False)
    # A retry replaced it: GitLab keeps the job (its page, the project's job list) but no longer counts it
    # for the pipeline's status, and lists it among the pipeline's jobs only with include_retried.
    retried: bool = False

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def stage(self) -> str:
        return self.definition.stage

    @property
    def allow_failure(self) -> bool:
        return self.definition.allow_failure

    def duration(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    def queued_duration(self, now: float) -> float | None:
        if self.queued_at is None:
            return None
        return (self.started_at or now) - self.queued_at


@dataclass
class Pipeline:
    id: int
    iid: int
    project_id: int
    ref: str
    ref_kind: str  # branch | tag
    sha: str
    before_sha: str
    created_at: float
    variables: tuple[Variable, ...]
    commit: Commit
    job_ids: list[int] = field(default_factory=list)
    status: str = "created"
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def duration(self) -> int | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return int(self.finished_at - self.started_at)


def composite_status(jobs: Iterable[Job]) -> str | None:
    """A group's status derived the way GitLab's Ci::Status::Composite does (None for no jobs)."""
    seen: set[str] = set()
    for job in jobs:
        if job.allow_failure and job.status == "failed":
            seen.add("success_with_warnings")
        elif job.allow_failure and job.status == "canceled":
            seen.add("ignored")
        else:
            seen.add(job.status)

    def only(*allowed: str) -> bool:
        return seen <= set(allowed)

    if not seen:
        return None
    if only("skipped", "ignored"):
        return "skipped"
    if only("success", "skipped", "success_with_warnings", "ignored"):
        return "success"
    if only("created", "success_with_warnings", "ignored"):
        return "created"
    if only("canceled", "success", "skipped", "success_with_warnings", "ignored"):
        return "canceled"
    if only("pending", "created", "skipped", "success_with_warnings", "ignored"):
        return "pending"
    if seen & {"running", "pending", "created"}:
        return "running"
    return "failed"


class GitLabState:
    """Projects, pipelines and jobs of the local GitLab; the JobSink the emulated runner reports to.

    Every mutation happens under one re-entrant lock. The job queue is only ever called outside it,
    so a runner that calls back from inside submit()/cancel() cannot deadlock against us.
    """

    def __init__(
        self,
        home: Path | str,
        job_queue: JobQueue | str | None = None,
        token: str | JobQueue | None = "",
        base_url: str = "http://127.0.0.1",
    ) -> None:
        # Both GitLabState(home, queue, token=...) and GitLabState(home, token, queue) are in use.
        if isinstance(job_queue, str):
            job_queue, token = token if not isinstance(token, str) else None, job_queue
        assert not isinstance(job_queue, str) and (token is None or isinstance(token, str))
        self.home = Path(home)
        self.token = token or ""
        self.job_queue: JobQueue | None = job_queue
        self.base_url = base_url.rstrip("/")
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.created_at = time.time()
        self._projects: dict[int, Project] = {}
        self._pipelines: dict[int, Pipeline] = {}
        self._jobs: dict[int, Job] = {}
        self._deleted_jobs: set[int] = set()
        self._project_ids = itertools.count(1)
        self._pipeline_ids = itertools.count(1)
        self._job_ids = itertools.count(1)

    # URLs -------------------------------------------------------------------------------------------

    def set_base_url(self, url: str) -> None:
        self.base_url = url.rstrip("/")

    def project_url(self, project: Project) -> str:
        return f"{self.base_url}/{project.path_with_namespace}"

    def job_url(self, job: Job) -> str:
        return f"{self.project_url(self.project(job.project_id))}/-/jobs/{job.id}"

    def pipeline_url(self, pipeline: Pipeline) -> str:
        return f"{self.project_url(self.project(pipeline.project_id))}/-/pipelines/{pipeline.id}"

    # projects ---------------------------------------------------------------------------------------

    def create_project(self, path: str, description: str = "") -> Project:
        """Create `runnerconf/<name>` (given as "<name>" or "runnerconf/<name>") with a bare repo on disk."""
        namespace, _, name = path.strip("/").rpartition("/")
        if namespace not in ("", NAMESPACE) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise StateError({"path": ["is invalid"]}, 400)
        with self.lock:
            if any(p.name == name for p in self._projects.values()):
                raise StateError({"path": ["has already been taken"]}, 400)
            repo = GitRepo.open_or_init(self.home / "git" / NAMESPACE / f"{name}.git")
            project = Project(next(self._project_ids), name, NAMESPACE, repo, time.time(), description)
            self._projects[project.id] = project
            return project

    def set_project_variable(
        self, project: int | str | Project, key: str, value: str, *, masked: bool = False
    ) -> Variable:
        """Create or replace a project CI/CD variable. GitLab hands every project variable to the runner as
        non-public (Ci::HasVariable#to_runner_variable), so it reaches the job's script, never the pod spec."""
        variable = Variable(key, value, public=False, masked=masked)
        with self.lock:
            target = self.project(project)
            target.variables = [v for v in target.variables if v.key != key] + [variable]
        return variable

    def repo_path(self, project: int | str | Project) -> Path:
        """The bare repository on disk (what the runner's helper clones from)."""
        return self.project(project).repo.path

    def projects(self) -> list[Project]:
        with self.lock:
            return list(self._projects.values())

    def project(self, ref: int | str | Project) -> Project:
        """By numeric id (int or digits) or by "namespace/name"; 404 like GitLab otherwise."""
        if isinstance(ref, Project):
            return ref
        with self.lock:
            if isinstance(ref, int) or str(ref).isdigit():
                found = self._projects.get(int(ref))
            else:
                found = next((p for p in self._projects.values() if p.path_with_namespace == ref), None)
        if found is None:
            raise StateError("404 Project Not Found", 404)
        return found

    # reads ------------------------------------------------------------------------------------------

    def pipeline(self, project: int | str | Project, pipeline_id: int) -> Pipeline:
        proj = self.project(project)
        with self.lock:
            pipeline = self._pipelines.get(pipeline_id)
            if pipeline is None or pipeline.project_id != proj.id:
                raise StateError("404 Not found", 404)
            return pipeline

    def pipelines(self, project: int | str | Project) -> list[Pipeline]:
        """Newest first, as GitLab lists them."""
        proj = self.project(project)
        with self.lock:
            found = [p for p in self._pipelines.values() if p.project_id == proj.id]
        return sorted(found, key=lambda p: p.id, reverse=True)

    def job(self, job_id: int, project: int | str | Project | None = None) -> Job:
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None or (project is not None and job.project_id != self.project(project).id):
                raise StateError("404 Job Not Found", 404)
            return job

    def jobs(self, pipeline: Pipeline, *, include_retried: bool = False) -> list[Job]:
        """The pipeline's jobs; retried ones only with INCLUDE_RETRIED (as GitLab's `latest` relation)."""
        with self.lock:
            found = [self._jobs[j] for j in pipeline.job_ids if j in self._jobs]
        return found if include_retried else [j for j in found if not j.retried]

    def trace(self, job_id: int) -> bytes:
        with self.lock:
            return bytes(self.job(job_id).trace)

    def artifacts(self, job_id: int) -> tuple[str, bytes] | None:
        with self.lock:
            return self.job(job_id).artifact

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until predicate() (evaluated under the lock) holds or the timeout passes."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout=timeout_s)

    # pipelines --------------------------------------------------------------------------------------

    def create_pipeline(
        self,
        project: int | str | Project,
        ref: str,
        variables: Iterable[Variable | dict[str, Any]] = (),
    ) -> Pipeline:
        """Resolve ref, parse its .gitlab-ci.yml, create the jobs and release the first stage."""
        proj = self.project(project)
        pipeline_vars = tuple(_pipeline_variable(v) for v in variables)
        kind = proj.repo.ref_kind(ref)
        sha = proj.repo.resolve(ref) if kind else None
        if kind is None or sha is None:
            raise StateError({"base": ["Reference not found"]}, 400)
        try:
            text = proj.repo.read_file(sha, CI_CONFIG_PATH).content.decode()
        except RepoError:
            raise StateError({"base": ["Missing CI config file"]}, 400) from None
        try:
            config = parse_config(text)
        except CIConfigError as exc:
            raise StateError({"base": [str(exc)]}, 400) from None
        commit = proj.repo.commit_info(sha)
        now = time.time()
        with self.lock:
            pid = next(self._pipeline_ids)
            iid = 1 + sum(1 for p in self._pipelines.values() if p.project_id == proj.id)
            pipeline = Pipeline(
                pid, iid, proj.id, ref, kind, sha, ZERO_SHA, now, pipeline_vars, commit, updated_at=now
            )
            self._pipelines[pid] = pipeline
            for definition in config.jobs:
                job = Job(next(self._job_ids), pid, proj.id, definition, _job_token(), now)
                self._jobs[job.id] = job
                pipeline.job_ids.append(job.id)
        self._advance(pipeline)
        return pipeline

    def cancel_pipeline(self, project: int | str | Project, pipeline_id: int) -> Pipeline:
        """Cancel every unfinished job at once (later stages included), as GitLab's cancel does."""
        pipeline = self.pipeline(project, pipeline_id)
        with self.lock:
            tell = [j.id for j in self.jobs(pipeline) if self._cancel_locked(j)]
            self._refresh(pipeline)
        self._tell_runner(tell)
        return pipeline

    def delete_pipeline(self, project: int | str | Project, pipeline_id: int) -> None:
        pipeline = self.cancel_pipeline(project, pipeline_id)
        with self.lock:
            for job_id in pipeline.job_ids:
                self._jobs.pop(job_id, None)
                self._deleted_jobs.add(job_id)
            self._pipelines.pop(pipeline.id, None)
            self.changed.notify_all()

    def cancel_job(self, job_id: int, project: int | str | Project | None = None) -> Job:
        """Created/pending jobs are canceled at once; running ones once the runner reports back."""
        job = self.job(job_id, project)
        with self.lock:
            tell = [job.id] if self._cancel_locked(job) else []
            pipeline = self._pipelines[job.pipeline_id]
            self._refresh(pipeline)
        self._tell_runner(tell)
        self._advance(pipeline)
        return job

    def retry_job(self, job_id: int, project: int | str | Project | None = None) -> Job:
        """Ci::RetryJobService: a new job (new id and token, same definition) replaces a finished one.

        The old job is marked retried; the new one is created and processed like any other, so it is queued
        for the runner and the pipeline goes back to running. A job that is unfinished, skipped or already
        retried is refused with GitLab's 403.
        """
        old = self.job(job_id, project)
        with self.lock:
            if old.retried or old.status not in _RETRYABLE:
                raise StateError(NOT_RETRYABLE, 403)
            pipeline = self._pipelines[old.pipeline_id]
            new = Job(
                next(self._job_ids), pipeline.id, old.project_id, old.definition, _job_token(), time.time()
            )
            self._jobs[new.id] = new
            pipeline.job_ids.append(new.id)
            old.retried = True
            self._reset_skipped(pipeline, old)
            self._refresh(pipeline)
        self._advance(pipeline)
        return new

    def _reset_skipped(self, pipeline: Pipeline, retried: Job) -> None:
        """Ci::ResetSkippedJobsService: the jobs skipped because RETRIED failed go back to created, so they
        run once the new attempt succeeds: those that need it (and what needs them), and, without needs,
        those of later stages."""
        jobs = self.jobs(pipeline)
        names = {retried.definition.name}
        grew = True
        while grew:
            grew = False
            for job in jobs:
                needs = {n.job for n in job.definition.needs or ()}
                if job.definition.name not in names and needs & names:
                    names.add(job.definition.name)
                    grew = True
        for job in jobs:
            dependent = job.definition.name in names - {retried.definition.name} or (
                job.definition.needs is None and job.definition.stage_idx > retried.definition.stage_idx
            )
            if job.status == "skipped" and dependent:
                job.status = "created"

    # JobSink ----------------------------------------------------------------------------------------

    def job_started(self, job_id: int, runner_description: str) -> None:
        tags = self._runner_tags()
        with self.lock:
            job = self._sink_job(job_id)
            if job is None or job.status != "pending":
                return  # canceled before the runner picked it up; the runner was told to cancel
            job.status = "running"
            job.started_at = time.time()
            job.runner_description = runner_description
            job.runner_tags = tuple(sorted(tags))
            self._refresh(self._pipelines[job.pipeline_id])

    def append_trace(self, job_id: int, data: bytes) -> None:
        with self.lock:
            job = self._sink_job(job_id)
            if job is not None:
                job.trace += data
                self.changed.notify_all()

    def job_finished(self, job_id: int, status: str, failure_reason: str | None) -> None:
        if status not in _SINK_STATUSES:
            raise ValueError(
                f"job {job_id}: runner reported status {status!r}; expected success|failed|canceled"
            )
        with self.lock:
            job = self._sink_job(job_id)
            if job is None or job.status in FINISHED:
                return
            if job.cancel_requested and status != "success":
                status, failure_reason = "canceled", None
            if status == "failed" and not failure_reason:
                failure_reason = "unknown_failure"
            self._finish(job, status, failure_reason if status == "failed" else None)
            pipeline = self._pipelines[job.pipeline_id]
        self._advance(pipeline)

    def store_artifacts(self, job_id: int, filename: str, data: bytes) -> None:
        with self.lock:
            job = self._sink_job(job_id)
            if job is not None:
                job.artifact = (filename, bytes(data))
                self.changed.notify_all()

    # internals --------------------------------------------------------------------------------------

    def _sink_job(self, job_id: int) -> Job | None:
        """The job a runner callback refers to; None for a deleted pipeline's job, KeyError if never known."""
        job = self._jobs.get(job_id)
        if job is None and job_id not in self._deleted_jobs:
            raise KeyError(f"job {job_id} is not known to the local GitLab")
        return job

    def _runner_tags(self) -> frozenset[str]:
        return frozenset() if self.job_queue is None else frozenset(self.job_queue.runner_tags())

    def _cancel_locked(self, job: Job) -> bool:
        """Cancel one job under the lock; True when the runner must be told (it has or may run the job)."""
        if job.status in ("created", "pending"):
            self._finish(job, "canceled", None)
            return job.submitted
        if job.status == "running" and not job.cancel_requested:
            job.cancel_requested = True
            return True
        return False

    def _tell_runner(self, job_ids: list[int]) -> None:
        if self.job_queue is not None:
            for job_id in job_ids:
                self.job_queue.cancel(job_id)

    def _finish(self, job: Job, status: str, failure_reason: str | None) -> None:
        job.status = status
        job.failure_reason = failure_reason
        job.finished_at = time.time()

    def _advance(self, pipeline: Pipeline) -> None:
        """Release every stage whose predecessors are done, then hand the new pending jobs to the runner."""
        tags = self._runner_tags()
        with self.lock:
            payloads = self._process(pipeline, tags) if pipeline.id in self._pipelines else []
        for payload in payloads:
            assert self.job_queue is not None
            self.job_queue.submit(payload)

    def _process(self, pipeline: Pipeline, runner_tags: frozenset[str]) -> list[JobPayload]:
        jobs = self.jobs(pipeline)
        payloads: list[JobPayload] = []
        # Jobs with `needs:` leave the stage order (a DAG): each waits only for the jobs it names, and runs
        # when they all succeeded (allow_failure counts as success), else is skipped (a skipped need too), as
        # Ci::ProcessBuildService does with a need's composite status.
        by_name = {j.name: j for j in jobs}
        for job in (j for j in jobs if j.definition.needs is not None and j.status == "created"):
            needed = [by_name[n.job] for n in job.definition.needs or () if n.job in by_name]
            prior = composite_status(needed) or "success"
            if prior not in FINISHED:
                continue
            if _should_run(job.definition.when, prior, dag=True):
                payload = self._enqueue(job, pipeline, runner_tags)
                if payload is not None:
                    payloads.append(payload)
            else:
                job.status = "skipped"
        for stage_idx in sorted({j.definition.stage_idx for j in jobs}):
            prior = composite_status(j for j in jobs if j.definition.stage_idx < stage_idx) or "success"
            if prior not in FINISHED:
                break
            for job in (
                j
                for j in jobs
                if j.definition.stage_idx == stage_idx
                and j.status == "created"
                and j.definition.needs is None
            ):
                if _should_run(job.definition.when, prior):
                    payload = self._enqueue(job, pipeline, runner_tags)
                    if payload is not None:
                        payloads.append(payload)
                else:
                    job.status = "skipped"
        self._refresh(pipeline)
        return payloads

    def _enqueue(self, job: Job, pipeline: Pipeline, runner_tags: frozenset[str]) -> JobPayload | None:
        job.status = "pending"
        job.queued_at = time.time()
        job.payload = self._payload(job, pipeline)
        # a job whose tags no runner carries stays pending forever, as on GitLab
        if self.job_queue is None or not set(job.definition.tags) <= runner_tags:
            return None
        job.submitted = True
        return job.payload

    def _refresh(self, pipeline: Pipeline) -> None:
        now = time.time()
        jobs = self.jobs(pipeline)
        status = composite_status(jobs) or "created"
        starts = [j.started_at for j in jobs if j.started_at is not None]
        pipeline.started_at = min(starts) if starts else None
        if status in FINISHED and pipeline.finished_at is None:
            pipeline.finished_at = now
        elif status not in FINISHED:
            pipeline.finished_at = None
        pipeline.status = status
        pipeline.updated_at = now
        self.changed.notify_all()

    def _payload(self, job: Job, pipeline: Pipeline) -> JobPayload:
        project = self.project(job.project_id)
        definition = job.definition
        variables = (
            *self._predefined(job, pipeline, project),
            *definition.global_variables,
            *definition.variables,
            # Project variables come after the .gitlab-ci.yml ones (GitLab's precedence: they override them),
            # and pipeline variables after both.
            *project.variables,
            *pipeline.variables,
        )
        return JobPayload(
            id=job.id,
            name=definition.name,
            stage=definition.stage,
            token=job.token,
            project_id=project.id,
            project_name=project.name,
            project_path=project.path_with_namespace,
            namespace_path=project.namespace,
            namespace_id=NAMESPACE_ID,
            root_namespace=project.namespace,
            project_url=self.project_url(project),
            pipeline_id=pipeline.id,
            ref=pipeline.ref,
            sha=pipeline.sha,
            before_sha=pipeline.before_sha,
            repo_path=project.repo.path,
            image=definition.image,
            image_entrypoint=definition.image_entrypoint,
            image_user=definition.image_user,
            image_pull_policies=definition.image_pull_policies,
            services=definition.services,
            before_script=definition.before_script,
            script=definition.script,
            after_script=definition.after_script,
            variables=variables,
            artifacts=definition.artifacts,
            dependencies=self._dependencies(job, pipeline),
            cache=definition.cache,
            timeout_s=definition.timeout_s or DEFAULT_TIMEOUT_S,
            tags=definition.tags,
            allow_failure=definition.allow_failure,
        )

    def _dependencies(self, job: Job, pipeline: Pipeline) -> tuple[Dependency, ...]:
        """The jobs whose artifacts the runner downloads: the needed ones with artifacts, else earlier stages'."""
        jobs = [j for j in self.jobs(pipeline) if j.id != job.id]
        needs = job.definition.needs
        if needs is None:
            chosen = [j for j in jobs if j.definition.stage_idx < job.definition.stage_idx]
        else:
            wanted = {n.job for n in needs if n.artifacts}
            chosen = [j for j in jobs if j.name in wanted]
        return tuple(
            Dependency(j.id, j.name, j.token, j.artifact[0] if j.artifact is not None else "") for j in chosen
        )

    def _predefined(self, job: Job, pipeline: Pipeline, project: Project) -> list[Variable]:
        commit = pipeline.commit
        pairs = {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_SERVER": "yes",
            "CI_SERVER_URL": self.base_url,
            "CI_SERVER_NAME": "GitLab",
            "CI_API_V4_URL": f"{self.base_url}/api/v4",
            "CI_JOB_ID": str(job.id),
            "CI_JOB_NAME": job.name,
            "CI_JOB_STAGE": job.stage,
            "CI_JOB_URL": self.job_url(job),
            "CI_PIPELINE_ID": str(pipeline.id),
            "CI_PIPELINE_IID": str(pipeline.iid),
            "CI_PIPELINE_SOURCE": "api",
            "CI_PIPELINE_URL": self.pipeline_url(pipeline),
            "CI_COMMIT_SHA": pipeline.sha,
            "CI_COMMIT_SHORT_SHA": pipeline.sha[:8],
            "CI_COMMIT_BEFORE_SHA": pipeline.before_sha,
            "CI_COMMIT_REF_NAME": pipeline.ref,
            "CI_COMMIT_REF_SLUG": ref_slug(pipeline.ref),
            "CI_COMMIT_BRANCH" if pipeline.ref_kind == "branch" else "CI_COMMIT_TAG": pipeline.ref,
            "CI_COMMIT_TITLE": commit.title,
            "CI_COMMIT_MESSAGE": commit.message,
            "CI_DEFAULT_BRANCH": project.repo.default_branch,
            "CI_PROJECT_ID": str(project.id),
            "CI_PROJECT_NAME": project.name,
            "CI_PROJECT_TITLE": project.name,
            "CI_PROJECT_PATH": project.path_with_namespace,
            "CI_PROJECT_PATH_SLUG": ref_slug(project.path_with_namespace),
            "CI_PROJECT_NAMESPACE": project.namespace,
            "CI_PROJECT_NAMESPACE_ID": str(NAMESPACE_ID),
            "CI_PROJECT_ROOT_NAMESPACE": project.namespace,
            "CI_PROJECT_URL": self.project_url(project),
            "CI_PROJECT_VISIBILITY": "private",
            "GITLAB_USER_ID": str(USER_ID),
            "GITLAB_USER_LOGIN": USERNAME,
            "GITLAB_USER_NAME": USERNAME,
        }
        variables = [Variable(k, v) for k, v in pairs.items()]
        variables.append(Variable("CI_JOB_TOKEN", job.token, public=False, masked=True))
        # the real one embeds the job token (gitlab-ci-token:<token>@...), hence not public
        variables.append(Variable("CI_REPOSITORY_URL", project.repo.url, public=False))
        return variables


def _should_run(when: str, prior: str, *, dag: bool = False) -> bool:
    """Ci::ProcessBuildService#valid_statuses_for_build: an on_success job after a skipped stage runs, but a
    job whose needs: ended skipped is skipped too (its needed job never produced what it needs)."""
    if when == "always":
        return True
    if when == "on_failure":
        return prior == "failed"
    return prior == "success" if dag else prior in ("success", "skipped")


def _job_token() -> str:
    return "glcbt-" + secrets.token_urlsafe(24)


def _pipeline_variable(raw: Variable | dict[str, Any]) -> Variable:
    """Pipeline variables reach the runner as non-public user variables (variable_type file -> file)."""
    if isinstance(raw, Variable):
        return raw
    key = raw.get("key")
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]+", key):
        raise StateError({"base": [f"Variables key {key!r} can contain only letters, digits and '_'."]}, 400)
    kind = raw.get("variable_type", "env_var")
    if kind not in ("env_var", "file"):
        raise StateError({"base": ["Variables variable type is not included in the list"]}, 400)
    value = raw.get("value")
    return Variable(key, "" if value is None else str(value), public=False, file=kind == "file")
