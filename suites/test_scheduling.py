"""RC-SCH: node_selector, node_tolerations, affinity, priority class, service account, runtime class and pull
secrets as config.toml sets them; KUBERNETES_NODE_SELECTOR_* only within node_selector_overwrite_allowed; the
pod bound to a node under them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pytest_runnerconf import JobEvidence, Profile, SchedulingExpect, check, could_not_test, fail, held

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/scheduling.yml: variable -> "key=value" the job asks for.
OVERRIDE = ("KUBERNETES_NODE_SELECTOR_ARCH", "kubernetes.io/arch=amd64")
REFUSED = ("KUBERNETES_NODE_SELECTOR_POOL", "runnerconf.test/pool=elsewhere")
# uname -m -> the kubernetes.io/arch label value of a node of that machine type
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le"}
_MALFORMED = re.compile(r'provided value "((?:[^"\\]|\\.)*)" does not match "((?:[^"\\]|\\.)*)"')


def _expect(profile: Profile) -> SchedulingExpect:
    if profile.expect.scheduling is None:
        pytest.skip(
            f"the profile of cluster {profile.name} sets no expect.scheduling; nothing to compare with"
        )
    return profile.expect.scheduling


def _spec(job: JobEvidence, *, last: bool = False) -> dict[str, Any]:
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    return ((job.pod.last if last and job.pod.last else job.pod.spec).get("spec")) or {}


def override_kind(pair: str, regex: str) -> str:
    """applied / refused / ignored: evaluateMapOverwrite with Go's unanchored MatchString."""
    if not regex:
        return "ignored"
    return "applied" if re.search(regex, pair) else "refused"


def expected_selector(expect: SchedulingExpect) -> dict[str, str]:
    """The scheduling job's nodeSelector: the config's plus the job's override when its regex allows it."""
    want = dict(expect.node_selector)
    if override_kind(OVERRIDE[1], expect.node_selector_overwrite_allowed) == "applied":
        key, _, value = OVERRIDE[1].partition("=")
        want[key] = value
    return want


def tolerations_of(config: dict[str, str]) -> list[dict[str, str]]:
    """getPodTolerations (executors/kubernetes/kubernetes.go): "k=v" -> Equal, "k" -> Exists, effect as given."""
    out = []
    for keyvalue, effect in sorted(config.items()):
        key, sep, value = keyvalue.partition("=")
        item = {"key": key, "operator": "Equal" if sep else "Exists"}
        if value:
            item["value"] = value
        if effect:
            item["effect"] = effect
        out.append(item)
    return out


