"""The four outcomes of a check, and the documented causes of "could not test".

passed: the cluster does what it promises. failed: it does not. could_not_test: the evidence a check needs could
not be obtained (the cause says why, one sentence says what happened). skipped: the check does not apply. A bug in
the plugin or a check stays pytest's "error", with its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pytest_runnerconf.evidence import JobEvidence

OUTCOMES = ("passed", "failed", "could_not_test", "skipped", "error")

# cause -> what it means; report.json documents these, and every could_not_test carries one of them.
CAUSES: dict[str, str] = {
    "runner-system-failure": "the runner failed the job itself (a system failure) before the probe finished",
    "pod-not-started": "the job's pod never started: not scheduled, a node not ready, the runner's poll timeout",
    "image-pull": "an image of the job's pod could not be pulled",
    "quota": "a ResourceQuota or LimitRange refused the job's pod",
    "permissions": "the Kubernetes or GitLab API refused a request for lack of rights, or a webhook denied it",
    "runner-config": "the runner refused the job's configuration (an override above its cap, a pull policy it does "
    "not allow, a Secret or ConfigMap the pod refers to and cannot find)",
    "job-timeout": "the job's own timeout, or the runner's prepare timeout, ended it before the probe finished",
    "api-error": "the GitLab or Kubernetes API kept failing after retries",
    "unsupported-runner": "the runner under test is older than the oldest version the suite can judge",
    "deadline": "the run's deadline passed before the evidence was complete",
    "no-evidence": "the run holds no evidence for the check (its job is missing from the pipeline or bundle)",
    "inconclusive": "the probe ran, but what it measured cannot decide (other load on the node, say)",
}


# Causes that leave a job without a run of its probe on a working pod: even a check that judges that job's
# failures itself (an OOM kill, a refused override, a job timeout) has nothing to judge.
NEVER_RAN = frozenset(
    {"pod-not-started", "image-pull", "quota", "permissions", "api-error", "unsupported-runner", "deadline"}
)


class CouldNotTest(Exception):
    """Raised inside a check when its evidence could not be obtained; the plugin reports could_not_test."""

    def __init__(self, cause: str, sentence: str, *, job: JobEvidence | None = None) -> None:
        if cause not in CAUSES:
            raise ValueError(f"cause {cause!r} is not one of {', '.join(CAUSES)}")
        super().__init__(sentence)
        self.cause = cause
        self.sentence = sentence
        self.job = job  # the job whose evidence is missing, when there is one

    def __str__(self) -> str:
        return f"could not test ({self.cause}): {self.sentence}"


def could_not_test(cause: str, sentence: str, *, job: JobEvidence | None = None) -> NoReturn:
    """End the current check as could_not_test with CAUSE (one of CAUSES) and one sentence (naming JOB)."""
    __tracebackhide__ = True
    raise CouldNotTest(cause, sentence, job=job)
