"""The container runtime of the local node (what CRI is to a kubelet), on the local Docker engine.

It knows containers, volumes, exec, attach and logs; it knows nothing of pods. Every object it makes carries
the cluster's labels, so whatever a crash leaves behind can be found and removed by label.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CLUSTER_LABEL = "runnerconf.local/cluster"
POD_LABEL = "runnerconf.local/pod"
ROLE_LABEL = "runnerconf.local/container"


def docker_time(value: str) -> float | None:
    """Docker's nanosecond RFC3339 times -> unix seconds (None for the zero time)."""
    if not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float("0." + frac[:6]) if frac else 0.0)


@dataclass(frozen=True)
class ContainerState:
    running: bool
    exit_code: int | None
    oom: bool
    started_at: float | None
    finished_at: float | None


class ExecStream:
    """A command started in a container with its stdio on one socket (kube_exec.ExecSession).

    Without a TTY Docker multiplexes stdout and stderr in 8-byte-header frames; with one it is a raw stream.
    """

    def __init__(self, api: Any, exec_id: str, sock: Any, tty: bool) -> None:
        self._api = api
        self._id = exec_id
        self._sock: socket.socket = getattr(sock, "_sock", sock)
        self._wrapper = sock
        self._tty = tty
        self._buf = b""
        self._eof = False
        self._early = _read_past_headers(sock, self._sock)

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> bool:
        return bool(self._early)

    def read(self) -> list[tuple[int, bytes]] | None:
        if self._eof:
            return None
        if self._early:
            data, self._early = self._early, b""
        else:
            data = self._sock.recv(65536)
        if not data:
            self._eof = True
            rest = self._buf
            self._buf = b""
            return [(1, rest)] if rest and self._tty else None
        if self._tty:
            return [(1, data)]
        self._buf += data
        out = []
        while len(self._buf) >= 8:
            stream, size = struct.unpack(">BxxxL", self._buf[:8])
            if len(self._buf) < 8 + size:
                break
            out.append((2 if stream == 2 else 1, self._buf[8 : 8 + size]))
            self._buf = self._buf[8 + size :]
        return out

    def write_stdin(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def resize(self, width: int, height: int) -> None:
        if self._tty and width > 0 and height > 0:
            with contextlib.suppress(Exception):
                self._api.exec_resize(self._id, height=height, width=width)

    def exit_code(self) -> int | None:
        """The command's exit code; Docker knows it a moment after the output ends."""
        for _ in range(50):
            info = self._api.exec_inspect(self._id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return None if code is None else int(code)
            time.sleep(0.02)
        return None

    def close(self) -> None:
        # shutdown() first: a plain close() does not wake a recv() blocked in another thread.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(Exception):
            self._wrapper.close()

    def output(self) -> Iterator[tuple[int, bytes]]:
        """Every (stream, bytes) chunk until the command's output ends (blocking)."""
        while True:
            chunks = self.read()
            if chunks is None:
                return
            yield from chunks


def _read_past_headers(sock: Any, raw: socket.socket) -> bytes:
    """What the HTTP response's buffered reader read past the upgrade's headers: a command's first output
    arrives in the same read as the headers when the client is slow to read them (a busy node), and reading
    the raw socket alone loses it (kubectl exec printed nothing). read1 returns only buffered bytes when there
    are any; with the socket non-blocking it never waits when there are none."""
    response = getattr(sock, "_response", None)
    reader = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
    if reader is None or not hasattr(reader, "read1"):
        return b""
    timeout = raw.gettimeout()
    raw.setblocking(False)
    try:
        return reader.read1(65536) or b""
    except (BlockingIOError, OSError, ValueError):
        return b""
    finally:
        raw.settimeout(timeout)


class Runtime:
    """Docker, as the node's runtime: one instance per cluster."""

    def __init__(self, client: Any, cluster_id: str) -> None:
        self.client = client
        self.api = client.api
        self.cluster_id = cluster_id

    def labels(self, pod_key: str, role: str) -> dict[str, str]:
        return {CLUSTER_LABEL: self.cluster_id, POD_LABEL: pod_key, ROLE_LABEL: role}

    # -- volumes

    def create_volume(self, name: str, labels: dict[str, str], *, memory: bool = False) -> None:
        opts = {"type": "tmpfs", "device": "tmpfs"} if memory else None
        self.client.volumes.create(name=name, driver_opts=opts, labels=labels)

    # -- containers

    def run_sandbox(
        self, image: str, *, name: str, hostname: str, labels: dict[str, str], **kwargs: Any
    ) -> str:
        """The pod sandbox: owns the network namespace, IPC and the pod's hostname."""
        container = self.client.containers.run(
            image,
            ["sleep", "infinity"],
            name=name,
            hostname=hostname,
            labels=labels,
            detach=True,
            init=True,
            network_mode="bridge",
            ipc_mode="shareable",  # containers of a pod share IPC, as on Kubernetes
            **kwargs,
        )
        return str(container.id)

    def sandbox_ip(self, container_id: str) -> str:
        info = self.api.inspect_container(container_id)
        return str((info.get("NetworkSettings") or {}).get("IPAddress") or "")

    def create(
        self,
        image: str,
        command: list[str] | None,
        *,
        entrypoint: list[str] | None,
        stdin: bool,
        host_config: dict[str, Any],
        **config: Any,
    ) -> str:
        """Create (not start) a container. stdin stays open across attaches, as a pod's `stdin: true` does."""
        name = config.pop("name", None)
        hc = self.api.create_host_config(**host_config)
        cfg = self.api.create_container_config(
            image, command, entrypoint=entrypoint, stdin_open=stdin, host_config=hc, **config
        )
        cfg["StdinOnce"] = False  # docker-py sets it with stdin_open; a kubelet's containers keep stdin
        return str(self.api.create_container_from_config(cfg, name)["Id"])

    def start(self, container_id: str) -> float:
        self.api.start(container_id)
        state = self.api.inspect_container(container_id)["State"]
        return docker_time(state.get("StartedAt", "")) or time.time()

    def wait(self, container_id: str) -> None:
        self.api.wait(container_id)

    def state(self, container_id: str) -> ContainerState:
        state = self.api.inspect_container(container_id)["State"]
        running = bool(state.get("Running"))
        return ContainerState(
            running=running,
            exit_code=None if running else int(state.get("ExitCode", 0)),
            oom=bool(state.get("OOMKilled")),
            started_at=docker_time(state.get("StartedAt", "")),
            finished_at=None if running else docker_time(state.get("FinishedAt", "")),
        )

    def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        with contextlib.suppress(Exception):
            self.api.kill(container_id, signal)

    def stop(self, container_id: str, timeout_s: int) -> None:
        with contextlib.suppress(Exception):
            self.api.stop(container_id, timeout=max(0, timeout_s))

    def image_size(self, image: str) -> int:
        try:
            return int(self.api.inspect_image(image).get("Size") or 0)
        except Exception:
            return 0

    # -- exec, attach, logs, files

    def exec(
        self, container_id: str, cmd: list[str], *, stdin: bool, tty: bool = False, workdir: str | None = None
    ) -> ExecStream:
        exec_id = self.api.exec_create(
            container_id, cmd, stdin=stdin, stdout=True, stderr=True, tty=tty, workdir=workdir
        )["Id"]
        sock = self.api.exec_start(exec_id, socket=True, tty=tty)
        stream = ExecStream(self.api, exec_id, sock, tty)
        if not stdin:
            stream.close_stdin()
        return stream

    def run(
        self, container_id: str, cmd: list[str], *, input: bytes | None = None, workdir: str | None = None
    ) -> tuple[bytes, int | None]:
        """Run to completion: stdin (then EOF), combined output, exit code."""
        stream = self.exec(container_id, cmd, stdin=input is not None, workdir=workdir)
        try:
            if input is not None:
                stream.write_stdin(input)
                stream.close_stdin()
            data = b"".join(chunk for _, chunk in stream.output())
            return data, stream.exit_code()
        finally:
            stream.close()

    def attach_stdin(self, container_id: str, data: bytes) -> None:
        """Write to the main process's stdin (pods/attach with stdin only); stdin stays open afterwards."""
        sock = self.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(data)
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_WR)
        finally:
            with contextlib.suppress(OSError):
                raw.close()
            with contextlib.suppress(Exception):
                sock.close()

    def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        timestamps: bool,
        tail: int | None,
        since: float | None,
    ) -> Iterator[bytes]:
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": timestamps, "follow": follow}
        if tail is not None:
            kwargs["tail"] = tail
        if since is not None:
            kwargs["since"] = int(since)
        if follow:
            return iter(self.api.logs(container_id, stream=True, **kwargs))
        return iter([self.api.logs(container_id, stream=False, **kwargs)])

    def put_file(self, container_id: str, path: str, content: bytes, mode: int = 0o755) -> None:
        directory, _, filename = path.rpartition("/")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(filename)
            info.size = len(content)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
        self.api.put_archive(container_id, directory or "/", buf.getvalue())

    def put_archive(self, container_id: str, directory: str, tar: bytes) -> None:
        self.api.put_archive(container_id, directory, tar)

    def get_archive(self, container_id: str, path: str) -> bytes | None:
        try:
            stream, _ = self.api.get_archive(container_id, path)
        except Exception:
            return None
        return b"".join(stream)

    # -- events and clean-up

    def events(self) -> Iterator[dict[str, Any]]:
        """Container events of this cluster (exits, OOMs) as Docker reports them."""
        return iter(
            self.client.events(
                decode=True, filters={"label": f"{CLUSTER_LABEL}={self.cluster_id}", "type": "container"}
            )
        )

    def remove_labelled(self, label: str) -> int:
        return remove_labelled(self.client, label)


def remove_labelled(client: Any, label: str) -> int:
    """Force-remove every container (with its anonymous volumes) and volume carrying a label."""
    removed = 0
    # The low-level list: containers.list() inspects each listed container, and one removed meanwhile (its
    # pod's other cleanup got there first) made it raise NotFound, which left a deleted pod in the API.
    for container in client.api.containers(all=True, filters={"label": label}, quiet=True):
        with contextlib.suppress(Exception):  # gone meanwhile: another cleanup got there first
            client.api.remove_container(container["Id"], force=True, v=True)
            removed += 1
    for volume in client.volumes.list(filters={"label": label}):
        with contextlib.suppress(Exception):
            volume.remove(force=True)
            removed += 1
    return removed
