"""--runnerconf-retry offline: which classified ends are retried, the budget, the attempts in the bundle and in
the reports (traces from tests/data/traces, sources in its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_runnerconf import jobend, retry
from pytest_runnerconf import run as run_mod
from pytest_runnerconf.evidence import JobEvidence, RunEvidence, load, save
from pytest_runnerconf.gitlab_driver import JobNotRetryable
from pytest_runnerconf.profile import profile_from_table
from pytest_runnerconf.report import CheckResult, write_reports

pytest_plugins = ["pytester"]

TRACES = Path(__file__).resolve().parent / "data" / "traces"
JUDGED = frozenset({"oom", "resources-above-cap", "logs"})  # as suites/ declare with judges_failures


def sample(name: str) -> str:
    return (TRACES / name).read_bytes().decode("utf-8")


def job(name: str, trace: str, status: str, reason: str | None, job_id: int = 4711) -> JobEvidence:
    data: dict[str, Any] = {
        "id": job_id,
        "name": name,
        "status": status,
        "web_url": f"https://gl/-/jobs/{job_id}",
    }
    if reason is not None:
        data["failure_reason"] = reason
    return JobEvidence(name, data, trace)


# job name, trace, status, failure_reason, retried?
CASES = [
    # The runner or the cluster ended the job before the probe ran: retried, whichever check reads the job.
    ("ordering", "runner-18.11-timestamps-connection-refused.txt", "failed", "runner_system_failure", True),
    ("oom", "runner-18.11-timestamps-connection-refused.txt", "failed", "runner_system_failure", True),
    ("ordering", "runner-18.3-etcd-timeout.txt", "failed", "runner_system_failure", True),
    ("ordering", "runner-16.11-poll-timeout.txt", "failed", "runner_system_failure", True),
    ("oom", "runner-17.11-quota.txt", "failed", "runner_system_failure", True),
    ("ordering", "runner-19.3-timestamps-image-pull-network.txt", "failed", "runner_system_failure", True),
    # A system failure of a job nobody judges the failures of: no evidence, so retried.
    ("ordering", "runner-18.11-timestamps-oom-system-failure.txt", "failed", "runner_system_failure", True),
    # ...but the same end of the oom job is what the OOM check judges: never retried.
    ("oom", "runner-18.11-timestamps-oom-system-failure.txt", "failed", "runner_system_failure", False),
    ("resources-above-cap", "runner-19.3-overwrite-cap.txt", "failed", "runner_configuration_error", False),
    ("logs", "runner-18.11-timestamps-job-timeout.txt", "failed", "job_execution_timeout", False),
    # Conformance ends: a script failure, a success, a cancel.
    ("ordering", "runner-19.3-timestamps-script-failure.txt", "failed", "script_failure", False),
    ("oom", "runner-18.3-oom-process.txt", "failed", "script_failure", False),
    ("ordering", "runner-18.11-get-sources-failure.txt", "failed", "script_failure", False),
    ("ordering", "runner-19.3-success.txt", "success", None, False),
    ("ordering", "runner-17.11-cancel.txt", "canceled", None, False),
]


@pytest.mark.parametrize(("name", "trace", "status", "reason", "retried"), CASES)
def test_only_ends_the_infrastructure_caused_are_retried(
    name: str, trace: str, status: str, reason: str | None, retried: bool
) -> None:
    end = jobend.classify(job(name, sample(trace), status, reason))
    assert retry.worth_retrying(end, name, JUDGED) is retried, end


def test_a_runner_too_old_to_judge_is_not_retried() -> None:
    trace = sample("runner-18.3-etcd-timeout.txt").replace("gitlab-runner 18.3", "gitlab-runner 15.11", 1)
    end = jobend.classify(job("ordering", trace, "failed", "runner_system_failure"))
    assert end.infrastructure and end.unsupported
    assert not retry.worth_retrying(end, "ordering", JUDGED)


def test_the_budget_is_per_job_name_and_each_attempt_is_decided_once() -> None:
    retries = retry.Retries(limit=2, judged=JUDGED)
    refused = sample("runner-18.11-timestamps-connection-refused.txt")
    first = retries.consider(job("ordering", refused, "failed", "runner_system_failure", 1))
    assert first is not None and first.job_id == 1 and first.cause == "api-error"
    assert "before its probe ran" in first.sentence
    assert retries.consider(job("ordering", refused, "failed", "runner_system_failure", 1)) is None  # seen
    retries.retried("ordering", first)
    second = retries.consider(job("ordering", refused, "failed", "runner_system_failure", 2))
    assert second is not None
    retries.retried("ordering", second)
    assert retries.consider(job("ordering", refused, "failed", "runner_system_failure", 3)) is None  # spent
    assert retries.consider(job("builds", refused, "failed", "runner_system_failure", 4)) is not None
    assert retries.replaced_ids == {1, 2}
    assert [a.pod for a in retries.earlier("ordering", {1: "pod-1"}.get)] == [
        "pod-1",
        "",
    ]  # seen after the retry
    assert [a.job_id for a in retries.earlier("ordering")] == [1, 2]
    none = retry.Retries(limit=0)
    assert none.consider(job("ordering", refused, "failed", "runner_system_failure", 5)) is None


def _retried_run() -> RunEvidence:
    refused = job("ordering", sample("runner-18.11-timestamps-connection-refused.txt"), "failed",
                  "runner_system_failure", 10)  # fmt: skip
    final = job("ordering", sample("runner-18.11-timestamps-success.txt"), "success", None, 12)
    final.retried = [retry.attempt_of(refused)]
    other = job("builds", sample("runner-18.11-timestamps-success.txt"), "success", None, 11)
    return RunEvidence(
        run_id="r", cluster="local", jobs={"ordering": final, "builds": other}, plan=["builds", "ordering"]
    )


def test_attempts_survive_the_bundle_and_an_older_bundle_has_one_attempt_per_job(tmp_path: Path) -> None:
    run = _retried_run()
    save(run, tmp_path / "new")
    loaded = load(tmp_path / "new")
    assert loaded.jobs["ordering"].retried == run.jobs["ordering"].retried
    assert [a.job_id for a in retry.attempts(loaded.jobs["ordering"])] == [10, 12]
    assert loaded.jobs["builds"].retried == []

    doc = json.loads((tmp_path / "new" / "evidence.json").read_text())
    for entry in doc["jobs"]:
        del entry["retried"]  # as bundles were written before retries existed
    (tmp_path / "new" / "evidence.json").write_text(json.dumps(doc))
    old = load(tmp_path / "new")
    assert [len(retry.attempts(j)) for j in old.jobs.values()] == [1, 1]


def test_reports_show_every_attempt(tmp_path: Path) -> None:
    run = _retried_run()
    results = [
        CheckResult("RC-ORD-001", "c", "ordering", "passed", job="ordering"),
        CheckResult("RC-ORD-002", "c", "ordering", "passed", read=["ordering"]),  # looked it up, named none
        CheckResult("RC-BLD-001", "c", "builds", "passed",
                    expectations=[{"held": True, "job": "builds", "expected": 1, "observed": 1}]),
    ]  # fmt: skip
    paths = write_reports(results, run, tmp_path)
    doc = json.loads(paths["json"].read_text())
    by_id = {r["id"]: r for r in doc["results"]}
    ordering = by_id["RC-ORD-001"]["attempts"]
    assert [(a["job"], a["job_id"], a["status"], a["end"]) for a in ordering] == [
        ("ordering", 10, "failed", jobend.INFRASTRUCTURE),
        ("ordering", 12, "success", jobend.SUCCEEDED),
    ]
    assert ordering[0]["cause"] == "api-error" and ordering[0]["failure_reason"] == "runner_system_failure"
    assert "connection refused" in ordering[0]["sentence"]
    assert [a["job_id"] for a in by_id["RC-BLD-001"]["attempts"]] == [11]
    assert [a["job_id"] for a in by_id["RC-ORD-002"]["attempts"]] == [10, 12]
    assert {name: [a["job_id"] for a in rows] for name, rows in doc["attempts"].items()} == {
        "ordering": [10, 12],
        "builds": [11],
    }
    html = paths["html"].read_text()
    assert html.count('<ol class="attempts"') == 2  # next to the retried job's checks only
    assert "ordering #10 failed (api-error)" in html and 'href="https://gl/-/jobs/10"' in html
    assert retry.summary_lines(run) == [
        "runnerconf: job ordering ran 2 times: #10 failed (api-error), #12 success"
    ]


PRINT_RETRIES = """
def pytest_collection_finish(session):
    from pytest_runnerconf.plugin import STATE
    print("RETRIES", session.config.stash[STATE].settings.retries)
