"""RC-SEC-007 over hand-built evidence: the build's hardening in the spec and as the process sees it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.evidence import JobEvidence, PodObservation
from pytest_runnerconf.expect_pod import SecurityExpect, parse_table
from pytest_runnerconf.verdict import ConformanceFailure
from tests.test_catalogue import PROFILE, _load, lookup, probe_record

sec = _load("test_security")
HARDENED = SecurityExpect(
    build_allow_privilege_escalation=False, build_seccomp_profile="RuntimeDefault", build_proc_mount="Default"
)


def security_job(
    context: dict[str, Any], status: dict[str, str], pod_context: dict[str, Any] | None = None
) -> JobEvidence:
    spec = {
        "securityContext": pod_context or {},
        "containers": [{"name": "build", "securityContext": context}, {"name": "helper"}],
    }
    record = {"status": [f"{k}:\t{v}" for k, v in status.items()]}
    return JobEvidence(
        name="security",
        job={"status": "success"},
        trace="",
        pod=PodObservation(name="runner-x-project-1-concurrent-0-abc", first_seen=1.0, spec={"spec": spec}),
        records={"security": [record]},
    )


def judge(job: JobEvidence, expect: SecurityExpect = HARDENED) -> None:
    profile = replace(PROFILE, expect=replace(PROFILE.expect, security=expect))
    sec.test_build_hardening(lookup(job), probe_record, profile)


GOOD_CONTEXT = {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}}
GOOD_STATUS = {"NoNewPrivs": "1", "Seccomp": "2"}


def test_a_hardened_build_passes_and_the_pods_profile_counts() -> None:
    judge(security_job(GOOD_CONTEXT, GOOD_STATUS))
    # The seccomp profile may come from the pod's context; procMount defaults to Default.
    judge(
        security_job(
            {"allowPrivilegeEscalation": False},
            GOOD_STATUS,
            pod_context={"seccompProfile": {"type": "RuntimeDefault"}},
        )
    )


@pytest.mark.parametrize(
    ("context", "status", "fragment"),
    [
        ({**GOOD_CONTEXT, "allowPrivilegeEscalation": True}, GOOD_STATUS, "allowPrivilegeEscalation"),
        ({"allowPrivilegeEscalation": False}, GOOD_STATUS, "seccompProfile"),
        ({**GOOD_CONTEXT, "procMount": "Unmasked"}, GOOD_STATUS, "procMount"),
        # The spec is right, the process is not: the runtime did not apply it.
        (GOOD_CONTEXT, {"NoNewPrivs": "0", "Seccomp": "2"}, "inside: NoNewPrivs"),
        (GOOD_CONTEXT, {"NoNewPrivs": "1", "Seccomp": "0"}, "inside: Seccomp"),
        (GOOD_CONTEXT, {}, "unreadable"),
    ],
)
def test_each_setting_can_fail(context: dict[str, Any], status: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConformanceFailure) as info:
        judge(security_job(context, status))
    assert fragment in str(info.value)


def test_a_privileged_build_is_judged_on_its_spec_only() -> None:
    judge(security_job({**GOOD_CONTEXT, "privileged": True}, {"NoNewPrivs": "0", "Seccomp": "0"}))


def test_nothing_expected_is_a_skip_with_the_reason() -> None:
    with pytest.raises(pytest.skip.Exception, match="expects no build hardening"):
        judge(security_job(GOOD_CONTEXT, GOOD_STATUS), SecurityExpect())


def test_the_table_takes_a_boolean_for_allow_privilege_escalation() -> None:
    table = parse_table(
        "security", "p.toml", "clusters.x.expect.security", {"build_allow_privilege_escalation": False}
    )
    assert table.build_allow_privilege_escalation is False
    with pytest.raises(
        ConfigError,
        match=r"build_allow_privilege_escalation = 'no' \(str\) is not allowed; it must be true or false",
    ):
        parse_table(
            "security", "p.toml", "clusters.x.expect.security", {"build_allow_privilege_escalation": "no"}
        )


def test_a_runner_before_18_11_is_not_held_to_profiles_it_cannot_set() -> None:
    """seccomp_profile/app_armor_profile arrived in 18.11.0: an older runner's spec lacks them rightly."""
    old = security_job({"allowPrivilegeEscalation": False}, {"NoNewPrivs": "1", "Seccomp": "0"})
    old.trace = "Running with gitlab-runner 18.10.2 (0a1b2c3d)\n"
    judge(old)  # allowPrivilegeEscalation and procMount are still judged, the profile is not
    with pytest.raises(ConformanceFailure, match="allowPrivilegeEscalation"):
        judge(replace(old, pod=security_job({}, {"NoNewPrivs": "0"}).pod))
    only_profiles = SecurityExpect(build_seccomp_profile="RuntimeDefault")
    with pytest.raises(pytest.skip.Exception, match=r"seccomp_profile .* arrived in 18\.11; .* 18\.10\.2"):
        judge(old, only_profiles)
    new = replace(old, trace="Running with gitlab-runner 18.11.0 (0a1b2c3d)\n")
    with pytest.raises(ConformanceFailure, match="seccompProfile"):
        judge(new)
