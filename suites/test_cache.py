"""RC-CCH: the distributed cache and artifacts carry files from one job's pod to a later job's pod.

The cache probe's saver writes a nonce of its own into its cache path (key unique to the run) and a random
payload into its artifact path. Each restorer `needs:` the saver, so it starts in a new pod once the saver
ended, and reports what it found before its script ran: the nonce (restored cache) and the payload's
checksum (downloaded artifacts). RC-CCH-002's restorer runs on another runner (expect.cache.other_runner_tag):
a cache shared between runners survives moving a project to another runner. The restore job's trace lines
of its restore_cache section (the runner's and the helper's words) are the observation beside the nonce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_runnerconf import JobEvidence, Profile, check, could_not_test, fail, held

JobLookup = Callable[[str], JobEvidence]
PROBE = "cache"
SAVER = "cache-save"
RESTORER = "cache-restore"
OTHER = "cache-restore-other"
REMEDIATION = (
    "a cache reaches a later job's pod only through the distributed cache: set [runners.cache] Type (s3, gcs "
    "or azure) with its bucket table ([runners.cache.s3] ServerAddress, BucketName, AccessKey/SecretKey or "
    "AuthenticationType iam, Insecure); the runner's trace says 'No URL provided' when none is configured and "
    "the helper prints the upload and download URLs; check that the bucket accepts the presigned PUT (the "
    "helper's FATAL line after 'Uploading cache.zip to') and that the object exists after the saving job"
)
SHARED_REMEDIATION = (
    "runners find each other's caches only with [runners.cache] Shared = true on all of them, the same Type, "
    "bucket (BucketName) and Path: unshared, each runner keeps its caches under runner/<its short token>/, so "
    "a project moved to another runner starts cold; check Shared, Path and BucketName of both runners' "
    "config.toml"
)
ARTIFACT_REMEDIATION = (
    "artifacts of a needed job are downloaded from GitLab before the script (download_artifacts): check the "
    "job's artifacts: paths, the runner's [runners] url reachable from the helper, a proxy's body size limit "
    "(413) and the project's artifact expiry and size settings"
)


def _record(job: JobEvidence) -> dict[str, Any]:
    records = job.records.get(PROBE) or []
    return records[-1] if records else {}


def cache_lines(job: JobEvidence) -> list[str]:
    """The job's restore_cache section as printed (the runner's and the helper's lines), blank lines left out."""
    return [line.strip() for line in job.trace_parsed.section_text("restore_cache") if line.strip()]


def _saver(job_evidence: JobLookup) -> tuple[JobEvidence, dict[str, Any]]:
    """The saving job and its record; could_not_test unless it succeeded and said what it saved."""
    __tracebackhide__ = True
    saver = job_evidence(SAVER)
    if saver.status != "success":
        could_not_test(
            "no-evidence",
            f"job {SAVER} should succeed (it writes two files) but is {saver.status}",
            job=saver,
        )
    record = _record(saver)
    if not record.get("nonce") or not record.get("artifact_sha256"):
        could_not_test(
            "no-evidence", f"job {SAVER} printed no cache record with its nonce and checksum", job=saver
        )
    return saver, record


def _restorer(job_evidence: JobLookup, name: str) -> tuple[JobEvidence, dict[str, Any]]:
    """A restoring job and its record; could_not_test unless it ran its script to the end."""
    __tracebackhide__ = True
    job = job_evidence(name)
    if job.status != "success":
        # skipped: GitLab did not run it (its need failed); failed: its script, which only reads, broke
        could_not_test(
            "no-evidence", f"job {name} should succeed (it only reads) but is {job.status}", job=job
        )
    record = _record(job)
    if record.get("mode") != "restore":
        could_not_test("no-evidence", f"job {name} printed no cache record of what it found", job=job)
    return job, record


def judge_cache(
    saved: dict[str, Any], job: JobEvidence, found: dict[str, Any]
) -> tuple[bool, dict[str, Any], str]:
    """(held, observed, summary) for a restorer that must find the saver's nonce in its restored cache."""
    lines = cache_lines(job)
    observed: dict[str, Any] = {
        "job": job.name,
        "pod": job.pod.name if job.pod else "",
        "runner": found.get("runner_short_token", ""),
        "cache found": bool(found.get("cache_found")),
        "nonce found": found.get("nonce", ""),
        "restore_cache lines": lines,
    }
    want = saved.get("nonce", "")
    if found.get("cache_found") and found.get("nonce") == want:
        return True, observed, f"{job.name} restored the saver's nonce ({len(lines)} restore_cache lines)"
    said = next((ln for ln in lines if "WARNING" in ln or "FATAL" in ln or "No URL" in ln), "")
    if not found.get("cache_found"):
        summary = f"{job.name} found no cache (rc-cache/nonce.txt missing)"
    else:
        summary = f"{job.name} found nonce {found.get('nonce')!r}, not the saver's"
    return False, observed, summary + (f"; the trace says: {said}" if said else "")


