"""RC-CAP over hand-built jobs: overlap of the capacity jobs' sleeps, the extra job waiting, pod Running
spans from watch timelines, the skip without a capacity runner; the plan's capacity jobs and tags."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.evidence import JobEvidence, PodObservation
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.plan import Plan, ProbeLibrary, make_plan, render_pipeline
from pytest_runnerconf.profile import CapacityExpect, Expectations, Profile
from tests.test_catalogue import _load

ROOT = Path(__file__).resolve().parent.parent
Failed = pytest.fail.Exception
Skipped = pytest.skip.Exception


cap = _load("test_capacity")


def profile(limit: int | None = 2, tags: tuple[str, ...] = ("k8s",)) -> Profile:
    capacity = None if limit is None else CapacityExpect(runner_tag="k8s-capacity", limit=limit)
    return Profile(
        name="t",
        gitlab_url="http://127.0.0.1",
        token_env="T",
        token_file=None,
        project="g/p",
        runner_tags=tags,
        kubeconfig=None,
        kube_context=None,
        namespace="ci",
        expect=Expectations(capacity=capacity),
        source="test",
    )


def pod(name: str, running: float, left: float | None, deleted: float | None = None) -> PodObservation:
    """A pod the watch saw Pending, Running at RUNNING, then asked to be deleted at LEFT."""
    timeline: list[dict[str, Any]] = [
        {"time": running - 2, "type": "ADDED", "phase": "Pending"},
        {"time": running, "type": "MODIFIED", "phase": "Running"},
        {"time": running + 1, "type": "MODIFIED", "phase": "Running"},
    ]
    if left is not None:
        timeline.append({"time": left, "type": "MODIFIED", "phase": "Running", "deletionTimestamp": "x"})
    return PodObservation(name=name, first_seen=running - 2, timeline=timeline, deleted_at=deleted)


def job(n: int, start: float, end: float, status: str = "success") -> JobEvidence:
    return JobEvidence(
        name=f"capacity-{n}",
        job={"status": status},
        trace="",
        pod=pod(f"runner-rccapacit-project-1-concurrent-{n}-abcd1234", start - 3, end + 2),
        records={"capacity": [{"start": start, "end": end, "sleep_s": 8}]},
    )


def lookup(*jobs: JobEvidence) -> Any:
    by_name = {j.name: j for j in jobs}

    def get(name: str) -> JobEvidence:
        if name not in by_name:
            raise CouldNotTest("no-evidence", f"no job {name}")
        return by_name[name]

    return get


def span(start: float, end: float | None) -> Any:
    return cap.RunSpan("j", "p", start, end)


# ---- overlap logic -------------------------------------------------------------------------------------


def test_max_overlap_counts_spans_running_at_one_instant() -> None:
    assert cap.max_overlap([span(0, 8), span(1, 9), span(12, 20)]) == (2, 1)
    assert cap.max_overlap([span(0, 8), span(1, 9), span(2, 10)]) == (3, 2)
    assert cap.max_overlap([span(0, 8), span(9, 17), span(18, 26)]) == (1, 0)
    assert cap.max_overlap([]) == (0, None)


def test_spans_that_only_touch_do_not_overlap() -> None:
    # One job ends as the next begins: at that instant only one runs.
    assert cap.max_overlap([span(0, 8), span(8, 16)]) == (1, 0)


def test_an_open_span_runs_to_the_end() -> None:
    assert cap.max_overlap([span(0, None), span(5, 6), span(20, 21)]) == (2, 5)


def test_late_starter_is_the_last_to_start_with_the_first_end_before_it() -> None:
    last, first_end = cap.late_starter([span(0, 8), span(10, 18), span(1, 9)], 2)
    assert (last.start, first_end) == (10, 8)
    assert cap.late_starter([span(0, 8), span(1, 9)], 2) is None


def test_running_span_from_a_watch_timeline() -> None:
    observed = pod("p", 100.0, 112.0)
    assert cap.running_span("j", observed) == cap.RunSpan("j", "p", 100.0, 112.0)
    # Not yet asked to go: the deletion ends it; never deleted: open.
    assert cap.running_span("j", pod("p", 100.0, None, deleted=115.0)).end == 115.0
    assert cap.running_span("j", pod("p", 100.0, None)).end is None
    # A phase change ends it too; a pod never seen Running has no span.
    failed = PodObservation(
        "p", 0.0, timeline=[{"time": 1, "phase": "Running"}, {"time": 4, "phase": "Failed"}]
    )
    assert cap.running_span("j", failed) == cap.RunSpan("j", "p", 1.0, 4.0)
    pending = PodObservation("p", 0.0, timeline=[{"time": 1, "phase": "Pending"}, {"type": "x"}])
    assert cap.running_span("j", pending) is None


# ---- the checks ----------------------------------------------------------------------------------------

CLEAN = (job(1, 100, 108), job(2, 100.5, 108.5), job(3, 113, 121))  # two at once, the third after


def test_clean_runner_passes_both() -> None:
    cap.test_limit_jobs_run_at_once(lookup(*CLEAN), profile())
    cap.test_one_more_waits(lookup(*CLEAN), profile())


def test_one_job_at_a_time_fails_only_the_at_once_check() -> None:
    serial = (job(1, 100, 108), job(2, 113, 121), job(3, 126, 134))
    with pytest.raises(
        Failed,
        match=r"expected: 2 jobs of runner .k8s-capacity. running at once.*\n  observed: \{\"at once\": 1,",
    ):
        cap.test_limit_jobs_run_at_once(lookup(*serial), profile())
    cap.test_one_more_waits(lookup(*serial), profile())


def stamped(j: JobEvidence, created: float, ended: float) -> JobEvidence:
    """J with GitLab's created_at and finished_at (the pipeline's clock)."""
    iso = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return replace(j, job={**j.job, "created_at": iso}, finished_at=ended)


def test_jobs_created_together_are_judged_however_they_ran() -> None:
    serial = (stamped(job(1, 100, 108), 95, 109), stamped(job(2, 113, 121), 95, 122),
              stamped(job(3, 126, 134), 95, 135))  # fmt: skip
    with pytest.raises(Failed, match=r"observed: \{\"at once\": 1,"):
        cap.test_limit_jobs_run_at_once(lookup(*serial), profile())


def test_the_runners_hold_is_judged_not_the_scripts_start_on_a_busy_node() -> None:
    # As in CI: the runner took capacity-1 and -2 at once, but the busy node started -2's script only after
    # -1's ended; -3 started when -1 was handed back.
    def held(*stamps: tuple[float, float]) -> tuple[JobEvidence, ...]:
        """The clean sleeps (serial, as on the busy node) with when the runner held each job."""
        sleeps = (job(1, 100, 108), job(2, 110, 118), job(3, 121, 129))
        return tuple(
            replace(j, started_at=a, finished_at=b) for j, (a, b) in zip(sleeps, stamps, strict=True)
        )

    busy = held((95, 109), (95, 119), (109, 130))
    cap.test_limit_jobs_run_at_once(lookup(*busy), profile())
    cap.test_one_more_waits(lookup(*busy), profile())
    serial = held((95, 109), (109, 119), (119, 130))
    with pytest.raises(Failed, match=r"observed: \{\"at once\": 1,"):
        cap.test_limit_jobs_run_at_once(lookup(*serial), profile())
    early = held((95, 109), (95, 119), (96, 130))
    with pytest.raises(Failed, match=r"observed: \{\"at once\": 3,"):
        cap.test_one_more_waits(lookup(*early), profile())


def test_retried_jobs_that_did_not_wait_together_are_could_not_test() -> None:
    # --runnerconf-retry re-creates each job when its first attempt ends: these never competed for the slots.
    retried = (stamped(job(1, 100, 108), 95, 109), replace(stamped(job(2, 113, 121), 110, 122), retried=[None]),
               stamped(job(3, 126, 134), 123, 135))  # type: ignore[list-item]  # fmt: skip
    for check in (cap.test_limit_jobs_run_at_once, cap.test_one_more_waits):
        with pytest.raises(CouldNotTest, match=r"did not wait for the runner together: capacity-3 was created "
                           r"14\.0 s after another ended \(retried: capacity-2\)") as caught:  # fmt: skip
            check(lookup(*retried), profile())
        assert caught.value.cause == "inconclusive"


def test_limit_not_enforced_fails_only_the_waits_check() -> None:
    together = (job(1, 100, 108), job(2, 100.5, 108.5), job(3, 101, 109))
    cap.test_limit_jobs_run_at_once(lookup(*together), profile())
    with pytest.raises(Failed, match=r"observed: \{\"at once\": 3,"):
        cap.test_one_more_waits(lookup(*together), profile())


def test_limit_three_needs_four_jobs() -> None:
    four = (*CLEAN[:2], job(3, 101, 109), job(4, 113, 121))
    cap.test_limit_jobs_run_at_once(lookup(*four), profile(limit=3))
    cap.test_one_more_waits(lookup(*four), profile(limit=3))
    with pytest.raises(CouldNotTest, match="no job capacity-4"):
        cap.test_one_more_waits(lookup(*CLEAN), profile(limit=3))


def test_no_capacity_runner_in_the_profile_is_a_skip_with_the_reason() -> None:
    with pytest.raises(Skipped, match=r"names no capacity runner \(expect\.capacity"):
        cap.test_limit_jobs_run_at_once(lookup(*CLEAN), profile(limit=None))
    with pytest.raises(Skipped):
        cap.test_one_more_waits(lookup(), profile(limit=None))


def test_a_failed_job_or_missing_record_is_could_not_test() -> None:
    with pytest.raises(CouldNotTest, match="capacity-2 should succeed"):
        cap.test_limit_jobs_run_at_once(lookup(CLEAN[0], job(2, 100, 108, "failed"), CLEAN[2]), profile())
    bare = job(3, 113, 121)
    bare.records = {}
    with pytest.raises(CouldNotTest, match="capacity-3 printed no capacity record"):
        cap.test_one_more_waits(lookup(*CLEAN[:2], bare), profile())


# ---- RC-CAP-003: binding times -----------------------------------------------------------------------


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bound(j: JobEvidence, after: float | None, created: float = 1_700_000_000.0) -> JobEvidence:
    """J's pod created at CREATED and bound AFTER seconds later (None: still Unschedulable), as the API
    server stamps them, with the scheduler's event while it waited."""
    assert j.pod is not None
    j.pod.spec = {"metadata": {"creationTimestamp": _stamp(created)}}
    if after is None:
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        j.pod.last = {"spec": {}, "status": {"phase": "Pending", "conditions": [condition]}}
    else:
        condition = {"type": "PodScheduled", "status": "True", "lastTransitionTime": _stamp(created + after)}
        j.pod.last = {"spec": {"nodeName": "n1"}, "status": {"phase": "Running", "conditions": [condition]}}
    if after is None or after > 1:
        message = "0/1 nodes are available: 1 Insufficient cpu."
        j.pod.events = [{"reason": "FailedScheduling", "type": "Warning", "message": message}]
    return j


