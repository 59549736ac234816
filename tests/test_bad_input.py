"""Bad input against the running local cluster: one sentence, exit 6, no traceback, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.evidence import load
from pytest_runnerconf.local.model import NO_SECRETS_CONTEXT

SUITES = Path(__file__).resolve().parent.parent / "suites"
MODULE = "test_ordering.py"  # one probe job (ordering) keeps every run small
TOKEN_ENV = "RUNNERCONF_BAD_INPUT_TOKEN"
RUN_ID_FILE_ENV = "RUNNERCONF_BAD_INPUT_RUN_ID_FILE"
RUN_TIMEOUT_S = 150.0
EXIT_COULD_NOT_TEST = 6
FINISHED = frozenset({"success", "failed", "canceled", "skipped", "manual"})
CLEANUP_DEADLINE_S = 20  # the profile's expect.cleanup_deadline_s; the plugin waits at most this for pods
INTERRUPT_TIMEOUT_S = 90.0
POLL_S = 0.2

# Observes, never alters: records the run id the plugin draws, so the test knows its scratch branch.
RECORDER = f"""
import os
import pytest_runnerconf.run as _run

_draw = _run.new_run_id


def _recorded():
    run_id = _draw()
    with open(os.environ[{RUN_ID_FILE_ENV!r}], "w", encoding="utf-8") as out:
        out.write(run_id)
    return run_id


