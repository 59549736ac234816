"""GitLab writes happen once, reads survive 5xx and rate limits, tokens go only to GitLab's origin, big
answers are read with a cap.

Against the local GitLab API in-process (loopback, no Docker) and small loopback fakes for what it cannot do
(redirect to another origin, hang past the client timeout).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gitlab
import gitlab.exceptions
import pytest

from pytest_runnerconf import gitlab_driver
from pytest_runnerconf.errors import ConfigError, GitLabError, RunnerConfWarning
from pytest_runnerconf.gitlab_driver import GitLabDriver
from pytest_runnerconf.local.gitlab_api import GitLabAPI
from pytest_runnerconf.local.gitlab_state import GitLabState
from pytest_runnerconf.local.httpserve import LoopbackServer, Request, Response, Router
from pytest_runnerconf.marker import commit_message
from pytest_runnerconf.profile import Profile, profile_from_table

TOKEN = "glpat-driver-test-token-0123"
TOKEN_ENV = "RUNNERCONF_DRIVER_TEST_TOKEN"
CI = "stages: [t]\nprobe:\n  stage: t\n  script: [echo probe]\n"
RUN_ID = "20261201-120000-abcdef"
BRANCH = f"runnerconf/{RUN_ID}"


def _profile(url: str, **extra: Any) -> Profile:
    table = {"gitlab_url": url, "token_env": TOKEN_ENV, "project": "runnerconf/scratch", "namespace": "ci"}
    return profile_from_table("t", {**table, **extra}, "runnerconf.toml")


@dataclass
class Local:
    state: GitLabState
    api: GitLabAPI
    server: LoopbackServer
    gl: gitlab.Gitlab
    notes: list[str] = field(default_factory=list)

    def driver(self, **extra: Any) -> GitLabDriver:
        driver = GitLabDriver(_profile(self.server.url, **extra))
        driver.preflight()
        return driver

    def pipelines(self, ref: str = BRANCH) -> list[Any]:
        return list(self.gl.projects.get("runnerconf/scratch").pipelines.list(ref=ref, get_all=True))


def _local(tmp_path: Path, faults: frozenset[str] = frozenset()) -> Local:
    state = GitLabState(tmp_path, None, token=TOKEN)
    state.create_project("scratch")
    api = GitLabAPI(state, TOKEN, faults=faults)
    server = api.start()
    return Local(state, api, server, gitlab.Gitlab(server.url, private_token=TOKEN))


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def lossy(tmp_path: Path, token: None) -> Iterator[Local]:
    """A local GitLab started with gitlab-lost-response: the first commit and pipeline POST answer 502."""
    local = _local(tmp_path, frozenset({"gitlab-lost-response"}))
    yield local
    local.server.stop()


@pytest.fixture
def clean(tmp_path: Path, token: None) -> Iterator[Local]:
    local = _local(tmp_path)
    yield local
    local.server.stop()


# ---------------------------------------------------------------- writes that happen once


def test_preflight_reads_the_gitlab_version_for_the_report(clean: Local) -> None:
    from pytest_runnerconf.local.gitlab_api import VERSION

    facts = GitLabDriver(_profile(clean.server.url)).preflight()
    assert facts["gitlab_version"] == VERSION["version"]


def test_lost_commit_answer_is_reconciled_to_the_one_commit(lossy: Local) -> None:
    driver = lossy.driver()
    sha = driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    project = lossy.gl.projects.get("runnerconf/scratch")
    head = project.branches.get(BRANCH).commit
    main = project.branches.get("main").commit
    assert head["id"] == sha
    assert project.commits.get(sha).parent_ids == [main["id"]], "exactly one commit on the scratch branch"


def test_lost_pipeline_answer_yields_one_followed_pipeline(lossy: Local) -> None:
    driver = lossy.driver()
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    notes: list[str] = []
    pipeline = driver.create_pipeline(BRANCH, {"RUNNERCONF_RUN_ID": RUN_ID}, notes)
    assert [p.id for p in lossy.pipelines()] == [pipeline["id"]]
    assert any("lost the answer" in n for n in notes), notes


def test_a_runs_own_fault_variable_loses_the_pipeline_answer(clean: Local) -> None:
    # Faults a run asks for travel with its pipeline (RUNNERCONF_LOCAL_FAULTS), as in the fault matrix.
    driver = clean.driver()
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    variables = {"RUNNERCONF_LOCAL_FAULTS": "gitlab-lost-response", "RUNNERCONF_RUN_ID": RUN_ID}
    notes: list[str] = []
    pipeline = driver.create_pipeline(BRANCH, variables, notes)
    assert [p.id for p in clean.pipelines()] == [pipeline["id"]] and notes


def test_the_fault_bites_a_blind_retry(lossy: Local) -> None:
    """The control: python-gitlab's own transient-error retry makes a second pipeline under this fault."""
    lossy.driver().push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    blind = gitlab.Gitlab(lossy.server.url, private_token=TOKEN, retry_transient_errors=True)
    blind.projects.get("runnerconf/scratch").pipelines.create({"ref": BRANCH})
    assert len(lossy.pipelines()) == 2


