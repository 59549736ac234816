"""RC-LBL: pod labels and annotations from config.toml (variables expanded, labels sanitised), the job's
KUBERNETES_POD_LABELS_*/KUBERNETES_POD_ANNOTATIONS_* overrides within *_overwrite_allowed, the runner's own."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_runnerconf import JobEvidence, LabelsExpect, Profile, check, could_not_test, fail, held

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]

# Mirrors fixtures/probes/labels.yml: variable -> "key=value" the job asks for.
OVERRIDES = {
    "KUBERNETES_POD_LABELS_TEAM": "runnerconf.test/team=platform",
    "KUBERNETES_POD_ANNOTATIONS_NOTE": "runnerconf.test/note=set by the job",
}
REFUSED = ("KUBERNETES_POD_LABELS_OWNER", "runnerconf.test/owner=anyone")
CONFIG_HINT = "pod_labels and pod_annotations in [runners.kubernetes]"
# executors/kubernetes/kubernetes.go buildLabels (v18.11): the runner's labels, which no config may replace.
RUNNER_LABELS = (
    "pod",
    "project.runner.gitlab.com/id",
    "project.runner.gitlab.com/name",
    "project.runner.gitlab.com/namespace",
    "project.runner.gitlab.com/namespace-id",
    "project.runner.gitlab.com/root-namespace",
    "job.runner.gitlab.com/pod",
    "manager.runner.gitlab.com/name",
    "manager.runner.gitlab.com/id-short",
)
_VARIABLE = re.compile(r"\$(\$|\{([^}]*)\}|([A-Za-z0-9_]+))")


def sanitize_label(value: str) -> str:
    """sanitizeLabel (executors/kubernetes/util.go, v18.11): [A-Za-z0-9-_.] kept, others '_', trimmed, 63."""
    value = re.sub(r"[^A-Za-z0-9\-_.]", "_", value)
    return value.strip("-_.")[:63].strip("-_.")


def expand(value: str, variables: dict[str, str]) -> str:
    """The runner's ExpandValue for plain $NAME / ${NAME} / $$ (os.Expand): an unknown variable is empty."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return variables.get(match.group(2) or match.group(3) or "", "")

    return _VARIABLE.sub(one, value)


def _expect(profile: Profile) -> LabelsExpect:
    if profile.expect.labels is None:
        pytest.skip(f"the profile of cluster {profile.name} sets no expect.labels; nothing to compare with")
    return profile.expect.labels


def _metadata(job: JobEvidence) -> dict[str, Any]:
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name} ({job.status})", job=job)
    return job.pod.spec.get("metadata") or {}


def job_variables(job: JobEvidence, record: dict[str, Any]) -> dict[str, str]:
    """The variables the job saw (the probe's record), over the build container's env in the pod spec."""
    out: dict[str, str] = {}
    spec = (job.pod.spec.get("spec") or {}) if job.pod is not None else {}
    build: dict[str, Any] = next((c for c in spec.get("containers") or [] if c.get("name") == "build"), {})
    for entry in build.get("env") or []:
        if isinstance(entry, dict) and entry.get("name"):
            out[str(entry["name"])] = str(entry.get("value") or "")
    for line in record.get("variables") or []:
        key, sep, value = str(line).partition("=")
        if sep:
            out[key] = value
    return out


def _compare(want: dict[str, str], got: dict[str, Any]) -> dict[str, str]:
    return {
        key: f"{got[key]!r} (want {value!r})" if key in got else f"absent (want {value!r})"
        for key, value in want.items()
        if got.get(key) != value
    }


@dataclass(frozen=True)
class Override:
    """What the runner should do with one KUBERNETES_POD_* variable under the profile's regex."""

    variable: str
    pair: str
    regex: str

    @property
    def kind(self) -> str:
        if not self.regex:
            return "ignored"
        return "applied" if re.search(self.regex, self.pair) else "refused"

    @property
    def labels(self) -> bool:
        return self.variable.startswith("KUBERNETES_POD_LABELS_")

    def describe(self) -> str:
        why = f"regex {self.regex!r}" if self.regex else "no *_overwrite_allowed regex"
        return f"{self.variable}={self.pair} {self.kind} ({why})"


def override(variable: str, pair: str, expect: LabelsExpect) -> Override:
    labels = variable.startswith("KUBERNETES_POD_LABELS_")
    regex = expect.pod_labels_overwrite_allowed if labels else expect.pod_annotations_overwrite_allowed
    return Override(variable, pair, regex)


