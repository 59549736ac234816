"""RC-DND: Docker-in-Docker on the Kubernetes executor, beyond name resolution (RC-DNS-003..005).

The classic DinD-on-Kubernetes failure after DNS is the MTU: dockerd gives its bridge (and so every container
it starts) an MTU of 1500 unless told otherwise, while pod networks with an overlay or a cloud's own network
often carry less (1450, 1440, 1376, 1360 are common). Small requests then work and large TLS transfers inside
`docker build` stall or reset: packets bigger than the pod's interface never make it out. The "dns" probe job
reads the MTU of the pod's default-route interface, dockerd's bridge option and the MTU a container it starts
actually gets. The other classic is TLS: docker:dind turns it on by default, and on Kubernetes the build only
reaches it when the runner config shares the service's client certificates with the build ("dind-tls").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_runnerconf import JobEvidence, Profile, check, could_not_test, fail, held

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]
DOCKERD_DEFAULT_MTU = 1500  # moby's default bridge MTU when dockerd gets no --mtu


def recorded_errors(record: dict[str, Any], key: str, otherwise: str) -> str:
    """The error lines a probe recorded under KEY, joined on one line (OTHERWISE when it recorded none)."""
    return " / ".join(record.get(key) or [otherwise])


def route_mtu(value: Any) -> tuple[str, int] | None:
    """The probe's "eth0 1450" (the default route's interface and its MTU); None when unreadable."""
    parts = str(value or "").split()
    if len(parts) != 2 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


@check(
    id="RC-DND-001",
    claim="containers that dockerd in a DinD service starts get an MTU no larger than the pod's interface",
    remediation="give dockerd the pod network's MTU: add --mtu=<pod MTU> to the DinD service's command "
    '(services: [{name: docker:dind, command: ["--mtu=1450"]}]) and, for networks the job creates (docker '
    "compose), --default-network-opt=bridge=com.docker.network.driver.mtu=<pod MTU>; or raise the CNI's MTU. "
    "A larger inner MTU lets small requests through and makes large TLS transfers in docker build hang",
    area="dind",
    probes=("dns",),
)
def test_dind_mtu_fits_the_pod(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("dns")
    record = probe_record(job, "dns")
    if record.get("dockerd_ready") is not True:
        could_not_test(
            "no-evidence",
            f"dockerd at {record.get('docker_host')} never answered, so its bridge MTU is unknown "
            "(RC-DNS-003 judges the DinD service itself)",
            job=job,
        )
    pod = route_mtu(record.get("pod_mtu"))
    if pod is None:
        could_not_test(
            "no-evidence", f"the probe could not read the pod's interface MTU ({record.get('pod_mtu')!r})"
        )
    iface, pod_mtu = pod
    bridge = str(record.get("bridge_mtu") or "")
    inner = route_mtu(record.get("inner_mtu"))
    # What an inner container really got wins; without one (its image did not pull: RC-DNS-003) dockerd's
    # own statement of its bridge, and without that its default.
    if inner is not None:
        inner_mtu, source = inner[1], f"a container dockerd started ({inner[0]})"
    elif bridge.isdigit():
        inner_mtu, source = int(bridge), "dockerd's bridge network option"
    else:
        inner_mtu, source = DOCKERD_DEFAULT_MTU, "dockerd's default (its bridge states no MTU)"
    observed = {
        "pod interface": iface,
        "pod MTU": pod_mtu,
        "bridge option": bridge or None,
        "inner MTU": inner_mtu,
        "inner MTU from": source,
    }
    want = {"inner MTU at most": pod_mtu}
    summary = f"inner MTU {inner_mtu} ({source}), pod {iface} MTU {pod_mtu}"
    if inner_mtu > pod_mtu:
        fail("RC-DND-001", want, observed, job=job, summary=summary)
    held("RC-DND-001", want, observed, job=job, summary=summary)


@check(
    id="RC-DND-002",
    claim="with TLS on (DOCKER_TLS_CERTDIR=/certs, DOCKER_HOST=tcp://docker:2376) the build finds the DinD "
    "service's client certificates in /certs/client and reaches dockerd over verified TLS",
    remediation="share a certificates volume between the DinD service and the build: "
    '[[runners.kubernetes.volumes.empty_dir]] name = "docker-certs", mount_path = "/certs/client", '
    'medium = "Memory" in config.toml (the runner mounts config volumes in every container of the pod); the '
    "job sets DOCKER_TLS_CERTDIR=/certs, DOCKER_HOST=tcp://docker:2376, DOCKER_TLS_VERIFY=1 and "
    'DOCKER_CERT_PATH=/certs/client. Without TLS, set DOCKER_TLS_CERTDIR="" and use tcp://docker:2375',
    area="dind",
    probes=("dind",),
)
def test_tls_dind_reached_with_shared_certificates(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    offered = runnerconf_profile.expect.dind_tls
    if not offered:
        pytest.skip(
            f"the profile of cluster {runnerconf_profile.name} "
            + (
                "says TLS Docker-in-Docker is not offered"
                if offered is False
                else "does not say whether TLS Docker-in-Docker is offered"
            )
            + " (expect.dind_tls)"
        )
    job = job_evidence("dind-tls")
    record = probe_record(job, "dind")
    found = str(record.get("certs_found") or "").split()
    observed = {
        "certificates in " + str(record.get("cert_path")): found,
        "mounts under /certs": record.get("mounts") or [],
        "docker_host": record.get("docker_host"),
        "dockerd over TLS": record.get("dockerd_ready") is True,
        "server version": record.get("server_version"),
        "client error": record.get("docker_error") or [],
    }
    wanted = ["ca.pem", "cert.pem", "key.pem"]
    want = {"certificates": wanted, "dockerd over TLS": True}
    missing = [f for f in wanted if f not in found]
    if missing or record.get("dockerd_ready") is not True:
        said = (
            f"{', '.join(missing)} missing in {record.get('cert_path')}"
            if missing
            else "the TLS connection failed: " + recorded_errors(record, "docker_error", "no error text")
        )
        fail("RC-DND-002", want, observed, job=job, summary=said)
    held(
        "RC-DND-002",
        want,
        observed,
        job=job,
        summary=f"dockerd {record.get('server_version')} at {record.get('docker_host')} over verified TLS, "
        f"client certificates in {record.get('cert_path')}",
    )


BUILD_REMEDIATION = (
    "dockerd in the DinD service resolves the FROM image's registry through the pod's DNS (dns_policy / "
    "dns_config in config.toml) and reaches it as the registry requires (--insecure-registry=HOST:PORT in the "
    "service's command for plain HTTP, its CA in /etc/docker/certs.d otherwise); RUN steps resolve through the "
    "DNS dockerd hands its containers: the pod's unless the service's command sets --dns, which must then name "
    "a nameserver the pod can reach"
)
PUSH_REMEDIATION = (
    "the job logs in with the CI/CD variables expect.registry names (GitLab's container registry: "
    "CI_REGISTRY_USER and CI_REGISTRY_PASSWORD, given to every job; another registry: project variables, "
    "masked and, for protected refs only, protected); check their values, that the user may push to "
    "expect.registry.repository, and for plain HTTP --insecure-registry in the DinD service's command"
)


def build_record(job_evidence: JobLookup, probe_record: ProbeLookup) -> tuple[JobEvidence, dict[str, Any]]:
    """dind-build's record; could_not_test when its dockerd never answered (RC-DNS-003 judges the service)."""
    __tracebackhide__ = True
    job = job_evidence("dind-build")
    record = probe_record(job, "dind-push")
    if record.get("dockerd_ready") is not True:
        could_not_test(
            "no-evidence",
            f"dockerd at {record.get('docker_host')} in job dind-build never answered, so nothing was built "
            "(RC-DNS-003 judges the DinD service itself)",
            job=job,
        )
    return job, record


