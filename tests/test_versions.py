"""The runner version table: its rows are well formed and name real checks, and a row flips a check to skipped
when the trace header says an older runner (a saved bundle replayed with its headers rewritten)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf import versions
from pytest_runnerconf.jobend import SUPPORTED_FLOOR
from pytest_runnerconf.trace import parse_trace

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "data" / "bundles" / "local-clean.tar.gz"  # runner 18.11.4 (its README)
HEADER = "Running with gitlab-runner 18.11.4 "


def suite_check_ids() -> set[str]:
    found = set()
    for path in (ROOT / "suites").glob("test_*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith('id="RC-'):
                found.add(line.split('"')[1])
    return found


def test_every_row_is_well_formed_and_names_checks_that_exist() -> None:
    known = suite_check_ids()
    assert "RC-ORD-004" in known
    keys = [row.key for row in versions.TABLE]
    assert len(keys) == len(set(keys))
    for row in versions.TABLE:
        assert row.kind in (versions.ARRIVED, versions.CHANGED), row
        assert "CHANGELOG.md v" in row.source or "commit" in row.source, row  # where it was verified
        assert (row.kind == versions.CHANGED) == bool(row.before), row
        assert set(row.checks) <= known, row.checks


def test_present_from_the_version_on_and_unnumbered_counts_as_newest() -> None:
    row = versions.lookup("service_health_check")
    assert not row.present("16.8.3")
    assert row.present("16.9.0") and row.present("18.11.4") and row.present("17.0.0~pre.88.g761ae5dd")
    assert row.present("development version")
    root = versions.lookup("root_id_leading_zeros_refused")
    assert not root.present("18.11.0") and root.present("18.11.1")
    assert root.since_text == "18.11.1" and row.since_text == "16.9"
    assert versions.lookup("services_host_aliases").reason("12.7.0") == (
        "hostAliases for services arrived in 12.8; the runner under test is gitlab-runner 12.7.0"
    )
    with pytest.raises(KeyError, match="known: services_host_aliases"):
        versions.lookup("no-such-behaviour")


def test_decisions_follow_the_oldest_runner_of_the_run() -> None:
    rows = {r["key"]: r for r in versions.decisions(["18.11.4", "16.8.0"])}
    assert rows["service_health_check"]["present"] is False
    assert rows["service_health_check"]["runner_version"] == "16.8.0"
    assert rows["services_host_aliases"]["present"] is True
    assert all(r["present"] is None for r in versions.decisions([]))
    line = versions.behaviour_line(list(rows.values()))
    assert line.startswith("gitlab-runner 16.8.0 has 1 of 9 behaviours")
    assert "(from 16.9; RC-ORD-004 skipped)" in line
    assert "(from 18.7; RC-ORD-002 judged by the older behaviour)" in line


def _bundle(into: Path, version: str | None) -> Path:
    """The clean local bundle, its trace headers naming VERSION instead of 18.11.4 (None: as saved)."""
    target = into / f"bundle-{version or 'saved'}"
    target.mkdir()
    with tarfile.open(BUNDLE) as tar:
        tar.extractall(target, filter="data")
    if version is not None:
        for trace in (target / "jobs").glob("*/trace.txt"):
            raw = trace.read_bytes()  # bytes: a trace's carriage returns are part of what the runner sent
            assert HEADER.encode() in raw, trace
            trace.write_bytes(raw.replace(HEADER.encode(), f"Running with gitlab-runner {version} ".encode()))
            assert parse_trace(trace.read_bytes()).runner_version == version
    return target


def _replay(bundle: Path, report: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites/test_ordering.py",
            f"--runnerconf-replay={bundle}",
            f"--runnerconf-report={report}",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    doc: dict[str, Any] = json.loads((report / "report.json").read_text(encoding="utf-8"))
    doc["exit"], doc["output"] = proc.returncode, proc.stdout
    return doc


def _outcomes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["results"]}


@pytest.mark.parametrize("older", ["16.8.0", "16.0.0"])
def test_an_older_runner_in_the_header_skips_the_health_check_with_its_reason(
    tmp_path: Path, older: str
) -> None:
    assert SUPPORTED_FLOOR <= (16, 0, 0)  # both versions are ones the suite judges (not could-not-test)
    saved = _replay(_bundle(tmp_path, None), tmp_path / "report-saved")
    assert _outcomes(saved)["RC-ORD-004"]["outcome"] == "passed", saved["output"]

    doc = _replay(_bundle(tmp_path, older), tmp_path / "report-older")
    results = _outcomes(doc)
    health = results["RC-ORD-004"]
    assert health["outcome"] == "skipped", doc["output"]
    reason = (
        "waiting for a service's HEALTHCHECK_TCP_PORT before the script arrived in 16.9; "
        f"the runner under test is gitlab-runner {older}"
    )
    assert reason in health["message"]
    # Only that check: the others of the module judge behaviours every supported runner has.
    assert {i: r["outcome"] for i, r in results.items() if i != "RC-ORD-004"} == {
        "RC-ORD-001": "passed",
        "RC-ORD-002": "passed",
        "RC-ORD-003": "passed",
    }
    assert doc["exit"] == 0, doc["output"]
    # The report shows the version and the table's decision.
    assert doc["runner_versions"] == [older]
    rows = {r["key"]: r for r in doc["runner_behaviours"]}
    assert rows["service_health_check"]["present"] is False
    assert rows["services_host_aliases"]["present"] is True
    md = (tmp_path / "report-older" / "report.md").read_text(encoding="utf-8")
    assert f"- runner behaviours: gitlab-runner {older} has" in md
    assert "(from 16.9; RC-ORD-004 skipped)" in md
    html = (tmp_path / "report-older" / "report.html").read_text(encoding="utf-8")
    assert 'data-fact="runner behaviours"' in html and "RC-ORD-004 skipped" in html
    assert all(r["present"] for r in _rows(saved) if r["key"] != "pod_env_dollar_escaped")


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["runner_behaviours"])
