"""PodDisruptionBudgets in the local cluster: the disruption controller's status and the Eviction API's verdict.

Kubernetes 1.32 is what is emulated:

- pkg/controller/disruption/disruption.go: a PDB with an integer minAvailable needs no controller of its pods
  (getExpectedPodCount: desiredHealthy = minAvailable, expectedPods = the matching pods); currentHealthy counts
  the matching pods that are Ready and not terminating (countHealthyPods); disruptionsAllowed is
  currentHealthy - desiredHealthy, never below 0. A percentage or a maxUnavailable needs the pods' controller
  (its scale); bare pods such as the runner's have none, so the controller fails to sync and allows nothing.
- pkg/registry/core/pod/storage/eviction.go: a pod that is Succeeded, Failed, Pending or already terminating is
  evicted without looking at budgets (canIgnorePDB); more than one matching budget is a 500; an unhealthy pod
  under the default unhealthyPodEvictionPolicy (IfHealthyBudget) may go when the budget is met anyway; else a
  budget that allows no disruption refuses with 429 TooManyRequests, "Cannot evict pod as it would violate the
  pod's disruption budget.", and the cause "The disruption budget NAME needs D healthy pods and has C currently"
  (checkAndDecrement).

Status is computed when asked (a read, an eviction) from the pods as they are then, rather than kept current by
a controller loop: the answers are the same, and nothing runs in the background.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_runnerconf.local.kstore import Invalid, StoreError

KIND = "PodDisruptionBudget"
REFUSED_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
MORE_THAN_ONE = (
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
)
CAUSE_TYPE = "DisruptionBudget"  # policyv1.DisruptionBudgetCause


class TooManyRequests(StoreError):
    """An eviction a budget refuses (429); `causes` go into the Status details, as the API server's do."""

    code = 429
    reason = "TooManyRequests"

    def __init__(self, message: str, causes: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.causes = causes


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector: matchLabels and matchExpressions; in policy/v1 an empty selector selects all pods
    of the namespace and a missing one none."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        present = key in labels
        held = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(op, False)
        if not held:
            return False
    return True


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and str(c.get("status")) == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def healthy(pod: dict[str, Any]) -> bool:
    """countHealthyPods: Ready and not terminating."""
    return not pod["metadata"].get("deletionTimestamp") and _ready(pod)


def status(pdb: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The status the disruption controller would write for PDB over the namespace's PODS."""
    spec = pdb.get("spec") or {}
    matching = [p for p in pods if selects(spec.get("selector"), (p["metadata"].get("labels") or {}))]
    current = sum(1 for p in matching if healthy(p))
    generation = pdb["metadata"].get("generation", 1)
    # metav1.Condition needs a time: the controller's first sync, taken here as the PDB's creation
    since = pdb["metadata"].get("creationTimestamp") or "1970-01-01T00:00:00Z"
    min_available = spec.get("minAvailable")
    if isinstance(min_available, int) and not isinstance(min_available, bool):
        desired, allowed = min_available, max(current - min_available, 0)
        condition = {
            "type": "DisruptionAllowed",
            "status": "True" if allowed > 0 else "False",
            "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
            "message": "",
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }
    else:  # a percentage or maxUnavailable: the controller needs the pods' controller, which bare pods lack
        desired, allowed = 0, 0
        condition = {
            "type": "DisruptionAllowed",
            "status": "False",
            "reason": "SyncFailed",
            "message": "found no controllers for pod",
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }
    return {
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": current,
        "desiredHealthy": desired,
        "expectedPods": len(matching),
        "conditions": [condition],
    }


def with_status(pdb: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    return {**pdb, "status": status(pdb, pods)}


def check_eviction(pod: dict[str, Any], pdbs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
    """Raise what the Eviction API answers when the budgets over POD (in its namespace) refuse its eviction."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
        return  # canIgnorePDB
    labels = pod["metadata"].get("labels") or {}
    covering = [b for b in pdbs if selects((b.get("spec") or {}).get("selector"), labels)]
    if not covering:
        return
    if len(covering) > 1:
        raise StoreError(MORE_THAN_ONE)
    pdb = covering[0]
    now = status(pdb, pods)
    policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
    if not healthy(pod) and (policy == "AlwaysAllow" or (now["currentHealthy"] >= now["desiredHealthy"] > 0)):
        return  # an unhealthy pod may go while the budget is met without it
    if now["disruptionsAllowed"] == 0:
        name = pdb["metadata"]["name"]
        cause = (
            f"The disruption budget {name} needs {now['desiredHealthy']} healthy pods and has "
            f"{now['currentHealthy']} currently"
        )
        raise TooManyRequests(REFUSED_MESSAGE, [{"reason": CAUSE_TYPE, "message": cause}])


def admit(kind: str, obj: dict[str, Any]) -> None:
    """The store's admission hook: a PDB gets its generation and ValidatePodDisruptionBudgetSpec's main rule
    (pkg/apis/policy/validation; the API server prints the Go spec value where this prints its JSON)."""
    if kind != KIND:
        return
    spec = obj.get("spec") or {}
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        name = obj["metadata"].get("name", "")
        raise Invalid(
            f'PodDisruptionBudget.policy "{name}" is invalid: spec: Invalid value: {json.dumps(spec)}: '
            "minAvailable and maxUnavailable cannot be both set"
        )
    obj["metadata"].setdefault("generation", 1)
