"""How a probe job ended, over hand-written traces of runners 16.11 to 19.3 (sources in data/traces/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.evidence import JobEvidence, PodObservation
from pytest_runnerconf.jobend import (
    CANCELED,
    FAILURE_REASON_FALLBACK,
    INFRASTRUCTURE,
    SCRIPT_FAILURE,
    SUCCEEDED,
    UNFINISHED,
    CleanupError,
    JobEnd,
    cause_of,
    classify,
    runner_message,
    unsupported_among,
    unsupported_runner,
)
from pytest_runnerconf.outcome import CAUSES
from pytest_runnerconf.trace import parse_trace, version_number

TRACES = Path(__file__).resolve().parent / "data" / "traces"
POD = "runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4"


def job(
    trace: str = "",
    status: str = "failed",
    reason: str | None = None,
    pod: PodObservation | None = None,
) -> JobEvidence:
    data: dict[str, Any] = {"id": 4711, "status": status}
    if reason is not None:
        data["failure_reason"] = reason
    return JobEvidence("probe", data, trace, pod=pod)


def sample(name: str) -> str:
    # bytes, then decode: reading as text would turn the section markers' \r into line breaks
    return (TRACES / name).read_bytes().decode("utf-8")


def end_of(name: str, status: str, reason: str | None) -> JobEnd:
    return classify(job(sample(name), status, reason))


# file, GitLab status, GitLab failure_reason, expected kind, cause, fragment of the message, stage
CASES = [
    ("runner-16.11-success.txt", "success", None, SUCCEEDED, None, "", "step_script"),
    ("runner-16.11-script-failure.txt", "failed", "script_failure", SCRIPT_FAILURE, None,
     "command terminated with exit code 1", "step_script"),
    ("runner-16.11-poll-timeout.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "pod-not-started",
     "prepare environment: waiting for pod running: timed out waiting for pod to start", "prepare_script"),
    # 16.11 reports an image pull as image_pull_failure, which GitLab stores as runner_system_failure, and
    # writes a plain "Job failed:" line for it.
    ("runner-16.11-timestamps-image-pull.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "image-pull",
     'image pull failed: Back-off pulling image "registry.example.com/ci/probe:missing"', "prepare_script"),
    ("runner-17.11-success.txt", "success", None, SUCCEEDED, None, "", "step_script"),
    ("runner-17.11-quota.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "quota",
     "exceeded quota: ci-quota, requested: limits.memory=1Gi", "prepare_script"),
    ("runner-17.11-timestamps-webhook.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "permissions",
     'admission webhook "validation.gatekeeper.sh" denied the request', "prepare_script"),
    ("runner-17.11-credentials-forbidden.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "permissions",
     'setting up credentials: secrets is forbidden: User "system:serviceaccount:ci:gitlab-runner"',
     "prepare_script"),
    ("runner-17.11-cancel.txt", "canceled", None, CANCELED, None, "canceled", "step_script"),
    ("runner-17.11-print-pod-events-poll-timeout.txt", "failed", "runner_system_failure", INFRASTRUCTURE,
     "pod-not-started", "timed out waiting for pod to start", "prepare_script"),
    ("runner-18.3-etcd-timeout.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "api-error",
     "setting up build pod: etcdserver: request timed out", "prepare_script"),
    ("runner-18.3-oom-process.txt", "failed", "script_failure", SCRIPT_FAILURE, None,
     "command terminated with exit code 137", "step_script"),
    ("runner-18.11-timestamps-success.txt", "success", None, SUCCEEDED, None, "", "step_script"),
    # Cut at output_limit: no final line, the job's status alone says it succeeded.
    ("runner-18.11-timestamps-output-limit.txt", "success", None, SUCCEEDED, None, "", "step_script"),
    ("runner-18.11-timestamps-oom-system-failure.txt", "failed", "runner_system_failure", INFRASTRUCTURE,
     "runner-system-failure", "Error in container build: exit code: 137, reason: 'OOMKilled'", "step_script"),
    ("runner-18.11-timestamps-connection-refused.txt", "failed", "runner_system_failure", INFRASTRUCTURE,
     "api-error", "dial tcp 10.96.0.1:443: connect: connection refused", "prepare_script"),
    ("runner-18.11-timestamps-cleanup-error.txt", "success", None, SUCCEEDED, None, "", "step_script"),
    ("runner-18.11-timestamps-job-timeout.txt", "failed", "job_execution_timeout", INFRASTRUCTURE, "job-timeout",
     "execution took longer than 1h0m0s seconds", "step_script"),
    ("runner-18.11-poll-timeout-events.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "pod-not-started",
     "timed out waiting for pod to start", "prepare_script"),
    ("runner-18.11-overwrite-cap-retries.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "runner-config",
     'the resource "CPULimit" requested "3" is higher than limit allowed "2"', "prepare_executor"),
    # An evicted pod: the pod informer's error, not a BuildError, so a system failure after the probe started.
    ("runner-18.11-evicted.txt", "failed", "runner_system_failure", INFRASTRUCTURE, "runner-system-failure",
     'is disrupted: reason "EvictionByEvictionAPI", message "Eviction API: evicting"', "step_script"),
    ("runner-18.11-get-sources-failure.txt", "failed", "script_failure", SCRIPT_FAILURE, None,
     "command terminated with exit code 1", "get_sources"),
    ("runner-19.3-success.txt", "success", None, SUCCEEDED, None, "", "step_script"),
    ("runner-19.3-timestamps-script-failure.txt", "failed", "script_failure", SCRIPT_FAILURE, None,
     "command terminated with exit code 1", "step_script"),
    ("runner-19.3-timestamps-crashloop.txt", "failed", "runner_configuration_error", INFRASTRUCTURE,
     "pod-not-started", 'container "build" is in CrashLoopBackOff', "prepare_script"),
    ("runner-19.3-create-container-config-error.txt", "failed", "runner_configuration_error", INFRASTRUCTURE,
     "runner-config", 'container configuration error: secret "probe-env" not found', "prepare_script"),
    ("runner-19.3-timestamps-poll-timeout.txt", "failed", "runner_system_failure", INFRASTRUCTURE,
     "pod-not-started", "timed out waiting for pod to start (last phase: Pending)", "prepare_script"),
    ("runner-19.3-timestamps-image-pull-network.txt", "failed", "runner_external_dependency_failure",
     INFRASTRUCTURE, "image-pull", "no such host", "prepare_script"),
    ("runner-19.3-timestamps-interrupted.txt", "failed", "runner_interrupted", INFRASTRUCTURE,
     "runner-system-failure", "aborted: terminated", "step_script"),
    ("runner-19.3-overwrite-cap.txt", "failed", "runner_configuration_error", INFRASTRUCTURE, "runner-config",
     "couldn't prepare overwrites: invalid build limits specified", "prepare_executor"),
]  # fmt: skip


def test_every_sample_is_in_the_table() -> None:
    listed = {case[0] for case in CASES} | {"runner-18.11-bad-record.txt"}
    assert sorted(p.name for p in TRACES.glob("*.txt")) == sorted(listed)


@pytest.mark.parametrize(("name", "status", "reason", "kind", "cause", "fragment", "stage"), CASES)
def test_sample(
    name: str, status: str, reason: str | None, kind: str, cause: str | None, fragment: str, stage: str
) -> None:
    end = end_of(name, status, reason)
    assert (end.kind, end.cause, end.stage) == (kind, cause, stage)
    assert fragment in end.message
    assert end.infrastructure == (kind == INFRASTRUCTURE)
    assert end.failure_reason == (reason or "")
    if cause is not None:
        assert cause in CAUSES
    # The quoted message is the runner's own words without its shell-profile advice.
    assert "shell-profile-loading" not in end.message
    if kind == INFRASTRUCTURE and end.stage.startswith("prepare"):
        assert not end.probe_started


@pytest.mark.parametrize(
    ("name", "version", "revision"),
    [
        ("runner-16.11-success.txt", "16.11.0", "91a27b2a"),
        ("runner-17.11-timestamps-webhook.txt", "17.11.0", "0f67ff19"),
        ("runner-18.3-etcd-timeout.txt", "18.3.0", "9ba718cd"),
        ("runner-18.11-timestamps-job-timeout.txt", "18.11.4", "5b1ba4d9"),
        ("runner-19.3-success.txt", "19.3.0", "9cbf0074"),
        ("runner-19.3-timestamps-crashloop.txt", "19.3.0", "9cbf0074"),
    ],
)
def test_runner_version_from_the_header(name: str, version: str, revision: str) -> None:
    trace = parse_trace(sample(name))
    assert (trace.runner_version, trace.runner_revision) == (version, revision)
    assert end_of(name, "failed", None).runner_version == version


@pytest.mark.parametrize(
    ("header", "version", "revision", "number"),
    [
        ("Running with gitlab-runner 17.0.0~pre.88.g761ae5dd (761ae5dd)", "17.0.0~pre.88.g761ae5dd", "761ae5dd",
         (17, 0, 0)),
        ("Running with gitlab-runner development version (HEAD)", "development version", "HEAD", None),
        ("Running with gitlab-runner 16.5.0 (853330f9)", "16.5.0", "853330f9", (16, 5, 0)),
        ("\x1b[0KRunning with gitlab-runner 19.1.2 (abcdef12)\x1b[0;m", "19.1.2", "abcdef12", (19, 1, 2)),
        ("2026-11-23T00:00:00.100000Z 00O \x1b[0KRunning with gitlab-runner 18.7.0 (aa11bb22)\x1b[0;m",
         "18.7.0", "aa11bb22", (18, 7, 0)),
        ("Running with gitlab-runner 18.2.1", "18.2.1", None, (18, 2, 1)),
        # the local cluster's emulated runner names itself in the revision's place
        ("Running with gitlab-runner 18.11.4 (runnerconf local emulation, not a real runner)", "18.11.4",
         "runnerconf local emulation, not a real runner", (18, 11, 4)),
    ],
)  # fmt: skip
def test_header_formats(
    header: str, version: str, revision: str | None, number: tuple[int, ...] | None
) -> None:
    trace = parse_trace(header + "\n")
    assert (trace.runner_version, trace.runner_revision) == (version, revision)
    assert version_number(trace.runner_version) == number


def test_only_the_first_header_counts() -> None:
    trace = parse_trace(
        "Running with gitlab-runner 18.11.4 (5b1ba4d9)\n$ echo 'Running with gitlab-runner 1.0.0 (x)'\n"
    )
    assert trace.runner_version == "18.11.4"


@pytest.mark.parametrize(
    ("version", "unsupported"),
    [
        ("15.11.0", True),
        ("15.9.2~pre.12.gabcdef01", True),
        ("16.0.0", False),
        ("16.11.0", False),
        ("17.0.0~pre.88.g761ae5dd", False),
        ("17.8.5", False),
        ("18.11.4", False),
        ("19.3.0", False),
        ("development version", False),  # built from source: nothing to judge it by
        (None, False),
    ],
)
def test_unsupported_runner(version: str | None, unsupported: bool) -> None:
    sentence = unsupported_runner(version)
    assert (sentence is not None) == unsupported
    if sentence is not None:
        assert f"gitlab-runner {version}" in sentence and "16.0.0" in sentence
        assert sentence.endswith(".") and sentence.count(". ") == 0  # one sentence


def test_an_old_runners_job_says_so_and_keeps_its_kind() -> None:
    assert end_of("runner-16.11-success.txt", "success", None).unsupported == ""
    older = sample("runner-16.11-success.txt").replace("gitlab-runner 16.11.0", "gitlab-runner 15.11.0", 1)
    end = classify(job(older, "success"))
    assert end.kind == SUCCEEDED
    assert "gitlab-runner 15.11.0" in end.unsupported
    assert end_of("runner-19.3-success.txt", "success", None).unsupported == ""


def test_cleanup_errors_after_success_are_evidence_not_a_verdict() -> None:
    end = end_of("runner-18.11-timestamps-cleanup-error.txt", "success", None)
    assert end.kind == SUCCEEDED and end.cause is None
    assert [e.what for e in end.cleanup_errors] == ["pod", "secrets"]
    assert end.cleanup_errors[0].message.startswith(f'pods "{POD}" is forbidden')
    assert end.cleanup_errors[1] == CleanupError(
        "secrets",
        f'Delete "https://10.96.0.1:443/api/v1/namespaces/ci/secrets/{POD}-k2p9q": context deadline exceeded',
    )
    assert end_of("runner-18.11-timestamps-success.txt", "success", None).cleanup_errors == ()


def test_namespace_teardown_error_is_a_cleanup_error() -> None:
    trace = 'ERROR: Error tearing down namespace: namespaces "ci-job-4711" not found\nJob succeeded\n'
    end = classify(job(trace, "success"))
    assert end.kind == SUCCEEDED
    assert end.cleanup_errors == (CleanupError("namespace", 'namespaces "ci-job-4711" not found'),)


# -------------------------------------------------------------- GitLab's failure_reason and its fallbacks


@pytest.mark.parametrize(
    ("name", "new_reason"),
    [
        ("runner-19.3-timestamps-crashloop.txt", "runner_configuration_error"),
        ("runner-19.3-create-container-config-error.txt", "runner_configuration_error"),
        ("runner-19.3-overwrite-cap.txt", "runner_configuration_error"),
        ("runner-19.3-timestamps-image-pull-network.txt", "runner_external_dependency_failure"),
        ("runner-19.3-timestamps-interrupted.txt", "runner_interrupted"),
    ],
)
def test_older_gitlab_fallback_reasons_classify_the_same(name: str, new_reason: str) -> None:
    new = end_of(name, "failed", new_reason)
    old = end_of(name, "failed", FAILURE_REASON_FALLBACK[new_reason])
    assert new.kind == old.kind == INFRASTRUCTURE
    assert new.cause == old.cause
    assert new.message == old.message


def test_fallback_map_is_the_runners() -> None:
    assert FAILURE_REASON_FALLBACK == {
        "runner_configuration_error": "script_failure",
        "runner_external_dependency_failure": "runner_system_failure",
        "image_pull_failure": "runner_system_failure",
        "runner_interrupted": "unknown_failure",
    }


def test_a_script_failure_is_not_made_infrastructure_by_a_missing_reason() -> None:
    for reason in (None, "", "script_failure"):
        end = end_of("runner-19.3-timestamps-script-failure.txt", "failed", reason)
        assert (end.kind, end.cause) == (SCRIPT_FAILURE, None)


def test_failure_reason_turns_a_plain_failure_line_into_infrastructure() -> None:
    # A plain "Job failed:" line inside the script, but GitLab says the runner failed it.
    end = end_of("runner-19.3-timestamps-script-failure.txt", "failed", "runner_system_failure")
    assert (end.kind, end.cause, end.source) == (INFRASTRUCTURE, "runner-system-failure", "failure_reason")


@pytest.mark.parametrize(
    ("reason", "kind", "cause"),
    [
        ("runner_system_failure", INFRASTRUCTURE, "runner-system-failure"),
        ("stuck_or_timeout_failure", INFRASTRUCTURE, "runner-system-failure"),
        ("job_execution_timeout", INFRASTRUCTURE, "job-timeout"),
        ("runner_configuration_error", INFRASTRUCTURE, "runner-config"),
        ("runner_external_dependency_failure", INFRASTRUCTURE, "runner-system-failure"),
        ("runner_interrupted", INFRASTRUCTURE, "runner-system-failure"),
        ("unknown_failure", INFRASTRUCTURE, "runner-system-failure"),
        ("api_failure", INFRASTRUCTURE, "api-error"),
        ("script_failure", SCRIPT_FAILURE, None),
        (None, SCRIPT_FAILURE, None),
    ],
)
def test_without_a_trace_failure_reason_decides(reason: str | None, kind: str, cause: str | None) -> None:
    end = classify(job("", "failed", reason))
    assert (end.kind, end.cause) == (kind, cause)
    if kind == INFRASTRUCTURE:
        assert end.source == "failure_reason" and f"failure_reason {reason}" in end.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [("success", SUCCEEDED), ("canceled", CANCELED), ("canceling", CANCELED), ("running", UNFINISHED),
     ("pending", UNFINISHED), ("", UNFINISHED)],
)  # fmt: skip
def test_without_a_trace_status_decides(status: str, kind: str) -> None:
    end = classify(job("", status))
    assert (end.kind, end.source) == (kind, "status")


def test_canceled_status_wins_over_a_failure_line() -> None:
    trace = sample("runner-19.3-timestamps-script-failure.txt")
    assert classify(job(trace, "canceled")).kind == CANCELED


# -------------------------------------------------------------- the pod's own status


def observation(
    waiting: dict[str, str] | None = None,
    events: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    timeline: list[dict[str, Any]] | None = None,
) -> PodObservation:
    container: dict[str, Any] = {"name": "build", "ready": False, "state": {}}
    if waiting is not None:
        container["state"] = {"waiting": waiting}
    last = {
        "metadata": {"name": POD},
        "status": {"phase": "Pending", "containerStatuses": [container], **(status or {})},
    }
    return PodObservation(POD, 0.0, last=last, events=events or [], timeline=timeline or [])


GENERIC_TIMEOUT = (
    "Running with gitlab-runner 18.11.4 (5b1ba4d9)\n"
    "section_start:1795392001:prepare_script\r\x1b[0KPreparing environment\n"
    f"Waiting for pod ci/{POD} to be running on the node <unknown>, status is Pending\n"
    "ERROR: Job failed (system failure): prepare environment: waiting for pod running: timed out waiting for "
    "pod to start. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information\n"
)


@pytest.mark.parametrize(
    ("pod", "cause", "finding"),
    [
        (observation({"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}), "image-pull",
         'container build waiting: ImagePullBackOff: Back-off pulling image "x:1"'),
        (observation({"reason": "CreateContainerConfigError", "message": 'secret "env" not found'}),
         "runner-config", "CreateContainerConfigError"),
        (observation({"reason": "CrashLoopBackOff", "message": "back-off 10s"}), "pod-not-started",
         "CrashLoopBackOff"),
        (observation(events=[{"type": "Warning", "reason": "FailedScheduling",
                              "message": "0/3 nodes are available: 3 Insufficient cpu."}]),
         "pod-not-started", "event FailedScheduling: 0/3 nodes are available"),
        (observation(events=[{"type": "Warning", "reason": "Failed",
                              "message": 'Failed to pull image "x:1": not found'}]),
         "image-pull", 'event Failed: Failed to pull image "x:1"'),
        (observation(timeline=[{"containers": {"helper": {"waiting": {"reason": "ErrImagePull", "message": "401"}}}}]),
         "image-pull", "container helper waiting: ErrImagePull: 401"),
        (observation(), "pod-not-started", None),
    ],
)  # fmt: skip
def test_pod_status_names_the_cause_of_a_generic_timeout(
    pod: PodObservation, cause: str, finding: str | None
) -> None:
    end = classify(job(GENERIC_TIMEOUT, "failed", "runner_system_failure", pod))
    assert (end.kind, end.cause, end.source) == (INFRASTRUCTURE, cause, "trace")
    assert end.message == "prepare environment: waiting for pod running: timed out waiting for pod to start"
    if finding is None:
        assert end.pod_findings == ()
    else:
        assert any(finding in f.text for f in end.pod_findings), end.pod_findings


def test_pod_status_never_overrides_a_specific_runner_message() -> None:
    pod = observation({"reason": "ImagePullBackOff", "message": "Back-off"})
    end = classify(job(sample("runner-17.11-quota.txt"), "failed", "runner_system_failure", pod))
    assert end.cause == "quota"


def test_pod_status_does_not_touch_a_script_failure() -> None:
    pod = observation(events=[{"type": "Warning", "reason": "FailedScheduling", "message": "0/3 nodes"}])
    end = classify(job(sample("runner-16.11-script-failure.txt"), "failed", "script_failure", pod))
    assert (end.kind, end.cause) == (SCRIPT_FAILURE, None)


def test_without_a_trace_the_pod_explains_an_older_gitlabs_script_failure() -> None:
    # A 19.3 runner's configuration error as an older GitLab stores it, and a trace that could not be read.
    pod = observation({"reason": "CreateContainerConfigError", "message": 'secret "env" not found'})
    end = classify(job("", "failed", "script_failure", pod))
    assert (end.kind, end.cause, end.source) == (INFRASTRUCTURE, "runner-config", "pod")
    assert 'secret "env" not found' in end.message
    # The same with a healthy-looking pod stays a script failure.
    assert classify(job("", "failed", "script_failure", observation())).kind == SCRIPT_FAILURE


def test_without_a_trace_failure_reason_and_pod_together() -> None:
    pod = observation({"reason": "ErrImagePull", "message": "manifest unknown"})
    end = classify(job("", "failed", "runner_system_failure", pod))
    assert (end.kind, end.cause) == (INFRASTRUCTURE, "image-pull")
    assert "manifest unknown" in end.message


def test_eviction_is_a_finding() -> None:
    pod = observation(
        status={"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}
    )
    end = classify(job("", "failed", "runner_system_failure", pod))
    assert end.cause == "runner-system-failure"
    assert any(f.text == "pod evicted: The node was low on memory." for f in end.pod_findings)


def test_trace_events_and_conditions_are_findings() -> None:
    end = end_of("runner-18.11-poll-timeout-events.txt", "failed", "runner_system_failure")
    texts = [f.text for f in end.pod_findings]
    assert any(t.startswith("condition Unschedulable: 0/3 nodes are available") for t in texts)
    assert any(t.startswith("event: 0/3 nodes are available: 3 Insufficient memory") for t in texts)
    assert {f.cause for f in end.pod_findings} == {"pod-not-started"}


# -------------------------------------------------------------- the runner's wording -> cause


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ('pods "p" is forbidden: exceeded quota: q, requested: pods=1, used: pods=5, limited: pods=5', "quota"),
        ('pods "p" is forbidden: failed quota: q: must specify limits.cpu for: build', "quota"),
        ('admission webhook "policy.example.com" denied the request: privileged containers are not allowed',
         "permissions"),
        ('Internal error occurred: failed calling webhook "policy.example.com": failed to call webhook: Post '
         '"https://policy.svc:443/validate": dial tcp 10.0.0.5:443: connect: connection refused', "api-error"),
        ('pulling image "x:1" for container build: image pull failed: dial tcp 10.0.0.9:443: i/o timeout',
         "image-pull"),
        ("etcdserver: request timed out", "api-error"),
        ("http2: client connection lost", "api-error"),
        ("pod failed to enter running state: Failed", "pod-not-started"),
        ("pod status is failed", "pod-not-started"),
        ("provided host alias a_b for service postgres is invalid DNS. ...", "runner-config"),
        ('provided value "x=y" does not match "^team=.*$"', "runner-config"),
        ("prepare timeout: exceeded timeout of 10m0s", "job-timeout"),
        ('pod "ci/p" is disrupted: reason "EvictionByEvictionAPI", message "Eviction API: evicting"',
         "runner-system-failure"),
        ("something the suite has never seen", "runner-system-failure"),
    ],
)  # fmt: skip
def test_cause_of(message: str, cause: str) -> None:
    assert cause_of(message) == cause
    assert cause in CAUSES


def test_runner_message_drops_only_the_shell_profile_hint() -> None:
    old = "prepare environment: x. Check https://docs.gitlab.com/runner/shells/index.html#shell-profile-loading for more information"
    new = "prepare environment: x. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information"
    assert runner_message(old) == runner_message(new) == "prepare environment: x"
    assert runner_message("command terminated with exit code 1") == "command terminated with exit code 1"


def test_a_prepare_failure_without_section_markers_is_still_infrastructure() -> None:
    # GitLab sends features.trace_sections to every current runner, but a trace may come without markers
    # (an older GitLab, a bundle someone cleaned): the runner's "prepare environment:" prefix still says it.
    trace = (
        "Running with gitlab-runner 19.3.0 (9cbf0074)\n"
        'ERROR: Job failed: prepare environment: waiting for pod running: container "build" is in '
        "CrashLoopBackOff: back-off 10s. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for "
        "more information\n"
    )
    end = classify(job(trace, "failed", "script_failure"))
    assert (end.kind, end.cause, end.stage, end.source) == (INFRASTRUCTURE, "pod-not-started", "", "trace")


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("runner-19.3-timestamps-interrupted.txt", "runner-system-failure"),
        ("runner-18.11-timestamps-job-timeout.txt", "job-timeout"),
    ],
)
def test_the_runner_ending_the_job_mid_script_needs_no_failure_reason(name: str, cause: str) -> None:
    end = end_of(name, "failed", None)
    assert (end.kind, end.cause, end.source) == (INFRASTRUCTURE, cause, "trace")
    assert end.probe_started


def test_a_canceled_line_is_canceled_whatever_the_status() -> None:
    end = end_of("runner-17.11-cancel.txt", "", None)
    assert (end.kind, end.message) == (CANCELED, "canceled")


def test_a_state_seen_in_the_last_object_and_the_timeline_is_one_finding() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}
    pod = observation(waiting, timeline=[{"containers": {"build": {"waiting": waiting}}}] * 3)
    end = classify(job(GENERIC_TIMEOUT, "failed", "runner_system_failure", pod))
    assert [f.text for f in end.pod_findings] == [
        'container build waiting: ImagePullBackOff: Back-off pulling image "x:1"'
    ]


def test_a_cleanup_error_before_a_script_failure_keeps_the_script_failure() -> None:
    trace = (
        "Running with gitlab-runner 18.11.4 (5b1ba4d9)\n"
        'section_start:1795392005:step_script\r\x1b[0KExecuting "step_script" stage of the job script\n'
        "Killed\n"
        "section_end:1795392006:step_script\r\x1b[0K\n"
        f'\x1b[31;1mERROR: Error cleaning up pod: pods "{POD}" not found\x1b[0;m\n'
        "\x1b[31;1mERROR: Job failed: command terminated with exit code 137\x1b[0;m\n"
    )
    end = classify(job(trace, "failed", "script_failure"))
    assert (end.kind, end.message) == (SCRIPT_FAILURE, "command terminated with exit code 137")
    assert end.cleanup_errors == (CleanupError("pod", f'pods "{POD}" not found'),)


def test_unsupported_among_names_the_oldest() -> None:
    assert unsupported_among(["18.11.4", "15.11.0", "15.2.1", "development version"]) == unsupported_runner(
        "15.2.1"
    )
    assert unsupported_among(["18.11.4", "17.8.5", "16.11.0"]) is None
    assert unsupported_among(["18.11.4", "19.3.0", "development version"]) is None
    assert unsupported_among([]) is None


def test_every_cause_the_classifier_can_give_is_documented() -> None:
    from pytest_runnerconf import jobend

    given = {cause for _, cause in jobend._CAUSE_PATTERNS}
    given |= set(jobend._REASON_CAUSES.values()) | set(jobend._WAITING_CAUSES.values())
    given |= set(jobend._EVENT_CAUSES.values()) | set(jobend._CONDITION_CAUSES.values())
    given |= set(jobend._POD_CAUSE_RANK) | {"runner-system-failure", "unsupported-runner"}
    assert given <= set(CAUSES)


def test_print_pod_events_rows_are_findings_once() -> None:
    end = end_of("runner-17.11-print-pod-events-poll-timeout.txt", "failed", "runner_system_failure")
    assert [f.cause for f in end.pod_findings] == ["pod-not-started"]
    assert end.pod_findings[0].text.startswith(
        'event FailedScheduling: 0/3 nodes are available: persistentvolumeclaim "runner-cache" not found.'
    )
    # the table's header row and Normal events are not findings
    trace = (
        "Type      Reason             Message\nNormal    Scheduled   Successfully assigned ci/p to node-1\n"
    )
    assert classify(job(trace, "failed", "runner_system_failure")).pod_findings == ()


def test_sentences_quote_the_runner() -> None:
    quota = end_of("runner-17.11-quota.txt", "failed", "runner_system_failure")
    assert quota.sentence("dns") == (
        "The runner failed job dns before its probe ran: prepare environment: setting up build pod: pods "
        f'"{POD}" is forbidden: exceeded quota: ci-quota, requested: limits.memory=1Gi, used: '
        "limits.memory=4Gi, limited: limits.memory=4Gi."
    )
    oom = end_of("runner-18.11-timestamps-oom-system-failure.txt", "failed", "runner_system_failure")
    assert oom.sentence("oom") == (
        "The runner ended job oom while its probe ran: Error in container build: exit code: 137, reason: "
        "'OOMKilled'."
    )
    assert end_of("runner-17.11-cancel.txt", "canceled", None).sentence("c") == (
        "Job c was canceled before its probe finished."
    )
    assert classify(job("", "running")).sentence("r") == "Job r did not finish: the job is running."
    assert end_of("runner-16.11-script-failure.txt", "failed", None).sentence("s") == (
        "The probe of job s failed: command terminated with exit code 1."
    )
    assert end_of("runner-19.3-success.txt", "success", None).sentence("ok") == "Job ok succeeded."


def test_every_sample_names_its_source_in_the_readme() -> None:
    readme = (TRACES / "README.md").read_text(encoding="utf-8")
    for path in TRACES.glob("*.txt"):
        assert f"`{path.name}`" in readme, f"{path.name} has no row in data/traces/README.md"


def _diagnosed(trace: str, status: str, reason: str | None, *, cancelled: bool, cause: str) -> JobEvidence:
    from pytest_runnerconf.evidence import Diagnosis

    evidence = job(trace, status, reason)
    evidence.diagnosis = Diagnosis(
        cause,
        "0/1 nodes are available: 1 Insufficient cpu (Warning FailedScheduling)",
        POD,
        25.0,
        [],
        cancelled,
    )
    return evidence


def test_a_job_the_run_cancelled_for_its_pending_pod_is_infrastructure_with_the_diagnosis() -> None:
    evidence = _diagnosed(sample("runner-17.11-cancel.txt"), "canceled", None, cancelled=True, cause="quota")
    end = classify(evidence)
    assert (end.kind, end.cause, end.source) == (INFRASTRUCTURE, "quota", "diagnosis")
    assert end.sentence("probe").startswith(
        "The run cancelled job probe because its pod never started: 0/1 nodes"
    )


def test_a_diagnosis_after_the_runner_failed_first_makes_a_generic_cause_specific() -> None:
    trace = sample("runner-16.11-poll-timeout.txt")
    evidence = _diagnosed(trace, "failed", "runner_system_failure", cancelled=False, cause="image-pull")
    end = classify(evidence)
    assert (end.kind, end.cause, end.source) == (INFRASTRUCTURE, "image-pull", "trace")
    assert "timed out waiting for pod to start" in end.message


def test_without_a_diagnosis_a_canceled_job_stays_canceled() -> None:
    assert classify(job(sample("runner-17.11-cancel.txt"), "canceled")).kind == CANCELED
