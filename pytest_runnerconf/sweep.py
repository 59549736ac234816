"""What earlier runs that died (SIGKILL, a lost CI machine) left behind, and removing only what is ours.

A leftover is this tool's when it carries the run marker (pytest_runnerconf.marker): a ``runnerconf/<run id>``
branch whose head is this tool's commit, the pipelines on such a ref, and the runner pods of their jobs.
Branches are deleted and pipelines cancelled; pods are only listed: the runner owns them (it deletes the pod
of a cancelled job itself), and deleting another system's pods is not this tool's call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_runnerconf.errors import ConfigError, RunnerConfError
from pytest_runnerconf.gitlab_driver import GitLabDriver
from pytest_runnerconf.kube_driver import KubeDriver
from pytest_runnerconf.marker import BRANCH_PREFIX, is_ours, run_id_of
from pytest_runnerconf.podjob import POD_LABEL, identify, is_runner_pod
from pytest_runnerconf.progress import FINISHED
from pytest_runnerconf.rfc3339 import epoch

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, setting: str = "--older-than") -> float:
    """Seconds in "90", "90s", "30m", "1h30m", "2d" (Go-style units, as the runner's own settings use)."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ConfigError(f"{setting}={text!r} is not a duration; use a form such as 90s, 30m, 2h or 1h30m")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "age unknown"
    if seconds < 120:
        return f"{seconds:.0f}s old"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m old"
    return f"{seconds / 3600:.1f}h old"


@dataclass(frozen=True)
class Leftover:
    kind: str  # "pipeline" | "branch" | "pod"
    name: str  # "#12", "runnerconf/<run id>", the pod name
    detail: str  # what the line says about it besides its name
    ident: int | None = None  # the pipeline id

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({self.detail})"


def find(
    gitlab: GitLabDriver,
    kube: KubeDriver | None,
    older_than_s: float,
    *,
    now: float | None = None,
    pods: bool = True,
) -> list[Leftover]:
    """This tool's branches older than OLDER_THAN_S, the unfinished pipelines on them (or on refs whose
    branch is already gone), and (with PODS) the runner pods of those pipelines' jobs still present."""
    now = time.time() if now is None else now
    found: list[Leftover] = []
    branches: list[Leftover] = []
    pipelines: dict[int, dict[str, Any]] = {}
    for branch in gitlab.scratch_branches(BRANCH_PREFIX):
        name = str(branch.get("name"))
        head = branch.get("commit") or {}
        if not is_ours(name, str(head.get("message") or "")):
            continue  # someone else's branch under our prefix: never ours to delete
        created = epoch(head.get("committed_date") or head.get("created_at"))
        age = None if created is None else now - created
        if age is not None and age < older_than_s:
            continue
        branches.append(Leftover("branch", name, _age(age)))
        for pipeline in gitlab.pipelines_for_ref(name):
            pipelines[int(pipeline["id"])] = pipeline
    for pipeline in gitlab.unfinished_pipelines():
        ref = str(pipeline.get("ref") or "")
        created = epoch(pipeline.get("created_at"))
        old = created is None or now - created >= older_than_s
        if run_id_of(ref) is not None and old:
            pipelines.setdefault(int(pipeline["id"]), pipeline)
    for pid, pipeline in sorted(pipelines.items()):
        if pipeline.get("status") not in FINISHED:
            detail = f"{pipeline.get('status')}, ref {pipeline.get('ref')}, {_age(_since(pipeline, now))}"
            found.append(Leftover("pipeline", f"#{pid}", detail, pid))
    found += branches
    if pods and kube is not None and pipelines:
        found += _pods(gitlab, kube, pipelines)
    return found


def _since(pipeline: dict[str, Any], now: float) -> float | None:
    created = epoch(pipeline.get("created_at"))
    return None if created is None else now - created


def _pods(gitlab: GitLabDriver, kube: KubeDriver, pipelines: dict[int, dict[str, Any]]) -> list[Leftover]:
    jobs = {int(j["id"]): pid for pid in pipelines for j in gitlab.pipeline_jobs(pid)}
    # The `pod` label is on every runner's pods from 16.0; the project label came in 17.9 and the job
    # annotation too, so each pod is identified by whichever marks it carries (podjob.identify).
    listed = kube.list_pods(POD_LABEL)
    found = []
    for pod in listed.get("items") or []:
        who = identify(pod)
        job_id = who.job_id
        if who.project_id == gitlab.project_id and job_id in jobs and is_runner_pod(pod):
            name = str(pod.get("metadata", {}).get("name"))
            phase = pod.get("status", {}).get("phase")
            found.append(Leftover("pod", name, f"job {job_id} of pipeline #{jobs[job_id]}, {phase}"))
    return found


def act(gitlab: GitLabDriver, leftovers: Iterable[Leftover], *, dry_run: bool) -> list[tuple[str, bool]]:
    """Cancel the pipelines, delete the branches, list the pods; one (line, ok) per object, in that order."""
    lines: list[tuple[str, bool]] = []
    for item in leftovers:
        if item.kind == "pod":
            lines.append(
                (f"{item.describe()}: listed, not deleted (the runner owns its pods and deletes the pod of a "
                 "cancelled job; delete it yourself only if the runner is gone)", True)
            )  # fmt: skip
            continue
        verb = "cancel" if item.kind == "pipeline" else "delete"
        if dry_run:
            lines.append((f"{item.describe()}: would {verb} (dry run)", True))
            continue
        try:
            if item.kind == "pipeline":
                assert item.ident is not None
                gitlab.cancel_pipeline(item.ident)
            else:
                gitlab.delete_branch(item.name)
        except RunnerConfError as exc:
            lines.append((f"{item.describe()}: could not {verb}: {exc}", False))
            continue
        lines.append((f"{item.describe()}: {verb}{'led' if verb == 'cancel' else 'd'}", True))
    return lines


def warning(leftovers: list[Leftover], cluster: str) -> str:
    """The one sentence a run prints when it starts next to leftovers of earlier runs."""
    shown = ", ".join(item.describe() for item in leftovers[:3])
    more = f" and {len(leftovers) - 3} more" if len(leftovers) > 3 else ""
    return (
        f"earlier runs left {len(leftovers)} object(s) on cluster {cluster}: {shown}{more}; "
        f"`runnerconf sweep --runner-cluster={cluster}` removes them"
    )