_run.new_run_id = _recorded
"""


@dataclass(frozen=True)
class Case:
    """One bad profile: what to change in [clusters.broken] and what the plugin must say about it."""

    name: str
    setting: str  # the dotted key the one sentence must name
    overrides: dict[str, str] = field(default_factory=dict)  # key -> TOML literal
    expect: dict[str, str] = field(default_factory=dict)  # [clusters.broken.expect] key -> TOML literal
    token: str | None = None  # None: the cluster's real token
    pipeline: bool = False  # whether the run gets as far as creating a pipeline
    interrupt: int | None = None  # the signal to send once the probe job runs
    module: str = MODULE
    select: str = ""  # -k expression


@dataclass
class Outcome:
    case: Case
    work: Path  # the child's rootdir: its profile, evidence and reports, if any
    code: int
    output: str
    run_id: str | None
    secrets: tuple[str, ...]
    elapsed_s: float
    ended_at: float  # time.monotonic() when the child exited
    notes: dict[str, Any] = field(default_factory=dict)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CASES = {
    c.name: c
    for c in (
        Case("wrong-token", "token_env", token="glpat-" + secrets.token_urlsafe(20)),
        Case("unreachable", "gitlab_url", overrides={"gitlab_url": f'"http://127.0.0.1:{_closed_port()}"'}),
        Case("unknown-project", "project", overrides={"project": '"runnerconf/no-such-project"'}),
        Case("unknown-namespace", "namespace", overrides={"namespace": '"no-such-namespace"'}),
        Case("unknown-context", "kube_context", overrides={"kube_context": '"no-such-context"'}),
        Case("no-watch-rbac", "watch", overrides={"kube_context": '"runnerconf-local-restricted"'}),
        Case(
            "no-runner-has-tags",
            "runner_tags",
            overrides={"runner_tags": '["nobody-has-this"]'},
            expect={"pickup_deadline_s": "5"},
        ),
        Case(
            "pending-deadline",
            "expect.pending_deadline_s",
            expect={"pending_deadline_s": "0.5"},
            pipeline=True,
        ),
        Case("ctrl-c", "", pipeline=True, interrupt=signal.SIGINT),
        Case("sigterm", "", pipeline=True, interrupt=signal.SIGTERM),
        Case(
            "no-secrets-rbac",
            "",
            overrides={"kube_context": f'"{NO_SECRETS_CONTEXT}"'},
            pipeline=True,
            module="test_cleanup.py",
            select="secrets_deleted",
        ),
    )
}


# ---------------------------------------------------------------- running one case


def _profile(info: Any, case: Case) -> str:
    table = {
        "gitlab_url": f'"{info.gitlab_url}"',
        "token_env": f'"{TOKEN_ENV}"',
        "project": f'"{info.project}"',
        "runner_tags": f'["{info.runner_tag}"]',
        "kubeconfig": f'"{info.kubeconfig}"',
        "kube_context": f'"{info.kube_context}"',
        "namespace": f'"{info.namespace}"',
        **case.overrides,
    }
    expect = {"cleanup_deadline_s": str(CLEANUP_DEADLINE_S), "run_deadline_s": "120", **case.expect}
    lines = ["[clusters.broken]", *(f"{k} = {v}" for k, v in table.items()), "", "[clusters.broken.expect]"]
    lines += [f"{k} = {v}" for k, v in expect.items()]
    return "\n".join(lines) + "\n"


def _workdir(base: Path, info: Any, case: Case) -> Path:
    work = base / case.name
    (work / "suites").mkdir(parents=True)
    shutil.copy(SUITES / case.module, work / "suites" / case.module)
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "conftest.py").write_text(RECORDER)
    (work / "runnerconf.toml").write_text(_profile(info, case))
    return work


def _env(work: Path, token: str) -> dict[str, str]:
    # The child must see only this profile: no cluster, fault or option settings of the calling shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNERCONF_", "PYTEST_"))}
    env[TOKEN_ENV] = token
    env[RUN_ID_FILE_ENV] = str(work / "run-id")
    return env


def _run_case(base: Path, info: Any, case: Case, on_start: Callable[..., dict[str, Any]] | None) -> Outcome:
    work = _workdir(base, info, case)
    token = case.token or info.gitlab_token
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"suites/{case.module}",
        "--runner-cluster=broken",
        "-p",
        "no:cacheprovider",
        "-rs",
        *(["-k", case.select] if case.select else []),
    ]
    started = time.monotonic()
    with open(work / "output.txt", "w+b") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=_env(work, token), stdout=out, stderr=subprocess.STDOUT)
        notes: dict[str, Any] = {}
        try:
            if on_start is not None:
                notes = on_start(proc, work / "run-id")
            code = proc.wait(timeout=RUN_TIMEOUT_S)
            ended = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        output = out.read().decode(errors="replace")
    run_id_file = work / "run-id"
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    secrets_ = tuple({token, info.gitlab_token})
    return Outcome(case, work, code, output, run_id, secrets_, ended - started, ended, notes)


# ---------------------------------------------------------------- the cluster, seen from the test


@dataclass
class Observer:
    """Reads the local cluster's GitLab project and job namespace with the full-rights credentials."""

    project: Any
    core: Any
    namespace: str

    def branch_exists(self, branch: str) -> bool:
        import gitlab.exceptions

        try:
            self.project.branches.get(branch)
        except gitlab.exceptions.GitlabGetError as exc:
            assert exc.response_code == 404, exc
            return False
        return True

    def pipelines(self, branch: str) -> list[Any]:
        return list(self.project.pipelines.list(ref=branch, get_all=True))

    def job_ids(self, pipeline: Any) -> set[int]:
        return {int(j.id) for j in pipeline.jobs.list(get_all=True)}

    def jobs(self, pipeline: Any) -> list[Any]:
        return list(pipeline.jobs.list(get_all=True))

    def pods_of(self, job_ids: set[int]) -> list[str]:
        pods = self.core.list_namespaced_pod(self.namespace).items
        return [
            p.metadata.name
            for p in pods
            if int((p.metadata.annotations or {}).get("job.runner.gitlab.com/id", "-1")) in job_ids
        ]


@pytest.fixture(scope="module")
def observer(local_cluster: Any) -> Observer:
    import gitlab
    from kubernetes import client, config

    gl = gitlab.Gitlab(local_cluster.gitlab_url, private_token=local_cluster.gitlab_token, keep_base_url=True)
    api = config.new_client_from_config(
        config_file=local_cluster.kubeconfig, context=local_cluster.kube_context
    )
    return Observer(gl.projects.get(local_cluster.project), client.CoreV1Api(api), local_cluster.namespace)


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _interrupt_when_running(
    observer: Observer, signum: int, job: str | None = None
) -> Callable[..., dict[str, Any]]:
    """Signal the pytest child once its probe job (JOB, or any) runs and has a pod; note what was alive then."""

    def act(proc: subprocess.Popen[bytes], run_id_file: Path) -> dict[str, Any]:
        def running_pods() -> tuple[list[Any], list[str]] | None:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.returncode}) before its job ran")
            if not run_id_file.is_file():
                return None
            branch = f"runnerconf/{run_id_file.read_text().strip()}"
            running = [
                j
                for p in observer.pipelines(branch)
                for j in observer.jobs(p)
                if j.status == "running" and job in (None, j.name)
            ]
            pods = observer.pods_of({int(j.id) for j in running}) if running else []
            return (running, pods) if pods else None

        jobs, pods = _wait_for(running_pods, INTERRUPT_TIMEOUT_S, "a running probe job with a pod")
        proc.send_signal(signum)
        return {"signal_at": time.monotonic(), "jobs": [int(j.id) for j in jobs], "pods": pods}

    return act


