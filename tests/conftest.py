"""Shared fixtures for the project's own tests: the Docker engine and one local cluster per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_runnerconf.local.errors import LocalError

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    # In CI the project's own set-up must have provided Docker: a missing engine is a failure there.
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    from pytest_runnerconf.local import engine

    try:
        return engine.docker_client(ensure=False)  # set-up is `runnerconf local setup`, never a test
    except LocalError as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def local_cluster(docker_client: Any) -> Iterator[Any]:
    """A running local cluster: reuses one that runs, else starts one and stops it at the end."""
    from pytest_runnerconf.local import cluster

    try:
        info, stop = cluster.ensure_running(log=lambda m: None)
    except LocalError as exc:
        _unavailable(f"the local cluster cannot start: {exc}")
    yield info
    if stop is not None:
        stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests using docker carry the marker so `-m "not docker"` gives a quick, engine-free run.
    for item in items:
        if {"docker_client", "local_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