@check(
    id="RC-LBL-001",
    claim="the pod carries config.toml's pod_labels, their $CI_* variables expanded and values sanitised "
    "as the runner does",
    remediation=f"check {CONFIG_HINT}; keys in the runner.gitlab.com namespace are dropped, values are "
    "expanded with the job's variables and then sanitised to [A-Za-z0-9-_.] (63 characters)",
    area="labels",
    probes=("labels",),
)
def test_pod_labels(job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    if not expect.pod_labels:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no pod_labels")
    job = job_evidence("labels")
    variables = job_variables(job, probe_record(job, "labels"))
    want = {k: sanitize_label(expand(v, variables)) for k, v in expect.pod_labels.items()}
    got = _metadata(job).get("labels") or {}
    seen = {k: got.get(k) for k in want}
    summary = ", ".join(f"{k}={got[k]}" if k in got else f"{k} absent" for k in want)
    wrong = _compare(want, got)
    if wrong:
        fail("RC-LBL-001", want, wrong, job=job, summary=f"pod labels: {summary}")
    held("RC-LBL-001", want, seen, job=job, summary=f"pod labels: {summary}")


@check(
    id="RC-LBL-002",
    claim="the pod carries config.toml's pod_annotations, their $CI_* variables expanded",
    remediation=f"check {CONFIG_HINT}; annotation values are expanded with the job's variables, not sanitised",
    area="labels",
    probes=("labels",),
)
def test_pod_annotations(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_profile: Profile
) -> None:
    expect = _expect(runnerconf_profile)
    if not expect.pod_annotations:
        pytest.skip(f"the profile of cluster {runnerconf_profile.name} expects no pod_annotations")
    job = job_evidence("labels")
    variables = job_variables(job, probe_record(job, "labels"))
    want = {k: expand(v, variables) for k, v in expect.pod_annotations.items()}
    got = _metadata(job).get("annotations") or {}
    summary = ", ".join(f"{k}={got[k]}" if k in got else f"{k} absent" for k in want)
    wrong = _compare(want, got)
    if wrong:
        fail("RC-LBL-002", want, wrong, job=job, summary=f"pod annotations: {summary}")
    held("RC-LBL-002", want, {k: got.get(k) for k in want}, job=job, summary=f"pod annotations: {summary}")


def _overwritten_line(o: Override) -> str:
    key, _, value = o.pair.partition("=")
    field = "PodLabels" if o.labels else "PodAnnotations"
    return f'"{field}" "{key}" overwritten with "{value}"'


@check(
    id="RC-LBL-003",
    claim="KUBERNETES_POD_LABELS_* / KUBERNETES_POD_ANNOTATIONS_* matching *_overwrite_allowed reach the pod "
    "and are logged as overwritten; without a regex they are ignored",
    remediation="check pod_labels_overwrite_allowed and pod_annotations_overwrite_allowed in "
    "[runners.kubernetes]: each is matched against the whole key=value the job sets",
    area="labels",
    probes=("labels",),
)
def test_overrides_applied(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    outcomes = [override(v, pair, expect) for v, pair in OVERRIDES.items()]
    expectation = "; ".join(o.describe() for o in outcomes)
    if any(o.kind == "refused" for o in outcomes):
        pytest.skip(f"under this profile's regexes the labels job is refused ({expectation})")
    job = job_evidence("labels")
    meta = _metadata(job)
    text = job.trace_parsed.text
    wrong: dict[str, str] = {}
    said: list[str] = []
    for o in outcomes:
        key, _, value = o.pair.partition("=")
        where = meta.get("labels" if o.labels else "annotations") or {}
        shown = sanitize_label(value) if o.labels else value
        if o.kind == "applied":
            if where.get(key) != shown:
                wrong[o.variable] = f"{key} = {where.get(key)!r} on the pod (want {shown!r})"
            elif _overwritten_line(o) not in text:
                wrong[o.variable] = f"no log line {_overwritten_line(o)}"
        else:
            configured = (expect.pod_labels if o.labels else expect.pod_annotations).get(key)
            if configured is None and key in where:
                wrong[o.variable] = f"{key} = {where[key]!r} on the pod although no regex allows overrides"
        said.append(f"{o.variable} {o.kind}: {key}={where.get(key, 'absent')}")
    if wrong:
        fail("RC-LBL-003", expectation, wrong, job=job, summary="; ".join(said))
    held(
        "RC-LBL-003",
        {o.variable: o.kind for o in outcomes},
        {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
        job=job,
        summary="; ".join(said),
    )


_MALFORMED = re.compile(r'provided value "((?:[^"\\]|\\.)*)" does not match "((?:[^"\\]|\\.)*)"')


@check(
    id="RC-LBL-004",
    claim="a KUBERNETES_POD_LABELS_* value outside pod_labels_overwrite_allowed is refused in Prepare with the "
    "runner's 'does not match' message, and no pod is created",
    remediation="check pod_labels_overwrite_allowed in [runners.kubernetes]",
    area="labels",
    probes=("labels",),
    judges_failures=("labels-refused",),
)
def test_override_outside_regex_refused(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    expect = _expect(runnerconf_profile)
    o = override(*REFUSED, expect)
    job = job_evidence("labels-refused")
    key = o.pair.partition("=")[0]
    if o.kind != "refused":
        labels = _metadata(job).get("labels") or {}
        if o.kind == "ignored" and key in labels and key not in expect.pod_labels:
            fail("RC-LBL-004", o.describe(), f"{key}={labels[key]} on the pod", job=job)
        held(
            "RC-LBL-004",
            o.kind,
            {"job": job.status, key: labels.get(key)},
            job=job,
            summary=f"{o.describe()}: job {job.status}, {key}={labels.get(key, 'absent')}",
        )
        return
    found = [m for m in _MALFORMED.finditer(job.trace_parsed.text) if m.group(1) == o.pair]
    want = f'provided value "{o.pair}" does not match "{o.regex}"'
    if job.status != "failed" or not found:
        fail(
            "RC-LBL-004",
            f"job failed with: {want}",
            f"job {job.status or 'unknown'}; final line: {job.trace_parsed.final or 'none'}",
            job=job,
            summary=f"{REFUSED[0]}={o.pair} was not refused: job {job.status}",
        )
    if job.pod is not None:
        labels = job.pod.spec.get("metadata", {}).get("labels") or {}
        fail(
            "RC-LBL-004", "no pod for a refused job", f"pod {job.pod.name}, {key}={labels.get(key)}", job=job
        )
    held(
        "RC-LBL-004",
        {"outcome": "refused", "message": want},
        {"job": job.status, "refusal": found[0].group(0), "pod": None},
        job=job,
        # the regex stays in observed: backslashes read badly once a report escapes them
        summary=f"job {job.status}, no pod: {REFUSED[0]}={o.pair} does not match pod_labels_overwrite_allowed",
    )


@check(
    id="RC-LBL-005",
    claim="the runner's own labels (pod, project.*, job.*/pod, manager.*) and job annotations (job id, sha, "
    "ref, name, project id) are on the pod with the job's values",
    remediation="the runner sets these itself: a pod_spec patch or an admission webhook that rewrites "
    "metadata, or a runner older than 17.11, would explain a difference",
    area="labels",
    probes=("labels",),
)
def test_runner_labels(job_evidence: JobLookup, probe_record: ProbeLookup) -> None:
    job = job_evidence("labels")
    v = job_variables(job, probe_record(job, "labels"))
    meta = _metadata(job)
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    want_labels = {
        "project.runner.gitlab.com/id": v.get("CI_PROJECT_ID", ""),
        "project.runner.gitlab.com/namespace": sanitize_label(v.get("CI_PROJECT_NAMESPACE", "")),
        "project.runner.gitlab.com/root-namespace": sanitize_label(v.get("CI_PROJECT_ROOT_NAMESPACE", "")),
    }
    want_annotations = {
        "job.runner.gitlab.com/id": str(job.job.get("id") or v.get("CI_JOB_ID", "")),
        "job.runner.gitlab.com/sha": v.get("CI_COMMIT_SHA", ""),
        "job.runner.gitlab.com/ref": v.get("CI_COMMIT_REF_NAME", ""),
        "job.runner.gitlab.com/name": job.name,
        "project.runner.gitlab.com/id": v.get("CI_PROJECT_ID", ""),
    }
    wrong = {f"label {k}": why for k, why in _compare(want_labels, labels).items()}
    wrong |= {f"annotation {k}": why for k, why in _compare(want_annotations, annotations).items()}
    missing = [k for k in RUNNER_LABELS if not labels.get(k)]
    if missing:
        wrong["labels missing"] = ", ".join(missing)
    if labels.get("pod") != labels.get("job.runner.gitlab.com/pod"):
        wrong["label pod"] = f"{labels.get('pod')!r} differs from job.runner.gitlab.com/pod"
    summary = (
        f"{len([k for k in RUNNER_LABELS if k in labels])} runner labels (project id "
        f"{labels.get('project.runner.gitlab.com/id')}, manager {labels.get('manager.runner.gitlab.com/name')}), "
        f"annotations job id {annotations.get('job.runner.gitlab.com/id')}, ref "
        f"{annotations.get('job.runner.gitlab.com/ref')}"
    )
    if wrong:
        fail(
            "RC-LBL-005",
            {"labels": want_labels, "annotations": want_annotations},
            wrong,
            job=job,
            summary=summary,
        )
    held(
        "RC-LBL-005",
        {"labels": [*RUNNER_LABELS], "values": {**want_labels, **want_annotations}},
        {k: labels.get(k) for k in RUNNER_LABELS} | {k: annotations.get(k) for k in want_annotations},
        job=job,
        summary=summary,
    )
