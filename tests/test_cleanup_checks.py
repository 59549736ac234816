"""The cleanup checks on one clock, per-job Secrets of refused pods, and strays of the runner under test only."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_runnerconf.errors import KubeError
from pytest_runnerconf.evidence import Diagnosis, JobEvidence, PodObservation, RunEvidence, load, save
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.profile import Expectations, Profile
from pytest_runnerconf.run import stray_pods

ROOT = Path(__file__).resolve().parent.parent
Failed = pytest.fail.Exception
Skipped = pytest.skip.Exception
POD = "runner-runnercon-project-1-concurrent-0-abcd1234"
REFUSED = "runner-runnercon-project-1-concurrent-3-q1w2e3r4"
SECRET = "runner-runnercon-project-1-concurrent-3-zzzz9999"


def _load_cleanup() -> ModuleType:
    name = "runnerconf_cleanup_checks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "suites" / "test_cleanup.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


cln = _load_cleanup()
PROFILE = Profile(
    name="t",
    gitlab_url="http://127.0.0.1",
    token_env="T",
    token_file=None,
    project="g/p",
    runner_tags=(),
    kubeconfig=None,
    kube_context=None,
    namespace="ci",
    expect=Expectations(cleanup_deadline_s=30.0),
    source="test",
)


def lookup(job: JobEvidence) -> Any:
    return lambda name: job


def ok_job(deleted_at: float | None, gitlab_skew_s: float) -> JobEvidence:
    """A job that ended at 1000 on this machine's clock; GitLab's clock is SKEW seconds off."""
    return JobEvidence(
        name="cleanup-ok",
        job={"status": "success"},
        trace="",
        pod=PodObservation(name=POD, first_seen=990.0, deleted_at=deleted_at),
        started_at=980.0 + gitlab_skew_s,
        finished_at=1000.0 + gitlab_skew_s,
        observed_end=1000.4,
    )


@pytest.mark.parametrize("skew", [-120.0, 0.0, 120.0])
def test_same_verdict_whatever_gitlabs_clock(skew: float) -> None:
    cln.test_pod_deleted_after_success(lookup(ok_job(1003.0, skew)), PROFILE)
    with pytest.raises(Failed, match=r"deleted after 39\.6s"):
        cln.test_pod_deleted_after_success(lookup(ok_job(1040.0, skew)), PROFILE)


def test_old_bundle_without_observed_end_uses_gitlabs_end() -> None:
    job = ok_job(1003.0, 0.0)
    job.observed_end = None
    assert cln.deletion_delay(job) == 3.0


QUOTA_TRACE = (
    "ERROR: Job failed (system failure): prepare environment: setting up build pod: "
    f'pods "{REFUSED}" is forbidden: exceeded quota: runnerconf-jobs, requested: pods=1, used: pods=10, '
    "limited: pods=10. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information\n"
)


def refused_run(seen: dict[str, Any]) -> RunEvidence:
    job = JobEvidence(
        name="cleanup-ok",
        job={"status": "failed"},
        trace=QUOTA_TRACE,
        observed_start=995.0,
        observed_end=1000.0,
        finished_at=1130.0,  # GitLab's clock, two minutes ahead
    )
    return RunEvidence(jobs={"cleanup-ok": job}, secrets=seen)


def test_secret_of_a_refused_pod_left_behind_fails() -> None:
    run = refused_run({SECRET: {"first_seen": 997.0, "deleted_at": None, "before": False}})
    with pytest.raises(Failed, match=r"RC-CLN-005(?s:.*)still present \(its pod was refused\)"):
        cln.test_secrets_deleted(run, PROFILE)


def test_secret_of_a_refused_pod_deleted_passes() -> None:
    run = refused_run({SECRET: {"first_seen": 997.0, "deleted_at": 1001.0, "before": False}})
    cln.test_secrets_deleted(run, PROFILE)


@pytest.mark.parametrize(
    "seen",
    [
        {"first_seen": 997.0, "deleted_at": None, "before": True},  # there before the run started
        {"first_seen": 900.0, "deleted_at": None, "before": False},  # another job's, long before ours ran
        {"first_seen": 1100.0, "deleted_at": None, "before": False},  # another job's, after ours ended
    ],
)
def test_other_secrets_in_the_slot_are_not_ours(seen: dict[str, Any]) -> None:
    with pytest.raises(Skipped):
        cln.test_secrets_deleted(refused_run({SECRET: seen}), PROFILE)


def stray(name: str, token: str | None) -> dict[str, Any]:
    return {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z", "job_id": 7, "token": token}


def test_strays_of_another_runner_are_not_judged() -> None:
    run = RunEvidence(
        stray_pods=[stray("runner-othertok-project-9-concurrent-0-aaaaaaaa", "othertok")],
        runner_tokens=["RunnerCon"],
    )
    cln.test_no_stray_pods(run)
    run.stray_pods.append(stray("runner-runnercon-project-9-concurrent-0-bbbbbbbb", "runnercon"))
    with pytest.raises(Failed, match="runner-runnercon-project-9-concurrent-0-bbbbbbbb") as info:
        cln.test_no_stray_pods(run)
    assert "othertok" not in str(info.value).split("detail")[0]


def test_failed_stray_listing_is_could_not_test() -> None:
    run = RunEvidence(stray_error="the Kubernetes API failed to list pods (500 Internal Server Error)")
    with pytest.raises(CouldNotTest) as info:
        cln.test_no_stray_pods(run)
    assert info.value.cause == "api-error" and "500" in info.value.sentence


class FakeKube:
    def __init__(self, pods: list[dict[str, Any]] | None = None, error: str = "") -> None:
        self.pods, self.error, self.selectors = pods or [], error, []

    def list_pods(self, selector: str) -> dict[str, Any]:
        self.selectors.append(selector)
        if self.error:
            raise KubeError(self.error)
        return {"items": self.pods}


def runner_pod(
    name: str, age_s: float, phase: str, deadline: int | None = None, **ann: str
) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - age_s))
    spec = {"activeDeadlineSeconds": deadline} if deadline else {}
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {"pod": name[:-9]},
            "annotations": ann,
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def test_stray_listing() -> None:
    notes: list[str] = []
    assert stray_pods(FakeKube(error="boom"), notes) == ([], "boom")  # type: ignore[arg-type]
    assert notes and "boom" in notes[0]
    kube = FakeKube(
        [
            runner_pod("runner-tok-project-1-concurrent-0-aaaaaaaa", 2000, "Running", deadline=601),  # stray
            runner_pod(
                "runner-tok-project-1-concurrent-1-bbbbbbbb", 2000, "Running", deadline=7201
            ),  # long job
            runner_pod(
                "runner-tok-project-2-concurrent-0-cccccccc", 9000, "Running"
            ),  # no bound: may be long
            runner_pod(
                "runner-tok-project-2-concurrent-1-dddddddd", 9000, "Succeeded"
            ),  # finished, left: stray
            runner_pod(
                "runner-tok-project-2-concurrent-2-eeeeeeee",
                2000,
                "Running",
                **{"job.runner.gitlab.com/timeout": "10m0s"},
            ),  # 17.11+ annotation bound: stray
            {
                "metadata": {
                    "name": "web-0",
                    "labels": {"pod": "web"},
                    "creationTimestamp": "2020-01-01T00:00:00Z",
                }
            },
        ]
    )
    found, error = stray_pods(kube, [])  # type: ignore[arg-type]
    assert error == "" and kube.selectors == ["pod"]
    assert [p["name"][-8:] for p in found] == ["aaaaaaaa", "dddddddd", "eeeeeeee"]
    assert {p["token"] for p in found} == {"tok"}


def test_new_fields_survive_the_bundle(tmp_path: Path) -> None:
    diagnosis = Diagnosis(
        "pod-not-started", "pod x stayed Pending", "x", 26.0, [{"reason": "FailedScheduling"}]
    )
    job = JobEvidence(name="j", job={}, trace="", observed_end=12.5, observed_start=2.5, diagnosis=diagnosis)
    run = RunEvidence(jobs={"j": job}, stray_error="boom", runner_tokens=["tok"])
    save(run, tmp_path)
    loaded = load(tmp_path)
    got = loaded.jobs["j"]
    assert (got.observed_end, got.observed_start, got.diagnosis) == (12.5, 2.5, diagnosis)
    assert (loaded.stray_error, loaded.runner_tokens) == ("boom", ["tok"])


@pytest.mark.parametrize("others", [[77], None])
def test_refused_pods_secret_alongside_other_pipelines_is_could_not_test(others: list[int] | None) -> None:
    run = refused_run({SECRET: {"first_seen": 997.0, "deleted_at": None, "before": False}})
    run.other_pipelines = others
    with pytest.raises(CouldNotTest) as info:
        cln.test_secrets_deleted(run, PROFILE)
    assert info.value.cause == "no-evidence" and "same runner slots" in info.value.sentence


def test_refused_pods_secret_deleted_alongside_other_pipelines_is_nothing_to_judge() -> None:
    run = refused_run({SECRET: {"first_seen": 997.0, "deleted_at": 1001.0, "before": False}})
    run.other_pipelines = [77]
    with pytest.raises(Skipped):
        cln.test_secrets_deleted(run, PROFILE)


class FakePipelines:
    def __init__(self, ids: list[int], error: Exception | None = None) -> None:
        self.ids, self.error = ids, error

    def list(self, **kw: Any) -> list[Any]:
        if self.error:
            raise self.error
        return [type("P", (), {"id": i})() for i in self.ids]


def test_other_pipelines_of_the_project() -> None:
    import gitlab.exceptions

    from pytest_runnerconf.run import other_pipelines

    class Run:
        pipeline = {"id": 50}
        unfinished_at_start: set[int] | None = {40, 50}
        gitlab = type(
            "G", (), {"project": type("Pr", (), {"pipelines": FakePipelines([52, 51, 50, 49])})()}
        )()

    run = Run()
    assert other_pipelines(run) == [40, 51, 52]  # type: ignore[arg-type]
    run.gitlab.project.pipelines = FakePipelines([], gitlab.exceptions.GitlabListError("boom"))
    assert other_pipelines(run) is None  # type: ignore[arg-type]
    run.unfinished_at_start = None
    assert other_pipelines(run) is None  # type: ignore[arg-type]


def test_cleanup_checks_say_why_a_job_could_not_be_judged() -> None:
    # The OOM job's failures are the check's own to judge, but a pod the API server refused leaves nothing.
    refused = JobEvidence(name="oom", job={"status": "failed"}, trace=QUOTA_TRACE, observed_end=1000.0)
    with pytest.raises(CouldNotTest) as info:
        cln.test_pod_deleted_after_oom(lookup(refused), PROFILE)
    assert info.value.cause == "quota" and "exceeded quota" in info.value.sentence
    # A job the run cancelled because its pod never started is not the cancel the probe asked for.
    stuck = ok_job(1003.0, 0.0)
    stuck.job["status"] = "canceled"
    stuck.diagnosis = Diagnosis("pod-not-started", "pod p stayed Pending for 26s (...)")
    with pytest.raises(CouldNotTest) as info:
        cln.test_pod_deleted_after_cancel(lookup(stuck), PROFILE)
    assert info.value.cause == "pod-not-started"
    assert info.value.sentence.startswith(
        "The run cancelled job cleanup-ok because its pod never started: pod p"
    )
