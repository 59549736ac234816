"""The only module that talks to GitLab (python-gitlab); SDK errors become GitLabError naming the setting."""

from __future__ import annotations

import fnmatch
import io
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import gitlab
import gitlab.exceptions
import requests
from gitlab.v4.objects import Project

from pytest_runnerconf.errors import GitLabError, RunnerConfWarning
from pytest_runnerconf.progress import FINISHED
from pytest_runnerconf.scrub import remember

if TYPE_CHECKING:
    from pytest_runnerconf.profile import Profile

T = TypeVar("T")
REQUEST_TIMEOUT_S = 30
MAX_ARTIFACT_BYTES = 5 * 1024 * 1024  # one artifact file: probes upload tiny files
# A write whose answer was lost (the server or a proxy failed after GitLab may have done it, or the
# connection died) is reconciled before it is sent again, at most this many times in all.
WRITE_ATTEMPTS = 3
_LOST_STATUS = frozenset({500, 502, 503, 504, 520, 521, 522, 523, 524})
# A read that answers one of these (or loses its connection) is asked again, this many times in all, after
# the server's Retry-After or a doubling back-off; a 429 is asked again for any method (GitLab refused it
# unperformed). Other writes are never repeated here: _write_once reconciles them.
READ_ATTEMPTS = 5
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_BASE_S = 0.5
RETRY_MAX_S = 8.0  # back-off without a Retry-After; a Retry-After is honoured up to the run's deadline
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class CrossOriginRedirect(requests.exceptions.RequestException):
    """GitLab answered with a redirect to another origin; the request was not sent there."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"redirect from {source} to {target}")
        self.source = source
        self.target = target


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port made explicit: what a token is bound to."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class SameOriginSession(requests.Session):
    """Follows redirects only within GitLab's own origin, so the token header never reaches another host.

    requests drops ``Authorization`` on a cross-host redirect but keeps python-gitlab's ``PRIVATE-TOKEN``
    header; refusing the hop before it is sent (rebuild_auth runs before each redirected request) is the
    only safe answer.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._origin = origin(base_url)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        if origin(str(prepared_request.url)) != self._origin:
            raise CrossOriginRedirect(str(response.url), str(prepared_request.url))
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]


class RetryingSession(SameOriginSession):
    """Asks a read again when GitLab (or its proxy) answers 429/502/503/504/500 or drops the connection.

    python-gitlab's own retry cannot be used: it reads Retry-After as an integer only (an HTTP date raises
    ValueError), it would sleep as long as the server asks, and it repeats POSTs whose answer was lost.
    Waits are bounded by DEADLINE (time.monotonic()); past it the read fails with GitLabBusy.
    """

    def __init__(self, base_url: str, deadline: float) -> None:
        super().__init__(base_url)
        self.deadline = deadline
        self.retries: dict[str, int] = {}  # by kind ("502", "429", "connection", "timeout"): faults survived
        self._lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self._lock:
            self.retries[kind] = self.retries.get(kind, 0) + 1

    def _wait(self, request: requests.PreparedRequest, status: int | None, seconds: float, why: str) -> None:
        if time.monotonic() + seconds > self.deadline:
            raise GitLabBusy(
                str(request.method),
                _path(request),
                status,
                f"{why}, and waiting {seconds:.0f}s more would pass the run's deadline",
            )
        time.sleep(seconds)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("allow_redirects") is False:  # a redirect hop of a request already being retried
            return super().send(request, **kwargs)
        retryable = _retryable(request)
        for attempt in range(1, READ_ATTEMPTS + 1):
            last = attempt == READ_ATTEMPTS
            try:
                response = super().send(request, **kwargs)
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout,
            ) as exc:
                if not retryable or last or isinstance(exc, requests.exceptions.SSLError):
                    raise
                kind = "timeout" if isinstance(exc, requests.exceptions.Timeout) else "connection"
                self.count(kind)
                self._wait(request, None, _backoff(attempt), f"the {kind} failed")
                continue
            status = response.status_code
            if status not in RETRY_STATUS or not (retryable or status == 429):
                return response
            asked = retry_after_s(response.headers.get("Retry-After"), response.headers.get("Date"))
            why = f"GitLab answered {status}" + (
                f" with Retry-After {asked:.0f}s" if asked is not None else ""
            )
            if last:
                response.close()
                raise GitLabBusy(str(request.method), _path(request), status, f"{why} {attempt} times")
            response.close()
            self.count(str(status))
            self._wait(request, status, asked if asked is not None else _backoff(attempt), why)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _backoff(attempt: int) -> float:
    return float(min(RETRY_BASE_S * 2.0 ** (attempt - 1), RETRY_MAX_S))


