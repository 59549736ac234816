"""report.md: what a CI job summary or a merge-request comment shows, escaped for Markdown and GitLab's HTML."""

from __future__ import annotations

from pathlib import Path

from pytest_runnerconf import report_md
from pytest_runnerconf.report import html_link
from tests import report_inputs


def test_not_passing_checks_worst_first_with_observed_cause_and_fix(tmp_path: Path) -> None:
    doc, _ = report_inputs.failing(tmp_path / "evidence")
    doc["verdict"] = "not conformant"
    md = report_md.render(doc, "report.html")
    table = md.split("### Not passing (4)")[1].split("<details>")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| FAIL", "| FAIL", "| ERROR", "| COULD NOT TEST"]
    oom = next(row for row in rows if "RC-OOM-002" in row)
    assert "[RC-OOM-002](http://gitlab.example/runnerconf/scratch/-/jobs/oom)" in oom
    assert "| terminated with reason Error, exit code 1 | reason OOMKilled, exit code 137 |" in oom
    assert (
        "fix: check the build container&#x27;s memory limit" in oom
        or "fix: check the build container's" in oom
    )
    assert "runner-system-failure: the runner failed the job before its pod was created" in md
    # Passing and skipped checks are folded away, still listed.
    assert "<summary>2 passed or skipped</summary>" in md and "| PASS | RC-DNS-002 |" in md


def test_text_from_the_cluster_stays_text(tmp_path: Path) -> None:
    doc, _ = report_inputs.failing(tmp_path / "evidence")
    doc["verdict"] = "not conformant"
    doc["results"][0]["observed"] = f"a | b\nc {report_inputs.INJECTED}"
    md = report_md.render(doc, "report.html")
    assert "<script" not in md and "<img" not in md
    assert "a \\| b c &lt;script&gt;" in md  # one cell: the pipe escaped, the line break gone
    assert report_md.cell("x" * 400).endswith("…") and len(report_md.cell("x" * 400)) == report_md.CELL_LIMIT


def test_the_html_link_is_the_artifact_page_in_ci(tmp_path: Path) -> None:
    env = {"CI_JOB_URL": "https://gitlab.example.com/g/p/-/jobs/42", "CI_PROJECT_DIR": str(tmp_path)}
    assert html_link(tmp_path / "out" / "runnerconf report", env) == (
        "https://gitlab.example.com/g/p/-/jobs/42/artifacts/file/out/runnerconf%20report/report.html"
    )
    assert html_link(Path("/elsewhere"), env) == "report.html"  # not kept as an artifact of this job
    assert html_link(tmp_path, {}) == "report.html"
    assert html_link(tmp_path, {**env, "CI_JOB_URL": "javascript:alert(1)"}) == "report.html"
    assert report_md.link("javascript:alert(1)") is None
    assert report_md.link("https://g.example/a (b)") == "https://g.example/a%20%28b%29"


def test_a_checks_own_short_form_of_what_it_observed_comes_first(tmp_path: Path) -> None:
    doc, _ = report_inputs.failing(tmp_path / "evidence")
    doc["verdict"] = "not conformant"
    oom = next(r for r in doc["results"] if r["id"] == "RC-OOM-002")
    oom["summary"] = "build terminated Error, exit 1; expected OOMKilled"
    md = report_md.render(doc, "report.html")
    assert "| build terminated Error, exit 1; expected OOMKilled | reason OOMKilled, exit code 137 |" in md