def _failed_job(local: Local, driver: GitLabDriver) -> int:
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    pipeline = driver.create_pipeline(BRANCH, {"RUNNERCONF_RUN_ID": RUN_ID})
    job_id = int(driver.pipeline_jobs(int(pipeline["id"]))[0]["id"])
    local.state.job_started(job_id, "test runner")
    local.state.job_finished(job_id, "failed", "runner_system_failure")
    return job_id


def test_retry_job_answers_the_new_job(clean: Local) -> None:
    driver = clean.driver()
    job_id = _failed_job(clean, driver)
    new = driver.retry_job(job_id)
    assert new["id"] != job_id and new["name"] == "probe" and new["status"] == "pending"
    assert [j["id"] for j in driver.pipeline_jobs(int(new["pipeline"]["id"]))] == [new["id"]]


def test_retrying_a_job_twice_is_one_sentence_naming_the_job(clean: Local) -> None:
    driver = clean.driver()
    job_id = _failed_job(clean, driver)
    driver.retry_job(job_id)
    with pytest.raises(
        gitlab_driver.JobNotRetryable, match=rf"refused to retry job {job_id} \(403: .*retryable"
    ):
        driver.retry_job(job_id)


def test_a_lost_retry_answer_is_reconciled_to_the_one_new_job(
    clean: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_runnerconf.local.gitlab_state import StateError

    driver = clean.driver()
    job_id = _failed_job(clean, driver)
    real = clean.state.retry_job

    def retried_then_lost(job: int, project: Any = None) -> Any:
        real(job, project)
        raise StateError("502 Bad Gateway", 502)  # the proxy lost GitLab's answer after the work was done

    monkeypatch.setattr(clean.state, "retry_job", retried_then_lost)
    new = driver.retry_job(job_id)
    jobs = clean.gl.projects.get("runnerconf/scratch").jobs.list(get_all=True)
    assert sorted(j.id for j in jobs) == sorted([job_id, new["id"]]), "exactly one new job"


def _slow_pipeline_answers(api: GitLabAPI, delay_s: float) -> None:
    """Wrap the pipeline-creation route: the pipeline is created, the answer comes after DELAY_S."""
    routes = api.router._routes
    for n, (method, pattern, handler) in enumerate(routes):
        if method == "POST" and pattern.pattern.endswith("/pipeline$"):

            def slow(request: Request, handler: Any = handler) -> Response:
                response = handler(request)
                time.sleep(delay_s)
                return response

            routes[n] = (method, pattern, slow)


def test_a_pipeline_answer_past_the_client_timeout_is_reconciled(
    clean: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitlab_driver, "REQUEST_TIMEOUT_S", 0.5)
    driver = clean.driver()
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    _slow_pipeline_answers(clean.api, 1.5)
    pipeline = driver.create_pipeline(BRANCH, {"RUNNERCONF_RUN_ID": RUN_ID}, [])
    assert [p.id for p in clean.pipelines()] == [pipeline["id"]]


# ---------------------------------------------------------------- tokens only to GitLab's origin


@dataclass
class Recorder:
    """A second origin: records every request that reaches it."""

    requests: list[dict[str, str]] = field(default_factory=list)

    def handle(self, request: Request) -> Response:
        self.requests.append(request.headers)
        return Response(200, {"id": 1, "username": "evil"})


@pytest.fixture
def redirecting(token: None) -> Iterator[tuple[str, Recorder]]:
    """A fake GitLab whose /user answers 302 to another origin (another loopback port)."""
    recorder = Recorder()
    other_router = Router()
    other_router.add("GET", "/.*", recorder.handle)
    other = LoopbackServer(other_router, lambda p: Response(404)).start()
    router = Router()
    router.add("GET", "/api/v4/user", lambda r: Response(302, b"", {"Location": f"{other.url}/api/v4/user"}))
    fake = LoopbackServer(router, lambda p: Response(404, {"message": "404 Not Found"})).start()
    yield fake.url, recorder
    fake.stop()
    other.stop()


def test_a_cross_origin_redirect_delivers_no_token(redirecting: tuple[str, Recorder]) -> None:
    url, recorder = redirecting
    with pytest.raises(GitLabError) as info:
        GitLabDriver(_profile(url)).preflight()
    assert "redirected a request to another origin" in str(info.value)
    assert "clusters.t.gitlab_url" in str(info.value)
    assert recorder.requests == [], "the other origin must not even be asked"


def test_a_cross_origin_redirect_ends_the_run_with_one_sentence(
    redirecting: tuple[str, Recorder], tmp_path: Path
) -> None:
    url, recorder = redirecting
    (tmp_path / "runnerconf.toml").write_text(
        f'[clusters.t]\ngitlab_url = "{url}"\ntoken_env = "{TOKEN_ENV}"\nproject = "g/p"\nnamespace = "ci"\n'
    )
    (tmp_path / "test_x.py").write_text(
        "from pytest_runnerconf import check\n\n\n"
        '@check(id="RC-RDR-001", claim="c", remediation="r", area="a", probes=("ordering",))\n'
        "def test_x(runnerconf_evidence):\n    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNERCONF_", "PYTEST_"))}
    env[TOKEN_ENV] = TOKEN
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "test_x.py", "--runner-cluster=t", "-p", "no:cacheprovider",
         ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 6, out
    lines = [line for line in out.splitlines() if "runnerconf: could not test:" in line]
    assert len(lines) == 1 and "redirected a request to another origin" in lines[0], out
    assert "Traceback" not in out and TOKEN not in out
    assert recorder.requests == []


