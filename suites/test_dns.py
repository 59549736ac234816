"""RC-DNS: pod dnsPolicy/dnsConfig, the resolv.conf containers see, and DNS inside Docker-in-Docker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_runnerconf import DnsExpect, JobEvidence, Profile, check, could_not_test, fail, held

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/dns.yml: the --dns the dns-dind-flag job passes to dockerd.
DIND_FLAG_DNS = "10.0.0.2"
CONFIG_HINT = "dns_policy and [runners.kubernetes.dns_config] (nameservers, searches, options)"
DIND_HINT = (
    "dockerd in the DinD service resolves through the pod's resolv.conf: check "
    + CONFIG_HINT
    + ", the service alias in DOCKER_HOST, insecure registries in the service command, and registry mirrors"
)


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    lines: tuple[str, ...] = field(default=(), compare=False)

    def show(self) -> str:
        return (
            f"nameserver {list(self.nameservers)} search {list(self.searches)} options {list(self.options)}"
        )

    def data(self) -> dict[str, list[str]]:
        return {
            "nameservers": list(self.nameservers),
            "searches": list(self.searches),
            "options": list(self.options),
        }

    def brief(self) -> str:
        """`nameserver 10.0.0.2, search a b, options ndots:2` for a report's table cell."""
        parts = [
            f"nameserver {' '.join(self.nameservers) or 'none'}",
            f"search {' '.join(self.searches) or 'none'}",
            f"options {' '.join(self.options) or 'none'}",
        ]
        return ", ".join(parts)


def parse_resolv_conf(lines: list[str] | tuple[str, ...]) -> ResolvConf:
    """resolv.conf as the resolver reads it: the last search/domain line wins, options accumulate."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in lines:
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, values = words[0], words[1:]
        if key == "nameserver" and values:
            nameservers.append(values[0])
        elif key in ("search", "domain"):
            searches = list(values)
        elif key == "options":
            options.extend(values)
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options), tuple(lines))


def _expect_dns(profile: Profile) -> DnsExpect:
    if profile.expect.dns is None:
        pytest.skip(f"the profile of cluster {profile.name} sets no expect.dns; nothing to compare with")
    return profile.expect.dns


def _pod_spec(job: JobEvidence) -> dict[str, Any]:
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    return job.pod.spec.get("spec") or {}


def expected_dns_config(dns: DnsExpect) -> dict[str, Any] | None:
    """spec.dnsConfig as the runner writes it; None when the config sets no part of it."""
    out: dict[str, Any] = {}
    if dns.nameservers:
        out["nameservers"] = list(dns.nameservers)
    if dns.searches:
        out["searches"] = list(dns.searches)
    if dns.options:
        out["options"] = [{"name": n} if v is None else {"name": n, "value": v} for n, v in dns.options]
    return out or None


def _normal_config(config: Any) -> dict[str, Any] | None:
    if not isinstance(config, dict) or not any(config.get(k) for k in ("nameservers", "searches", "options")):
        return None
    options = [
        {"name": o.get("name")}
        if o.get("value") in (None, "")
        else {"name": o.get("name"), "value": o["value"]}
        for o in config.get("options") or []
    ]
    out = {k: list(config[k]) for k in ("nameservers", "searches") if config.get(k)}
    if options:
        out["options"] = options
    return out


@check(
    id="RC-DNS-001",
    claim="the job pod's dnsPolicy and dnsConfig are the ones the runner config sets",
    remediation=f"check {CONFIG_HINT} in the runner's config.toml; an unsupported dns_policy value falls "
    "back to the cluster default with a job-log warning",
    area="dns",
    probes=("dns",),
)
def test_pod_dns_spec(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    dns = _expect_dns(runnerconf_profile)
    job = job_evidence("dns")
    spec = _pod_spec(job)
    want = {"dnsPolicy": dns.policy, "dnsConfig": expected_dns_config(dns)}
    got = {"dnsPolicy": spec.get("dnsPolicy"), "dnsConfig": _normal_config(spec.get("dnsConfig"))}
    summary = dns_spec_summary(got["dnsPolicy"], got["dnsConfig"])
    if got != want:
        fail("RC-DNS-001", want, got, job=job, summary=summary)
    held("RC-DNS-001", want, got, job=job, summary=summary)


def dns_spec_summary(policy: Any, config: dict[str, Any] | None) -> str:
    """`dnsPolicy None, nameservers 10.0.0.2, searches ci.svc, options ndots:2` from a pod spec's fields."""
    if not config:
        return f"dnsPolicy {policy}, no dnsConfig"
    options = " ".join(
        o["name"] if o.get("value") is None else f"{o['name']}:{o['value']}"
        for o in config.get("options") or []
    )
    parts = [f"dnsPolicy {policy}"]
    parts += [f"{key} {' '.join(config[key])}" for key in ("nameservers", "searches") if config.get(key)]
    parts += [f"options {options}"] if options else []
    return ", ".join(parts)


def _resolv_matches(conf: ResolvConf, dns: DnsExpect) -> list[str]:
    """What in CONF contradicts DNS; with policy None nameservers and searches are exactly the config's."""
    problems: list[str] = []
    exact = dns.policy == "None"
    if exact and conf.nameservers != dns.nameservers:
        problems.append(f"nameservers {list(conf.nameservers)} != {list(dns.nameservers)}")
    elif not exact and not set(dns.nameservers) <= set(conf.nameservers):
        problems.append(f"nameservers {list(conf.nameservers)} lack {list(dns.nameservers)}")
    if exact and conf.searches != dns.searches:
        problems.append(f"search {list(conf.searches)} != {list(dns.searches)}")
    elif not exact and not set(dns.searches) <= set(conf.searches):
        problems.append(f"search {list(conf.searches)} lacks {list(dns.searches)}")
    missing = [o for o in dns.resolv_options() if o not in conf.options]
    if missing:
        problems.append(f"options {list(conf.options)} lack {missing}")
    return problems


