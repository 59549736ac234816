"""What users install: the wheel carries the suite, the probes and the local cluster's data, and the installed
suite runs from an empty directory against the local cluster (what CI runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.busy_node import clean_run
from tests.report_schema import errors_of

ROOT = Path(__file__).resolve().parent.parent
TIMING = "RUNNERCONF_WHEEL_TIMING"  # set to a file path to record build and install times (benchmarks)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built once from an sdist (what `python -m build` makes), never from stale build/ dirs."""
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    _timing("build_s", time.monotonic() - started)
    (built,) = out.glob("*.whl")
    return built


def _timing(key: str, value: float) -> None:
    path = os.environ.get(TIMING)
    if path:
        data = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        data[key] = round(value, 1)
        Path(path).write_text(json.dumps(data))


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _repo_files(folder: str) -> set[str]:
    tracked = subprocess.run(
        ["git", "ls-files", folder], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return {p for p in tracked if not p.endswith("/")}


def test_wheel_carries_suite_probes_and_local_data(wheel: Path) -> None:
    names = _names(wheel)
    for path in _repo_files("fixtures"):
        assert f"pytest_runnerconf/{path}" in names, path
    for path in _repo_files("suites"):
        assert f"pytest_runnerconf/{path}" in names, path
    assert "pytest_runnerconf/py.typed" in names
    for path in _repo_files("pytest_runnerconf/templates"):
        assert path in names, path  # report.html is rendered from these
    schemas = _repo_files("pytest_runnerconf/schemas")
    assert "pytest_runnerconf/schemas/report-v2.schema.json" in schemas
    for path in schemas:
        assert path in names, path  # report.json's schema, for the gate and dashboards
    assert not any(n.startswith(("tests/", "suites/", "fixtures/")) for n in names)


def test_wheel_declares_its_entry_points_and_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        dist_info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "[pytest11]\nrunnerconf = pytest_runnerconf.plugin" in entry_points
    assert (
        "[pytest_runnerconf.targets]\nlocal = pytest_runnerconf.local.provider:LocalProvider" in entry_points
    )
    assert "runnerconf = pytest_runnerconf.cli:main" in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    # A production run needs no Docker SDK and no Allure; those come with the extras.
    assert not any("docker" in r or "allure" in r for r in core), core
    assert any("docker" in r and 'extra == "local"' in r for r in requires)
    assert any("allure-pytest" in r and 'extra == "allure"' in r for r in requires)


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel and its [local] extra installed; returns its bin/."""
    home = tmp_path_factory.mktemp("installed")
    venv.create(home / "venv", with_pip=True)
    python = home / "venv" / "bin" / "python"
    started = time.monotonic()
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[local]"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    _timing("install_s", time.monotonic() - started)
    return home / "venv" / "bin"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNERCONF_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    if "RUNNERCONF_LOCAL_HOME" in os.environ:
        env["RUNNERCONF_LOCAL_HOME"] = os.environ["RUNNERCONF_LOCAL_HOME"]
    return env


def test_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [str(installed / "python"), "-c", "import pytest_runnerconf, sys; print(pytest_runnerconf.__file__)"],
        cwd=tmp_path,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert not found.startswith(str(ROOT)), found
    version = subprocess.run(
        [str(installed / "runnerconf"), "--version"], env=_clean_env(), capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("runnerconf "), version


def test_installed_package_renders_report_html_from_its_templates(installed: Path, tmp_path: Path) -> None:
    script = (
        "from pytest_runnerconf import report_html; "
        "doc = {'counts': {'passed': 1}, 'results': [{'id': 'RC-X-001', 'outcome': 'passed', 'area': 'x'}]}; "
        "print(report_html.render(doc, None))"
    )
    page = subprocess.run(
        [str(installed / "python"), "-c", script],
        cwd=tmp_path,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert page.startswith("<!DOCTYPE html>") and 'data-check="RC-X-001"' in page and "conformant" in page


def _installed_schema(installed: Path) -> dict[str, Any]:
    """report.json's schema as the installed package ships it (read by the installed package itself)."""
    script = (
        "import json; from pytest_runnerconf.report import report_schema; print(json.dumps(report_schema()))"
    )
    out = subprocess.run(
        [str(installed / "python"), "-c", script],
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    schema: dict[str, Any] = json.loads(out)
    return schema


def test_installed_suite_passes_on_the_local_cluster_from_an_empty_directory(
    installed: Path, local_cluster: Any, tmp_path: Path
) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(installed / "pytest"),
            "--pyargs",
            "pytest_runnerconf.suites",
            "--runner-cluster=local",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=work,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    _timing("installed_suite_s", time.monotonic() - started)
    # Reports and evidence land where the user stands, not in site-packages.
    path = work / "runnerconf-report" / "report.json"
    assert path.is_file(), proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads(path.read_text())
    assert clean_run(proc.returncode, report), proc.stdout[-4000:] + proc.stderr[-2000:]
    assert errors_of(report, _installed_schema(installed)) == []  # the schema the wheel ships
    assert len(report["results"]) >= 34
    assert list((work / "runnerconf-evidence").iterdir())


def test_team_check_with_its_own_probe_runs_on_the_installed_package(
    installed: Path, local_cluster: Any, tmp_path: Path
) -> None:
    from tests.test_seam import TEAM_CHECK, TEAM_PROBE, TEAM_SCRIPT

    (tmp_path / "teamchecks").mkdir()
    (tmp_path / "teamchecks" / "test_team.py").write_text(TEAM_CHECK)
    (tmp_path / "teamprobes").mkdir()
    (tmp_path / "teamprobes" / "team-marker.yml").write_text(TEAM_PROBE)
    (tmp_path / "teamprobes" / "team-marker.sh").write_text(TEAM_SCRIPT)
    proc = subprocess.run(
        [str(installed / "pytest"), "teamchecks", "--runner-cluster=local", "--runnerconf-probes=teamprobes",
         "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "runnerconf-report" / "report.json").read_text())
    assert [(r["id"], r["outcome"]) for r in report["results"]] == [("RC-TMX-001", "passed")]