def test_a_same_origin_redirect_is_followed(token: None) -> None:
    router = Router()
    router.add("GET", "/api/v4/user", lambda r: Response(301, b"", {"Location": "/api/v4/users/me"}))
    router.add("GET", "/api/v4/users/me", lambda r: Response(200, {"id": 1, "username": "me"}))
    fake = LoopbackServer(router, lambda p: Response(404, {"message": "404 Not Found"})).start()
    try:
        driver = GitLabDriver(_profile(fake.url))
        driver._gl.auth()  # the redirect stays on GitLab's origin: followed as usual
        assert driver._gl.user is not None and driver._gl.user.username == "me"
    finally:
        fake.stop()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://gitlab.example.com", False),
        ("http://10.1.2.3:8080", False),
        ("https://gitlab.example.com", True),
        ("http://127.0.0.1:8929", True),
        ("http://localhost:8929", True),
        ("http://[::1]:8929", True),
    ],
)
def test_plain_http_only_to_loopback_unless_allowed(url: str, allowed: bool) -> None:
    if allowed:
        assert _profile(url).gitlab_url == url
        return
    with pytest.raises(ConfigError, match=r"clusters\.t\.allow_insecure_http = true"):
        _profile(url)
    assert _profile(url, allow_insecure_http=True).allow_insecure_http


