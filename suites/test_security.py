"""RC-SEC: the pod's and each container's securityContext as configured, the identities and capabilities the
processes really have, and a job's `kubernetes: user:` applied only within allowed_users/allowed_groups."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pytest_runnerconf import (
    JobEvidence,
    Profile,
    SecurityExpect,
    check,
    could_not_test,
    fail,
    has_behaviour,
    held,
    require_behaviour,
)

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/security.yml: what the job asks for with `kubernetes: user:`.
BUILD_USER = "1000"
SERVICE_USERS = {"rc-sec-allowed": "4000:4001", "rc-sec-root": "0", "rc-sec-zeros": "00"}
# Linux capability numbers (include/uapi/linux/capability.h) of the ones runner configs drop or add.
CAPS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "NET_BIND_SERVICE": 10,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_ADMIN": 21,
    "MKNOD": 27,
    "AUDIT_WRITE": 29,
    "SETFCAP": 31,
}
CONTEXT_HINT = (
    "pod_security_context and build_/helper_/service_container_security_context (run_as_user, run_as_group, "
    "fs_group, supplemental_groups, capabilities, privileged) in [runners.kubernetes]"
)
# 18.11.1 (security MR "Block root UID/GID via leading zeros"): IDs are compared numerically, "00" is root.
NUMERIC_IDS_SINCE = (18, 11, 1)
_VERSION = re.compile(r"Running with gitlab-runner (\d+)\.(\d+)\.(\d+)")


def _expect(profile: Profile) -> SecurityExpect:
    if profile.expect.security is None:
        pytest.skip(f"the profile of cluster {profile.name} sets no expect.security; nothing to compare with")
    return profile.expect.security


def _spec(job: JobEvidence) -> dict[str, Any]:
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    return job.pod.spec.get("spec") or {}


def _containers(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c.get("name", ""): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }


def _context(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return (_containers(spec).get(name) or {}).get("securityContext") or {}


def effective_ids(spec: dict[str, Any], name: str) -> tuple[int | None, int | None, set[int]]:
    """(uid, gid, supplementary groups) the kubelet runs container NAME with; None = the image's own."""
    pod, own = spec.get("securityContext") or {}, _context(spec, name)
    uid = own.get("runAsUser", pod.get("runAsUser"))
    gid = own.get("runAsGroup", pod.get("runAsGroup"))
    groups = {int(g) for g in pod.get("supplementalGroups") or []}
    if pod.get("fsGroup") is not None:
        groups.add(int(pod["fsGroup"]))
    return uid, gid, groups


def status_field(record: dict[str, Any], key: str) -> str:
    for line in record.get("status") or []:
        name, _, value = str(line).partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def cap_set(hex_mask: str) -> set[str]:
    try:
        mask = int(hex_mask, 16)
    except ValueError:
        return set()
    return {name for name, bit in CAPS.items() if mask >> bit & 1}


