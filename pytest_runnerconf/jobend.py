"""Classify how a probe job ended, from what the runner and GitLab say, before any check reads it.

A job the runner failed before its probe ran is no evidence about the cluster's conformance: its checks are
could_not_test with the runner's own words. A script failure is the probe's to explain (a check about failures,
such as an OOM kill, judges it).

What is decided from what, in this order (the wordings and their runner versions are in
tests/data/traces/README.md, which names the runner source file of each):

1. the trace's final line: `Job succeeded`, `ERROR: Job failed (system failure): ...` or `ERROR: Job failed: ...`.
   The runner writes "(system failure)" only for runner_system_failure; from 16.0 an image pull, and from 19.1
   configuration and external-dependency failures, end in a plain `Job failed:` line although the script never
   ran, so a failure in the prepare stages (the message starts `prepare environment:`, or the job ended inside
   prepare_executor/prepare_script) is infrastructure whatever the line says;
2. GitLab's failure_reason, including the values a newer runner reports and an older GitLab stores differently
   (FAILURE_REASON_FALLBACK);
3. the pod as the watch saw it (waiting reasons, Warning events, eviction), which names the cause when the
   runner's message is generic ("timed out waiting for pod to start") or when there is no trace at all.

Cleanup errors (`ERROR: Error cleaning up pod: ...`) never change how the job ended; they are kept as evidence for
the cleanup checks. The runner version comes from the trace header; below SUPPORTED_FLOOR the suite cannot map a
pod to its job, which unsupported_runner() says in one sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_runnerconf.evidence import JobEvidence, PodObservation
from pytest_runnerconf.trace import Trace, version_number

SUCCEEDED = "succeeded"
SCRIPT_FAILURE = "script-failure"
INFRASTRUCTURE = "infrastructure"
CANCELED = "canceled"
UNFINISHED = "unfinished"

# The oldest runner the suite judges. Its pods are mapped to their jobs from 16.0 on (podjob.py: runners before
# 17.9 set only the `pod` label, but the job.runner.gitlab.com/id annotation, the build env and the pod name are
# there since 16.0, executors/kubernetes/kubernetes.go@v16.0.0), and its traces are parsed from 16.x samples.
SUPPORTED_FLOOR = (16, 0, 0)

# GitLab's failure_reason values that mean the runner or GitLab, not the script, ended the job.
_INFRA_REASONS = frozenset(
    {
        "runner_system_failure",
        "stuck_or_timeout_failure",
        "job_execution_timeout",
        "runner_configuration_error",  # runner 19.1+ on a GitLab that knows it
        "runner_external_dependency_failure",  # runner 19.1+
        "runner_interrupted",  # runner 19.1+
        "image_pull_failure",  # runner 16.1+, only where GitLab lists it among its failure_reasons
        "unknown_failure",  # what an older GitLab stores for runner_interrupted
        "scheduler_failure",
        "runner_unsupported",
        "api_failure",
        "data_integrity_failure",
    }
)

# What a GitLab that does not know a newer runner's reason stores instead (failureReasonsCompatibilityMap in
# common/network.go@v19.3.0; a reason with no mapping becomes unknown_failure in common/failure_reason_mapper.go).
FAILURE_REASON_FALLBACK: dict[str, str] = {
    "runner_configuration_error": "script_failure",
    "runner_external_dependency_failure": "runner_system_failure",
    "image_pull_failure": "runner_system_failure",
    "runner_interrupted": "unknown_failure",
}

# failure_reason -> cause when nothing more specific is known.
_REASON_CAUSES: dict[str, str] = {
    "job_execution_timeout": "job-timeout",
    "runner_configuration_error": "runner-config",
    "image_pull_failure": "image-pull",
    "api_failure": "api-error",
}

# The runner's own wording (its failure text) -> cause; first match wins, so the specific come first: a quota
# refusal is also "forbidden", an image pull over a dead network also says "connection refused".
_CAUSE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"exceeded quota|exceeds quota|forbidden: failed quota|must specify limits|LimitRange", re.I
        ),
        "quota",
    ),
    (
        re.compile(
            r"ErrImagePull|ImagePullBackOff|InvalidImageName|image pull failed|pulling image|pull image"
            r"|failed to pull",
            re.I,
        ),
        "image-pull",
    ),
    (
        re.compile(
            r"failed calling webhook|etcdserver|connection refused|connection reset|i/o timeout"
            r"|TLS handshake timeout|http2: client connection lost|error dialing backend|connection timed out"
            r"|the server is currently unable|Internal error occurred|unexpected EOF|Timeout occurred",
            re.I,
        ),
        "api-error",
    ),
    (
        re.compile(
            r"admission webhook|denied the request|is forbidden|Unauthorized|cannot (create|get|list|watch|delete|patch)",
            re.I,
        ),
        "permissions",
    ),
    (
        re.compile(
            r"couldn't prepare overwrites|higher than limit allowed|does not match|is invalid DNS"
            r"|container configuration error|CreateContainerConfigError|not one of the allowed_pull_policies"
            r"|invalid pull policy",
            re.I,
        ),
        "runner-config",
    ),
    (
        re.compile(
            r"timed out waiting for pod to start|pod status is failed|failed to enter running state"
            r"|CrashLoopBackOff|failed to become attachable|already succeeded before it begins running",
            re.I,
        ),
        "pod-not-started",
    ),
    (
        re.compile(r"execution took longer than|prepare timeout|get sources timeout|script timeout", re.I),
        "job-timeout",
    ),
)

# Causes that say only that the pod did not get going; the pod's own status may name the reason.
_GENERIC_CAUSES = frozenset({"runner-system-failure", "pod-not-started", "job-timeout"})
# When the pod shows several reasons, the one that explains the others wins.
_POD_CAUSE_RANK = ("quota", "image-pull", "runner-config", "pod-not-started")

# executePrepareScripts (common/build.go) appends this to every prepare-stage error; it is advice about shell
# profiles, not part of what went wrong, so the quoted message leaves it out.
_SHELL_PROFILE_HINT = re.compile(
    r"\. Check https://docs\.gitlab\.com/runner/shells/(?:index\.html)?#shell-profile-loading for more information$"
)
_PREPARE_PREFIX = "prepare environment: "
_PREPARE_STAGES = frozenset({"resolve_secrets", "prepare_executor", "prepare_script"})
# Sections the runner runs after a failure; the stage a job ended in is the last one before these.
_TAIL_STAGES = frozenset(
    {
        "after_script",
        "archive_cache",
        "archive_cache_on_failure",
        "upload_artifacts_on_success",
        "upload_artifacts_on_failure",
        "cleanup_file_variables",
    }
)
# cleanupResources in executors/kubernetes/kubernetes.go (v16.0 to v19.3): ERROR lines that say a per-job
# object may have been left behind.
_CLEANUP_ERROR = re.compile(
    r"^ERROR: (?:Error cleaning up (?P<what>pod|secrets)|Error tearing down (?P<ns>namespace)): (?P<message>.*)$"
)
_CLUSTER_EVENT = re.compile(r"^WARNING: Event retrieved from the cluster: (?P<message>.*)$")
# getPodPhase (executors/kubernetes/util.go) prints each pod condition that has a reason under its
# `Waiting for pod ...` line as `\t<Reason>: "<message>"`; ContainersNotReady is only the wait itself.
_CONDITION = re.compile(r'^\t(?P<reason>[A-Za-z]+): "(?P<message>.*)"$')
_CONDITION_CAUSES = {"Unschedulable": "pod-not-started"}
# With FF_PRINT_POD_EVENTS, printPodEvents (executors/kubernetes/kubernetes.go) streams every pod event through
# a tabwriter (min width 3, padding 3) flushed per event: `<Type>   <Reason>   <Message>`.
_EVENT_ROW = re.compile(r"^(?P<type>Normal|Warning) {3,}(?P<reason>[A-Za-z]+) {3,}(?P<message>.*)$")
_WAITING_CAUSES = {
    "ErrImagePull": "image-pull",
    "ImagePullBackOff": "image-pull",
    "InvalidImageName": "image-pull",
    "ErrImageNeverPull": "image-pull",
    "CreateContainerConfigError": "runner-config",
    "CreateContainerError": "pod-not-started",
    "CrashLoopBackOff": "pod-not-started",
    "RunContainerError": "pod-not-started",
}
_EVENT_CAUSES = {
    "FailedScheduling": "pod-not-started",
    "FailedMount": "pod-not-started",
    "FailedAttachVolume": "pod-not-started",
    "FailedCreatePodSandBox": "pod-not-started",
    "BackOff": "pod-not-started",
    "Evicted": "runner-system-failure",
    "Preempted": "runner-system-failure",
    "NodeNotReady": "pod-not-started",
}


@dataclass(frozen=True)
class CleanupError:
    """One `ERROR: Error cleaning up ...` line: which object (pod, secrets, namespace) and the runner's words."""

    what: str
    message: str


