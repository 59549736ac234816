"""The local cluster's Docker engine: find it, install and start it when we may, and probe --privileged."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from filelock import FileLock

from pytest_runnerconf.local.errors import LocalStartError


class EngineError(LocalStartError):
    """No Docker engine answers and none can be started."""


DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKERD_LOG = Path("/var/log/runnerconf-dockerd.log")
START_LOCK = Path("/run/runnerconf-dockerd.lock")
START_DEADLINE_S = 30.0
PING_API_VERSION = "1.24"
PING_TIMEOUT_S = 5
OP_TIMEOUT_S = 120

# Debian package -> what it must provide; everything the local cluster runs on the host.
HOST_PACKAGES: dict[str, str] = {
    "docker.io": "dockerd",
    "debootstrap": "debootstrap",
    "dnsmasq-base": "dnsmasq",
    "docker-registry": "docker-registry",
    "git": "git",
}

PSEUDO_PRIVILEGED: dict[str, object] = {
    "cap_add": ["ALL"],
    # CAP_SYS_RESOURCE can be missing from a VM's bounding set, which is what makes --privileged fail there.
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
}

_apt_updated = False
_apt_lock = threading.Lock()
_privileged_cache: dict[str, tuple[dict[str, object], str]] = {}
_privileged_lock = threading.Lock()


def _is_root() -> bool:
    return os.geteuid() == 0


def _is_debian() -> bool:
    return shutil.which("apt-get") is not None and shutil.which("dpkg-query") is not None


def missing_host_packages() -> list[str]:
    if shutil.which("dpkg-query") is None:
        return sorted(HOST_PACKAGES)
    missing = []
    for package in HOST_PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
        )
        if status.returncode != 0 or not status.stdout.endswith(" installed"):
            missing.append(package)
    return missing


def ensure_host_packages() -> list[str]:
    """Install whichever host packages are missing in one apt transaction; return what was installed."""
    missing = missing_host_packages()
    if not missing:
        return []
    if not (_is_root() and _is_debian()):
        raise EngineError(
            f"host packages {', '.join(missing)} are missing and cannot be installed here (needs root on "
            f"Debian); run `apt-get install -y {' '.join(missing)}` as root"
        )
    with _apt_lock:
        _apt_update_once()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        tail = " | ".join(result.stdout.splitlines()[-3:] + result.stderr.splitlines()[-3:])
        raise EngineError(f"apt-get install {' '.join(missing)} failed ({result.returncode}): {tail}")
    return missing


def _apt_update_once() -> None:
    global _apt_updated
    if _apt_updated:
        return
    result = subprocess.run(["apt-get", "update"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EngineError(f"apt-get update failed ({result.returncode}): {result.stderr.strip()[-300:]}")
    _apt_updated = True


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def _connect(host: str) -> docker.DockerClient | None:
    """A client whose engine answers a ping, or None."""
    try:
        # A pinned old API version keeps the probe from asking the server's version first, and the
        # short timeout keeps an unreachable tcp:// DOCKER_HOST from hanging for the long op timeout.
        if not docker.APIClient(base_url=host, version=PING_API_VERSION, timeout=PING_TIMEOUT_S).ping():
            return None
        return docker.DockerClient(base_url=host, timeout=OP_TIMEOUT_S)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None


def docker_client(ensure: bool = True) -> docker.DockerClient:
    """A client for an engine that answers; with ensure, install and start dockerd when we are allowed."""
    host = docker_host()
    client = _connect(host)
    if client is not None:
        return client
    if not ensure:
        raise EngineError(f"no Docker engine answers at {host}; start dockerd or set DOCKER_HOST")
    if host != DEFAULT_DOCKER_HOST:
        raise EngineError(
            f"no Docker engine answers at DOCKER_HOST={host}; start that engine or unset DOCKER_HOST"
        )
    if not _is_root():
        raise EngineError(
            f"no Docker engine answers at {host} and none could be started (not root); "
            "start dockerd or set DOCKER_HOST"
        )
    if shutil.which("dockerd") is None:
        if not _is_debian():
            raise EngineError(
                f"no Docker engine answers at {host} and dockerd is not installed (not Debian); "
                "install Docker and start dockerd"
            )
        ensure_host_packages()
    with FileLock(str(START_LOCK)):
        # Another process may have started it while we waited for the lock.
        return _connect(host) or _start_dockerd(host)


def _start_dockerd(host: str) -> docker.DockerClient:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError("dockerd is still missing after installing docker.io; check apt's output")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(DOCKERD_LOG, "ab") as log:
        process = subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        client = _connect(host)
        if client is not None:
            return client
        if process.poll() is not None:
            raise EngineError(
                f"dockerd exited with {process.returncode} right after starting; read {DOCKERD_LOG}"
            )
        time.sleep(0.1)
    raise EngineError(
        f"dockerd (pid {process.pid}) did not answer within {START_DEADLINE_S:.0f} s; read {DOCKERD_LOG}"
    )


def privileged_kwargs(client: docker.DockerClient, image: str | None = None) -> tuple[dict[str, object], str]:
    """docker-py run/create kwargs for `privileged: true`, and "privileged" or "pseudo-privileged"."""
    key = str(client.api.base_url)
    with _privileged_lock:
        if key not in _privileged_cache:
            _privileged_cache[key] = _probe_privileged(client, image or _probe_image(client))
        kwargs, mode = _privileged_cache[key]
    return copy.deepcopy(kwargs), mode


def _probe_image(client: docker.DockerClient) -> str:
    from pytest_runnerconf.local.images import ensure_images

    return ensure_images(client, ["base"], log=lambda _line: None)["base"]


def _probe_privileged(client: docker.DockerClient, image: str) -> tuple[dict[str, object], str]:
    container = client.containers.create(
        image, ["true"], privileged=True, labels={"runnerconf.role": "privileged-probe"}
    )
    try:
        container.start()
    except docker.errors.APIError as exc:
        if "unable to apply caps" in str(exc) or "operation not permitted" in str(exc):
            return dict(PSEUDO_PRIVILEGED), "pseudo-privileged"
        raise EngineError(f"probe container for --privileged failed for another reason: {exc}") from exc
    finally:
        container.remove(force=True)
    return {"privileged": True}, "privileged"
