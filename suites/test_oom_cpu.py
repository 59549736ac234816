"""RC-OOM / RC-CPU: over the memory limit the build is OOM-killed and reported; over the CPU limit it is
throttled, not killed."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from pytest_runnerconf import (
    JobEvidence,
    PodObservation,
    Profile,
    check,
    could_not_test,
    fail,
    held,
    job_end,
    quantity_value,
)

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

OOM_EXIT = 137
CONTAINER_FAILURE = "Error in container build: exit code: 137, reason: 'OOMKilled'"
PROCESS_FAILURE = "command terminated with exit code 137"
# Measured usage may exceed the quota a little: CFS accounts per period and the sample edges are coarse.
CPU_TOLERANCE = Decimal("1.2")
LIMIT_HINT = "memory_limit (and KUBERNETES_MEMORY_LIMIT with memory_limit_overwrite_max_allowed)"


def mib(value: Any) -> str:
    """`763 MiB` for a byte count a probe printed (a number, or digits as cgroup files hold them); anything
    else as it came."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return f"{int(value) / 2**20:.0f} MiB" if isinstance(value, int | float) else str(value)


def cores(value: Decimal | None) -> str:
    """`0.5` for Decimal("0.500"), as a person writes a number of cores."""
    return "none" if value is None else format(value.normalize(), "f")


def _records(job: JobEvidence) -> list[dict[str, Any]]:
    return job.records.get("oom") or []


def _started(job: JobEvidence) -> dict[str, Any]:
    started = [r for r in _records(job) if r.get("phase") == "started"]
    if not started:
        end = job_end(job)
        said = f"job {job.name} ({job.status}) printed no RUNNERCONF oom record: the probe never started"
        if end.infrastructure:  # the runner failed the job before the probe ran: its words, not ours
            could_not_test(
                end.cause or "runner-system-failure", f'{said}; the runner said "{end.message}"', job=job
            )
        could_not_test("no-evidence", f"{said} ({job.trace_parsed.final or 'no final line'})", job=job)
    return started[-1]


@check(
    id="RC-OOM-001",
    claim="a build that allocates far beyond its memory limit is killed and the job fails",
    remediation=f"check {LIMIT_HINT} in [runners.kubernetes], and that the node enforces memory cgroups",
    area="oom_cpu",
    probes=("oom",),
    judges_failures=("oom",),
)
def test_oom_job_fails(job_evidence: JobLookup) -> None:
    job = job_evidence("oom")
    started = _started(job)
    survived = [r for r in _records(job) if r.get("phase") == "survived"]
    if survived or job.status != "failed":
        kept = survived[-1].get("held") if survived else None
        fail(
            "RC-OOM-001",
            f"the allocation of {started.get('bytes')} bytes killed, job failed",
            f"job {job.status or 'unknown'}; allocation survived: {bool(survived)} (held {kept} bytes)",
            job=job,
            detail=f"memory limit seen in the cgroup: {started.get('memory_limit')}",
        )
    held(
        "RC-OOM-001",
        {"allocation": "killed", "job": "failed"},
        {
            "allocation bytes": started.get("bytes"),
            "survived": False,
            "job": job.status,
            "cgroup memory limit": started.get("memory_limit"),
        },
        job=job,
        summary=f"the allocation of {mib(started.get('bytes'))} was killed (cgroup limit "
        f"{mib(started.get('memory_limit'))}); job {job.status}",
    )


