"""The local cluster on real containers, driven only through python-gitlab and the kubernetes client."""

from __future__ import annotations

import copy
import io
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gitlab
import pytest

from tests.local.pipelines import Cluster, JobRun, lines_between

TAG = "runnerconf-local"

JOBS = f"""
stages: [test]
default:
  tags: [{TAG}]

shape:
  image: alpine:3.20
  services:
    - name: busybox:1.36
      alias: sidecar,side-car
      command: ["sh", "-c", "trap 'exit 0' TERM; nc -lk -p 7000 -e true & wait"]
    - name: busybox:1.36
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
  script:
    - echo "HOSTS>"; cat /etc/hosts; echo "<HOSTS"
    - echo "RESOLV>"; cat /etc/resolv.conf; echo "<RESOLV"
    - nc -z -w 2 sidecar 7000 && echo "ALIAS-CONNECT-OK"
    - echo "PWD=$(pwd) HEAD=$(cat .git/HEAD)"
    - echo "MEM=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) QUOTA=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
    - echo built > artifact.txt
  artifacts:
    paths: [artifact.txt]

dind:
  image: docker:27-cli
  variables:
    DOCKER_HOST: tcp://docker:2375
    DOCKER_TLS_CERTDIR: ""
  services:
    - name: docker:27-dind
      alias: docker
      command: ["--tls=false", "--insecure-registry=registry.runnerconf.test:5000"]
  script:
    - i=0; until docker info >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done
    - docker pull -q registry.runnerconf.test:5000/runnerconf/tiny:1
    - echo "INNER>"; docker run --rm registry.runnerconf.test:5000/runnerconf/tiny:1 cat /etc/resolv.conf; echo "<INNER"

oom:
  image: alpine:3.20
  variables:
    KUBERNETES_MEMORY_LIMIT: 128Mi
    KUBERNETES_MEMORY_REQUEST: 128Mi
  script:
    - x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo "survived ${{#x}}"

cpu:
  image: alpine:3.20
  variables:
    KUBERNETES_CPU_LIMIT: 500m
  script:
    - s=/sys/fs/cgroup/cpu/cpu.stat; u=/sys/fs/cgroup/cpuacct/cpuacct.usage
    # Windows of 3 s until the loops get their share: the oom job's `tr` competes for the node's 2 CPUs.
    - for i in 1 2 3 4 5; do
        a=$(cat $u); t0=$(date +%s%N);
        (timeout 3 sh -c 'while :; do :; done' & timeout 3 sh -c 'while :; do :; done' & wait) || true;
        b=$(cat $u); t1=$(date +%s%N); rate=$(( (b - a) * 1000 / (t1 - t0) ));
        [ "$rate" -gt 300 ] && break;
      done; echo "RATE=$rate"; grep nr_throttled $s

fail:
  image: alpine:3.20
  script:
    - echo about to fail
    - exit 3

badimage:
  image: registry.runnerconf.test:5000/nosuch/image:1
  script:
    - echo never

overcap:
  image: alpine:3.20
  variables:
    KUBERNETES_CPU_LIMIT: "3"
  script:
    - echo never
"""


def between(text: str, start: str, end: str) -> str:
    return "\n".join(lines_between(text, start, end))


@pytest.fixture(scope="module")
def cluster(local_cluster: Any) -> Cluster:
    return Cluster(local_cluster)


@pytest.fixture(scope="module")
def runs(cluster: Cluster) -> dict[str, JobRun]:
    return cluster.run(JOBS)


def test_jobs_of_one_pipeline_run_concurrently(runs: dict[str, JobRun]) -> None:
    starts = sorted(r.job.started_at for r in runs.values() if r.job.started_at)
    ends = sorted(r.job.finished_at for r in runs.values() if r.job.finished_at)
    assert len(starts) >= 4
    # With concurrent = 4 the first four jobs start before the first one finishes.
    assert starts[3] < ends[0]


