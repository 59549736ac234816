"""The run's tail: per-job evidence is fetched as each job and pod finish, on worker threads with a GitLab
driver each; Secret deletions come from the watch, and the wait ends with the last one.

Fakes stand in for GitLab and Kubernetes: what matters here is what is fetched when, and by whom.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from pytest_runnerconf import run as run_mod
from pytest_runnerconf.collect import Collector
from pytest_runnerconf.errors import GitLabError
from pytest_runnerconf.gitlab_driver import GitLabDriver
from pytest_runnerconf.kube_driver import KubeDriver, PodEvent, SecretsForbidden, WatchFailed
from pytest_runnerconf.profile import profile_from_table

SECRET = "runner-abc-project-7-concurrent-0-s3cr3t00"
POD = "runner-abc-project-7-concurrent-0-p0d00000"


class FakeGitLab:
    """Records which driver (and thread) fetched what; jobs in FAILING raise as GitLab would."""

    def __init__(self, log: list[tuple[str, int, str]], failing: frozenset[int] = frozenset()) -> None:
        self.log = log
        self.failing = failing
        self.capped: dict[str, str] = {}
        self.siblings: list[FakeGitLab] = []
        self.project_id = 7

    def sibling(self) -> FakeGitLab:
        other = FakeGitLab(self.log, self.failing)
        self.siblings.append(other)
        return other

    def job(self, job_id: int) -> dict[str, Any]:
        self.log.append(("job", job_id, threading.current_thread().name))
        if job_id in self.failing:
            raise GitLabError(f"the GitLab API failed to read job {job_id}")
        return {"id": job_id, "name": f"job-{job_id}", "status": "success", "artifacts_file": {"size": 1}}

    def trace(self, job_id: int) -> str:
        self.capped[f"trace of job {job_id}"] = f"the trace of job {job_id} was cut"
        return f"trace {job_id}"

    def artifacts(self, job_id: int) -> dict[str, str]:
        return {"out.txt": str(job_id)}


class FakeKube:
    namespace = "ci"

    def __init__(self, listed: list[dict[str, Any]] | None = None) -> None:
        self.event_reads: list[str] = []
        self.listed = listed or []

    def pod_events(self, name: str) -> list[dict[str, Any]]:
        self.event_reads.append(name)
        return [{"reason": "Killing", "involvedObject": {"name": name}}]

    def list_secret_meta(self, name_part: str) -> tuple[list[dict[str, Any]], str]:
        return [m for m in self.listed if name_part in m["name"]], "5"


def collector(gitlab: FakeGitLab, kube: FakeKube | None = None) -> Collector:
    return Collector(cast(GitLabDriver, gitlab), cast(KubeDriver, kube or FakeKube()), workers=2)


def test_each_finished_job_is_fetched_once_by_a_worker_with_its_own_driver() -> None:
    log: list[tuple[str, int, str]] = []
    main = FakeGitLab(log)
    c = collector(main)
    c.job_finished(1)
    c.job_finished(1)
    c.job_finished(2)
    one, two = c.gitlab_side(1), c.gitlab_side(2)
    c.close()
    assert [entry[:2] for entry in sorted(log)] == [("job", 1), ("job", 2)], "one fetch per job"
    assert all(thread.startswith("runnerconf-collect") for _, _, thread in log), "fetched in the background"
    assert main.capped == {} and 1 <= len(main.siblings) <= 2, "the workers' drivers, not the run's"
    assert one.trace == "trace 1" and one.artifacts == {"out.txt": "1"} and two.job["id"] == 2
    assert set(c.capped()) == {"trace of job 1", "trace of job 2"}, "caps hit by any worker are said"


def test_a_fetch_that_failed_raises_where_the_evidence_is_assembled() -> None:
    c = collector(FakeGitLab([], failing=frozenset({3})))
    c.job_finished(3)
    with pytest.raises(GitLabError, match="failed to read job 3"):
        c.gitlab_side(3)
    c.close()


def test_a_job_never_seen_finished_is_fetched_when_asked() -> None:
    log: list[tuple[str, int, str]] = []
    c = collector(FakeGitLab(log))
    assert c.gitlab_side(4).job["id"] == 4 and [e[:2] for e in log] == [("job", 4)]
    c.close()


class Changes:
    def look(self, *args: Any) -> None:
        pass


def make_run(kube: FakeKube, gitlab: FakeGitLab | None = None) -> run_mod._Run:
    table = {
        "gitlab_url": "https://gitlab.example.com",
        "token_env": "T",
        "project": "g/p",
        "namespace": "ci",
        "expect": {"cleanup_deadline_s": 30},
    }
    profile = profile_from_table("t", table, "runnerconf.toml")
    gitlab = gitlab or FakeGitLab([])
    run = run_mod._Run(
        profile=profile,
        run_id="r",
        changes=cast(Any, Changes()),
        gitlab=cast(GitLabDriver, gitlab),
        kube=cast(KubeDriver, kube),
    )
    run.tracker.project_id = 7
    run.collector = collector(gitlab, kube)
    return run


def pod(name: str = POD, job_id: int = 11) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"pod": name, "project.runner.gitlab.com/id": "7"},
            "annotations": {"job.runner.gitlab.com/id": str(job_id)},
        },
        "spec": {"imagePullSecrets": [{"name": SECRET}]},
        "status": {"phase": "Running"},
    }


def secret(name: str = SECRET) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "metadata": {"name": name, "ownerReferences": []}}


def test_finished_jobs_and_gone_pods_are_fetched_before_the_run_ends() -> None:
    log: list[tuple[str, int, str]] = []
    kube = FakeKube()
    run = make_run(kube, FakeGitLab(log))
    run.jobs = {11: {"id": 11, "status": "success"}, 12: {"id": 12, "status": "running"}}
    run.tracker.apply(PodEvent("ADDED", pod(POD, 11), 1.0))
    run.tracker.apply(PodEvent("ADDED", pod(POD.replace("p0d", "q0d"), 12), 1.0))
    run_mod._collect_finished(run)
    assert run.collector is not None
    run.collector.gitlab_side(11)
    assert [e[:2] for e in log] == [("job", 11)], "the running job is not fetched yet"
    assert kube.event_reads == [], "a live pod's events are read once it is gone"
    run.tracker.apply(PodEvent("DELETED", pod(POD, 11), 2.0))
    run_mod._collect_finished(run)
    run.collector.events(POD)
    assert kube.event_reads == [POD]
    run.collector.close()


def test_the_secret_watch_times_deletions_and_the_wait_ends_with_the_last_one() -> None:
    kube = FakeKube()
    run = make_run(kube)
    run.secrets, run.secrets_before = {}, set()
    run.jobs = {11: {"id": 11, "status": "success"}}
    run.events.put(PodEvent("ADDED", secret(), 1.0, resource="secrets"))
    run.events.put(
        PodEvent("ADDED", secret("runner-abc-project-8-concurrent-0-zzz"), 1.0, resource="secrets")
    )
    run.events.put(PodEvent("ADDED", pod(), 1.1))
    run.events.put(PodEvent("DELETED", pod(), 5.0))
    run.events.put(PodEvent("DELETED", secret(), 5.2, resource="secrets"))
    assert run_mod._await_cleanup(run) == {}
    assert run.secrets == {
        SECRET: {
            "first_seen": 1.0,
            "deleted_at": 5.2,
            "before": False,
            "type": "kubernetes.io/dockercfg",
            "creationTimestamp": None,
            "owner_references": [],
        }
    }, "another project's Secret is not kept; the deletion has the event's time"
    run.collector.close()  # type: ignore[union-attr]


def test_a_secret_the_watch_never_delivered_is_bounded_by_the_last_look() -> None:
    kube = FakeKube(listed=[])
    run = make_run(kube)
    run.secrets, run.secrets_before = {}, set()
    run.jobs = {11: {"id": 11, "status": "success"}}
    run.tracker.apply(PodEvent("ADDED", pod(), 1.1))
    run.tracker.apply(PodEvent("DELETED", pod(), 5.0))
    run.settle_secrets()
    assert run.secrets[SECRET]["never_listed"] is True
    assert run.secrets[SECRET]["deleted_at"] >= 5.0
    run.collector.close()  # type: ignore[union-attr]


def test_a_refused_secret_watch_skips_the_secret_check_and_the_run_goes_on() -> None:
    run = make_run(FakeKube())
    run.secrets = {}
    run.events.put(WatchFailed(SecretsForbidden("watching Secrets ... is not allowed (403)"), 1.0, "secrets"))
    run.drain()
    assert run.secrets is None and "not allowed (403)" in run.secrets_skipped
    run.events.put(WatchFailed(GitLabError("x"), 1.0))  # type: ignore[arg-type]
    with pytest.raises(GitLabError):
        run.drain()  # the pod watch's failure ends the run as before
    run.collector.close()  # type: ignore[union-attr]


def test_the_phase_marks_reach_the_evidence() -> None:
    run = make_run(FakeKube())
    for mark in run_mod.TIMING_MARKS[:-1]:
        run.mark(mark)
    evidence = run_mod._evidence(run, {}, "b", [], [], {}, {})
    assert list(evidence.timings) == list(run_mod.TIMING_MARKS)
    assert sorted(evidence.timings.values()) == list(evidence.timings.values()), "in the order they happen"
    run.collector.close()  # type: ignore[union-attr]


def test_a_secret_the_watch_had_not_delivered_yet_is_still_present_by_the_last_look() -> None:
    kube = FakeKube(listed=[{"name": SECRET, "type": "kubernetes.io/dockercfg", "owner_references": []}])
    run = make_run(kube)
    run.secrets, run.secrets_before = {}, set()
    run.jobs = {11: {"id": 11, "status": "success"}}
    run.tracker.apply(PodEvent("ADDED", pod(), 1.1))
    run.settle_secrets()
    assert run.secrets[SECRET]["deleted_at"] is None, "listed by the last look: not deleted"
    assert not run.secrets[SECRET].get("never_listed")
    run.collector.close()  # type: ignore[union-attr]
