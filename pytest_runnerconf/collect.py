"""Per-job evidence fetched while the run goes on: each job's GitLab side once it finished, each pod's events
once the pod is gone, on a small pool of threads, so nothing per job is left for the end of the run.

Every worker thread has a GitLab driver of its own: python-gitlab shares a requests Session, which is not
promised to be thread-safe. The Kubernetes driver is shared: the kubernetes client's urllib3 pool is, and the
watch threads already share it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pytest_runnerconf.gitlab_driver import GitLabDriver
from pytest_runnerconf.kube_driver import KubeDriver

# Enough to fetch a wave of jobs that end together while the next ones run, few enough that a GitLab and an
# API server see no more parallel reads from this tool than a browser tab gives them.
COLLECT_WORKERS = 4


@dataclass(frozen=True)
class GitLabSide:
    """What GitLab holds of one finished job: its JSON, its trace, its artifacts' text files (None: none)."""

    job: dict[str, Any]
    trace: str
    artifacts: dict[str, str] | None


def has_artifacts(job: dict[str, Any]) -> bool:
    return bool(job.get("artifacts_file")) or any(
        a.get("file_type") == "archive" for a in job.get("artifacts") or []
    )


class Collector:
    """Fetches per-job evidence in the background; `gitlab_side` and `events` wait for (or do) each fetch."""

    def __init__(self, gitlab: GitLabDriver, kube: KubeDriver, workers: int = COLLECT_WORKERS) -> None:
        self._gitlab = gitlab
        self._kube = kube
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runnerconf-collect")
        self._local = threading.local()
        self._drivers: list[GitLabDriver] = []
        self._lock = threading.Lock()
        self._jobs: dict[int, Future[GitLabSide]] = {}
        self._events: dict[str, Future[list[dict[str, Any]]]] = {}

    def _driver(self) -> GitLabDriver:
        driver: GitLabDriver | None = getattr(self._local, "driver", None)
        if driver is None:
            driver = self._local.driver = self._gitlab.sibling()
            with self._lock:
                self._drivers.append(driver)
        return driver

    def _fetch_job(self, job_id: int) -> GitLabSide:
        gitlab = self._driver()
        job = gitlab.job(job_id)
        trace = gitlab.trace(job_id)
        return GitLabSide(job, trace, gitlab.artifacts(job_id) if has_artifacts(job) else None)

    def job_finished(self, job_id: int) -> None:
        """Start fetching a finished job's GitLab side (once)."""
        if job_id not in self._jobs:
            self._jobs[job_id] = self._pool.submit(self._fetch_job, job_id)

    def pod_gone(self, pod_name: str) -> None:
        """Start fetching a deleted pod's events (once): none come after the pod is gone."""
        if pod_name not in self._events:
            self._events[pod_name] = self._pool.submit(self._kube.pod_events, pod_name)

    def gitlab_side(self, job_id: int) -> GitLabSide:
        """The job's GitLab side: the background fetch's result (its error re-raised here), else fetched now."""
        self.job_finished(job_id)
        return self._jobs[job_id].result()

    def events(self, pod_name: str) -> list[dict[str, Any]]:
        self.pod_gone(pod_name)
        return self._events[pod_name].result()

    def capped(self) -> dict[str, str]:
        """What a size cap cut, by object, across every worker's driver."""
        with self._lock:
            drivers = list(self._drivers)
        merged: dict[str, str] = {}
        for driver in [self._gitlab, *drivers]:
            merged.update(driver.capped)
        return merged

    def close(self) -> None:
        """Drop what is still queued (an interrupted run does not wait for evidence it will not use)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
