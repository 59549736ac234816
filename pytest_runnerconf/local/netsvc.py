"""The local cluster's own DNS server (dnsmasq) and image registry, bound only to the docker bridge."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from pytest_runnerconf.local.errors import LocalStartError

CLUSTER_ZONES = ("runnerconf.test", "cluster.local")
REGISTRY_HOST = "registry.runnerconf.test"
READY_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)


class ServiceError(LocalStartError):
    """A local-cluster host service (DNS server, registry) could not be started or used."""


@dataclass
class Service:
    """A host process of the local cluster; its pid file lives under the cluster home."""

    name: str
    pid: int
    address: str
    pid_file: Path
    log_file: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return pid_running(self.pid)

    def stop(self) -> None:
        if self._process is not None:
            _stop_child(self._process)
        else:
            _stop_pid(self.pid)
        # After a restart under the same home the pid file names the successor: leave it alone.
        if _read_pid(self.pid_file) == self.pid:
            self.pid_file.unlink(missing_ok=True)


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, STOP_DEADLINE_S):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, STOP_DEADLINE_S)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pid_running(pid: int) -> bool:
    """True while any thread of pid lives; an exited process not yet reaped (zombie) counts as gone.

    Threads, not just the leader: a multithreaded server's leader turns zombie while its other threads
    are still exiting and still hold its sockets.
    """
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _run_dir(home: Path) -> Path:
    path = home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stop_all(home: Path) -> list[str]:
    """Stop every service whose pid file is under home (after a crash too); return the names stopped."""
    run = home / "run"
    if not run.is_dir():
        return []
    stopped = []
    marker = str(home.resolve()) + "/"
    for pid_file in sorted(run.glob("*.pid")):
        pid = _read_pid(pid_file)
        # Our services carry the home path in their argv; anything else is a recycled pid, not ours.
        if pid and pid_running(pid) and any(marker in arg for arg in _cmdline(pid)):
            _stop_pid(pid)
            stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped


def _read_pid(pid_file: Path) -> int:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def bridge_name(client: docker.DockerClient) -> str:
    """The host interface of Docker's default bridge (docker0 unless the engine was told otherwise)."""
    options = client.networks.get("bridge").attrs.get("Options") or {}
    return str(options.get("com.docker.network.bridge.name") or "docker0")


def bridge_gateway(client: docker.DockerClient) -> str:
    """The IPv4 address of the default bridge on the host (where containers reach host services)."""
    network = client.networks.get("bridge")
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        gateway = config.get("Gateway", "")
        if gateway and ":" not in gateway:
            return gateway.split("/")[0]
    bridge = network.attrs.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    address = _interface_ipv4(bridge)
    if address:
        return address
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        subnet = config.get("Subnet", "")
        if subnet and ":" not in subnet:
            # dockerd's default: the gateway is the subnet's first host.
            return str(next(ipaddress.ip_network(subnet).hosts()))
    raise ServiceError(
        "the docker `bridge` network has no IPv4 gateway; check `docker network inspect bridge`"
    )


