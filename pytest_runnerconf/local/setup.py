"""What the local cluster needs on the host, and the one command that provides it (`runnerconf local setup`).

A test session never changes the host: it only checks, and names the command when something is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import docker

from pytest_runnerconf.local import engine, images
from pytest_runnerconf.local.errors import LocalSetupMissing

SETUP_COMMAND = "runnerconf local setup"
# Needed at run time; debootstrap is only needed to build images, which setup does.
RUNTIME_PACKAGES = ("dnsmasq-base", "docker-registry", "git")


def missing() -> list[str]:
    """What is missing for the local cluster to start, one phrase each; [] when it can start."""
    try:
        client = engine.docker_client(ensure=False)
    except engine.EngineError:
        return [f"a Docker engine answering at {engine.docker_host()}"]
    gaps = [f"the host package {p}" for p in engine.missing_host_packages() if p in RUNTIME_PACKAGES]
    gaps += [f"the image {name}" for name in images.missing_images(client)]
    return gaps


def require() -> docker.DockerClient:
    """The engine's client when everything the cluster needs is in place.

    Raises:
        LocalSetupMissing: one sentence naming what is missing and the command that provides it.
    """
    gaps = missing()
    if gaps:
        raise LocalSetupMissing(
            f"the local cluster is not set up on this machine (missing: {', '.join(gaps)}); "
            f"run `{SETUP_COMMAND}` as root once, then run again"
        )
    return engine.docker_client(ensure=False)


def run_setup(log: Callable[[str], None] = print) -> None:
    """Install and start the Docker engine, install the host packages and build the images (idempotent)."""
    started = time.monotonic()
    client = engine.docker_client(ensure=True)
    engine.ensure_host_packages()
    log(f"runnerconf local: engine and host packages ready ({time.monotonic() - started:.1f}s)")
    images.ensure_images(client, log=log)
    log(f"runnerconf local: set-up done ({time.monotonic() - started:.1f}s)")
