"""RC-CCH over hand-built jobs: the restored nonce, the other runner, the artifact's checksum, each failure
and could-not-test; the plan's cache jobs and their needs; the probe script's records."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_runnerconf.evidence import JobEvidence
from pytest_runnerconf.outcome import CouldNotTest
from pytest_runnerconf.plan import make_plan, render_pipeline
from pytest_runnerconf.profile import CacheExpect, Expectations, Profile
from pytest_runnerconf.trace import parse_trace
from pytest_runnerconf.verdict import ConformanceFailure
from tests.test_catalogue import _load

ROOT = Path(__file__).resolve().parent.parent
Skipped = pytest.skip.Exception
NONCE = "20260101-000000-abcdef-1-0011223344556677"
SHA = "ab" * 32


cch = _load("test_cache")


def profile(other: str | None = "k8s-cache-b") -> Profile:
    return Profile(
        name="t",
        gitlab_url="http://127.0.0.1",
        token_env="T",
        token_file=None,
        project="g/p",
        runner_tags=("k8s",),
        kubeconfig=None,
        kube_context=None,
        namespace="ci",
        expect=Expectations(cache=None if other is None else CacheExpect(other_runner_tag=other)),
        source="test",
    )


def section(name: str, header: str, lines: list[str]) -> str:
    body = "".join(f"{line}\n" for line in lines)
    return f"section_start:1:{name}\r\x1b[0K{header}\n{body}section_end:2:{name}\r\x1b[0K\n"


# The restore_cache lines of a hit and a miss, as the emulated runner (and v18.11's helper) print them.
HIT = [
    "Checking cache for rc-cache-r1...",
    'Downloading cache from http://s3.test/runnerconf-cache/project/1/rc-cache-r1  ETag="e1"',
    "Successfully extracted cache",
]
MISS = [
    "Checking cache for rc-cache-r1...",
    "WARNING: file does not exist",
    "WARNING: Failed to extract cache",
]


def saver(status: str = "success", **record: Any) -> JobEvidence:
    rec = {"mode": "save", "nonce": NONCE, "artifact_sha256": SHA, "artifact_bytes": 65536}
    rec.update({"runner_short_token": "t1_runner", **record})
    return JobEvidence(name="cache-save", job={"status": status}, trace="", records={"cache": [rec]})


def restorer(
    name: str = "cache-restore",
    *,
    nonce: str | None = NONCE,
    sha: str | None = SHA,
    runner: str = "t1_runner",
    lines: list[str] | None = None,
    status: str = "success",
) -> JobEvidence:
    rec: dict[str, Any] = {
        "mode": "restore",
        "runner_short_token": runner,
        "cache_found": nonce is not None,
        "nonce": nonce or "",
        "artifact_found": sha is not None,
        "artifact_sha256": sha or "",
        "artifact_bytes": 65536 if sha is not None else None,
    }
    trace = section("restore_cache", "Restoring cache", HIT if lines is None else lines)
    trace += section(
        "download_artifacts", "Downloading artifacts", ["Downloading artifacts for cache-save (1)..."]
    )
    return JobEvidence(name=name, job={"status": status}, trace=trace, records={"cache": [rec]})


def failure(call: Any, *args: Any) -> str:
    """The summary (the report's cell) of a check that must fail."""
    with pytest.raises(ConformanceFailure) as caught:
        call(*args)
    return caught.value.expectation.summary


def lookup(*jobs: JobEvidence) -> Any:
    by_name = {j.name: j for j in jobs}

    def get(name: str) -> JobEvidence:
        if name not in by_name:
            raise CouldNotTest("no-evidence", f"no job {name}")
        return by_name[name]

    return get


def clean() -> tuple[JobEvidence, ...]:
    return saver(), restorer(), restorer("cache-restore-other", runner="rccacheru")


# ---- RC-CCH-001 -----------------------------------------------------------------------------------------


def test_the_restore_section_lines_are_the_observation() -> None:
    assert cch.cache_lines(restorer()) == ["Restoring cache", *HIT]


def test_a_restored_nonce_passes() -> None:
    cch.test_cache_restored_in_another_pod(lookup(*clean()))


def test_no_cache_restored_fails_with_the_helpers_warning() -> None:
    # cache-upload-fails-silently: the saver said "Created cache", the bucket has nothing
    jobs = (saver(), restorer(nonce=None, lines=MISS))
    said = failure(cch.test_cache_restored_in_another_pod, lookup(*jobs))
    assert said == (
        "cache-restore found no cache (rc-cache/nonce.txt missing); the trace says: WARNING: file does not exist"
    )


def test_a_stale_nonce_fails() -> None:
    said = failure(cch.test_cache_restored_in_another_pod, lookup(saver(), restorer(nonce="old-run")))
    assert said.startswith("cache-restore found nonce 'old-run', not the saver's")


def test_no_distributed_cache_fails_naming_no_url() -> None:
    lines = [
        "Checking cache for rc-cache-r1...",
        "No URL provided, cache will not be downloaded from shared cache server. Instead a local version of "
        "cache will be extracted.",
        "WARNING: Cache file does not exist",
        "WARNING: Failed to extract cache",
    ]
    said = failure(cch.test_cache_restored_in_another_pod, lookup(saver(), restorer(nonce=None, lines=lines)))
    assert "the trace says: No URL provided" in said


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ((saver("failed"), restorer()), "cache-save should succeed"),
        ((saver(nonce=""), restorer()), "cache-save printed no cache record"),
        ((saver(), restorer(status="skipped")), "cache-restore should succeed .* but is skipped"),
        ((saver(),), "no job cache-restore"),
    ],
)
def test_missing_evidence_is_could_not_test(jobs: tuple[JobEvidence, ...], message: str) -> None:
    with pytest.raises(CouldNotTest, match=message):
        cch.test_cache_restored_in_another_pod(lookup(*jobs))


