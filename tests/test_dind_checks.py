"""RC-DND over hand-built records: the MTU a DinD container gets against the pod's interface ("dns"), and
TLS DinD through the shared certificates volume ("dind").

The values mirror what the probe prints (fixtures/probes/dns.sh): "eth0 1450" from /proc/net/route and
/sys/class/net, and dockerd's bridge option com.docker.network.driver.mtu ("1500" from Docker 20.10's
`docker network inspect bridge` on this project's machine).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.verdict import ConformanceFailure
from tests.test_catalogue import PROFILE, _load, lookup, probe_record

dind = _load("test_dind")


def dns_job(**record: Any) -> JobEvidence:
    base = {"dockerd_ready": True, "docker_host": "tcp://docker:2375", "pod_mtu": "eth0 1500"}
    return JobEvidence(name="dns", job={"status": "success"}, trace="", records={"dns": [{**base, **record}]})


def judge(job: JobEvidence) -> None:
    dind.test_dind_mtu_fits_the_pod(lookup(job), probe_record)


def test_equal_or_smaller_inner_mtu_passes() -> None:
    judge(dns_job(bridge_mtu="1500", inner_mtu="eth0 1500"))
    judge(dns_job(pod_mtu="eth0 1450", bridge_mtu="1400", inner_mtu="eth0 1400"))


@pytest.mark.parametrize(
    ("record", "source"),
    [
        ({"inner_mtu": "eth0 1500", "bridge_mtu": "1400"}, "a container dockerd started"),  # measured wins
        ({"bridge_mtu": "1500"}, "dockerd's bridge network option"),  # the image did not pull
        ({}, "dockerd's default"),
    ],
)
def test_an_inner_mtu_above_the_pods_fails(record: dict[str, Any], source: str) -> None:
    with pytest.raises(ConformanceFailure) as info:
        judge(dns_job(pod_mtu="eth0 1400", **record))
    text = str(info.value)
    assert '"inner MTU at most": 1400' in text and '"inner MTU": 1500' in text and source in text


def test_without_dockerd_or_the_pods_mtu_it_cannot_tell() -> None:
    with pytest.raises(CouldNotTest, match="never answered"):
        judge(dns_job(dockerd_ready=False))
    with pytest.raises(CouldNotTest, match="interface MTU"):
        judge(dns_job(pod_mtu=""))


def test_route_mtu_reads_the_probes_line() -> None:
    assert dind.route_mtu("eth0 1450") == ("eth0", 1450)
    assert dind.route_mtu("eth0 ") is None and dind.route_mtu(None) is None


def tls_job(**record: Any) -> JobEvidence:
    base = {
        "docker_host": "tcp://docker:2376",
        "cert_path": "/certs/client",
        "certs_found": "ca.pem cert.pem key.pem",
        "mounts": ["/certs/client tmpfs"],
        "dockerd_ready": True,
        "server_version": "20.10.24+dfsg1",
    }
    return JobEvidence(
        name="dind-tls", job={"status": "success"}, trace="", records={"dind": [{**base, **record}]}
    )


def judge_tls(job: JobEvidence, offered: bool | None = True) -> None:
    profile = replace(PROFILE, expect=replace(PROFILE.expect, dind_tls=offered))
    dind.test_tls_dind_reached_with_shared_certificates(lookup(job), probe_record, profile)


def test_tls_dind_with_the_shared_certificates_passes() -> None:
    judge_tls(tls_job())


def test_certificates_missing_in_the_build_fail_naming_them() -> None:
    # What the build sees when the volume reaches the service only: nothing under /certs, and the client's
    # own complaint (docker CLI 20.10: "could not read CA certificate").
    job = tls_job(
        certs_found="",
        mounts=[],
        dockerd_ready=False,
        docker_error=[
            'could not read CA certificate "/certs/client/ca.pem": open /certs/client/ca.pem: no such file'
        ],
    )
    with pytest.raises(ConformanceFailure) as info:
        judge_tls(job)
    assert '"certificates in /certs/client": []' in str(info.value) and "could not read CA" in str(info.value)


def test_a_failed_tls_connection_with_certificates_fails() -> None:
    with pytest.raises(ConformanceFailure, match='"dockerd over TLS": false'):
        judge_tls(
            tls_job(dockerd_ready=False, docker_error=["x509: certificate signed by unknown authority"])
        )


@pytest.mark.parametrize(("offered", "reason"), [(None, "does not say whether"), (False, "is not offered")])
def test_tls_not_offered_or_not_stated_is_a_skip_naming_the_setting(
    offered: bool | None, reason: str
) -> None:
    with pytest.raises(pytest.skip.Exception, match=rf"{reason} .*\(expect\.dind_tls\)"):
        judge_tls(tls_job(), offered)
