"""RC-IMG: a missing image fails its job promptly with the runner's pull message and leaves nothing behind;
allowed_images, allowed_services and allowed_pull_policies refuse what they should; the effective pull policy."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pytest_runnerconf import (
    ImagePolicyExpect,
    JobEvidence,
    Profile,
    RunEvidence,
    check,
    could_not_test,
    fail,
    held,
    job_end,
)

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/images.yml.
MISSING = "registry.runnerconf.test:5000/runnerconf/absent:1"
DISALLOWED_IMAGE = "python:3.12"
DISALLOWED_SERVICE = "postgres:16"
JOB_PULL_POLICY = "always"
REFUSED_PULL_POLICY = "never"
SERVICE = "rc-img-svc"
_K8S = {"always": "Always", "if-not-present": "IfNotPresent", "never": "Never"}
_VERSION = re.compile(r"Running with gitlab-runner (\d+)\.(\d+)\.(\d+)")
# 19.1 classifies a missing image as a configuration error (common/classify_image_pull_failure.go); before, the
# runner reports image_pull_failure where GitLab knows it, else runner_system_failure.
CLASSIFIED_SINCE = (19, 1, 0)


def _expect(profile: Profile) -> ImagePolicyExpect:
    if profile.expect.image_policy is None:
        pytest.skip(
            f"the profile of cluster {profile.name} sets no expect.image_policy; nothing to compare with"
        )
    return profile.expect.image_policy


def doublestar_match(pattern: str, name: str) -> bool:
    """doublestar.Match as the runner's VerifyAllowedImage uses it: * within a segment, ** across segments."""
    regex = ""
    for part in re.split(r"(\*\*|\*|\?)", pattern):
        regex += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.fullmatch(regex, name) is not None


def allowed(image: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(doublestar_match(p, image) for p in patterns)


def runner_version(job: JobEvidence) -> tuple[int, int, int] | None:
    match = _VERSION.search(job.trace_parsed.text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def pull_failure_reasons(version: tuple[int, int, int] | None) -> set[str]:
    if version is not None and version >= CLASSIFIED_SINCE:
        return {
            "runner_configuration_error",
            "script_failure",
        }  # the latter on a GitLab without the new reason
    return {"image_pull_failure", "runner_system_failure"}


def _missing_job(evidence: RunEvidence, expect: ImagePolicyExpect) -> JobEvidence:
    job = evidence.jobs.get("images-missing")
    if job is None:
        could_not_test(
            "no-evidence", f"the run has no job images-missing (it has: {', '.join(sorted(evidence.jobs))})"
        )
    if not allowed(MISSING, expect.allowed_images):
        pytest.skip(
            f"{MISSING} is outside this profile's allowed_images: the runner refuses it before any pull"
        )
    return job


def pull_failed_on_pod(job: JobEvidence) -> bool:
    """Whether the pod shows its image could not be pulled (a waiting reason or the kubelet's Failed event)."""
    if job.pod is None:
        return False
    for event in job.pod.events:
        if event.get("reason") in ("Failed", "BackOff") and "pull" in str(event.get("message") or "").lower():
            return True
    status = job.pod.last.get("status") or {}
    for st in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]:
        if ((st.get("state") or {}).get("waiting") or {}).get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
        ):
            return True
    return False


def judgeable(job: JobEvidence) -> None:
    """could_not_test unless the job's end is the missing image's: a quota refusal, an API outage or a pod that
    never got scheduled (no pull was ever tried) says nothing about how the runner reports a pull failure."""
    end = job_end(job)
    if not end.infrastructure or end.cause == "image-pull":
        return
    if end.cause == "pod-not-started" and pull_failed_on_pod(job):
        return  # the pull failed and the runner waited instead of saying so: that is what RC-IMG-001 judges
    could_not_test(end.cause or "runner-system-failure", end.sentence(job.name), job=job)


def _duration(job: JobEvidence) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return float(job.finished_at) - float(job.started_at)