def test_a_restorer_without_its_record_is_could_not_test() -> None:
    bare = restorer()
    bare.records = {}
    with pytest.raises(CouldNotTest, match="printed no cache record of what it found"):
        cch.test_cache_restored_in_another_pod(lookup(saver(), bare))


# ---- RC-CCH-002 -----------------------------------------------------------------------------------------


def test_the_other_runner_restoring_passes() -> None:
    cch.test_cache_restored_on_another_runner(lookup(*clean()), profile())


def test_an_unshared_cache_fails_only_the_migration_check() -> None:
    # cache-not-shared: the other runner looks under its own runner/<token>/ prefix
    jobs = (saver(), restorer(), restorer("cache-restore-other", nonce=None, runner="rccacheru", lines=MISS))
    cch.test_cache_restored_in_another_pod(lookup(*jobs))
    cch.test_artifact_round_trip(lookup(*jobs))
    said = failure(cch.test_cache_restored_on_another_runner, lookup(*jobs), profile())
    assert said.endswith("saved on runner t1_runner, restored on rccacheru")


def test_without_a_second_runner_the_migration_check_skips_naming_the_setting() -> None:
    with pytest.raises(Skipped, match=r"expect\.cache\.other_runner_tag"):
        cch.test_cache_restored_on_another_runner(lookup(*clean()), profile(other=None))


def test_a_tag_that_leads_back_to_the_saver_is_could_not_test() -> None:
    jobs = (saver(), restorer(), restorer("cache-restore-other", runner="t1_runner"))
    with pytest.raises(CouldNotTest, match="the saver's own: the tag does not lead to another runner"):
        cch.test_cache_restored_on_another_runner(lookup(*jobs), profile())


# ---- RC-CCH-003 -----------------------------------------------------------------------------------------


def test_an_intact_artifact_passes() -> None:
    cch.test_artifact_round_trip(lookup(*clean()))


def test_a_missing_or_changed_artifact_fails() -> None:
    said = failure(cch.test_artifact_round_trip, lookup(saver(), restorer(sha=None)))
    assert said == "cache-restore has no rc-artifact/payload.bin"
    said = failure(cch.test_artifact_round_trip, lookup(saver(), restorer(sha="cd" * 32)))
    assert "has another checksum than the saver's" in said


# ---- plan and probe ------------------------------------------------------------------------------------


def jobs_of(text: str) -> dict[str, Any]:
    return {k: v for k, v in yaml.safe_load(text).items() if k not in ("stages", "variables")}


def test_plan_sends_the_other_restorer_to_the_other_runner_and_both_need_the_saver() -> None:
    jobs = jobs_of(render_pipeline(make_plan(["cache"]), profile(), "r1")[0])
    assert sorted(jobs) == ["cache-restore", "cache-restore-other", "cache-save"]
    assert jobs["cache-restore"]["needs"] == jobs["cache-restore-other"]["needs"] == ["cache-save"]
    assert jobs["cache-restore-other"]["tags"] == ["k8s-cache-b"] and jobs["cache-restore"]["tags"] == ["k8s"]
    assert {j["cache"]["key"] for j in jobs.values()} == {"rc-cache-r1"}  # one key, unique to the run
    assert jobs["cache-save"]["artifacts"]["paths"] == ["rc-artifact/"]
    without = jobs_of(render_pipeline(make_plan(["cache"]), profile(other=None), "r1")[0])
    assert without["cache-restore-other"]["tags"] == ["k8s"]  # runs on the default tags; RC-CCH-002 skips


def test_probe_script_saves_and_restores_records(tmp_path: Path) -> None:
    _, files = render_pipeline(make_plan(["cache"]), profile(), "r1")
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    env = {
        "PATH": os.environ["PATH"],
        "RUNNERCONF_RUN_ID": "r1",
        "CI_JOB_ID": "7",
        "CI_JOB_NAME": "cache-save",
    }

    def run(mode: str) -> dict[str, Any]:
        out = subprocess.run(
            ["sh", ".runnerconf/cache.sh", mode],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        (record,) = parse_trace(out.stdout).records_for("cache")
        return record

    empty = run("restore")
    assert (empty["cache_found"], empty["artifact_found"]) == (False, False)
    saved = run("save")
    assert saved["nonce"].startswith("r1-7-") and len(saved["artifact_sha256"]) == 64
    found = run("restore")
    assert (found["nonce"], found["artifact_sha256"]) == (saved["nonce"], saved["artifact_sha256"])
    assert found["artifact_bytes"] == 65536