def runner_version(job: JobEvidence) -> tuple[int, int, int] | None:
    match = _VERSION.search(job.trace_parsed.text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def id_allowed(id_str: str, allowed: tuple[str, ...], version: tuple[int, int, int] | None) -> bool:
    """isUserOrGroupAllowed (common/config.go): root only when listed; an empty list allows any non-root ID.

    Before 18.11.1 the root test compared the string "0", so "00" passed as a non-root ID."""
    numeric = version is None or version >= NUMERIC_IDS_SINCE
    value = int(id_str)
    listed = {int(a) for a in allowed if a.lstrip("+-").isdigit()}
    root = value == 0 if numeric else id_str == "0"
    if root:
        return 0 in listed
    if not allowed:
        return True
    return value in listed if numeric else id_str in allowed


@check(
    id="RC-SEC-001",
    claim="the pod's securityContext carries the configured fsGroup, supplementalGroups and run-as IDs",
    remediation=f"check {CONTEXT_HINT}",
    area="security",
    probes=("security",),
)
def test_pod_security_context(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    job = job_evidence("security")
    got_ctx = _spec(job).get("securityContext") or {}
    want: dict[str, Any] = {}
    if expect.fs_group is not None:
        want["fsGroup"] = expect.fs_group
    if expect.supplemental_groups:
        want["supplementalGroups"] = list(expect.supplemental_groups)
    if not want:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no pod-level security context")
    got = {k: got_ctx.get(k) for k in want}
    summary = ", ".join(f"{k} {v}" for k, v in got_ctx.items()) or "no pod securityContext"
    if got != want:
        fail("RC-SEC-001", want, got, job=job, summary=f"pod securityContext: {summary}")
    held("RC-SEC-001", want, got, job=job, summary=f"pod securityContext: {summary}")


@check(
    id="RC-SEC-002",
    claim="build and helper carry their configured runAsUser/runAsGroup, every container drops the configured "
    "capabilities (the runner's default: NET_RAW), and only services are privileged",
    remediation=f"check {CONTEXT_HINT}; privileged = true applies to every container unless its own context "
    "sets privileged = false; a container's capabilities table replaces the global cap_add/cap_drop",
    area="security",
    probes=("security",),
)
def test_container_security_contexts(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    job = job_evidence("security")
    spec = _spec(job)
    wrong: dict[str, str] = {}
    seen: dict[str, Any] = {}
    for name, uid, gid in (
        ("build", expect.build_run_as_user, expect.build_run_as_group),
        ("helper", expect.helper_run_as_user, expect.helper_run_as_group),
    ):
        ctx = _context(spec, name)
        seen[name] = ctx
        for key, value in (("runAsUser", uid), ("runAsGroup", gid)):
            if value is not None and ctx.get(key) != value:
                wrong[f"{name}.{key}"] = f"{ctx.get(key)} (want {value})"
    for name, container in _containers(spec).items():
        drop = set((container.get("securityContext") or {}).get("capabilities", {}).get("drop") or [])
        missing = sorted(set(expect.build_cap_drop) - drop)
        if missing:
            wrong[f"{name}.capabilities.drop"] = f"{sorted(drop)} lacks {missing}"
    summary = "; ".join(
        f"{n}: runAsUser {c.get('runAsUser')}, runAsGroup {c.get('runAsGroup')}, privileged "
        f"{c.get('privileged', False)}, drop {','.join((c.get('capabilities') or {}).get('drop') or []) or 'none'}"
        for n, c in seen.items()
    )
    want = {
        "build": [expect.build_run_as_user, expect.build_run_as_group],
        "helper": [expect.helper_run_as_user, expect.helper_run_as_group],
        "drop": list(expect.build_cap_drop),
    }
    if wrong:
        fail("RC-SEC-002", want, wrong, job=job, summary=summary)
    held("RC-SEC-002", want, seen, job=job, summary=summary)


@check(
    id="RC-SEC-003",
    claim="inside the build the process's real uid, gid and groups are those of its securityContext, and the "
    "helper's clone is owned by the helper's runAsUser",
    remediation="the kubelet/runtime must apply runAsUser, runAsGroup, supplementalGroups and fsGroup: check "
    f"{CONTEXT_HINT}, the image's USER, and PodSecurity admission or webhooks that rewrite securityContext",
    area="security",
    probes=("security",),
)
def test_real_identities(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("security")
    spec = _spec(job)
    record = probe_record(job, "security")
    uid, gid, groups = effective_ids(spec, "build")
    real_uid = status_field(record, "Uid").split()[:1]
    real_gid = status_field(record, "Gid").split()[:1]
    real_groups = {int(g) for g in status_field(record, "Groups").split() if g.isdigit()}
    wrong: dict[str, str] = {}
    if uid is not None and real_uid != [str(uid)]:
        wrong["build uid"] = f"{' '.join(real_uid) or 'unknown'} (spec {uid})"
    if gid is not None and real_gid != [str(gid)]:
        wrong["build gid"] = f"{' '.join(real_gid) or 'unknown'} (spec {gid})"
    if not groups <= real_groups:
        wrong["build groups"] = f"{sorted(real_groups)} lack {sorted(groups - real_groups)}"
    helper_uid = effective_ids(spec, "helper")[0]
    owner = str(record.get("clone_owner") or "")
    if helper_uid is not None and owner.partition(":")[0] != str(helper_uid):
        wrong["helper"] = f"the clone is owned by {owner or 'nobody'} (helper runAsUser {helper_uid})"
    summary = (
        f"build runs as uid {' '.join(real_uid) or '?'} gid {' '.join(real_gid) or '?'} groups "
        f"{' '.join(map(str, sorted(real_groups))) or 'none'}; clone owned by {owner or '?'}"
    )
    want = {"uid": uid, "gid": gid, "groups": sorted(groups), "helper uid": helper_uid}
    observed = {"uid": real_uid, "gid": real_gid, "groups": sorted(real_groups), "clone owner": owner}
    if wrong:
        fail("RC-SEC-003", want, wrong, job=job, summary=summary)
    held("RC-SEC-003", want, observed, job=job, summary=summary)


@check(
    id="RC-SEC-004",
    claim="inside the build the dropped capabilities are out of the bounding set, a non-root process has no "
    "effective capabilities, and a raw-socket ping fails where NET_RAW is dropped",
    remediation="check capabilities (add/drop), cap_add/cap_drop and privileged in [runners.kubernetes]; an "
    "allowed ping without NET_RAW comes from the node's net.ipv4.ping_group_range sysctl (unprivileged ICMP)",
    area="security",
    probes=("security",),
)
def test_capabilities(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("security")
    spec = _spec(job)
    record = probe_record(job, "security")
    ctx = _context(spec, "build")
    dropped = set((ctx.get("capabilities") or {}).get("drop") or [])
    if ctx.get("privileged"):
        pytest.skip("the build container is privileged: it holds every capability whatever it drops")
    bounding, effective = cap_set(status_field(record, "CapBnd")), cap_set(status_field(record, "CapEff"))
    wrong: dict[str, str] = {}
    if not status_field(record, "CapBnd"):
        could_not_test("no-evidence", "the security probe could not read /proc/self/status", job=job)
    held_caps = sorted(dropped & bounding & set(CAPS))
    if held_caps:
        wrong["bounding set"] = f"still holds {held_caps}"
    uid = status_field(record, "Uid").split()[:1]
    if uid and uid != ["0"] and effective:
        wrong["effective"] = f"uid {uid[0]} holds {sorted(effective)}"
    ping_rc = record.get("ping_rc")
    ping_range = str(record.get("ping_group_range") or "").split()
    gid = int((status_field(record, "Gid").split() or ["-1"])[0])
    unprivileged_icmp = len(ping_range) == 2 and int(ping_range[0]) <= gid <= int(ping_range[1])
    ping = "ping not in the image" if ping_rc == 127 else f"ping 127.0.0.1 exit {ping_rc}"
    if "NET_RAW" in dropped and ping_rc == 0 and not unprivileged_icmp:
        wrong["ping"] = (
            f"{ping} without NET_RAW and outside ping_group_range {' '.join(ping_range) or 'unset'}"
        )
    summary = (
        f"build bounding set without {', '.join(sorted(dropped)) or 'nothing'}: "
        f"{'yes' if not held_caps else 'no'}; effective {', '.join(sorted(effective)) or 'none'}; {ping}"
    )
    want = {"dropped": sorted(dropped), "effective (non-root)": []}
    observed = {
        "bounding": sorted(bounding),
        "effective": sorted(effective),
        "ping_rc": ping_rc,
        "ping_group_range": ping_range,
    }
    if wrong:
        fail("RC-SEC-004", want, wrong, job=job, summary=summary)
    held("RC-SEC-004", want, observed, job=job, summary=summary)


def _service_ids(record: dict[str, Any]) -> dict[str, str]:
    out = {}
    for line in record.get("services") or []:
        name, _, text = str(line).partition(" ")
        out[name] = text.strip()
    return out


def _wanted_user(
    name: str, user: str, spec: dict[str, Any], expect: SecurityExpect, version: tuple[int, int, int] | None
) -> tuple[int | None, int | None, list[str]]:
    """What the runner must do with container NAME's requested USER: the (uid, gid) the spec should show
    (None: not set) and the log lines it must print (getContainerUIDGID)."""
    del name, spec  # the request alone decides: these containers' contexts set no IDs of their own
    uid_str, _, gid_str = user.partition(":")
    lines = []
    results: list[int | None] = []
    for kind, id_str, allowed in (
        ("user", uid_str, expect.allowed_users),
        ("group", gid_str, expect.allowed_groups),
    ):
        if not id_str:
            results.append(None)
            continue
        if id_allowed(id_str, allowed, version):
            results.append(int(id_str))
        else:
            results.append(None)
            lines.append(f'{kind} "{id_str}" is not in the allowed list: [{" ".join(allowed)}]')
    return results[0], results[1], lines


@check(
    id="RC-SEC-005",
    claim="a job's `kubernetes: user:` inside allowed_users/allowed_groups is applied to its container, and "
    "where a security context already sets the user the runner keeps it and says so",
    remediation="check allowed_users and allowed_groups in [runners.kubernetes]; a run_as_user in the container "
    "or pod security context always wins over the job's request",
    area="security",
    probes=("security",),
)
def test_job_user_applied(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    expect = _expect(runnerconf_profile)
    job = job_evidence("security")
    spec = _spec(job)
    text = job.trace_parsed.text
    version = runner_version(job)
    wrong: dict[str, str] = {}
    said: list[str] = []
    build_uid = effective_ids(spec, "build")[0]
    if expect.build_run_as_user is not None:
        line = (
            f'Overriding user for container "build" to "{BUILD_USER}" is not allowed: user is set to '
            f"{expect.build_run_as_user} in container security context"
        )
        if build_uid != expect.build_run_as_user or line not in text:
            wrong["build"] = f"runAsUser {build_uid}; logged: {line in text}"
        said.append(f"build asked {BUILD_USER}, kept {build_uid} (logged)")
    name, user = "rc-sec-allowed", SERVICE_USERS["rc-sec-allowed"]
    want_uid, want_gid, _ = _wanted_user(name, user, spec, expect, version)
    ctx = _context(spec, name)
    ids = _service_ids(probe_record(job, "security")).get(name, "")
    if (ctx.get("runAsUser"), ctx.get("runAsGroup")) != (want_uid, want_gid):
        wrong[name] = f"runAsUser {ctx.get('runAsUser')}, runAsGroup {ctx.get('runAsGroup')} (want {user})"
    elif want_uid is not None and not ids.startswith(f"uid={want_uid}"):
        wrong[name] = f"the service runs as {ids or 'unknown (it wrote no id)'}"
    said.append(
        f"{name} asked {user}: spec {ctx.get('runAsUser')}:{ctx.get('runAsGroup')}, runs as {ids[:40]}"
    )
    summary = "; ".join(said)
    want = {"build": expect.build_run_as_user, name: [want_uid, want_gid]}
    if wrong:
        fail("RC-SEC-005", want, wrong, job=job, summary=summary)
    held("RC-SEC-005", want, {"build": build_uid, name: ids}, job=job, summary=summary)


@check(
    id="RC-SEC-006",
    claim='a job\'s `kubernetes: user: "0"` is refused unless 0 is allow-listed, and so is "00" from runner '
    "18.11.1 on; the runner warns and the container keeps the configured user",
    remediation="check allowed_users/allowed_groups in [runners.kubernetes]; a runner before 18.11.1 accepts "
    '"00" as a non-root ID (upgrade it: the fix is a security release)',
    area="security",
    probes=("security",),
)
def test_root_refused(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    expect = _expect(runnerconf_profile)
    job = job_evidence("security")
    spec = _spec(job)
    text = job.trace_parsed.text
    version = runner_version(job)
    ids = _service_ids(probe_record(job, "security"))
    wrong: dict[str, str] = {}
    said: list[str] = []
    for name in ("rc-sec-root", "rc-sec-zeros"):
        user = SERVICE_USERS[name]
        want_uid, _, refusals = _wanted_user(name, user, spec, expect, version)
        ctx = _context(spec, name)
        if ctx.get("runAsUser") != want_uid:
            wrong[name] = (
                f"runAsUser {ctx.get('runAsUser')} (want {want_uid if want_uid is not None else 'unset'})"
            )
        for refusal in refusals:
            line = (
                f"Error parsing 'uid' from image options for container \"{name}\", using the configured security "
                f"context: validating UID: {refusal}"
            )
            if line not in text:
                wrong[f"{name} warning"] = f"no log line: {line}"
        outcome = "refused" if refusals else "applied"
        said.append(f'{name} asked "{user}": to be {outcome}, spec runAsUser {ctx.get("runAsUser", "unset")}')
    summary = "; ".join(said) + (f" (runner {'.'.join(map(str, version))})" if version else "")
    want = {n: "refused" if not id_allowed(SERVICE_USERS[n], expect.allowed_users, version) else "applied"
            for n in ("rc-sec-root", "rc-sec-zeros")}  # fmt: skip
    if wrong:
        fail("RC-SEC-006", want, wrong, job=job, summary=summary)
    held("RC-SEC-006", want, {n: ids.get(n, "") for n in want}, job=job, summary=summary)


# What /proc/self/status says of a seccomp profile type: 2 (filter) for a runtime's or a node's own profile,
# 0 for none (proc(5) "Seccomp").
SECCOMP_MODE = {"RuntimeDefault": "2", "Localhost": "2", "Unconfined": "0"}


@check(
    id="RC-SEC-007",
    claim="the build container carries the configured allowPrivilegeEscalation, seccomp and AppArmor profiles "
    "and procMount, and inside it no_new_privs and the seccomp mode follow them",
    remediation="check allow_privilege_escalation, seccomp_profile, app_armor_profile and proc_mount in "
    "[runners.kubernetes.build_container_security_context] (and pod_security_context for the profiles); inside "
    "the container the kubelet and runtime must apply them: a process with no_new_privs 0 or seccomp mode 0 "
    "points at the runtime, PodSecurity admission or a webhook",
    area="security",
    probes=("security",),
)
def test_build_hardening(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    expect = _expect(runnerconf_profile)
    wanted = {
        "allowPrivilegeEscalation": expect.build_allow_privilege_escalation,
        "seccompProfile": expect.build_seccomp_profile,
        "appArmorProfile": expect.build_app_armor_profile,
        "procMount": expect.build_proc_mount,
    }
    want = {k: v for k, v in wanted.items() if v is not None}
    if not want:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no build hardening settings")
    job = job_evidence("security")
    if not has_behaviour("security_profiles", job):  # the runner cannot set them: judge the rest
        want = {k: v for k, v in want.items() if k not in ("seccompProfile", "appArmorProfile")}
        if not want:
            require_behaviour("security_profiles", job)
    spec = _spec(job)
    ctx, pod = _context(spec, "build"), spec.get("securityContext") or {}
    got: dict[str, Any] = {
        "allowPrivilegeEscalation": ctx.get("allowPrivilegeEscalation"),
        "seccompProfile": (ctx.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type"),
        "appArmorProfile": (ctx.get("appArmorProfile") or pod.get("appArmorProfile") or {}).get("type"),
        "procMount": ctx.get("procMount") or "Default",  # the API server's default
    }
    got = {k: got[k] for k in want}
    wrong = {k: f"{got[k]} (want {v})" for k, v in want.items() if got[k] != v}
    record = probe_record(job, "security")
    inside = {"NoNewPrivs": status_field(record, "NoNewPrivs"), "Seccomp": status_field(record, "Seccomp")}
    if not ctx.get("privileged"):  # a privileged container is exempt from both (the runtime says so)
        if want.get("allowPrivilegeEscalation") is False and inside["NoNewPrivs"] != "1":
            wrong["inside: NoNewPrivs"] = f"{inside['NoNewPrivs'] or 'unreadable'} (want 1)"
        mode = SECCOMP_MODE.get(str(want.get("seccompProfile")))
        if mode is not None and inside["Seccomp"] != mode:
            wrong["inside: Seccomp"] = f"{inside['Seccomp'] or 'unreadable'} (want {mode})"
    summary = ", ".join(f"{k} {v}" for k, v in got.items()) + (
        f"; inside: no_new_privs {inside['NoNewPrivs'] or '?'}, seccomp mode {inside['Seccomp'] or '?'}"
    )
    if wrong:
        fail("RC-SEC-007", want, wrong, job=job, summary=summary)
    held("RC-SEC-007", want, {**got, "inside": inside}, job=job, summary=summary)