def test_a_token_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    table = {
        "gitlab_url": "https://gitlab.example.com",
        "token_file": str(path),
        "project": "g/p",
        "namespace": "ci",
    }
    profile = profile_from_table("t", table, "runnerconf.toml")
    with pytest.warns(RunnerConfWarning, match=r"can be read by other users \(mode 644\); run `chmod 600"):
        GitLabDriver(profile)
    path.chmod(0o600)
    assert profile.token_file_warning() is None


# ---------------------------------------------------------------- size caps


def test_a_trace_past_its_cap_is_cut_and_said_so(clean: Local) -> None:
    driver = clean.driver(max_trace_bytes=4096)
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    pipeline = driver.create_pipeline(BRANCH, {}, [])
    job_id = clean.state.jobs(clean.state.pipeline("runnerconf/scratch", pipeline["id"]))[0].id
    clean.state.append_trace(job_id, b"x" * 100_000)
    assert len(driver.trace(job_id)) == 4096
    assert list(driver.capped.values()) == [
        f"the trace of job {job_id} was cut at 4096 bytes (clusters.t.max_trace_bytes)"
    ]


def test_artifacts_past_their_cap_are_not_read(clean: Local) -> None:
    import io
    import zipfile

    driver = clean.driver(max_artifact_bytes=4096)
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    pipeline = driver.create_pipeline(BRANCH, {}, [])
    job_id = clean.state.jobs(clean.state.pipeline("runnerconf/scratch", pipeline["id"]))[0].id
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("small.txt", "ok")
        archive.writestr("bomb.txt", "0" * 1_000_000)  # compresses to ~1 KB, unpacks to 1 MB
    clean.state.store_artifacts(job_id, "artifacts.zip", blob.getvalue())
    assert driver.artifacts(job_id) == {"small.txt": "ok"}
    assert "bomb.txt exceed 4096 bytes unpacked" in driver.capped[f"artifacts of job {job_id}"]


# ---------------------------------------------------------------- reads survive 5xx and rate limits


@dataclass
class Flaky:
    """A fake GitLab whose /user and project reads take their answers from a script (then succeed)."""

    # Each answer, or a function making it when the request comes (answers that carry the time).
    script: list[Response | Callable[[], Response]] = field(default_factory=list)
    seen: list[tuple[str, float]] = field(default_factory=list)
    stall_once_s: float = 0.0

    def handle(self, request: Request) -> Response:
        self.seen.append((request.method, time.monotonic()))
        if self.stall_once_s:
            stall, self.stall_once_s = self.stall_once_s, 0.0
            time.sleep(stall)  # the server's own slowness, not the test waiting
        if self.script:
            answer = self.script.pop(0)
            return answer() if callable(answer) else answer
        if request.path.endswith("/user"):
            return Response(200, {"id": 1, "username": "me"})
        return Response(200, {"id": 5, "path_with_namespace": "runnerconf/scratch", "default_branch": "main"})


@pytest.fixture
def flaky(token: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flaky, str]]:
    monkeypatch.setattr(gitlab_driver, "RETRY_BASE_S", 0.01)
    fake = Flaky()
    router = Router()
    router.add("GET", "/api/v4/user", fake.handle)
    router.add("GET", "/api/v4/projects/(?P<p>[^/]+)", fake.handle)
    router.add("POST", "/api/v4/projects/(?P<p>[^/]+)/repository/commits", fake.handle)
    server = LoopbackServer(router, lambda p: Response(404, {"message": "404 Not Found"})).start()
    yield fake, server.url
    server.stop()


def test_reads_answering_502_503_504_are_retried(flaky: tuple[Flaky, str]) -> None:
    fake, url = flaky
    fake.script += [
        Response(502, "<html>502 Bad Gateway</html>", content_type="text/html"),
        Response(503, {"message": "503"}),
        Response(504, "<html>504 Gateway Time-out</html>", content_type="text/html"),
    ]
    driver = GitLabDriver(_profile(url))
    facts = driver.preflight()
    assert facts["project_id"] == 5
    assert driver.retries == {"502": 1, "503": 1, "504": 1}


