"""RC-RES: configured requests/limits per container, KUBERNETES_* overrides and their caps, cgroup limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from pytest_runnerconf import (
    JobEvidence,
    Limits,
    Profile,
    check,
    could_not_test,
    fail,
    held,
    quantity_value,
)

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/resources.yml: variable -> (cap key in expect.override_caps, runner field name).
OVERRIDES = {"KUBERNETES_CPU_LIMIT": "1200m", "KUBERNETES_MEMORY_LIMIT": "768Mi"}
ABOVE_CAP = ("KUBERNETES_MEMORY_LIMIT", "64Gi")
_VARIABLES = {
    "KUBERNETES_CPU_LIMIT": ("cpu_limit", "CPULimit", "cpu"),
    "KUBERNETES_MEMORY_LIMIT": ("memory_limit", "MemoryLimit", "memory"),
}
PAGE = 4096
# cgroup v1 "no limit" is a page-aligned huge number; anything above 2**60 means unlimited.
UNLIMITED = 2**60
SETTINGS = "cpu_limit/cpu_request/memory_limit/memory_request (helper_* and service_* for those containers)"


@dataclass(frozen=True)
class Outcome:
    """What the runner should do with one override variable, given the profile's caps."""

    kind: str  # applied | ignored | refused
    value: str | None  # the value the spec should then show (None: the config default or no pod)
    cap: str | None

    def describe(self, variable: str, requested: str) -> str:
        if self.kind == "applied":
            return f"{variable}={requested} applied (cap {self.cap})"
        if self.kind == "refused":
            return f"{variable}={requested} refused (above cap {self.cap})"
        return f"{variable}={requested} ignored (no cap configured in expect.override_caps)"


def override_outcome(variable: str, requested: str, profile: Profile) -> Outcome:
    cap_key = _VARIABLES[variable][0]
    cap = profile.expect.override_caps.get(cap_key)
    if cap is None:
        return Outcome("ignored", None, None)
    if quantity_value(requested) > quantity_value(cap):
        return Outcome("refused", None, cap)
    return Outcome("applied", requested, cap)


def _same(a: Any, b: Any) -> bool:
    try:
        return quantity_value(str(a)) == quantity_value(str(b))
    except ValueError:
        return bool(a == b)


def resources_problems(resources: dict[str, Any], want: Limits) -> dict[str, str]:
    """Fields of a container's resources that differ from WANT (only the fields WANT sets are judged)."""
    problems: dict[str, str] = {}
    for kind in ("limit", "request"):
        block = resources.get(f"{kind}s") or {}
        for res in ("cpu", "memory"):
            expected = getattr(want, f"{res}_{kind}")
            if expected is None:
                continue
            got = block.get(res)
            if got is None or not _same(got, expected):
                problems[f"{kind}s.{res}"] = f"{got if got is not None else 'unset'} (want {expected})"
    return problems


def _wants(limits: Limits) -> bool:
    return any(
        getattr(limits, f) is not None for f in ("cpu_limit", "cpu_request", "memory_limit", "memory_request")
    )


def _spec(job: JobEvidence) -> dict[str, Any]:
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    return job.pod.spec.get("spec") or {}


def _containers(spec: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c.get("name", ""): c for c in spec.get(key) or []}


def resources_summary(name: str, resources: dict[str, Any]) -> str:
    """`build: requests cpu 100m / memory 128Mi, limits cpu 500m / memory 256Mi` from a container's spec."""
    parts = []
    for kind in ("requests", "limits"):
        block = resources.get(kind) or {}
        shown = " / ".join(f"{res} {block[res]}" for res in ("cpu", "memory") if block.get(res) is not None)
        if shown:
            parts.append(f"{kind} {shown}")
    return f"{name}: {', '.join(parts) or 'no requests or limits'}"


