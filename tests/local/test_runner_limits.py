"""The emulated runner process: each [[runners]] entry takes at most its `limit` jobs, all of them together
at most `concurrent` (commands/multi.go), a job waits pending meanwhile, and GitLab hands each job to the
entry whose tags fit. The job itself is replaced by a wait, so no Docker is needed."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.local.model import JobPayload, Variable
from pytest_runnerconf.local.runner import LocalRunner, RunningJob, Slots
from pytest_runnerconf.local.runner_config import RunnerConfig, load_runner_config
from pytest_runnerconf.local.runners import RunnerSet

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "local" / "config.toml"
SUBS = {"@local-dns": "172.17.0.1", "@gitlab-url": "http://127.0.0.1:8929/"}


class Recorder:
    """Counts the jobs running at once, per runner and overall; a job runs until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.started: list[int] = []
        self.release = threading.Semaphore(0)

    def total(self) -> int:
        return sum(self.running.values())


class FakeRunner(LocalRunner):
    def __init__(self, cfg: RunnerConfig, tag: str, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(
            cfg,
            None,
            None,
            None,  # type: ignore[arg-type]
            tags=frozenset({tag}),
            resolve_image=lambda image: None,  # type: ignore[arg-type,return-value]
            delete_pod=lambda ns, name, grace: None,
            **kwargs,
        )
        self.recorder = recorder

    def _run(self, job: RunningJob) -> None:
        rec, name = self.recorder, self.cfg.runner.name
        with rec.lock:
            rec.started.append(job.payload.id)
            rec.running[name] = rec.running.get(name, 0) + 1
            rec.most[name] = max(rec.most.get(name, 0), rec.running[name])
            rec.most["all"] = max(rec.most.get("all", 0), rec.total())
        rec.release.acquire(timeout=10)
        with rec.lock:
            rec.running[name] -= 1


def payload(n: int, tags: tuple[str, ...], faults: str = "") -> JobPayload:
    variables = (Variable("RUNNERCONF_LOCAL_FAULTS", faults),) if faults else ()
    return JobPayload(
        id=n, name=f"j{n}", stage="s", token="t", project_id=1, project_name="p", project_path="g/p",
        namespace_path="g", namespace_id=1, root_namespace="g", project_url="http://x/g/p", pipeline_id=1,
        ref="main", sha="a" * 40, before_sha="0" * 40, repo_path=Path("/nonexistent"), image="alpine",
        tags=tags, variables=variables,
    )  # fmt: skip


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def runner_set(concurrent: int, recorder: Recorder) -> RunnerSet:
    cfg = dataclasses.replace(load_runner_config(FIXTURE, SUBS), concurrent=concurrent)
    slots = Slots(cfg.concurrent)
    main, capacity, _cache = cfg.entries()
    return RunnerSet(
        [
            FakeRunner(cfg.for_runner(main), "runnerconf-local", recorder, slots=slots),
            FakeRunner(cfg.for_runner(capacity), "runnerconf-capacity", recorder, slots=slots),
        ]
    )


def drain(runners: RunnerSet, recorder: Recorder, count: int) -> None:
    for _ in range(count):
        recorder.release.release()
    wait_for(lambda: recorder.total() == 0 and len(recorder.started) == count)
    runners.shutdown()


@pytest.mark.parametrize(("faults", "most"), [("", 2), ("concurrency-one", 1), ("limit-ignored", 3)])
def test_the_capacity_entry_runs_its_limit_and_one_more_waits(faults: str, most: int) -> None:
    rec = Recorder()
    runners = runner_set(24, rec)
    for n in range(1, 4):
        runners.submit(payload(n, ("runnerconf-capacity",), faults))
    wait_for(lambda: len(rec.started) == most)
    time.sleep(0.1)
    assert len(rec.started) == most  # the others stay pending: not requested while the entry is at its limit
    rec.release.release()  # one ends: the next (in order) starts
    if most < 3:
        wait_for(lambda: len(rec.started) == most + 1)
    assert rec.started[: most + (most < 3)] == list(range(1, most + 1 + (most < 3)))
    drain(runners, rec, 3)
    assert rec.most["runnerconf-capacity"] == most


def test_the_first_entry_has_no_limit_and_keeps_its_name() -> None:
    rec = Recorder()
    runners = runner_set(24, rec)
    assert runners.runner_for(("runnerconf-local",)) is runners.runners[0]
    assert runners.runners[0].cfg.runner.name == "runnerconf-local"
    for n in range(1, 6):
        runners.submit(
            payload(n, ("runnerconf-local",), "concurrency-one")
        )  # no limit: nothing to cut to one
    wait_for(lambda: len(rec.started) == 5)
    drain(runners, rec, 5)


def test_concurrent_caps_all_entries_together() -> None:
    rec = Recorder()
    runners = runner_set(3, rec)
    for n in range(1, 4):
        runners.submit(payload(n, ("runnerconf-local",)))
    runners.submit(payload(4, ("runnerconf-capacity",)))
    wait_for(lambda: len(rec.started) == 3)
    time.sleep(0.1)
    assert rec.started == [1, 2, 3]  # the capacity job waits for a worker although its entry is idle
    rec.release.release()
    wait_for(lambda: 4 in rec.started)
    drain(runners, rec, 4)
    assert rec.most["all"] == 3


def test_a_job_whose_tags_no_single_entry_has_stays_pending() -> None:
    rec = Recorder()
    runners = runner_set(24, rec)
    assert runners.runner_tags() == frozenset({"runnerconf-local", "runnerconf-capacity"})
    runners.submit(payload(1, ("runnerconf-local", "runnerconf-capacity")))
    runners.submit(payload(2, ()))  # untagged: the first entry takes it
    wait_for(lambda: rec.started == [2])
    time.sleep(0.1)
    assert rec.started == [2]
    drain(runners, rec, 1)