def test_retry_after_is_honoured_in_seconds_and_as_an_http_date(flaky: tuple[Flaky, str]) -> None:
    from email.utils import formatdate

    fake, url = flaky
    fake.script += [
        Response(429, "Retry later\n", {"Retry-After": "1"}, content_type="text/plain"),
        # Dated when it is sent, as a server does (a date made earlier may be past on a busy machine).
        lambda: Response(
            429,
            "Retry later\n",
            {"Retry-After": formatdate(time.time() + 2, usegmt=True)},
            content_type="text/plain",
        ),
    ]
    driver = GitLabDriver(_profile(url))
    driver.preflight()
    (_, first), (_, second), (_, third) = fake.seen[:3]
    assert second - first >= 0.95, "Retry-After: 1 means a second"
    assert 0.95 <= third - second < 3.5, (
        "an HTTP date two seconds ahead of the answer's Date: a second or two"
    )
    assert driver.retries == {"429": 2}


def test_retry_after_parses_both_forms() -> None:
    # A date is read against the answer's own Date header: GitLab's clock an hour off changes nothing.
    stamp = "Wed, 02 Dec 2026 05:00:10 GMT"
    assert gitlab_driver.retry_after_s("30") == 30.0
    assert gitlab_driver.retry_after_s(stamp, server_date="Wed, 02 Dec 2026 05:00:07 GMT") == 3.0
    now = gitlab_driver.retry_after_s(stamp, now=1_796_187_600.0)  # 2026-12-02T05:00:00Z
    assert now == 10.0
    assert gitlab_driver.retry_after_s(stamp, server_date="Wed, 02 Dec 2026 06:00:00 GMT") == 0.0
    assert gitlab_driver.retry_after_s("soon") is None and gitlab_driver.retry_after_s(None) is None


def test_a_rate_limit_wait_past_the_run_deadline_fails_at_once_with_one_sentence(
    flaky: tuple[Flaky, str],
) -> None:
    fake, url = flaky
    fake.script += [Response(429, "Retry later\n", {"Retry-After": "3600"}, content_type="text/plain")]
    driver = GitLabDriver(_profile(url, expect={"run_deadline_s": 60, "cleanup_deadline_s": 30}))
    started = time.monotonic()
    with pytest.raises(GitLabError) as info:
        driver.preflight()
    assert time.monotonic() - started < 5
    assert getattr(info.value, "cause", None) == "api-error"
    assert str(info.value) == (
        f"GitLab at {url} failed to authenticate: GitLab answered 429 with Retry-After 3600s, and waiting "
        "3600s more would pass the run's deadline; check the GitLab server's health (and its rate limits "
        "for the token's user)"
    )


def test_a_read_that_keeps_failing_is_one_api_error_sentence(flaky: tuple[Flaky, str]) -> None:
    fake, url = flaky
    fake.script += [Response(503, {"message": "503"}) for _ in range(gitlab_driver.READ_ATTEMPTS)]
    driver = GitLabDriver(_profile(url))
    with pytest.raises(GitLabError) as info:
        driver.preflight()
    assert getattr(info.value, "cause", None) == "api-error"
    assert str(info.value) == (
        f"GitLab at {url} failed to authenticate: GitLab answered 503 5 times; check the GitLab server's "
        "health (and its rate limits for the token's user)"
    )
    assert len(fake.seen) == gitlab_driver.READ_ATTEMPTS


def test_a_write_answering_503_is_never_sent_again_blindly(flaky: tuple[Flaky, str]) -> None:
    fake, url = flaky
    driver = GitLabDriver(_profile(url))
    driver.preflight()
    fake.seen.clear()
    fake.script += [Response(503, {"message": "503"}) for _ in range(10)]
    with pytest.raises(GitLabError):
        driver._write_once(
            "push",
            lambda: driver.project.commits.create({"branch": "b", "commit_message": "m", "actions": []}),
            lambda: fake.seen.append(("reconcile", 0.0)),
        )
    # One POST per reconciliation round (which found nothing), never the session's or python-gitlab's repeats.
    assert [m for m, _ in fake.seen] == ["POST", "reconcile"] * gitlab_driver.WRITE_ATTEMPTS