def terminated_states(pod: PodObservation, container: str) -> list[dict[str, Any]]:
    """Every `terminated` state the watch saw for CONTAINER, oldest first, then the last pod object's."""
    states = [(e.get("containers") or {}).get(container) or {} for e in pod.timeline]
    for cs in (pod.last.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            states.append(cs.get("state") or {})
            states.append(cs.get("lastState") or {})
    return [s["terminated"] for s in states if s.get("terminated")]


@check(
    id="RC-OOM-002",
    claim="the pod status shows the build container terminated with reason OOMKilled, exit code 137",
    remediation="an OOM kill must surface as the container's terminated reason; check the container runtime "
    'and kubelet (memory.oom.group on cgroup v2), or set expect.oom_report = "process" for nodes that '
    "kill only the process",
    area="oom_cpu",
    probes=("oom",),
    judges_failures=("oom",),
)
def test_oom_in_pod_status(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    if runnerconf_profile.expect.oom_report != "container":
        pytest.skip(
            f"expect.oom_report = {runnerconf_profile.expect.oom_report!r}: the node kills only the "
            "process, so the build container keeps running and its status shows no OOMKilled"
        )
    job = job_evidence("oom")
    _started(job)
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name}", job=job)
    seen = terminated_states(job.pod, "build")
    if not any(t.get("reason") == "OOMKilled" and t.get("exitCode") == OOM_EXIT for t in seen):
        observed = [f"{t.get('reason')}/{t.get('exitCode')}" for t in seen] or "build never terminated"
        states = ", ".join(dict.fromkeys(f"{t.get('reason')} exit code {t.get('exitCode')}" for t in seen))
        fail(
            "RC-OOM-002",
            f"build terminated OOMKilled/{OOM_EXIT} (expect.oom_report = container)",
            observed,
            job=job,
            summary=f"build terminated {states}, never OOMKilled" if seen else "build never terminated",
        )
    held(
        "RC-OOM-002",
        {"reason": "OOMKilled", "exitCode": OOM_EXIT},
        [{"reason": t.get("reason"), "exitCode": t.get("exitCode")} for t in seen],
        job=job,
        summary=f"build terminated OOMKilled, exit code {OOM_EXIT} (pod {job.pod.name})",
    )


@check(
    id="RC-OOM-003",
    claim="the job log's failure line names the OOM kill",
    remediation="the runner reports what the pod status says; check that the container runtime reports "
    "OOMKilled, or set expect.oom_report to what the nodes do",
    area="oom_cpu",
    probes=("oom",),
    judges_failures=("oom",),
)
def test_oom_in_job_log(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("oom")
    _started(job)
    mode = runnerconf_profile.expect.oom_report
    want = CONTAINER_FAILURE if mode == "container" else PROCESS_FAILURE
    failure = job.trace_parsed.failure or ""
    if want not in failure:
        fail(
            "RC-OOM-003",
            f"final line 'ERROR: Job failed...: {want}' (expect.oom_report = {mode})",
            job.trace_parsed.final or "no final line",
            job=job,
        )
    held(
        "RC-OOM-003",
        {"failure line contains": want, "oom_report": mode},
        failure,
        job=job,
        summary=f"job log: {failure}",
    )


def _cpu_record(job: JobEvidence, probe_record: ProbeLookup) -> dict[str, Any]:
    record = probe_record(job, "cpu")
    needed = ("usage_usec_start", "usage_usec_end", "nr_throttled_start", "nr_throttled_end", "started_at")
    missing = [k for k in needed if not isinstance(record.get(k), int | float)]
    if missing or not isinstance(record.get("ended_at"), int | float):
        could_not_test(
            "no-evidence",
            f"the cpu probe of job {job.name} could not read {missing or ['ended_at']} "
            f"from its cgroup ({record.get('cgroup')})",
            job=job,
        )
    return record


def spec_cpu_limit(job: JobEvidence) -> Decimal | None:
    if job.pod is None:
        return None
    for c in (job.pod.spec.get("spec") or {}).get("containers") or []:
        if c.get("name") == "build":
            value = ((c.get("resources") or {}).get("limits") or {}).get("cpu")
            return quantity_value(str(value)) if value is not None else None
    return None


def usage_rate(record: dict[str, Any]) -> Decimal:
    """CPU cores used on average while the loops ran."""
    used = Decimal(str(record["usage_usec_end"])) - Decimal(str(record["usage_usec_start"]))
    wall = Decimal(str(record["ended_at"])) - Decimal(str(record["started_at"]))
    return used / Decimal(1_000_000) / wall if wall > 0 else Decimal(0)


def quota_cores(record: dict[str, Any]) -> Decimal | None:
    """The CFS quota the probe read, in cores; None when there is none (-1 on cgroup v1, "max" on v2)."""
    quota, period = str(record.get("cpu_quota") or ""), str(record.get("cpu_period") or "")
    if not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return Decimal(quota) / Decimal(period)


@check(
    id="RC-CPU-001",
    claim="a build busy beyond its CPU limit runs under a CFS quota and is throttled (nr_throttled grows), "
    "not killed",
    remediation="check cpu_limit (and KUBERNETES_CPU_LIMIT with cpu_limit_overwrite_max_allowed) and that "
    "the node enforces CFS quotas (kubelet cpuCFSQuota)",
    area="oom_cpu",
    probes=("cpu",),
)
def test_cpu_throttled(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("cpu")
    record = _cpu_record(job, probe_record)
    limit = spec_cpu_limit(job)
    quota = quota_cores(record)
    throttled = record["nr_throttled_end"] - record["nr_throttled_start"]
    rate = usage_rate(record)
    observed = (
        f"job {job.status or 'unknown'}; quota {record.get('cpu_quota')}/{record.get('cpu_period')}; "
        f"nr_throttled +{throttled}; {record.get('loops')} busy loops used {rate:.2f} cores"
    )
    if job.status != "success" or (limit is not None and quota is None):
        fail(
            "RC-CPU-001", f"job succeeded under a CFS quota of {limit} cores (spec limit)", observed, job=job
        )
    if throttled > 0:
        held(
            "RC-CPU-001",
            {"job": "success", "quota cores": None if limit is None else str(limit), "nr_throttled": "> 0"},
            {
                "job": job.status,
                "cpu_quota": record.get("cpu_quota"),
                "cpu_period": record.get("cpu_period"),
                "nr_throttled": throttled,
                "cores used": round(float(rate), 3),
            },
            job=job,
            summary=f"throttled, not killed: nr_throttled +{throttled} under quota "
            f"{record.get('cpu_quota')}/{record.get('cpu_period')} (limit {cores(limit)} cores), "
            f"{rate:.2f} cores used, job {job.status}",
        )
        return
    if limit is None:
        pytest.skip(
            f"the build container of job {job.name} has no CPU limit in its pod spec; nothing to throttle"
        )
    if rate < limit * Decimal("0.9"):
        # Other load kept the loops below their limit, so the quota never bit: no verdict either way.
        could_not_test(
            "inconclusive", f"the node was too busy for the loops to reach their limit ({observed})", job=job
        )
    fail(
        "RC-CPU-001", f"nr_throttled growing while the loops use their {limit}-core limit", observed, job=job
    )


@check(
    id="RC-CPU-002",
    claim="a build busy beyond its CPU limit uses no more than about its limit "
    "(<= 1.2 x the spec's CPU limit)",
    remediation="check cpu_limit and that the node enforces CFS quotas (kubelet cpuCFSQuota, static CPU "
    "manager policies)",
    area="oom_cpu",
    probes=("cpu",),
)
def test_cpu_rate_near_limit(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("cpu")
    record = _cpu_record(job, probe_record)
    limit = spec_cpu_limit(job)
    if limit is None:
        pytest.skip(
            f"the build container of job {job.name} has no CPU limit in its pod spec; nothing to hold"
        )
    rate = usage_rate(record)
    if rate > limit * CPU_TOLERANCE:
        fail(
            "RC-CPU-002",
            f"<= {limit * CPU_TOLERANCE:.2f} cores (spec limit {limit})",
            f"{rate:.2f} cores over {float(record['ended_at']) - float(record['started_at']):.1f}s",
            job=job,
            detail=f"cgroup quota {record.get('cpu_quota')}/{record.get('cpu_period')}",
        )
    seconds = float(record["ended_at"]) - float(record["started_at"])
    held(
        "RC-CPU-002",
        {"at most cores": str(limit * CPU_TOLERANCE), "spec limit": str(limit)},
        {"cores used": round(float(rate), 3), "over s": round(seconds, 1)},
        job=job,
        summary=f"{rate:.2f} cores used over {seconds:.1f} s, at most {limit * CPU_TOLERANCE:.2f} "
        f"({CPU_TOLERANCE} x the {cores(limit)}-core limit)",
    )