@check(
    id="RC-IMG-001",
    claim="a job whose image does not exist fails well before its timeout with the runner's 'image pull failed' "
    "message and the failure reason of its version",
    remediation="the runner fails a job on ErrImagePull/ImagePullBackOff at once; a job that waits out "
    "poll_timeout instead points at a runner that does not watch container statuses (informer permissions: pods "
    "list/watch) or at print_pod_warning_events; check image names, registry credentials and pull_policy",
    area="images",
    probes=("images",),
)
def test_missing_image_fails_promptly(runnerconf_evidence: RunEvidence, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    # Read directly: job_evidence would (rightly, elsewhere) turn an image-pull end into could-not-test.
    job = _missing_job(runnerconf_evidence, expect)
    judgeable(job)
    text = job.trace_parsed.text
    took = _duration(job)
    reason = str(job.job.get("failure_reason") or "")
    reasons = pull_failure_reasons(runner_version(job))
    final = job.trace_parsed.final or ""
    problems = []
    if job.status != "failed":
        problems.append(f"job {job.status or 'unknown'} (the run cancels a job whose pod stays Pending)")
    if "image pull failed" not in text or MISSING not in final:
        problems.append(f"final line: {final or 'none'}")
    if took is not None and took > expect.pull_failure_deadline_s:
        problems.append(f"failed after {took:.0f}s (deadline {expect.pull_failure_deadline_s}s)")
    if reason not in reasons:
        problems.append(f"failure_reason {reason or 'none'} (want one of {sorted(reasons)})")
    shown = f"{took:.1f}s" if took is not None else "an unknown time"
    summary = f"job {job.status} after {shown}, failure_reason {reason or 'none'}: {final[:160]}"
    want = {"message": f'pulling image "{MISSING}" ... image pull failed', "within_s": expect.pull_failure_deadline_s,
            "failure_reason": sorted(reasons)}  # fmt: skip
    observed = {"status": job.status, "duration_s": took, "failure_reason": reason, "final": final}
    if problems:
        fail("RC-IMG-001", want, observed, job=job, detail="; ".join(problems), summary=summary)
    held("RC-IMG-001", want, observed, job=job, summary=summary)


def _refusal(check_id: str, job: JobEvidence, image: str, option: str) -> tuple[str, str]:
    text = job.trace_parsed.text
    line = f'The "{image}" image is not present on list of allowed {option}:'
    if job.status != "failed" or line not in text or "disallowed image" not in (job.trace_parsed.final or ""):
        fail(
            check_id,
            f"job failed: {line} ... disallowed image",
            f"job {job.status or 'unknown'}; final line: {job.trace_parsed.final or 'none'}",
            job=job,
            summary=f"{image} was not refused by allowed_{option}: job {job.status}",
        )
    if job.pod is not None:
        fail(check_id, "no pod for a refused image", f"pod {job.pod.name}", job=job)
    return line, job.trace_parsed.final or ""


@check(
    id="RC-IMG-003",
    claim="an image outside allowed_images and a service outside allowed_services are refused with the runner's "
    "'is not present on list of allowed' message, before any pod",
    remediation="check allowed_images and allowed_services in [runners.kubernetes] (doublestar patterns: * stays "
    "within a path segment, ** crosses them)",
    area="images",
    probes=("images",),
    judges_failures=("images-disallowed", "images-service-disallowed"),
)
def test_allow_lists_refuse(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    said, seen = [], {}
    for name, image, option, patterns in (
        ("images-disallowed", DISALLOWED_IMAGE, "images", expect.allowed_images),
        ("images-service-disallowed", DISALLOWED_SERVICE, "services", expect.allowed_services),
    ):
        if allowed(image, patterns):
            said.append(f"{image} is allowed by this profile's allowed_{option}: not judged")
            continue
        job = job_evidence(name)
        line, final = _refusal("RC-IMG-003", job, image, option)
        seen[name] = {"status": job.status, "line": line, "final": final}
        said.append(f"{image} refused by allowed_{option}, no pod")
    if not seen:
        pytest.skip("; ".join(said))
    held(
        "RC-IMG-003",
        {"images": list(expect.allowed_images), "services": list(expect.allowed_services)},
        seen,
        summary="; ".join(said),
    )


def _policies(names: tuple[str, ...]) -> list[str]:
    return [_K8S[n] for n in names if n in _K8S]


@check(
    id="RC-IMG-004",
    claim="each container's imagePullPolicy and the trace's 'Using effective pull policy' line follow the job's "
    "pull_policy, else config.toml's, within allowed_pull_policies",
    remediation="check pull_policy and allowed_pull_policies in [runners.kubernetes] and the job's image/service "
    "pull_policy",
    area="images",
    probes=("images",),
)
def test_effective_pull_policy(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    configured = _policies(expect.pull_policy)
    allowed_policies = _policies(expect.allowed_pull_policies) or configured
    job_policy = _policies((JOB_PULL_POLICY,))
    if allowed_policies and not set(job_policy) & set(allowed_policies):
        pytest.skip(f"pull_policy {JOB_PULL_POLICY} is outside this profile's allowed_pull_policies")
    if not configured:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} sets no pull_policy to compare with")
    want = {
        "build": [p for p in job_policy if not allowed_policies or p in allowed_policies],
        SERVICE: [p for p in configured if not allowed_policies or p in allowed_policies],
    }
    job = job_evidence("images-pull-policy")
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    containers = {c.get("name"): c for c in (job.pod.spec.get("spec") or {}).get("containers") or []}
    text = job.trace_parsed.text
    wrong, seen = {}, {}
    for name, policies in want.items():
        got = (containers.get(name) or {}).get("imagePullPolicy")
        line = f"Using effective pull policy of [{' '.join(policies)}] for container {name}"
        seen[name] = {"imagePullPolicy": got, "logged": line in text}
        if got != policies[0] or line not in text:
            wrong[name] = f"imagePullPolicy {got}; logged {line!r}: {line in text}"
    summary = "; ".join(f"{n} imagePullPolicy {s['imagePullPolicy']}" for n, s in seen.items())
    if wrong:
        fail("RC-IMG-004", want, wrong, job=job, summary=summary)
    held("RC-IMG-004", want, seen, job=job, summary=summary + " (as logged)")


_INCOMPATIBLE = re.compile(
    r'invalid pull policy for container "[^"]+": pull_policy \(\[([^]]*)\]\) defined in ([^)]+?) is not one of '
    r"the allowed_pull_policies \(\[([^]]*)\]\)"
)


@check(
    id="RC-IMG-005",
    claim="a job pull_policy outside allowed_pull_policies fails the job with the runner's 'is not one of the "
    "allowed_pull_policies' message, before any pod",
    remediation="check allowed_pull_policies in [runners.kubernetes]",
    area="images",
    probes=("images",),
    judges_failures=("images-pull-never",),
)
def test_pull_policy_outside_allowed_refused(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    allowed_policies = _policies(expect.allowed_pull_policies)
    refused = _policies((REFUSED_PULL_POLICY,))
    if not allowed_policies or set(refused) & set(allowed_policies):
        pytest.skip(f"pull_policy {REFUSED_PULL_POLICY} is allowed by this profile (allowed_pull_policies "
                    f"{list(expect.allowed_pull_policies) or 'unset'})")  # fmt: skip
    job = job_evidence("images-pull-never")
    found = [m for m in _INCOMPATIBLE.finditer(job.trace_parsed.text) if m.group(1) == " ".join(refused)]
    want = (
        f"pull_policy ([{' '.join(refused)}]) defined in GitLab pipeline config is not one of the "
        f"allowed_pull_policies ([{' '.join(allowed_policies)}])"
    )
    if job.status != "failed" or not found or job.pod is not None:
        fail("RC-IMG-005", f"job failed: {want}, no pod",
             f"job {job.status or 'unknown'}, pod {job.pod.name if job.pod else 'none'}; final line: "
             f"{job.trace_parsed.final or 'none'}", job=job,
             summary=f"pull_policy {REFUSED_PULL_POLICY} was not refused: job {job.status}")  # fmt: skip
    held(
        "RC-IMG-005",
        {"refused": want},
        {"job": job.status, "message": found[0].group(0), "pod": None},
        job=job,
        summary=f"job {job.status}, no pod: {found[0].group(0)}",
    )