"""


@pytest.mark.parametrize(
    ("how", "value", "retries"),
    [("flag", "2", 2), ("ini", "3", 3), ("env", "1", 1), ("none", "", 0), ("flag", "0", 0)],
)
def test_the_retry_option_reads_flag_ini_and_env(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, value: str, retries: int
) -> None:
    pytester.makeconftest(PRINT_RETRIES)
    pytester.makeini(f"[pytest]\nrunnerconf_retry = {value}\n" if how == "ini" else "[pytest]\n")
    if how == "env":
        monkeypatch.setenv("RUNNERCONF_RETRY", value)
    args = [f"--runnerconf-retry={value}"] if how == "flag" else []
    result = pytester.runpytest("--collect-only", "-q", *args)
    result.stdout.fnmatch_lines([f"RETRIES {retries}"])


@pytest.mark.parametrize(
    ("how", "value", "named"),
    [
        ("flag", "many", "--runnerconf-retry=many"),
        ("flag", "-1", "--runnerconf-retry=-1"),
        ("ini", "1.5", "ini runnerconf_retry = 1.5"),
        ("env", "²", "env RUNNERCONF_RETRY = ²"),
    ],
)
def test_a_bad_retry_count_is_one_sentence_naming_the_setting(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, value: str, named: str
) -> None:
    pytester.makeini(f"[pytest]\nrunnerconf_retry = {value}\n" if how == "ini" else "[pytest]\n")
    if how == "env":
        monkeypatch.setenv("RUNNERCONF_RETRY", value)
    args = [f"--runnerconf-retry={value}"] if how == "flag" else []
    result = pytester.runpytest("--runner-cluster=local", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {named} is not a number of retries; give a whole number from 0*"])
    assert "Traceback" not in result.stderr.str()


class _GitLab:
    """GitLab as the run's retry step meets it: traces by job id, the retry API (None: answers 403)."""

    def __init__(self, traces: dict[int, str], refuse: bool = False) -> None:
        self.traces = traces
        self.refuse = refuse
        self.retried: list[int] = []

    def trace(self, job_id: int) -> str:
        return self.traces[job_id]

    def retry_job(self, job_id: int) -> dict[str, Any]:
        if self.refuse:
            raise JobNotRetryable(f"GitLab refused to retry job {job_id} (403)")
        self.retried.append(job_id)
        return {"id": 100 + job_id, "name": f"was-{job_id}", "status": "pending"}