def _path(request: requests.PreparedRequest) -> str:
    """The request's path without its query (which may carry a token) for messages."""
    return urlsplit(str(request.url or "")).path


class GitLabBusy(requests.exceptions.RequestException):
    """GitLab kept answering a read with 429/5xx (or asked to wait past the run's deadline)."""

    def __init__(self, method: str, url: str, status: int | None, why: str) -> None:
        super().__init__(f"{method} {url}: {why}")
        self.status = status
        self.why = why


class GitLabAPIFailing(GitLabError):
    """GitLab kept failing after the retries: the checks that needed it could not be tested."""

    cause = "api-error"


def retry_after_s(
    value: str | None, server_date: str | None = None, now: float | None = None
) -> float | None:
    """A Retry-After header as seconds to wait: delta-seconds or an HTTP date (RFC 9110 10.2.3).

    A date is measured against the answer's own Date header when it has one (GitLab's clock against GitLab's
    clock), else against this machine's; a date in the past means at once. None: no usable value.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    base = now if now is not None else time.time()
    if server_date:
        with suppress(TypeError, ValueError, IndexError):
            base = parsedate_to_datetime(server_date).timestamp()
    return max(0.0, when.timestamp() - base)


def _retryable(request: requests.PreparedRequest) -> bool:
    method = str(request.method or "").upper()
    # Cancelling twice is cancelling once: the cancel endpoints are POSTs that can safely be asked again.
    return method in _IDEMPOTENT or (
        method == "POST" and str(request.url or "").split("?")[0].endswith("/cancel")
    )


def _lost(exc: BaseException) -> bool:
    """Whether a write may have happened although its answer did not arrive."""
    if isinstance(exc, CrossOriginRedirect):
        return False
    if isinstance(exc, gitlab.exceptions.GitlabError):
        return exc.response_code in _LOST_STATUS
    return isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError,
    )


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


class JobNotRetryable(GitLabError):
    """GitLab refused to retry a job (403): it is unfinished, was retried already, or retries are not allowed."""


class _LostAnswer(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class GitLabDriver:
    """One scratch project on one GitLab, with every error phrased for the profile's owner."""

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._setting = f"clusters.{profile.name}"
        ca_file = profile.gitlab_ca_file
        if ca_file is not None and not Path(ca_file).is_file():
            raise GitLabError(f"the CA file {ca_file} does not exist; fix {self._setting}.gitlab_ca_file")
        # token() raises ConfigError naming the variable when unset; the token itself is never logged.
        token = profile.token()
        remember(token)
        loose = profile.token_file_warning()
        if loose:
            warnings.warn(RunnerConfWarning(loose), stacklevel=2)
        # Retries are the session's (bounded by the run's whole life: its deadline, then its cleanup).
        expect = profile.expect
        self._session = RetryingSession(
            profile.gitlab_url, time.monotonic() + expect.run_deadline_s + expect.cleanup_deadline_s
        )
        self._gl = gitlab.Gitlab(
            profile.gitlab_url,
            private_token=token,
            timeout=REQUEST_TIMEOUT_S,
            retry_transient_errors=False,
            keep_base_url=True,
            session=self._session,
            # Verification stays on: with a CA file against that CA only, else against the system's.
            ssl_verify=ca_file or True,
        )
        self._project: Project | None = None
        self.capped: dict[str, str] = {}  # what a size cap cut, by object: said in the evidence notes

    def sibling(self) -> GitLabDriver:
        """A driver of its own for another thread: the same profile and project, its own HTTP session.

        The project is a lazy object of the opened one's id (no request); preflight() must have run.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunnerConfWarning)  # said once, by the first driver
            other = GitLabDriver(self._profile)
        other._project = other._gl.projects.get(self.project_id, lazy=True)
        return other

    @property
    def url(self) -> str:
        return self._profile.gitlab_url

    @property
    def retries(self) -> dict[str, int]:
        """Transient failures survived so far, by kind ("502", "429", "connection")."""
        return dict(self._session.retries)

    def _token_source(self) -> str:
        if self._profile.token_env:
            return f"${self._profile.token_env}"
        return f"the file {self._profile.token_file}"

    @contextmanager
    def _translate(
        self, action: str, not_found: str | None = None, *, lost_ok: bool = False
    ) -> Iterator[None]:
        """Turn SDK and transport errors into one GitLabError sentence naming what to fix.

        With LOST_OK, an error after which the request may still have taken effect is passed on as
        _LostAnswer for the caller to reconcile.
        """
        try:
            yield
        except (gitlab.exceptions.GitlabError, requests.exceptions.RequestException) as exc:
            if lost_ok and _lost(exc):
                raise _LostAnswer(exc) from None
            with self._translate_errors(action, not_found):
                raise

    @contextmanager
    def _translate_errors(self, action: str, not_found: str | None) -> Iterator[None]:
        try:
            yield
        except GitLabBusy as exc:
            raise GitLabAPIFailing(
                f"GitLab at {self.url} failed to {action}: {exc.why}; check the GitLab server's health "
                "(and its rate limits for the token's user)"
            ) from None
        except CrossOriginRedirect as exc:
            raise GitLabError(
                f"GitLab at {self.url} redirected a request to another origin ({exc.target}) and the token was "
                f"not sent there; set {self._setting}.gitlab_url to the address GitLab really serves"
            ) from None
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
        except requests.exceptions.SSLError:
            where = (
                f"the CA in {self._profile.gitlab_ca_file}"
                if self._profile.gitlab_ca_file
                else "the system's CAs"
            )
            raise GitLabError(
                f"GitLab at {self.url} presented a certificate that {where} do not verify; set "
                f"{self._setting}.gitlab_ca_file to the CA bundle that signed it"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise GitLabError(
                f"cannot reach GitLab at {self.url} ({_reason(exc)}); check {self._setting}.gitlab_url"
            ) from None

    # ------------------------------------------------------------ preflight

    def preflight(self) -> dict[str, Any]:
        """Authenticate and open the project; nothing is created. Returns facts for the evidence."""
        with self._translate("authenticate"):
            self._gl.auth()
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
            # For the report's header only: python-gitlab answers "unknown" when /version cannot be read.
            "gitlab_version": self._gl.version()[0],
        }

    def readiness(self, branch_prefix: str) -> None:
        """Before pushing anything: whatever would stop the run later, all of it in one sentence.

        The token's scopes (where GitLab tells them: personal, project and group access tokens), CI/CD on in
        the project, pushing BRANCH_PREFIX* not refused by a protected-branch rule, an online runner with the
        profile's tags (where the token may list the project's runners). What the token may not read is not
        a problem: the run finds out by doing.

        Raises:
            GitLabError: one sentence per problem found, joined.
        """
        problems = [
            p
            for p in (
                self._scope_problem(),
                self._cicd_problem(),
                self._protection_problem(branch_prefix),
                self._runner_problem(),
            )
            if p
        ]
        if problems:
            raise GitLabError("; ".join(problems))

    def _optional(self, read: Callable[[], T]) -> T | None:
        """READ, or None when GitLab does not answer it for this token (older GitLab, too few rights)."""
        try:
            return read()
        except (gitlab.exceptions.GitlabError, requests.exceptions.RequestException):
            return None

    def token_scopes(self) -> list[str] | None:
        """The token's scopes where GitLab tells them (personal, project and group access tokens), else None."""
        record = self._optional(lambda: self._gl.http_get("/personal_access_tokens/self"))
        scopes = record.get("scopes") if isinstance(record, dict) else None
        return [str(s) for s in scopes] if isinstance(scopes, list) else None

    def _scope_problem(self) -> str:
        scopes = self.token_scopes()
        if scopes is None or "api" in scopes:
            return ""
        return (
            f"the token from {self._token_source()} has the scopes [{', '.join(map(str, scopes))}], but the run "
            "pushes a branch and creates a pipeline, which need the `api` scope; give "
            f"{self._setting}.token_env (or token_file) a token with `api`"
        )

    def _cicd_problem(self) -> str:
        attrs = self.project.attributes
        if attrs.get("builds_access_level") != "disabled" and attrs.get("jobs_enabled") is not False:
            return ""
        return (
            f"CI/CD is disabled in project {self._profile.project} (Settings, General, Visibility, project "
            f"features, permissions: CI/CD); turn it on, or point {self._setting}.project at a project with it"
        )

    def _protection_problem(self, branch_prefix: str) -> str:
        rules = self._optional(lambda: self.project.protectedbranches.list(get_all=True))
        probe = f"{branch_prefix}20260101-000000-000000"
        access = (self.project.attributes.get("permissions") or {}).get("project_access") or {}
        mine = access.get("access_level") if isinstance(access, dict) else None
        for rule in rules or []:
            name = str(rule.attributes.get("name") or "")
            if not fnmatch.fnmatchcase(probe, name):
                continue
            levels = [
                int(p.get("access_level") or 0) for p in rule.attributes.get("push_access_levels") or []
            ]
            allowed = any(0 < level <= mine for level in levels) if isinstance(mine, int) else any(levels)
            if not allowed:
                return (
                    f"the protected branch rule {name!r} of project {self._profile.project} does not let this "
                    f"token's user push {branch_prefix}* branches; allow it to push there (Settings, Repository, "
                    f"Protected branches), or point {self._setting}.project at a scratch project without the rule"
                )
        return ""

    def _runner_problem(self) -> str:
        tags = self._profile.runner_tags
        if not tags:
            return ""  # untagged jobs: whether a runner takes them (run_untagged) is not in the list
        runners = self._optional(
            lambda: self.project.runners.list(tag_list=",".join(tags), status="online", get_all=False)
        )
        if runners is None or runners:
            return ""
        return (
            f"no online runner with tags [{', '.join(tags)}] is available to project {self._profile.project} "
            f"(GitLab's list of the project's runners); check {self._setting}.runner_tags and that the runner "
            "is online"
        )

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

        def post() -> str:
            return str(self.project.commits.create(data, retry_transient_errors=False).id)

        def happened() -> str | None:
            head = self.branch_head(branch)
            if head is None:
                return None
            if str(head.get("message") or "").strip() != message.strip():
                raise GitLabError(
                    f"the scratch branch {branch} exists on {self.url} with a commit this run did not make; "
                    "delete it (`runnerconf sweep`) and run again"
                )
            return str(head["id"])

        return self._write_once(f"push the scratch branch {branch}", post, happened)

    def branch_head(self, branch: str) -> dict[str, Any] | None:
        """The head commit of BRANCH ({id, message, committed_date, ...}), or None when there is no such branch."""
        with self._translate(f"read the branch {branch}"):
            try:
                found = self.project.branches.get(branch)
            except gitlab.exceptions.GitlabGetError as exc:
                if exc.response_code == 404:
                    return None
                raise
        return dict(found.attributes.get("commit") or {})

    def _write_once(self, action: str, post: Callable[[], T], happened: Callable[[], T | None]) -> T:
        """POST once, never blindly again: after a lost answer HAPPENED() says whether the write took effect.

        python-gitlab's transient-error retries would repeat a POST whose first attempt succeeded behind a 502
        or a timeout (a second pipeline, never cancelled); here the retry comes only after the reconciliation
        found nothing.
        """
        last: BaseException | None = None
        for _ in range(WRITE_ATTEMPTS):
            try:
                with self._translate(action, lost_ok=True):
                    return post()
            except _LostAnswer as lost:
                last = lost.error
            found = happened()
            if found is not None:
                return found
        with self._translate(action):
            assert last is not None
            raise last

    def delete_branch(self, branch: str) -> None:
        with self._translate(f"delete the scratch branch {branch}"):
            try:
                self.project.branches.delete(branch)
            except gitlab.exceptions.GitlabDeleteError as exc:
                if exc.response_code != 404:  # already gone is what we wanted
                    raise

    # ------------------------------------------------------------ pipeline and jobs

    def create_pipeline(
        self, ref: str, variables: dict[str, str], notes: list[str] | None = None
    ) -> dict[str, Any]:
        """Create ONE pipeline on REF (a scratch branch: every pipeline on it is this run's).

        After a lost answer the pipelines of REF are listed: the first is followed, any other is cancelled
        (and said so in NOTES).
        """
        payload = {"ref": ref, "variables": [{"key": k, "value": v} for k, v in variables.items()]}
        reconciled = False

        def post() -> dict[str, Any]:
            return dict(self.project.pipelines.create(payload, retry_transient_errors=False).attributes)

        def happened() -> dict[str, Any] | None:
            nonlocal reconciled
            reconciled = True
            found = self.pipelines_for_ref(ref)
            return found[0] if found else None

        pipeline = self._write_once(f"create a pipeline on {ref}", post, happened)
        if reconciled:
            for extra in self.pipelines_for_ref(ref):
                if extra["id"] != pipeline["id"] and extra.get("status") not in FINISHED:
                    self.cancel_pipeline(int(extra["id"]))
                    if notes is not None:
                        notes.append(f"cancelled pipeline #{extra['id']}: a second pipeline on {ref}")
            if notes is not None:
                notes.append(
                    f"GitLab lost the answer to creating pipeline #{pipeline['id']}; reconciled by ref"
                )
        return pipeline

    def scratch_branches(self, prefix: str) -> list[dict[str, Any]]:
        """Branches whose name starts with PREFIX, each with its head commit."""
        with self._translate(f"list the branches {prefix}*"):
            found = self.project.branches.list(search=f"^{prefix}", get_all=True)
        return [dict(b.attributes) for b in found if str(b.attributes.get("name", "")).startswith(prefix)]

    def unfinished_pipelines(self) -> list[dict[str, Any]]:
        """The project's pipelines that are created, pending or running (any ref)."""
        found: dict[int, dict[str, Any]] = {}
        for status in ("created", "pending", "running"):
            with self._translate(f"list the {status} pipelines"):
                for p in self.project.pipelines.list(status=status, get_all=True):
                    found[int(p.id)] = dict(p.attributes)
        return [found[k] for k in sorted(found)]

    def pipelines_for_ref(self, ref: str) -> list[dict[str, Any]]:
        """The project's pipelines on REF, oldest first."""
        with self._translate(f"list the pipelines of {ref}"):
            found = self.project.pipelines.list(ref=ref, get_all=True)
        return sorted((dict(p.attributes) for p in found), key=lambda p: int(p["id"]))

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

    def retry_job(self, job_id: int) -> dict[str, Any]:
        """Retry a finished job through GitLab's job retry API; the new job's JSON (a new id, the same name).

        The POST is sent once (a second would make a second new job); after a lost answer the pipeline's
        latest jobs say whether it took effect: a job of the same name newer than JOB_ID is the retry.

        Raises:
            JobNotRetryable: GitLab answered 403 (the job cannot be retried).
        """
        old: dict[str, Any] = {}

        def post() -> dict[str, Any]:
            try:
                return dict(self.project.jobs.get(job_id, lazy=True).retry())
            except gitlab.exceptions.GitlabError as exc:
                if exc.response_code == 403:
                    raise JobNotRetryable(
                        f"GitLab at {self.url} refused to retry job {job_id} (403: {exc.error_message}); "
                        "a job can be retried once it has finished, and only its latest attempt"
                    ) from None
                raise

        def happened() -> dict[str, Any] | None:
            if not old:
                old.update(self.job(job_id))
            pipeline = int((old.get("pipeline") or {}).get("id") or 0)
            newer = [
                j
                for j in self.pipeline_jobs(pipeline)
                if j.get("name") == old.get("name") and int(j["id"]) > job_id
            ]
            return min(newer, key=lambda j: int(j["id"])) if newer else None

        return self._write_once(f"retry job {job_id}", post, happened)

    def job(self, job_id: int) -> dict[str, Any]:
        with self._translate(f"read job {job_id}"):
            return dict(self.project.jobs.get(job_id).attributes)

    def trace(self, job_id: int) -> str:
        """The job's trace, read as a stream and cut at the profile's max_trace_bytes (noted in `capped`)."""
        limit = self._profile.max_trace_bytes
        with self._translate(f"read the trace of job {job_id}"):
            raw, cut = self._streamed(
                lambda: self.project.jobs.get(job_id, lazy=True).trace(streamed=True, iterator=True), limit
            )
        if cut:
            self.capped[f"trace of job {job_id}"] = (
                f"the trace of job {job_id} was cut at {limit} bytes ({self._setting}.max_trace_bytes)"
            )
        return raw.decode("utf-8", errors="replace")

    def _streamed(self, open_stream: Callable[[], Iterable[bytes]], limit: int) -> tuple[bytes, bool]:
        """Read a streamed download within LIMIT, from the start again when its connection drops mid-body
        (the session retries only what fails before the body)."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return _read_capped(open_stream(), limit)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                if attempt == READ_ATTEMPTS:
                    raise
                self._session.count("dropped")
                time.sleep(_backoff(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def artifacts(self, job_id: int) -> dict[str, str]:
        """The job's artifacts archive as {path: text}; {} when the job uploaded none or it is too big."""
        limit = self._profile.max_artifact_bytes
        with self._translate(f"download the artifacts of job {job_id}"):
            try:
                data, cut = self._streamed(
                    lambda: self.project.jobs.get(job_id, lazy=True).artifacts(streamed=True, iterator=True),
                    limit,
                )
            except gitlab.exceptions.GitlabError as exc:
                if exc.response_code == 404:
                    return {}
                raise
        if cut:
            self.capped[f"artifacts of job {job_id}"] = (
                f"the artifacts archive of job {job_id} is larger than {limit} bytes and was not read "
                f"({self._setting}.max_artifact_bytes)"
            )
            return {}
        files, skipped = _unzip_text(data, limit)
        if skipped:
            self.capped[f"artifacts of job {job_id}"] = (
                f"job {job_id}: artifact files {', '.join(skipped)} exceed {limit} bytes unpacked and were not "
                f"read ({self._setting}.max_artifact_bytes)"
            )
        return files


def _read_capped(chunks: Iterable[bytes], limit: int) -> tuple[bytes, bool]:
    """At most LIMIT bytes of a streamed body; True when there was more (the rest is never read)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            return bytes(buffer[:limit]), True
    return bytes(buffer), False


def _unzip_text(data: bytes, limit: int) -> tuple[dict[str, str], list[str]]:
    """Text of the archive's files, each and all together within LIMIT bytes unpacked (a zip can lie)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return {}, []
    files: dict[str, str] = {}
    skipped: list[str] = []
    budget = limit
    for info in archive.infolist():
        if info.is_dir():
            continue
        with archive.open(info) as member:
            content = member.read(min(budget, MAX_ARTIFACT_BYTES) + 1)
        if len(content) > min(budget, MAX_ARTIFACT_BYTES):
            skipped.append(info.filename)
            continue
        budget -= len(content)
        files[info.filename] = content.decode("utf-8", errors="replace")
    return files, skipped
