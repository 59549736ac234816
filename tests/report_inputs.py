"""Report inputs built by hand: a clean run and a failing one, as report.json documents with their evidence.

The failing run has what an operator must be able to read: an OOM kill with a Warning event, a pod never seen
deleted, a job with no pod, every outcome, structured observed/expected values, and text from the cluster that
looks like markup (it must show as text, never run).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from pytest_runnerconf.evidence import JobEvidence, RunEvidence, save
from tests.test_timeline import T0, TRACES, make_job, make_pod

INJECTED = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
TRACE = (TRACES / "runner-18.11-timestamps-success.txt").read_bytes().decode()


def _job(name: str, status: str, *, deleted: float | None = 9.4, pod: bool = True) -> JobEvidence:
    job = make_job(make_pod(deleted=deleted) if pod else None, trace=TRACE, status=status)
    job.name = name
    job.job = {**job.job, "web_url": f"http://gitlab.example/runnerconf/scratch/-/jobs/{name}"}
    if job.pod is not None:
        job.pod = copy.deepcopy(job.pod)
        job.pod.name = f"runner-x-project-1-concurrent-{len(name)}-{name}"
    return job


def run_of(jobs: list[JobEvidence], directory: Path) -> RunEvidence:
    run = RunEvidence(
        run_id="20261123-000000-abcdef",
        cluster="local",
        gitlab_url="http://gitlab.example",
        project="runnerconf/scratch",
        gitlab_version="18.0.0",
        kubernetes_version="v1.31.0-runnerconf-local",
        pipeline={"web_url": "http://gitlab.example/runnerconf/scratch/-/pipelines/7"},
        plan=[j.name for j in jobs],
        started_at=T0,
        finished_at=T0 + 11.0,
        jobs={j.name: j for j in jobs},
        profile={
            "name": "local",
            "source": "the built-in 'local' cluster",
            "expect": {"cleanup_deadline_s": 60},
        },
    )
    save(run, directory)  # the report links into the bundle's files, so they must exist
    return run


def _doc(run: RunEvidence, results: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    return {
        "version": 1,
        "generated_at": time.time(),
        "cluster": run.cluster,
        "gitlab_url": run.gitlab_url,
        "project": run.project,
        "pipeline_url": run.pipeline["web_url"],
        "runner_versions": run.runner_versions(),
        "wall_s": round(run.wall_s, 1),
        "slowest_job": {"name": "oom", "duration_s": 7.2},
        "jobs": len(run.jobs),
        "evidence": run.evidence_dir,
        "notes": [],
        "counts": counts,
        "results": results,
    }


def result(check_id: str, area: str, outcome: str, job: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "id": check_id,
        "claim": f"claim of {check_id}",
        "area": area,
        "outcome": outcome,
        "message": "",
        "job": job,
        "duration": 0.1,
        "nodeid": f"suites/test_{area}.py::test_{check_id.lower().replace('-', '_')}",
        **fields,
    }


def _expectation(
    check: str, expected: Any, observed: Any, held: bool, job: str, summary: str | None = None
) -> dict[str, Any]:
    """One judged expectation; SUMMARY None leaves the field out, as a report.json from before summaries."""
    found = {
        "check": check,
        "expected": expected,
        "observed": observed,
        "held": held,
        "job": job,
        "job_url": f"http://gitlab.example/runnerconf/scratch/-/jobs/{job}",
        "pod": None,
        "detail": "",
    }
    return found if summary is None else {**found, "summary": summary}


def clean(directory: Path) -> tuple[dict[str, Any], RunEvidence]:
    run = run_of(
        [_job("builds", "success"), _job("dns", "success"), _job("cleanup-ok", "success")], directory
    )
    results = [
        result("RC-BLD-001", "builds", "passed", "builds", observed="builds_dir /builds", expected="/builds"),
        result("RC-DNS-002", "dns", "passed", "dns", observed={"nameservers": ["10.0.0.2"]}),
        # As the checks record a pass now: structured observed and expected, and their short form.
        result(
            "RC-CLN-001",
            "cleanup",
            "passed",
            "cleanup-ok",
            observed={"delay s": 1.3},
            expected={"deleted within s": 60},
            summary="pod deleted 1.3 s after the job ended, deadline 60 s",
            expectations=[
                _expectation(
                    "RC-CLN-001",
                    {"deleted within s": 60},
                    {"delay s": 1.3},
                    True,
                    "cleanup-ok",
                    "pod deleted 1.3 s after the job ended, deadline 60 s",
                )
            ],
        ),
        # As the structured verdicts record a check that judged two jobs: no single observed, two expectations.
        result(
            "RC-RES-002",
            "resources",
            "passed",
            None,
            expectations=[
                _expectation("RC-RES-002", "helper cpu 100m", "helper cpu 100m", True, "builds"),
                _expectation("RC-RES-002", "init cpu 100m", "init cpu 100m", True, "dns"),
            ],
        ),
    ]
    return _doc(run, results), run


def failing(directory: Path) -> tuple[dict[str, Any], RunEvidence]:
    jobs = [
        _job("oom", "failed"),
        _job("cleanup-fail", "failed", deleted=None),
        _job("aliases-invalid", "failed", pod=False),
        _job("dns", "success"),
    ]
    jobs[0].records = {"oom": [{"cgroup": "v2", "killed": False}]}
    jobs[0].pod.events.append(  # type: ignore[union-attr]
        {"type": "Warning", "reason": "BackOff", "message": INJECTED, "lastTimestamp": "2026-11-23T00:00:05Z"}
    )
    run = run_of(jobs, directory)
    results = [
        result(
            "RC-OOM-002",
            "oom_cpu",
            "failed",
            "oom",
            message=f"AssertionError: the build container was not OOMKilled\n{INJECTED}",
            observed="terminated with reason Error, exit code 1",
            expected="reason OOMKilled, exit code 137",
            remediation="check the build container's memory limit",
            job_url="http://gitlab.example/runnerconf/scratch/-/jobs/oom",
            pod="runner-x-project-1-concurrent-3-oom",
            expectations=[
                _expectation("RC-OOM-002", "reason OOMKilled, exit code 137", "Error/1", False, "oom"),
            ],
        ),
        result(
            "RC-CLN-002",
            "cleanup",
            "failed",
            "cleanup-fail",
            observed="still present when the run stopped watching",
            expected="deleted within 60s of the job's end",
        ),
        result(
            "RC-ALS-004",
            "aliases",
            "could_not_test",
            "aliases-invalid",
            cause="runner-system-failure",
            sentence="the runner failed the job before its pod was created",
        ),
        result("RC-DNS-002", "dns", "passed", "dns", observed={"nameservers": ["10.0.0.2"], "ndots": 2}),
        result("RC-DNS-005", "dns", "skipped", None, message="Skipped: no DinD service in this profile"),
        result("RC-LOG-001", "logs", "error", None, message=f"KubeError: watch failed {INJECTED}"),
    ]
    return _doc(run, results), run
