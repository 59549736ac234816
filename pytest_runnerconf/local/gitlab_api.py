"""The REST v4 subset of GitLab that python-gitlab uses for scratch branches, commits, pipelines and jobs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

# BAD_GATEWAY: what nginx in front of GitLab answers when the application dies after doing the work.
from pytest_runnerconf.local.apifaults import API_FLAKY, BAD_GATEWAY, GitLabFaults, RunFaults
from pytest_runnerconf.local.errors import LocalConfigError
from pytest_runnerconf.local.faults import ENV_VAR as FAULTS_ENV_VAR
from pytest_runnerconf.local.faults import parse_faults
from pytest_runnerconf.local.gitlab_state import (
    FINISHED,
    NAMESPACE,
    NAMESPACE_ID,
    RUNNER_ID,
    USER_ID,
    USERNAME,
    GitLabState,
    Job,
    Pipeline,
    Project,
    StateError,
    iso,
)
from pytest_runnerconf.local.gitrepo import Branch, Commit, FileAction, RepoError
from pytest_runnerconf.local.httpserve import Handler, LoopbackServer, Request, Response, Router

API = "/api/v4"
_P = r"/projects/(?P<project>[^/]+)"
VERSION = {"version": "18.0.0", "revision": "runnerconf-local", "enterprise": False}
MAX_PER_PAGE = 100


def _not_found(_path: str) -> Response:
    return Response(404, {"error": "404 Not Found"})


def _int(value: str, name: str) -> int:
    if not value.isdigit():
        raise StateError(f"{name} is invalid", 400)
    return int(value)


def _params(request: Request) -> dict[str, Any]:
    """Query parameters overlaid with the body: python-gitlab sends either, depending on the call."""
    return {**request.query, **request.form()}


LOST_RESPONSE = "gitlab-lost-response"


def _run_faults(variables: list[dict[str, Any]]) -> frozenset[str]:
    """The faults a run asked for through its pipeline variables (RUNNERCONF_LOCAL_FAULTS)."""
    for variable in variables:
        if variable.get("key") == FAULTS_ENV_VAR:
            with contextlib.suppress(LocalConfigError):
                return parse_faults(str(variable.get("value") or ""))
    return frozenset()


def _branch_matches(name: str, search: str) -> bool:
    """GitLab's branch search: a substring, `^term` for a prefix, `term$` for a suffix."""
    if search.startswith("^") and search.endswith("$") and len(search) > 1:
        return name == search[1:-1]
    if search.startswith("^"):
        return name.startswith(search[1:])
    if search.endswith("$"):
        return name.endswith(search[:-1])
    return search in name


def paginate(request: Request, items: list[Any]) -> Response:
    """GitLab offset pagination: x-* headers plus a Link header that python-gitlab follows."""
    try:
        per_page = min(max(int(request.query.get("per_page") or 20), 1), MAX_PER_PAGE)
        page = max(int(request.query.get("page") or 1), 1)
    except ValueError:
        return Response(400, {"error": "page is invalid"})
    total = len(items)
    pages = max(1, math.ceil(total / per_page))
    headers = {
        "x-page": str(page),
        "x-per-page": str(per_page),
        "x-total": str(total),
        "x-total-pages": str(pages),
        "x-next-page": str(page + 1) if page < pages else "",
        "x-prev-page": str(page - 1) if page > 1 else "",
    }
    base = f"{request.scheme}://{request.headers.get('host', '127.0.0.1')}{request.path}"

    def link(target: int, rel: str) -> str:
        query = {**request.query, "page": str(target), "per_page": str(per_page)}
        return f'<{base}?{urlencode(query)}>; rel="{rel}"'

    links = []
    if page > 1:
        links.append(link(page - 1, "prev"))
    if page < pages:
        links.append(link(page + 1, "next"))
    links += [link(1, "first"), link(pages, "last")]
    headers["link"] = ", ".join(links)
    return Response(200, items[(page - 1) * per_page : page * per_page], headers)


_LEVELS = {0: "No one", 30: "Developers + Maintainers", 40: "Maintainers"}


