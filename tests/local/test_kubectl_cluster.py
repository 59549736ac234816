"""kubectl against a real job pod of the local cluster, over TLS with verification on, as an operator uses it.

One pipeline with a job that waits to be released: while its pod runs, the scenarios list, describe, read
logs and events, exec into each container (stdin, exit codes, the kubelet's /etc/hosts) and ask can-i; a
watch started before the pipeline sees the pod's whole life.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.local.kubectl import Kubectl, kubectl_binary
from tests.local.pipelines import Cluster, JobRun

JOB = "kubectl-target"
RELEASE = "/builds/release-kubectl"
PIPELINE = f"""
stages: [test]
{JOB}:
  image: alpine:3.20
  tags: [runnerconf-local]
  services:
    - name: busybox:1.36
      alias: sidecar
      command: ["sh", "-c", "trap 'exit 0' TERM; echo sidecar-up; sleep 600 & wait"]
  script:
    - echo READY-FOR-KUBECTL
    - i=0; until [ -f {RELEASE} ]; do i=$((i+1)); [ $i -lt 1200 ] || exit 9; sleep 0.1; done
    - echo RELEASED
"""


@dataclass
class Target:
    kubectl: Kubectl
    pod: dict[str, Any]
    watch: subprocess.Popen[str]
    runner: threading.Thread
    result: dict[str, JobRun]

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    def release(self) -> tuple[JobRun | None, str]:
        """Let the job end; then the run's result and what `kubectl get pods -w` printed meanwhile."""
        self.kubectl("exec", self.name, "-c", "build", "--", "touch", RELEASE)
        self.runner.join(timeout=240)
        self.watch.terminate()
        out, _ = self.watch.communicate(timeout=30)
        return self.result.get(JOB), out


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def target(local_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    kubectl = Kubectl(kubectl_binary(), Path(local_cluster.kubeconfig), tmp_path_factory.mktemp("home"))
    cluster = Cluster(local_cluster)
    watch = kubectl.popen("get", "pods", "-w")
    result: dict[str, JobRun] = {}
    runner = threading.Thread(target=lambda: result.update(cluster.run(PIPELINE, timeout=240)), daemon=True)
    runner.start()

    def running_pod() -> dict[str, Any] | None:
        for pod in cluster.core.list_namespaced_pod(local_cluster.namespace).items:
            obj: dict[str, Any] = cluster.api_client.sanitize_for_serialization(pod)
            named = (obj["metadata"].get("annotations") or {}).get("job.runner.gitlab.com/name") == JOB
            if named and obj.get("status", {}).get("phase") == "Running":
                return obj
        return None

    pod = _wait(running_pod, 120, f"the pod of job {JOB} to run")
    name = pod["metadata"]["name"]
    _wait(
        lambda: "READY-FOR-KUBECTL" in kubectl("logs", name, "-c", "build").stdout, 60, "the script to start"
    )
    target = Target(kubectl, pod, watch, runner, result)
    yield target
    if runner.is_alive():  # a test failed before the last one released the job
        target.release()


def test_get_pods_shows_the_running_job_pod(target: Target) -> None:
    lines = target.kubectl.ok("get", "pods", "-o", "wide").splitlines()
    row = next(line.split() for line in lines if line.startswith(target.name))
    # build, helper and the service: all running and ready
    assert row[1:3] == ["3/3", "Running"]
    assert row[5] == target.pod["status"]["podIP"] and row[6] == "runnerconf-local"


def test_describe_pod_shows_defaults_and_kubelet_events(target: Target) -> None:
    text = target.kubectl.ok("describe", "pod", target.name)
    assert re.search(rf"^Node:\s+runnerconf-local/{re.escape(target.pod['status']['hostIP'])}$", text, re.M)
    # config.toml's service_account and priority_class_name (the local cluster's PriorityClass: 1000)
    assert re.search(r"^Service Account:\s+runnerconf-job$", text, re.M)
    assert re.search(r"^Priority:\s+1000$", text, re.M)
    assert "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s" in text
    assert re.search(r"^QoS Class:\s+Burstable$", text, re.M)
    events = text.split("Events:", 1)[1]
    assert f"Successfully assigned ci/{target.name} to runnerconf-local" in events
    assert "Created container: build" in events and "Started container build" in events
    assert 'Container image "alpine:3.20" already present on machine' in events


def test_api_server_defaults_are_in_the_stored_pod(target: Target) -> None:
    doc = json.loads(target.kubectl.ok("get", "pod", target.name, "-o", "json"))
    spec = doc["spec"]
    assert spec["schedulerName"] == "default-scheduler" and spec["enableServiceLinks"] is True
    assert spec["priority"] == 1000 and spec["serviceAccountName"] == "runnerconf-job"
    assert spec["terminationGracePeriodSeconds"] == 30
    policies = {c["name"]: c["imagePullPolicy"] for c in spec["containers"]}
    assert policies["build"] == "IfNotPresent"
    assert doc["status"]["qosClass"] == "Burstable"
    assert doc["status"]["podIP"] == target.pod["status"]["podIP"]


def test_exec_into_each_container_and_read_the_kubelets_hosts_file(target: Target) -> None:
    hosts = target.kubectl.ok("exec", target.name, "-c", "build", "--", "cat", "/etc/hosts")
    lines = hosts.splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert lines[1] == "127.0.0.1\tlocalhost"
    assert lines[2] == "::1\tlocalhost ip6-localhost ip6-loopback"
    assert f"{target.pod['status']['podIP']}\t{target.name}" in lines
    aliases = lines[lines.index("# Entries added by HostAliases.") + 1 :]
    assert aliases[0].split("\t")[0] == "127.0.0.1" and "sidecar" in aliases[0].split("\t")
    for container in ("helper", "sidecar"):
        assert target.kubectl.ok("exec", target.name, "-c", container, "--", "cat", "/etc/hosts") == hosts
    piped = target.kubectl(
        "exec", "-i", target.name, "-c", "build", "--", "sh", "-c", "cat; exit 5", input="in\n"
    )
    assert piped.stdout == "in\n" and piped.returncode == 5


def test_logs_of_the_build_container_are_the_attached_scripts_output(target: Target) -> None:
    # In attach mode the script runs in the build container's main shell and tees into the logs volume, so
    # the container's own log has the output and the exit-status lines the runner reads from output.log.
    build = target.kubectl.ok("logs", target.name, "-c", "build")
    assert "READY-FOR-KUBECTL" in build
    assert '"script": "/scripts-' in build
    helper = target.kubectl.ok("logs", target.name, "-c", "helper")
    assert "Fetching changes with git depth set to 20..." in helper
    assert '{"command_exit_code": 0, "script": "/scripts-' in helper
    assert "sidecar-up" in target.kubectl.ok("logs", target.name, "-c", "sidecar")
    stamped = target.kubectl.ok("logs", target.name, "-c", "sidecar", "--timestamps")
    assert stamped.split(" ", 1)[0].endswith("Z")


def test_events_of_the_pod(target: Target) -> None:
    out = target.kubectl.ok("get", "events", "--field-selector", f"involvedObject.name={target.name}")
    assert "Scheduled" in out and "Started" in out and f"pod/{target.name}" in out


def test_configmap_holds_the_config_as_deployed(target: Target) -> None:
    text = target.kubectl.ok("get", "configmap", "gitlab-runner", "-o", "jsonpath={.data.config\\.toml}")
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in settings if "@gitlab-url" in line or "@local-dns" in line]
    assert any(line.strip().startswith('url = "http') and "127.0.0.1:" in line for line in settings)
    assert '  token = "[REDACTED]"' in settings and "glrt-t1_runnerconflocal0000" not in text


