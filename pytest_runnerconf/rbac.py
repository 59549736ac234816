"""The least-privilege Role a run needs in the job namespace, generated from what the selected checks read.

Every run lists and watches the job pods and lists their events; Secrets are listed only when a selected
check declares ``reads=("secrets",)``. Each verb carries the sentence that says what it is for, and the Secret
rule says what RBAC cannot express: the run asks for metadata only, but a ``list`` grant on Secrets lets the
credential read every Secret's data in the namespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ROLE_NAME = "runnerconf"


@dataclass(frozen=True)
class Rule:
    resource: str
    verbs: tuple[tuple[str, str], ...]  # (verb, what the run uses it for)
    caution: str = ""
    # A rule for one object elsewhere (the runner's ConfigMap): its namespace (None: the job namespace) and
    # resourceNames, so the grant reaches that object only.
    namespace: str | None = None
    names: tuple[str, ...] = ()

    def grants(self) -> set[str]:
        """`verb resource` strings (the local cluster's RBAC takes its grants in this form)."""
        return {f"{verb} {self.resource}" for verb, _why in self.verbs}


POD_RULE = Rule(
    "pods",
    (
        (
            "list",
            "preflight (the namespace's runner pods can be seen), stray runner pods older than their "
            "timeout, and the state after a watch window expired",
        ),
        ("watch", "the one pod watch that times every container's start and end and the pod's deletion"),
    ),
)
EVENT_RULE = Rule(
    "events",
    (("list", "each job pod's events, quoted when a pod stays Pending and kept in the evidence"),),
)
SECRET_RULE = Rule(
    "secrets",
    (
        (
            "list",
            "RC-CLN-005: the runner's per-job registry Secret is deleted with its pod; asked as "
            "PartialObjectMetadataList (names and owners, never data) with fieldSelector "
            "type=kubernetes.io/dockercfg, once before the pipeline and once after the last pod is gone",
        ),
        (
            "watch",
            "the one Secret watch (metadata only, same selector) that times each per-job Secret's creation "
            "and deletion",
        ),
    ),
    caution="RBAC cannot limit a grant to metadata: `list`/`watch` on secrets let this credential read the data of "
    "every Secret in the namespace; leave this rule out and RC-CLN-005 is skipped with that reason",
)


EVICTION_RULE = Rule(
    "pods/eviction",
    (
        (
            "create",
            "RC-DIS-* (opt-in, -m disruptive): the run evicts the pod of its own disruption probe job once "
            "the probe's record is in the trace, through the Eviction API as a node drain does",
        ),
    ),
    caution="the one write the run makes: an Eviction of its own probe pod; asked only when a disruptive "
    "check is selected",
)


def configmap_rule(namespace: str, name: str) -> Rule:
    """`get` on the one ConfigMap a profile's runner_config names (asked only then)."""
    return Rule(
        "configmaps",
        (
            (
                "get",
                f"runner_config: the runner's config.toml in ConfigMap {namespace}/{name}, read once before the "
                "run to derive the expectations (the run keeps only the settings it derives from)",
            ),
        ),
        caution="the ConfigMap holds the runner's config.toml, whose token (when it is there) this credential can "
        "then read; the Helm chart keeps the token in a Secret instead",
        namespace=namespace,
        names=(name,),
    )


def rules(reads: Iterable[str], configmap: tuple[str, str] | None = None) -> list[Rule]:
    """The rules a run of checks reading READS (besides pods and events) needs; CONFIGMAP (namespace, name)
    is the runner config to read, when the profile's runner_config names one."""
    chosen = [POD_RULE, EVENT_RULE]
    wanted = set(reads)
    if "secrets" in wanted:
        chosen.append(SECRET_RULE)
    if configmap is not None:
        chosen.append(configmap_rule(*configmap))
    if EVICTION_RULE.resource in wanted:
        chosen.append(EVICTION_RULE)
    return chosen


def grants(reads: Iterable[str], configmap: tuple[str, str] | None = None) -> frozenset[str]:
    return frozenset(g for rule in rules(reads, configmap) for g in rule.grants())


def _rule_lines(rule: Rule) -> list[str]:
    lines = [f"  # {verb} {rule.resource}: {why}" for verb, why in rule.verbs]
    if rule.caution:
        lines.append(f"  # CAUTION: {rule.caution}")
    verbs = ", ".join(verb for verb, _why in rule.verbs)
    lines += ['  - apiGroups: [""]', f"    resources: [{rule.resource}]"]
    if rule.names:
        lines.append(f"    resourceNames: [{', '.join(rule.names)}]")
    return [*lines, f"    verbs: [{verbs}]"]


def manifest(
    namespace: str,
    reads: Iterable[str],
    *,
    checks: int,
    service_account: str = ROLE_NAME,
    configmap: tuple[str, str] | None = None,
) -> str:
    """A Role and RoleBinding (YAML, commented verb by verb) for CHECKS checks that read READS; with
    CONFIGMAP in another namespace, a second Role and RoleBinding there for its one `get`."""
    chosen = rules(reads, configmap)
    here = [r for r in chosen if r.namespace in (None, namespace)]
    elsewhere = [r for r in chosen if r.namespace not in (None, namespace)]
    writes = (
        "every other write: the run creates nothing but the Eviction of its disruption probe's pod."
        if EVICTION_RULE in chosen
        else "every write: the run never creates, changes or deletes anything in the cluster."
    )
    lines = [
        f"# Least privilege for runnerconf in namespace {namespace}, generated by `runnerconf rbac` for the "
        f"{checks} selected checks.",
        "# Not granted on purpose: get on the Namespace object (the run tries it and goes on when refused),",
        f"# and {writes}",
        "apiVersion: rbac.authorization.k8s.io/v1",
        "kind: Role",
        "metadata:",
        f"  name: {ROLE_NAME}",
        f"  namespace: {namespace}",
        "rules:",
    ]
    for rule in here:
        lines += _rule_lines(rule)
    lines += _binding(namespace, namespace, service_account)
    for rule in elsewhere:
        assert rule.namespace is not None
        lines += [
            "---",
            f"# The runner's config in namespace {rule.namespace} (the profile's runner_config): one object, one verb.",
            "apiVersion: rbac.authorization.k8s.io/v1",
            "kind: Role",
            "metadata:",
            f"  name: {ROLE_NAME}-runner-config",
            f"  namespace: {rule.namespace}",
            "rules:",
            *_rule_lines(rule),
            *_binding(rule.namespace, namespace, service_account, f"{ROLE_NAME}-runner-config"),
        ]
    return "\n".join(lines) + "\n"


def _binding(where: str, account_ns: str, service_account: str, role: str = ROLE_NAME) -> list[str]:
    return [
        "---",
        "apiVersion: rbac.authorization.k8s.io/v1",
        "kind: RoleBinding",
        "metadata:",
        f"  name: {role}",
        f"  namespace: {where}",
        "roleRef:",
        "  apiGroup: rbac.authorization.k8s.io",
        "  kind: Role",
        f"  name: {role}",
        "subjects:  # the identity of the profile's kubeconfig and kube_context",
        "  - kind: ServiceAccount",
        f"    name: {service_account}",
        f"    namespace: {account_ns}",
    ]
