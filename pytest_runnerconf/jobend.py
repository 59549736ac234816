"""Classify how a probe job ended, from what the runner and GitLab say, before any check reads it.

A job the runner failed before its probe ran is no evidence about the cluster's conformance: its checks are
could_not_test with the runner's own words. A script failure is the probe's to explain (a check about failures,
such as an OOM kill, judges it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_runnerconf.evidence import JobEvidence

SUCCEEDED = "succeeded"
SCRIPT_FAILURE = "script-failure"
INFRASTRUCTURE = "infrastructure"
CANCELED = "canceled"
UNFINISHED = "unfinished"

# GitLab's failure_reason values that mean the runner or GitLab, not the script, ended the job.
_INFRA_REASONS = frozenset(
    {
        "runner_system_failure",
        "stuck_or_timeout_failure",
        "runner_configuration_error",  # GitLab 19.1; older GitLab says runner_system_failure
        "runner_external_dependency_failure",
        "runner_interrupted",
        "scheduler_failure",
        "runner_unsupported",
        "api_failure",
        "data_integrity_failure",
    }
)

# The runner's own wording (its system-failure text) -> cause; first match wins.
_CAUSE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"exceeded quota|forbidden: exceeded|LimitRange|must specify limits", re.I), "quota"),
    (re.compile(r"ErrImagePull|ImagePullBackOff|InvalidImageName|pull image|image pull", re.I), "image-pull"),
    (re.compile(r"timed out waiting for pod to start|waiting for pod running", re.I), "pod-not-started"),
    (
        re.compile(r"admission webhook|is forbidden|Unauthorized|cannot (create|get|list|delete)", re.I),
        "permissions",
    ),
)


@dataclass(frozen=True)
class JobEnd:
    kind: str  # SUCCEEDED | SCRIPT_FAILURE | INFRASTRUCTURE | CANCELED | UNFINISHED
    cause: str | None = None  # for INFRASTRUCTURE: one of outcome.CAUSES
    message: str = ""  # the runner's or GitLab's own words
    source: str = ""  # what decided: "trace", "failure_reason", "status"

    @property
    def infrastructure(self) -> bool:
        return self.kind == INFRASTRUCTURE


def cause_of(message: str) -> str:
    """The could_not_test cause a runner system-failure message points to."""
    for pattern, cause in _CAUSE_PATTERNS:
        if pattern.search(message):
            return cause
    return "runner-system-failure"


def classify(job: JobEvidence) -> JobEnd:
    """How JOB ended: the trace's final line first, then GitLab's failure_reason, then its status."""
    trace = job.trace_parsed
    reason = str(job.job.get("failure_reason") or "")
    if trace.final is not None:
        if trace.succeeded:
            return JobEnd(SUCCEEDED, source="trace")
        message = trace.failure or trace.final
        if trace.system_failure:
            return JobEnd(INFRASTRUCTURE, cause_of(message), message, "trace")
        if reason in _INFRA_REASONS:
            return JobEnd(INFRASTRUCTURE, cause_of(message), message, "failure_reason")
        return JobEnd(SCRIPT_FAILURE, message=message, source="trace")
    if job.status == "canceled":
        return JobEnd(CANCELED, message="the job was canceled", source="status")
    if reason in _INFRA_REASONS:
        return JobEnd(
            INFRASTRUCTURE, "runner-system-failure", f"GitLab failure_reason {reason}", "failure_reason"
        )
    if job.status == "success":
        return JobEnd(SUCCEEDED, source="status")
    if job.status == "failed":
        return JobEnd(SCRIPT_FAILURE, message=f"GitLab failure_reason {reason or 'unknown'}", source="status")
    return JobEnd(UNFINISHED, message=f"the job is {job.status or 'of unknown status'}", source="status")
