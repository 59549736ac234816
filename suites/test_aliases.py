"""RC-ALS: service aliases and image-derived names resolve to 127.0.0.1 through the pod's hostAliases."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pytest_runnerconf import JobEvidence, Profile, check, could_not_test, fail, held, require_behaviour

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/aliases.yml.
EXPLICIT = ("rc-als-one", "rc-als-two")
INVALID = "rc_invalid_alias"
LOOPBACK = "127.0.0.1"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
REMEDIATION = (
    "the runner adds one hostAliases entry (127.0.0.1) for all services; check the runner version, that the "
    "API server version is readable (warning 'Host aliases will be disabled'), pod_spec patches that drop "
    "hostAliases, and Windows node selectors"
)


def is_dns1123_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(_SUBDOMAIN.match(name))


def derived_names(image: str) -> list[str]:
    """The names the runner derives from a service image: tag, digest and registry port dropped, then
    '/' -> '__' and '/' -> '-'; only valid DNS-1123 subdomains survive (so '__' forms never do)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, sep, rest = name.partition("/")
    if sep and ":" in first:
        name = f"{first.split(':', 1)[0]}/{rest}"
    out: list[str] = []
    for candidate in (name.replace("/", "__"), name.replace("/", "-")):
        if candidate not in out and is_dns1123_subdomain(candidate):
            out.append(candidate)
    return out


def expected_names(profile: Profile) -> list[str]:
    return [*EXPLICIT, *derived_names(profile.expect.images.service)]


def _pod_or_fail(job: JobEvidence) -> dict[str, Any]:
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    return job.pod.spec.get("spec") or {}


