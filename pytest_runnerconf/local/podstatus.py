"""What the kubelet knows of a pod it runs, and the pod status it publishes from that (pure functions)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def rfc3339(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ImageChoice:
    """What actually runs for a public image name: a local tag, or a pull failure."""

    public: str
    local: str | None
    role: str = ""  # stand-in name, e.g. "base", "dind", "tiny", "helper"


@dataclass
class ContainerRun:
    name: str
    kind: str  # init | build | helper | service
    spec: dict[str, Any]
    docker_id: str | None = None
    image: ImageChoice | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    oom: bool = False
    waiting_reason: str | None = None
    waiting_message: str | None = None

    @property
    def field_path(self) -> str:
        """How kubelet events name the container, e.g. spec.containers{build}."""
        return f"spec.{'initContainers' if self.kind == 'init' else 'containers'}{{{self.name}}}"


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    sandbox_id: str | None = None
    pod_ip: str = ""
    volumes: list[str] = field(default_factory=list)
    hosts_file: Path | None = None
    deleting: bool = False
    started_at: float | None = None
    scheduled_at: float | None = None  # when the scheduler bound it (PodScheduled's lastTransitionTime)
    # condition type -> (status, lastTransitionTime): a kubelet moves the time only when the status changes
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    # Held while a container is started and while termination begins: a container created as the pod's
    # deletion began is never started after it (a real kubelet starts nothing in a terminating pod).
    lifecycle: threading.Lock = field(default_factory=threading.Lock)
    faults: frozenset[str] = frozenset()
    repo_binds: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}.{self.name}"

    def of_kind(self, kind: str) -> list[ContainerRun]:
        return [c for c in self.containers.values() if c.kind == kind]

    @property
    def regular(self) -> list[ContainerRun]:
        return [c for c in self.containers.values() if c.kind != "init"]


def container_status(
    c: ContainerRun, *, deleting: bool, oom_reported: bool, init_done: bool = True
) -> dict[str, Any]:
    image = c.spec.get("image", "")
    status: dict[str, Any] = {
        "name": c.name,
        "image": image,
        "imageID": f"docker-pullable://{c.image.local}" if c.image and c.image.local and c.docker_id else "",
        "ready": False,
        "restartCount": 0,
        "started": False,
    }
    if c.docker_id:
        status["containerID"] = f"docker://{c.docker_id}"
    if c.exit_code is not None:
        if c.oom and oom_reported:
            reason = "OOMKilled"
        elif c.exit_code == 0:
            reason = "Completed"
        else:
            reason = "Error"
        status["state"] = {
            "terminated": {
                "exitCode": c.exit_code,
                "reason": reason,
                "startedAt": rfc3339(c.started_at),
                "finishedAt": rfc3339(c.finished_at),
                "containerID": f"docker://{c.docker_id}",
            }
        }
    elif c.started_at is not None:
        status["state"] = {"running": {"startedAt": rfc3339(c.started_at)}}
        status["ready"] = not deleting
        status["started"] = True
    else:
        initializing = c.kind != "init" and not init_done
        reason = c.waiting_reason or ("PodInitializing" if initializing else "ContainerCreating")
        waiting: dict[str, Any] = {"reason": reason}
        if c.waiting_message:
            waiting["message"] = c.waiting_message
        status["state"] = {"waiting": waiting}
    return status


def phase_of(pod: PodRun) -> str:
    inits, regular = pod.of_kind("init"), pod.regular
    if any(c.exit_code not in (None, 0) for c in inits):
        return "Failed"  # restartPolicy Never: a failed init container fails the pod
    if regular and all(c.exit_code is not None for c in regular):
        return "Succeeded" if all(c.exit_code == 0 for c in regular) else "Failed"
    # Running: every container created (none left waiting to start) and at least one running.
    created = all(c.started_at is not None or c.exit_code is not None for c in regular)
    if all(c.exit_code == 0 for c in inits) and regular and created:
        return "Running"
    return "Pending"


def pod_status(pod: PodRun, *, host_ip: str, now: float | None = None) -> dict[str, Any]:
    """The status block a kubelet writes (kubectl-fidelity.md §10: conditions in the kubelet's order)."""
    oom_reported = "oom-unreported" not in pod.faults
    inits = pod.of_kind("init")
    init_done = all(c.exit_code == 0 for c in inits)
    init_statuses = [container_status(c, deleting=pod.deleting, oom_reported=oom_reported) for c in inits]
    statuses = [
        container_status(c, deleting=pod.deleting, oom_reported=oom_reported, init_done=init_done)
        for c in pod.regular
    ]
    not_ready = [s["name"] for s in statuses if not s["ready"]]
    ts = rfc3339(now)

    def cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        state = "True" if ok else "False"
        since = pod.transitions.get(type_)
        if since is None or since[0] != state:
            first = rfc3339(pod.scheduled_at) if type_ == "PodScheduled" and pod.scheduled_at else ts
            since = pod.transitions[type_] = (state, first)
        c: dict[str, Any] = {
            "type": type_,
            "status": state,
            "lastProbeTime": None,
            "lastTransitionTime": since[1],
        }
        if not ok and reason:
            c["reason"] = reason
            c["message"] = message
        return c

    phase = phase_of(pod)
    unready = f"containers with unready status: [{' '.join(not_ready)}]"
    incomplete = (
        f"containers with incomplete status: [{' '.join(c.name for c in inits if c.exit_code is None)}]"
    )
    if phase in ("Succeeded", "Failed"):
        # A finished pod's readiness conditions say so: PodCompleted, not "unready containers".
        ready_cond = cond("Ready", False, "PodCompleted", "")
        containers_cond = cond("ContainersReady", False, "PodCompleted", "")
        for c in (ready_cond, containers_cond):
            c.pop("message", None)
    else:
        ready_cond = cond("Ready", not not_ready, "ContainersNotReady", unready)
        containers_cond = cond("ContainersReady", not not_ready, "ContainersNotReady", unready)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", pod.sandbox_id is not None),
            cond("Initialized", init_done, "ContainersNotInitialized", incomplete),
            ready_cond,
            containers_cond,
            cond("PodScheduled", True),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": rfc3339(pod.started_at),
    }
    if pod.pod_ip:
        status["podIP"] = pod.pod_ip
        status["podIPs"] = [{"ip": pod.pod_ip}]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    status["containerStatuses"] = statuses
    return status


def hosts_file(pod_ip: str, hostname: str, host_aliases: list[dict[str, Any]]) -> str:
    """The kubelet's managed /etc/hosts (managedHostsFileContent, hostsEntriesFromHostAliases): tabs, not spaces."""
    name = hostname[:63].rstrip("-.")
    text = (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
    )
    if pod_ip:
        text += f"{pod_ip}\t{name}\n"
    if host_aliases:
        text += "\n# Entries added by HostAliases.\n"
        for alias in host_aliases:
            text += f"{alias['ip']}\t" + "\t".join(alias.get("hostnames") or []) + "\n"
    return text