@dataclass(frozen=True)
class PodFinding:
    """One fact from the pod's status or events that explains why it did not run, and the cause it points to."""

    cause: str
    text: str


@dataclass(frozen=True)
class JobEnd:
    kind: str  # SUCCEEDED | SCRIPT_FAILURE | INFRASTRUCTURE | CANCELED | UNFINISHED
    cause: str | None = None  # for INFRASTRUCTURE: one of outcome.CAUSES
    message: str = ""  # the runner's or GitLab's own words
    source: str = ""  # what decided: "trace", "failure_reason", "pod", "status"
    failure_reason: str = ""  # GitLab's, as the job JSON holds it
    runner_version: str | None = None  # from the trace header
    stage: str = ""  # the trace section the job ended in ("" when the trace has none)
    probe_started: bool = False  # the trace shows the job script (step_script) starting
    cleanup_errors: tuple[CleanupError, ...] = ()  # evidence for the cleanup checks, not about the job's end
    pod_findings: tuple[PodFinding, ...] = ()  # what the pod and the trace's cluster events showed
    unsupported: str = ""  # one sentence when the runner is older than SUPPORTED_FLOOR

    @property
    def infrastructure(self) -> bool:
        return self.kind == INFRASTRUCTURE

    def sentence(self, job: str) -> str:
        """One sentence on how JOB ended, quoting the runner's or GitLab's words, for a could_not_test."""
        words = self.message.rstrip(".")
        if self.source == "diagnosis":
            return f"The run cancelled job {job} because its pod never started: {words}."
        if self.kind == INFRASTRUCTURE and not self.probe_started:
            return f"The runner failed job {job} before its probe ran: {words}."
        if self.kind == INFRASTRUCTURE:
            return f"The runner ended job {job} while its probe ran: {words}."
        if self.kind == CANCELED:
            return f"Job {job} was canceled before its probe finished."
        if self.kind == UNFINISHED:
            return f"Job {job} did not finish: {words}."
        if self.kind == SCRIPT_FAILURE:
            return f"The probe of job {job} failed: {words}."
        return f"Job {job} succeeded."