def test_pod_spec_shape(runs: dict[str, JobRun], local_cluster: Any) -> None:
    run = runs["shape"]
    pod = run.pod.first
    meta, spec = pod["metadata"], pod["spec"]
    assert re.fullmatch(r"runner-[a-z0-9]+-project-\d+-concurrent-\d+-[a-z0-9]{8}", meta["name"])
    assert len(meta["name"]) <= 63
    assert meta["annotations"]["job.runner.gitlab.com/id"] == str(run.job.id)
    assert meta["annotations"]["job.runner.gitlab.com/sha"] == run.job.pipeline["sha"]
    assert meta["labels"]["manager.runner.gitlab.com/name"] == "runnerconf-local"
    assert [c["name"] for c in spec["initContainers"]] == ["init-permissions"]
    assert [c["name"] for c in spec["containers"]] == ["build", "helper", "sidecar", "svc-0"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 3601
    # config.toml's volumes first (the DinD certificates' empty_dir), then the runner's own
    assert [v["name"] for v in spec["volumes"]] == ["docker-certs", "repo", "scripts", "logs"]
    mounts = {c["name"]: c["volumeMounts"] for c in spec["initContainers"] + spec["containers"]}
    assert len({str(m) for m in mounts.values()}) == 1, "every container gets the identical mount list"
    assert {"name": "repo", "mountPath": "/builds"} in mounts["build"]
    assert spec["hostAliases"][0]["ip"] == "127.0.0.1"
    assert {"sidecar", "side-car", "busybox"} <= set(spec["hostAliases"][0]["hostnames"])
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"]["nameservers"] == [local_cluster.local_dns]
    build = spec["containers"][0]
    assert build["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}


def test_watch_sees_pod_lifecycle_in_order(runs: dict[str, JobRun]) -> None:
    pod = runs["shape"].pod
    assert pod.types[0] == "ADDED" and pod.types[-1] == "DELETED"
    assert set(pod.types[1:-1]) == {"MODIFIED"}
    phases = [obj.get("status", {}).get("phase") for _, _, obj in pod.events]
    assert "Running" in phases
    assert phases.index("Running") < len(phases) - 1
    init = pod.final_state("init-permissions")["terminated"]
    build_started = pod.statuses("build")
    running = next(s["state"]["running"]["startedAt"] for s in build_started if "running" in s["state"])
    assert init["reason"] == "Completed" and init["finishedAt"] <= running
    assert pod.first["metadata"].get("deletionTimestamp") is None
    assert any(obj["metadata"].get("deletionTimestamp") for _, _, obj in pod.events)


def test_trace_sections_in_real_order(runs: dict[str, JobRun]) -> None:
    trace = runs["shape"].trace
    assert trace.runner_version == "18.11.4"
    assert "local emulation" in runs["shape"].raw.splitlines()[0]
    names = [s.name for s in trace.sections]
    assert names == [
        "prepare_executor",
        "prepare_script",
        "get_sources",
        "step_script",
        "upload_artifacts_on_success",
        "cleanup_file_variables",
    ]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z 00O ", runs["shape"].raw)
    assert trace.final == "Job succeeded"


def test_alias_dns_and_clone_seen_inside_the_job(runs: dict[str, JobRun], local_cluster: Any) -> None:
    text = runs["shape"].trace.text
    hosts = between(text, "HOSTS>", "<HOSTS")
    aliases = [line.split() for line in hosts.splitlines() if line.startswith("127.0.0.1")]
    names = {n for parts in aliases for n in parts[1:]}
    assert {"sidecar", "side-car", "busybox"} <= names
    resolv = between(text, "RESOLV>", "<RESOLV")
    assert f"nameserver {local_cluster.local_dns}" in resolv
    assert "search ci.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "ndots:2" in resolv
    assert "ALIAS-CONNECT-OK" in text
    sha = runs["shape"].job.pipeline["sha"]
    assert f"PWD=/builds/runnerconf/scratch HEAD={sha}" in text


def test_limits_enforced_by_cgroups_and_artifact_uploaded(runs: dict[str, JobRun]) -> None:
    text = runs["shape"].trace.text
    assert f"MEM={512 * 1024 * 1024} QUOTA=100000" in text
    assert runs["shape"].job.artifacts_file["filename"] == "artifacts.zip"
    with zipfile.ZipFile(io.BytesIO(runs["shape"].job.artifacts())) as zf:
        assert zf.read("artifact.txt") == b"built\n"


def test_dind_resolves_and_pulls_through_pod_dns(runs: dict[str, JobRun], local_cluster: Any) -> None:
    run = runs["dind"]
    assert run.job.status == "success", run.trace.text[-2000:]
    inner = between(run.trace.text, "INNER>", "<INNER")
    assert f"nameserver {local_cluster.local_dns}" in inner
    assert "pseudo-privileged" in run.raw or "privileged" in run.raw


def test_oom_kill_reported_as_the_runner_does(runs: dict[str, JobRun]) -> None:
    run = runs["oom"]
    assert run.job.status == "failed"
    assert run.trace.system_failure
    assert run.trace.failure == "Error in container build: exit code: 137, reason: 'OOMKilled'"
    build = run.pod.final_state("build")["terminated"]
    assert (build["reason"], build["exitCode"]) == ("OOMKilled", 137)
    assert not any(line.text.startswith("survived ") for line in run.trace.lines)


def test_cpu_throttled_not_killed(runs: dict[str, JobRun]) -> None:
    run = runs["cpu"]
    assert run.job.status == "success", run.trace.text[-1500:]
    rate = int(re.search(r"RATE=(\d+)", run.trace.text).group(1)) / 1000
    throttled = int(re.search(r"nr_throttled (\d+)", run.trace.text).group(1))
    assert throttled > 0
    assert 0.3 < rate < 0.65, f"usage {rate:.2f} CPU under a 500m limit"


def test_script_failure_message(runs: dict[str, JobRun]) -> None:
    run = runs["fail"]
    assert run.job.status == "failed" and run.job.failure_reason == "script_failure"
    assert run.trace.failure == "command terminated with exit code 3"
    assert not run.trace.system_failure


def test_unknown_image_fails_like_a_pull_failure(runs: dict[str, JobRun]) -> None:
    run = runs["badimage"]
    assert run.job.status == "failed"
    assert (
        "image pull failed" in run.trace.failure
        and "registry.runnerconf.test:5000/nosuch/image:1" in run.trace.failure
    )
    reasons = [s["state"].get("waiting", {}).get("reason") for s in run.pod.statuses("build")]
    assert "ErrImagePull" in reasons


def test_override_above_cap_refused_in_prepare(runs: dict[str, JobRun]) -> None:
    run = runs["overcap"]
    assert run.job.status == "failed" and run.trace.system_failure
    assert run.trace.text.count("ERROR: Preparation failed: couldn't prepare overwrites") == 3
    assert 'the resource "CPULimit" requested "3" is higher than limit allowed "1500m"' in run.trace.failure
    assert run.pod is None


def test_every_pod_deleted_after_its_job(runs: dict[str, JobRun]) -> None:
    for run in runs.values():
        if run.pod is not None:
            deleted = run.pod.deleted_at()
            assert deleted is not None, f"pod of {run.name} was not deleted"
            assert deleted - run.finished_at < 20


def test_malformed_ci_yaml_is_a_400(cluster: Cluster) -> None:
    cluster.project.commits.create(
        {
            "branch": "broken-yaml",
            "start_branch": "main",
            "commit_message": "broken",
            "actions": [
                {"action": "create", "file_path": ".gitlab-ci.yml", "content": "job:\n  script: [\n"}
            ],
        }
    )
    try:
        with pytest.raises(gitlab.exceptions.GitlabCreateError) as err:
            cluster.project.pipelines.create({"ref": "broken-yaml"})
        assert err.value.response_code == 400
        assert "did not find expected" in str(err.value) or "while parsing" in str(err.value)
    finally:
        cluster.project.branches.delete("broken-yaml")


def test_wrong_tokens_are_401(local_cluster: Any) -> None:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gitlab.Gitlab(local_cluster.gitlab_url, private_token="glpat-wrong").auth()
    # Same server and CA as the kubeconfig's (TLS verified), another token.
    cfg = copy.copy(Cluster(local_cluster).api_client.configuration)
    cfg.refresh_api_key_hook = None  # the kubeconfig loader's hook would put the right token back
    cfg.api_key = {"authorization": "Bearer wrong"}
    with pytest.raises(ApiException) as err:
        k8s.CoreV1Api(k8s.ApiClient(cfg)).list_namespaced_pod(local_cluster.namespace)
    assert err.value.status == 401


# ---- faults: each changes exactly its own observation -------------------------------------------------------

PROBE = f"""
stages: [test]
probe:
  image: alpine:3.20
  tags: [{TAG}]
  services:
    - name: busybox:1.36
      alias: sidecar
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
  script:
    - echo "HEAD=$(cat .git/HEAD 2>/dev/null || echo none)"
    - echo "HOSTS=$(grep -c sidecar /etc/hosts)"
    - echo "NS=$(grep nameserver /etc/resolv.conf | head -1)"
    - echo "MEM=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
"""

FAULT_CASES = [
    "init-not-first",
    "script-before-sources",
    "builds-not-shared",
    "no-host-aliases",
    "ignore-dns-config",
    "limits-not-applied",
    "overrides-ignored",
    "leak-pods",
    "leak-secrets",
]


@pytest.fixture(scope="module")
def fault_runs(cluster: Cluster) -> Iterator[dict[str, JobRun]]:
    def one(fault: str) -> tuple[str, JobRun]:
        variables = {"RUNNERCONF_LOCAL_FAULTS": fault} if fault else {}
        if fault == "overrides-ignored":
            variables["KUBERNETES_MEMORY_LIMIT"] = "384Mi"
        wait = fault not in ("leak-pods",)
        return fault, cluster.run(PROBE, variables, wait_deleted=wait)["probe"]

    with ThreadPoolExecutor(4) as pool:
        results = dict(pool.map(one, ["", *FAULT_CASES]))
    yield results
    # leak-pods leaves its pod behind on purpose: remove it through the API, as an operator would.
    leaked = results["leak-pods"].pod
    if leaked is not None:
        cluster.core.delete_namespaced_pod(leaked.name, cluster.info.namespace, grace_period_seconds=0)


def observations(run: JobRun, local_dns: str) -> dict[str, Any]:
    text = run.trace.text
    pod = run.pod
    # Watch-event order, not timestamps: container times have one-second resolution, as on Kubernetes.
    seen: list[str] = []
    for _, _, obj in pod.events:
        status = obj.get("status") or {}
        for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            state = s.get("state", {})
            if "terminated" in state or "running" in state:
                key = f"{s['name']}:{'terminated' if 'terminated' in state else 'running'}"
                if key not in seen:
                    seen.append(key)
    sections = [s.name for s in run.trace.sections]
    ran = "HOSTS=" in text
    return {
        "init_first": seen.index("init-permissions:terminated") < seen.index("build:running"),
        "sources_first": "get_sources" in sections
        and sections.index("get_sources") < sections.index("step_script"),
        "script_ran": ran,
        "clone_shared": f"HEAD={run.job.pipeline['sha']}" in text if ran else None,
        "hosts_alias": "HOSTS=1" in text if ran else None,
        "pod_dns": f"NS=nameserver {local_dns}" in text if ran else None,
        "limits": "MEM=9223372036854771712" not in text if ran else None,  # cgroup v1's "unlimited"
        "override_applied": pod.first["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi",
        "pod_deleted": pod.deleted_at() is not None,
    }


# What each fault must change, and nothing else. Where the behaviour a fault breaks hides others from the
# probe (a build without the shared /builds cannot even enter its project directory), the set says so.
EXPECTED_CHANGE = {
    "init-not-first": {"init_first"},
    "script-before-sources": {"sources_first", "clone_shared"},
    "builds-not-shared": {"script_ran", "clone_shared", "hosts_alias", "pod_dns", "limits"},
    "no-host-aliases": {"hosts_alias"},
    "ignore-dns-config": {"pod_dns"},
    "limits-not-applied": {"limits"},
    "overrides-ignored": {"override_applied"},
    "leak-pods": {"pod_deleted"},
}


def test_clean_probe_observes_everything(fault_runs: dict[str, JobRun], local_cluster: Any) -> None:
    clean = observations(fault_runs[""], local_cluster.local_dns)
    clean["override_applied"] = True  # the clean run sets no override
    assert all(clean.values()), clean


@pytest.mark.parametrize("fault", list(EXPECTED_CHANGE))
def test_fault_changes_exactly_its_observation(
    fault: str, fault_runs: dict[str, JobRun], local_cluster: Any
) -> None:
    clean = observations(fault_runs[""], local_cluster.local_dns)
    seen = observations(fault_runs[fault], local_cluster.local_dns)
    clean["override_applied"] = True  # the clean run sets no override; a run that sets one sees it applied
    if fault != "overrides-ignored":
        seen["override_applied"] = True
    changed = {k for k in clean if clean[k] != seen[k]}
    assert changed == EXPECTED_CHANGE[fault], seen
    if fault == "builds-not-shared":
        assert "command terminated with exit code" in fault_runs[fault].trace.failure


def test_leak_secrets_leaves_the_registry_secret(fault_runs: dict[str, JobRun], cluster: Cluster) -> None:
    names = {s.metadata.name for s in cluster.core.list_namespaced_secret(cluster.info.namespace).items}
    # The runner lists the per-job registry secret last in the pod's imagePullSecrets.
    leaked = fault_runs["leak-secrets"].pod.first["spec"]["imagePullSecrets"][-1]["name"]
    clean = fault_runs[""].pod.first["spec"]["imagePullSecrets"][-1]["name"]
    assert leaked in names
    assert clean not in names