def test_can_i_on_the_two_contexts(target: Target) -> None:
    k = target.kubectl
    assert k("auth", "can-i", "create", "pods", "--subresource=exec").stdout.strip() == "yes"
    restricted = "runnerconf-local-restricted"
    assert (
        k("auth", "can-i", "create", "pods", "--subresource=exec", context=restricted).stdout.strip() == "no"
    )
    assert k("auth", "can-i", "watch", "pods", context=restricted).returncode == 1
    denied = k("exec", target.name, "-c", "build", "--", "true", context=restricted)
    assert denied.returncode == 1 and 'cannot create resource "pods/exec"' in denied.stderr


def test_watch_saw_the_pod_from_pending_to_gone(target: Target) -> None:
    # Last in the module: it releases the job.
    run, watched = target.release()
    assert run is not None and run.job.status == "success", "the job ends once released"
    assert "RELEASED" in run.trace.text
    rows = [line.split() for line in watched.splitlines() if line.startswith(target.name)]
    statuses = [row[2] for row in rows]
    assert statuses[0] in ("Pending", "Init:0/1", "PodInitializing")
    assert "Running" in statuses
    assert statuses[-1] in ("Completed", "Terminating", "Error")
    gone = target.kubectl("get", "pod", target.name)
    assert gone.returncode == 1 and "NotFound" in gone.stderr


def test_the_plugins_driver_reaches_the_local_cluster_over_verified_tls(local_cluster: Any) -> None:
    from pytest_runnerconf.kube_driver import KubeDriver
    from pytest_runnerconf.local.provider import local_table
    from pytest_runnerconf.profile import profile_from_table

    driver = KubeDriver(profile_from_table("local", local_table(local_cluster, {}), "test"))
    assert driver.tls_verified and driver.host.startswith("https://127.0.0.1:")
    assert driver.list_pods("pod")["kind"] == "PodList"
