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


# RC-DND-003..005 over records shaped as fixtures/probes/dind-push.sh prints them. The error lines are written
# after what the docker CLI 20.10 and distribution 2.8 say (distribution's errcode UNAUTHORIZED "authentication
# required"; the CLI's "Error response from daemon: ..." prefix), not copied from a log.
DIGEST = "sha256:" + "ab" * 32
REGISTRY = "registry.runnerconf.test:5001"


def build_job(**record: Any) -> JobEvidence:
    base = {
        "run_id": "20261203-061500-abc123",
        "mode": "build",
        "docker_host": "tcp://docker:2375",
        "dockerd_ready": True,
        "image": f"{REGISTRY}/runnerconf/scratch/dind-build",
        "from": "registry.runnerconf.test:5000/runnerconf/tiny:1",
        "resolve_name": "registry.runnerconf.test",
        "built": True,
        "build_s": "6.2",
        "lookup_exit": "0",
        "run_nameservers": ["nameserver 172.17.0.1"],
        "logged_in": True,
        "pushed": True,
        "digest": DIGEST,
    }
    return JobEvidence(
        name="dind-build", job={"status": "success"}, trace="", records={"dind-push": [{**base, **record}]}
    )


def pull_job(**record: Any) -> JobEvidence:
    base = {
        "run_id": "20261203-061500-abc123",
        "mode": "pull",
        "docker_host": "tcp://docker:2375",
        "dockerd_ready": True,
        "artifact_digest": DIGEST,
        "logged_in": True,
        "pulled": True,
        "pulled_digest": DIGEST,
        "ran": True,
        "built_by": "20261203-061500-abc123",
    }
    return JobEvidence(
        name="dind-pull", job={"status": "success"}, trace="", records={"dind-push": [{**base, **record}]}
    )


def with_registry(registry: bool = True) -> Any:
    from pytest_runnerconf.profile import RegistryExpect

    value = RegistryExpect(REGISTRY, "runnerconf/scratch/dind-build") if registry else None
    return replace(PROFILE, expect=replace(PROFILE.expect, registry=value))


def test_a_build_whose_run_step_resolves_passes_and_says_through_what() -> None:
    dind.test_dind_build_resolves_from_and_run(lookup(build_job()), probe_record)


def test_a_run_step_that_cannot_resolve_fails_naming_its_nameservers() -> None:
    job = build_job(lookup_exit="1", run_nameservers=["nameserver 8.8.8.8"])
    with pytest.raises(ConformanceFailure) as info:
        dind.test_dind_build_resolves_from_and_run(lookup(job), probe_record)
    said = info.value.expectation.summary
    assert said == "the build's RUN step could not resolve registry.runnerconf.test (nameservers: 8.8.8.8)"


def test_a_failed_build_fails_with_its_error_and_no_dockerd_cannot_test() -> None:
    error = [
        "Step 1/3 : FROM registry.runnerconf.test:5000/runnerconf/tiny:1",
        "Get ...: dial tcp: lookup failed",
    ]
    with pytest.raises(ConformanceFailure, match="dial tcp: lookup failed"):
        dind.test_dind_build_resolves_from_and_run(
            lookup(build_job(built=False, build_error=error)), probe_record
        )
    with pytest.raises(CouldNotTest, match="never answered"):
        dind.test_dind_build_resolves_from_and_run(lookup(build_job(dockerd_ready=False)), probe_record)


def test_login_and_push_pass_with_a_digest() -> None:
    dind.test_dind_login_and_push(lookup(build_job()), probe_record, with_registry())


def test_a_refused_login_fails_with_the_registrys_words() -> None:
    said = [f'Error response from daemon: Get "http://{REGISTRY}/v2/": unauthorized: authentication required']
    job = build_job(logged_in=False, login_error=said, pushed=None, digest=None)
    with pytest.raises(ConformanceFailure) as info:
        dind.test_dind_login_and_push(lookup(job), probe_record, with_registry())
    assert info.value.expectation.summary.startswith(f"docker login to {REGISTRY} refused: Error response")


