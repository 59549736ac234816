"""The local node's kubelet: runs a pod's containers through the runtime and publishes its status and events.

A pause container owns the network namespace, IPC, hostname and DNS; the kubelet writes the pod's managed
/etc/hosts and mounts it into every container; init containers run to completion in order, then the
others start in spec order. It also serves the API server's node calls (logs, exec) and the runner's
attach. Pod deletion is the API server's (poddeletion.py), which asks the kubelet to terminate the pod.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pytest_runnerconf.local.faults import FAULT_POD_MTU
from pytest_runnerconf.local.kstore import BadRequest, NotFound, StoreError
from pytest_runnerconf.local.kube_api import LogOptions
from pytest_runnerconf.local.kube_tables import parse_time
from pytest_runnerconf.local.podstatus import (
    ContainerRun,
    ImageChoice,
    PodRun,
    hosts_file,
    pod_status,
    rfc3339,
)
from pytest_runnerconf.local.quantity import cpu_shares, cpu_to_nano, memory_to_bytes
from pytest_runnerconf.local.quantity import parse as quantity_parse
from pytest_runnerconf.local.runtime import CLUSTER_LABEL, POD_LABEL, ExecStream, Runtime
from pytest_runnerconf.local.scheduling import NODE_NAME

# Substituted for the pod DNS when the fault dind-dns-fallback is on: written into files only, never queried.
FALLBACK_DNS = "8.8.8.8"
# Faults that give each container its own copy of an emptyDir the pod should share.
PRIVATE_VOLUME_FAULTS = {"builds-not-shared": "repo", "logs-volume-broken": "logs"}
_EVENT_SEQ = itertools.count()


class InternalError(StoreError):
    code = 500
    reason = "InternalError"


def go_duration(seconds: float) -> str:
    """time.Duration.String() truncated to milliseconds, as the kubelet's pull messages print it."""
    ms = int(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    whole, frac = divmod(ms, 1000)
    minutes, secs = divmod(whole, 60)
    sec_text = f"{secs}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{sec_text}" if minutes else sec_text


def image_ref(image: str) -> str:
    """applyDefaultImageTag: `busybox` -> `busybox:latest`; tagged or digested references stay as they are."""
    last = image.rsplit("/", 1)[-1]
    return image if ("@" in image or ":" in last) else f"{image}:latest"


def _kind_of(name: str) -> str:
    return name if name in ("build", "helper") else "service"


class Kubelet:
    """The node agent of the local cluster (one node, `runnerconf-local`)."""

    def __init__(
        self,
        runtime: Runtime,
        store: Any,
        *,
        resolve_image: Callable[[str], ImageChoice],
        privileged: tuple[dict[str, Any], str],
        pause_image: str,
        repo_mounts: Callable[[dict[str, Any]], dict[str, dict[str, str]]],
        state_dir: Path,
        node_ip: str = "127.0.0.1",
        node_name: str = NODE_NAME,
        net_tools_image: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.resolve_image = resolve_image
        self.privileged_kwargs, self.privileged_mode = privileged
        self.pause_image = pause_image
        # An image with iproute2 and iptables, for what a fault does to a pod's network (the DinD stand-in's).
        self.net_tools_image = net_tools_image or pause_image
        self.repo_mounts = repo_mounts
        self.state_dir = state_dir
        self.node_ip = node_ip
        self.node_name = node_name
        self._pods: dict[tuple[str, str], PodRun] = {}
        self._by_docker_id: dict[str, tuple[PodRun, ContainerRun]] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._stream: Any = None
        threading.Thread(target=self._follow_runtime, daemon=True, name="runtime-events").start()

    # ---- events and status -----------------------------------------------------------------------------

    def event(
        self,
        pod: PodRun,
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
        field_path: str = "",
        component: str = "kubelet",
    ) -> None:
        ts = rfc3339()
        involved: dict[str, Any] = {
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "apiVersion": "v1",
        }
        if field_path:
            involved["fieldPath"] = field_path
        host = self.node_name if component == "kubelet" else ""
        source = {"component": component} | ({"host": host} if host else {})
        self.store.create(
            {
                "kind": "Event",
                "apiVersion": "v1",
                # <object>.<16 hex>, as the event recorder names them
                "metadata": {
                    "name": f"{pod.name}.{time.time_ns() + next(_EVENT_SEQ):016x}",
                    "namespace": pod.namespace,
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": type_,
                "source": source,
                "firstTimestamp": ts,
                "lastTimestamp": ts,
                "count": 1,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host,
            }
        )

    def publish(self, pod: PodRun) -> None:
        """Recompute the pod status from what the runtime did and write it (a MODIFIED event)."""
        with self._lock:
            status = pod_status(pod, host_ip=self.node_ip)

        def mutate(obj: dict[str, Any]) -> None:
            current = obj.setdefault("status", {})
            qos = current.get("qosClass")
            # Conditions the kubelet does not own (DisruptionTarget, set by the API server on an eviction) stay,
            # after its own, as the kubelet's status manager merges them.
            own = {c.get("type") for c in status.get("conditions") or []}
            kept = [c for c in current.get("conditions") or [] if c.get("type") not in own]
            obj["status"] = status | ({"qosClass": qos} if qos else {})
            if kept:
                obj["status"]["conditions"] = [*(status.get("conditions") or []), *kept]

        with contextlib.suppress(NotFound):
            self.store.update("Pod", pod.namespace, pod.name, mutate)

    # ---- running a pod -----------------------------------------------------------------------------------

    def run(self, pod_obj: dict[str, Any], faults: frozenset[str] = frozenset()) -> PodRun:
        """Bind, then start a pod already stored in the API; returns when every container started."""
        meta, spec = pod_obj["metadata"], pod_obj["spec"]
        pod = PodRun(
            meta["namespace"], meta["name"], meta["uid"], faults=faults, repo_binds=self.repo_mounts(pod_obj)
        )
        for c in spec.get("initContainers", []):
            pod.containers[c["name"]] = ContainerRun(c["name"], "init", c)
        for c in spec.get("containers", []):
            pod.containers[c["name"]] = ContainerRun(c["name"], _kind_of(c["name"]), c)
        with self._lock:
            self._pods[(pod.namespace, pod.name)] = pod
        self._bind(pod)
        self._create_volumes(pod, spec)
        self._start_sandbox(pod, spec)
        pod.started_at = time.time()
        self.publish(pod)
        inits, regular = pod.of_kind("init"), pod.regular
        if "init-not-first" in pod.faults:
            # A broken kubelet/runtime that starts the main containers before init containers complete.
            for c in regular:
                self._start(pod, spec, c)
            for c in inits:
                self._run_to_completion(pod, spec, c)
        else:
            for c in inits:
                if not self._run_to_completion(pod, spec, c):
                    self.publish(pod)
                    return pod
            for c in regular:
                self._start(pod, spec, c)
        self.publish(pod)
        return pod

    def bind(self, pod_obj: dict[str, Any]) -> None:
        """The scheduler's binding alone (nodeName), before the kubelet starts the pod."""

        def schedule(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = self.node_name

        meta = pod_obj["metadata"]
        self.store.update("Pod", meta["namespace"], meta["name"], schedule)

    def _bind(self, pod: PodRun) -> None:
        """The scheduler's part: one node, so binding is immediate."""

        def schedule(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = self.node_name

        self.store.update("Pod", pod.namespace, pod.name, schedule)
        pod.scheduled_at = time.time()
        self.event(
            pod,
            "Scheduled",
            f"Successfully assigned {pod.namespace}/{pod.name} to {self.node_name}",
            component="default-scheduler",
        )

    def _create_volumes(self, pod: PodRun, spec: dict[str, Any]) -> None:
        for vol in spec.get("volumes", []):
            if "emptyDir" not in vol:
                continue
            name = f"rc-{pod.name}-{vol['name']}"
            memory = vol["emptyDir"].get("medium") == "Memory"
            self.runtime.create_volume(
                name, self.runtime.labels(pod.key, f"volume:{vol['name']}"), memory=memory
            )
            pod.volumes.append(name)

    def _private(self, pod: PodRun) -> set[str]:
        return {vol for fault, vol in PRIVATE_VOLUME_FAULTS.items() if fault in pod.faults}

    def _volume_binds(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> dict[str, dict[str, str]]:
        names = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        private = self._private(pod)
        binds: dict[str, dict[str, str]] = {}
        for m in c.spec.get("volumeMounts", []):
            if m["name"] not in names:
                continue
            vol = f"rc-{pod.name}-{m['name']}"
            if m["name"] in private:
                # The broken cluster gives each container its own copy instead of the shared emptyDir.
                vol = f"rc-{pod.name}-{m['name']}-{c.name}"
                if vol not in pod.volumes:
                    self.runtime.create_volume(
                        vol, self.runtime.labels(pod.key, f"volume:{m['name']}-private")
                    )
                    pod.volumes.append(vol)
                    self._open_volume(vol, (spec.get("securityContext") or {}).get("fsGroup"))
            binds[vol] = {"bind": m["mountPath"], "mode": "ro" if m.get("readOnly") else "rw"}
        if c.kind == "helper":
            binds.update(pod.repo_binds)
        if c.image is not None and c.image.role == "dind":
            # docker:dind declares VOLUME /var/lib/docker; without one dockerd falls back to vfs (overlay on
            # overlay fails), which makes every inner container start several seconds slower.
            vol = f"rc-{pod.name}-{c.name}-docker"
            self.runtime.create_volume(vol, self.runtime.labels(pod.key, "volume:dind-storage"))
            pod.volumes.append(vol)
            binds[vol] = {"bind": "/var/lib/docker", "mode": "rw"}
        if pod.hosts_file is not None:
            binds[str(pod.hosts_file)] = {"bind": "/etc/hosts", "mode": "rw"}
        return binds

    def _start_sandbox(self, pod: PodRun, spec: dict[str, Any]) -> None:
        kwargs: dict[str, Any] = {}
        if spec.get("dnsPolicy") == "None" and spec.get("dnsConfig"):
            cfg = spec["dnsConfig"]
            if cfg.get("nameservers"):
                kwargs["dns"] = cfg["nameservers"]
            if cfg.get("searches"):
                kwargs["dns_search"] = cfg["searches"]
            opts = [o["name"] + (f":{o['value']}" if o.get("value") else "") for o in cfg.get("options", [])]
            if opts:
                kwargs["dns_opt"] = opts
        # Other policies: the local cluster has no cluster DNS service, so pods get the node's resolver,
        # which is what Default means and what ClusterFirst degrades to without kube-dns.
        binds = {v: {"bind": f"/var/run/runnerconf/{v}", "mode": "rw"} for v in pod.volumes}
        pod.sandbox_id = self.runtime.run_sandbox(
            self.pause_image,
            name=f"rc-{pod.name}-pause",
            hostname=pod.name,
            labels=self.runtime.labels(pod.key, "pause"),
            volumes=binds,  # holds Memory emptyDirs alive for the pod's lifetime, like the kubelet
            **kwargs,
        )
        self._open_empty_dirs(pod, spec)
        if "dind-mtu-too-big" in pod.faults:
            self._lower_mtu(pod)
        pod.pod_ip = self.runtime.sandbox_ip(pod.sandbox_id)
        directory = self.state_dir / "pods" / pod.uid
        directory.mkdir(parents=True, exist_ok=True)
        pod.hosts_file = directory / "etc-hosts"
        pod.hosts_file.write_text(
            hosts_file(pod.pod_ip, spec.get("hostname") or pod.name, spec.get("hostAliases") or [])
        )
        pod.hosts_file.chmod(0o644)

    def _lower_mtu(self, pod: PodRun) -> None:
        """dind-mtu-too-big: the pod's network carries packets of at most 1400 bytes, as an overlay CNI's does,
        and its interface says so (MTU 1400) while dockerd in a DinD service still gives its bridge 1500.

        A Docker bridge carries more than the interface's MTU into a pod (the host's TCP hands the veth
        segmentation-offloaded packets), so the interface's MTU alone would not stop anything; what an overlay
        does, drop what it cannot encapsulate, is a rule in the pod's netns on what arrives for the containers
        dockerd starts (forwarded through the pod). The pod's own processes advertise the 1400 MTU's MSS and
        keep working, as on a real overlay. Set from a short-lived container with NET_ADMIN in the pod's
        network namespace (the pause one has none, as a pod's sandbox has none).
        """
        script = (
            f"ip link set dev eth0 mtu {FAULT_POD_MTU} && "
            f"iptables -I FORWARD -i eth0 -m length --length {FAULT_POD_MTU + 1}:65535 -j DROP"
        )
        self.runtime.client.containers.run(
            self.net_tools_image,
            ["sh", "-c", script],
            entrypoint=[],
            network_mode=f"container:{pod.sandbox_id}",
            cap_add=["NET_ADMIN", "NET_RAW"],
            labels=self.runtime.labels(pod.key, "mtu"),
            remove=True,
        )

    def _open_empty_dirs(self, pod: PodRun, spec: dict[str, Any]) -> None:
        """The kubelet creates emptyDirs with mode 0777 and, with fsGroup, gives them that group and the setgid bit
        (SetVolumeOwnership), so containers running as other users can write them; Docker volumes start 0755."""
        paths = [f"/var/run/runnerconf/{v}" for v in pod.volumes]
        if not paths or pod.sandbox_id is None:
            return
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        script = 'chmod 0777 "$@"'
        if fs_group is not None:
            script += f' && chgrp {int(fs_group)} "$@" && chmod g+s "$@"'
        out, code = self.runtime.run(pod.sandbox_id, ["sh", "-c", script, "sh", *paths])
        if code != 0:
            raise RuntimeError(
                f"setting up the pod's emptyDir volumes failed: {out.decode(errors='replace')}"
            )

    def _open_volume(self, volume: str, fs_group: Any) -> None:
        """A volume made after the sandbox (a fault's private copy) opened as the kubelet opens an emptyDir."""
        script = "chmod 0777 /v" + (
            f" && chgrp {int(fs_group)} /v && chmod g+s /v" if fs_group is not None else ""
        )
        self.runtime.client.containers.run(
            self.pause_image,
            ["sh", "-c", script],
            volumes={volume: {"bind": "/v", "mode": "rw"}},
            remove=True,
        )

    def _security(self, spec: dict[str, Any], c: ContainerRun, pod: PodRun) -> dict[str, Any]:
        """securityContext -> Docker: privileged (pseudo-privileged on this host), capabilities, user, etc."""
        pod_sec = spec.get("securityContext") or {}
        sec = c.spec.get("securityContext") or {}
        host: dict[str, Any] = {}
        config: dict[str, Any] = {}
        caps = sec.get("capabilities") or {}
        opts: list[str] = []
        if sec.get("privileged"):
            host.update(self.privileged_kwargs)
        else:
            if caps.get("add"):
                host["cap_add"] = list(caps["add"])
            if caps.get("drop"):
                host["cap_drop"] = list(caps["drop"])
            if sec.get("procMount") == "Unmasked":
                opts.append("systempaths=unconfined")
            for key, docker in (("seccompProfile", "seccomp"), ("appArmorProfile", "apparmor")):
                profile = sec.get(key) or pod_sec.get(key) or {}
                if profile.get("type") == "Unconfined":
                    opts.append(f"{docker}=unconfined")
        if sec.get("allowPrivilegeEscalation") is False:
            opts.append("no-new-privileges")
        selinux = (sec.get("seLinuxOptions") or pod_sec.get("seLinuxOptions") or {}).get("type")
        if selinux:
            opts.append(f"label=type:{selinux}")
        if "security-context-ignored" in pod.faults:
            opts = []  # nor its hardening: no no_new_privs, no profile the context asks for
        if opts:
            host["security_opt"] = [*host.get("security_opt", []), *opts]
        if sec.get("readOnlyRootFilesystem"):
            host["read_only"] = True
        if "security-context-ignored" in pod.faults:
            # A runtime that drops the identity of the securityContext: every process runs as the image's user.
            return {"host": host, "config": config}
        uid = sec.get("runAsUser", pod_sec.get("runAsUser"))
        gid = sec.get("runAsGroup", pod_sec.get("runAsGroup"))
        if uid is not None:
            config["user"] = f"{uid}:{gid}" if gid is not None else str(uid)
        elif gid is not None:
            config["user"] = f"0:{gid}"  # runAsGroup alone: the image's user (root here) with that group
        groups = [str(g) for g in pod_sec.get("supplementalGroups") or []]
        if pod_sec.get("fsGroup") is not None:
            groups.append(str(pod_sec["fsGroup"]))
        if groups:
            host["group_add"] = groups
        return {"host": host, "config": config}

    def _container_args(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> dict[str, Any]:
        cs = c.spec
        host: dict[str, Any] = {
            "network_mode": f"container:{pod.sandbox_id}",
            "ipc_mode": f"container:{pod.sandbox_id}",
            "binds": self._volume_binds(pod, spec, c),
            # PID 1 must forward SIGTERM or every deletion waits the whole grace period (no shell handles it)
            "init": c.kind in ("build", "helper"),
        }
        limits = (cs.get("resources") or {}).get("limits") or {}
        requests = (cs.get("resources") or {}).get("requests") or {}
        if "limits-not-applied" not in pod.faults:
            if limits.get("memory"):
                mem = memory_to_bytes(limits["memory"])
                host["mem_limit"] = mem
                host["memswap_limit"] = mem  # no swap, as on a kubelet node
            if limits.get("cpu"):
                host["nano_cpus"] = cpu_to_nano(limits["cpu"])
            if requests.get("cpu"):
                host["cpu_shares"] = cpu_shares(quantity_parse(requests["cpu"]))
            if requests.get("memory"):
                host["mem_reservation"] = memory_to_bytes(requests["memory"])
        security = self._security(spec, c, pod)
        host.update(security["host"])
        config: dict[str, Any] = {
            "name": f"rc-{pod.name}-{c.name}",
            "labels": self.runtime.labels(pod.key, c.name),
            "environment": {e["name"]: e.get("value", "") for e in cs.get("env", [])},
            "working_dir": cs.get("workingDir") or None,
            **security["config"],
        }
        return {"host_config": host, **config}

    def _command(self, pod: PodRun, c: ContainerRun) -> tuple[list[str] | None, list[str] | None]:
        """(entrypoint, command) for Docker from the pod container's command/args, as the kubelet maps them."""
        command = c.spec.get("command")
        args = list(c.spec.get("args") or [])
        if (
            c.kind == "service"
            and c.image is not None
            and c.image.role == "dind"
            and "dind-dns-fallback" in pod.faults
        ):
            args = [*args, f"--dns={FALLBACK_DNS}"]
        return (list(command) if command else None), (args or None)

    def _pull(self, pod: PodRun, c: ContainerRun) -> bool:
        """EnsureImageExists: a present stand-in is "already present"; a missing one fails like a pull."""
        image = c.spec["image"]
        ref = image_ref(image)
        policy = c.spec.get("imagePullPolicy") or "IfNotPresent"
        c.image = self.resolve_image(image)
        path = c.field_path
        if c.image.local is None:
            if policy == "Never":
                msg = f'Container image "{ref}" is not present with pull policy of Never'
                c.waiting_reason, c.waiting_message = "ErrImageNeverPull", msg
                self.event(pod, "ErrImageNeverPull", msg, type_="Warning", field_path=path)
                return False
            qualified = (
                ref
                if "/" in ref.split(":")[0] and "." in ref.split("/")[0]
                else f"docker.io/{ref if '/' in ref else 'library/' + ref}"
            )
            err = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{qualified}": failed to resolve '
                f'reference "{qualified}": {qualified}: not found (the local cluster reaches no registry and has '
                "no stand-in for this image)"
            )
            self.event(pod, "Pulling", f'Pulling image "{ref}"', field_path=path)
            self.event(
                pod, "Failed", f'Failed to pull image "{ref}": {err}', type_="Warning", field_path=path
            )
            self.event(pod, "Failed", "Error: ErrImagePull", type_="Warning", field_path=path)
            c.waiting_reason, c.waiting_message = "ErrImagePull", err
            return False
        if policy == "Always":
            started = time.monotonic()
            self.event(pod, "Pulling", f'Pulling image "{ref}"', field_path=path)
            took = go_duration(time.monotonic() - started)
            size = self.runtime.image_size(c.image.local)
            message = f'Successfully pulled image "{ref}" in {took} ({took} including waiting). Image size: {size} bytes.'
            self.event(pod, "Pulled", message, field_path=path)
        else:
            self.event(pod, "Pulled", f'Container image "{ref}" already present on machine', field_path=path)
        return True

    def _create(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> str | None:
        if pod.deleting or not self._pull(pod, c):
            return None
        entrypoint, command = self._command(pod, c)
        assert c.image is not None and c.image.local is not None  # _pull resolved it
        try:
            docker_id = self.runtime.create(
                c.image.local,
                command,
                entrypoint=entrypoint,
                stdin=bool(c.spec.get("stdin")),
                **self._container_args(pod, spec, c),
            )
        except Exception as exc:  # the runtime refused the container (a bad security option, a bad mount)
            message = f"failed to create containerd container: {exc}"
            c.waiting_reason, c.waiting_message = "CreateContainerError", message
            self.event(pod, "Failed", f"Error: {message}", type_="Warning", field_path=c.field_path)
            return None
        with self._lock:
            c.docker_id = docker_id
            self._by_docker_id[docker_id] = (pod, c)
        self.event(pod, "Created", f"Created container: {c.name}", field_path=c.field_path)
        return docker_id

    def _start(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> None:
        docker_id = self._create(pod, spec, c)
        if docker_id is None:
            self.publish(pod)
            return
        with pod.lifecycle:
            # Termination may have begun while the image was pulled and the container created: then the
            # container stays unstarted (forget removes it), or it would run on with no pod to stop it.
            if pod.deleting:
                return
            c.started_at = self.runtime.start(docker_id)
        self.event(pod, "Started", f"Started container {c.name}", field_path=c.field_path)
        self.publish(pod)

    def _run_to_completion(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> bool:
        self._start(pod, spec, c)
        if c.docker_id is None:
            return False
        self.runtime.wait(c.docker_id)
        self._record_exit(c)
        self.publish(pod)
        return c.exit_code == 0

    def _record_exit(self, c: ContainerRun) -> None:
        if c.docker_id is None or c.exit_code is not None:
            return
        state = self.runtime.state(c.docker_id)
        if state.running:
            return
        c.exit_code = state.exit_code
        c.oom = c.oom or state.oom
        c.finished_at = state.finished_at or time.time()

    def _follow_runtime(self) -> None:
        """One runtime event stream for every pod: container exits and cgroup OOMs become status changes."""
        while not self._stopping.is_set():
            try:
                self._stream = self.runtime.events()
                for ev in self._stream:
                    if self._stopping.is_set():
                        return
                    self._on_runtime_event(ev)
            except Exception:  # the engine restarted or the stream broke: resubscribe
                if self._stopping.wait(0.5):
                    return

    def _on_runtime_event(self, ev: dict[str, Any]) -> None:
        action = ev.get("Action") or ev.get("status")
        with self._lock:
            found = self._by_docker_id.get(ev.get("id", ""))
        if not found:
            return
        pod, c = found
        if action == "oom":
            c.oom = True
            if c.kind != "init" and not pod.deleting and c.docker_id is not None:
                # Kubernetes on cgroup v2 kills the whole container on OOM (memory.oom.group); cgroup v1 kills
                # only the biggest process. Mirror the kubelet on v2: the container dies with reason OOMKilled.
                self.runtime.kill(c.docker_id)
        elif action == "die":
            self._record_exit(c)
            self.publish(pod)

    # ---- termination (asked for by the API server's graceful deletion) ------------------------------------

    def terminate(self, namespace: str, name: str, grace_s: float) -> None:
        """Stop the pod's containers (SIGTERM, SIGKILL after the grace period) and remove what it used."""
        with self._lock:
            pod = self._pods.get((namespace, name))
        if pod is None:
            return
        with pod.lifecycle:  # no container starts from here on (see _start)
            if pod.deleting:
                return
            pod.deleting = True
            running = [
                c for c in pod.containers.values() if c.docker_id and c.started_at and c.exit_code is None
            ]
        for c in running:
            self.event(pod, "Killing", f"Stopping container {c.name}", field_path=c.field_path)
        threads = [
            threading.Thread(target=self.runtime.stop, args=(c.docker_id, int(grace_s)), daemon=True)
            for c in running
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in running:
            self._record_exit(c)
        self.publish(pod)

    def forget(self, namespace: str, name: str) -> None:
        """Remove the pod's containers, volumes and kubelet files; the pod is no longer this node's."""
        self.runtime.remove_labelled(f"{POD_LABEL}={namespace}.{name}")
        with self._lock:
            pod = self._pods.pop((namespace, name), None)
            if pod is not None:
                for c in pod.containers.values():
                    self._by_docker_id.pop(c.docker_id or "", None)
        if pod is not None:
            shutil.rmtree(self.state_dir / "pods" / pod.uid, ignore_errors=True)
            pod.done.set()

    def remove_all(self) -> None:
        """Remove every container and volume this cluster created (cluster shutdown)."""
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self.runtime.remove_labelled(f"{CLUSTER_LABEL}={self.runtime.cluster_id}")
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)

    # ---- containers, for the runner and the API server --------------------------------------------------

    def container(self, namespace: str, name: str, container: str) -> ContainerRun | None:
        pod = self._pods.get((namespace, name))
        return pod.containers.get(container) if pod else None

    def _running(self, namespace: str, name: str, container: str) -> str:
        c = self.container(namespace, name, container)
        if c is None or c.docker_id is None or c.exit_code is not None:
            raise InternalError(
                "Internal error occurred: error executing command in container: container is not created or running"
            )
        return c.docker_id

    def exec_ready(self, namespace: str, pod: str, container: str) -> None:
        self._running(namespace, pod, container)

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> ExecStream:
        return self.runtime.exec(self._running(namespace, pod, container), command, stdin=stdin, tty=tty)

    def run_in(
        self, namespace: str, pod: str, container: str, command: list[str], input: bytes | None = None
    ) -> tuple[bytes, int | None]:
        """pods/exec to completion (the runner's exec with the script on stdin)."""
        return self.runtime.run(self._running(namespace, pod, container), command, input=input)

    def attach(self, namespace: str, pod: str, container: str, data: bytes) -> None:
        """pods/attach with stdin only: one line to the container's main process (the runner's attach)."""
        self.runtime.attach_stdin(self._running(namespace, pod, container), data)

    def put_file(
        self, namespace: str, pod: str, container: str, path: str, content: bytes, mode: int = 0o755
    ) -> None:
        self.runtime.put_file(self._running(namespace, pod, container), path, content, mode)

    def put_archive(self, namespace: str, pod: str, container: str, directory: str, tar: bytes) -> None:
        """A tar stream unpacked into DIRECTORY of a running container (what the helper's extractors write)."""
        self.runtime.put_archive(self._running(namespace, pod, container), directory, tar)

    def get_archive(self, namespace: str, pod: str, container: str, path: str) -> bytes | None:
        c = self.container(namespace, pod, container)
        if c is None or c.docker_id is None:
            return None
        return self.runtime.get_archive(c.docker_id, path)

    def logs(self, namespace: str, pod: str, container: str, options: LogOptions) -> Iterator[bytes]:
        """The container's log, after the kubelet's validateContainerLogStatus checks and messages."""
        c = self.container(namespace, pod, container)
        if options.previous:
            raise BadRequest(f'previous terminated container "{container}" in pod "{pod}" not found')
        if c is None or c.docker_id is None:
            reason = (c.waiting_reason if c else None) or "ContainerCreating"
            run = self._pods.get((namespace, pod))
            if c is not None and run is not None and c.kind != "init" and reason == "ContainerCreating":
                reason = "PodInitializing" if any(i.exit_code != 0 for i in run.of_kind("init")) else reason
            shown = {
                "ErrImagePull": "image can't be pulled",
                "ImagePullBackOff": "trying and failing to pull image",
            }
            raise BadRequest(
                f'container "{container}" in pod "{pod}" is waiting to start: {shown.get(reason, reason)}'
            )
        since = parse_time(options.since_time) if options.since_time else None
        if options.since_seconds is not None:
            since = time.time() - options.since_seconds
        chunks = self.runtime.logs(
            c.docker_id,
            follow=options.follow,
            timestamps=options.timestamps,
            tail=options.tail_lines,
            since=since,
        )
        return _limited(chunks, options.limit_bytes) if options.limit_bytes else chunks


def _limited(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    left = limit
    for chunk in chunks:
        if left <= 0:
            return
        yield chunk[:left]
        left -= len(chunk)
