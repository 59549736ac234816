"""Which GitLab job and runner a pod belongs to, for every runner from 16.0 on.

Runners before 17.9 label their pods with `pod=<ProjectUniqueName>` only (no project.runner.gitlab.com/* or
manager.runner.gitlab.com/* labels), and `pod_annotations` may overwrite the job.runner.gitlab.com/*
annotations on any version. So a pod is identified from several independent places, each of which the runner
has written the same way since 16.0 (executors/kubernetes/kubernetes.go, common/build.go):
  - the name `runner-<short token>-project-<project id>-concurrent-<slot>-<8 random>` (ProjectUniqueName);
  - the build container's env, which carries the job's public variables: CI_JOB_ID, CI_PROJECT_ID;
  - the annotation job.runner.gitlab.com/id, the labels project.runner.gitlab.com/id and
    manager.runner.gitlab.com/id-short (17.9 and later);
  - in attach mode, the mounts /scripts-<project id>-<job id> and /logs-<project id>-<job id>.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

POD_LABEL = "pod"  # every runner version sets it; the one label a selector can use from 16.0 on
JOB_ID_ANNOTATION = "job.runner.gitlab.com/id"
PROJECT_ID_ANNOTATION = "project.runner.gitlab.com/id"
PROJECT_ID_LABEL = "project.runner.gitlab.com/id"
SHORT_TOKEN_LABEL = "manager.runner.gitlab.com/id-short"
PAUSE_POD_LABEL = "runner.gitlab.com/pause-pod"
# ProjectUniqueName after MakeRFC1123Compatible; the token may itself hold dashes, so match lazily up to
# the first -project-<digits>-concurrent-.
_NAME = re.compile(r"^runner-(?P<token>[a-z0-9-]+?)-project-(?P<project>\d+)-concurrent-(?P<slot>\d+)(?:-|$)")
_MOUNT = re.compile(r"/(?:scripts|logs)-(?P<project>\d+)-(?P<job>\d+)$")
# The header's second line, after any FF_TIMESTAMPS prefix: "  on <runner name> <short token>, system ID: ...".
_TRACE_TOKEN = re.compile(r"(?:^|\s)on \S.* (?P<token>[A-Za-z0-9_-]{6,}), system ID:", re.M)
POD_NAME_IN_TEXT = re.compile(r"runner-[a-z0-9-]+?-project-\d+-concurrent-\d+-[a-z0-9]+")


@dataclass(frozen=True)
class PodIdentity:
    job_id: int | None
    project_id: int | None
    token: str | None  # the runner's short token, as the pod name (lower case) or its label carries it
    source: str  # where the job ID came from: annotation, env, mount, or "" when none said


def _int(value: Any) -> int | None:
    try:
        return int(str(value)) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def parse_name(name: str) -> tuple[str, int, int] | None:
    """(token, project id, slot) from a runner pod's name, None when the name is not a runner's."""
    m = _NAME.match(name)
    return (m["token"], int(m["project"]), int(m["slot"])) if m else None


def name_prefix(name: str) -> str:
    """The name without its random suffix: what a pod and its per-job Secret share."""
    return name.rsplit("-", 1)[0] + "-"


def _build_env(pod: dict[str, Any]) -> dict[str, str]:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == "build":
            return {str(e.get("name")): str(e.get("value")) for e in c.get("env") or [] if "value" in e}
    return {}


def _mount_ids(pod: dict[str, Any]) -> tuple[int, int] | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for mount in c.get("volumeMounts") or []:
            m = _MOUNT.search(str(mount.get("mountPath") or ""))
            if m:
                return int(m["project"]), int(m["job"])
    return None


def identify(pod: dict[str, Any]) -> PodIdentity:
    """Job, project and runner token of POD, from whichever of its marks is there."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    env = _build_env(pod)
    mounts = _mount_ids(pod)
    named = parse_name(str(meta.get("name") or ""))
    job_id, source = _int(annotations.get(JOB_ID_ANNOTATION)), "annotation"
    if job_id is None:
        job_id, source = _int(env.get("CI_JOB_ID")), "env"
    if job_id is None and mounts is not None:
        job_id, source = mounts[1], "mount"
    project_id = next(
        (
            p
            for p in (
                _int(labels.get(PROJECT_ID_LABEL)),
                _int(env.get("CI_PROJECT_ID")),
                _int(annotations.get(PROJECT_ID_ANNOTATION)),
                mounts[0] if mounts else None,
                named[1] if named else None,
            )
            if p is not None
        ),
        None,
    )
    token = labels.get(SHORT_TOKEN_LABEL) or (named[0] if named else None)
    return PodIdentity(
        job_id, project_id, str(token) if token else None, source if job_id is not None else ""
    )


def is_runner_pod(pod: dict[str, Any]) -> bool:
    """A job pod of some GitLab runner (not a pause pod): a runner-shaped name or the runner's labels."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(PAUSE_POD_LABEL) == "true":
        return False
    return parse_name(str(meta.get("name") or "")) is not None or PROJECT_ID_LABEL in labels


def same_token(a: str | None, b: str | None) -> bool:
    """Short tokens compare case-blind: the pod name lowers them, the id-short label keeps their case."""
    return bool(a and b) and str(a).lower() == str(b).lower()


def trace_token(trace: str) -> str | None:
    """The short token the trace's header names: `  on <runner name> <short token>, system ID: ...`."""
    m = _TRACE_TOKEN.search(trace[:4000])
    return m["token"] if m else None