def cause_of(message: str) -> str:
    """The could_not_test cause a runner failure message points to."""
    for pattern, cause in _CAUSE_PATTERNS:
        if pattern.search(message):
            return cause
    return "runner-system-failure"


def runner_message(failure: str) -> str:
    """The runner's failure text without the shell-profile advice it appends to prepare-stage errors."""
    return _SHELL_PROFILE_HINT.sub("", failure.strip())


def unsupported_runner(version: str | None) -> str | None:
    """One sentence when VERSION is older than the suite can judge; None when supported or unknown."""
    number = version_number(version)
    if number is None or number >= SUPPORTED_FLOOR:
        return None
    floor = ".".join(str(n) for n in SUPPORTED_FLOOR)
    return (
        f"The runner under test is gitlab-runner {version}; the suite judges runners from {floor} on, whose job "
        "pods and traces it knows how to read."
    )


def unsupported_among(versions: Iterable[str]) -> str | None:
    """The sentence for the oldest of VERSIONS below SUPPORTED_FLOOR (a run's jobs may meet several runners)."""
    old = [
        (number, v)
        for v in versions
        if (number := version_number(v)) is not None and number < SUPPORTED_FLOOR
    ]
    return unsupported_runner(min(old)[1]) if old else None


def cleanup_errors(trace: Trace) -> tuple[CleanupError, ...]:
    """The runner's cleanup errors in TRACE, in order."""
    found = []
    for line in trace.lines:
        if match := _CLEANUP_ERROR.match(line.text):
            found.append(CleanupError(match.group("what") or match.group("ns"), match.group("message")))
    return tuple(found)