def _judge(check_id: str, job: JobEvidence, targets: dict[str, Limits], absent: str) -> None:
    spec = _spec(job)
    found = {**_containers(spec, "initContainers"), **_containers(spec)}
    wrong: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    for name, want in targets.items():
        if name not in found:
            wrong[name] = absent
            continue
        resources = found[name].get("resources") or {}
        seen[name] = resources
        problems = resources_problems(resources, want)
        if problems:
            wrong[name] = problems
    shown = {n: {k: v for k, v in vars(w).items() if v is not None} for n, w in targets.items()}
    summary = "; ".join(
        resources_summary(name, seen[name]) if name in seen else f"{name}: {absent}" for name in targets
    )
    if wrong:
        fail(check_id, shown, wrong, job=job, summary=summary)
    held(check_id, shown, seen, job=job, summary=summary)


def _skip_unless(profile: Profile, *limits: Limits) -> None:
    if not any(_wants(lim) for lim in limits):
        pytest.skip(f"the profile of cluster {profile.name} expects no requests/limits for these containers")


@check(
    id="RC-RES-001",
    claim="the build container's requests and limits are the configured ones",
    remediation=f"check {SETTINGS} in [runners.kubernetes], LimitRange defaults in the namespace, and "
    "pod_spec patches",
    area="resources",
    probes=("resources",),
)
def test_build_resources(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    _skip_unless(runnerconf_profile, runnerconf_profile.expect.build)
    job = job_evidence("resources")
    _judge("RC-RES-001", job, {"build": runnerconf_profile.expect.build}, "no build container")


@check(
    id="RC-RES-002",
    claim="the helper and init-permissions containers carry the configured helper_* requests and limits",
    remediation="check helper_cpu_*/helper_memory_* in [runners.kubernetes]; the runner gives "
    "init-permissions the helper's resources",
    area="resources",
    probes=("resources",),
)
def test_helper_resources(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    helper = runnerconf_profile.expect.helper
    _skip_unless(runnerconf_profile, helper)
    job = job_evidence("resources")
    inits = [c for c in _containers(_spec(job), "initContainers") if c == "init-permissions"]
    targets = {"helper": helper, **dict.fromkeys(inits, helper)}
    _judge("RC-RES-002", job, targets, "no such container")


@check(
    id="RC-RES-003",
    claim="service containers carry the configured service_* requests and limits",
    remediation="check service_cpu_*/service_memory_* in [runners.kubernetes] and KUBERNETES_SERVICE_* "
    "variables on the service",
    area="resources",
    probes=("resources",),
)
def test_service_resources(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    service = runnerconf_profile.expect.service
    _skip_unless(runnerconf_profile, service)
    job = job_evidence("resources")
    names = [n for n in _containers(_spec(job)) if n not in ("build", "helper")]
    if not names:
        fail("RC-RES-003", "a service container (the job declares one)", "none in the pod spec", job=job)
    _judge("RC-RES-003", job, dict.fromkeys(names, service), "no such container")


def _overwritten_line(field: str, value: str) -> str:
    return f'"{field}" overwritten with "{value}"'


@check(
    id="RC-RES-004",
    claim="KUBERNETES_CPU_LIMIT/KUBERNETES_MEMORY_LIMIT within their caps are applied to the build container "
    "and logged as overwritten",
    remediation="check cpu_limit_overwrite_max_allowed and memory_limit_overwrite_max_allowed in "
    "[runners.kubernetes]: without a cap the variable is silently ignored",
    area="resources",
    probes=("resources",),
)
def test_overrides_applied(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("resources-override")
    outcomes = {v: override_outcome(v, req, runnerconf_profile) for v, req in OVERRIDES.items()}
    expectation = "; ".join(o.describe(v, OVERRIDES[v]) for v, o in outcomes.items())
    if any(o.kind == "refused" for o in outcomes.values()):
        pytest.skip(
            f"under this profile's caps the override job is refused ({expectation}); RC-RES-005 judges that"
        )
    limits = (_containers(_spec(job)).get("build") or {}).get("resources", {}).get("limits") or {}
    text = job.trace_parsed.text
    wrong: dict[str, str] = {}
    for variable, outcome in outcomes.items():
        _, field, res = _VARIABLES[variable]
        line = _overwritten_line(field, OVERRIDES[variable])
        if outcome.kind == "applied":
            if not _same(limits.get(res), OVERRIDES[variable]):
                wrong[variable] = f"spec limits.{res} = {limits.get(res)}"
            elif line not in text:
                wrong[variable] = f"no log line {line}"
        else:
            default = getattr(runnerconf_profile.expect.build, f"{res}_limit")
            if default is not None and not _same(limits.get(res), default):
                wrong[variable] = f"spec limits.{res} = {limits.get(res)}, want the default {default}"
    if wrong:
        fail("RC-RES-004", expectation, "; ".join(f"{v}: {why}" for v, why in wrong.items()), job=job)
    said = []
    for variable, outcome in outcomes.items():
        res = _VARIABLES[variable][2]
        logged = " and logged as overwritten" if outcome.kind == "applied" else ""
        said.append(
            f"{variable}={OVERRIDES[variable]} {outcome.kind}: build limits.{res} {limits.get(res) or 'unset'}{logged}"
        )
    held(
        "RC-RES-004",
        {v: {"outcome": o.kind, "value": o.value, "cap": o.cap} for v, o in outcomes.items()},
        {
            "build limits": limits,
            "overwritten lines": [
                _overwritten_line(_VARIABLES[v][1], OVERRIDES[v])
                for v in OVERRIDES
                if _overwritten_line(_VARIABLES[v][1], OVERRIDES[v]) in text
            ],
        },
        job=job,
        summary="; ".join(said),
    )


_REFUSAL = re.compile(r'the resource "(\w+)" requested "([^"]+)" is higher than limit allowed "([^"]+)"')


@check(
    id="RC-RES-005",
    claim="a KUBERNETES_MEMORY_LIMIT above its cap is refused: the job fails in Prepare with the runner's "
    "'is higher than limit allowed' message",
    remediation="check memory_limit_overwrite_max_allowed in [runners.kubernetes]",
    area="resources",
    probes=("resources",),
    judges_failures=("resources-above-cap",),
)
def test_override_above_cap_refused(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    variable, requested = ABOVE_CAP
    outcome = override_outcome(variable, requested, runnerconf_profile)
    job = job_evidence("resources-above-cap")
    expectation = outcome.describe(variable, requested)
    field, res = _VARIABLES[variable][1], _VARIABLES[variable][2]
    if outcome.kind != "refused":
        # No cap, or a cap above 64Gi: the job must run with the default limit.
        limits = (_containers(_spec(job)).get("build") or {}).get("resources", {}).get("limits") or {}
        default = getattr(runnerconf_profile.expect.build, f"{res}_limit")
        if default is not None and not _same(limits.get(res), default):
            fail("RC-RES-005", expectation, f"spec limits.{res} = {limits.get(res)}", job=job)
        held(
            "RC-RES-005",
            {"outcome": outcome.kind, "default": default},
            {"job": job.status, "build limits": limits},
            job=job,
            summary=f"{variable}={requested} {outcome.kind} (cap {outcome.cap or 'none'}): job {job.status}, "
            f"build limits.{res} {limits.get(res) or 'unset'}",
        )
        return
    refusals = [m for m in _REFUSAL.finditer(job.trace_parsed.text) if m.group(1) == field]
    cap = outcome.cap or ""
    good = [m for m in refusals if m.group(2) == requested and _same(m.group(3), cap)]
    if job.status != "failed" or not good:
        said = refusals[0].group(0) if refusals else f"final line: {job.trace_parsed.final or 'none'}"
        fail(
            "RC-RES-005",
            f'job failed with: the resource "{field}" requested "{requested}" is higher than limit allowed '
            f'"{cap}"',
            f"job {job.status or 'unknown'}; {said}",
            job=job,
        )
    if job.pod is not None:
        got = (_containers(job.pod.spec.get("spec") or {}).get("build") or {}).get("resources", {})
        fail(
            "RC-RES-005",
            "no pod for a refused job",
            f"pod {job.pod.name} with build resources {got}",
            job=job,
        )
    refusal = good[0]
    held(
        "RC-RES-005",
        {"outcome": "refused", "field": field, "requested": requested, "cap": cap},
        {"job": job.status, "refusal": refusal.group(0), "pod": None},
        job=job,
        summary=f'job {job.status}, no pod: "{refusal.group(1)}" requested "{refusal.group(2)}" is higher than '
        f'limit allowed "{refusal.group(3)}"',
    )


def cgroup_limits(record: dict[str, Any]) -> tuple[int | None, Decimal | None]:
    """(memory bytes, CPU cores) the cgroup enforces; None for unlimited or unreadable."""
    if record.get("cgroup") == "v2":
        mem_text = str(record.get("memory_max") or "").strip()
        quota, _, period = str(record.get("cpu_max") or "").strip().partition(" ")
    else:
        mem_text = str(record.get("memory_limit_in_bytes") or "").strip()
        quota = str(record.get("cpu_cfs_quota_us") or "").strip()
        period = str(record.get("cpu_cfs_period_us") or "").strip()
    memory = int(mem_text) if mem_text.isdigit() and int(mem_text) < UNLIMITED else None
    cpu = None
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        cpu = Decimal(int(quota)) / Decimal(int(period))
    return memory, cpu


def cgroup_problems(record: dict[str, Any], limits: dict[str, Any]) -> dict[str, str]:
    """Where the cgroup differs from the spec's limits (memory to the page, CPU to 1%)."""
    memory, cpu = cgroup_limits(record)
    problems: dict[str, str] = {}
    if limits.get("memory") is not None:
        want = int(quantity_value(str(limits["memory"])))
        if memory is None or abs(memory - want) >= PAGE:
            problems["memory"] = f"cgroup {memory if memory is not None else 'unlimited'} bytes, spec {want}"
    if limits.get("cpu") is not None:
        want_cpu = quantity_value(str(limits["cpu"]))
        if cpu is None or abs(cpu - want_cpu) > want_cpu / 100:
            problems["cpu"] = f"cgroup {cpu if cpu is not None else 'unlimited'} cores, spec {want_cpu}"
    return problems


@check(
    id="RC-RES-006",
    claim="the cgroup inside the build container enforces the memory and CPU limits of its pod spec",
    remediation="the kubelet/container runtime must apply limits: check the node's cgroup driver and "
    "version, the runtime's cgroup settings, and that the pod spec limits are not patched after admission",
    area="resources",
    probes=("resources",),
)
def test_cgroup_enforces_limits(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    judged = 0
    for name in ("resources", "resources-override"):
        job = job_evidence(name)
        limits = (_containers(_spec(job)).get("build") or {}).get("resources", {}).get("limits") or {}
        if not limits:
            continue
        judged += 1
        record = probe_record(job, "resources")
        memory, cpu = cgroup_limits(record)
        measured = []
        if limits.get("memory") is not None:
            shown = "unlimited" if memory is None else f"{memory / 2**20:g} MiB"
            measured.append(f"memory {shown} (spec {limits['memory']})")
        if limits.get("cpu") is not None:
            shown = "unlimited" if cpu is None else format(cpu.normalize(), "f")
            measured.append(f"cpu {shown} cores (spec {limits['cpu']})")
        problems = cgroup_problems(record, limits)
        if problems:
            fail(
                "RC-RES-006",
                f"cgroup {record.get('cgroup')} limits = spec limits {limits}",
                problems,
                job=job,
                summary=f"{job.name}: cgroup {record.get('cgroup')} does not enforce the spec: "
                f"{', '.join(measured)}",
            )
        held(
            "RC-RES-006",
            {"spec limits": limits},
            {
                "cgroup": record.get("cgroup"),
                "memory_bytes": memory,
                "cpu_cores": None if cpu is None else str(cpu),
            },
            job=job,
            summary=f"{job.name}: cgroup {record.get('cgroup')} enforces {', '.join(measured)}",
        )
    if not judged:
        pytest.skip("no build container of the resources jobs has limits in its pod spec; nothing to enforce")