@pytest.fixture(scope="module")
def outcomes(
    local_cluster: Any, observer: Observer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every case as its own pytest child, all at once: they only share the cluster, as real users would."""
    base = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {
            name: pool.submit(
                _run_case,
                base,
                local_cluster,
                case,
                _interrupt_when_running(observer, case.interrupt) if case.interrupt else None,
            )
            for name, case in CASES.items()
        }
        yield futures


# ---------------------------------------------------------------- what every case must show


def _sentence(outcome: Outcome) -> str:
    """The one could-not-test sentence; pytest.exit prints it between '!' bars."""
    found = re.findall(r"runnerconf: could not test: (.+?)(?: !+)?$", outcome.output, re.MULTILINE)
    assert found, f"no could-not-test sentence in:\n{outcome.output}"
    assert len(set(found)) == 1, f"more than one sentence: {found}"
    assert ". " not in found[0], f"not one sentence: {found[0]}"
    return found[0]


def _assert_clean_output(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.output, outcome.output
    for secret in outcome.secrets:
        assert secret not in outcome.output, "a token was printed"
    written = [p for p in outcome.work.rglob("*") if p.is_file() and p.name != "output.txt"]
    for path in written:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in outcome.secrets), f"a token was written to {path}"


def _assert_nothing_left(outcome: Outcome, observer: Observer) -> list[Any]:
    """No scratch branch, no unfinished pipeline, no pod of the run's jobs; returns the run's pipelines."""
    assert outcome.run_id, f"the run never drew a run id:\n{outcome.output}"
    branch = f"runnerconf/{outcome.run_id}"
    assert not observer.branch_exists(branch), f"scratch branch {branch} left behind"
    pipelines = observer.pipelines(branch)
    if not outcome.case.pipeline:
        assert pipelines == [], "a preflight error must come before any pipeline is created"
    assert all(p.status in FINISHED for p in pipelines), [(p.id, p.status) for p in pipelines]
    job_ids = {j for p in pipelines for j in observer.job_ids(p)}
    assert observer.pods_of(job_ids) == [], "pods of the run's jobs are left in the namespace"
    return pipelines


def _judge(name: str, outcomes: dict[str, Future[Outcome]], observer: Observer) -> tuple[Outcome, str]:
    outcome = outcomes[name].result(timeout=RUN_TIMEOUT_S + 30)
    assert outcome.code == EXIT_COULD_NOT_TEST, outcome.output
    sentence = _sentence(outcome)
    assert f"clusters.broken.{outcome.case.setting}" in sentence or outcome.case.setting in sentence, sentence
    _assert_clean_output(outcome)
    _assert_nothing_left(outcome, observer)
    return outcome, sentence


# ---------------------------------------------------------------- the cases


def test_wrong_token_names_token_env(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    _, sentence = _judge("wrong-token", outcomes, observer)
    assert f"rejected the token from ${TOKEN_ENV} (401)" in sentence
    assert "clusters.broken.token_env" in sentence


def test_unreachable_gitlab_names_gitlab_url(
    outcomes: dict[str, Future[Outcome]], observer: Observer
) -> None:
    outcome, sentence = _judge("unreachable", outcomes, observer)
    assert "(connection refused); check clusters.broken.gitlab_url" in sentence
    assert outcome.elapsed_s < 60, "an unreachable GitLab must fail in seconds, not after transient retries"


def test_unknown_project_names_project(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    _, sentence = _judge("unknown-project", outcomes, observer)
    assert sentence.startswith("project runnerconf/no-such-project not found on ")
    assert "check clusters.broken.project" in sentence


def test_unknown_namespace_names_namespace(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    _, sentence = _judge("unknown-namespace", outcomes, observer)
    assert sentence == "namespace no-such-namespace not found; check clusters.broken.namespace"


def test_unknown_context_names_kube_context(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    _, sentence = _judge("unknown-context", outcomes, observer)
    assert "context 'no-such-context' does not exist" in sentence
    assert "runnerconf-local-restricted" in sentence  # the contexts it could have meant
    assert "check clusters.broken.kube_context" in sentence


def test_no_watch_rbac_names_the_grant(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    _, sentence = _judge("no-watch-rbac", outcomes, observer)
    # Asked before anything is pushed; the restricted context also lacks `watch secrets`, which only skips
    # RC-CLN-005 and so is not among what the sentence asks for.
    assert sentence.startswith("no RBAC to watch pods in namespace ci (asked by SelfSubjectAccessReview"), (
        sentence
    )
    assert (
        "grant them to the identity of clusters.broken.kubeconfig and clusters.broken.kube_context"
        in sentence
    )


def test_tags_no_online_runner_has_are_named_before_any_push(
    outcomes: dict[str, Future[Outcome]], observer: Observer
) -> None:
    outcome, sentence = _judge("no-runner-has-tags", outcomes, observer)
    # GitLab's list of the project's runners says so before anything is pushed (no pipeline to cancel).
    assert sentence.startswith(
        "no online runner with tags [nobody-has-this] is available to project runnerconf/scratch"
    ), sentence
    assert "check clusters.broken.runner_tags" in sentence
    assert observer.pipelines(f"runnerconf/{outcome.run_id}") == []


def test_pod_pending_past_its_deadline(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    # The local pod is Pending while its volumes, pause and init container come up (about a second), so a
    # 0.5 s deadline trips the same code path a pod stuck on a real cluster (no node, no image) does: the run
    # diagnoses the pod from its events, cancels that job and goes on, instead of aborting.
    outcome = outcomes["pending-deadline"].result(timeout=RUN_TIMEOUT_S + 30)
    # The cancelled job's checks are could_not_test with the diagnosis: no check fails.
    assert outcome.code == EXIT_COULD_NOT_TEST, outcome.output
    _assert_clean_output(outcome)
    pipelines = _assert_nothing_left(outcome, observer)
    (bundle,) = list(outcome.work.rglob("evidence.json"))
    (job,) = load(bundle.parent).jobs.values()
    assert job.status == "canceled"
    assert job.diagnosis is not None and job.diagnosis.cause == "pod-not-started"
    assert re.match(
        r"pod runner-\S+ stayed Pending for \d+s \(the run gives up after 0\.5s, expect\.pending_deadline_s\); "
        r"likely cause: ",
        job.diagnosis.sentence,
    ), job.diagnosis.sentence
    assert [p.status for p in pipelines] == ["canceled"]


def _judge_interrupt(
    name: str, signame: str, outcomes: dict[str, Future[Outcome]], observer: Observer
) -> float:
    """Exit 2, one sentence naming what was cleaned and left, a partial bundle, nothing left; the cleanup time."""
    outcome = outcomes[name].result(timeout=RUN_TIMEOUT_S + 30)
    assert outcome.code == int(pytest.ExitCode.INTERRUPTED), outcome.output
    assert "Traceback" not in outcome.output
    found = re.findall(r"runnerconf: (interrupted by .+?)(?: !+)?$", outcome.output, re.MULTILINE)
    assert len(set(found)) == 1, outcome.output
    sentence = found[0]
    assert ". " not in sentence, sentence
    pattern = (
        rf"interrupted by {signame}: cancelled pipeline #\d+, deleted branch runnerconf/{outcome.run_id}; "
        r"nothing left behind \(cleanup took (\d+\.\d)s\); partial evidence in (\S+)$"
    )
    match = re.fullmatch(pattern, sentence)
    assert match, sentence
    _assert_clean_output(outcome)
    (pipeline,) = _assert_nothing_left(outcome, observer)
    assert pipeline.status == "canceled"
    statuses = {int(j.id): j.status for j in observer.jobs(pipeline)}
    assert all(statuses[j] == "canceled" for j in outcome.notes["jobs"]), statuses
    assert outcome.notes["pods"], "the interrupt must hit a run with a live pod"
    bundle = json.loads((Path(match.group(2)) / "evidence.json").read_text())
    assert bundle["leftover"]["interrupted"] == signame and bundle["leftover"]["left"] == []
    assert any(n.startswith(f"interrupted by {signame}") for n in bundle["notes"]), bundle["notes"]
    assert bundle["jobs"], "the partial bundle keeps the jobs the run had seen"
    # _assert_nothing_left ran after the child exited: its pods were gone by then, and that was in time.
    took = outcome.ended_at - outcome.notes["signal_at"]
    assert took < CLEANUP_DEADLINE_S + 10, outcome.output
    print(f"{signame}: cleanup reported {match.group(1)}s, signal to exit {took:.1f}s")
    return took


def test_ctrl_c_cancels_and_cleans_up(outcomes: dict[str, Future[Outcome]], observer: Observer) -> None:
    _judge_interrupt("ctrl-c", "SIGINT", outcomes, observer)


def test_sigterm_cleans_up_like_ctrl_c(
    outcomes: dict[str, Future[Outcome]], observer: Observer, record_property: Callable[[str, object], None]
) -> None:
    record_property(
        "sigterm_signal_to_exit_s", round(_judge_interrupt("sigterm", "SIGTERM", outcomes, observer), 1)
    )


def test_no_rbac_for_secrets_skips_the_secret_check_with_its_reason(
    outcomes: dict[str, Future[Outcome]], observer: Observer
) -> None:
    outcome = outcomes["no-secrets-rbac"].result(timeout=RUN_TIMEOUT_S + 30)
    assert outcome.code == 0, outcome.output  # the only selected check is skipped, nothing failed
    assert re.search(
        r"SKIPPED .*no RBAC to list or watch secrets in namespace ci; the per-job Secret check needs "
        r"`list` and `watch` on secrets \(see `runnerconf rbac`\)",
        outcome.output,
    ), outcome.output
    _assert_clean_output(outcome)
    _assert_nothing_left(outcome, observer)


# ---------------------------------------------------------------- SIGKILL, then runnerconf sweep


def _sweep(work: Path, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_runnerconf.cli", "sweep", "--runner-cluster=broken", *extra],
        cwd=work,
        env=_env(work, token),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sigkill_leaves_what_sweep_then_removes(
    outcomes: dict[str, Future[Outcome]],
    observer: Observer,
    local_cluster: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Sweeping with --older-than 0s would take the other cases' young runs too: wait until they are done.
    for future in outcomes.values():
        future.result(timeout=RUN_TIMEOUT_S + 30)
    case = Case("sigkill", "", pipeline=True, module="test_cleanup.py", select="after_cancel")
    # cleanup-cancel waits to be cancelled by its run: killed, the run leaves it running until swept.
    act = _interrupt_when_running(observer, signal.SIGKILL, job="cleanup-cancel")
    outcome = _run_case(tmp_path_factory.mktemp("sigkill"), local_cluster, case, act)
    assert outcome.code == -signal.SIGKILL and outcome.run_id
    branch = f"runnerconf/{outcome.run_id}"
    assert observer.branch_exists(branch), "a killed run cannot clean up: its branch is still there"
    (pipeline,) = observer.pipelines(branch)
    assert pipeline.status == "running"

    dry = _sweep(outcome.work, local_cluster.gitlab_token, "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"runnerconf sweep: pipeline #{pipeline.id} (running, ref {branch}" in dry.stdout, dry.stdout
    assert "): would cancel (dry run)" in dry.stdout and observer.branch_exists(branch)

    swept = _sweep(outcome.work, local_cluster.gitlab_token, "--older-than", "0s")
    out = swept.stdout + swept.stderr
    assert swept.returncode == 0, out
    assert re.search(rf"runnerconf sweep: pipeline #{pipeline.id} \(running, .*\): cancelled$", out, re.M), (
        out
    )
    assert re.search(rf"runnerconf sweep: branch {re.escape(branch)} \(.*\): deleted$", out, re.M), out
    assert re.search(
        r"runnerconf sweep: pod runner-\S+ \(job \d+ of pipeline .*\): listed, not deleted", out
    ), out
    assert local_cluster.gitlab_token not in out
    assert not observer.branch_exists(branch)
    # A running job's cancel completes when its runner reports back (GitLab's "canceling" state), so the
    # pipeline finishes a moment after sweep's cancel request, not at once.
    (pipeline,) = _wait_for(
        lambda: [p for p in observer.pipelines(branch) if p.status in FINISHED],
        CLEANUP_DEADLINE_S + 30,
        "the swept pipeline to finish (no running pipeline is left)",
    )
    assert {j.name: j.status for j in observer.jobs(pipeline)}["cleanup-cancel"] == "canceled"
    job_ids = observer.job_ids(pipeline)
    # The runner deletes the pod of a cancelled job by itself; sweep only listed it.
    _wait_for(
        lambda: observer.pods_of(job_ids) == [], CLEANUP_DEADLINE_S + 30, "the runner to delete the pods"
    )
