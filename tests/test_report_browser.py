"""report.html in a real browser (headless Debian Chromium): what a person opening the artifact sees.

The DOM after load must hold a timeline for every job pod and, for every check, its outcome and observed
value; nothing may fail to load and no script may run. Screenshots of a clean and of a failing report are kept
in build/screenshots/ (or $RUNNERCONF_SCREENSHOTS), which the project's CI keeps as artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf import report_html
from pytest_runnerconf.evidence import RunEvidence
from tests import report_inputs
from tests.browser import Browser, chromium_path
from tests.test_observed import ROOT, replay, unpack

SCREENSHOTS = "RUNNERCONF_SCREENSHOTS"
SHOTS_DIR = Path(__file__).resolve().parent.parent / "build" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Any:
    if chromium_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; scripts/test installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium, or run scripts/test)")
    with Browser(width=1280, height=900) as opened:
        yield opened


@pytest.fixture
def shots() -> Path:
    """Where the screenshots stay after the session: .gitlab-ci.yml keeps this folder as an artifact."""
    folder = Path(os.environ.get(SCREENSHOTS) or SHOTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Read from the page as the browser laid it out, not from the HTML text.
DOM = """(() => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    verdict: document.getElementById('verdict').textContent.trim(),
    scripts: document.scripts.length,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    pods: [...document.querySelectorAll('div.pod')].map((d) => ({
      job: d.dataset.job,
      svg: d.querySelector('svg.timeline') ? box(d.querySelector('svg.timeline')) : null,
      bars: [...d.querySelectorAll('svg .span rect')].filter((r) => r.getBBox().width > 0).length,
      titles: [...d.querySelectorAll('svg .span > title')].map((t) => t.textContent),
    })),
    picture: [...document.querySelectorAll('#run-picture g.row')].map((g) => g.dataset.row),
    checks: [...document.querySelectorAll('tr.check')].map((r) => ({
      id: r.dataset.check,
      outcome: r.querySelector('td.outcome-cell .outcome').innerText.trim(),
      observed: r.querySelector('td.observed').innerText.trim(),
      shown: box(r)[1] > 0 && box(r.querySelector('td.outcome-cell .outcome'))[0] > 0,
    })),
  };
})()"""


def _open(
    browser: Browser, tmp_path: Path, build: Callable[[Path], tuple[dict[str, Any], RunEvidence]]
) -> tuple[dict[str, Any], RunEvidence, dict[str, Any], Path]:
    doc, run = build(tmp_path / "evidence")
    page = tmp_path / "report" / "report.html"
    page.parent.mkdir()
    page.write_text(report_html.render(doc, run, report_dir=page.parent, argv=["pytest", "suites"]))
    seen = browser.load(page.as_uri())
    assert seen.problems == [], seen.problems
    assert seen.requests == [page.as_uri()]  # the page alone: no stylesheet, font, image or script fetched
    return doc, run, browser.evaluate(DOM), page


def _assert_reads(doc: dict[str, Any], run: RunEvidence, dom: dict[str, Any]) -> None:
    with_pod = [name for name, job in run.jobs.items() if job.pod is not None]
    assert [p["job"] for p in dom["pods"]] == with_pod
    for pod in dom["pods"]:
        assert pod["svg"] is not None and pod["svg"][0] > 600 and pod["svg"][1] > 100, pod
        assert pod["bars"] >= 5, pod  # phases, containers, sections
        assert all(" UTC (+" in title for title in pod["titles"])  # hover text with exact times
    assert dom["picture"] == list(run.jobs)
    assert len(dom["checks"]) == len(doc["results"])
    by_id = {r["id"]: r for r in doc["results"]}
    for row in dom["checks"]:
        result = by_id[row["id"]]
        assert row["shown"], row
        assert row["outcome"] == result["outcome"].replace("_", " ")
        if result.get("summary"):  # the check's own short form of what it observed
            assert row["observed"] == result["summary"], row
        elif "observed" in result:
            assert row["observed"] == report_html._value(result["observed"]), row
        else:  # no deciding observation: every judged one is summed up
            for judged in result.get("expectations") or []:
                assert report_html._value(judged["observed"]) in row["observed"], row


def test_clean_report_in_the_browser(browser: Browser, tmp_path: Path, shots: Path) -> None:
    doc, run, dom, _ = _open(browser, tmp_path, report_inputs.clean)
    assert dom["verdict"] == "conformant"
    _assert_reads(doc, run, dom)
    shot = browser.screenshot(shots / "report-clean.png")
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_failing_report_in_the_browser(browser: Browser, tmp_path: Path, shots: Path) -> None:
    doc, run, dom, _ = _open(browser, tmp_path, report_inputs.failing)
    assert dom["verdict"] == "not conformant"
    _assert_reads(doc, run, dom)
    # Text from traces and events that looks like markup stayed text: nothing ran, nothing was loaded.
    assert dom["scripts"] == 0 and dom["pwned"] is None
    shot = browser.screenshot(shots / "report-failing.png")
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_ci_keeps_the_screenshots() -> None:
    import yaml

    repo = SHOTS_DIR.parent.parent
    job = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())["tests"]
    assert "build/screenshots/" in job["artifacts"]["paths"] and job["artifacts"]["when"] == "always"
    assert repo / "build" / "screenshots" == SHOTS_DIR


def test_the_baseline_and_the_expectations_read_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    from pytest_runnerconf.report import CheckResult, write_reports

    _, run = report_inputs.failing(tmp_path / "evidence")
    run.profile = {**run.profile, "expect_set": {"cleanup_deadline_s": ["profile", "/etc/runnerconf.toml"]}}
    before = [
        CheckResult("RC-OOM-002", "oom", "oom_cpu", "passed"),
        CheckResult("RC-DNS-002", "d", "dns", "failed"),
    ]
    now = [
        CheckResult(
            "RC-OOM-002", "oom", "oom_cpu", "failed", "x", observed="Error/1", expectations=[{"held": False}]
        ),
        CheckResult("RC-DNS-002", "d", "dns", "passed"),
    ]
    old = write_reports(before, None, tmp_path / "old")["json"]
    import json

    page = write_reports(
        now, run, tmp_path / "report", baseline=(str(old), json.loads(old.read_text())), argv=["pytest"]
    )["html"]
    seen = browser.load(page.as_uri())
    assert seen.problems == []
    dom = browser.evaluate(
        """(() => ({
          groups: Object.fromEntries([...document.querySelectorAll('#baseline h3')].map((h) =>
            [h.dataset.baseline, h.nextElementSibling && h.nextElementSibling.tagName === 'UL'
              ? [...h.nextElementSibling.querySelectorAll('li')].map((li) => li.dataset.change) : []])),
          origins: Object.fromEntries([...document.querySelectorAll('tr[data-expectation]')].map((r) =>
            [r.dataset.expectation, r.querySelector('td.origin').textContent.trim()])),
          summary: document.querySelector('#expectations summary').textContent,
        }))()"""
    )
    assert dom["groups"] == {"regressions": ["RC-OOM-002"], "fixed": ["RC-DNS-002"], "not_verified": []}
    assert dom["origins"]["cleanup_deadline_s"] == "profile file"
    assert "1 profile file" in dom["summary"]


def test_the_readme_screenshot_script_stamps_the_run_it_shows(browser: Browser, tmp_path: Path) -> None:
    from pytest_runnerconf.report import CheckResult, write_reports
    from tests import readme_screenshot

    _, run = report_inputs.clean(tmp_path / "evidence")
    write_reports([CheckResult("RC-BLD-001", "c", "builds", "passed")], run, tmp_path / "report")
    stamp = readme_screenshot.screenshot(tmp_path / "report", tmp_path / "shot.png", browser)
    png = (tmp_path / "shot.png").read_bytes()
    assert readme_screenshot.provenance(png) == stamp
    assert stamp["run_id"] == run.run_id and stamp["cluster"] == "local" and stamp["verdict"] == "conformant"
    kinds = [kind for kind, _ in readme_screenshot.chunks(png)]
    assert kinds[0] == b"IHDR" and kinds[1] == b"tEXt" and kinds[-1] == b"IEND"
    import struct

    width, height = struct.unpack(">II", readme_screenshot.chunks(png)[0][1][:8])
    assert width == readme_screenshot.WIDTH and 300 < height <= 2400


def test_the_links_lead_somewhere(browser: Browser, tmp_path: Path) -> None:
    _, _, _, _page = _open(browser, tmp_path, report_inputs.failing)
    # SVG links too (their .href is not a string): resolve every href attribute against the page.
    hrefs = browser.evaluate(
        "[...document.querySelectorAll('a[href]')].map((a) => new URL(a.getAttribute('href'), document.baseURI).href)"
    )
    files = [h for h in hrefs if h.startswith("file://")]
    assert files, hrefs
    for href in files:
        target = Path(urllib.parse.unquote(urllib.parse.urlsplit(href).path))
        assert target.is_file(), href
    anchors = {h.split("#", 1)[1] for h in hrefs if "#" in h}
    present = set(browser.evaluate("[...document.querySelectorAll('[id]')].map((e) => e.id)"))
    assert anchors <= present, anchors - present


def _rows_of_a_run(browser: Browser, report: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """report.json of a run and the check rows its report.html shows in the browser."""
    page = report / "report.html"
    seen = browser.load(page.as_uri())
    assert seen.problems == [], seen.problems
    doc = json.loads((report / "report.json").read_text())
    rows: list[dict[str, Any]] = browser.evaluate(DOM)["checks"]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in doc["results"])
    return doc, rows


def _assert_every_row_observed(doc: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Every check row shows what its check observed: a judged one its summary, any other why it was not."""
    by_id = {r["id"]: r for r in doc["results"]}
    empty = [row["id"] for row in rows if not row["observed"]]
    assert empty == [], f"check rows with an empty observed cell: {empty}"
    for row in rows:
        result = by_id[row["id"]]
        if result["outcome"] in ("passed", "failed"):
            assert result.get("summary"), result
            assert row["observed"] == result["summary"], row
        elif result["outcome"] == "could_not_test":  # e.g. RC-CPU-001 inconclusive on a busy node
            assert row["observed"] == f"{result['cause']}: {result['sentence']}", row


