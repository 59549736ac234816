"""Real clients against the local API server over TLS: kubectl (the binary) and the Python client's exec.

No Docker here: the API server runs alone with a store of fixed objects and a node whose containers are
local processes, so the HTTP surface (TLS, discovery, Tables, protobuf reviews, WebSocket exec, logs) is
what is under test. tests/local/test_kubectl_cluster.py does the same against real job pods.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.stream import stream

from pytest_runnerconf.errors import KubeError
from pytest_runnerconf.local.kstore import BadRequest, KubeStore
from pytest_runnerconf.local.kube_api import OPERATOR_VERBS, KubeAPI, LogOptions, write_kubeconfig
from pytest_runnerconf.local.tlsca import LocalCA
from tests.local.kubectl import Kubectl, kubectl_binary

NS = "ci"
POD = "runner-abc-project-1-concurrent-0-x1y2z3w4"
STARTED = "2026-01-01T00:00:00Z"


class ProcessSession:
    """An exec session whose "container" is a local process (stdout and stderr merged)."""

    def __init__(self, command: list[str], stdin: bool) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def pending(self) -> bool:
        return False

    def read(self) -> list[tuple[int, bytes]] | None:
        data = os.read(self.fileno(), 65536)
        return [(1, data)] if data else None

    def write_stdin(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        pass

    def exit_code(self) -> int | None:
        return self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class ProcessNode:
    """A node whose every container runs commands as local processes and has a fixed log."""

    logs_of: dict[str, bytes] = field(default_factory=dict)
    execs: list[list[str]] = field(default_factory=list)

    def logs(self, namespace: str, pod: str, container: str, options: LogOptions) -> Iterator[bytes]:
        if options.previous:
            raise BadRequest(f'previous terminated container "{container}" in pod "{pod}" not found')
        data = self.logs_of.get(container, b"")
        if options.tail_lines is not None:
            data = b"".join(data.splitlines(keepends=True)[-options.tail_lines :])
        return iter([data])

    def exec_ready(self, namespace: str, pod: str, container: str) -> None:
        return None

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> ProcessSession:
        self.execs.append(command)
        return ProcessSession(command, stdin)


def _pod() -> dict[str, Any]:
    running = {"running": {"startedAt": STARTED}}
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": POD, "namespace": NS, "labels": {"pod": "runner-abc"}},
        "spec": {
            "nodeName": "runnerconf-local",
            "initContainers": [{"name": "init-permissions", "image": "helper:1"}],
            "containers": [
                {"name": "build", "image": "alpine:3.20"},
                {"name": "helper", "image": "helper:1"},
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "172.17.0.9",
            "podIPs": [{"ip": "172.17.0.9"}],
            "hostIP": "172.17.0.1",
            "startTime": STARTED,
            "qosClass": "Burstable",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [
                {
                    "name": "init-permissions",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }
            ],
            "containerStatuses": [
                {"name": "build", "ready": True, "started": True, "restartCount": 0, "state": running},
                {"name": "helper", "ready": True, "started": True, "restartCount": 0, "state": running},
            ],
        },
    }


@dataclass
class Served:
    store: KubeStore
    node: ProcessNode
    kubeconfig: Path
    ca_dir: Path
    url: str
    pod_uid: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    store.create(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "gitlab-runner", "namespace": NS},
            "data": {"config.toml": 'concurrent = 16\n[[runners]]\n  token = "[REDACTED]"\n'},
        }
    )
    pod = store.create(_pod())
    for reason, message, type_ in (
        ("Scheduled", f"Successfully assigned {NS}/{POD} to runnerconf-local", "Normal"),
        ("Created", "Created container: build", "Normal"),
        ("Failed", "Error: something went wrong", "Warning"),
    ):
        store.create(
            {
                "kind": "Event",
                "metadata": {"name": f"{POD}.{reason.lower()}", "namespace": NS},
                "involvedObject": {
                    "kind": "Pod",
                    "name": POD,
                    "namespace": NS,
                    "uid": pod["metadata"]["uid"],
                    "fieldPath": "spec.containers{build}",
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "source": {"component": "kubelet", "host": "runnerconf-local"},
                "count": 1,
                "firstTimestamp": STARTED,
                "lastTimestamp": STARTED,
            }
        )
    node = ProcessNode(
        logs_of={"build": b"line one\nline two\nline three\n", "helper": b"Fetching changes\n"}
    )
    api = KubeAPI(
        store, {"operator-token": OPERATOR_VERBS, "restricted-token": frozenset({"get", "list"})}, node=node
    )
    ca_dir = tmp_path_factory.mktemp("pki")
    ca = LocalCA.create(ca_dir)
    url = api.start(tls=ca.issue("kube-apiserver").server_context()).url
    kubeconfig = write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "kubeconfig",
        url,
        {"runnerconf-local": "operator-token", "runnerconf-local-restricted": "restricted-token"},
        "runnerconf-local",
        NS,
        ca_pem=ca.pem,
    )
    yield Served(store, node, kubeconfig, ca_dir, url, pod["metadata"]["uid"])
    api.stop()


@pytest.fixture(scope="module")
def kubectl(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(kubectl_binary(), served.kubeconfig, tmp_path_factory.mktemp("home"))


def core(served: Served) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(
        config_file=str(served.kubeconfig), context="runnerconf-local", client_configuration=cfg
    )
    assert cfg.verify_ssl and cfg.ssl_ca_cert, "the client verifies the server against the kubeconfig's CA"
    return client.CoreV1Api(client.ApiClient(cfg))


# ---------------------------------------------------------------- the Python client: exec over wss


def test_python_client_exec_over_tls_websocket(served: Served) -> None:
    api = core(served)
    out = stream(
        api.connect_get_namespaced_pod_exec,
        POD,
        NS,
        container="build",
        command=["sh", "-c", "echo hello; echo err >&2"],
        stderr=True,
        stdout=True,
        stdin=False,
        tty=False,
    )
    assert "hello" in out and "err" in out
    resp = stream(
        api.connect_get_namespaced_pod_exec,
        POD,
        NS,
        container="helper",
        command=["sh", "-c", "read x; echo got:$x; exit 4"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("ping\n")
    resp.run_forever(timeout=10)
    assert "got:ping" in resp.read_stdout()
    assert resp.returncode == 4
    assert served.node.execs[-1] == ["sh", "-c", "read x; echo got:$x; exit 4"]


def test_python_client_logs(served: Served) -> None:
    assert core(served).read_namespaced_pod_log(POD, NS, container="build", tail_lines=1) == "line three\n"


# ---------------------------------------------------------------- kubectl


def test_kubectl_version_selects_the_emulated_minor(kubectl: Kubectl) -> None:
    doc = json.loads(kubectl.ok("version", "-o", "json"))
    assert doc["serverVersion"]["gitVersion"].startswith("v1.32.0-")
    assert doc["serverVersion"]["minor"] == "32"
    # /usr/bin/kubectl may be a dispatcher that runs kubectl.1.<server minor>: then it ran 1.32 here.
    assert doc["clientVersion"]["major"] == "1"


def test_kubectl_api_resources_from_discovery(kubectl: Kubectl) -> None:
    lines = kubectl.ok("api-resources").splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["pods"] == ["pods", "po", "v1", "true", "Pod"]
    assert rows["configmaps"][1] == "cm"
    assert rows["selfsubjectaccessreviews"][1:] == [
        "authorization.k8s.io/v1",
        "false",
        "SelfSubjectAccessReview",
    ]
    assert "pods/log" not in rows  # subresources are not listed, as on a real cluster


def test_kubectl_get_pods_prints_the_servers_columns(kubectl: Kubectl) -> None:
    lines = kubectl.ok("get", "pods", "-o", "wide").splitlines()
    assert lines[0].split() == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    row = lines[1].split()
    assert row[:4] == [POD, "2/2", "Running", "0"]
    assert row[5:7] == ["172.17.0.9", "runnerconf-local"]


def test_kubectl_output_formats(kubectl: Kubectl) -> None:
    assert (
        kubectl.ok("get", "pod", POD, "-o", "jsonpath={.spec.nodeName} {.status.podIP}")
        == "runnerconf-local 172.17.0.9"
    )
    doc = json.loads(kubectl.ok("get", "pod", POD, "-o", "json"))
    assert doc["kind"] == "Pod" and doc["metadata"]["name"] == POD
    yaml_text = kubectl.ok("get", "configmap", "gitlab-runner", "-o", "yaml")
    assert "kind: ConfigMap" in yaml_text and "config.toml: |" in yaml_text and "[REDACTED]" in yaml_text
    missing = kubectl("get", "pod", "nope")
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in missing.stderr


def test_kubectl_describe_pod_with_its_events(kubectl: Kubectl) -> None:
    text = kubectl.ok("describe", "pod", POD)
    assert re.search(rf"^Name:\s+{POD}$", text, re.M)
    assert re.search(r"^Node:\s+runnerconf-local/172\.17\.0\.1$", text, re.M)
    assert re.search(r"^QoS Class:\s+Burstable$", text, re.M)
    events = text.split("Events:", 1)[1]
    assert "Scheduled" in events and "Created container: build" in events


def test_kubectl_get_events_with_a_field_selector(kubectl: Kubectl) -> None:
    out = kubectl.ok("get", "events", "--field-selector", f"involvedObject.name={POD},type=Warning")
    lines = out.splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert len(lines) == 2 and "Error: something went wrong" in lines[1] and f"pod/{POD}" in lines[1]


def test_kubectl_logs(kubectl: Kubectl) -> None:
    assert kubectl.ok("logs", POD, "-c", "build", "--tail=2") == "line two\nline three\n"
    # -f streams (chunked) until the container's log ends
    assert kubectl.ok("logs", "-f", POD, "-c", "build") == "line one\nline two\nline three\n"
    defaulted = kubectl("logs", POD)
    # With several containers kubectl picks the first and says so, as against a real cluster.
    assert defaulted.returncode == 0 and defaulted.stdout.startswith("line one")
    assert 'Defaulted container "build" out of: build, helper' in defaulted.stderr
    previous = kubectl("logs", POD, "-c", "build", "--previous")
    assert previous.returncode == 1
    assert f'previous terminated container "build" in pod "{POD}" not found' in previous.stderr


def test_kubectl_exec_over_websocket(kubectl: Kubectl, served: Served) -> None:
    assert kubectl.ok("exec", POD, "-c", "build", "--", "echo", "exec-ok") == "exec-ok\n"
    piped = kubectl("exec", "-i", POD, "-c", "helper", "--", "sh", "-c", "cat; exit 3", input="from-stdin\n")
    assert piped.stdout == "from-stdin\n"
    assert piped.returncode == 3 and "command terminated with exit code 3" in piped.stderr
    bad = kubectl("exec", POD, "-c", "nosuch", "--", "true")
    assert bad.returncode == 1
    assert f"container nosuch is not valid for pod {POD}" in bad.stderr


def test_kubectl_exec_without_websockets_is_refused_in_one_sentence(kubectl: Kubectl) -> None:
    spdy = kubectl(
        "exec", POD, "-c", "build", "--", "true", env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    )
    assert spdy.returncode == 1
    assert "serves exec over WebSocket only" in spdy.stderr


@pytest.mark.parametrize(
    ("context", "question", "answer"),
    [
        ("runnerconf-local", ("get", "pods"), "yes"),
        ("runnerconf-local", ("watch", "pods"), "yes"),
        ("runnerconf-local", ("create", "pods", "--subresource=exec"), "yes"),
        ("runnerconf-local", ("get", "pods", "--subresource=log"), "yes"),
        ("runnerconf-local", ("create", "pods"), "no"),
        ("runnerconf-local-restricted", ("list", "pods"), "yes"),
        ("runnerconf-local-restricted", ("watch", "pods"), "no"),
        ("runnerconf-local-restricted", ("delete", "pods"), "no"),
        ("runnerconf-local-restricted", ("create", "pods", "--subresource=exec"), "no"),
        ("runnerconf-local-restricted", ("get", "pods", "--subresource=log"), "no"),
    ],
)
def test_kubectl_auth_can_i_honours_the_context(
    kubectl: Kubectl, context: str, question: tuple[str, ...], answer: str
) -> None:
    # kubectl sends these reviews as protobuf only: the API server must read that body.
    proc = kubectl("auth", "can-i", *question, context=context)
    assert proc.stdout.strip() == answer
    assert proc.returncode == (0 if answer == "yes" else 1)


def test_kubectl_restricted_context_cannot_watch(kubectl: Kubectl) -> None:
    proc = kubectl("get", "pods", "-w", context="runnerconf-local-restricted", timeout=30)
    assert proc.returncode == 1
    assert 'cannot watch resource "pods" in API group "" in the namespace "ci"' in proc.stderr


def test_kubectl_watch_prints_each_change_as_a_row(kubectl: Kubectl, served: Served) -> None:
    watch = kubectl.popen("get", "pods", "-w")
    try:
        assert watch.stdout is not None
        header = watch.stdout.readline().split()
        assert header[:3] == ["NAME", "READY", "STATUS"]
        first = watch.stdout.readline().split()
        assert first[:3] == [POD, "2/2", "Running"]

        def terminating(obj: dict[str, Any]) -> None:
            obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"

        served.store.update("Pod", NS, POD, terminating)
        changed = watch.stdout.readline().split()
        assert changed[:3] == [POD, "2/2", "Terminating"]
    finally:
        watch.kill()
        watch.wait()

        def restore(obj: dict[str, Any]) -> None:
            obj["metadata"].pop("deletionTimestamp", None)

        served.store.update("Pod", NS, POD, restore)


# ---------------------------------------------------------------- TLS verification


def _with_other_ca(served: Served, tmp_path: Path) -> Path:
    other = LocalCA.create(tmp_path / "other-ca")
    text = served.kubeconfig.read_text()
    import base64

    import yaml

    doc = yaml.safe_load(text)
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(other.pem).decode()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubectl_refuses_a_server_its_ca_did_not_sign(
    served: Served, kubectl: Kubectl, tmp_path: Path
) -> None:
    wrong = Kubectl(kubectl.binary, _with_other_ca(served, tmp_path), tmp_path / "home")
    proc = wrong("get", "pods", timeout=60)
    assert proc.returncode == 1
    assert "certificate signed by unknown authority" in proc.stderr


def test_plugin_driver_verifies_the_server(served: Served, tmp_path: Path) -> None:
    from pytest_runnerconf.kube_driver import KubeDriver
    from pytest_runnerconf.profile import profile_from_table

    def profile(kubeconfig: Path) -> Any:
        table = {
            "gitlab_url": "https://gitlab.example.invalid",
            "token_env": "UNUSED_TOKEN",
            "project": "g/p",
            "kubeconfig": str(kubeconfig),
            "kube_context": "runnerconf-local",
            "namespace": NS,
        }
        return profile_from_table("tls", table, "test")

    good = KubeDriver(profile(served.kubeconfig))
    assert good.tls_verified and good.host.startswith("https://")
    assert good.list_pods("pod=runner-abc")["items"][0]["metadata"]["name"] == POD
    bad = KubeDriver(profile(_with_other_ca(served, tmp_path)))
    started = time.monotonic()
    with pytest.raises(
        KubeError, match="TLS certificate is not signed by the kubeconfig's certificate-authority"
    ):
        bad.list_pods("pod=runner-abc")
    assert time.monotonic() - started < 60
