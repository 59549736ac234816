"""Drive the local cluster the way a user's script would: python-gitlab for pipelines, one pod watch."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import gitlab
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from pytest_runnerconf.trace import Trace, parse_trace

FINISHED = ("success", "failed", "canceled")


def lines_between(text: str, start: str, end: str) -> list[str]:
    """The output lines between two marker lines (the echoed command line also names the markers)."""
    lines = text.splitlines()
    if start not in lines:
        return []
    body = lines[lines.index(start) + 1 :]
    return body[: body.index(end)] if end in body else body


@dataclass
class PodSeen:
    name: str
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        return self.events[0][2]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1][2]

    @property
    def types(self) -> list[str]:
        return [t for _, t, _ in self.events]

    def deleted_at(self) -> float | None:
        return next((ts for ts, t, _ in self.events if t == "DELETED"), None)

    def statuses(self, name: str) -> list[dict[str, Any]]:
        """Every status of one container seen through the watch, in order."""
        out = []
        for _, _, obj in self.events:
            status = obj.get("status") or {}
            for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                if s["name"] == name:
                    out.append(s)
        return out

    def final_state(self, name: str) -> dict[str, Any]:
        states = self.statuses(name)
        return states[-1]["state"] if states else {}


@dataclass
class JobRun:
    name: str
    job: Any
    trace: Trace
    raw: str
    pod: PodSeen | None
    finished_at: float


class Cluster:
    """A python-gitlab + kubernetes client pair bound to one local cluster."""

    def __init__(self, info: Any) -> None:
        self.info = info
        self.gl = gitlab.Gitlab(info.gitlab_url, private_token=info.gitlab_token)
        self.project = self.gl.projects.get(info.project)
        self.api_client = k8s_config.new_client_from_config(
            config_file=info.kubeconfig, context=info.kube_context
        )
        self.core = k8s.CoreV1Api(self.api_client)

    def run(
        self,
        ci_yaml: str,
        variables: dict[str, str] | None = None,
        *,
        files: dict[str, str] | None = None,
        timeout: float = 240,
        cancel_after_start: str | None = None,
        wait_deleted: bool = True,
    ) -> dict[str, JobRun]:
        branch = f"test-{uuid.uuid4().hex[:8]}"
        actions = [{"action": "create", "file_path": ".gitlab-ci.yml", "content": ci_yaml}]
        for path, content in (files or {}).items():
            actions.append({"action": "create", "file_path": path, "content": content})
        pods: dict[str, PodSeen] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(pods, stop), daemon=True)
        watcher.start()
        try:
            self.project.commits.create(
                {"branch": branch, "start_branch": "main", "commit_message": "test", "actions": actions}
            )
            pipeline = self.project.pipelines.create(
                {"ref": branch, "variables": [{"key": k, "value": v} for k, v in (variables or {}).items()]}
            )
            deadline = time.time() + timeout
            finished: dict[int, float] = {}
            canceled = False
            while time.time() < deadline:
                jobs = pipeline.jobs.list(get_all=True)
                for j in jobs:
                    if j.status in FINISHED and j.id not in finished:
                        finished[j.id] = time.time()
                    if cancel_after_start and j.name == cancel_after_start and not canceled:
                        trace = self.project.jobs.get(j.id).trace().decode()
                        if "section_start" in trace and "step_script" in trace:
                            self.project.jobs.get(j.id, lazy=True).cancel()
                            canceled = True
                if jobs and all(j.status in FINISHED for j in jobs):
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"pipeline {pipeline.id} did not finish within {timeout}s")
            by_name = {j.name: j for j in pipeline.jobs.list(get_all=True)}
            # Pods are correlated by the runner's job annotation, then we wait for their deletion.
            wanted = {j.id for j in by_name.values()}
            deadline = time.time() + (60 if wait_deleted else 0)
            while wait_deleted and time.time() < deadline:
                mine = [p for p in pods.values() if self._job_id(p) in wanted]
                if all(p.deleted_at() for p in mine):
                    break
                time.sleep(0.2)
            result = {}
            for name, j in by_name.items():
                job = self.project.jobs.get(j.id)
                raw = job.trace().decode()
                pod = next((p for p in pods.values() if self._job_id(p) == j.id), None)
                result[name] = JobRun(name, job, parse_trace(raw), raw, pod, finished.get(j.id, time.time()))
            return result
        finally:
            stop.set()
            with contextlib.suppress(gitlab.exceptions.GitlabError):
                self.project.branches.delete(branch)

    @staticmethod
    def _job_id(pod: PodSeen) -> int | None:
        ann = (pod.first.get("metadata") or {}).get("annotations") or {}
        value = ann.get("job.runner.gitlab.com/id")
        return int(value) if value else None

    def _watch(self, pods: dict[str, PodSeen], stop: threading.Event) -> None:
        w = k8s_watch.Watch()
        rv = self.core.list_namespaced_pod(self.info.namespace).metadata.resource_version
        while not stop.is_set():
            for ev in w.stream(
                self.core.list_namespaced_pod, self.info.namespace, resource_version=rv, timeout_seconds=1
            ):
                obj = self.api_client.sanitize_for_serialization(ev["object"])
                rv = obj["metadata"]["resourceVersion"]
                name = obj["metadata"]["name"]
                pods.setdefault(name, PodSeen(name)).events.append((time.time(), ev["type"], obj))
                if stop.is_set():
                    break