def within(seconds: float | None) -> Profile:
    p = profile()
    assert p.expect.capacity is not None
    capacity = CapacityExpect(runner_tag="k8s-capacity", limit=2, schedule_within_s=seconds)
    return replace(p, expect=replace(p.expect, capacity=capacity, pickup_deadline_s=60.0))


def test_pods_bound_at_once_pass() -> None:
    jobs = [bound(job(n, 100, 108), 0) for n in (1, 2, 3)]
    cap.test_pods_scheduled_promptly(lookup(*jobs), within(10))


def test_a_pod_bound_late_fails_naming_it_and_the_scheduler() -> None:
    jobs = [bound(job(1, 100, 108), 0), bound(job(2, 100, 108), 15), bound(job(3, 113, 121), 1)]
    with pytest.raises(
        Failed,
        match=r'"bound after s": 15.0, "job": "capacity-2", .*"scheduler": "0/1 nodes.*\n  job: capacity-2 ',
    ):
        cap.test_pods_scheduled_promptly(lookup(*jobs), within(10))
    cap.test_pods_scheduled_promptly(lookup(*jobs), within(20))


def test_a_pod_never_bound_fails() -> None:
    jobs = [bound(job(1, 100, 108), 0), bound(job(2, 100, 108), 0), bound(job(3, 113, 121), None)]
    with pytest.raises(Failed, match=r'"bound after s": null, "job": "capacity-3".*\n  job: capacity-3 '):
        cap.test_pods_scheduled_promptly(lookup(*jobs), within(10))


