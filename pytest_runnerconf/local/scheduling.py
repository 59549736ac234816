"""The scheduler: the one emulated Node (labels, taints) and the answer for a pod no node can take: it stays
Pending, with FailedScheduling events.

What kube-scheduler (1.27 and later) writes when every node lacks the CPU the pod requests: the condition
PodScheduled=False (reason Unschedulable) and a Warning event from default-scheduler, repeated while it keeps
retrying, both saying "0/N nodes are available: N Insufficient cpu. preemption: 0/N nodes are available: N No
preemption victims found for incoming pod." (wording as in public kubectl describe output, e.g.
NVIDIA/k8s-device-plugin#430 and harvester/harvester#3136).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from pytest_runnerconf.local.kstore import NotFound, StoreError
from pytest_runnerconf.local.podstatus import rfc3339

RETRY_S = 10.0  # how often the scheduler retries an unschedulable pod (and says so again)

NODE_NAME = "runnerconf-local"
# The emulated node: the well-known labels a kubelet sets, one pool label and one taint, so that a job pod is
# scheduled only with config.toml's node_selector and node_tolerations (fixtures/local/config.toml).
NODE_LABELS = {
    "kubernetes.io/hostname": NODE_NAME,
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": "amd64",
    "runnerconf.test/pool": "ci-jobs",
}
NODE_TAINTS = ({"key": "runnerconf.test/dedicated", "value": "ci", "effect": "NoSchedule"},)


def node_object() -> dict[str, Any]:
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": NODE_NAME, "labels": dict(NODE_LABELS)},
        "spec": {"taints": [dict(t) for t in NODE_TAINTS]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    }


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """v1 Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if (toleration.get("operator") or "Equal") == "Exists":
        return True
    return bool(toleration.get("value", "") == taint.get("value", ""))


def _expression_holds(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), list(expr.get("values") or [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False  # Gt/Lt are not used by runner configs here


def unschedulable(pod: dict[str, Any], node: dict[str, Any]) -> str | None:
    """Why NODE cannot take POD, in kube-scheduler's words; None when it can."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    reasons = []
    selector = spec.get("nodeSelector") or {}
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    terms_ok = not required or any(
        all(_expression_holds(e, labels) for e in term.get("matchExpressions") or []) for term in required
    )
    if any(labels.get(k) != v for k, v in selector.items()) or not terms_ok:
        reasons.append("1 node(s) didn't match Pod's node affinity/selector")
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
            _tolerates(t, taint) for t in tolerations
        ):
            reasons.append(f"1 node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}")
            break
    if not reasons:
        return None
    # kube-scheduler 1.27+: the reasons, then the preemption verdict (nothing can be preempted for these).
    return (
        f"0/1 nodes are available: {', '.join(sorted(reasons))}. preemption: 0/1 nodes are available: "
        "1 Preemption is not helpful for scheduling."
    )


def insufficient_cpu(nodes: int = 1) -> str:
    return (
        f"0/{nodes} nodes are available: {nodes} Insufficient cpu. preemption: 0/{nodes} nodes are available: "
        f"{nodes} No preemption victims found for incoming pod."
    )


def keep_unschedulable(
    store: Any, pod: dict[str, Any], stop: threading.Event, nodes: int = 1, message: str | None = None
) -> None:
    """Mark POD unschedulable (MESSAGE, default: insufficient CPU) and say so again every RETRY_S until it is
    deleted or STOP is set."""
    meta = pod["metadata"]
    ns, name = meta["namespace"], meta["name"]
    message = message or insufficient_cpu(nodes)
    event_name = f"{name}.{time.time_ns():016x}"
    first = rfc3339()
    count = 0

    def condition(obj: dict[str, Any]) -> None:
        status = obj.setdefault("status", {})
        status["phase"] = "Pending"
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": first,
                "reason": "Unschedulable",
                "message": message,
            }
        ]

    try:
        store.update("Pod", ns, name, condition)
    except NotFound:
        return
    while not stop.is_set():
        count += 1
        now = rfc3339()
        with contextlib.suppress(StoreError):
            if count == 1:
                store.create(_event(pod, event_name, message, first))
            else:
                # One event object, its count and lastTimestamp bumped, as the event recorder aggregates.
                def bump(ev: dict[str, Any], n: int = count, at: str = now) -> None:
                    ev["count"], ev["lastTimestamp"] = n, at

                store.update("Event", ns, event_name, bump)
        if stop.wait(RETRY_S):
            return
        try:
            current = store.get("Pod", ns, name)
        except NotFound:
            return
        if current["metadata"].get("deletionTimestamp"):
            return


def _event(pod: dict[str, Any], name: str, message: str, ts: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
        },
        "reason": "FailedScheduling",
        "message": message,
        "type": "Warning",
        "source": {"component": "default-scheduler"},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "eventTime": None,
        "reportingComponent": "default-scheduler",
        "reportingInstance": "",
    }
