"""Offline tests of the aliases, DNS, resources, OOM/CPU and cleanup checks over hand-built evidence."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.plan import load_probe_jobs
from pytest_runnerconf.profile import DnsExpect, Expectations, ImagesExpect, Limits, Profile

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "fixtures" / "probes"


def _load(stem: str) -> ModuleType:
    name = f"runnerconf_catalogue_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "suites" / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


als = _load("test_aliases")
dns = _load("test_dns")
res = _load("test_resources")
oom = _load("test_oom_cpu")
cln = _load("test_cleanup")

Failed = pytest.fail.Exception
Skipped = pytest.skip.Exception
POD = "runner-runnercon-project-1-concurrent-0-abcd1234"
NAMESERVER = "172.17.0.1"
SEARCHES = ("ci.svc.cluster.local", "svc.cluster.local", "cluster.local")
OPTIONS = (("ndots", "2"), ("timeout", "2"))
RESOLV = [f"nameserver {NAMESERVER}", "search " + " ".join(SEARCHES), "options ndots:2 timeout:2"]


def make_profile(**expect: Any) -> Profile:
    base = Expectations(
        cleanup_deadline_s=30.0,
        build=Limits(cpu_limit="1", cpu_request="500m", memory_limit="512Mi", memory_request="256Mi"),
        helper=Limits(cpu_limit="500m", cpu_request="100m", memory_limit="256Mi", memory_request="128Mi"),
        service=Limits(cpu_limit="1", cpu_request="250m", memory_limit="1Gi", memory_request="256Mi"),
        override_caps={"cpu_limit": "1500m", "memory_limit": "1Gi"},
        dns=DnsExpect("None", (NAMESERVER,), SEARCHES, OPTIONS),
        images=ImagesExpect(dind_pull="registry.runnerconf.test:5000/runnerconf/tiny:1"),
    )
    return Profile(
        name="t",
        gitlab_url="http://127.0.0.1",
        token_env="T",
        token_file=None,
        project="g/p",
        runner_tags=(),
        kubeconfig=None,
        kube_context=None,
        namespace="ci",
        expect=replace(base, **expect),
        source="test",
    )


PROFILE = make_profile()


def container(
    name: str, limits: dict[str, str] | None = None, requests: dict[str, str] | None = None
) -> dict:
    resources = {k: v for k, v in (("limits", limits), ("requests", requests)) if v}
    return {"name": name, "resources": resources}


def pod(spec: dict[str, Any], **kw: Any) -> PodObservation:
    return PodObservation(name=kw.pop("name", POD), first_seen=1000.0, spec={"spec": spec}, **kw)


def job(name: str, status: str = "success", **kw: Any) -> JobEvidence:
    return JobEvidence(
        name=name, job={"status": status, "web_url": f"http://gl/{name}"}, trace=kw.pop("trace", ""), **kw
    )


def lookup(*jobs: JobEvidence) -> Callable[[str], JobEvidence]:
    table = {j.name: j for j in jobs}

    def get(name: str) -> JobEvidence:
        if name not in table:
            pytest.fail(f"could not test: the run has no job {name!r}", pytrace=False)
        return table[name]

    return get


def probe_record(j: JobEvidence, probe: str) -> dict[str, Any]:
    records = j.records.get(probe) or []
    if not records:
        pytest.fail(f"job {j.name} printed no RUNNERCONF {probe} record", pytrace=False)
    return records[-1]


def fails(call: Callable[[], Any], *fragments: str) -> str:
    with pytest.raises(Failed) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- aliases

NAMES = ("rc-als-one", "rc-als-two", "busybox")


def aliases_jobs(
    hostnames: list[str] | None = None, record: dict | None = None, invalid: JobEvidence | None = None
) -> Callable[[str], JobEvidence]:
    spec = {
        "hostAliases": [{"ip": "127.0.0.1", "hostnames": list(NAMES if hostnames is None else hostnames)}]
    }
    if record is None:
        record = {"port": 8081, "tool": "nc", "hosts_file": ["127.0.0.1 rc-als-one rc-als-two busybox"]}
        for n in NAMES:
            record |= {f"hosts.{n}": "127.0.0.1 ", f"getent.{n}": "127.0.0.1", f"tcp.{n}": True}
    trace = (
        "ERROR: Job failed (system failure): setting up build pod: provided host alias rc_invalid_alias for "
    )
    trace += "service busybox:1.36 is invalid DNS. a lowercase RFC 1123 subdomain must consist of ..."
    bad = invalid or job("aliases-invalid", "failed", trace=trace)
    return lookup(job("aliases", pod=pod(spec), records={"aliases": [record]}), bad)


@pytest.mark.parametrize(
    ("image", "names"),
    [
        ("busybox:1.36", ["busybox"]),
        ("postgres:14", ["postgres"]),
        ("docker:24-dind", ["docker"]),
        ("tutum/wordpress", ["tutum-wordpress"]),
        ("registry.example.com:5000/group/svc:1", ["registry.example.com-group-svc"]),
        ("alpine@sha256:" + "a" * 64, ["alpine"]),
    ],
)
def test_derived_names_follow_the_runner(image: str, names: list[str]) -> None:
    assert als.derived_names(image) == names


def test_alias_checks_pass_on_good_evidence() -> None:
    get = aliases_jobs()
    als.test_host_aliases_in_spec(get, PROFILE)
    als.test_names_resolve_through_hosts(get, probe_record, PROFILE)
    als.test_connect_through_alias(get, probe_record, PROFILE)
    als.test_invalid_alias_refused(get)


def test_missing_host_aliases_fail_spec_check() -> None:
    fails(lambda: als.test_host_aliases_in_spec(aliases_jobs(hostnames=[]), PROFILE), "RC-ALS-001", "missing")
    get = lookup(job("aliases", pod=pod({})))
    fails(
        lambda: als.test_host_aliases_in_spec(get, PROFILE), "no hostAliases in the pod spec", "pod: " + POD
    )


def test_name_missing_from_hosts_fails_with_the_file() -> None:
    record = {"port": 8081, "tool": "nc", "hosts_file": ["127.0.0.1 localhost"]}
    record |= {f"hosts.{n}": "" for n in NAMES}
    message = fails(
        lambda: als.test_names_resolve_through_hosts(aliases_jobs(record=record), probe_record, PROFILE),
        "RC-ALS-002",
        "/etc/hosts gives nothing",
        "127.0.0.1 localhost",
    )
    assert "rc-als-two" in message


def test_getent_disagreeing_with_hosts_fails() -> None:
    get = aliases_jobs()
    probe_record(get("aliases"), "aliases")["getent.busybox"] = "10.1.2.3"
    fails(lambda: als.test_names_resolve_through_hosts(get, probe_record, PROFILE), "getent gives 10.1.2.3")


def test_refused_connection_fails_naming_the_alias() -> None:
    get = aliases_jobs()
    probe_record(get("aliases"), "aliases")["tcp.rc-als-one"] = False
    fails(lambda: als.test_connect_through_alias(get, probe_record, PROFILE), "RC-ALS-003", "['rc-als-one']")


def test_accepted_invalid_alias_fails() -> None:
    accepted = job("aliases-invalid", "success", trace="Job succeeded")
    fails(
        lambda: als.test_invalid_alias_refused(aliases_jobs(invalid=accepted)),
        "RC-ALS-004",
        "job success",
        "provided host alias rc_invalid_alias",
    )
    fails(lambda: als.test_invalid_alias_refused(aliases_jobs(hostnames=["ok", "bad__name"])), "bad__name")


# ---------------------------------------------------------------- DNS


def dns_spec() -> dict[str, Any]:
    options = [{"name": n, "value": v} for n, v in OPTIONS]
    return {
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": [NAMESERVER], "searches": list(SEARCHES), "options": options},
    }


def dns_record(**over: Any) -> dict[str, Any]:
    record = {
        "resolv_conf": list(RESOLV),
        "docker_host": "tcp://docker:2375",
        "dockerd_ready": True,
        "pull_rc": 0,
        "pull_output": ["Status: Downloaded newer image"],
        "inner_rc": 0,
        "inner_resolv_conf": ["# Generated by Docker Engine.", *RESOLV],
    }
    return record | over


def dns_jobs(spec: dict | None = None, record: dict | None = None, flag: dict | None = None) -> Callable:
    flag_record = flag or dns_record(inner_resolv_conf=["nameserver 10.0.0.2", *RESOLV[1:]])
    return lookup(
        job("dns", pod=pod(spec or dns_spec()), records={"dns": [record or dns_record()]}),
        job("dns-dind-flag", pod=pod(dns_spec()), records={"dns": [flag_record]}),
    )


def test_dns_checks_pass_on_good_evidence() -> None:
    get = dns_jobs()
    dns.test_pod_dns_spec(get, PROFILE)
    dns.test_build_resolv_conf(get, probe_record, PROFILE)
    dns.test_dind_pulls(get, probe_record, PROFILE)
    dns.test_dind_containers_inherit(get, probe_record)
    dns.test_dind_dns_flag(get, probe_record)


def test_resolv_conf_parsing_follows_the_resolver() -> None:
    conf = dns.parse_resolv_conf(
        ["domain a", "search b c  # comment", "nameserver 1.1.1.1", "options x", "options y:1"]
    )
    assert (conf.nameservers, conf.searches, conf.options) == (("1.1.1.1",), ("b", "c"), ("x", "y:1"))


def test_ignored_dns_config_fails_spec_and_resolv_checks() -> None:
    get = dns_jobs(
        spec={"dnsPolicy": "ClusterFirst"}, record=dns_record(resolv_conf=["nameserver 10.255.255.53"])
    )
    fails(lambda: dns.test_pod_dns_spec(get, PROFILE), "RC-DNS-001", '"dnsPolicy": "ClusterFirst"')
    fails(
        lambda: dns.test_build_resolv_conf(get, probe_record, PROFILE),
        "RC-DNS-002",
        "nameservers ['10.255.255.53'] != ['172.17.0.1']",
    )


def test_dns_checks_skip_without_expectation() -> None:
    with pytest.raises(Skipped, match=r"sets no expect\.dns"):
        dns.test_pod_dns_spec(dns_jobs(), make_profile(dns=None))


def test_failed_pull_fails_with_the_pull_output() -> None:
    record = dns_record(
        pull_rc=1, pull_output=["lookup registry.runnerconf.test: no such host"], inner_rc=None
    )
    get = dns_jobs(record=record)
    fails(lambda: dns.test_dind_pulls(get, probe_record, PROFILE), "RC-DNS-003", "no such host", "exit 1")
    fails(lambda: dns.test_dind_containers_inherit(get, probe_record), "RC-DNS-004", "pull exit 1")


def test_unreachable_dockerd_fails() -> None:
    get = dns_jobs(record=dns_record(dockerd_ready=False, docker_error="Cannot connect to the Docker daemon"))
    fails(lambda: dns.test_dind_pulls(get, probe_record, PROFILE), "RC-DNS-003", "Cannot connect")


def test_dind_fallback_resolver_fails_inheritance() -> None:
    inner = [f"nameserver {NAMESERVER}", "nameserver 8.8.8.8", *RESOLV[1:]]
    get = dns_jobs(record=dns_record(inner_resolv_conf=inner))
    fails(lambda: dns.test_dind_containers_inherit(get, probe_record), "RC-DNS-004", "8.8.8.8")


def test_dns_flag_must_replace_only_nameservers() -> None:
    both = dns_record(inner_resolv_conf=["nameserver 10.0.0.2", "nameserver 8.8.8.8", *RESOLV[1:]])
    fails(lambda: dns.test_dind_dns_flag(dns_jobs(flag=both), probe_record), "RC-DNS-005", "'8.8.8.8'")
    lost = dns_record(inner_resolv_conf=["nameserver 10.0.0.2"])
    fails(lambda: dns.test_dind_dns_flag(dns_jobs(flag=lost), probe_record), "search []")


# ---------------------------------------------------------------- resources

BUILD_LIMITS = {"cpu": "1", "memory": "512Mi"}
V1_RECORD = {
    "cgroup": "v1",
    "memory_limit_in_bytes": "536870912",
    "cpu_cfs_quota_us": "100000",
    "cpu_cfs_period_us": "100000",
}


def resources_spec(build_limits: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "initContainers": [
            container(
                "init-permissions", {"cpu": "500m", "memory": "256Mi"}, {"cpu": "100m", "memory": "128Mi"}
            )
        ],
        "containers": [
            container("build", build_limits or BUILD_LIMITS, {"cpu": "500m", "memory": "256Mi"}),
            container("helper", {"cpu": "500m", "memory": "256Mi"}, {"cpu": "100m", "memory": "128Mi"}),
            container("rc-res-svc", {"cpu": "1000m", "memory": "1Gi"}, {"cpu": "250m", "memory": "256Mi"}),
        ],
    }


OVERRIDE_TRACE = "\n".join(
    [
        "Using Kubernetes namespace: ci",
        '"CPULimit" overwritten with "1200m"',
        '"MemoryLimit" overwritten with "768Mi"',
    ]
)
REFUSAL = (
    "ERROR: Job failed (system failure): couldn't prepare overwrites: invalid build limits specified: "
    'the resource "MemoryLimit" requested "64Gi" is higher than limit allowed "1Gi"'
)


def resources_jobs(
    spec: dict | None = None,
    override: JobEvidence | None = None,
    above: JobEvidence | None = None,
    record: dict | None = None,
) -> Callable:
    override_record = {"cgroup": "v2", "memory_max": str(768 * 2**20), "cpu_max": "120000 100000"}
    return lookup(
        job("resources", pod=pod(spec or resources_spec()), records={"resources": [record or V1_RECORD]}),
        override
        or job(
            "resources-override",
            pod=pod(resources_spec({"cpu": "1200m", "memory": "768Mi"})),
            trace=OVERRIDE_TRACE,
            records={"resources": [override_record]},
        ),
        above or job("resources-above-cap", "failed", trace=REFUSAL),
    )


def test_resource_checks_pass_on_good_evidence() -> None:
    get = resources_jobs()
    res.test_build_resources(get, PROFILE)
    res.test_helper_resources(get, PROFILE)
    res.test_service_resources(get, PROFILE)
    res.test_overrides_applied(get, PROFILE)
    res.test_override_above_cap_refused(get, PROFILE)
    res.test_cgroup_enforces_limits(get, probe_record)


def test_wrong_build_limit_fails_naming_the_field() -> None:
    get = resources_jobs(spec=resources_spec({"cpu": "2", "memory": "512Mi"}))
    fails(lambda: res.test_build_resources(get, PROFILE), "RC-RES-001", "limits.cpu", "2 (want 1)")


def test_helper_values_required_on_init_permissions() -> None:
    spec = resources_spec()
    spec["initContainers"] = [container("init-permissions")]
    fails(
        lambda: res.test_helper_resources(resources_jobs(spec=spec), PROFILE),
        "RC-RES-002",
        "init-permissions",
        "unset",
    )


def test_service_limits_checked() -> None:
    spec = resources_spec()
    spec["containers"][2] = container("rc-res-svc", {"cpu": "1", "memory": "512Mi"})
    fails(
        lambda: res.test_service_resources(resources_jobs(spec=spec), PROFILE),
        "RC-RES-003",
        "rc-res-svc",
        "limits.memory",
    )


def test_ignored_overrides_fail() -> None:
    ignored = job("resources-override", pod=pod(resources_spec()), trace="Using Kubernetes namespace: ci")
    message = fails(
        lambda: res.test_overrides_applied(resources_jobs(override=ignored), PROFILE),
        "RC-RES-004",
        "KUBERNETES_CPU_LIMIT=1200m applied (cap 1500m)",
        "spec limits.cpu = 1",
    )
    assert "KUBERNETES_MEMORY_LIMIT" in message
    no_log = job("resources-override", pod=pod(resources_spec({"cpu": "1200m", "memory": "768Mi"})))
    fails(
        lambda: res.test_overrides_applied(resources_jobs(override=no_log), PROFILE),
        'no log line "CPULimit" overwritten',
    )


def test_without_caps_overrides_must_be_ignored() -> None:
    profile = make_profile(override_caps={})
    ignored = job("resources-override", pod=pod(resources_spec()))
    res.test_overrides_applied(resources_jobs(override=ignored), profile)
    fails(
        lambda: res.test_overrides_applied(resources_jobs(), profile),
        "ignored (no cap configured",
        "want the default 1",
    )


def test_above_cap_must_be_refused() -> None:
    ran = job("resources-above-cap", "success", pod=pod(resources_spec()), trace="Job succeeded")
    fails(
        lambda: res.test_override_above_cap_refused(resources_jobs(above=ran), PROFILE),
        "RC-RES-005",
        'requested "64Gi" is higher than limit allowed "1Gi"',
        "job success",
    )
    wrong_cap = job("resources-above-cap", "failed", trace=REFUSAL.replace('"1Gi"', '"2Gi"'))
    fails(
        lambda: res.test_override_above_cap_refused(resources_jobs(above=wrong_cap), PROFILE), 'allowed "2Gi"'
    )


def test_unlimited_cgroup_fails() -> None:
    unlimited = {
        "cgroup": "v1",
        "memory_limit_in_bytes": "9223372036854771712",
        "cpu_cfs_quota_us": "-1",
        "cpu_cfs_period_us": "100000",
    }
    fails(
        lambda: res.test_cgroup_enforces_limits(resources_jobs(record=unlimited), probe_record),
        "RC-RES-006",
        "cgroup unlimited bytes, spec 536870912",
        "cgroup unlimited cores",
    )


def test_cgroup_parsing_v1_and_v2() -> None:
    assert res.cgroup_limits(V1_RECORD) == (536870912, 1)
    assert res.cgroup_limits({"cgroup": "v2", "memory_max": "max", "cpu_max": "50000 100000"}) == (None, 0.5)


# ---------------------------------------------------------------- OOM / CPU

OOM_FAILURE = (
    "ERROR: Job failed (system failure): Error in container build: exit code: 137, reason: 'OOMKilled'"
)


def oom_job(
    reason: str = "OOMKilled", trace: str = OOM_FAILURE, status: str = "failed", survived: bool = False
) -> JobEvidence:
    records = [{"phase": "started", "bytes": 800000000, "memory_limit": "134217728"}]
    if survived:
        records.append({"phase": "survived", "held": 800000000})
    terminated = {"terminated": {"exitCode": 137, "reason": reason}}
    timeline = [{"time": 1.0, "type": "MODIFIED", "containers": {"build": terminated}}]
    return job(
        "oom",
        status,
        trace=trace,
        records={"oom": records},
        pod=pod({}, timeline=timeline),
        finished_at=2000.0,
    )


def test_oom_checks_pass_on_good_evidence() -> None:
    get = lookup(oom_job())
    oom.test_oom_job_fails(get)
    oom.test_oom_in_pod_status(get, PROFILE)
    oom.test_oom_in_job_log(get, PROFILE)


def test_unenforced_memory_limit_fails_oom_kill() -> None:
    get = lookup(oom_job(status="success", trace="Job succeeded", survived=True))
    fails(lambda: oom.test_oom_job_fails(get), "RC-OOM-001", "allocation survived: True", "held 800000000")


def test_unreported_oom_fails_status_and_log() -> None:
    trace = "ERROR: Job failed (system failure): Error in container build: exit code: 137, reason: 'Error'"
    get = lookup(oom_job(reason="Error", trace=trace))
    oom.test_oom_job_fails(get)
    fails(lambda: oom.test_oom_in_pod_status(get, PROFILE), "RC-OOM-002", '["Error/137"]')
    fails(
        lambda: oom.test_oom_in_job_log(get, PROFILE),
        "RC-OOM-003",
        "reason: 'Error'",
        "oom_report = container",
    )


def test_oom_probe_that_never_started_could_not_be_tested_in_the_runners_words() -> None:
    # The OOM checks judge the job's failures, but a job the runner failed before the probe ran is no OOM.
    stuck = (
        "ERROR: Job failed (system failure): prepare environment: waiting for pod running: "
        "timed out waiting for pod to start"
    )
    never = replace(oom_job(trace=stuck), records={})
    with pytest.raises(CouldNotTest, match="timed out waiting for pod to start") as info:
        oom.test_oom_job_fails(lookup(never))
    assert info.value.cause == "pod-not-started"
    failed = replace(oom_job(trace="ERROR: Job failed: exit code 1"), records={})
    with pytest.raises(CouldNotTest) as info:
        oom.test_oom_job_fails(lookup(failed))
    assert info.value.cause == "no-evidence"


def test_process_oom_report_changes_the_assertion() -> None:
    profile = make_profile(oom_report="process")
    get = lookup(oom_job(trace="ERROR: Job failed: command terminated with exit code 137"))
    oom.test_oom_in_job_log(get, profile)
    with pytest.raises(Skipped, match="oom_report = 'process'"):
        oom.test_oom_in_pod_status(get, profile)
    fails(lambda: oom.test_oom_in_job_log(lookup(oom_job()), profile), "oom_report = process")


def cpu_job(
    used_usec: int, throttled: int, limit: str = "500m", status: str = "success", quota: str = "50000"
) -> JobEvidence:
    record = {
        "cgroup": "v1",
        "loops": 3,
        "started_at": 100.0,
        "ended_at": 104.0,
        "usage_usec_start": 1000,
        "usage_usec_end": 1000 + used_usec,
        "nr_throttled_start": 0,
        "nr_throttled_end": throttled,
        "cpu_quota": quota,
        "cpu_period": "100000",
    }
    spec = {"containers": [container("build", {"cpu": limit, "memory": "512Mi"})]}
    return job("cpu", status, records={"cpu": [record]}, pod=pod(spec))


def test_cpu_checks_pass_when_throttled_at_the_limit() -> None:
    get = lookup(cpu_job(2_040_000, 41))
    oom.test_cpu_throttled(get, probe_record)
    oom.test_cpu_rate_near_limit(get, probe_record)


def test_unthrottled_cpu_hog_fails() -> None:
    get = lookup(cpu_job(7_900_000, 0))
    fails(lambda: oom.test_cpu_throttled(get, probe_record), "RC-CPU-001", "nr_throttled +0")
    fails(
        lambda: oom.test_cpu_rate_near_limit(get, probe_record), "RC-CPU-002", "1.98 cores", "<= 0.60 cores"
    )


def test_missing_quota_fails_even_on_a_busy_node() -> None:
    get = lookup(cpu_job(800_000, 0, quota="-1"))
    fails(lambda: oom.test_cpu_throttled(get, probe_record), "RC-CPU-001", "quota -1/100000", "0.20 cores")


def test_busy_node_gives_no_throttling_verdict() -> None:
    # The loops got 0.37 cores of a 1-core limit: the quota never bit, so no throttling was to be expected.
    with pytest.raises(CouldNotTest, match="too busy") as info:
        oom.test_cpu_throttled(lookup(cpu_job(1_480_000, 0, limit="1", quota="100000")), probe_record)
    assert info.value.cause == "inconclusive"


def test_cpu_rate_judged_against_the_spec_limit() -> None:
    # A runner that ignores KUBERNETES_CPU_LIMIT leaves the default 1 CPU: still throttled at its own limit.
    oom.test_cpu_rate_near_limit(lookup(cpu_job(4_000_000, 30, limit="1")), probe_record)


# ---------------------------------------------------------------- cleanup


def cleanup_job(
    name: str, status: str, deleted_at: float | None, finished_at: float = 2000.0, **kw: Any
) -> JobEvidence:
    spec = kw.pop("spec", {})
    return job(
        name,
        status,
        pod=pod(spec, deleted_at=deleted_at, name=kw.pop("pod_name", POD)),
        finished_at=finished_at,
    )


def cleanup_lookup(deleted_at: float | None = 2003.0) -> Callable:
    return lookup(
        cleanup_job("cleanup-ok", "success", deleted_at),
        cleanup_job("cleanup-fail", "failed", deleted_at),
        cleanup_job("cleanup-cancel", "canceled", deleted_at),
        cleanup_job("oom", "success", deleted_at),  # the OOM job's own verdict does not matter here
    )


def test_cleanup_checks_pass_on_prompt_deletion() -> None:
    get = cleanup_lookup()
    cln.test_pod_deleted_after_success(get, PROFILE)
    cln.test_pod_deleted_after_failure(get, PROFILE)
    cln.test_pod_deleted_after_oom(get, PROFILE)
    cln.test_pod_deleted_after_cancel(get, PROFILE)


@pytest.mark.parametrize(
    ("check", "check_id"),
    [
        ("test_pod_deleted_after_success", "RC-CLN-001"),
        ("test_pod_deleted_after_failure", "RC-CLN-002"),
        ("test_pod_deleted_after_oom", "RC-CLN-003"),
        ("test_pod_deleted_after_cancel", "RC-CLN-004"),
    ],
)
def test_leaked_or_slow_pods_fail(check: str, check_id: str) -> None:
    fails(lambda: getattr(cln, check)(cleanup_lookup(None), PROFILE), check_id, "still present", "within 30s")
    fails(lambda: getattr(cln, check)(cleanup_lookup(2095.0), PROFILE), check_id, "deleted after 95.0s")


def test_uncancelled_job_cannot_be_judged() -> None:
    from pytest_runnerconf.outcome import CouldNotTest

    get = lookup(cleanup_job("cleanup-cancel", "failed", 2001.0))
    with pytest.raises(CouldNotTest, match="should have been canceled") as info:
        cln.test_pod_deleted_after_cancel(get, PROFILE)
    assert info.value.cause == "no-evidence"


SECRET = "runner-runnercon-project-1-concurrent-0-zzzz9999"


def secrets_run(secrets: dict[str, Any] | None) -> RunEvidence:
    spec = {"imagePullSecrets": [{"name": "config-secret"}, {"name": SECRET}]}
    run = RunEvidence(jobs={"cleanup-ok": cleanup_job("cleanup-ok", "success", 2002.0, spec=spec)})
    run.secrets = secrets  # None: the run could not list Secrets
    return run


def test_secret_check() -> None:
    assert cln.job_secret_names(secrets_run({}).jobs["cleanup-ok"]) == [SECRET]
    cln.test_secrets_deleted(secrets_run({SECRET: {"deleted_at": 2002.5}}), PROFILE)
    fails(
        lambda: cln.test_secrets_deleted(secrets_run({SECRET: {"deleted_at": None}}), PROFILE),
        "RC-CLN-005",
        "still present",
    )
    fails(lambda: cln.test_secrets_deleted(secrets_run({}), PROFILE), "never observed")
    # Never seen by the Secret watch (it lived while the watch was expired): the last look bounds its deletion.
    between = {"first_seen": None, "deleted_at": 2004.0, "never_listed": True}
    cln.test_secrets_deleted(secrets_run({SECRET: between}), PROFILE)
    late = {"first_seen": None, "deleted_at": 2095.0, "never_listed": True}
    fails(
        lambda: cln.test_secrets_deleted(secrets_run({SECRET: late}), PROFILE), "deleted at most 95.0s after"
    )
    # Secrets that could not be observed (not a refusal: RBAC skips) are no verdict either way.
    with pytest.raises(CouldNotTest, match="could not observe the per-job Secrets") as info:
        cln.test_secrets_deleted(secrets_run(None), PROFILE)
    assert info.value.cause == "api-error"
    # Gone while the Secret watch was expired: the look that missed it bounds the deletion, as a relist does.
    relisted = {"first_seen": 2001.0, "deleted_at": 2095.0, "upper_bound": True}
    fails(
        lambda: cln.test_secrets_deleted(secrets_run({SECRET: relisted}), PROFILE),
        "deleted at most 95.0s after",
    )


def test_no_secret_referenced_skips() -> None:
    run = RunEvidence(jobs={"cleanup-ok": cleanup_job("cleanup-ok", "success", 2002.0)})
    run.secrets = {}
    with pytest.raises(Skipped, match="no job pod referenced a per-job Secret"):
        cln.test_secrets_deleted(run, PROFILE)


def test_stray_and_leftover_pods_fail() -> None:
    cln.test_no_stray_pods(RunEvidence())
    left = RunEvidence(leftover={"pods": [POD], "deadline_s": 30})
    fails(lambda: cln.test_no_stray_pods(left), "RC-CLN-006", POD, "deadline 30s")
    stray = RunEvidence(
        stray_pods=[
            {
                "name": "runner-old",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "job_id": 7,
                "token": "runnercon",
            }
        ],
        runner_tokens=["runnercon"],
    )
    fails(lambda: cln.test_no_stray_pods(stray), "runner-old (created 2026-01-01T00:00:00Z, job 7)")


# ---------------------------------------------------------------- probe templates agree with the checks

VALUES = {
    "run_id": "r1",
    "builds_dir": "/builds",
    "images.build": "alpine:3.20",
    "images.service": "busybox:1.36",
    "images.dind": "docker:27-dind",
    "images.docker_cli": "docker:27-cli",
    "images.dind_pull": "registry.runnerconf.test:5000/runnerconf/tiny:1",
}


def test_templates_carry_the_values_the_checks_assume() -> None:
    jobs: dict[str, Any] = {}
    for probe in ("aliases", "dns", "resources", "oom", "cpu", "cleanup"):
        jobs |= load_probe_jobs(probe, VALUES)
    service = jobs["aliases"]["services"][0]
    assert service["alias"].replace(",", " ").split() == list(als.EXPLICIT)
    assert jobs["aliases-invalid"]["services"][0]["alias"] == als.INVALID
    assert f"--dns={dns.DIND_FLAG_DNS}" in jobs["dns-dind-flag"]["services"][0]["command"]
    assert not any(a.startswith("--dns") for a in jobs["dns"]["services"][0]["command"])
    assert jobs["resources-override"]["variables"] == res.OVERRIDES
    assert jobs["resources-above-cap"]["variables"] == dict([res.ABOVE_CAP])
    assert jobs["cleanup-cancel"]["x-runnerconf"] == {"cancel_on_record": "cleanup-cancel"}
    # Expected failures must not turn the pipeline red.
    for name in ("aliases-invalid", "resources-above-cap", "oom", "cleanup-fail", "cleanup-cancel"):
        assert jobs[name]["allow_failure"] is True, name
    for name, body in jobs.items():
        for line in body["script"]:
            script = PROBES / line.split(".runnerconf/")[1].split()[0]
            assert script.is_file(), f"{name}: {script}"


def test_templates_never_name_outside_resolvers_as_lookups() -> None:
    # 10.0.0.2 may only be written into a resolv.conf by dockerd; 8.8.8.8 must not appear at all.
    text = "".join(
        p.read_text()
        for p in PROBES.glob("*")
        if p.stem.split("-")[0] in ("aliases", "dns", "resources", "oom", "cpu", "cleanup")
    )
    assert "8.8.8.8" not in text
    dns_jobs_ = yaml.safe_load((PROBES / "dns.yml").read_text())
    assert "10.0.0.2" not in (PROBES / "dns.sh").read_text()
    assert dns_jobs_["dns-dind-flag"]["variables"]["RUNNERCONF_DIND_DNS"] == "10.0.0.2"


def test_check_failure_message_names_job_and_pod() -> None:
    get = aliases_jobs(hostnames=["busybox"])
    message = fails(lambda: als.test_host_aliases_in_spec(get, PROFILE))
    assert f"job: aliases http://gl/aliases  pod: {POD}" in message
    assert "fix: the runner adds one hostAliases entry" in message


# ---------------------------------------------------------------- ordering

order = _load("test_ordering")
SECOND = "2026-01-01T10:00:01Z"  # Kubernetes container times have one-second resolution


def _state(kind: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"startedAt": SECOND}
    if kind == "terminated":
        detail |= {"finishedAt": SECOND, "exitCode": 0}
    return {kind: detail} if kind != "waiting" else {"waiting": {"reason": "PodInitializing"}}


def ordering_run(*snapshots: dict[str, str]) -> RunEvidence:
    spec = {"spec": {"initContainers": [{"name": "init-permissions"}],
                     "containers": [{"name": "build"}, {"name": "helper"}]}}  # fmt: skip
    timeline = [{"containers": {n: _state(k) for n, k in snap.items()}} for snap in snapshots]
    pod = PodObservation(POD, 0.0, spec=spec, timeline=timeline)
    job = JobEvidence("ordering", {"status": "success"}, "", pod=pod)
    return RunEvidence(jobs={"ordering": job})


def test_init_order_passes_when_every_snapshot_keeps_the_order() -> None:
    run = ordering_run(
        {"init-permissions": "running", "build": "waiting", "helper": "waiting"},
        {"init-permissions": "terminated", "build": "running", "helper": "running"},
    )
    order.test_init_containers_finish_first(run, lookup(*run.jobs.values()))


def test_init_order_fails_within_one_second_from_the_pod_status() -> None:
    # Same-second times cannot order the containers; the status holding both states can.
    run = ordering_run(
        {"init-permissions": "waiting", "build": "running", "helper": "running"},
        {"init-permissions": "terminated", "build": "running", "helper": "running"},
    )
    fails(
        lambda: order.test_init_containers_finish_first(run, lookup(*run.jobs.values())),
        "RC-ORD-001",
        "init containers not terminated",
        "init-permissions",
    )


def _judged(call: Callable[[], Any]) -> list[Any]:
    """The expectations CALL recorded, whether it passed or failed."""
    from pytest_runnerconf.verdict import RECORDER

    RECORDER.take()
    with contextlib.suppress(Failed):
        call()
    return RECORDER.take()


def test_failures_say_in_a_few_words_what_was_observed() -> None:
    # The same words as on pass, written from the data the check judged, not its raw observed value.
    wrong = resources_jobs(spec=resources_spec({"cpu": "2", "memory": "512Mi"}))
    (failed,) = _judged(lambda: res.test_build_resources(wrong, PROFILE))
    assert failed.held is False
    assert failed.summary == "build: requests cpu 500m / memory 256Mi, limits cpu 2 / memory 512Mi"
    (good,) = _judged(lambda: res.test_build_resources(resources_jobs(), PROFILE))
    assert good.held is True and good.summary.startswith("build: requests cpu 500m / memory 256Mi")
    trace = "ERROR: Job failed (system failure): Error in container build: exit code: 137, reason: 'Error'"
    (status,) = _judged(
        lambda: oom.test_oom_in_pod_status(lookup(oom_job(reason="Error", trace=trace)), PROFILE)
    )
    assert (status.held, status.summary) == (False, "build terminated Error exit code 137, never OOMKilled")
    (killed,) = _judged(lambda: oom.test_oom_in_pod_status(lookup(oom_job()), PROFILE))
    assert killed.summary.startswith("build terminated OOMKilled, exit code 137")
