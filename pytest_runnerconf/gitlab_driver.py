"""The only module that talks to GitLab (python-gitlab); SDK errors become GitLabError naming the setting."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gitlab
import gitlab.exceptions
import requests
from gitlab.v4.objects import Project

from pytest_runnerconf.errors import GitLabError

if TYPE_CHECKING:
    from pytest_runnerconf.profile import Profile

REQUEST_TIMEOUT_S = 30
MAX_ARTIFACT_BYTES = 5 * 1024 * 1024  # probes upload tiny files; anything larger is not ours to read


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("name or service not known", "name does not resolve"),
        ("nodename nor servname", "name does not resolve"),
        ("timed out", "timed out"),
        ("certificate", "TLS certificate rejected"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


class GitLabDriver:
    """One scratch project on one GitLab, with every error phrased for the profile's owner."""

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._setting = f"clusters.{profile.name}"
        # token() raises ConfigError naming the variable when unset; the token itself is never logged.
        self._gl = gitlab.Gitlab(
            profile.gitlab_url,
            private_token=profile.token(),
            timeout=REQUEST_TIMEOUT_S,
            retry_transient_errors=True,
            keep_base_url=True,
        )
        self._project: Project | None = None

    @property
    def url(self) -> str:
        return self._profile.gitlab_url

    def _token_source(self) -> str:
        if self._profile.token_env:
            return f"${self._profile.token_env}"
        return f"the file {self._profile.token_file}"

    @contextmanager
    def _translate(self, action: str, not_found: str | None = None) -> Iterator[None]:
        """Turn SDK and transport errors into one GitLabError sentence naming what to fix."""
        try:
            yield
        except gitlab.exceptions.GitlabAuthenticationError:
            key = "token_env" if self._profile.token_env else "token_file"
            raise GitLabError(
                f"GitLab at {self.url} rejected the token from {self._token_source()} (401); "
                f"set {self._setting}.{key} to a valid token with api scope"
            ) from None
        except gitlab.exceptions.GitlabError as exc:
            code = exc.response_code
            if code == 404 and not_found:
                raise GitLabError(not_found) from None
            if code == 403:
                raise GitLabError(
                    f"GitLab at {self.url} refused to {action} (403); give the token's user at least "
                    f"Developer access to {self._profile.project} ({self._setting}.project)"
                ) from None
            raise GitLabError(
                f"GitLab at {self.url} failed to {action} ({code}: {exc.error_message}); "
                f"check {self._setting}.gitlab_url and the GitLab server's health"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise GitLabError(
                f"cannot reach GitLab at {self.url} ({_reason(exc)}); check {self._setting}.gitlab_url"
            ) from None

    # ------------------------------------------------------------ preflight

    def preflight(self) -> dict[str, Any]:
        """Authenticate and open the project; nothing is created. Returns facts for the evidence."""
        # An unreachable GitLab should fail in seconds, not after python-gitlab's ~100 s of transient retries.
        self._gl.retry_transient_errors = False
        try:
            with self._translate("authenticate"):
                self._gl.auth()
        finally:
            self._gl.retry_transient_errors = True
        with self._translate(
            f"open project {self._profile.project}",
            not_found=f"project {self._profile.project} not found on {self.url}; "
            f"check {self._setting}.project (and that the token's user is a member)",
        ):
            self._project = self._gl.projects.get(self._profile.project)
        return {
            "gitlab_url": self.url,
            "project_id": self._project.id,
            "project_path": self._project.path_with_namespace,
            "default_branch": self._project.attributes.get("default_branch"),
        }

    @property
    def project(self) -> Project:
        if self._project is None:
            raise GitLabError("internal: GitLabDriver.preflight() must run before any project call")
        return self._project

    @property
    def project_id(self) -> int:
        return int(self.project.id)

    # ------------------------------------------------------------ scratch branch

    def _existing_paths(self, ref: str, paths: list[str]) -> set[str]:
        existing: set[str] = set()
        with self._translate(f"list the files of {ref}"):
            tree = self.project.repository_tree(ref=ref, recursive=True, get_all=True)
        names = {entry["path"] for entry in tree}
        existing.update(p for p in paths if p in names)
        return existing

    def push_files(self, branch: str, files: dict[str, str], message: str) -> str:
        """Create `branch` from the default branch with all files in ONE commit; returns the commit SHA."""
        start = self.project.attributes.get("default_branch")
        paths = sorted(files)
        existing = self._existing_paths(start, paths) if start else set()
        actions = [
            {"action": "update" if p in existing else "create", "file_path": p, "content": files[p]}
            for p in paths
        ]
        data: dict[str, Any] = {"branch": branch, "commit_message": message, "actions": actions}
        if start:
            data["start_branch"] = start
        with self._translate(f"push the scratch branch {branch}"):
            commit = self.project.commits.create(data)
        return str(commit.id)

    def delete_branch(self, branch: str) -> None:
        with self._translate(f"delete the scratch branch {branch}"):
            try:
                self.project.branches.delete(branch)
            except gitlab.exceptions.GitlabDeleteError as exc:
                if exc.response_code != 404:  # already gone is what we wanted
                    raise

    # ------------------------------------------------------------ pipeline and jobs

    def create_pipeline(self, ref: str, variables: dict[str, str]) -> dict[str, Any]:
        payload = {"ref": ref, "variables": [{"key": k, "value": v} for k, v in variables.items()]}
        with self._translate(f"create a pipeline on {ref}"):
            pipeline = self.project.pipelines.create(payload)
        return dict(pipeline.attributes)

    def pipeline(self, pipeline_id: int) -> dict[str, Any]:
        with self._translate(f"read pipeline {pipeline_id}"):
            return dict(self.project.pipelines.get(pipeline_id).attributes)

    def pipeline_jobs(self, pipeline_id: int) -> list[dict[str, Any]]:
        with self._translate(f"list the jobs of pipeline {pipeline_id}"):
            pipeline = self.project.pipelines.get(pipeline_id, lazy=True)
            return [dict(j.attributes) for j in pipeline.jobs.list(get_all=True)]

    def cancel_pipeline(self, pipeline_id: int) -> None:
        with self._translate(f"cancel pipeline {pipeline_id}"):
            self.project.pipelines.get(pipeline_id, lazy=True).cancel()

    def cancel_job(self, job_id: int) -> None:
        with self._translate(f"cancel job {job_id}"):
            self.project.jobs.get(job_id, lazy=True).cancel()

    def job(self, job_id: int) -> dict[str, Any]:
        with self._translate(f"read job {job_id}"):
            return dict(self.project.jobs.get(job_id).attributes)

    def trace(self, job_id: int) -> str:
        with self._translate(f"read the trace of job {job_id}"):
            raw = self.project.jobs.get(job_id, lazy=True).trace()
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    def artifacts(self, job_id: int) -> dict[str, str]:
        """The job's artifacts archive as {path: text}; {} when the job uploaded none."""
        with self._translate(f"download the artifacts of job {job_id}"):
            try:
                data = self.project.jobs.get(job_id, lazy=True).artifacts()
            except gitlab.exceptions.GitlabError as exc:
                if exc.response_code == 404:
                    return {}
                raise
        if not isinstance(data, bytes) or not data:
            return {}
        return _unzip_text(data)


def _unzip_text(data: bytes) -> dict[str, str]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return {}
    files: dict[str, str] = {}
    for info in archive.infolist():
        if info.is_dir() or info.file_size > MAX_ARTIFACT_BYTES:
            continue
        files[info.filename] = archive.read(info).decode("utf-8", errors="replace")
    return files