class GitLabAPI:
    """Routes of the local GitLab; `start()` serves them on loopback and tells the state its URL."""

    def __init__(
        self,
        state: GitLabState,
        token: str | None = None,
        faults: frozenset[str] = frozenset(),
        run_faults: RunFaults | None = None,
    ) -> None:
        self.state = state
        self.token = token if token is not None else state.token
        if not self.token:
            raise ValueError("the local GitLab API needs a non-empty token")
        self.faults = faults  # the cluster's own; a run's faults come with its pipeline's variables
        self._lost: set[tuple[str, str]] = set()  # (POST kind, ref) whose answer was already lost once
        self.api_faults = GitLabFaults(self._flaky_pipeline, own=faults)
        # Where the Kubernetes API learns which pods belong to a faulted run (by their job ids).
        self.run_faults = run_faults if run_faults is not None else RunFaults()
        # What a preflight reads about the token and the project (tests change them to see it refuse).
        self.token_scopes: tuple[str, ...] = ("api",)
        self.builds_access_level = "enabled"
        # Protected branch name patterns -> push access level (0 no one, 30 developers, 40 maintainers);
        # the default branch is protected as GitLab protects it in a new project.
        self.protected_branches: dict[str, int] = {}
        self.router = Router()
        self._add_routes()

    def _lose_answer(self, kind: str, ref: str, faults: frozenset[str]) -> Response | None:
        """gitlab-lost-response: the first such POST for REF was performed; its answer is a proxy's 502."""
        if LOST_RESPONSE not in faults or (kind, ref) in self._lost:
            return None
        self._lost.add((kind, ref))
        return Response(502, BAD_GATEWAY, content_type="text/html")

    def _flaky_pipeline(self) -> int | None:
        """An unfinished pipeline whose run asked for api-flaky (its reads are the faulted ones), or None."""
        for project in self.state.projects():
            for pipeline in self.state.pipelines(project):
                if pipeline.status in FINISHED:
                    continue
                variables = [{"key": v.key, "value": v.value} for v in pipeline.variables]
                if API_FLAKY in _run_faults(variables):
                    return pipeline.id
        return None

    def start(self, port: int = 0, tls: Any = None) -> LoopbackServer:
        """Serve on loopback; with `tls` (an ssl.SSLContext) over HTTPS, as `runnerconf local up --tls-gitlab`."""
        server = LoopbackServer(self.router, _not_found, port, tls=tls).start()
        self.state.set_base_url(server.url)
        return server

    # plumbing ---------------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        given = request.headers.get("private-token", "")
        bearer = request.headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def _add(self, method: str, pattern: str, handler: Handler) -> None:
        def guarded(request: Request) -> Response:
            if not self._authorised(request):
                return Response(401, {"message": "401 Unauthorized"})
            failed = self.api_faults.read(request.method, request.path)
            if failed is not None:
                return failed
            try:
                return handler(request)
            except (StateError, RepoError) as exc:
                return Response(exc.status, {"message": exc.message})

        self.router.add(method, API + pattern, guarded)

    def _add_routes(self) -> None:
        routes: list[tuple[str, str, Callable[[Request], Response]]] = [
            ("GET", "/version", lambda r: Response(200, VERSION)),
            ("GET", "/user", lambda r: Response(200, self._user_json())),
            ("GET", "/projects", self._list_projects),
            ("GET", _P, self._get_project),
            ("GET", _P + "/repository/branches", self._list_branches),
            ("POST", _P + "/repository/branches", self._create_branch),
            ("GET", _P + "/repository/branches/(?P<branch>[^/]+)", self._get_branch),
            ("DELETE", _P + "/repository/branches/(?P<branch>[^/]+)", self._delete_branch),
            ("POST", _P + "/repository/commits", self._create_commit),
            ("GET", _P + "/repository/commits/(?P<sha>[^/]+)", self._get_commit),
            ("GET", _P + "/repository/tree", self._get_tree),
            ("GET", _P + "/repository/files/(?P<path>[^/]+)", self._get_file),
            ("GET", _P + "/repository/files/(?P<path>[^/]+)/raw", self._get_raw_file),
            ("POST", _P + "/pipeline", self._create_pipeline),
            ("GET", _P + "/pipelines", self._list_pipelines),
            ("GET", _P + r"/pipelines/(?P<pid>\d+)", self._get_pipeline),
            ("DELETE", _P + r"/pipelines/(?P<pid>\d+)", self._delete_pipeline),
            ("POST", _P + r"/pipelines/(?P<pid>\d+)/cancel", self._cancel_pipeline),
            ("GET", _P + r"/pipelines/(?P<pid>\d+)/jobs", self._list_pipeline_jobs),
            ("GET", _P + "/jobs", self._list_project_jobs),
            ("GET", _P + r"/jobs/(?P<job>\d+)", self._get_job),
            ("GET", _P + r"/jobs/(?P<job>\d+)/trace", self._get_trace),
            ("GET", _P + r"/jobs/(?P<job>\d+)/artifacts", self._get_artifacts),
            ("POST", _P + r"/jobs/(?P<job>\d+)/cancel", self._cancel_job),
            ("POST", _P + r"/jobs/(?P<job>\d+)/retry", self._retry_job),
            # what a preflight asks before pushing anything
            ("GET", "/personal_access_tokens/self", self._token_self),
            ("GET", _P + "/protected_branches", self._list_protected_branches),
            ("GET", _P + "/runners", self._list_project_runners),
        ]
        for method, pattern, handler in routes:
            self._add(method, pattern, handler)

    def _project(self, request: Request) -> Project:
        return self.state.project(request.params["project"])

    # preflight reads --------------------------------------------------------------------------------

    def _token_self(self, request: Request) -> Response:
        """GET /personal_access_tokens/self: the calling token's own record (GitLab 15.5+)."""
        return Response(
            200,
            {
                "id": 1,
                "name": "runnerconf-local",
                "revoked": False,
                "created_at": iso(self.state.created_at),
                "scopes": list(self.token_scopes),
                "user_id": USER_ID,
                "last_used_at": iso(time.time()),
                "active": True,
                "expires_at": None,
            },
        )

    def _list_protected_branches(self, request: Request) -> Response:
        project = self._project(request)
        rules = {project.repo.default_branch: 40, **self.protected_branches}
        items = [
            {
                "id": n,
                "name": name,
                "push_access_levels": [
                    {"id": n, "access_level": level, "access_level_description": _LEVELS[level]}
                ],
                "merge_access_levels": [
                    {"id": n, "access_level": 40, "access_level_description": _LEVELS[40]}
                ],
                "allow_force_push": False,
                "code_owner_approval_required": False,
            }
            for n, (name, level) in enumerate(rules.items(), start=1)
        ]
        return paginate(request, items)

    def _list_project_runners(self, request: Request) -> Response:
        """GET /projects/:id/runners, filtered by `tag_list` and `status` as GitLab filters them."""
        self._project(request)
        queue = self.state.job_queue
        if queue is None:
            return paginate(request, [])
        tags = queue.runner_tags()
        runner = {
            "id": 1,
            "description": "runnerconf-local",
            "ip_address": None,
            "active": True,
            "paused": False,
            "is_shared": False,
            "runner_type": "project_type",
            "name": "gitlab-runner",
            "online": True,
            "status": "online",
        }
        wanted_tags = {t for t in request.query.get("tag_list", "").split(",") if t}
        status = request.query.get("status")
        keep = wanted_tags <= set(tags) and status in (None, "", "online")
        return paginate(request, [runner] if keep else [])

    # JSON shapes ------------------------------------------------------------------------------------

    def _user_json(self) -> dict[str, Any]:
        return {
            "id": USER_ID,
            "username": USERNAME,
            "name": USERNAME,
            "state": "active",
            "locked": False,
            "avatar_url": None,
            "web_url": f"{self.state.base_url}/{USERNAME}",
            "is_admin": False,
            "bot": False,
        }

    def _namespace_json(self) -> dict[str, Any]:
        return {
            "id": NAMESPACE_ID,
            "name": NAMESPACE,
            "path": NAMESPACE,
            "kind": "group",
            "full_path": NAMESPACE,
            "parent_id": None,
            "web_url": f"{self.state.base_url}/groups/{NAMESPACE}",
        }

    def _project_json(self, project: Project) -> dict[str, Any]:
        url = self.state.project_url(project)
        return {
            "id": project.id,
            "description": project.description,
            "name": project.name,
            "name_with_namespace": f"{project.namespace} / {project.name}",
            "path": project.name,
            "path_with_namespace": project.path_with_namespace,
            "created_at": iso(project.created_at),
            "default_branch": project.repo.default_branch,
            "tag_list": [],
            "topics": [],
            "http_url_to_repo": f"{url}.git",
            "web_url": url,
            "readme_url": f"{url}/-/blob/{project.repo.default_branch}/README.md",
            "visibility": "private",
            "namespace": self._namespace_json(),
            "archived": False,
            "jobs_enabled": self.builds_access_level != "disabled",
            "builds_access_level": self.builds_access_level,
            "shared_runners_enabled": True,
            "build_timeout": 3600,
            "ci_config_path": None,
            "empty_repo": False,
        }

    def _commit_json(self, project: Project, commit: Commit) -> dict[str, Any]:
        return {
            "id": commit.id,
            "short_id": commit.short_id,
            "created_at": commit.committed_date,
            "parent_ids": list(commit.parent_ids),
            "title": commit.title,
            "message": commit.message,
            "author_name": commit.author_name,
            "author_email": commit.author_email,
            "authored_date": commit.authored_date,
            "committer_name": commit.committer_name,
            "committer_email": commit.committer_email,
            "committed_date": commit.committed_date,
            "trailers": {},
            "extended_trailers": {},
            "web_url": f"{self.state.project_url(project)}/-/commit/{commit.id}",
        }

    def _branch_json(self, project: Project, branch: Branch) -> dict[str, Any]:
        default = branch.name == project.repo.default_branch
        return {
            "name": branch.name,
            "merged": False,
            "protected": default,
            "default": default,
            "developers_can_push": False,
            "developers_can_merge": False,
            "can_push": True,
            "web_url": f"{self.state.project_url(project)}/-/tree/{quote(branch.name)}",
            "commit": self._commit_json(project, branch.commit),
        }

    def _pipeline_json(self, pipeline: Pipeline) -> dict[str, Any]:
        with self.state.lock:
            return {
                "id": pipeline.id,
                "iid": pipeline.iid,
                "project_id": pipeline.project_id,
                "sha": pipeline.sha,
                "ref": pipeline.ref,
                "status": pipeline.status,
                "source": "api",
                "created_at": iso(pipeline.created_at),
                "updated_at": iso(pipeline.updated_at),
                "web_url": self.state.pipeline_url(pipeline),
                "before_sha": pipeline.before_sha,
                "tag": pipeline.ref_kind == "tag",
                "yaml_errors": None,
                "user": self._user_json(),
                "started_at": iso(pipeline.started_at),
                "finished_at": iso(pipeline.finished_at),
                "committed_at": None,
                "duration": pipeline.duration,
                "queued_duration": None,
                "coverage": None,
                "detailed_status": {"icon": f"status_{pipeline.status}", "text": pipeline.status},
            }

    def _job_json(self, job: Job, now: float) -> dict[str, Any]:
        project = self.state.project(job.project_id)
        with self.state.lock:
            pipeline = self.state.pipeline(project, job.pipeline_id)
            commit = pipeline.commit
            data: dict[str, Any] = {
                "id": job.id,
                "status": job.status,
                "stage": job.stage,
                "name": job.name,
                "ref": pipeline.ref,
                "tag": pipeline.ref_kind == "tag",
                "coverage": None,
                "allow_failure": job.allow_failure,
                "created_at": iso(job.created_at),
                "started_at": iso(job.started_at),
                "finished_at": iso(job.finished_at),
                "erased_at": None,
                "duration": job.duration(now),
                "queued_duration": job.queued_duration(now),
                "user": self._user_json(),
                "commit": {
                    "id": commit.id,
                    "short_id": commit.short_id,
                    "title": commit.title,
                    "message": commit.message,
                    "author_name": commit.author_name,
                    "author_email": commit.author_email,
                    "created_at": commit.committed_date,
                },
                "pipeline": {
                    "id": pipeline.id,
                    "iid": pipeline.iid,
                    "project_id": pipeline.project_id,
                    "ref": pipeline.ref,
                    "sha": pipeline.sha,
                    "status": pipeline.status,
                    "source": "api",
                    "web_url": self.state.pipeline_url(pipeline),
                },
                "web_url": self.state.job_url(job),
                "project": {"ci_job_token_scope_enabled": False},
                "artifacts": [],
                "artifacts_expire_at": None,
                "runner": None,
                "runner_manager": None,
                "tag_list": list(job.definition.tags),
                "archived": False,
            }
            if job.runner_description is not None:
                data["runner"] = {
                    "id": RUNNER_ID,
                    "description": job.runner_description,
                    "ip_address": "127.0.0.1",
                    "active": True,
                    "paused": False,
                    "is_shared": True,
                    "runner_type": "instance_type",
                    "name": "gitlab-runner",
                    "online": True,
                    "status": "online",
                    "tag_list": list(job.runner_tags),
                }
            if job.status == "failed":
                data["failure_reason"] = job.failure_reason
            if job.artifact is not None:
                filename, blob = job.artifact
                data["artifacts_file"] = {"filename": filename, "size": len(blob)}
                data["artifacts"].append(
                    {"file_type": "archive", "size": len(blob), "filename": filename, "file_format": "zip"}
                )
            if job.trace:
                data["artifacts"].append(
                    {"file_type": "trace", "size": len(job.trace), "filename": "job.log", "file_format": None}
                )
            return data

    # projects / user --------------------------------------------------------------------------------

    def _list_projects(self, request: Request) -> Response:
        return paginate(request, [self._project_json(p) for p in self.state.projects()])

    def _get_project(self, request: Request) -> Response:
        return Response(200, self._project_json(self._project(request)))

    # repository -------------------------------------------------------------------------------------

    def _list_branches(self, request: Request) -> Response:
        project = self._project(request)
        branches = project.repo.branches()
        search = request.query.get("search")
        if search:
            branches = [b for b in branches if _branch_matches(b.name, search)]
        return paginate(request, [self._branch_json(project, b) for b in branches])

    def _get_branch(self, request: Request) -> Response:
        project = self._project(request)
        return Response(200, self._branch_json(project, project.repo.branch(request.params["branch"])))

    def _create_branch(self, request: Request) -> Response:
        project = self._project(request)
        params = _params(request)
        for key in ("branch", "ref"):
            if not params.get(key):
                return Response(400, {"error": f"{key} is missing"})
        branch = project.repo.create_branch(str(params["branch"]), str(params["ref"]))
        return Response(201, self._branch_json(project, branch))

    def _delete_branch(self, request: Request) -> Response:
        self._project(request).repo.delete_branch(request.params["branch"])
        return Response(204)

    def _create_commit(self, request: Request) -> Response:
        project = self._project(request)
        params = _params(request)
        for key in ("branch", "commit_message", "actions"):
            if not params.get(key):
                return Response(400, {"error": f"{key} is missing"})
        raw_actions = params["actions"]
        if not isinstance(raw_actions, list) or not all(isinstance(a, dict) for a in raw_actions):
            return Response(400, {"error": "actions is invalid"})
        actions = [FileAction.from_api(i, a) for i, a in enumerate(raw_actions)]
        commit = project.repo.commit(
            str(params["branch"]),
            str(params["commit_message"]),
            actions,
            start_branch=str(params.get("start_branch") or ""),
            start_sha=str(params.get("start_sha") or ""),
            author_name=str(params.get("author_name") or ""),
            author_email=str(params.get("author_email") or ""),
        )
        lost = self._lose_answer("commit", str(params["branch"]), self.faults)
        if lost is not None:
            return lost
        body = self._commit_json(project, commit)
        body.update(
            stats={"additions": 0, "deletions": 0, "total": 0},
            status=None,
            project_id=project.id,
            last_pipeline=None,
        )
        return Response(201, body)

    def _get_commit(self, request: Request) -> Response:
        project = self._project(request)
        return Response(200, self._commit_json(project, project.repo.commit_info(request.params["sha"])))

    def _get_tree(self, request: Request) -> Response:
        project = self._project(request)
        ref = request.query.get("ref") or project.repo.default_branch
        recursive = request.query.get("recursive", "").lower() in ("true", "1")
        entries = project.repo.tree(ref, request.query.get("path", ""), recursive)
        rows = [{"id": e.id, "name": e.name, "type": e.type, "path": e.path, "mode": e.mode} for e in entries]
        return paginate(request, rows)

    def _file(self, request: Request) -> tuple[Project, Any]:
        project = self._project(request)
        ref = request.query.get("ref")
        if not ref:
            raise StateError("400 Bad request - ref is missing", 400)
        return project, project.repo.read_file(ref, request.params["path"])

    def _get_file(self, request: Request) -> Response:
        _project, blob = self._file(request)
        return Response(
            200,
            {
                "file_name": blob.path.rsplit("/", 1)[-1],
                "file_path": blob.path,
                "size": len(blob.content),
                "encoding": "base64",
                "content_sha256": hashlib.sha256(blob.content).hexdigest(),
                "ref": blob.ref,
                "blob_id": blob.blob_id,
                "commit_id": blob.commit_id,
                "last_commit_id": blob.last_commit_id,
                "execute_filemode": False,
                "content": base64.b64encode(blob.content).decode(),
            },
        )

    def _get_raw_file(self, request: Request) -> Response:
        _project, blob = self._file(request)
        return Response(200, blob.content, content_type="text/plain; charset=utf-8")

    # pipelines --------------------------------------------------------------------------------------

    def _create_pipeline(self, request: Request) -> Response:
        project = self._project(request)
        params = _params(request)
        ref = params.get("ref")
        if not ref:
            return Response(400, {"error": "ref is missing"})
        variables = params.get("variables") or []
        if not isinstance(variables, list) or not all(isinstance(v, dict) for v in variables):
            return Response(400, {"error": "variables is invalid"})
        pipeline = self.state.create_pipeline(project, str(ref), variables)
        self.run_faults.add(list(pipeline.job_ids), _run_faults(variables))
        lost = self._lose_answer("pipeline", str(ref), self.faults | _run_faults(variables))
        if lost is not None:
            return lost
        return Response(201, self._pipeline_json(pipeline))

    def _list_pipelines(self, request: Request) -> Response:
        pipelines = self.state.pipelines(self._project(request))
        for key in ("ref", "sha", "status"):
            wanted = request.query.get(key)
            if wanted:
                pipelines = [p for p in pipelines if getattr(p, key) == wanted]
        if request.query.get("sort") == "asc":
            pipelines.reverse()
        return paginate(request, [self._pipeline_json(p) for p in pipelines])

    def _pipeline(self, request: Request) -> Pipeline:
        return self.state.pipeline(self._project(request), _int(request.params["pid"], "pipeline_id"))

    def _get_pipeline(self, request: Request) -> Response:
        return Response(200, self._pipeline_json(self._pipeline(request)))

    def _delete_pipeline(self, request: Request) -> Response:
        pipeline = self._pipeline(request)
        self.state.delete_pipeline(pipeline.project_id, pipeline.id)
        return Response(204)

    def _cancel_pipeline(self, request: Request) -> Response:
        pipeline = self._pipeline(request)
        self.state.cancel_pipeline(pipeline.project_id, pipeline.id)
        return Response(201, self._pipeline_json(pipeline))

    # jobs -------------------------------------------------------------------------------------------

    def _jobs_response(self, request: Request, jobs: list[Job]) -> Response:
        scope = request.query.get("scope") or request.query.get("scope[]")
        if scope:
            jobs = [j for j in jobs if j.status == scope]
        jobs = sorted(jobs, key=lambda j: j.id, reverse=True)
        now = time.time()
        return paginate(request, [self._job_json(j, now) for j in jobs])

    def _list_pipeline_jobs(self, request: Request) -> Response:
        # GitLab lists only the latest attempt of each job unless asked for the retried ones too.
        retried = str(_params(request).get("include_retried", "")).lower() == "true"
        return self._jobs_response(request, self.state.jobs(self._pipeline(request), include_retried=retried))

    def _list_project_jobs(self, request: Request) -> Response:
        project = self._project(request)  # the project's builds: retried ones included, as on GitLab
        jobs = [j for p in self.state.pipelines(project) for j in self.state.jobs(p, include_retried=True)]
        return self._jobs_response(request, jobs)

    def _job(self, request: Request) -> Job:
        return self.state.job(_int(request.params["job"], "job_id"), self._project(request))

    def _get_job(self, request: Request) -> Response:
        return Response(200, self._job_json(self._job(request), time.time()))

    def _get_trace(self, request: Request) -> Response:
        job = self._job(request)
        return Response(200, self.state.trace(job.id), content_type="text/plain; charset=utf-8")

    def _get_artifacts(self, request: Request) -> Response:
        job = self._job(request)
        artifact = self.state.artifacts(job.id)
        if artifact is None:
            return Response(404, {"message": "404 Not Found"})
        filename, data = artifact
        disposition = f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"
        return Response(
            200, data, {"content-disposition": disposition}, content_type="application/octet-stream"
        )

    def _cancel_job(self, request: Request) -> Response:
        job = self.state.cancel_job(self._job(request).id)
        return Response(201, self._job_json(job, time.time()))

    def _retry_job(self, request: Request) -> Response:
        """POST .../jobs/:job_id/retry: 201 with the new job; 403 when the job cannot be retried."""
        job = self.state.retry_job(self._job(request).id)
        return Response(201, self._job_json(job, time.time()))