def _interface_ipv4(name: str) -> str:
    result = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", name], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return ""
    for link in json.loads(result.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                return str(info["local"])
    return ""


def port_free(host: str, port: int, kinds: tuple[int, ...] = (socket.SOCK_STREAM,)) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                # Ignore TIME_WAIT leftovers; a live listener still refuses the bind. Not for UDP, where
                # two SO_REUSEADDR sockets may share a port and the probe would pass beside a live server.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str, kinds: tuple[int, ...] = (socket.SOCK_STREAM,)) -> int:
    """An ephemeral port free on host for every socket kind (tests run services beside a live cluster)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kinds[0]) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port_free(host, port, kinds):
            return port
    raise ServiceError(f"found no port free for {len(kinds)} socket kinds on {host}")


def _spawn(name: str, argv: list[str], home: Path, host: str, port: int, kinds: tuple[int, ...]) -> Service:
    run = _run_dir(home)
    pid_file = run / f"{name}.pid"
    log_file = run / f"{name}.log"
    old = _read_pid(pid_file) if pid_file.exists() else 0
    if old and pid_running(old) and any(str(home.resolve()) + "/" in a for a in _cmdline(old)):
        # A previous start under the same home: replace it so the new configuration applies.
        _stop_pid(old)
    # Without this a leftover server on the port would pass our readiness probe in place of ours.
    if not port_free(host, port, kinds):
        raise ServiceError(
            f"{host}:{port} is already in use, so the local {name} cannot start; stop what holds it "
            "(`runnerconf local down` for a crashed local cluster)"
        )
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(f"{process.pid}\n")
    return Service(
        name=name,
        pid=process.pid,
        address=f"{host}:{port}",
        pid_file=pid_file,
        log_file=log_file,
        _process=process,
    )


def _wait_ready(service: Service, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if not service.alive():
            tail = " | ".join(service.log_file.read_text(errors="replace").splitlines()[-3:])
            service.stop()
            raise ServiceError(f"{service.name} exited right after starting: {tail}")
        if probe():
            return
        time.sleep(0.05)
    service.stop()
    raise ServiceError(f"{service.name} did not answer at {service.address} within {READY_DEADLINE_S:.0f} s")


# --- DNS ---------------------------------------------------------------------------------------------------


def start_dns(home: Path, gateway: str, records: dict[str, str], port: int = 53) -> Service:
    """dnsmasq answering only `records`, NXDOMAIN for the rest of the cluster zones; forwards nothing."""
    dnsmasq = shutil.which("dnsmasq")
    if dnsmasq is None:
        raise ServiceError("dnsmasq is not installed; run `apt-get install -y dnsmasq-base` as root")
    home = home.resolve()
    run = _run_dir(home)
    argv = [
        dnsmasq,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        f"--listen-address={gateway}",
        f"--port={port}",
        "--pid-file=",  # no pid file of its own: it stays our child and run/dns.pid names it
        f"--log-facility={run / 'dns.log'}",
        "--log-queries",
        *(f"--local=/{zone}/" for zone in CLUSTER_ZONES),
        *(f"--host-record={name},{address}" for name, address in sorted(records.items())),
    ]
    service = _spawn("dns", argv, home, gateway, port, (socket.SOCK_DGRAM, socket.SOCK_STREAM))
    probe_name = next(iter(sorted(records)), f"ready.{CLUSTER_ZONES[0]}")
    _wait_ready(service, lambda: _dns_answers(gateway, port, probe_name))
    return service


def _dns_answers(server: str, port: int, name: str) -> bool:
    try:
        dns_query(server, name, port=port, timeout=0.2)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class DnsAnswer:
    rcode: int
    authoritative: bool
    addresses: tuple[str, ...]

    @property
    def nxdomain(self) -> bool:
        return self.rcode == 3


def dns_query(server: str, name: str, port: int = 53, qtype: int = 1, timeout: float = 2.0) -> DnsAnswer:
    """One UDP DNS query built by hand (stdlib only); A/AAAA addresses of the answer section."""
    query_id = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    packet = (
        struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + b"\0" + struct.pack(">HH", qtype, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # Connected, so a closed port fails at once (ICMP unreachable) instead of after the timeout.
        sock.connect((server, port))
        sock.send(packet)
        while True:
            data = sock.recv(4096)
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == query_id:
                return _parse_response(data)


def _parse_response(data: bytes) -> DnsAnswer:
    _, flags, qdcount, ancount, _, _ = struct.unpack(">HHHHHH", data[:12])
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        rtype, _, _, rdlength = struct.unpack(">HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + rdlength]
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlength == 16:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
        offset += rdlength
    return DnsAnswer(rcode=flags & 0xF, authoritative=bool(flags & 0x0400), addresses=tuple(addresses))


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # compression pointer ends the name
            return offset + 2
        offset += 1 + length


# --- registry ----------------------------------------------------------------------------------------------


def start_registry(
    home: Path, gateway: str, port: int = 5000, *, name: str = "registry", htpasswd: Path | None = None
) -> Service:
    """Debian's docker-registry (distribution v2): plain HTTP on gateway:port, delete enabled.

    Without HTPASSWD anyone may pull and push (the cluster's image mirror); with it every request needs basic
    auth from that bcrypt htpasswd file (registry/auth/htpasswd in distribution: the only password format it
    takes), as a project's container registry asks of `docker login`.
    """
    registry = shutil.which("docker-registry")
    if registry is None:
        raise ServiceError(
            "docker-registry is not installed; run `apt-get install -y docker-registry` as root"
        )
    home = home.resolve()
    storage = home / name
    storage.mkdir(parents=True, exist_ok=True)
    config = _run_dir(home) / f"{name}.yml"
    settings: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": f"runnerconf-{name}"}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"{gateway}:{port}"},
    }
    if htpasswd is not None:
        settings["auth"] = {"htpasswd": {"realm": f"runnerconf-{name}", "path": str(htpasswd)}}
    # JSON is YAML: no template engine needed for the config.
    config.write_text(json.dumps(settings, indent=2))
    service = _spawn(name, [registry, "serve", str(config)], home, gateway, port, (socket.SOCK_STREAM,))
    # /v2/ answers 401 with a challenge when auth is on: that too says the registry is up.
    ready = (401,) if htpasswd is not None else (200,)
    _wait_ready(service, lambda: _http_status(f"http://{gateway}:{port}/v2/") in ready)
    return service


def write_htpasswd(path: Path, user: str, password: str) -> Path:
    """One bcrypt htpasswd entry, as `htpasswd -B` writes it (the registry accepts bcrypt only)."""
    import bcrypt

    # Cost 5 (bcrypt's minimum of 4, plus one): the registry checks the hash on every request of a push.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{user}:{hashed}\n")
    path.chmod(0o600)
    return path


def _http_status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def registry_catalog(gateway: str, port: int = 5000) -> list[str]:
    with urllib.request.urlopen(f"http://{gateway}:{port}/v2/_catalog", timeout=5) as response:
        return list(json.load(response).get("repositories", []))


def registry_config_digest(gateway: str, port: int, repo: str, tag: str) -> str:
    """The image-config digest (= docker image id) of repo:tag in the registry, or "" when absent."""
    request = urllib.request.Request(
        f"http://{gateway}:{port}/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            manifest = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        raise ServiceError(f"registry at {gateway}:{port} answered {exc.code} for {repo}:{tag}") from exc
    return str(manifest.get("config", {}).get("digest", ""))


def push_to_registry(
    client: docker.DockerClient,
    image_tag: str,
    repo: str,
    gateway: str,
    port: int = 5000,
    registry_host: str = REGISTRY_HOST,
) -> str:
    """Push a local image as repo[:tag] (default tag latest); return the reference DinD pulls."""
    name, _, tag = repo.rpartition(":") if ":" in repo.rsplit("/", 1)[-1] else (repo, "", "latest")
    image = client.images.get(image_tag)
    reference = f"{registry_host}:{port}/{name}:{tag}"
    if registry_config_digest(gateway, port, name, tag) == image.id:
        return reference
    # The host dockerd speaks plain HTTP only to 127.0.0.0/8, so the push goes through a loopback forwarder.
    with tcp_forwarder(gateway, port) as local_port:
        local_repo = f"127.0.0.1:{local_port}/{name}"
        image.tag(local_repo, tag)
        try:
            _push(client, local_repo, tag)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"{local_repo}:{tag}", noprune=True)
    if registry_config_digest(gateway, port, name, tag) != image.id:
        raise ServiceError(f"pushed {image_tag} as {name}:{tag} but the registry does not show it")
    return reference


def _push(client: docker.DockerClient, repository: str, tag: str) -> None:
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise ServiceError(f"docker push {repository}:{tag} failed: {line['error']}")


@contextlib.contextmanager
def tcp_forwarder(target_host: str, target_port: int) -> Iterator[int]:
    """Forward connections on 127.0.0.1:<ephemeral> to target; yields the local port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stopping = threading.Event()
    accept = threading.Thread(
        target=_accept_loop, args=(listener, target_host, target_port, stopping), daemon=True
    )
    accept.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        accept.join(timeout=5)


def _accept_loop(listener: socket.socket, host: str, port: int, stopping: threading.Event) -> None:
    while not stopping.is_set():
        try:
            client_side, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection((host, port), timeout=10)
        except OSError:
            client_side.close()
            continue
        upstream.settimeout(None)
        threading.Thread(target=_relay, args=(client_side, upstream), daemon=True).start()


def _relay(a: socket.socket, b: socket.socket) -> None:
    back = threading.Thread(target=_pipe, args=(b, a), daemon=True)
    back.start()
    _pipe(a, b)
    back.join()
    a.close()
    b.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    # Half-close so the peer sees EOF while the other direction may still be flowing.
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
