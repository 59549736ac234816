"""The API server's graceful pod deletion and the garbage collector that removes what a pod owned.

DELETE marks the pod (deletionTimestamp, deletionGracePeriodSeconds) and returns at once; the node then
stops the containers within the grace period, and only after that does the object go (the watch sees
DELETED). Objects owner-referenced to the pod (the runner's registry Secret, its PodDisruptionBudget) go with it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from pytest_runnerconf.local.kstore import NotFound
from pytest_runnerconf.local.podstatus import rfc3339


class PodDeletion:
    """The store's on_delete hook for pods; `node` is the kubelet that runs them."""

    def __init__(self, store: Any, node: Any) -> None:
        self.store = store
        self.node = node

    def delete(self, namespace: str, name: str, grace_s: float) -> None:
        ts = rfc3339()
        again = []

        def mark(obj: dict[str, Any]) -> None:
            if obj["metadata"].get("deletionTimestamp"):
                again.append(True)  # a second DELETE of a terminating pod changes nothing here
                return
            obj["metadata"]["deletionTimestamp"] = ts
            obj["metadata"]["deletionGracePeriodSeconds"] = int(grace_s)

        try:
            self.store.update("Pod", namespace, name, mark)
        except NotFound:
            return  # already gone
        if again:
            return
        threading.Thread(
            target=self._finish, args=(namespace, name, grace_s), daemon=True, name=f"delete-{name}"
        ).start()

    def _finish(self, namespace: str, name: str, grace_s: float) -> None:
        """The node terminates the pod, then the object is removed and its dependents collected."""
        # Each step runs whatever the one before it raised (the stack runs its callbacks last-in first): a pod
        # left in the API after its deletion was asked for is a stray for every later run, so the object goes
        # even when the node's clean-up failed.
        with contextlib.ExitStack() as then:
            then.callback(self._remove, namespace, name)
            then.callback(collect_dependents, self.store, namespace, "Pod", name)
            then.callback(self.node.forget, namespace, name)
            self.node.terminate(namespace, name, grace_s)

    def _remove(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            self.store.delete("Pod", namespace, name)


def collect_dependents(store: Any, namespace: str, kind: str, name: str) -> None:
    """The garbage collector (propagation Background): objects whose ownerReferences name the owner go."""
    for dependent_kind in ("Secret", "ConfigMap", "PodDisruptionBudget"):
        items, _ = store.list(dependent_kind, namespace)
        for obj in items:
            owners = obj.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("kind") == kind and o.get("name") == name for o in owners):
                with contextlib.suppress(NotFound):
                    store.delete(dependent_kind, namespace, obj["metadata"]["name"])
