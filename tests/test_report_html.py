"""report.html without a browser: fields, escaping, links, verdict words, the page's self-containment."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from pytest_runnerconf import report_html
from pytest_runnerconf.report import CheckResult, write_reports
from tests import report_inputs


def test_every_result_field_is_rendered(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    doc["results"][0]["future_field"] = {"limit": "256Mi"}  # a field a later report.json adds
    page = report_html.render(doc, run, report_dir=tmp_path / "report")
    for field in ("observed", "expected", "remediation", "message", "cause", "sentence", "future_field"):
        assert f'data-field="{field}"' in page, field
    assert "reason OOMKilled, exit code 137" in page and "runner-system-failure" in page
    assert "{&#34;limit&#34;: &#34;256Mi&#34;}" in page  # structured values as JSON text
    for outcome in ("passed", "failed", "could_not_test", "skipped", "error"):
        assert f'data-outcome="{outcome}"' in page and f'class="outcome {outcome}"' in page
    assert ">could not test</span>" in page


def test_the_observed_cell_shows_the_check_s_summary_else_why_nothing_was_observed(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    oom = doc["results"][0]
    oom["summary"] = "build terminated Error, exit code 1"  # the check's own words beat the raw value
    page = report_html.render(doc, run)

    def cell(check_id: str) -> str:
        return page.split(f'data-check="{check_id}"')[1].split('<td class="observed">')[1].split("</td>")[0]

    assert cell("RC-OOM-002") == "build terminated Error, exit code 1"
    assert cell("RC-ALS-004") == "runner-system-failure: the runner failed the job before its pod was created"
    assert cell("RC-DNS-005") == "Skipped: no DinD service in this profile"
    assert cell("RC-CLN-002") == "still present when the run stopped watching"  # no summary: the value
    clean, run = report_inputs.clean(tmp_path / "clean")
    page = report_html.render(clean, run)
    assert cell("RC-CLN-001") == "pod deleted 1.3 s after the job ended, deadline 60 s"


def test_expectations_are_a_table_and_the_observed_cell_sums_them_up(tmp_path: Path) -> None:
    doc, run = report_inputs.clean(tmp_path / "evidence")
    page = report_html.render(doc, run, report_dir=tmp_path / "report")
    row = page.split('data-check="RC-RES-002"')[1].split('<tr class="check')[0]
    assert '<td class="observed">helper cpu 100m; init cpu 100m</td>' in row
    assert row.count('<span class="outcome passed">held</span>') == 2
    # Its two jobs, from the expectations, each with their links.
    assert ">builds: job</a>" in row and ">dns: job</a>" in row and 'href="#pod-builds"' in row
    assert 'data-field="job_url"' not in page and 'data-field="pod"' not in page  # links, not text
    # One expectation that only repeats the deciding observed/expected gets no table of its own.
    doc, run = report_inputs.failing(tmp_path / "failing")
    oom = report_html.render(doc, run).split('data-check="RC-OOM-002"')[1].split('<tr class="check')[0]
    assert 'data-field="observed"' in oom and 'data-field="expectations"' not in oom


def test_text_from_the_cluster_is_escaped(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    page = report_html.render(doc, run)
    assert "<script" not in page and "<img" not in page and 'onerror="' not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page


def test_links_to_job_timeline_and_evidence(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    page = report_html.render(doc, run, report_dir=tmp_path / "report")
    assert 'href="http://gitlab.example/runnerconf/scratch/-/jobs/oom"' in page
    assert 'href="#pod-oom"' in page and 'id="pod-oom"' in page
    assert (
        'href="../evidence/jobs/oom/trace.txt"' in page
        and (tmp_path / "evidence/jobs/oom/trace.txt").is_file()
    )
    assert 'href="../evidence/jobs/oom/events.json"' in page
    # A check that used several jobs links to each.
    doc["results"][0]["job"] = ["oom", "dns"]
    page = report_html.render(doc, run, report_dir=tmp_path / "report")
    row = page.split('data-check="RC-OOM-002"')[1].split('<tr class="check')[0]
    assert ">oom: job</a>" in row and ">dns: job</a>" in row and 'href="#pod-dns"' in row
    # The job without a pod has no timeline to link to, and says so.
    assert 'id="pod-aliases-invalid"' not in page and "No pod was seen for: aliases-invalid." in page


def test_evidence_links_survive_odd_folder_names(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "run #1 evidence")
    page = report_html.render(doc, run, report_dir=tmp_path / "report")
    assert 'href="../run%20%231%20evidence/jobs/oom/trace.txt"' in page


def test_only_http_links_are_links() -> None:
    assert report_html.safe_url("https://gitlab.example/-/jobs/1") == "https://gitlab.example/-/jobs/1"
    assert report_html.safe_url("javascript:alert(1)") is None
    assert report_html.safe_url("data:text/html,x") is None and report_html.safe_url(None) is None


@pytest.mark.parametrize(
    ("counts", "word"),
    [
        ({"passed": 3}, "conformant"),
        ({"passed": 3, "skipped": 1}, "conformant"),
        ({"passed": 3, "failed": 1, "could_not_test": 2}, "not conformant"),
        ({"passed": 3, "could_not_test": 1}, "could not test"),
        ({"passed": 3, "error": 1}, "not conformant"),  # exit 1, as for a failure
        ({"passed": 3, "error": 1, "could_not_test": 1}, "not conformant"),
        ({"skipped": 2}, "could not test"),
    ],
)
def test_verdict_in_one_word(counts: dict[str, int], word: str) -> None:
    assert report_html.verdict(counts) == word


def test_header(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    page = report_html.render(
        doc, run, argv=["/venv/bin/pytest", "suites", "--runner-cluster=local", "-k", "a b"]
    )
    assert '<div class="verdict not-conformant" id="verdict">not conformant</div>' in page
    assert "pytest suites --runner-cluster=local -k &#39;a b&#39;" in page
    assert 'href="http://gitlab.example/runnerconf/scratch/-/pipelines/7"' in page
    assert "11.0s wall, slowest job oom 7.2s" in page
    assert "18.11.4" in page  # the runner version, from the traces
    assert '<dd data-fact="cgroup">v2</dd>' in page  # from the probe records
    assert '<dd data-fact="pods">3 seen, 2 seen deleted</dd>' in page
    assert '<dd data-fact="GitLab version">18.0.0</dd>' in page
    assert '<dd data-fact="Kubernetes version">v1.31.0-runnerconf-local</dd>' in page
    run.gitlab_version = "unknown"  # python-gitlab's word when /version could not be read
    assert 'data-fact="GitLab version"' not in report_html.render(doc, run)
    assert "cleanup_deadline_s" in page  # the profile's expectations
    assert 'href="#check-RC-OOM-002"' in page.split('id="not-passing"')[1].split("</ul>")[0]
    assert report_html.reproduce_command(None) is None
    assert report_html.reproduce_command(["/x/pytest/__main__.py", "-q"]) == "python -m pytest -q"


def test_every_pod_has_a_timeline_and_the_run_picture_every_job(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    page = report_html.render(doc, run)
    assert page.count('<svg class="timeline"') == 1 + sum(j.pod is not None for j in run.jobs.values())
    picture = page.split('id="run-picture"')[1].split("</svg>")[0]
    assert all(f'data-row="{name}"' in picture for name in run.jobs)
    # Each pod's heading sums up its job's spans; a pod never seen deleted says so.
    oom = page.split('id="pod-oom"')[1].split("</p>")[0]
    assert "queued 0.5s" in oom and "pending 2.9s" in oom and "running 4.3s" in oom and "cleanup 1.3s" in oom
    failing = page.split('id="pod-cleanup-fail"')[1].split("</p>")[0]
    assert "cleanup 2.9s+ (not seen to end)" in failing
    # The Warning event stands out, and its hover text holds the exact time.
    assert 'class="mark m-warning"><title>BackOff at 00:00:05.000 UTC' in page


def test_page_needs_nothing_from_outside(tmp_path: Path) -> None:
    doc, run = report_inputs.failing(tmp_path / "evidence")
    page = report_html.render(doc, run)
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r"(\bsrc=|@import|url\()", page.split("</style>")[0])
    assert "default-src 'none'" in page  # and the browser is told so


def test_write_reports_produces_this_page(tmp_path: Path) -> None:
    paths = write_reports(
        [CheckResult("RC-X-001", "a claim", "x", "failed", "observed: 3 <b>", None, 0.1, "t::x")],
        None,
        tmp_path,
    )
    page = paths["html"].read_text()
    assert (
        'data-outcome="failed"' in page and "3 &lt;b&gt;" in page and 'id="verdict">not conformant<' in page
    )


def test_render_time_for_a_full_suite(tmp_path: Path) -> None:
    """Fifteen jobs, as the full suite runs: well under a second, and under a megabyte."""
    doc, run = report_inputs.failing(tmp_path / "evidence")
    base = dict(run.jobs)
    for n in range(11):
        for name, job in base.items():
            if len(run.jobs) < 15:
                run.jobs[f"{name}-{n}"] = job
    started = time.perf_counter()
    page = report_html.render(doc, run)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, elapsed
    assert len(page.encode()) < 1_000_000


def test_header_names_where_each_expectation_came_from(tmp_path: Path) -> None:
    from pytest_runnerconf.profile import load_profile

    profile_file = tmp_path / "runnerconf.toml"
    profile_file.write_text(
        '[clusters.prod]\ngitlab_url = "https://gitlab.example.com"\ntoken_env = "T"\nproject = "g/p"\n'
        'namespace = "ci"\n[clusters.prod.expect]\ncleanup_deadline_s = 90\n'
    )
    _, run = report_inputs.clean(tmp_path / "evidence")
    run.profile = load_profile(profile_file, "prod").summary()
    run.kubernetes_version = "v1.31.2"
    paths = write_reports(
        [CheckResult("RC-X-001", "a claim", "x", "passed")],
        run,
        tmp_path / "report",
        argv=["pytest", "-k", "x"],
    )
    doc = json.loads(paths["json"].read_text())
    by_key = {e["key"]: e for e in doc["profile"]["expectations"]}
    assert (by_key["cleanup_deadline_s"]["origin"], by_key["builds_dir"]["origin"]) == ("profile", "default")
    assert doc["kubernetes_version"] == "v1.31.2" and doc["command"] == "pytest -k x"
    assert doc["verdict"] == "conformant"
    page = paths["html"].read_text()
    header = page.split('<header id="header">')[1].split("</header>")[0]
    row = header.split('data-expectation="cleanup_deadline_s"')[1].split("</tr>")[0]
    assert 'data-origin="profile"' in row and "90.0" in row and "profile file" in row
    assert f"{profile_file}: <code>clusters.prod.expect.cleanup_deadline_s</code>" in row
    default = header.split('data-expectation="builds_dir"')[1].split("</tr>")[0]
    assert 'data-origin="default"' in default and "built-in default" in default
    assert "set <code>clusters.prod.expect.builds_dir</code> to change it" in default
    total = len(doc["profile"]["expectations"])
    assert f"({total}: 1 profile file, {total - 1} built-in default)" in header
    assert '<dd data-fact="reproduce"><code>pytest -k x</code></dd>' in header
    assert '<dd data-fact="Kubernetes version">v1.31.2</dd>' in header


def test_an_axis_over_clocks_years_apart_still_draws_ten_ticks() -> None:
    # A bundle whose pod was first seen at the epoch and whose event is dated today: ten ticks, not 500 000.
    axis = report_html._Axis(1.0, 1.8e9)
    assert 2 <= len(axis.ticks()) <= 11
    assert [t["label"] for t in report_html._Axis(0.0, 42.0).ticks()][:3] == ["0s", "5s", "10s"]


def test_expectation_sources_of_a_recorded_profile_and_of_an_older_one(tmp_path: Path) -> None:
    _, run = report_inputs.failing(tmp_path / "evidence")
    run.profile = {**run.profile, "expect": {"cleanup_deadline_s": 60, "builds_dir": "/builds"}}
    older = write_reports([CheckResult("RC-X-001", "c", "x", "passed")], run, tmp_path / "older")["html"]
    # Evidence saved before sources were recorded claims no origin.
    assert older.read_text().count('class="origin origin-unknown">not recorded<') == 2
    run.profile["expect_set"] = {"cleanup_deadline_s": ["profile", "/etc/runnerconf.toml"]}
    page = write_reports([CheckResult("RC-X-001", "c", "x", "passed")], run, tmp_path / "now")[
        "html"
    ].read_text()
    row = page.split('data-expectation="cleanup_deadline_s"')[1].split("</tr>")[0]
    assert (
        "profile file" in row
        and "/etc/runnerconf.toml: <code>clusters.local.expect.cleanup_deadline_s" in row
    )
    assert "built-in default" in page.split('data-expectation="builds_dir"')[1].split("</tr>")[0]