def test_without_its_own_setting_the_pickup_deadline_bounds_binding() -> None:
    jobs = [bound(job(1, 100, 108), 0), bound(job(2, 100, 108), 45), bound(job(3, 113, 121), 0)]
    cap.test_pods_scheduled_promptly(lookup(*jobs), within(None))  # 45 s < pickup_deadline_s 60
    jobs[1] = bound(job(2, 100, 108), 61)
    with pytest.raises(Failed, match=r"expect\.pickup_deadline_s"):
        cap.test_pods_scheduled_promptly(lookup(*jobs), within(None))


def test_a_pod_without_its_creation_time_is_could_not_test() -> None:
    jobs = [bound(job(n, 100, 108), 0) for n in (1, 2, 3)]
    assert jobs[0].pod is not None
    jobs[0].pod.spec = {}
    jobs[0].pod.last = {}
    with pytest.raises(CouldNotTest, match="has no creationTimestamp"):
        cap.test_pods_scheduled_promptly(lookup(*jobs), within(10))


# ---- the plan ------------------------------------------------------------------------------------------


def jobs_of(text: str) -> dict[str, Any]:
    return {k: v for k, v in yaml.safe_load(text).items() if k not in ("stages", "variables")}


def test_plan_renders_limit_plus_one_jobs_on_the_capacity_tag() -> None:
    text, files = render_pipeline(make_plan(["capacity"]), profile(limit=2), "r1")
    jobs = jobs_of(text)
    assert sorted(jobs) == ["capacity-1", "capacity-2", "capacity-3"]
    assert all(j["tags"] == ["k8s-capacity"] for j in jobs.values())
    assert "x-runnerconf" not in text and ".runnerconf/capacity.sh" in files


def test_plan_without_a_capacity_runner_runs_one_job_on_the_default_tags() -> None:
    jobs = jobs_of(render_pipeline(make_plan(["capacity"]), profile(limit=None), "r1")[0])
    assert list(jobs) == ["capacity-1"] and jobs["capacity-1"]["tags"] == ["k8s"]
    untagged = jobs_of(render_pipeline(make_plan(["capacity"]), profile(limit=None, tags=()), "r1")[0])
    assert "tags" not in untagged["capacity-1"]


@pytest.mark.parametrize("value", ["0", "two", "true"])
def test_a_bad_repeat_is_refused_naming_the_file(tmp_path: Path, value: str) -> None:
    (tmp_path / "c.yml").write_text(f"c:\n  x-runnerconf:\n    repeat: {value}\n  script: [true]\n")
    library = ProbeLibrary((ROOT / "fixtures" / "probes", tmp_path))
    with pytest.raises(
        ConfigError, match=r"c\.yml: job 'c' has x-runnerconf repeat = .*; it must be 1 or more"
    ):
        render_pipeline(Plan(probes=("c",), library=library), profile(), "r1")
