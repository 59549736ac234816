"""The Allure adapter: check labels and job evidence in allure-results, scrubbed, from replayed evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.allure_report import jobs_for_probes, probe_job_names
from pytest_runnerconf.evidence import MASK, JobEvidence, PodObservation, RunEvidence, save
from pytest_runnerconf.outcome import CAUSES

pytest_plugins = ["pytester"]

TOKEN_ENV = "RUNNERCONF_ALLURE_TEST_TOKEN"
# Not token-shaped on purpose: only scrubbing by the profile's token value can hide it.
TOKEN = "plain-s3cret-value-4711"

CHECKS = """
from pytest_runnerconf.checks import check


@check(id="RC-ALR-001", claim="the ordering job succeeds", remediation="look at the ordering probe's service",
       area="ordering", probes=("ordering",))
def test_ordering(job_evidence):
    assert job_evidence("ordering").status == "success"


@check(id="RC-ALR-002", claim="every cleanup job succeeds", remediation="look at the cleanup deadline",
       area="cleanup", probes=("cleanup",))
def test_cleanup(job_evidence):
    assert job_evidence("cleanup-fail").status == "success", "cleanup-fail did not succeed"


def test_not_a_check():
    pass
"""


def _pod(job: str) -> PodObservation:
    env = [{"name": "CI_JOB_NAME", "value": job}, {"name": "SOME_API_TOKEN", "value": TOKEN}]
    spec = {
        "metadata": {"name": f"runner-x-{job}", "namespace": "ci"},
        "spec": {"containers": [{"name": "build", "image": "alpine", "env": env}]},
    }
    timeline = [
        {"time": 1.0, "type": "ADDED", "phase": "Pending", "containers": {}, "deletionTimestamp": None},
        {"time": 2.0, "type": "MODIFIED", "phase": "Running", "containers": {}, "deletionTimestamp": None},
    ]
    events = [{"reason": "Pulled", "message": f"pulled alpine with {TOKEN}", "type": "Normal"}]
    return PodObservation(name=f"runner-x-{job}", first_seen=1.0, spec=spec, last=spec, timeline=timeline,
                          events=events, deleted_at=9.0)  # fmt: skip


JOB_URL = "https://gitlab.example.com/g/p/-/jobs/{job}"


def _job(name: str, status: str) -> JobEvidence:
    trace = f"Running with gitlab-runner 18.11.4 (5b1ba4d9)\n$ echo {TOKEN}\njob {name} ran\nJob succeeded\n"
    job = {"name": name, "status": status, "web_url": JOB_URL.format(job=name)}
    return JobEvidence(name=name, job=job, trace=trace, pod=_pod(name))


def _run() -> RunEvidence:
    statuses = {"ordering": "success", "cleanup-ok": "success", "cleanup-fail": "failed", "builds": "success"}
    jobs = {name: _job(name, status) for name, status in statuses.items()}
    profile = {"name": "prod", "token_env": TOKEN_ENV}
    return RunEvidence(run_id="r1", cluster="prod", profile=profile, jobs=jobs)


@pytest.fixture
def allure_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_checks=CHECKS)
    save(_run(), pytester.path / "bundle")
    # The bundle still holds the token in the trace (saved without secrets): the adapter must scrub it.
    assert TOKEN in (pytester.path / "bundle" / "jobs" / "ordering" / "trace.txt").read_text()
    return pytester


def _results(directory: Path) -> dict[str, dict[str, Any]]:
    """allure result documents by test function name."""
    docs = [json.loads(p.read_text()) for p in directory.glob("*-result.json")]
    return {doc["fullName"].rsplit("#", 1)[-1]: doc for doc in docs}


def _labels(doc: dict[str, Any]) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for label in doc["labels"]:
        labels.setdefault(label["name"], []).append(label["value"])
    return labels


def _attachments(directory: Path, doc: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: (directory / a["source"]).read_text() for a in doc.get("attachments", [])}


def _no_token_anywhere(directory: Path) -> None:
    for path in directory.iterdir():
        assert TOKEN not in path.read_text(errors="replace"), path.name


def test_probe_templates_name_the_jobs_of_a_check() -> None:
    assert probe_job_names("cleanup") == ("cleanup-ok", "cleanup-fail", "cleanup-cancel")
    assert probe_job_names("ordering") == ("ordering",)
    assert probe_job_names("no-such-probe") == ("no-such-probe",)
    jobs = jobs_for_probes(("cleanup", "ordering"), _run())
    assert [job.name for job in jobs] == ["cleanup-ok", "cleanup-fail", "ordering"]


def test_each_check_carries_its_labels_and_its_jobs_evidence(allure_run: pytest.Pytester) -> None:
    out = allure_run.path / "allure-results"
    result = allure_run.runpytest(f"--runnerconf-replay={allure_run.path / 'bundle'}", f"--alluredir={out}")
    result.assert_outcomes(passed=2, failed=1)
    docs = _results(out)
    assert set(docs) == {"test_ordering", "test_cleanup", "test_not_a_check"}

    ordering = docs["test_ordering"]
    labels = _labels(ordering)
    assert labels["check_id"] == ["RC-ALR-001"] and labels["as_id"] == ["RC-ALR-001"]
    assert labels["feature"] == ["ordering"] and labels["suite"] == ["ordering"]
    assert ordering["name"] == "the ordering job succeeds"
    assert ordering["description"] == (
        "the ordering job succeeds\n\nRemediation: look at the ordering probe's service"
    )
    files = _attachments(out, ordering)
    assert set(files) == {
        "ordering: trace",
        "ordering: pod timeline picture",
        "ordering: pod spec",
        "ordering: pod timeline",
        "ordering: pod events",
    }
    # The pod's timeline as a picture, an SVG document that stands alone, and the job's link to GitLab.
    picture = files["ordering: pod timeline picture"]
    assert picture.startswith('<?xml version="1.0" encoding="utf-8"?>\n<svg class="timeline"')
    assert "<style>" in picture and 'data-row="pod"' in picture
    assert {
        "name": "ordering: GitLab job",
        "url": JOB_URL.format(job="ordering"),
        "type": "link",
    } in ordering["links"]
    assert "job ordering ran" in files["ordering: trace"] and f"$ echo {MASK}" in files["ordering: trace"]
    spec = json.loads(files["ordering: pod spec"])
    assert spec["metadata"]["name"] == "runner-x-ordering"
    assert spec["spec"]["containers"][0]["env"][1] == {"name": "SOME_API_TOKEN", "value": MASK}
    assert [e["phase"] for e in json.loads(files["ordering: pod timeline"])] == ["Pending", "Running"]
    assert json.loads(files["ordering: pod events"])[0]["message"] == f"pulled alpine with {MASK}"
    types = {a["name"]: a["type"] for a in ordering["attachments"]}
    assert types["ordering: trace"] == "text/plain" and types["ordering: pod spec"] == "application/json"
    assert types["ordering: pod timeline picture"] == "image/svg+xml"

    # A failed check still gets its evidence: every job of its probe's template that the run has.
    cleanup = docs["test_cleanup"]
    assert cleanup["status"] == "failed"
    assert _labels(cleanup)["check_id"] == ["RC-ALR-002"]
    names = [a["name"] for a in cleanup["attachments"]]
    assert names == [
        f"{job}: {part}"
        for job in ("cleanup-ok", "cleanup-fail")
        for part in ("trace", "pod timeline picture", "pod spec", "pod timeline", "pod events")
    ]

    plain = docs["test_not_a_check"]
    assert "check_id" not in _labels(plain) and not plain.get("attachments")
    _no_token_anywhere(out)


def test_with_xdist_each_check_is_reported_once(allure_run: pytest.Pytester) -> None:
    out = allure_run.path / "allure-results"
    bundle = allure_run.path / "bundle"
    result = allure_run.runpytest_subprocess(f"--runnerconf-replay={bundle}", f"--alluredir={out}", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    docs = [json.loads(p.read_text()) for p in out.glob("*-result.json")]
    ids = sorted(label["value"] for doc in docs for label in doc["labels"] if label["name"] == "check_id")
    assert ids == ["RC-ALR-001", "RC-ALR-002"]
    attached = sorted(a["name"] for doc in docs for a in doc.get("attachments", []))
    assert attached.count("ordering: trace") == 1 and attached.count("cleanup-fail: pod spec") == 1
    _no_token_anywhere(out)


@pytest.mark.parametrize("alluredir", [True, False], ids=["alluredir", "no-alluredir"])
def test_the_adapter_acts_only_when_allure_writes_results(
    allure_run: pytest.Pytester, alluredir: bool
) -> None:
    # allure-pytest registers its listener (the adapter's switch) only with --alluredir; a rename would
    # silently turn the adapter off, so the switch itself is checked here.
    allure_run.makeconftest(
        """
        def pytest_sessionfinish(session):
            from pytest_runnerconf.allure_report import allure_active
            print("ALLURE ACTIVE", allure_active(session.config))
        """
    )
    args = [f"--alluredir={allure_run.path / 'out'}"] if alluredir else []
    result = allure_run.runpytest("-s", f"--runnerconf-replay={allure_run.path / 'bundle'}", *args)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([f"*ALLURE ACTIVE {alluredir}"])
    assert any(allure_run.path.rglob("*-result.json")) is alluredir


def _properties(path: Path) -> dict[str, str]:
    """A .properties file as Java reads it (enough of it: key=value lines, backslash escapes)."""
    import re

    def unescape(text: str) -> str:
        return re.sub(
            r"\\(u[0-9a-fA-F]{4}|.)", lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5 else m[1], text
        )

    found = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        key, value = re.split(r"(?<!\\)=", line, maxsplit=1)
        found[unescape(key)] = unescape(value)
    return found


@pytest.mark.parametrize("in_ci", [False, True], ids=["outside-ci", "gitlab-ci"])
def test_the_results_directory_describes_the_run(
    allure_run: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, in_ci: bool
) -> None:
    for name in (
        "GITLAB_CI",
        "CI_JOB_URL",
        "CI_SERVER_URL",
        "CI_PIPELINE_ID",
        "CI_PROJECT_PATH",
        "CI_JOB_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    if in_ci:
        monkeypatch.setenv("GITLAB_CI", "true")
        monkeypatch.setenv("CI_JOB_URL", "https://gitlab.example.com/infra/runnerconf/-/jobs/4711")
        monkeypatch.setenv("CI_SERVER_URL", "https://gitlab.example.com")
        monkeypatch.setenv("CI_PIPELINE_ID", "815")
        monkeypatch.setenv("CI_PROJECT_PATH", "infra/runnerconf")
        monkeypatch.setenv("CI_JOB_NAME", "conformance")
    out = allure_run.path / "allure-results"
    result = allure_run.runpytest(f"--runnerconf-replay={allure_run.path / 'bundle'}", f"--alluredir={out}")
    result.assert_outcomes(passed=2, failed=1)
    env = _properties(out / "environment.properties")
    assert env["cluster"] == "prod" and env["profile"] == "prod" and env["verdict"] == "not conformant"
    assert env["runner.versions"] == "18.11.4"
    assert f"--runnerconf-replay={allure_run.path / 'bundle'} --alluredir={out}" in env["command"]
    names = [c["name"] for c in json.loads((out / "categories.json").read_text())]
    assert names[0] == "conformance failures" and names[-2:] == [
        "errors in a check or the plugin",
        "not applicable",
    ]
    assert names[1:-2] == [f"could not test: {cause}" for cause in CAUSES]
    executor = out / "executor.json"
    if not in_ci:
        assert not executor.exists()  # nothing to say about a machine that is no CI job
    else:
        assert json.loads(executor.read_text()) == {
            "name": "GitLab CI",
            "type": "gitlab",
            "url": "https://gitlab.example.com",
            "buildName": "infra/runnerconf conformance",
            "buildUrl": "https://gitlab.example.com/infra/runnerconf/-/jobs/4711",
            "buildOrder": 815,
            "reportName": "runnerconf",
            "reportUrl": "https://gitlab.example.com/infra/runnerconf/-/jobs/4711/artifacts/browse",
        }
    _no_token_anywhere(out)


def test_environment_properties_escape_what_java_would_misread() -> None:
    from pytest_runnerconf.allure_report import _property, environment

    assert _property("a=b: c\\d  é✓\nnext") == "a\\=b\\: c\\\\d \\u00e9\\u2713 next"
    doc = {"cluster": "prod", "gitlab_version": None, "runner_versions": ["18.11.4", "18.10.1"],
           "profile": {"name": "prod", "source": "/etc/runnerconf.toml", "namespace": "ci", "expectations": [
               {"key": "dns.nameservers", "value": ["10.0.0.2"], "origin": "profile"},
               {"key": "builds_dir", "value": "/builds", "origin": "default"}]}}  # fmt: skip
    env = environment(doc)
    assert env["runner.versions"] == "18.11.4, 18.10.1" and "gitlab.version" not in env
    assert env["expect.dns.nameservers"] == '["10.0.0.2"]' and "expect.builds_dir" not in env
