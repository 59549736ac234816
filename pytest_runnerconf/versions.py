"""The runner's Kubernetes-executor behaviours by version: one table, keyed by the trace header's version.

Each row is one behaviour, the first runner version that has it, and where that was verified: a line of the
runner's CHANGELOG.md at that tag, and the file or commit that shows it (the runner's repository,
gitlab-org/gitlab-runner, mirrored on GitHub as gitlabhq/gitlab-runner). Two kinds of row:

- ARRIVED: runners before ``since`` do not have the behaviour at all; a check that needs it is skipped with
  the row's reason (``require_behaviour``), never failed, because the runner keeps no promise it never made;
- CHANGED: the runner behaves one way before ``since`` and another from it on; a check that reads it asks
  ``has_behaviour`` and judges by the runner's own version.

A version the header does not give as a number (a runner built from source says "development version") is
taken as the newest: the suite then expects today's behaviour, and a miss shows as the failure it would be.
Runners older than jobend.SUPPORTED_FLOOR never get here: their checks end as could-not-test first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from pytest_runnerconf.evidence import JobEvidence, RunEvidence
from pytest_runnerconf.trace import version_number

ARRIVED = "arrived"
CHANGED = "changed"
MIRROR = "github.com/gitlabhq/gitlab-runner"


@dataclass(frozen=True)
class Behaviour:
    key: str
    since: tuple[int, int, int]
    kind: str  # ARRIVED or CHANGED
    sentence: str  # what the runner does from SINCE on, as the skip reason and the report say it
    source: str  # the changelog line and the file or commit that show it, at the tags named
    before: str = ""  # CHANGED: what it does before SINCE
    checks: tuple[str, ...] = ()  # the check IDs that consult this row

    @property
    def since_text(self) -> str:
        """`16.9`, `18.11.1`: the patch only when it matters, as the runner's changelog names releases."""
        major, minor, patch = self.since
        return f"{major}.{minor}.{patch}" if patch else f"{major}.{minor}"

    def present(self, version: str | None) -> bool:
        """Whether the runner of VERSION has this behaviour (an unnumbered version counts as the newest)."""
        number = version_number(version)
        return number is None or number >= self.since

    def reason(self, version: str | None) -> str:
        """The skip reason: `hostAliases for services arrived in 12.8; the runner under test is ...`."""
        return (
            f"{self.sentence} arrived in {self.since_text}; the runner under test is gitlab-runner {version}"
        )


TABLE: tuple[Behaviour, ...] = (
    Behaviour(
        "services_host_aliases",
        (12, 8, 0),
        ARRIVED,
        "hostAliases for services",
        "CHANGELOG.md v12.8.0: 'Add support for host aliases in services for Kubernetes executor !1680'",
        checks=("RC-ALS-001", "RC-ALS-002", "RC-ALS-003", "RC-ALS-004"),
    ),
    Behaviour(
        "service_health_check",
        (16, 9, 0),
        ARRIVED,
        "waiting for a service's HEALTHCHECK_TCP_PORT before the script",
        "CHANGELOG.md v16.9.0: 'Add support for service health checks for the Kubernetes executor !4545'; "
        "executors/kubernetes/kubernetes.go waitForServices, absent at v16.8.0, present at v16.9.0 "
        "(commit 7ec750358 'Kubernetes service health checks')",
        checks=("RC-ORD-004",),
    ),
    Behaviour(
        "project_pod_labels",
        (17, 9, 0),
        CHANGED,
        "the project.runner.gitlab.com/id label on job pods",
        "CHANGELOG.md v17.9.0: 'Expand default labels on build pods !5212'; executors/kubernetes/kubernetes.go "
        'v17.9.0 line 2080 `"project." + runnerLabelNamespace + "/id"` in the labels, v17.8.0 line 2026 '
        "only in the annotations",
        before="the project id only as the project.runner.gitlab.com/id annotation (the pod label alone)",
    ),
    Behaviour(
        "pod_disruption_message",
        (17, 9, 0),
        CHANGED,
        'an evicted job pod ends the job at once with \'pod "NS/NAME" is disrupted: reason "...", '
        'message "..."\' (the pod informer reads its DisruptionTarget condition)',
        "CHANGELOG.md v17.9.0: 'Gracefully handle missing informer permissions !5290'; commits c5de0132c "
        "'Implement a pod watcher' and ab74d73d4 'Use the pod watcher in the k8s executor'; "
        "executors/kubernetes/internal/watchers/pod.go checkTerminalPodErrors, absent at v17.8.0, present "
        "from v17.9.0 to v19.3.0; used when the runner may list and watch pods (else it logs \"won't use "
        'informers" and polls the pod as before)',
        before="no pod informer: the job fails when polling finds the pod gone or not Running "
        '(\'pods "NAME" not found\', \'pod "NAME" status is "Failed"\')',
        checks=("RC-DIS-001",),
    ),
    Behaviour(
        "trace_timestamps_default",
        (18, 7, 0),
        CHANGED,
        "FF_TIMESTAMPS on by default (every trace line stamped with its time)",
        "CHANGELOG.md v18.7.0: 'Enable log timestamps by default !5861'; helpers/featureflags/flags.go "
        "UseTimestamps DefaultValue false at v18.6.0, true at v18.7.0 (the flag exists from v16.11.0, "
        "'Implement timestamped logs !4591')",
        before="FF_TIMESTAMPS off unless the runner config turns it on (whole-second section markers only)",
        checks=("RC-ORD-002",),
    ),
    Behaviour(
        "root_id_leading_zeros_refused",
        (18, 11, 1),
        CHANGED,
        'a job user or group "00" (root through leading zeros) refused like "0"',
        "CHANGELOG.md v18.11.1: \"Merge branch 'security-fix-k8s-uid-gid-root-bypass' into 'main' !6643\"; "
        "common/config.go parseID absent at v18.11.0, present at v18.11.1 (on main: merge c5be9a818, in v19.0.0)",
        before='"00" accepted although "0" is not in allowed_users/allowed_groups',
    ),
    Behaviour(
        "pod_disruption_budget",
        (18, 11, 0),
        ARRIVED,
        "a PodDisruptionBudget for each job pod ([runners.kubernetes] pod_disruption_budget)",
        "CHANGELOG.md v18.11.0: 'Kubernetes: add PodDisruptionBudget support for job pods !6331'; commit "
        "777fd2db3 'kubernetes: add PodDisruptionBudget support for job pods', first tag v18.11.0; "
        "common/config.go KubernetesConfig.PodDisruptionBudget absent at v18.10.0; executors/kubernetes/"
        'kubernetes.go v18.11.1 createPodDisruptionBudget (lines 2860-2892: "<pod>-pdb", minAvailable 1, '
        "owned by the pod, selecting its job.runner.gitlab.com/pod label), called from setupBuildPod after the "
        "owner references (lines 2156-2161)",
        checks=("RC-DIS-003",),
    ),
    Behaviour(
        "pod_env_dollar_escaped",
        (19, 0, 0),
        CHANGED,
        "`$` in job variables written as `$$` in the pod's env values (no kubelet $(VAR) expansion)",
        "executors/kubernetes/util.go: commit 3b1d17363 'Fix: escape dollar signs in Kubernetes env var "
        "values' (closes runner issue #39349), first tag v19.0.0, absent at v18.11.4",
        before="env values as given: kubelet expands $(VAR) in them",
    ),
    Behaviour(
        "security_profiles",
        (18, 11, 0),
        ARRIVED,
        "seccomp_profile and app_armor_profile in config.toml's security contexts",
        "CHANGELOG.md v18.11.0: 'Add seccomp and AppArmor profile support to Kubernetes executor security "
        "context !6512'; common/config.go KubernetesSeccompProfile/KubernetesAppArmorProfile, absent at "
        "v18.10.0, present at v18.11.0",
        checks=("RC-SEC-007",),
    ),
)
BY_KEY = {row.key: row for row in TABLE}


