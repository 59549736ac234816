"""Named faults the local cluster can inject, each breaking one behaviour like a broken real cluster."""

from __future__ import annotations

import os
from collections.abc import Iterable

from pytest_runnerconf.local.errors import LocalConfigError

FAULTS: dict[str, str] = {
    "init-not-first": "init containers start after the regular containers instead of before them",
    "script-before-sources": "step_script starts before get_sources has finished",
    "builds-not-shared": "each container gets its own /builds instead of the shared repo emptyDir",
    "logs-volume-broken": "each container gets its own copy of the logs emptyDir, so the helper never reads "
    "what the build writes to output.log (the runner waits for the script until the job times out)",
    "no-host-aliases": "the pod gets no hostAliases for its services",
    "ignore-dns-config": "dns_policy/dns_config are not applied to the pod",
    "dind-dns-fallback": "dockerd in DinD hands its containers 8.8.8.8 instead of the pod DNS",
    "limits-not-applied": "the pod spec shows limits but the cgroups do not enforce them",
    "oom-unreported": "an OOM kill happens but its reason is not surfaced",
    "overrides-ignored": "KUBERNETES_* resource override variables (KUBERNETES_CPU_LIMIT etc.) are ignored",
    "node-selector-ignored": "config.toml's node_selector and the job's KUBERNETES_NODE_SELECTOR_* never reach the "
    "pod spec",
    "security-context-ignored": "the pod spec carries config.toml's runAsUser/runAsGroup/supplemental groups, but "
    "every container's processes run as the image's user (root), without the context's no_new_privs or profiles",
    "allowed-users-ignored": "a job's image/service `kubernetes: user:` is applied whatever allowed_users and "
    "allowed_groups say (root included)",
    "pull-errors-unreported": "a job whose image cannot be pulled waits out the runner's poll_timeout (30 s for "
    "the run) and fails with the timeout message instead of the pull error",
    "pod-labels-dropped": "pod_labels and pod_annotations (from config.toml and from KUBERNETES_POD_LABELS_* / "
    "KUBERNETES_POD_ANNOTATIONS_* job variables) never reach the pod; the runner's own labels still do",
    "leak-pods": "job pods are not deleted after the job",
    "leak-secrets": "the per-job registry-credentials secret is left behind",
    "slow-cleanup": "job pods are deleted long after the job ended",
    "eviction-unnoticed": "the runner misses its pod's eviction (no pod informer, a broken stream taken for "
    "the step's end): an evicted pod's job succeeds",
    "pdb-not-created": "the runner ignores [runners.kubernetes] pod_disruption_budget: its job pods get no "
    "PodDisruptionBudget, so a drain's eviction is accepted and the job fails",
    "silent-stream-cut": "a job step's output stream is cut after 15 s of silence and the runner takes the cut "
    "for the step's successful end",
    "output-truncated-silently": "the trace is cut at the runner's output_limit without the runner's "
    '"Job\'s log exceeded limit" message',
    "pod-pending-timeout": "job pods are never scheduled (FailedScheduling: Insufficient cpu) and stay Pending "
    "until the runner's poll_timeout, shortened for the run, fails the job",
    "quota-exceeded": "the API server refuses job pods with a ResourceQuota error after the runner created "
    "the per-job Secret",
    "concurrency-one": "a [[runners]] entry with a limit takes one job at a time, whatever its limit",
    "limit-ignored": "a [[runners]] entry's limit is not enforced: only the global concurrent caps its jobs",
    "dind-certs-not-shared": "config.toml's certificates volume (mounted under /certs) reaches a job's "
    "services but not its build container, so TLS Docker-in-Docker has no client certificates",
    "registry-push-denied": "the project registry refuses the job's credentials: its *REGISTRY_PASSWORD CI/CD "
    "variables hold a password rotated away in the registry",
    "dind-mtu-too-big": "the pod's network carries at most 1400-byte packets and its interface says so (MTU "
    "1400), below the 1500 dockerd gives its bridge in a DinD service (an overlay network, dockerd not told): "
    "large packets for the containers dockerd starts are dropped",
    "scheduling-slow": "pods of a [[runners]] entry with a limit stay Pending (Unschedulable: Insufficient cpu) "
    "for 15 s before a node takes them, as while a node pool scales up",
    "cache-upload-fails-silently": 'the helper\'s cache archiver prints its upload line and "Created cache" '
    "but nothing reaches the bucket",
    "cache-not-shared": "every runner keeps its cache under its own runner/<short token>/ prefix, as with "
    "Shared = false, so a cache saved on one runner is not found on another",
    # GitLab's side: a proxy that fails after GitLab did the work (the run must reconcile, not repeat).
    "gitlab-lost-response": "GitLab performs a run's first commit and pipeline POST, then answers 502",
    # Faults the run must survive with the same verdicts (a real API server and its proxies do these).
    "watch-expired": "the Kubernetes API's watch history resets every 25 changes of the run's pods: watches "
    "get ERROR 410 events (and 410 when reopened from their last resourceVersion) and blank keep-alive lines",
    # A fault the run can retry its way past (--runnerconf-retry): an infrastructure end, not a conformance one.
    "runner-flaky-once": "the first attempt of each job that gets as far as waiting for its pod ends in a runner "
    "system failure there (the API server refused the connection); a retry of the job runs normally",
    "api-flaky": "every few Kubernetes list/watch requests answer 500, 503 or a truncated body; GitLab answers "
    "502 to every few reads and 429 with an HTTP-date Retry-After once",
}

ENV_VAR = "RUNNERCONF_LOCAL_FAULTS"
# How long scheduling-slow keeps a pod Pending: past the local profile's expect.capacity.schedule_within_s
# (10 s), well within its poll_timeout.
SLOW_SCHEDULING_S = 15
FAULT_POD_MTU = 1400  # dind-mtu-too-big: the pod interface's MTU
# The runner's poll_timeout under pod-pending-timeout: short, so that a full run under it takes minutes.
PENDING_POLL_TIMEOUT_S = 30


def parse_faults(names: Iterable[str] | str | None) -> frozenset[str]:
    """Validate fault names; an unknown name is a LocalConfigError listing the known ones."""
    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = names.split(",")
    chosen = frozenset(n.strip() for n in names if n.strip())
    unknown = sorted(chosen - FAULTS.keys())
    if unknown:
        raise LocalConfigError(
            f"unknown local-cluster fault {', '.join(map(repr, unknown))}; "
            f"known faults: {', '.join(sorted(FAULTS))}"
        )
    return chosen


def faults_from_env() -> frozenset[str]:
    return parse_faults(os.environ.get(ENV_VAR))