@check(
    id="RC-CCH-001",
    claim="a cache saved by one job is restored in a later job's pod: the needing job finds the saver's nonce",
    remediation=REMEDIATION,
    area="cache",
    probes=(PROBE,),
)
def test_cache_restored_in_another_pod(job_evidence: JobLookup) -> None:
    _, saved = _saver(job_evidence)
    job, found = _restorer(job_evidence, RESTORER)
    expected = {
        "nonce": saved["nonce"],
        "saved by": SAVER,
        "key": "rc-cache-<run id>",
        "paths": ["rc-cache/"],
    }
    ok, observed, summary = judge_cache(saved, job, found)
    if not ok:
        fail("RC-CCH-001", expected, observed, job=job, summary=summary)
    held("RC-CCH-001", expected, observed, job=job, summary=summary)


def _other_tag(profile: Profile) -> str:
    cache = profile.expect.cache
    if cache is None:
        pytest.skip(
            f"the profile of cluster {profile.name} names no second runner on the shared cache "
            "(expect.cache.other_runner_tag); no migration to test"
        )
    return cache.other_runner_tag


@check(
    id="RC-CCH-002",
    claim="a cache saved on one runner is restored by a job on another runner sharing the cache (a project "
    "moved between runners keeps its cache)",
    remediation=SHARED_REMEDIATION,
    area="cache",
    probes=(PROBE,),
)
def test_cache_restored_on_another_runner(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    tag = _other_tag(runnerconf_profile)
    _, saved = _saver(job_evidence)
    job, found = _restorer(job_evidence, OTHER)
    saved_on, restored_on = saved.get("runner_short_token", ""), found.get("runner_short_token", "")
    if saved_on and saved_on == restored_on:
        could_not_test(
            "inconclusive",
            f"job {OTHER} (tag {tag!r}, expect.cache.other_runner_tag) ran on runner {restored_on}, the saver's "
            "own: the tag does not lead to another runner",
            job=job,
        )
    expected = {"nonce": saved["nonce"], "saved on runner": saved_on, "restored on tag": tag}
    ok, observed, summary = judge_cache(saved, job, found)
    summary = f"{summary}; saved on runner {saved_on or '?'}, restored on {restored_on or '?'}"
    if not ok:
        fail("RC-CCH-002", expected, observed, job=job, summary=summary)
    held("RC-CCH-002", expected, observed, job=job, summary=summary)


def judge_artifact(
    saved: dict[str, Any], job: JobEvidence, found: dict[str, Any]
) -> tuple[bool, dict[str, Any], str]:
    """(held, observed, summary): the needing job's copy of the saver's artifact has the saver's checksum."""
    observed = {
        "job": job.name,
        "artifact found": bool(found.get("artifact_found")),
        "sha256": found.get("artifact_sha256", ""),
        "bytes": found.get("artifact_bytes"),
        "download_artifacts lines": [
            ln.strip() for ln in job.trace_parsed.section_text("download_artifacts") if ln.strip()
        ],
    }
    if not found.get("artifact_found"):
        return False, observed, f"{job.name} has no rc-artifact/payload.bin"
    if found.get("artifact_sha256") != saved.get("artifact_sha256"):
        return (
            False,
            observed,
            f"{job.name}'s payload.bin ({found.get('artifact_bytes')} bytes) has another checksum than the "
            f"saver's ({saved.get('artifact_bytes')} bytes)",
        )
    return (
        True,
        observed,
        f"{job.name} received payload.bin intact ({found.get('artifact_bytes')} bytes, sha256)",
    )


@check(
    id="RC-CCH-003",
    claim="a file one job declares as artifact reaches the job that needs it intact (same sha256)",
    remediation=ARTIFACT_REMEDIATION,
    area="cache",
    probes=(PROBE,),
)
def test_artifact_round_trip(job_evidence: JobLookup) -> None:
    _, saved = _saver(job_evidence)
    job, found = _restorer(job_evidence, RESTORER)
    expected = {
        "sha256": saved["artifact_sha256"],
        "bytes": saved.get("artifact_bytes"),
        "from": SAVER,
        "path": "rc-artifact/payload.bin",
    }
    ok, observed, summary = judge_artifact(saved, job, found)
    if not ok:
        fail("RC-CCH-003", expected, observed, job=job, summary=summary)
    held("RC-CCH-003", expected, observed, job=job, summary=summary)