def test_a_runs_api_flaky_fault_is_met_and_survived(clean: Local) -> None:
    clean.api.api_faults.log = lambda line: None
    driver = clean.driver()
    driver.push_files(BRANCH, {".gitlab-ci.yml": CI}, commit_message(RUN_ID))
    variables = {"RUNNERCONF_LOCAL_FAULTS": "api-flaky", "RUNNERCONF_RUN_ID": RUN_ID}
    pipeline = driver.create_pipeline(BRANCH, variables, [])
    for _ in range(12):
        assert driver.pipeline(pipeline["id"])["id"] == pipeline["id"]
        assert [j["name"] for j in driver.pipeline_jobs(pipeline["id"])] == ["probe"]
    injected = clean.api.api_faults.injected
    assert injected["gitlab-429"] == 1 and injected["gitlab-502"] >= 3, injected
    assert driver.retries == {"429": 1, "502": injected["gitlab-502"]}
    # The Kubernetes API finds the run's pods by their job id annotation: GitLab told it the pipeline's jobs.
    (job,) = clean.state.jobs(clean.state.pipeline("runnerconf/scratch", pipeline["id"]))
    pod = {"metadata": {"annotations": {"job.runner.gitlab.com/id": str(job.id)}}}
    assert clean.api.run_faults.of_pod(pod) == {"api-flaky"}
    assert clean.api.run_faults.of_pod({"metadata": {"annotations": {}}}) == frozenset()


def test_a_read_past_the_client_timeout_is_asked_again(
    flaky: tuple[Flaky, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = flaky
    monkeypatch.setattr(gitlab_driver, "REQUEST_TIMEOUT_S", 0.5)
    fake.stall_once_s = 1.5  # the fake server is slow once; the client gives up at 0.5 s
    driver = GitLabDriver(_profile(url))
    assert driver.preflight()["project_id"] == 5
    assert driver.retries == {"timeout": 1}


def test_a_read_whose_connection_drops_mid_body_is_asked_again(flaky: tuple[Flaky, str]) -> None:
    fake, url = flaky

    def dies_mid_body() -> Iterator[bytes]:
        yield b'{"id": 1, "user'
        raise RuntimeError("the proxy went away")  # no last chunk: the client sees the connection end

    fake.script.append(Response(200, dies_mid_body()))
    driver = GitLabDriver(_profile(url))
    assert driver.preflight()["project_id"] == 5
    assert driver.retries == {"connection": 1}


def test_a_trace_whose_connection_drops_mid_body_is_read_again_from_the_start(token: None) -> None:
    answers: list[Response] = []

    def dies_mid_body() -> Iterator[bytes]:
        yield b"Running with gitlab-runner 18.0.0\n"
        raise RuntimeError("the proxy went away")  # no last chunk: the client sees the connection end

    answers += [Response(200, dies_mid_body(), content_type="text/plain")]
    whole = b"Running with gitlab-runner 18.0.0\nJob succeeded\n"
    router = Router()
    router.add("GET", "/api/v4/user", lambda r: Response(200, {"id": 1, "username": "me"}))
    router.add(
        "GET",
        "/api/v4/projects/(?P<p>[^/]+)",
        lambda r: Response(200, {"id": 5, "path_with_namespace": "g/p", "default_branch": "main"}),
    )
    router.add(
        "GET",
        "/api/v4/projects/5/jobs/9/trace",
        lambda r: answers.pop(0) if answers else Response(200, whole, content_type="text/plain"),
    )
    server = LoopbackServer(router, lambda p: Response(404, {"message": "404 Not Found"})).start()
    try:
        driver = GitLabDriver(_profile(server.url))
        driver.preflight()
        assert driver.trace(9) == whole.decode(), "the whole trace, not the first part twice"
        assert driver.retries == {"dropped": 1}
    finally:
        server.stop()