def ended_in(trace: Trace) -> str:
    """The section the job was in when it ended: the last one begun before the final line, tail stages aside."""
    limit = trace.final_line if trace.final_line is not None else len(trace.lines)
    stage = ""
    for section in trace.sections:
        if section.first_line > limit:
            break
        if section.name in _TAIL_STAGES or section.name.startswith("section_script_step"):
            continue
        stage = section.name
    return stage


def probe_started(trace: Trace) -> bool:
    """Whether the job script began: a step_script (or step_<name>) section, or its header line."""
    if any(s.name == "step_script" or s.name.startswith("step_") for s in trace.sections):
        return True
    return any(line.text.startswith('Executing "step_') for line in trace.lines)


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def pod_findings(pod: PodObservation | None, trace: Trace | None = None) -> tuple[PodFinding, ...]:
    """What the pod's status, its timeline, its Warning events and the trace's cluster events say went wrong."""
    found: list[PodFinding] = []
    seen: set[str] = set()

    def add(cause: str, text: str) -> None:
        if text not in seen:
            seen.add(text)
            found.append(PodFinding(cause, text))

    def event(kind: object, reason: str, message: str, label: str) -> None:
        if kind != "Warning" and reason not in ("Evicted", "Preempted"):
            return
        cause = _EVENT_CAUSES.get(reason)
        if reason == "Failed" and re.search(r"pull|image", message, re.I):
            cause = "image-pull"
        if cause is not None:
            add(cause, f"{label} {reason}: {message}")

    def waiting(name: object, state: dict[str, Any] | None) -> None:
        waiting = (state or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in _WAITING_CAUSES:
            text = f"container {name} waiting: {reason}: {waiting.get('message') or ''}"
            add(_WAITING_CAUSES[reason], text.rstrip(": "))

    if pod is not None:
        for cs in _container_statuses(pod.last):
            waiting(cs.get("name"), cs.get("state"))
        # The timeline keeps states the last object no longer shows (an ImagePullBackOff before a deletion).
        for entry in pod.timeline:
            for name, state in (entry.get("containers") or {}).items():
                waiting(name, state)
        status = pod.last.get("status") or {}
        if status.get("reason") == "Evicted":
            add("runner-system-failure", f"pod evicted: {status.get('message') or ''}".rstrip(": "))
        for ev in pod.events:
            event(ev.get("type"), str(ev.get("reason") or ""), str(ev.get("message") or ""), "event")
    if trace is not None:
        for line in trace.lines:
            if (match := _CONDITION.match(line.text)) and match.group("reason") in _CONDITION_CAUSES:
                add(
                    _CONDITION_CAUSES[match.group("reason")],
                    f"condition {match.group('reason')}: {match.group('message')}",
                )
            elif match := _EVENT_ROW.match(line.text):
                event(match.group("type"), match.group("reason"), match.group("message"), "event")
            elif match := _CLUSTER_EVENT.match(line.text):
                message = match.group("message")
                cause = cause_of(message)
                if cause == "runner-system-failure" and re.search(
                    r"nodes are available|Insufficient|taint", message
                ):
                    cause = "pod-not-started"
                add(cause, f"event: {message}")
    return tuple(found)


def _refine(cause: str, findings: tuple[PodFinding, ...]) -> str:
    """A generic cause made specific by what the pod showed; a specific one stays."""
    if cause not in _GENERIC_CAUSES:
        return cause
    shown = {f.cause for f in findings}
    return next((candidate for candidate in _POD_CAUSE_RANK if candidate in shown), cause)


def _explaining(cause: str, findings: tuple[PodFinding, ...]) -> str:
    """The first finding that points to CAUSE, as a clause for a message ("" when none does)."""
    return next((f"; {f.text}" for f in findings if f.cause == cause), "")


def _before_probe(message: str, stage: str, started: bool) -> bool:
    """Whether a failure happened before the job script could run (so the probe left no evidence)."""
    if message.startswith(_PREPARE_PREFIX):
        return True
    return not started and stage in _PREPARE_STAGES


def _runner_ended(message: str) -> bool:
    """Whether the runner, not the script, ended the job: its timeout, or its process being stopped."""
    return message.startswith("aborted: ") or cause_of(message) == "job-timeout"


def classify(job: JobEvidence) -> JobEnd:
    """How JOB ended: the trace's final line first, then GitLab's failure_reason and the pod, then its status."""
    trace = job.trace_parsed
    reason = str(job.job.get("failure_reason") or "")
    started = probe_started(trace)
    stage = ended_in(trace)
    findings = pod_findings(job.pod, trace)
    facts: dict[str, Any] = {
        "failure_reason": reason,
        "runner_version": trace.runner_version,
        "stage": stage,
        "probe_started": started,
        "cleanup_errors": cleanup_errors(trace),
        "pod_findings": findings,
        "unsupported": unsupported_runner(trace.runner_version) or "",
    }
    diagnosis = job.diagnosis
    if diagnosis is not None and diagnosis.cancelled:
        # The run gave up on a pod that never started and cancelled its job before the runner's own poll
        # timeout: the trace says "canceled", the diagnosis says why.
        return JobEnd(INFRASTRUCTURE, diagnosis.cause, diagnosis.sentence, "diagnosis", **facts)
    if trace.final is not None:
        if trace.succeeded:
            return JobEnd(SUCCEEDED, source="trace", **facts)
        message = runner_message(trace.failure or trace.final)
        if message == "canceled" or job.status == "canceled":
            return JobEnd(CANCELED, message=message, source="trace", **facts)
        before = _before_probe(message, stage, started) or _runner_ended(message)
        if trace.system_failure or before or reason in _INFRA_REASONS:
            cause = cause_of(message)
            if cause == "runner-system-failure" and reason in _REASON_CAUSES:
                cause = _REASON_CAUSES[reason]
            if not started:
                cause = _refine(cause, findings)
                if diagnosis is not None and cause in _GENERIC_CAUSES:
                    cause = diagnosis.cause  # the runner failed first; the pod's events said why
            source = "trace" if trace.system_failure or before else "failure_reason"
            return JobEnd(INFRASTRUCTURE, cause, message, source, **facts)
        return JobEnd(SCRIPT_FAILURE, message=message, source="trace", **facts)
    if job.status in ("canceled", "canceling"):
        return JobEnd(CANCELED, message="the job was canceled", source="status", **facts)
    if reason in _INFRA_REASONS:
        cause = _refine(_REASON_CAUSES.get(reason, "runner-system-failure"), findings)
        message = f"GitLab failure_reason {reason}{_explaining(cause, findings)}"
        return JobEnd(INFRASTRUCTURE, cause, message, "failure_reason", **facts)
    if job.status == "failed" and not started and any(f.cause != "runner-system-failure" for f in findings):
        # An older GitLab stores a 19.1+ runner's configuration error as script_failure; without a trace,
        # a pod whose containers never ran says the script did not fail.
        cause = _refine("pod-not-started", findings)
        message = f"GitLab failure_reason {reason or 'unknown'}{_explaining(cause, findings)}"
        return JobEnd(INFRASTRUCTURE, cause, message, "pod", **facts)
    if job.status == "success":
        return JobEnd(SUCCEEDED, source="status", **facts)
    if job.status == "failed":
        return JobEnd(
            SCRIPT_FAILURE, message=f"GitLab failure_reason {reason or 'unknown'}", source="status", **facts
        )
    return JobEnd(
        UNFINISHED, message=f"the job is {job.status or 'of unknown status'}", source="status", **facts
    )