@pytest.mark.parametrize("bundle", ["local-clean", "local-slow-cleanup"])
def test_every_check_row_of_a_replayed_run_shows_what_was_observed(
    browser: Browser, tmp_path: Path, shots: Path, bundle: str
) -> None:
    # The project's own saved local-cluster runs (tests/data/bundles), re-asserted and rendered offline.
    doc = replay(unpack(bundle, tmp_path), tmp_path / "report")
    shown, rows = _rows_of_a_run(browser, tmp_path / "report")
    assert len(rows) == len(doc["results"]) >= 35
    _assert_every_row_observed(shown, rows)
    browser.screenshot(shots / f"report-{bundle}.png")


def test_every_check_row_of_a_real_local_run_shows_what_was_observed(
    browser: Browser, local_cluster: Any, tmp_path: Path, shots: Path
) -> None:
    # The whole suite on the local cluster, as a user runs it; its report opened as a person would.
    report = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites",
            "--runner-cluster=local",
            f"--runnerconf-report={report}",
            f"--runnerconf-evidence={tmp_path / 'evidence'}",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert (report / "report.html").exists(), proc.stdout[-3000:] + proc.stderr[-2000:]
    doc, rows = _rows_of_a_run(browser, report)
    assert len(rows) >= 35, proc.stdout[-3000:]
    _assert_every_row_observed(doc, rows)
    assert sum(r["outcome"] == "passed" for r in doc["results"]) >= 30, proc.stdout[-3000:]
    shot = browser.screenshot(shots / "report-local-run.png")
    print(f"screenshot: {shot}")
