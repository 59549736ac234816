"""Every check says what it observed, on pass as on failure: the bundled suite re-asserted over saved runs.

The bundles in tests/data/bundles are what the project's own local-cluster runs saved (see its README).
Replaying one runs every check of suites/ offline; report.json must then carry, for every passed result,
expectations that held with the check's own short summary, and for every failed one the expectation that did
not hold with its summary. A check that passes without recording what it saw fails here.
"""

from __future__ import annotations

import ast
import html as html_text
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.verdict import short_form

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = ROOT / "tests" / "data" / "bundles"
# The checks the slow-cleanup fault fails: the runner deletes no job pod within the deadline, so the pods'
# Secrets (garbage-collected with them) stay too and the pods are left at the deadline.
POD_CHECKS = {"RC-CLN-001", "RC-CLN-002", "RC-CLN-003", "RC-CLN-004"}
SLOW_CLEANUP_FAILS = {*POD_CHECKS, "RC-CLN-005", "RC-CLN-006", "RC-CLN-007"}


def unpack(name: str, into: Path) -> Path:
    target = into / name
    target.mkdir()
    with tarfile.open(BUNDLES / f"{name}.tar.gz") as tar:
        tar.extractall(target, filter="data")
    return target


def replay(bundle: Path, report: Path) -> dict[str, Any]:
    """report.json of the whole bundled suite re-asserted over BUNDLE (a fresh process, as a user runs it)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites",
            "-m",
            "disruptive or not disruptive",  # the bundles hold the opt-in disruption probe too
            f"--runnerconf-replay={bundle}",
            f"--runnerconf-report={report}",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    path = report / "report.json"
    assert path.exists(), f"no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    doc: dict[str, Any] = json.loads(path.read_text())
    doc["exit"] = proc.returncode
    doc["output"] = proc.stdout[-3000:]
    doc["report_dir"] = str(report)
    return doc


def suite_check_ids() -> set[str]:
    """The id= of every @check(...) in suites/*.py, read from their syntax trees (no import needed)."""
    ids = set()
    for module in sorted((ROOT / "suites").glob("test_*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check":
                ids.update(
                    k.value.value
                    for k in node.keywords
                    if k.arg == "id" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
                )
    return ids


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("clean")
    return replay(unpack("local-clean", out), out / "report")


@pytest.fixture(scope="module")
def slow_cleanup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("slow")
    return replay(unpack("local-slow-cleanup", out), out / "report")


def unobserved(result: dict[str, Any]) -> list[str]:
    """What a passed or failed result lacks to say what its check observed (empty: nothing)."""
    judged = result.get("expectations") or []
    problems = []
    if not judged:
        problems.append("no expectation recorded")
    if not str(result.get("summary") or "").strip():
        problems.append("no summary on the result")
    wanted = result["outcome"] == "passed"
    deciding = [e for e in judged if e.get("held") is wanted]
    if result["outcome"] == "passed" and len(deciding) != len(judged):
        problems.append("a passed check recorded an expectation that did not hold")
    if not deciding:
        problems.append(f"no expectation with held={wanted}")
    for e in deciding:
        if e.get("check") != result["id"]:
            problems.append(f"an expectation of {e.get('check')} under {result['id']}")
        if e.get("expected") in (None, "", [], {}) or e.get("observed") is None:
            problems.append(f"expectation without expected/observed: {e}")
        summary = str(e.get("summary") or "")
        if not summary.strip():
            problems.append(f"expectation without a summary: {e}")
        elif result["outcome"] == "passed" and summary == short_form(e.get("observed")):
            # The fallback of a helper called without summary=: the check wrote no words of its own.
            problems.append(f"a pass summed up by its raw observed value, not by the check: {summary!r}")
    return problems


def test_every_check_records_what_it_observed_on_a_clean_replay(clean: dict[str, Any]) -> None:
    results = clean["results"]
    assert {r["id"] for r in results} == suite_check_ids(), clean["output"]  # every bundled check ran
    assert {r["outcome"] for r in results} == {"passed"}, clean["output"]
    missing = {r["id"]: unobserved(r) for r in results if unobserved(r)}
    assert missing == {}, missing
    assert clean["exit"] == 0


def test_the_summaries_say_what_the_clean_run_measured(clean: dict[str, Any]) -> None:
    # Values from the bundle's own pods and records, as the examples put them.
    said = {r["id"]: r["summary"] for r in clean["results"]}
    assert said["RC-RES-001"] == "build: requests cpu 500m / memory 256Mi, limits cpu 1 / memory 512Mi"
    assert said["RC-CLN-001"] == "pod deleted 3.5 s after the job ended, deadline 30 s"
    assert said["RC-DNS-002"].startswith("build's resolv.conf: nameserver 172.17.0.1, search ci.svc")
    assert said["RC-LOG-001"] == "200 of 200 lines in order, line 100 whole (3600 characters), job success"
    assert said["RC-OOM-001"] == "the allocation of 763 MiB was killed (cgroup limit 128 MiB); job failed"
    # A check that judged two jobs says both.
    assert said["RC-RES-006"].count("cgroup v1 enforces") == 2
    observed = {r["id"]: r["expectations"][0]["observed"] for r in clean["results"]}
    delay = observed["RC-CLN-001"]["delay s"]  # the data the summary was written from
    shown = float(said["RC-CLN-001"].split()[2])  # the summary's one decimal, of the same measurement
    assert delay == pytest.approx(3.49, abs=0.01) and shown == pytest.approx(delay, abs=0.051)
    assert observed["RC-RES-001"] == {
        "build": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "500m", "memory": "256Mi"}}
    }


def test_report_md_and_html_show_each_summary(clean: dict[str, Any]) -> None:
    md = (Path(clean["report_dir"]) / "report.md").read_text()
    html = (Path(clean["report_dir"]) / "report.html").read_text()
    for result in clean["results"]:
        # Passed checks are in report.md's collapsed table, with what each observed.
        row = next(line for line in md.splitlines() if f"| {result['id']} |" in line)
        assert html_text.unescape(row).endswith(f"| {result['summary']} |"), row
        cell = html.split(f'data-check="{result["id"]}"', 1)[1].split('<td class="observed">', 1)[1]
        assert cell.split("</td>", 1)[0].strip(), result["id"]


def test_a_fault_run_says_what_failed_and_what_still_held(slow_cleanup: dict[str, Any]) -> None:
    results = {r["id"]: r for r in slow_cleanup["results"]}
    failed = {i for i, r in results.items() if r["outcome"] == "failed"}
    assert failed == SLOW_CLEANUP_FAILS, slow_cleanup["output"]
    for check_id in failed:
        result = results[check_id]
        assert unobserved(result) == [], (check_id, unobserved(result))
    for check_id in POD_CHECKS:  # the failing expectation's own words: what happened, against which deadline
        assert (
            results[check_id]["summary"] == "pod still present when the run stopped watching, deadline 30 s"
        )
    assert results["RC-CLN-005"]["summary"] == (
        # The evicted disruption probe's pod is deleted by the API server, its Secret with it.
        "30 of 31 per-job Secrets not deleted within 30 s of their job's end"
    )
    assert results["RC-CLN-006"]["summary"].startswith("30 pods of this run left at the deadline, 0 stray")
    passed = [r for r in results.values() if r["outcome"] == "passed"]
    assert len(passed) == len(results) - len(failed)
    missing = {r["id"]: unobserved(r) for r in passed if unobserved(r)}
    assert missing == {}, missing
    assert slow_cleanup["exit"] == 1
