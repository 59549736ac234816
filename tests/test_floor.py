"""The declared minimum versions are versions the drivers work with: pyproject's floors, installed exactly in a
fresh venv, pass the drivers' tests against the loopback fakes (no Docker).

The floors are read from pyproject.toml itself, so raising or lowering one is what this test then proves.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the drivers' tests import besides the core dependencies: the local API servers (wsproto for exec).
TEST_EXTRAS = ("wsproto",)
DRIVER_TESTS = ("tests/test_kube_driver.py", "tests/test_gitlab_driver.py", "tests/test_preflight.py")


def floors() -> dict[str, str]:
    """name -> the lowest version pyproject allows, for every core dependency and TEST_EXTRAS."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    specs += [s for s in project["optional-dependencies"]["local"] if s.split(">=")[0] in TEST_EXTRAS]
    found: dict[str, str] = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)", spec.strip())
        assert match, f"{spec!r}: every dependency declares its floor as name>=version"
        found[match[1]] = match[2]
    return found


def test_every_dependency_the_drivers_import_has_a_floor() -> None:
    assert {"kubernetes", "python-gitlab", "urllib3", "requests", "pyyaml", "pytest"} <= set(floors())


@pytest.mark.floor
def test_the_drivers_pass_their_tests_at_the_declared_floors(tmp_path: Path) -> None:
    home = tmp_path / "floor"
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    pins = [f"{name}=={version}" for name, version in floors().items()]
    started = time.monotonic()
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # pip's cache serves the pinned wheels after the first run.
    installed = subprocess.run([*pip, *pins], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    package = subprocess.run([*pip, "--no-deps", str(ROOT)], capture_output=True, text=True, timeout=300)
    assert package.returncode == 0, package.stderr[-3000:]
    names = ("kubernetes", "python-gitlab", "urllib3", "requests")
    versions = subprocess.run(
        [python, "-c", "import kubernetes, gitlab, urllib3, requests; "
         "print(kubernetes.__version__, gitlab.__version__, urllib3.__version__, requests.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name, version in zip(names, versions, strict=True):
        floor = floors()[name]
        assert version == floor or version.startswith(f"{floor}."), (
            f"{name} {version} is not its floor {floor}"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNERCONF_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    # From outside the checkout: the package under test is the one installed next to the floors.
    tests = [str(ROOT / t) for t in DRIVER_TESTS]
    proc = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            *tests,
            f"--rootdir={ROOT}",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not docker",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"at the floors {pins}:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
    assert re.search(r"\b\d+ passed\b", proc.stdout), proc.stdout[-500:]
    print(f"floor venv and driver tests: {time.monotonic() - started:.0f}s")
