"""Several [[runners]] entries of one runner process, as GitLab sees them: each picks the jobs its tags fit.

A real runner process registers one runner per [[runners]] entry; GitLab hands a job to a runner whose tags
include all of the job's tags. Each entry is a LocalRunner with its own name, token, tags and `limit`; the
process's `concurrent` is one Slots shared by all of them (commands/multi.go).
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_runnerconf.local.model import JobPayload
from pytest_runnerconf.local.runner import LocalRunner


class RunnerSet:
    """The JobQueue protocol over several LocalRunners, in config order (the first that fits a job takes it)."""

    def __init__(self, runners: Sequence[LocalRunner]) -> None:
        self.runners = tuple(runners)
        self._owner: dict[int, LocalRunner] = {}

    def runner_tags(self) -> frozenset[str]:
        return frozenset().union(*(r.runner_tags() for r in self.runners))

    def runner_for(self, tags: Sequence[str]) -> LocalRunner | None:
        return next((r for r in self.runners if set(tags) <= r.runner_tags()), None)

    def submit(self, payload: JobPayload) -> None:
        runner = self.runner_for(payload.tags)
        if runner is None:
            # Tags spread over two runners: no single runner may take the job, so it stays pending, as on GitLab.
            return
        self._owner[payload.id] = runner
        runner.submit(payload)

    def cancel(self, job_id: int) -> None:
        runner = self._owner.get(job_id)
        if runner is not None:
            runner.cancel(job_id)

    def shutdown(self) -> None:
        for runner in self.runners:
            runner.shutdown()
