"""The local cluster's API-server and kubelet pieces that need no Docker: admission, status, hosts, scripts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.local import admission, kube_proto, kube_tables
from pytest_runnerconf.local.kstore import Forbidden, Invalid, KubeStore
from pytest_runnerconf.local.podstatus import ContainerRun, PodRun, hosts_file, pod_status
from pytest_runnerconf.local.strategies import parse_status, save_script, stage_script


def _pod(**spec: Any) -> dict[str, Any]:
    base = {
        "containers": [
            {
                "name": "build",
                "image": "alpine:3.20",
                "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
            }
        ]
    }
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "p", "namespace": "ci"},
        "spec": base | spec,
    }


# ---------------------------------------------------------------- admission


def test_defaults_a_real_api_server_adds() -> None:
    pod = _pod(initContainers=[{"name": "init", "image": "busybox"}], volumes=[{"name": "v"}])
    admission.admit("Pod", pod)
    spec = pod["spec"]
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler" and spec["enableServiceLinks"] is True
    assert spec["dnsPolicy"] == "ClusterFirst" and spec["restartPolicy"] == "Always"
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    assert spec["priority"] == 0 and spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    assert all(t["tolerationSeconds"] == 300 and t["effect"] == "NoExecute" for t in spec["tolerations"])
    build, init = spec["containers"][0], spec["initContainers"][0]
    assert (
        build["imagePullPolicy"] == "IfNotPresent" and init["imagePullPolicy"] == "Always"
    )  # no tag: latest
    assert build["resources"]["requests"] == {"cpu": "1", "memory": "512Mi"}  # requests default to limits
    assert build["terminationMessagePath"] == "/dev/termination-log"
    assert spec["volumes"][0]["emptyDir"] == {}
    # the init container has no limits: Burstable; limits alone (requests defaulted to them): Guaranteed
    assert pod["status"] == {"phase": "Pending", "qosClass": "Burstable"}
    alone = _pod()
    admission.admit("Pod", alone)
    assert alone["status"]["qosClass"] == "Guaranteed"


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("registry:5000/x/y", "Always"),
        ("registry:5000/x/y:1", "IfNotPresent"),
        ("a@sha256:" + "0" * 64, "IfNotPresent"),
    ],
)
def test_pull_policy_by_tag(image: str, policy: str) -> None:
    assert admission.pull_policy_for(image) == policy


def test_validation_with_the_api_servers_words() -> None:
    pod = _pod(hostAliases=[{"ip": "not-an-ip", "hostnames": ["x"]}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "logs", "mountPath": "/logs"}]
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    store = KubeStore()
    store.admission.append(admission.admit)
    with pytest.raises(Invalid) as err:
        store.create(pod)
    text = str(err.value)
    assert text.startswith('Pod "p" is invalid: [')
    assert 'spec.containers[0].volumeMounts[0].name: Not found: "logs"' in text
    assert (
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1'
        in text
    )
    assert 'spec.hostAliases[0].ip: Invalid value: "not-an-ip": must be a valid IP address' in text
    assert err.value.code == 422
    with pytest.raises(Forbidden, match='pods "p" is forbidden: no PriorityClass with name gold was found'):
        store.create(_pod(priorityClassName="gold"))
    stored = store.create(_pod(priorityClassName="system-node-critical"))
    assert stored["spec"]["priority"] == 2000001000


# ---------------------------------------------------------------- kubelet status and files


def test_hosts_file_in_the_kubelets_format() -> None:
    text = hosts_file("172.17.0.5", "runner-x", [{"ip": "127.0.0.1", "hostnames": ["svc", "svc-alias"]}])
    assert text == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        "172.17.0.5\trunner-x\n"
        "\n"
        "# Entries added by HostAliases.\n"
        "127.0.0.1\tsvc\tsvc-alias\n"
    )
    assert "HostAliases" not in hosts_file("172.17.0.5", "runner-x", [])


def test_pod_status_while_initializing_and_when_done() -> None:
    pod = PodRun("ci", "p", "uid", sandbox_id="s", pod_ip="172.17.0.5")
    pod.containers["init-permissions"] = ContainerRun(
        "init-permissions", "init", {"image": "h"}, docker_id="i", started_at=1.0
    )
    pod.containers["build"] = ContainerRun("build", "build", {"image": "alpine:3.20"})
    status = pod_status(pod, host_ip="172.17.0.1", now=10.0)
    assert status["phase"] == "Pending"
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert status["podIPs"] == [{"ip": "172.17.0.5"}] and status["hostIP"] == "172.17.0.1"
    assert kube_tables.pod_reason({"status": status, "spec": {"initContainers": [{}]}}) == "Init:0/1"
    init = pod.containers["init-permissions"]
    init.exit_code, init.finished_at = 0, 2.0
    build = pod.containers["build"]
    build.docker_id, build.started_at = "b", 3.0
    running = pod_status(pod, host_ip="172.17.0.1")
    assert running["phase"] == "Running" and running["containerStatuses"][0]["ready"] is True
    build.exit_code, build.finished_at, build.oom = 137, 4.0, True
    done = pod_status(pod, host_ip="172.17.0.1")
    assert done["phase"] == "Failed"
    assert done["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    assert kube_tables.pod_reason({"status": done, "spec": {}}) == "OOMKilled"


def test_condition_times_move_only_when_their_status_changes() -> None:
    """As a kubelet writes them: PodScheduled keeps the binding's time, the others their last transition."""
    pod = PodRun("ci", "p", "uid", sandbox_id="s", scheduled_at=1_700_000_000.0)
    pod.containers["build"] = ContainerRun("build", "build", {"image": "alpine:3.20"})

    def times(now: float) -> dict[str, str]:
        status = pod_status(pod, host_ip="172.17.0.1", now=now)
        return {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}

    first = times(1_700_000_005.0)
    assert first["PodScheduled"] == "2023-11-14T22:13:20Z"  # the binding, not the status write
    assert first["Ready"] == "2023-11-14T22:13:25Z"
    pod.containers["build"].docker_id, pod.containers["build"].started_at = "b", 1_700_000_006.0
    later = times(1_700_000_009.0)
    assert later["PodScheduled"] == first["PodScheduled"] and later["Initialized"] == first["Initialized"]
    assert later["Ready"] == "2023-11-14T22:13:29Z"  # Ready went True then
    assert times(1_700_000_020.0)["Ready"] == later["Ready"]  # and stays put while it stays True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (75, "75s"),
        (125, "2m5s"),
        (45 * 60, "45m"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (30 * 3600, "30h"),
        (76 * 3600, "3d4h"),
        (20 * 86400, "20d"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert kube_tables.human_duration(seconds) == text


# ---------------------------------------------------------------- protobuf reviews


def test_protobuf_review_round_trip() -> None:
    spec = kube_proto.field_bytes(
        1,
        kube_proto.encode_attributes(
            {"namespace": "ci", "verb": "get", "resource": "pods", "subresource": "log"}
        ),
    )
    body = kube_proto.encode_review("SelfSubjectAccessReview", "authorization.k8s.io/v1", spec)
    decoded = kube_proto.decode(body)
    assert decoded["kind"] == "SelfSubjectAccessReview"
    assert decoded["spec"] == {
        "resourceAttributes": {"namespace": "ci", "verb": "get", "resource": "pods", "subresource": "log"}
    }
    with pytest.raises(kube_proto.ProtoError):
        kube_proto.decode(b"{}")


# ---------------------------------------------------------------- stage scripts (run here with bash and sh)


@pytest.mark.parametrize("shell", ["bash", "sh"])
@pytest.mark.parametrize(
    ("body", "code"), [("echo out\n", 0), ("echo before\nfalse\necho never\n", 1), ("exit 7\n", 7)]
)
def test_stage_script_reports_its_exit_status(tmp_path: Path, shell: str, body: str, code: int) -> None:
    script = tmp_path / "step_script"
    saver = save_script(str(script), stage_script(body, report_status=True))
    subprocess.run([shell], input=saver, text=True, check=True)
    assert oct(script.stat().st_mode & 0o777) == "0o777"
    out = subprocess.run([shell, str(script)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, "the EXIT trap always exits 0: the status travels in the log"
    lines = out.stdout.splitlines()
    assert parse_status(lines[0]) == {"script": str(script)}
    assert parse_status(lines[-1]) == {"command_exit_code": code, "script": str(script)}
    assert lines[-2] == ""
    assert "never" not in out.stdout
    assert all(parse_status(line) is None for line in lines[1:-1])


def test_parse_status_takes_only_status_objects() -> None:
    assert parse_status('{"command_exit_code": 3}') == {"command_exit_code": 3}
    assert (
        parse_status('{"other": 1}') is None and parse_status("[1]") is None and parse_status("text") is None
    )
    assert json.loads('{"script": "/scripts-1-2/x"}') == parse_status('{"script": "/scripts-1-2/x"}')