def camel_keys(value: Any) -> Any:
    """config.toml's snake_case affinity keys as the pod spec's camelCase ones (the runner's struct tags)."""
    if isinstance(value, dict):
        return {_camel(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [camel_keys(v) for v in value]
    return value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _brief(selector: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(selector.items())) or "none"


@check(
    id="RC-SCH-001",
    claim="the pod's nodeSelector is config.toml's node_selector plus the job's allowed KUBERNETES_NODE_SELECTOR_*",
    remediation="check node_selector and node_selector_overwrite_allowed in [runners.kubernetes], and pod_spec "
    "patches or admission webhooks that rewrite nodeSelector",
    area="scheduling",
    probes=("scheduling",),
)
def test_node_selector(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    if not expect.node_selector:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no node_selector")
    job = job_evidence("scheduling")
    want = expected_selector(expect)
    got = _spec(job).get("nodeSelector") or {}
    summary = f"nodeSelector {_brief(got)}"
    if got != want:
        fail("RC-SCH-001", want, got, job=job, summary=summary)
    held("RC-SCH-001", want, got, job=job, summary=summary)


@check(
    id="RC-SCH-002",
    claim="every toleration config.toml's node_tolerations declares is on the pod",
    remediation='check node_tolerations in [runners.kubernetes] ("key=value" = "Effect", or "key" for Exists)',
    area="scheduling",
    probes=("scheduling",),
)
def test_tolerations(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    if not expect.node_tolerations:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no node_tolerations")
    job = job_evidence("scheduling")
    want = tolerations_of(expect.node_tolerations)
    # The API server adds its own (not-ready/unreachable, NoExecute for 300 s): only the configured are judged.
    got = [
        {k: v for k, v in t.items() if k in ("key", "operator", "value", "effect")}
        for t in _spec(job).get("tolerations") or []
    ]
    missing = [t for t in want if t not in got]
    summary = "tolerations " + ", ".join(
        f"{t['key']}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect', '')}" for t in got
    )
    if missing:
        fail("RC-SCH-002", want, {"missing": missing, "tolerations": got}, job=job, summary=summary)
    held("RC-SCH-002", want, got, job=job, summary=summary)


@check(
    id="RC-SCH-003",
    claim="the pod's affinity (node affinity, pod affinity and anti-affinity) is config.toml's affinity",
    remediation="check [runners.kubernetes.affinity] (node_affinity, pod_affinity, pod_anti_affinity) and "
    "pod_spec patches",
    area="scheduling",
    probes=("scheduling",),
)
def test_affinity(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    if not expect.affinity:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no affinity")
    job = job_evidence("scheduling")
    want = camel_keys(expect.affinity)
    got = _spec(job).get("affinity") or {}
    summary = "affinity: " + (", ".join(sorted(got)) or "none")
    if got != want:
        fail("RC-SCH-003", want, got, job=job, summary=summary)
    held("RC-SCH-003", want, got, job=job, summary=summary)


_FIELDS = {
    "priority_class_name": "priorityClassName",
    "service_account": "serviceAccountName",
    "runtime_class_name": "runtimeClassName",
}


@check(
    id="RC-SCH-004",
    claim="priority_class_name, service_account, runtime_class_name and image_pull_secrets reach the pod spec",
    remediation="check priority_class_name, service_account (and KUBERNETES_SERVICE_ACCOUNT_OVERWRITE), "
    "runtime_class_name and image_pull_secrets in [runners.kubernetes]",
    area="scheduling",
    probes=("scheduling",),
)
def test_pod_fields(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    want: dict[str, Any] = {f: getattr(expect, k) for k, f in _FIELDS.items() if getattr(expect, k)}
    if expect.image_pull_secrets:
        want["imagePullSecrets"] = list(expect.image_pull_secrets)
    if not want:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects none of these fields")
    job = job_evidence("scheduling")
    spec = _spec(job)
    got: dict[str, Any] = {f: spec.get(f) for f in want if f != "imagePullSecrets"}
    if "imagePullSecrets" in want:
        # The configured secrets come first; the runner appends its per-job registry Secret after them.
        names = [s.get("name") for s in spec.get("imagePullSecrets") or []]
        got["imagePullSecrets"] = names[: len(expect.image_pull_secrets)]
    summary = ", ".join(f"{k} {v}" for k, v in got.items())
    if got != want:
        fail("RC-SCH-004", want, got, job=job, summary=summary)
    held("RC-SCH-004", want, got, job=job, summary=summary)


@check(
    id="RC-SCH-005",
    claim="a KUBERNETES_NODE_SELECTOR_* within node_selector_overwrite_allowed is applied and logged; one outside "
    "it is refused in Prepare with the runner's 'does not match' message and no pod",
    remediation="check node_selector_overwrite_allowed in [runners.kubernetes]: it is matched against the whole "
    "key=value; without it the variables are ignored",
    area="scheduling",
    probes=("scheduling",),
    judges_failures=("scheduling-refused",),
)
def test_node_selector_overrides(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    regex = expect.node_selector_overwrite_allowed
    said: list[str] = []
    job = job_evidence("scheduling")
    key, _, value = OVERRIDE[1].partition("=")
    kind = override_kind(OVERRIDE[1], regex)
    if kind == "refused":
        pytest.skip(f"under this profile's regex {regex!r} the scheduling job itself is refused")
    selector = _spec(job).get("nodeSelector") or {}
    line = f'"NodeSelector" "{key}" overwritten with "{value}"'
    if kind == "applied" and (selector.get(key) != value or line not in job.trace_parsed.text):
        fail(
            "RC-SCH-005",
            f"{OVERRIDE[0]}={OVERRIDE[1]} applied and logged ({line})",
            f"nodeSelector {_brief(selector)}; logged: {line in job.trace_parsed.text}",
            job=job,
            summary=f"{OVERRIDE[0]} not applied: nodeSelector {_brief(selector)}",
        )
    if kind == "ignored" and selector.get(key) == value and expect.node_selector.get(key) != value:
        fail("RC-SCH-005", f"{OVERRIDE[0]} ignored (no regex)", f"nodeSelector {_brief(selector)}", job=job)
    said.append(f"{OVERRIDE[0]} {kind}: nodeSelector {key}={selector.get(key, 'absent')}")
    refused_job = job_evidence("scheduling-refused")
    refused_kind = override_kind(REFUSED[1], regex)
    if refused_kind == "refused":
        found = [m for m in _MALFORMED.finditer(refused_job.trace_parsed.text) if m.group(1) == REFUSED[1]]
        want = f'provided value "{REFUSED[1]}" does not match "{regex}"'
        if refused_job.status != "failed" or not found or refused_job.pod is not None:
            fail(
                "RC-SCH-005",
                f"job failed in Prepare with: {want}, no pod",
                f"job {refused_job.status or 'unknown'}, pod {refused_job.pod.name if refused_job.pod else 'none'}; "
                f"final line: {refused_job.trace_parsed.final or 'none'}",
                job=refused_job,
                summary=f"{REFUSED[0]}={REFUSED[1]} was not refused: job {refused_job.status}",
            )
        said.append(
            f"{REFUSED[0]}={REFUSED[1]} refused (does not match node_selector_overwrite_allowed), no pod"
        )
    else:
        said.append(
            f"{REFUSED[0]} {refused_kind} under node_selector_overwrite_allowed: job {refused_job.status}"
        )
    held(
        "RC-SCH-005",
        {OVERRIDE[0]: kind, REFUSED[0]: refused_kind, "regex": regex},
        {"nodeSelector": selector, "refused job": refused_job.status, "trace": said[-1]},
        job=job,
        summary="; ".join(said),
    )


@check(
    id="RC-SCH-006",
    claim="the scheduler bound the pod to a node while it carried the configured nodeSelector, and the build "
    "runs on the architecture its kubernetes.io/arch selector names",
    remediation="check node_selector and node_tolerations against the labels and taints of the nodes "
    "(kubectl get nodes --show-labels), and the scheduler's FailedScheduling events",
    area="scheduling",
    probes=("scheduling",),
)
def test_bound_to_matching_node(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    expect = _expect(runnerconf_profile)
    job = job_evidence("scheduling")
    node = _spec(job, last=True).get("nodeName")
    selector = _spec(job).get("nodeSelector") or {}
    want = expected_selector(expect)
    scheduled = [e for e in (job.pod.events if job.pod else []) if e.get("reason") == "Scheduled"]
    record = probe_record(job, "scheduling")
    machine = str(record.get("machine") or "")
    arch = selector.get("kubernetes.io/arch")
    problems = []
    if not node:
        problems.append("no nodeName on the pod")
    missing = {k: v for k, v in want.items() if selector.get(k) != v}
    if missing:
        problems.append(f"bound without the configured selector entries {_brief(missing)}")
    if arch and ARCH.get(machine, machine) != arch:
        problems.append(
            f"build runs on {machine or 'an unknown machine'}, selector kubernetes.io/arch={arch}"
        )
    summary = f"bound to {node or 'no node'} under nodeSelector {_brief(selector)}; build machine {machine}"
    observed = {
        "nodeName": node,
        "nodeSelector": selector,
        "machine": machine,
        "scheduled event": scheduled[0].get("message") if scheduled else None,
    }
    if problems:
        fail("RC-SCH-006", {"nodeSelector": want, "bound": True}, observed, job=job, detail="; ".join(problems),
             summary=summary)  # fmt: skip
    held("RC-SCH-006", {"nodeSelector": want, "bound": True}, observed, job=job, summary=summary)