def lookup(key: str) -> Behaviour:
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(
            f"no runner behaviour {key!r} in the version table; known: {', '.join(BY_KEY)}"
        ) from None


def job_version(job: JobEvidence) -> str | None:
    """The version of the runner that ran JOB, from its trace header (None without a header)."""
    return job.trace_parsed.runner_version if job.trace else None


def require_behaviour(key: str, job: JobEvidence) -> None:
    """Skip the current check when the runner that ran JOB predates behaviour KEY (an ARRIVED row)."""
    __tracebackhide__ = True
    row = lookup(key)
    version = job_version(job)
    if not row.present(version):
        pytest.skip(row.reason(version))


def has_behaviour(key: str, job: JobEvidence) -> bool:
    """Whether the runner that ran JOB has the behaviour of KEY from its `since` on (a CHANGED row)."""
    return lookup(key).present(job_version(job))


def decisions(versions: Iterable[str]) -> list[dict[str, object]]:
    """Every row as the report shows it: for the oldest runner version of the run, present or not, and why.

    A run may meet several runners (several share the tags): the oldest decides, as it is the one whose
    behaviour the checks may miss. Without a version (no trace header) nothing is decided.
    """
    given = list(versions)
    numbered = sorted((n, v) for v in given if (n := version_number(v)) is not None)
    version = numbered[0][1] if numbered else (given[0] if given else None)
    rows: list[dict[str, object]] = []
    for row in TABLE:
        present = row.present(version) if version is not None else None
        rows.append(
            {
                "key": row.key,
                "since": row.since_text,
                "kind": row.kind,
                "behaviour": row.sentence,
                "before": row.before,
                "source": row.source,
                "checks": list(row.checks),
                "runner_version": version,
                "present": present,
            }
        )
    return rows


def run_decisions(run: RunEvidence | None) -> list[dict[str, object]]:
    return decisions(run.runner_versions()) if run is not None else []


def missing_words(rows: Iterable[dict[str, object]]) -> str:
    """`without: waiting for ... (from 16.9; RC-ORD-004 skipped), ...` for the report's one line."""
    parts = []
    for row in rows:
        if row.get("present") is not False:
            continue
        checks = row.get("checks")
        named = ", ".join(str(c) for c in checks) if isinstance(checks, list) else ""
        effect = "skipped" if row.get("kind") == ARRIVED else "judged by the older behaviour"
        parts.append(f"{row['behaviour']} (from {row['since']}{f'; {named} {effect}' if named else ''})")
    return "; ".join(parts)


def behaviour_line(rows: list[dict[str, object]]) -> str:
    """The report header's one line on what the version table decided for ROWS (decisions())."""
    version = next((row.get("runner_version") for row in rows if row.get("runner_version")), None)
    if version is None:
        return f"no runner version in the traces: the {len(rows)} rows of the version table decided nothing"
    have = sum(row.get("present") is True for row in rows)
    if have == len(rows):
        return f"gitlab-runner {version} has all {len(rows)} behaviours of the version table"
    return f"gitlab-runner {version} has {have} of {len(rows)} behaviours of the version table; without: " + (
        missing_words(rows)
    )
