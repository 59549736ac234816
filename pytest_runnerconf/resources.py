"""Where the package's data lives once installed: probes, the local cluster's config and image recipes."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

FIXTURES_PACKAGE = "pytest_runnerconf.fixtures"


def fixtures_path(*parts: str) -> Path:
    """A path inside the shipped fixtures (wheel or checkout; a zipped install is not supported).

    Raises:
        FileNotFoundError: the installed package lacks that data (a broken or partial install).
    """
    root = files(FIXTURES_PACKAGE)
    path = Path(str(root.joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(f"{path}: package data missing from pytest-runnerconf; reinstall the package")
    return path