def _run_with(gitlab: _GitLab, limit: int) -> Any:
    table = {
        "gitlab_url": "https://gitlab.example.com",
        "token_env": "T",
        "project": "g/p",
        "namespace": "ci",
    }
    run = run_mod._Run(
        profile=profile_from_table("t", table, "runnerconf.toml"),
        run_id="r",
        changes=cast(Any, None),
        gitlab=cast(Any, gitlab),
        kube=cast(Any, None),
    )
    run.retries = retry.Retries(limit=limit, judged=JUDGED)
    return run


def test_the_run_retries_an_infrastructure_end_in_place_and_keeps_a_conformance_one() -> None:
    refused = sample("runner-18.11-timestamps-connection-refused.txt")
    failed = sample("runner-19.3-timestamps-script-failure.txt")
    gitlab = _GitLab({1: refused, 2: failed, 3: refused})
    run = _run_with(gitlab, limit=1)
    run.jobs = {
        1: {"id": 1, "name": "ordering", "status": "failed", "failure_reason": "runner_system_failure"},
        2: {"id": 2, "name": "builds", "status": "failed", "failure_reason": "script_failure"},
        3: {"id": 3, "name": "dns", "status": "running"},  # not finished: not looked at yet
    }
    assert run_mod._retry_infrastructure(run) is True
    assert gitlab.retried == [1]
    assert sorted(run.jobs) == [2, 3, 101]  # the new job stands in the old one's place
    assert run.job_ids() == {1, 2, 3, 101}  # the old attempt's pod is still watched until it goes
    assert [a.job_id for a in run.retries.earlier("ordering")] == [1]
    assert any("retried as #101" in n for n in run.notes)
    run.jobs[101] = {
        "id": 101,
        "name": "ordering",
        "status": "failed",
        "failure_reason": "runner_system_failure",
    }
    gitlab.traces[101] = refused
    assert run_mod._retry_infrastructure(run) is False  # the budget of one retry is spent
    assert gitlab.retried == [1]


def test_a_refused_retry_is_a_note_and_the_end_stands() -> None:
    gitlab = _GitLab({1: sample("runner-18.11-timestamps-connection-refused.txt")}, refuse=True)
    run = _run_with(gitlab, limit=2)
    run.jobs = {
        1: {"id": 1, "name": "ordering", "status": "failed", "failure_reason": "runner_system_failure"}
    }
    assert run_mod._retry_infrastructure(run) is False
    assert sorted(run.jobs) == [1] and run.retries.earlier("ordering") == []
    assert any("was not retried" in n and "403" in n for n in run.notes)


def test_without_retries_the_run_reads_nothing_more() -> None:
    run = _run_with(_GitLab({}), limit=0)  # a trace read would be a KeyError here
    run.jobs = {
        1: {"id": 1, "name": "ordering", "status": "failed", "failure_reason": "runner_system_failure"}
    }
    assert run_mod._retry_infrastructure(run) is False
