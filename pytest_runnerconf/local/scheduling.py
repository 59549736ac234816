"""The scheduler's answer for a pod no node can take: it stays Pending, with FailedScheduling events.

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


def insufficient_cpu(nodes: int = 1) -> str:
    return (
        f"0/{nodes} nodes are available: {nodes} Insufficient cpu. preemption: 0/{nodes} nodes are available: "
        f"{nodes} No preemption victims found for incoming pod."
    )


def keep_unschedulable(store: Any, pod: dict[str, Any], stop: threading.Event, nodes: int = 1) -> None:
    """Mark POD unschedulable and say so again every RETRY_S until it is deleted or STOP is set."""
    meta = pod["metadata"]
    ns, name = meta["namespace"], meta["name"]
    message = insufficient_cpu(nodes)
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