@check(
    id="RC-ALS-001",
    claim="the pod spec's first hostAliases entry maps 127.0.0.1 to every explicit and image-derived "
    "service name",
    remediation=REMEDIATION,
    area="aliases",
    probes=("aliases",),
)
def test_host_aliases_in_spec(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("aliases")
    require_behaviour("services_host_aliases", job)
    spec = _pod_or_fail(job)
    want = expected_names(runnerconf_profile)
    entries = spec.get("hostAliases") or []
    if not entries:
        fail("RC-ALS-001", f"hostAliases[0] = {LOOPBACK} {want}", "no hostAliases in the pod spec", job=job)
    first = entries[0]
    names = list(first.get("hostnames") or [])
    missing = [n for n in want if n not in names]
    if first.get("ip") != LOOPBACK or missing:
        fail(
            "RC-ALS-001",
            f"hostAliases[0] = {LOOPBACK} with {want}",
            f"hostAliases[0] = {first.get('ip')} {names}",
            job=job,
            detail=f"missing: {missing}" if missing else "",
        )
    held(
        "RC-ALS-001",
        {"ip": LOOPBACK, "hostnames": want},
        {"ip": first.get("ip"), "hostnames": names},
        job=job,
        summary=f"hostAliases[0] {first.get('ip')}: {', '.join(names)}",
    )


@check(
    id="RC-ALS-002",
    claim="from the build container every service name resolves to 127.0.0.1 through /etc/hosts",
    remediation=REMEDIATION,
    area="aliases",
    probes=("aliases",),
)
def test_names_resolve_through_hosts(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    job = job_evidence("aliases")
    require_behaviour("services_host_aliases", job)
    record = probe_record(job, "aliases")
    wrong: dict[str, str] = {}
    for name in expected_names(runnerconf_profile):
        hosts = str(record.get(f"hosts.{name}") or "").split()
        # getent is absent from some images; when present it must agree with the file.
        getent = record.get(f"getent.{name}")
        if not hosts or hosts[0] != LOOPBACK:
            wrong[name] = f"/etc/hosts gives {hosts or 'nothing'}"
        elif getent is not None and getent != LOOPBACK:
            wrong[name] = f"/etc/hosts gives {LOOPBACK} but getent gives {getent or 'nothing'}"
    if wrong:
        fail(
            "RC-ALS-002",
            f"each name -> {LOOPBACK} in /etc/hosts",
            wrong,
            job=job,
            detail="/etc/hosts:\n" + "\n".join(record.get("hosts_file") or []),
        )
    names = expected_names(runnerconf_profile)
    agreed = [n for n in names if record.get(f"getent.{n}") is not None]
    held(
        "RC-ALS-002",
        dict.fromkeys(names, LOOPBACK),
        {n: {"hosts": record.get(f"hosts.{n}"), "getent": record.get(f"getent.{n}")} for n in names},
        job=job,
        summary=f"{len(names)} names -> {LOOPBACK} in /etc/hosts ({', '.join(names)}); "
        + (f"getent agrees for {len(agreed)}" if agreed else "no getent in the image"),
    )


@check(
    id="RC-ALS-003",
    claim="a TCP connection to <service name>:<port> from the build reaches the service",
    remediation=REMEDIATION + "; also check that the service listens on all addresses of the pod",
    area="aliases",
    probes=("aliases",),
)
def test_connect_through_alias(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    job = job_evidence("aliases")
    require_behaviour("services_host_aliases", job)
    record = probe_record(job, "aliases")
    if record.get("tool") == "none":
        pytest.skip("the build image has neither python3 nor nc to open a TCP connection; set images.build")
    port = record.get("port")
    refused = [n for n in expected_names(runnerconf_profile) if record.get(f"tcp.{n}") is not True]
    if refused:
        fail(
            "RC-ALS-003",
            f"connections to {', '.join(f'{n}:{port}' for n in expected_names(runnerconf_profile))}",
            f"no connection through {refused}",
            job=job,
            detail=f"/etc/hosts entries: { {n: record.get(f'hosts.{n}') for n in refused} }",
        )
    names = expected_names(runnerconf_profile)
    held(
        "RC-ALS-003",
        [f"{n}:{port}" for n in names],
        {f"{n}:{port}": record.get(f"tcp.{n}") for n in names},
        job=job,
        summary=f"connected to {len(names)} service names on port {port} (tested with {record.get('tool')})",
    )


@check(
    id="RC-ALS-004",
    claim="an invalid alias never reaches the pod: the runner refuses the job, and hostAliases holds only "
    "valid DNS-1123 names",
    remediation="the runner validates every explicit alias (job fails with 'provided host alias ... is "
    "invalid DNS') and drops invalid image-derived names; check the runner version and pod_spec "
    "patches that add hostAliases",
    area="aliases",
    probes=("aliases",),
    judges_failures=("aliases-invalid",),
)
def test_invalid_alias_refused(job_evidence: JobLookup) -> None:
    valid_job = job_evidence("aliases")
    require_behaviour("services_host_aliases", valid_job)
    spec = _pod_or_fail(valid_job)
    bad = [
        n
        for entry in spec.get("hostAliases") or []
        for n in entry.get("hostnames") or []
        if not is_dns1123_subdomain(n)
    ]
    if bad:
        fail("RC-ALS-004", "only DNS-1123 subdomains in hostAliases", f"invalid names {bad}", job=valid_job)
    job = job_evidence("aliases-invalid")
    text = job.trace_parsed.text
    message = f"provided host alias {INVALID} for service"
    if job.status != "failed" or message not in text or "is invalid DNS" not in text:
        fail(
            "RC-ALS-004",
            f"job failed with '{message} ... is invalid DNS'",
            f"job {job.status or 'unknown'}; final line: {job.trace_parsed.final or 'none'}",
            job=job,
        )
    if job.pod is not None:
        carried = [
            n
            for entry in job.pod.spec.get("spec", {}).get("hostAliases") or []
            for n in entry.get("hostnames") or []
        ]
        if INVALID in carried:
            fail("RC-ALS-004", f"no pod with {INVALID} in hostAliases", f"pod hostAliases {carried}", job=job)
    valid = [n for entry in spec.get("hostAliases") or [] for n in entry.get("hostnames") or []]
    pod = "no pod" if job.pod is None else f"its pod {job.pod.name} without it"
    held(
        "RC-ALS-004",
        {"job": "failed", "message": f"{message} ... is invalid DNS", "valid names only": True},
        {
            "job": job.status,
            "final line": job.trace_parsed.final,
            "valid hostAliases": valid,
            "pod": job.pod and job.pod.name,
        },
        job=job,
        summary=f"job {job.name} {job.status}: {message} ... is invalid DNS; {pod}; "
        f"the valid job's hostAliases hold {len(valid)} valid names",
    )
