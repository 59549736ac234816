"""The plugin seen from outside (pytester): options, markers, skips, one-sentence errors, replayed checks."""

from __future__ import annotations

import base64
import json
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence, load, save
from pytest_runnerconf.profile import Expectations, Profile

pytest_plugins = ["pytester"]

SUITES = Path(__file__).resolve().parent.parent / "suites"
MODULES = ("test_ordering.py", "test_builds_volume.py")  # the RC-ORD and RC-VOL checks
CHECK_COUNT = 8
T0 = 1767225600  # 2026-01-01T00:00:00Z
RUN_ID = "20260101-000000-abcdef"
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN_ENV = "RUNNERCONF_PLUGIN_TEST_TOKEN"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding a copy of the RC-ORD and RC-VOL suites and an empty ini."""
    (pytester.path / "suites").mkdir()
    for name in MODULES:
        shutil.copy(SUITES / name, pytester.path / "suites" / name)
    pytester.makeini("[pytest]\n")
    return pytester


def _profile_toml(
    pytester: pytest.Pytester, url: str = "https://gitlab.example.test", extra: str = ""
) -> None:
    body = f"""
[clusters.prod]
gitlab_url = "{url}"
token_env = "{TOKEN_ENV}"
project = "group/scratch"
runner_tags = ["k8s"]
namespace = "ci"
{extra}
"""
    (pytester.path / "runnerconf.toml").write_text(body)


def _no_traceback(result: pytest.RunResult) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text
    assert "_pytest" not in text.replace("_pytest.outcomes.Exit", "")


# ---------------------------------------------------------------- options, markers, collection


def test_help_shows_the_option_group(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "GitLab Runner conformance (pytest-runnerconf):",
            "*--runner-cluster=NAME*",
            "*--runnerconf-config=PATH*",
            "*--runnerconf-evidence=PATH*",
            "*--runnerconf-replay=PATH*",
            "*--runnerconf-report=PATH*",
            "*runner_cluster (string):*",
        ]
    )


def test_markers_are_registered(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.runnerconf_check(id):*", "@pytest.mark.runnerconf_probe(*names):*"]
    )


def test_collect_only_needs_no_cluster(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--collect-only", "-q", "--strict-markers", "suites")
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"{CHECK_COUNT} tests collected*"])


def test_without_cluster_every_check_is_skipped_with_the_reason(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs", "suites")
    result.assert_outcomes(skipped=CHECK_COUNT)
    result.stdout.fnmatch_lines(
        [
            "runnerconf: checks skipped: no cluster selected: pass --runner-cluster=NAME*",
            "SKIPPED *no cluster selected: pass --runner-cluster=NAME to run the checks (--runner-cluster=local needs no configuration)*",
        ]
    )


@pytest.mark.parametrize(
    ("selection", "probes"),
    [
        ((), "('builds', 'ordering')"),
        (("-k", "builds_volume"), "('builds',)"),
        (("-k", "ordering"), "('ordering',)"),
    ],
)
def test_plan_follows_deselection(suite: pytest.Pytester, selection: tuple[str, ...], probes: str) -> None:
    suite.makeconftest(
        """
        def pytest_collection_finish(session):
            from pytest_runnerconf.plugin import STATE
            print("PLAN", session.config.stash[STATE].plan.probes)
        """
    )
    result = suite.runpytest("--collect-only", "-q", "--runner-cluster=local", *selection, "suites")
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"PLAN {probes}"])


def test_precedence_cli_over_ini_over_env(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = "\n".join(
        f'[clusters.{n}]\ngitlab_url = "https://g.test"\ntoken_env = "X"\nproject = "g/p"\nnamespace = "ci"\n'
        for n in ("staging", "other")
    )
    _profile_toml(suite, extra=extra)
    monkeypatch.setenv("RUNNERCONF_CLUSTER", "other")
    assert "runnerconf: cluster other" in suite.runpytest("--collect-only", "suites").stdout.str()
    suite.makeini("[pytest]\nrunner_cluster = staging\n")
    assert "runnerconf: cluster staging" in suite.runpytest("--collect-only", "suites").stdout.str()
    result = suite.runpytest("--collect-only", "--runner-cluster=prod", "suites")
    assert "runnerconf: cluster prod" in result.stdout.str()


# ---------------------------------------------------------------- one-sentence errors


def test_unknown_cluster_lists_the_known_ones(suite: pytest.Pytester) -> None:
    _profile_toml(suite)
    result = suite.runpytest("--runner-cluster=staging", "suites")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *runnerconf.toml: no cluster 'staging' under [[]clusters]; known clusters: local, prod"]
    )
    _no_traceback(result)


def test_malformed_profile_names_file_and_line(suite: pytest.Pytester) -> None:
    (suite.path / "runnerconf.toml").write_text('[clusters.prod]\ngitlab_url = "https://x\n')
    result = suite.runpytest("--runner-cluster=prod", "suites")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *runnerconf.toml: TOML syntax error: *line 2*"])
    _no_traceback(result)


def test_unset_token_names_the_variable(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    _profile_toml(suite)
    result = suite.runpytest_subprocess("--runner-cluster=prod", "suites")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        [f"*runnerconf: could not test: *environment variable {TOKEN_ENV} holding the GitLab*"]
    )
    _no_traceback(result)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_unreachable_gitlab_is_one_sentence_and_exit_6(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: tuple[str, ...]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "glpat-not-a-real-token-000000")
    url = f"http://127.0.0.1:{_closed_port()}"
    _profile_toml(suite, url=url)
    result = suite.runpytest_subprocess("--runner-cluster=prod", *workers, "suites")
    assert result.ret == 6
    sentence = f"cannot reach GitLab at {url} (connection refused); check clusters.prod.gitlab_url"
    result.stdout.fnmatch_lines([f"*runnerconf: could not test: {sentence}*"])
    assert result.stdout.str().count(sentence) <= 2  # once as the verdict, at most once more in a skip line
    assert "glpat-not-a-real-token" not in result.stdout.str()
    _no_traceback(result)


def test_unreadable_runner_config_file_is_a_usage_error(suite: pytest.Pytester) -> None:
    _profile_toml(suite, extra='runner_config = "runner/config.toml"')
    result = suite.runpytest("--runner-cluster=prod", "suites")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: *runnerconf.toml: clusters.prod.runner_config: cannot read the runner config file "
            f"{suite.path / 'runner' / 'config.toml'} (No such file or directory); fix the path or use "
            "configmap:NAMESPACE/NAME"
        ]
    )
    _no_traceback(result)


def test_runner_config_behind_an_unreachable_api_names_the_setting(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_runnerconf.local.kube_api import write_kubeconfig

    monkeypatch.setenv(TOKEN_ENV, "glpat-not-a-real-token-000000")
    url = f"http://127.0.0.1:{_closed_port()}"
    kubeconfig = write_kubeconfig(suite.path / "kubeconfig", url, {"c": "kube-token-0000000001"}, "c", "ci")
    _profile_toml(
        suite, extra=f'kubeconfig = "{kubeconfig}"\nrunner_config = "configmap:gitlab-runner/gitlab-runner"'
    )
    result = suite.runpytest_subprocess("--runner-cluster=prod", "suites")
    assert result.ret == 6
    result.stdout.fnmatch_lines(
        [
            "*runnerconf: could not test: *runnerconf.toml: clusters.prod.runner_config: cannot read the runner "
            f"config ConfigMap gitlab-runner/gitlab-runner: cannot reach the Kubernetes API at {url} *"
        ]
    )
    assert "kube-token-0000000001" not in result.stdout.str() + result.stderr.str()
    _no_traceback(result)


# ---------------------------------------------------------------- replayed evidence through the real checks


def _iso(offset: float) -> str:
    return datetime.fromtimestamp(T0 + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(probe: str, data: dict[str, Any]) -> str:
    return f"RUNNERCONF {probe} {base64.b64encode(json.dumps(data).encode()).decode()}"


def _trace(records: list[str], sources_end: int = 3, script_start: int = 4) -> str:
    def mark(kind: str, offset: int, name: str) -> str:
        return f"section_{kind}:{T0 + offset}:{name}\r\x1b[0K"

    lines = [
        "Running with gitlab-runner 18.11.4 (5b1ba4d9)",
        mark("start", 2, "get_sources") + "Fetching changes...",
        mark("end", sources_end, "get_sources"),
        mark("start", script_start, "step_script") + 'Executing "step_script" stage of the job script',
        *records,
        mark("end", 6, "step_script"),
        "Job succeeded",
    ]
    return "\n".join(lines) + "\n"


def _container(name: str) -> dict[str, Any]:
    return {"name": name, "volumeMounts": [{"name": "repo", "mountPath": "/builds"}]}


def _pod(name: str, service: str, init_end: int = 1) -> PodObservation:
    spec = {
        "metadata": {"name": name, "annotations": {"job.runner.gitlab.com/id": "1"}},
        "spec": {
            "initContainers": [_container("init-permissions")],
            "containers": [_container("build"), _container("helper"), _container(service)],
            "volumes": [{"name": "repo", "emptyDir": {}}],
        },
    }
    running = {"running": {"startedAt": _iso(2)}}
    states = {
        "init-permissions": {
            "terminated": {"startedAt": _iso(0), "finishedAt": _iso(init_end), "exitCode": 0}
        },
        "build": running,
        "helper": running,
        service: running,
    }
    timeline = [{"time": T0 + 2.5, "type": "MODIFIED", "phase": "Running", "containers": states,
                 "deletionTimestamp": None}]  # fmt: skip
    return PodObservation(
        name=name, first_seen=T0, spec=spec, last=spec, timeline=timeline, deleted_at=T0 + 9
    )


def _evidence(directory: Path, *, init_end: int = 1, artifact: str = RUN_ID) -> Path:
    ordering = {
        "port": 8080,
        "immediate": True,
        "tool": "nc",
        "script_started_at": T0 + 4,
        "connected_at": T0 + 4,
    }
    builds = {
        "ci_project_dir": "/builds/group/scratch",
        "builds_dir": "/builds",
        "head_sha": SHA,
        "git_head": SHA,
        "files": [".git", ".runnerconf"],
        "sidecar_marker_found": True,
        "sidecar_marker": RUN_ID,
    }
    jobs = {}
    for name, service, records in (("ordering", "rc-tcp", ordering), ("builds", "sidecar", builds)):
        trace = _trace([_record(name, records)])
        jobs[name] = JobEvidence(
            name=name,
            job={"name": name, "status": "success", "commit": {"id": SHA}},
            trace=trace,
            pod=_pod(f"runner-x-project-1-concurrent-0-{name}", service, init_end=init_end),
            records={name: [records]},
        )
    jobs["builds"].job["runnerconf_artifacts"] = {"runnerconf-artifact.txt": f"{artifact}\n"}
    profile = Profile(
        name="prod",
        gitlab_url="https://g.test",
        token_env=TOKEN_ENV,
        token_file=None,
        project="group/scratch",
        runner_tags=("k8s",),
        kubeconfig=None,
        kube_context=None,
        namespace="ci",
        expect=Expectations(),
        source="runnerconf.toml",
    )
    run = RunEvidence(
        run_id=RUN_ID, cluster="prod", profile=profile.summary(), jobs=jobs, plan=["builds", "ordering"]
    )
    save(run, directory)
    return directory


def test_replay_of_conformant_evidence_passes_every_check(suite: pytest.Pytester) -> None:
    bundle = _evidence(suite.path / "bundle")
    result = suite.runpytest(f"--runnerconf-replay={bundle}", "suites")
    result.assert_outcomes(passed=CHECK_COUNT)
    report = json.loads((suite.path / "runnerconf-report" / "report.json").read_text())
    assert {r["id"] for r in report["results"]} == {f"RC-ORD-00{i}" for i in range(1, 5)} | {
        f"RC-VOL-00{i}" for i in range(1, 5)
    }


def test_replay_reports_each_broken_behaviour_with_expected_and_observed(suite: pytest.Pytester) -> None:
    bundle = _evidence(suite.path / "bundle", init_end=3, artifact="someone-else")
    result = suite.runpytest(f"--runnerconf-replay={bundle}", "suites")
    result.assert_outcomes(passed=CHECK_COUNT - 2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*RC-ORD-001 init containers finish before any regular container starts",
            "*expected: init-permissions finished (*) before any regular container started",
            "*observed: * started at *",
            "*job: * pod: runner-x-project-1-concurrent-0-*",
            "*fix: look for pod_spec patches*",
        ]
    )
    result.stdout.fnmatch_lines([f"*expected: runnerconf-artifact.txt containing the run id {RUN_ID}"])


def test_replay_with_a_configmap_runner_config_reads_no_cluster(suite: pytest.Pytester) -> None:
    """The replayed run read its runner config: the replay judges with those values and reads nothing (the
    profile names no kubeconfig that would reach a cluster)."""
    bundle = _evidence(suite.path / "bundle")
    run = load(bundle)
    value = "configmap:ci/gitlab-runner"
    run.profile = {
        **run.profile,
        "runner_config": value,
        "runner_config_found": {"source": "ConfigMap ci/gitlab-runner key config.toml", "runner": "r",
                                "derived": {"builds_dir": "[[runners]] builds_dir"}, "reported": {}},
        "expect_set": {"builds_dir": ["runner config", "ConfigMap ci/gitlab-runner key config.toml: x"]},
    }  # fmt: skip
    save(run, bundle)
    _profile_toml(suite, extra=f'runner_config = "{value}"\nkubeconfig = "{suite.path / "no-kubeconfig"}"')
    result = suite.runpytest(f"--runnerconf-replay={bundle}", "--runner-cluster=prod", "suites")
    result.assert_outcomes(passed=CHECK_COUNT)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_replay_with_xdist_shares_the_bundle(suite: pytest.Pytester) -> None:
    bundle = _evidence(suite.path / "bundle")
    result = suite.runpytest_subprocess(f"--runnerconf-replay={bundle}", "-n", "2", "suites")
    result.assert_outcomes(passed=CHECK_COUNT)


# The runner's own words when a job pod never leaves Pending (executors/kubernetes, waitForPodRunning).
POLL_TIMEOUT = (
    "ERROR: Job failed (system failure): prepare environment: waiting for pod running: "
    "timed out waiting for pod to start"
)


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_replay_of_a_job_the_runner_never_started_is_could_not_test_and_exit_6(
    suite: pytest.Pytester, workers: tuple[str, ...]
) -> None:
    bundle = _evidence(suite.path / "bundle")
    run = load(bundle)
    url = "https://g.test/group/scratch/-/jobs/12"
    run.jobs["builds"] = JobEvidence(
        name="builds",
        job={"name": "builds", "status": "failed", "failure_reason": "runner_system_failure", "web_url": url},
        trace=f"Running with gitlab-runner 18.11.4 (5b1ba4d9)\nPreparing environment\n{POLL_TIMEOUT}\n",
    )
    save(run, bundle)
    result = suite.runpytest_subprocess(f"--runnerconf-replay={bundle}", *workers, "suites")
    assert result.ret == 6
    result.stdout.fnmatch_lines(["*4 passed*4 could not test in *"])
    result.stdout.fnmatch_lines(
        [
            "COULD NOT TEST suites/test_builds_volume.py::test_* - pod-not-started: The runner failed job builds "
            f"({url}) before its probe ran: prepare environment: waiting for pod running: timed out waiting for pod to start."
        ]
    )
    report = json.loads((suite.path / "runnerconf-report" / "report.json").read_text())
    assert report["counts"] == {"passed": 4, "failed": 0, "could_not_test": 4, "skipped": 0, "error": 0}
    untested = {r["id"]: r for r in report["results"] if r["outcome"] == "could_not_test"}
    assert set(untested) == {f"RC-VOL-00{i}" for i in range(1, 5)}
    assert {r["cause"] for r in untested.values()} == {"pod-not-started"}
    assert {r["job_url"] for r in untested.values()} == {url}
    _no_traceback(result)


def test_replay_of_a_runner_older_than_the_suite_knows_is_one_sentence_per_check(
    suite: pytest.Pytester,
) -> None:
    bundle = _evidence(suite.path / "bundle")
    run = load(bundle)
    for job in run.jobs.values():
        job.trace = job.trace.replace("gitlab-runner 18.11.4", "gitlab-runner 15.11.0", 1)
    save(run, bundle)
    result = suite.runpytest_subprocess(f"--runnerconf-replay={bundle}", "suites")
    assert result.ret == 6
    report = json.loads((suite.path / "runnerconf-report" / "report.json").read_text())
    assert report["counts"]["could_not_test"] == CHECK_COUNT and report["counts"]["failed"] == 0
    sentences = {(r["cause"], r["sentence"]) for r in report["results"]}
    assert len(sentences) == 1
    ((cause, sentence),) = sentences
    assert cause == "unsupported-runner"
    assert "gitlab-runner 15.11.0" in sentence and "16.0.0" in sentence
    _no_traceback(result)