def pushing_to(profile: Profile) -> str:
    """The image path the probe pushes to; skips when the profile names no registry."""
    registry = profile.expect.registry
    if registry is None:
        pytest.skip(
            f"the profile of cluster {profile.name} names no registry to push to (expect.registry: address, "
            "repository and the CI/CD variables holding the credentials)"
        )
    return f"{registry.address}/{registry.repository}"


@check(
    id="RC-DND-003",
    claim="docker build in a DinD service pulls its FROM image through the pod's DNS, and its RUN steps "
    "resolve names",
    remediation=BUILD_REMEDIATION,
    area="dind",
    probes=("dind-push",),
)
def test_dind_build_resolves_from_and_run(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job, record = build_record(job_evidence, probe_record)
    name = record.get("resolve_name")
    observed = {
        "FROM": record.get("from"),
        "built": record.get("built") is True,
        "build s": record.get("build_s"),
        "cached rebuild s": record.get("build_cached_s"),
        "RUN step resolved": name,
        "RUN lookup exit": record.get("lookup_exit"),
        "RUN step nameservers": record.get("run_nameservers") or [],
        "build error": record.get("build_error") or [],
    }
    want = {"built": True, "RUN step resolves": name}
    if record.get("built") is not True:
        error = recorded_errors(record, "build_error", "no output")
        fail(
            "RC-DND-003",
            want,
            observed,
            job=job,
            summary=f"docker build FROM {record.get('from')} failed: {error}",
        )
    servers = ", ".join(s.removeprefix("nameserver ") for s in record.get("run_nameservers") or []) or "none"
    if record.get("lookup_exit") != "0":
        fail(
            "RC-DND-003",
            want,
            observed,
            job=job,
            summary=f"the build's RUN step could not resolve {name} (nameservers: {servers})",
        )
    held(
        "RC-DND-003",
        want,
        observed,
        job=job,
        summary=f"built FROM {record.get('from')} in {record.get('build_s')} s (again from dockerd's cache in "
        f"{record.get('build_cached_s')} s); the RUN step resolved {name} through {servers}",
    )


@check(
    id="RC-DND-004",
    claim="a DinD job logs in to the registry with the profile's CI/CD variables and pushes what it built",
    remediation=PUSH_REMEDIATION,
    area="dind",
    probes=("dind-push",),
)
def test_dind_login_and_push(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    image = pushing_to(runnerconf_profile)
    job, record = build_record(job_evidence, probe_record)
    if record.get("built") is not True:
        could_not_test("no-evidence", "nothing to push: the build failed (RC-DND-003 judges it)", job=job)
    observed = {
        "image": image,
        "logged in": record.get("logged_in") is True,
        "pushed": record.get("pushed") is True,
        "digest": record.get("digest"),
        "login error": record.get("login_error") or [],
        "push error": record.get("push_error") or [],
    }
    want = {"logged in": True, "pushed": True, "digest": "sha256:..."}
    if record.get("logged_in") is not True:
        error = recorded_errors(record, "login_error", "no output")
        fail(
            "RC-DND-004",
            want,
            observed,
            job=job,
            summary=f"docker login to {image.split('/')[0]} refused: {error}",
        )
    digest = str(record.get("digest") or "")
    if record.get("pushed") is not True or not digest.startswith("sha256:"):
        error = recorded_errors(record, "push_error", "no digest reported")
        fail("RC-DND-004", want, observed, job=job, summary=f"docker push to {image} failed: {error}")
    held("RC-DND-004", want, observed, job=job, summary=f"logged in and pushed {image}@{digest}")


@check(
    id="RC-DND-005",
    claim="a later job (needs:) pulls the pushed image by its digest and runs it: same digest, same content",
    remediation=PUSH_REMEDIATION
    + "; the later job gets the digest through the first job's artifacts (needs: with artifacts)",
    area="dind",
    probes=("dind-push",),
)
def test_dind_pull_by_digest(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    image = pushing_to(runnerconf_profile)
    build_job, built = build_record(job_evidence, probe_record)
    pushed = str(built.get("digest") or "")
    if not pushed:
        could_not_test(
            "no-evidence",
            "nothing was pushed, so there is nothing to pull (RC-DND-004 judges it)",
            job=build_job,
        )
    job = job_evidence("dind-pull")
    if job.status == "skipped":
        could_not_test(
            "no-evidence", "job dind-pull was skipped after dind-build, so nothing was pulled", job=job
        )
    record = probe_record(job, "dind-push")
    if record.get("dockerd_ready") is not True:
        could_not_test(
            "no-evidence",
            f"dockerd at {record.get('docker_host')} in job dind-pull never answered (RC-DNS-003 judges DinD)",
            job=job,
        )
    if record.get("artifact_digest") != pushed:
        could_not_test(
            "no-evidence",
            f"job dind-pull did not get the pushed digest through dind-build's artifacts "
            f"(got {record.get('artifact_digest')!r}; RC-VOL-003 judges artifacts)",
            job=job,
        )
    observed = {
        "image": f"{image}@{pushed}",
        "pulled": record.get("pulled") is True,
        "pulled digest": record.get("pulled_digest"),
        "ran": record.get("ran") is True,
        "content": record.get("built_by"),
        "pull error": record.get("pull_error") or [],
    }
    run_id = built.get("run_id")
    want = {"pulled digest": pushed, "content": run_id}
    if record.get("pulled") is not True:
        error = recorded_errors(record, "pull_error", "no output")
        fail(
            "RC-DND-005",
            want,
            observed,
            job=job,
            summary=f"docker pull {image}@{pushed[:19]}… failed: {error}",
        )
    if record.get("pulled_digest") != pushed or record.get("built_by") != run_id:
        fail(
            "RC-DND-005",
            want,
            observed,
            job=job,
            summary=f"the pulled image is not the one pushed: digest {record.get('pulled_digest')}, content "
            f"{record.get('built_by')!r}",
        )
    held(
        "RC-DND-005",
        want,
        observed,
        job=job,
        summary=f"job dind-pull pulled {pushed[:19]}… by digest and ran it (built by run {run_id})",
    )


@check(
    id="RC-DND-006",
    claim="a container dockerd starts in a DinD service receives a few MiB from the registry in full (full-size "
    "packets cross the inner bridge and the pod's interface)",
    remediation="a transfer that starts and then stalls is the MTU: dockerd's bridge (1500 unless told) is larger "
    "than what the pod network carries; add --mtu=<pod MTU> to the DinD service's command and "
    "--default-network-opt=bridge=com.docker.network.driver.mtu=<pod MTU> for networks the job creates, or raise "
    "the CNI's MTU (RC-DND-001 compares the two)",
    area="dind",
    probes=("dind-push",),
)
def test_dind_container_receives_megabytes(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    image = pushing_to(runnerconf_profile)
    build_job, built = build_record(job_evidence, probe_record)
    if not built.get("digest"):
        could_not_test(
            "no-evidence",
            "nothing was pushed, so there is nothing to fetch (RC-DND-004 judges it)",
            job=build_job,
        )
    job = job_evidence("dind-pull")
    if job.status == "skipped":
        could_not_test("no-evidence", "job dind-pull was skipped, so no container fetched anything", job=job)
    record = probe_record(job, "dind-push")
    if record.get("ran") is not True:
        could_not_test(
            "no-evidence",
            f"job dind-pull never ran the pushed image {image}, so no container fetched anything "
            "(RC-DND-004 and RC-DND-005 judge the push and the pull)",
            job=job,
        )
    size = str(record.get("layer_bytes") or "")
    if not size.isdigit():
        could_not_test(
            "no-evidence",
            "the image's manifest could not be read from the registry, so no layer was fetched: "
            + recorded_errors(record, "fetch_error", "no error text"),
            job=job,
        )
    got = str(record.get("fetched_bytes") or "0")
    observed = {
        "layer bytes": int(size),
        "received bytes": int(got) if got.isdigit() else got,
        "seconds": record.get("fetch_s"),
        "inner MTU": record.get("inner_mtu"),
        "error": record.get("fetch_error") or [],
    }
    want = {"received bytes": int(size)}
    if got != size:
        fail(
            "RC-DND-006",
            want,
            observed,
            job=job,
            summary=f"a container dockerd started received {got} of {size} bytes of a layer from "
            f"{image.split('/')[0]} (inner MTU {record.get('inner_mtu')})",
        )
    held(
        "RC-DND-006",
        want,
        observed,
        job=job,
        summary=f"a container dockerd started received all {size} bytes of a layer in {record.get('fetch_s')} s "
        f"(inner MTU {record.get('inner_mtu')})",
    )
