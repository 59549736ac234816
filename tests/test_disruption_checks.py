"""The disruption checks offline: the evicted job's end, the opt-in marker, and the grant only when selected."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_runnerconf import rbac
from pytest_runnerconf.disruptive import asked_for
from pytest_runnerconf.errors import KubeError
from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence
from pytest_runnerconf.jobend import INFRASTRUCTURE, classify
from pytest_runnerconf.kube_driver import Eviction
from pytest_runnerconf.local.kube_api import EVICTION_CONDITION
from pytest_runnerconf.run import EVICTION_NOTE
from suites import test_disruption as dis

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "data" / "traces"
POD = "runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4"


def evicted_job(trace: str, status: str = "failed", condition: bool = True) -> JobEvidence:
    last = {
        "metadata": {"name": POD, "namespace": "ci"},
        "status": {"phase": "Running", "conditions": [dict(EVICTION_CONDITION)] if condition else []},
    }
    pod = PodObservation(
        name=POD, first_seen=1.0, spec={"metadata": {"name": POD, "namespace": "ci"}}, last=last
    )
    reason = "runner_system_failure" if status == "failed" else None
    return JobEvidence(
        name=dis.JOB, job={"id": 4242, "status": status, "failure_reason": reason}, trace=trace, pod=pod
    )


def test_the_sample_classifies_as_a_system_failure_with_the_disruption_message() -> None:
    job = evicted_job((TRACES / "runner-18.11-evicted.txt").read_text())
    end = classify(job)
    assert end.kind == INFRASTRUCTURE and end.probe_started and end.cause == "runner-system-failure"
    said = dis.disruption_message(job.trace)
    assert said == {
        "pod": f"ci/{POD}",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
    }


def test_the_emulator_marks_the_pod_as_the_api_server_does() -> None:
    # pkg/registry/core/pod/storage/eviction.go: the condition the runner's informer quotes
    assert EVICTION_CONDITION["reason"] == "EvictionByEvictionAPI"
    assert EVICTION_CONDITION["message"] == "Eviction API: evicting"


def test_the_run_note_is_found_by_job() -> None:
    run = RunEvidence(notes=["other", f"{EVICTION_NOTE} {dis.JOB}: eviction of pod {POD} accepted (201)"])
    assert dis.eviction_note(run) == f"eviction of pod {POD} accepted (201)"
    assert dis.eviction_note(RunEvidence(notes=["nothing"])) == ""


def test_no_disruption_message_in_a_successful_trace() -> None:
    assert dis.disruption_message((TRACES / "runner-19.3-success.txt").read_text()) is None


@pytest.mark.parametrize(
    ("expr", "asked"),
    [
        ("", False),
        ("disruptive", True),
        ("not disruptive", True),
        ("disruptive or not disruptive", True),
        ("nondisruptive", False),
        ("docker", False),
    ],
)
def test_asked_for_needs_the_marker_named(expr: str, asked: bool) -> None:
    assert asked_for(expr) is asked


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "suites").mkdir()
    for name in ("test_cleanup.py", "test_disruption.py", "test_ordering.py"):
        shutil.copy(ROOT / "suites" / name, pytester.path / "suites" / name)
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(
        """
        def pytest_collection_finish(session):
            from pytest_runnerconf.plugin import STATE
            plan = session.config.stash[STATE].plan
            print("PLAN", plan.probes, sorted(plan.reads))
        """
    )
    return pytester


def test_disruptive_checks_are_deselected_unless_asked_for(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("--collect-only", "-q", "--runner-cluster=local", "suites")
    out = result.stdout.str()
    assert "test_disruption.py" not in out
    assert "3 deselected" in out
    assert "runnerconf: 3 disruptive checks deselected" in out
    result.stdout.fnmatch_lines(
        ["PLAN ('cleanup', 'images', 'oom', 'ordering') ['secrets']"]
    )  # no disruption probe, no grant (RC-CLN-007 needs the images probe)


def test_disruptive_checks_run_with_the_marker(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(
        "--collect-only", "-q", "--runner-cluster=local", "-m", "disruptive", "suites"
    )
    out = result.stdout.str()
    assert out.count("test_disruption.py::") == 3
    result.stdout.fnmatch_lines(["PLAN ('disruption',) ['pods/eviction']"])
    assert "disruptive checks deselected" not in out


def test_the_whole_suite_with_the_marker_expression(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(
        "--collect-only", "-q", "--runner-cluster=local", "-m", "disruptive or not disruptive", "suites"
    )
    out = result.stdout.str()
    assert "deselected" not in out
    assert "test_disruption.py::" in out and "test_ordering.py::" in out


def test_eviction_grant_only_when_a_disruptive_check_is_selected() -> None:
    plain = rbac.manifest("ci", ["secrets"], checks=3)
    assert "pods/eviction" not in plain and "the run never creates" in plain
    with_eviction = rbac.manifest("ci", ["secrets", "pods/eviction"], checks=5)
    assert "resources: [pods/eviction]" in with_eviction and "verbs: [create]" in with_eviction
    assert "the run never creates" not in with_eviction
    assert "create pods/eviction" in rbac.grants(["pods/eviction"])
    assert "create pods/eviction" not in rbac.grants(["secrets"])


# ---------------------------------------------------------------- the probe and the run's eviction


def test_the_probe_job_asks_the_run_to_evict_it_on_its_own_record() -> None:
    from pytest_runnerconf.plan import load_probe_jobs

    jobs = load_probe_jobs("disruption", {"images.build": "alpine:3.20", "disruption.runner_tag": ""})
    assert jobs[dis.JOB]["x-runnerconf"] == {"evict_on_record": "disruption"}
    assert jobs[dis.PDB_JOB]["x-runnerconf"] == {"evict_on_record": "disruption"}
    assert jobs[dis.JOB]["allow_failure"] is True  # an evicted job must not turn the pipeline red
    assert "rc_emit disruption" in (ROOT / "fixtures" / "probes" / "disruption.sh").read_text()


class _Kube:
    def __init__(self, answer: Any) -> None:
        self.answer, self.asked = answer, []

    def evict_pod(self, name: str) -> Any:
        self.asked.append(name)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _GitLab:
    def __init__(self, trace: str) -> None:
        self.text = trace

    def trace(self, job_id: int) -> str:
        return self.text


def _run_with(trace: str, kube: _Kube, status: str = "running") -> Any:
    from pytest_runnerconf.run import PodTracker

    tracker = PodTracker()
    tracker.pods[POD] = PodObservation(name=POD, first_seen=1.0)
    tracker.job_of[POD] = 7
    return SimpleNamespace(
        jobs={7: {"id": 7, "name": dis.JOB, "status": status}},
        directives={dis.JOB: {"evict_on_record": "disruption"}},
        evicted=set(),
        tracker=tracker,
        gitlab=_GitLab(trace),
        kube=kube,
        notes=[],
    )


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (Eviction(POD, 201, ""), f"{EVICTION_NOTE} {dis.JOB}: eviction of pod {POD} accepted (201)"),
        (
            Eviction(POD, 429, "Cannot evict pod as it would violate the pod's disruption budget."),
            f"{EVICTION_NOTE} {dis.JOB}: eviction of pod {POD} refused (429): Cannot evict pod as it would "
            "violate the pod's disruption budget.",
        ),
        (
            KubeError("no RBAC to create pods/eviction"),
            f"{EVICTION_NOTE} {dis.JOB}: pod {POD} could not be evicted: no RBAC to create pods/eviction",
        ),
    ],
)
def test_the_run_evicts_once_the_record_is_there_and_notes_the_answer(answer: Any, said: str) -> None:
    from pytest_runnerconf.run import _evict_on_records

    sample = (TRACES / "runner-18.11-evicted.txt").read_text()
    before_record = sample[: sample.index("RUNNERCONF disruption")]
    kube = _Kube(answer)
    run = _run_with(before_record, kube)
    _evict_on_records(run)
    assert kube.asked == [] and run.notes == []  # no record yet: nothing done
    run.gitlab = _GitLab(sample)
    _evict_on_records(run)
    _evict_on_records(run)  # tried once only: a write is never repeated
    assert kube.asked == [POD] and run.notes == [said]
    assert dis.eviction_note(RunEvidence(notes=run.notes)) == said.split(": ", 1)[1]


# ---------------------------------------------------------------- RC-DIS-003: the PodDisruptionBudget


def _pdb_profile(disruption: Any = "on") -> Any:
    from pytest_runnerconf.profile import DisruptionExpect, Expectations, Profile

    said = {
        "on": DisruptionExpect(pod_disruption_budget=True, runner_tag="k8s-pdb"),
        "off": DisruptionExpect(pod_disruption_budget=False),
        None: None,
    }[disruption]
    return Profile(
        name="t",
        gitlab_url="http://127.0.0.1",
        token_env="T",
        token_file=None,
        project="g/p",
        runner_tags=("k8s",),
        kubeconfig=None,
        kube_context=None,
        namespace="ci",
        expect=Expectations(disruption=said),
        source="test",
        expect_set={"disruption": ("profile", "runnerconf.toml")},
    )


def _pdb_job(trace: str, status: str = "success", evicted: bool = False) -> JobEvidence:
    job = evicted_job(trace, status=status, condition=evicted)
    return JobEvidence(name=dis.PDB_JOB, job=job.job, trace=job.trace, pod=job.pod)


REFUSED = (
    f"eviction of pod {POD} refused (429): Cannot evict pod as it would violate the pod's disruption budget."
)


def _run_dis003(job: JobEvidence, note: str | None, disruption: Any = "on") -> None:
    notes = [] if note is None else [f"{EVICTION_NOTE} {dis.PDB_JOB}: {note}"]
    run = RunEvidence(notes=notes)
    dis.test_budgeted_pod_is_not_evicted(lambda name: job, run, _pdb_profile(disruption))


def _pdb_failure(job: JobEvidence, note: str) -> Any:
    from pytest_runnerconf.verdict import ConformanceFailure

    with pytest.raises(ConformanceFailure) as caught:
        _run_dis003(job, note)
    return caught.value.expectation


SUCCESS = (TRACES / "runner-18.11-timestamps-success.txt").read_text()


def test_a_refused_eviction_and_a_successful_job_pass() -> None:
    _run_dis003(_pdb_job(SUCCESS), REFUSED)  # no failure, no skip


def test_an_accepted_eviction_fails_naming_the_setting() -> None:
    failed = _pdb_failure(
        _pdb_job((TRACES / "runner-18.11-evicted.txt").read_text(), status="failed", evicted=True),
        f"eviction of pod {POD} accepted (201)",
    )
    assert "accepted" in failed.summary and "no PodDisruptionBudget" in failed.summary
    assert failed.observed["eviction"] == f"eviction of pod {POD} accepted (201)"
    assert "[runners.kubernetes] pod_disruption_budget = true" in dis.PDB_REMEDIATION
    assert "18.11.0" in dis.PDB_REMEDIATION


def test_a_refused_eviction_with_a_failed_job_fails() -> None:
    sample = (TRACES / "runner-18.11-timestamps-success.txt").read_text()
    failed = _pdb_failure(_pdb_job(sample, status="failed"), REFUSED)
    assert failed.summary.startswith("eviction refused, but job failed")
    assert failed.observed == {"eviction": REFUSED, "job": "failed"}


@pytest.mark.parametrize(
    ("disruption", "reason"),
    [
        (None, r"does not say whether the runner's job pods get a PodDisruptionBudget"),
        ("off", r"get no PodDisruptionBudget \(expect\.disruption\.pod_disruption_budget, profile"),
    ],
)
def test_without_a_configured_budget_the_check_skips(disruption: Any, reason: str) -> None:
    with pytest.raises(pytest.skip.Exception, match=reason):
        _run_dis003(_pdb_job(SUCCESS), REFUSED, disruption)


def test_a_runner_before_18_11_skips_by_the_version_table() -> None:
    old = (TRACES / "runner-17.11-success.txt").read_text()
    with pytest.raises(pytest.skip.Exception, match=r"PodDisruptionBudget .* arrived in 18\.11"):
        _run_dis003(_pdb_job(old), f"eviction of pod {POD} accepted (201)")


@pytest.mark.parametrize(
    ("note", "cause"),
    [
        (None, "no-evidence"),
        (f"pod {POD} could not be evicted: no RBAC to create pods/eviction", "api-error"),
        (f"eviction of pod {POD} refused (429): Too many requests, please try again later.", "api-error"),
    ],
)
def test_no_answer_or_another_answer_is_could_not_test(note: str | None, cause: str) -> None:
    from pytest_runnerconf.outcome import CouldNotTest

    with pytest.raises(CouldNotTest) as caught:
        _run_dis003(_pdb_job(SUCCESS), note)
    assert caught.value.cause == cause


def test_the_pdb_probe_job_goes_to_the_budgeted_runner_and_is_bounded() -> None:
    import yaml

    from pytest_runnerconf.plan import make_plan, render_pipeline

    text = render_pipeline(make_plan(["disruption"]), _pdb_profile(), "r1")[0]
    jobs = yaml.safe_load(text)
    assert jobs[dis.PDB_JOB]["tags"] == ["k8s-pdb"] and jobs[dis.JOB]["tags"] == ["k8s"]
    assert jobs[dis.PDB_JOB]["allow_failure"] is True
    script = (ROOT / "fixtures" / "probes" / "disruption.sh").read_text()
    assert (
        "exec sleep 12" in script
    )  # waits out the eviction attempt (the run evicts within seconds), then ends 0
    plain = yaml.safe_load(render_pipeline(make_plan(["disruption"]), _pdb_profile(None), "r1")[0])
    assert plain[dis.PDB_JOB]["tags"] == ["k8s"]  # no budgeted runner named: default tags, the check skips
