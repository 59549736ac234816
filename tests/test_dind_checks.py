"""RC-DND-001 over hand-built "dns" records: the MTU a DinD container gets against the pod's interface.

The values mirror what the probe prints (fixtures/probes/dns.sh): "eth0 1450" from /proc/net/route and
/sys/class/net, and dockerd's bridge option com.docker.network.driver.mtu ("1500" from Docker 20.10's
`docker network inspect bridge` on this project's machine).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.verdict import ConformanceFailure
from tests.test_catalogue import _load, lookup, probe_record

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