@check(
    id="RC-DNS-002",
    claim="the build container's /etc/resolv.conf carries the configured nameservers, searches and options "
    "(all containers of a pod share it)",
    remediation=f"check {CONFIG_HINT}; with dns_policy none the pod gets exactly dns_config, otherwise the "
    "cluster's resolver plus dns_config",
    area="dns",
    probes=("dns",),
)
def test_build_resolv_conf(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    dns = _expect_dns(runnerconf_profile)
    job = job_evidence("dns")
    conf = parse_resolv_conf(probe_record(job, "dns").get("resolv_conf") or [])
    problems = _resolv_matches(conf, dns)
    if problems:
        want = ResolvConf(dns.nameservers, dns.searches, dns.resolv_options())
        fail(
            "RC-DNS-002",
            want.show(),
            conf.show(),
            job=job,
            detail="; ".join(problems),
            summary=f"build's resolv.conf: {conf.brief()}",
        )
    want = ResolvConf(dns.nameservers, dns.searches, dns.resolv_options())
    held(
        "RC-DNS-002",
        {"policy": dns.policy, **want.data()},
        conf.data(),
        job=job,
        summary=f"build's resolv.conf: {conf.brief()}",
    )


def _dind_record(job: JobEvidence, probe_record: ProbeLookup, check_id: str) -> dict[str, Any]:
    record = probe_record(job, "dns")
    if record.get("dockerd_ready") is not True:
        fail(
            check_id,
            f"dockerd answering at {record.get('docker_host')}",
            f"no answer within the probe's wait: {record.get('docker_error') or 'no error text'}",
            job=job,
            detail="the DinD service is reached through its alias in /etc/hosts (hostAliases)",
        )
    return record


@check(
    id="RC-DNS-003",
    claim="dockerd in a DinD service resolves registry names through the pod DNS and pulls the image",
    remediation=DIND_HINT,
    area="dns",
    probes=("dns",),
)
def test_dind_pulls(job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("dns")
    record = _dind_record(job, probe_record, "RC-DNS-003")
    image = runnerconf_profile.expect.images.dind_pull
    if record.get("pull_rc") != 0:
        fail(
            "RC-DNS-003",
            f"docker pull {image} succeeds",
            f"exit {record.get('pull_rc')}: " + " / ".join(record.get("pull_output") or []),
            job=job,
        )
    held(
        "RC-DNS-003",
        {"image": image, "pull exit": 0},
        {"docker_host": record.get("docker_host"), "pull exit": record.get("pull_rc")},
        job=job,
        summary=f"dockerd at {record.get('docker_host')} pulled {image} (exit 0)",
    )


def _inner_conf(job: JobEvidence, record: dict[str, Any], check_id: str) -> ResolvConf:
    if record.get("pull_rc") != 0 or record.get("inner_rc") != 0:
        fail(
            check_id,
            "a container started by dockerd printing its /etc/resolv.conf",
            f"pull exit {record.get('pull_rc')}, run exit {record.get('inner_rc')}: "
            + " / ".join(record.get("pull_output") or record.get("inner_resolv_conf") or []),
            job=job,
        )
    return parse_resolv_conf(record.get("inner_resolv_conf") or [])


@check(
    id="RC-DNS-004",
    claim="containers started by dockerd (no --dns) inherit the pod's nameservers, searches and options",
    remediation="dockerd copies the pod's resolv.conf into its containers unless it was started with --dns; "
    "check the DinD service command/entrypoint for --dns and a daemon.json 'dns' entry, and loopback "
    "nameservers in dns_config (Docker replaces those with public resolvers)",
    area="dns",
    probes=("dns",),
)
def test_dind_containers_inherit(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("dns")
    record = _dind_record(job, probe_record, "RC-DNS-004")
    pod = parse_resolv_conf(record.get("resolv_conf") or [])
    inner = _inner_conf(job, record, "RC-DNS-004")
    if inner != pod:
        fail(
            "RC-DNS-004",
            f"the pod's: {pod.show()}",
            f"inner container: {inner.show()}",
            job=job,
            summary=f"a container started by dockerd got {inner.brief()}, not the pod's {pod.brief()}",
        )
    held(
        "RC-DNS-004",
        pod.data(),
        inner.data(),
        job=job,
        summary=f"a container started by dockerd got the pod's resolv.conf: {inner.brief()}",
    )


@check(
    id="RC-DNS-005",
    claim="with dockerd --dns=<ip> in the service command, its containers get exactly that nameserver and "
    "keep the pod's searches and options",
    remediation="dockerd's --dns replaces only the nameserver lines; check the DinD service command and "
    "daemon.json for other dns, dns-search or dns-opt settings",
    area="dns",
    probes=("dns",),
)
def test_dind_dns_flag(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("dns-dind-flag")
    record = _dind_record(job, probe_record, "RC-DNS-005")
    pod = parse_resolv_conf(record.get("resolv_conf") or [])
    inner = _inner_conf(job, record, "RC-DNS-005")
    want = ResolvConf((DIND_FLAG_DNS,), pod.searches, pod.options)
    if inner != want:
        fail(
            "RC-DNS-005",
            want.show(),
            inner.show(),
            job=job,
            summary=f"with --dns={DIND_FLAG_DNS} a container started by dockerd got {inner.brief()}",
        )
    held(
        "RC-DNS-005",
        want.data(),
        inner.data(),
        job=job,
        summary=f"with --dns={DIND_FLAG_DNS} a container started by dockerd got {inner.brief()}",
    )