def test_a_push_without_digest_fails() -> None:
    job = build_job(
        pushed=False, digest=None, push_error=["denied: requested access to the resource is denied"]
    )
    with pytest.raises(ConformanceFailure, match="access to the resource is denied"):
        dind.test_dind_login_and_push(lookup(job), probe_record, with_registry())


def test_without_a_registry_push_and_pull_are_skipped_naming_the_setting() -> None:
    with pytest.raises(pytest.skip.Exception, match=r"names no registry to push to \(expect\.registry"):
        dind.test_dind_login_and_push(lookup(build_job()), probe_record, with_registry(False))
    with pytest.raises(pytest.skip.Exception, match=r"expect\.registry"):
        dind.test_dind_pull_by_digest(lookup(build_job(), pull_job()), probe_record, with_registry(False))


def test_pull_by_digest_passes_when_digest_and_content_match() -> None:
    dind.test_dind_pull_by_digest(lookup(build_job(), pull_job()), probe_record, with_registry())


@pytest.mark.parametrize(
    "record",
    [
        {"pulled": False, "pull_error": ["manifest unknown"]},
        {"pulled_digest": "sha256:" + "cd" * 32},
        {"built_by": "another-run"},
    ],
)
def test_a_pull_that_fails_or_brings_another_image_fails(record: dict[str, Any]) -> None:
    with pytest.raises(ConformanceFailure):
        dind.test_dind_pull_by_digest(lookup(build_job(), pull_job(**record)), probe_record, with_registry())


def test_nothing_pushed_or_no_digest_handed_on_cannot_test() -> None:
    with pytest.raises(CouldNotTest, match="nothing was pushed"):
        dind.test_dind_pull_by_digest(
            lookup(build_job(digest=None, pushed=False), pull_job()), probe_record, with_registry()
        )
    with pytest.raises(CouldNotTest, match="artifacts"):
        dind.test_dind_pull_by_digest(
            lookup(build_job(), pull_job(artifact_digest="")), probe_record, with_registry()
        )


def judge_fetch(**record: Any) -> None:
    base = {"layer_bytes": "4195745", "fetched_bytes": "4195745", "fetch_s": "0.4", "inner_mtu": "1500"}
    job = pull_job(**{**base, **record})
    dind.test_dind_container_receives_megabytes(lookup(build_job(), job), probe_record, with_registry())


def test_a_layer_received_in_full_passes() -> None:
    judge_fetch()


def test_a_stalled_transfer_fails_with_what_arrived() -> None:
    # What the dind-mtu-too-big fault made of it on the local cluster: the last segments never came.
    with pytest.raises(ConformanceFailure) as info:
        judge_fetch(fetched_bytes="4194304")
    said = info.value.expectation.summary
    assert said.startswith("a container dockerd started received 4194304 of 4195745 bytes of a layer from")


def test_no_image_run_or_no_manifest_cannot_test() -> None:
    with pytest.raises(CouldNotTest, match="never ran the pushed image"):
        judge_fetch(ran=False)
    with pytest.raises(CouldNotTest, match=r"manifest could not be read.*401"):
        judge_fetch(layer_bytes="", fetch_error=["wget: server returned error: HTTP/1.1 401 Unauthorized"])


def test_a_skipped_pull_job_cannot_test_the_pull_or_the_fetch() -> None:
    # Under an infrastructure fault dind-build may fail and GitLab skips the job that needs it.
    skipped = JobEvidence(name="dind-pull", job={"status": "skipped"}, trace="", records={})
    with pytest.raises(CouldNotTest, match="skipped"):
        dind.test_dind_pull_by_digest(lookup(build_job(), skipped), probe_record, with_registry())
    with pytest.raises(CouldNotTest, match="skipped"):
        dind.test_dind_container_receives_megabytes(
            lookup(build_job(), skipped), probe_record, with_registry()
        )
