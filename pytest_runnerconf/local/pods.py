"""Realise a Kubernetes pod object as real Docker containers and publish its status like a kubelet."""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pytest_runnerconf.local.quantity import cpu_shares, cpu_to_nano, memory_to_bytes
from pytest_runnerconf.local.quantity import parse as quantity_parse

CLUSTER_LABEL = "runnerconf.local/cluster"
POD_LABEL = "runnerconf.local/pod"
ROLE_LABEL = "runnerconf.local/container"
NODE_NAME = "runnerconf-local"
# Substituted for the pod DNS when the fault dind-dns-fallback is on: written into files only, never queried.
FALLBACK_DNS = "8.8.8.8"


def now_rfc3339(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def docker_time(value: str) -> float | None:
    """Docker's nanosecond RFC3339 times -> unix seconds (None for the zero time)."""
    if not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float("0." + frac[:6]) if frac else 0.0)


@dataclass
class ImageChoice:
    """What actually runs for a public image name: a local tag, or a pull failure."""

    public: str
    local: str | None
    role: str = ""  # stand-in name, e.g. "base", "dind", "tiny"


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
    pause_id: str | None = None
    volumes: list[str] = field(default_factory=list)
    deleting: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    faults: frozenset[str] = frozenset()
    repo_binds: dict[str, dict[str, str]] = field(default_factory=dict)

    def ordered(self, kind: str | None = None) -> list[ContainerRun]:
        return [c for c in self.containers.values() if kind is None or c.kind == kind]


class DockerPods:
    """Runs pods as containers: a pause container owning netns/hosts/resolv.conf, then init, then the rest."""

    def __init__(
        self,
        client: Any,
        store: Any,
        *,
        cluster_id: str,
        resolve_image: Callable[[str], ImageChoice],
        privileged: tuple[dict[str, Any], str],
        pause_image: str,
        repo_mounts: Callable[[dict[str, Any]], dict[str, dict[str, str]]],
    ) -> None:
        self.client = client
        self.store = store
        self.cluster_id = cluster_id
        self.resolve_image = resolve_image
        self.privileged_kwargs, self.privileged_mode = privileged
        self.pause_image = pause_image
        self.repo_mounts = repo_mounts
        self._pods: dict[tuple[str, str], PodRun] = {}
        self._by_docker_id: dict[str, tuple[PodRun, ContainerRun]] = {}
        self._lock = threading.RLock()
        self._events_stop = threading.Event()
        self._events_thread = threading.Thread(
            target=self._follow_docker_events, daemon=True, name="docker-events"
        )
        self._events_thread.start()

    # ---- status publishing ---------------------------------------------------------------------------------

    def _labels(self, pod: PodRun, role: str) -> dict[str, str]:
        return {CLUSTER_LABEL: self.cluster_id, POD_LABEL: f"{pod.namespace}.{pod.name}", ROLE_LABEL: role}

    def event(
        self, pod: PodRun, reason: str, message: str, *, type_: str = "Normal", field_path: str = ""
    ) -> None:
        ts = now_rfc3339()
        involved: dict[str, Any] = {
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "apiVersion": "v1",
        }
        if field_path:
            involved["fieldPath"] = field_path
        self.store.create(
            {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {
                    "name": f"{pod.name}.{time.time_ns():x}",
                    "namespace": pod.namespace,
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": type_,
                "source": {"component": "kubelet", "host": NODE_NAME},
                "firstTimestamp": ts,
                "lastTimestamp": ts,
                "count": 1,
                "reportingComponent": "kubelet",
                "reportingInstance": NODE_NAME,
            }
        )

    def _container_status(self, c: ContainerRun, pod: PodRun) -> dict[str, Any]:
        image = c.spec.get("image", "")
        status: dict[str, Any] = {
            "name": c.name,
            "image": image,
            "imageID": f"docker-pullable://{image}" if c.image and c.image.local else "",
            "ready": False,
            "restartCount": 0,
            "started": False,
        }
        if c.docker_id:
            status["containerID"] = f"docker://{c.docker_id}"
        if c.exit_code is not None:
            if c.oom and "oom-unreported" not in pod.faults:
                reason = "OOMKilled"
            elif c.exit_code == 0:
                reason = "Completed"
            else:
                reason = "Error"
            status["state"] = {
                "terminated": {
                    "exitCode": c.exit_code,
                    "reason": reason,
                    "startedAt": now_rfc3339(c.started_at),
                    "finishedAt": now_rfc3339(c.finished_at),
                    "containerID": f"docker://{c.docker_id}",
                }
            }
        elif c.started_at is not None:
            status["state"] = {"running": {"startedAt": now_rfc3339(c.started_at)}}
            status["ready"] = not pod.deleting
            status["started"] = True
        else:
            waiting: dict[str, Any] = {"reason": c.waiting_reason or "ContainerCreating"}
            if c.waiting_message:
                waiting["message"] = c.waiting_message
            status["state"] = {"waiting": waiting}
        return status

    def publish(self, pod: PodRun) -> None:
        """Recompute the pod status from what Docker did and write it to the store (a MODIFIED event)."""
        with self._lock:
            inits = pod.ordered("init")
            regular = [c for c in pod.containers.values() if c.kind != "init"]
            init_statuses = [self._container_status(c, pod) for c in inits]
            statuses = [self._container_status(c, pod) for c in regular]
        init_done = all(c.exit_code == 0 for c in inits)
        init_failed = any(c.exit_code not in (None, 0) for c in inits)
        all_started = all(c.started_at is not None for c in regular)
        all_ended = all(c.exit_code is not None for c in regular) and bool(regular)
        if init_failed:
            phase = "Failed"
        elif all_ended:
            phase = "Succeeded" if all(c.exit_code == 0 for c in regular) else "Failed"
        elif init_done and all_started:
            phase = "Running"
        else:
            phase = "Pending"
        not_ready = [s["name"] for s in statuses if not s["ready"]]
        ts = now_rfc3339()

        def cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
            c: dict[str, Any] = {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": ts}
            if not ok and reason:
                c["reason"] = reason
                c["message"] = message
            return c

        unready_msg = f"containers with unready status: [{' '.join(not_ready)}]"
        conditions = [
            cond("PodReadyToStartContainers", pod.pause_id is not None),
            cond(
                "Initialized",
                init_done,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(c.name for c in inits if c.exit_code is None)}]",
            ),
            cond("Ready", not not_ready, "ContainersNotReady", unready_msg),
            cond("ContainersReady", not not_ready, "ContainersNotReady", unready_msg),
            cond("PodScheduled", True),
        ]

        def mutate(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            status["phase"] = phase
            status["conditions"] = conditions
            status["hostIP"] = "127.0.0.1"
            status.setdefault("startTime", ts)
            status["qosClass"] = qos_class(obj.get("spec", {}))
            if init_statuses:
                status["initContainerStatuses"] = init_statuses
            status["containerStatuses"] = statuses

        self.store.update("Pod", pod.namespace, pod.name, mutate)

    # ---- creation ------------------------------------------------------------------------------------------

    def run(self, pod_obj: dict[str, Any], faults: frozenset[str] = frozenset()) -> PodRun:
        """Schedule and start a pod already stored in the API (ADDED); returns when every container started."""
        meta = pod_obj["metadata"]
        pod = PodRun(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            faults=faults,
            repo_binds=self.repo_mounts(pod_obj),
        )
        spec = pod_obj["spec"]
        for c in spec.get("initContainers", []):
            pod.containers[c["name"]] = ContainerRun(c["name"], "init", c)
        for c in spec.get("containers", []):
            kind = "build" if c["name"] == "build" else "helper" if c["name"] == "helper" else "service"
            pod.containers[c["name"]] = ContainerRun(c["name"], kind, c)
        with self._lock:
            self._pods[(pod.namespace, pod.name)] = pod

        def schedule(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = NODE_NAME
            obj.setdefault("status", {})["phase"] = "Pending"

        self.store.update("Pod", pod.namespace, pod.name, schedule)
        self.event(pod, "Scheduled", f"Successfully assigned {pod.namespace}/{pod.name} to {NODE_NAME}")
        self._create_volumes(pod, spec)
        self._start_pause(pod, spec)
        self.publish(pod)
        inits = pod.ordered("init")
        regular = [c for c in pod.containers.values() if c.kind != "init"]
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

    def _create_volumes(self, pod: PodRun, spec: dict[str, Any]) -> None:
        for vol in spec.get("volumes", []):
            if "emptyDir" not in vol:
                continue
            name = f"rc-{pod.name}-{vol['name']}"
            opts = {"type": "tmpfs", "device": "tmpfs"} if vol["emptyDir"].get("medium") == "Memory" else None
            self.client.volumes.create(
                name=name, driver_opts=opts, labels=self._labels(pod, f"volume:{vol['name']}")
            )
            pod.volumes.append(name)

    def _volume_binds(
        self, pod: PodRun, spec: dict[str, Any], container: ContainerRun
    ) -> dict[str, dict[str, str]]:
        names = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        binds: dict[str, dict[str, str]] = {}
        for m in container.spec.get("volumeMounts", []):
            if m["name"] not in names:
                continue
            vol = f"rc-{pod.name}-{m['name']}"
            if m["name"] == "repo" and "builds-not-shared" in pod.faults:
                # The broken cluster gives each container its own /builds instead of the shared emptyDir.
                vol = f"rc-{pod.name}-repo-{container.name}"
                if vol not in pod.volumes:
                    self.client.volumes.create(name=vol, labels=self._labels(pod, "volume:repo-private"))
                    pod.volumes.append(vol)
            binds[vol] = {"bind": m["mountPath"], "mode": "ro" if m.get("readOnly") else "rw"}
        if container.kind == "helper":
            binds.update(pod.repo_binds)
        if container.image is not None and container.image.role == "dind":
            # docker:dind declares VOLUME /var/lib/docker; without one dockerd falls back to vfs (overlay on
            # overlay fails), which makes every inner container start several seconds slower.
            vol = f"rc-{pod.name}-{container.name}-docker"
            self.client.volumes.create(name=vol, labels=self._labels(pod, "volume:dind-storage"))
            pod.volumes.append(vol)
            binds[vol] = {"bind": "/var/lib/docker", "mode": "rw"}
        return binds

    def _start_pause(self, pod: PodRun, spec: dict[str, Any]) -> None:
        extra_hosts: dict[str, str] = {}
        for entry in spec.get("hostAliases", []) or []:
            for host in entry.get("hostnames", []):
                extra_hosts.setdefault(host, entry["ip"])
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
        container = self.client.containers.run(
            self.pause_image,
            ["sleep", "infinity"],
            name=f"rc-{pod.name}-pause",
            hostname=pod.name,
            extra_hosts=extra_hosts or None,
            labels=self._labels(pod, "pause"),
            detach=True,
            init=True,
            network_mode="bridge",
            ipc_mode="shareable",  # containers of a pod share IPC, as on Kubernetes
            volumes=binds,  # holds Memory emptyDirs alive for the pod's lifetime, like the kubelet
            **kwargs,
        )
        pod.pause_id = container.id

    def _docker_kwargs(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> dict[str, Any]:
        cs = c.spec
        env = {e["name"]: e.get("value", "") for e in cs.get("env", [])}
        kwargs: dict[str, Any] = {
            "name": f"rc-{pod.name}-{c.name}",
            "labels": self._labels(pod, c.name),
            "network_mode": f"container:{pod.pause_id}",
            "ipc_mode": f"container:{pod.pause_id}",
            "environment": env,
            "volumes": self._volume_binds(pod, spec, c),
            "stdin_open": bool(cs.get("stdin")),
            "detach": True,
        }
        if cs.get("workingDir"):
            kwargs["working_dir"] = cs["workingDir"]
        limits = (cs.get("resources") or {}).get("limits") or {}
        requests = (cs.get("resources") or {}).get("requests") or {}
        if "limits-not-applied" not in pod.faults:
            if limits.get("memory"):
                mem = memory_to_bytes(limits["memory"])
                kwargs["mem_limit"] = mem
                kwargs["memswap_limit"] = mem  # no swap, as on a kubelet node
            if limits.get("cpu"):
                kwargs["nano_cpus"] = cpu_to_nano(limits["cpu"])
            if requests.get("cpu"):
                kwargs["cpu_shares"] = cpu_shares(quantity_parse(requests["cpu"]))
            if requests.get("memory"):
                kwargs["mem_reservation"] = memory_to_bytes(requests["memory"])
        sec = cs.get("securityContext") or {}
        caps = sec.get("capabilities") or {}
        if sec.get("privileged"):
            kwargs.update(self.privileged_kwargs)
        else:
            if caps.get("add"):
                kwargs["cap_add"] = list(caps["add"])
            if caps.get("drop"):
                kwargs["cap_drop"] = list(caps["drop"])
        return kwargs

    def _command(self, pod: PodRun, c: ContainerRun) -> tuple[list[str] | None, list[str] | None]:
        """(entrypoint, command) for Docker from the pod container's command/args."""
        if c.kind in ("build", "helper"):
            # The runner attaches to these and sends scripts; the emulation execs them instead, so the main
            # process only has to stay alive until the pod is deleted.
            return ["sleep"], ["infinity"]
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
        image = c.spec["image"]
        c.image = self.resolve_image(image)
        field_path = c.field_path
        if c.image.local is None:
            msg = (
                f'Failed to pull image "{image}": rpc error: code = Unknown desc = Error response from daemon: '
                f"pull access denied for {image.split(':')[0]}, repository does not exist or may require "
                "'docker login' (the local cluster reaches no registry and has no stand-in for this image)"
            )
            c.waiting_reason, c.waiting_message = "ErrImagePull", msg
            self.event(pod, "Failed", msg, type_="Warning", field_path=field_path)
            self.event(pod, "Failed", "Error: ErrImagePull", type_="Warning", field_path=field_path)
            return False
        self.event(
            pod, "Pulled", f'Container image "{image}" already present on machine', field_path=field_path
        )
        return True

    def _create(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> Any | None:
        if pod.deleting or not self._pull(pod, c):
            return None
        entrypoint, command = self._command(pod, c)
        kwargs = self._docker_kwargs(pod, spec, c)
        if c.kind in ("build", "helper"):
            kwargs["init"] = True  # PID 1 must forward SIGTERM or deletion waits the whole grace period
        assert c.image is not None  # _pull resolved it
        container = self.client.containers.create(c.image.local, command, entrypoint=entrypoint, **kwargs)
        with self._lock:
            c.docker_id = container.id
            self._by_docker_id[container.id] = (pod, c)
        field_path = c.field_path
        self.event(pod, "Created", f"Created container {c.name}", field_path=field_path)
        return container

    def _start(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> None:
        container = self._create(pod, spec, c)
        if container is None:
            self.publish(pod)
            return
        container.start()
        container.reload()
        c.started_at = docker_time(container.attrs["State"]["StartedAt"]) or time.time()
        field_path = c.field_path
        self.event(pod, "Started", f"Started container {c.name}", field_path=field_path)
        self.publish(pod)

    def _run_to_completion(self, pod: PodRun, spec: dict[str, Any], c: ContainerRun) -> bool:
        self._start(pod, spec, c)
        if c.docker_id is None:
            return False
        self.client.api.wait(c.docker_id)
        self._record_exit(c)
        self.publish(pod)
        return c.exit_code == 0

    # ---- running pods --------------------------------------------------------------------------------------

    def _record_exit(self, c: ContainerRun) -> None:
        if c.docker_id is None or c.exit_code is not None:
            return
        state = self.client.api.inspect_container(c.docker_id)["State"]
        if state.get("Running"):
            return
        c.exit_code = state.get("ExitCode", 0)
        c.oom = c.oom or bool(state.get("OOMKilled"))
        c.finished_at = docker_time(state.get("FinishedAt", "")) or time.time()

    def _follow_docker_events(self) -> None:
        """One event stream for every pod: container exits and cgroup OOMs become status changes."""
        while not self._events_stop.is_set():
            try:
                stream = self.client.events(
                    decode=True, filters={"label": f"{CLUSTER_LABEL}={self.cluster_id}", "type": "container"}
                )
                self._stream = stream
                for ev in stream:
                    if self._events_stop.is_set():
                        return
                    self._on_docker_event(ev)
            except Exception:  # the engine restarted or the stream broke: resubscribe
                if self._events_stop.wait(0.5):
                    return

    def _on_docker_event(self, ev: dict[str, Any]) -> None:
        action = ev.get("Action") or ev.get("status")
        with self._lock:
            found = self._by_docker_id.get(ev.get("id", ""))
        if not found:
            return
        pod, c = found
        if action == "oom":
            c.oom = True
            if c.kind != "init" and not pod.deleting:
                # Kubernetes on cgroup v2 kills the whole container on OOM (memory.oom.group); cgroup v1 kills
                # only the biggest process. Mirror the kubelet: the container dies with reason OOMKilled.
                with contextlib.suppress(Exception):
                    self.client.api.kill(c.docker_id, "SIGKILL")
                self.event(
                    pod,
                    "OOMKilling",
                    f"Memory cgroup out of memory: killed the processes of container {c.name}",
                    type_="Warning",
                )
        elif action == "die":
            self._record_exit(c)
            self.publish(pod)

    def container_state(self, namespace: str, name: str, container: str) -> ContainerRun | None:
        pod = self._pods.get((namespace, name))
        return pod.containers.get(container) if pod else None

    def exec_stream(
        self, namespace: str, name: str, container: str, cmd: list[str], *, workdir: str | None = None
    ) -> tuple[Iterator[bytes], Callable[[], int | None]]:
        """Run a command in a container; returns (output chunks, exit-code getter)."""
        run = self.container_state(namespace, name, container)
        if run is None or run.docker_id is None:
            raise RuntimeError(f"container {container} of pod {namespace}/{name} is not running")
        exec_id = self.client.api.exec_create(run.docker_id, cmd, workdir=workdir, stdout=True, stderr=True)[
            "Id"
        ]
        output = self.client.api.exec_start(exec_id, stream=True)

        def exit_code() -> int | None:
            return self.client.api.exec_inspect(exec_id).get("ExitCode")

        return output, exit_code

    def exec(self, namespace: str, name: str, container: str, cmd: list[str]) -> tuple[bytes, int | None]:
        """Run a command to completion: its whole output and its exit code."""
        output, exit_code = self.exec_stream(namespace, name, container, cmd)
        data = b"".join(output)  # the exit code is only final once the output stream has ended
        return data, exit_code()

    def put_file(
        self, namespace: str, name: str, container: str, path: str, content: bytes, mode: int = 0o755
    ) -> None:
        run = self.container_state(namespace, name, container)
        if run is None or run.docker_id is None:
            raise RuntimeError(f"container {container} of pod {namespace}/{name} is not running")
        directory, _, filename = path.rpartition("/")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(filename)
            info.size = len(content)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
        self.client.api.put_archive(run.docker_id, directory or "/", buf.getvalue())

    def get_archive(self, namespace: str, name: str, container: str, path: str) -> bytes | None:
        run = self.container_state(namespace, name, container)
        if run is None or run.docker_id is None:
            return None
        try:
            stream, _ = self.client.api.get_archive(run.docker_id, path)
        except Exception:
            return None
        return b"".join(stream)

    # ---- deletion ------------------------------------------------------------------------------------------

    def delete(self, namespace: str, name: str, grace_s: float) -> None:
        """Graceful deletion as the API server does it: mark Terminating now, stop and remove in the background."""
        ts = now_rfc3339()

        def mark(obj: dict[str, Any]) -> None:
            obj["metadata"].setdefault("deletionTimestamp", ts)
            obj["metadata"]["deletionGracePeriodSeconds"] = int(grace_s)

        try:
            self.store.update("Pod", namespace, name, mark)
        except Exception:
            return  # already gone
        threading.Thread(
            target=self._finish_delete, args=(namespace, name, grace_s), daemon=True, name=f"delete-{name}"
        ).start()

    def _finish_delete(self, namespace: str, name: str, grace_s: float) -> None:
        """Stop containers (SIGTERM, SIGKILL after the grace period), remove them, then the object goes."""
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is not None:
                if pod.deleting:
                    return
                pod.deleting = True
        if pod is not None:
            running = [c for c in pod.containers.values() if c.docker_id and c.exit_code is None]
            for c in running:
                self.event(pod, "Killing", f"Stopping container {c.name}", field_path=c.field_path)
            threads = [
                threading.Thread(target=self._stop_one, args=(c, grace_s), daemon=True) for c in running
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in running:
                self._record_exit(c)
            self.publish(pod)
        self._remove_leftovers(namespace, name)
        with self._lock:
            if pod is not None:
                for c in pod.containers.values():
                    self._by_docker_id.pop(c.docker_id or "", None)
            self._pods.pop((namespace, name), None)
        self._gc_owned(namespace, name)
        try:
            self.store.delete("Pod", namespace, name)
        finally:
            if pod is not None:
                pod.done.set()

    def _stop_one(self, c: ContainerRun, grace_s: float) -> None:
        with contextlib.suppress(Exception):
            self.client.api.stop(c.docker_id, timeout=max(0, int(grace_s)))

    def _remove_leftovers(self, namespace: str, name: str) -> None:
        remove_labelled(self.client, f"{POD_LABEL}={namespace}.{name}")

    def _gc_owned(self, namespace: str, name: str) -> None:
        """The garbage collector: objects owner-referenced to the pod go with it."""
        items, _ = self.store.list("Secret", namespace)
        for secret in items:
            owners = secret.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("kind") == "Pod" and o.get("name") == name for o in owners):
                self.store.delete("Secret", namespace, secret["metadata"]["name"])

    def remove_all(self) -> None:
        """Remove every container and volume this cluster created (cluster shutdown)."""
        self._events_stop.set()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        remove_labelled(self.client, f"{CLUSTER_LABEL}={self.cluster_id}")


def remove_labelled(client: Any, label: str) -> int:
    """Force-remove every container (with its anonymous volumes) and volume carrying a label."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(Exception):  # gone meanwhile: another cleanup got there first
            container.remove(force=True, v=True)
            removed += 1
    for volume in client.volumes.list(filters={"label": label}):
        with contextlib.suppress(Exception):
            volume.remove(force=True)
            removed += 1
    return removed


def qos_class(spec: dict[str, Any]) -> str:
    containers = list(spec.get("containers", [])) + list(spec.get("initContainers", []))
    res = [c.get("resources") or {} for c in containers]
    if not any(r.get("limits") or r.get("requests") for r in res):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k)) == (r.get("limits") or {}).get(k)
        for r in res
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
