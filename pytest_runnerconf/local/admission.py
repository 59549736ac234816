"""The API server's create path for pods: defaulting, validation and the default admission plugins.

What a real API server (1.32) adds to or refuses in a pod before storing it, so that a client reading the
pod back (the plugin, kubectl) sees what it would see on a cluster (kubectl-fidelity.md §10):
  - defaulting (`SetDefaults_PodSpec`/`_Container`): dnsPolicy, restartPolicy, securityContext,
    terminationGracePeriodSeconds, schedulerName, enableServiceLinks, imagePullPolicy by tag,
    terminationMessagePath/Policy, resources, port protocols, requests from limits, volume modes;
  - admission: ServiceAccount (serviceAccountName `default`), Priority, DefaultTolerationSeconds;
  - `PrepareForCreate`: status replaced by {phase: Pending, qosClass};
  - validation of what the runner's configuration can get wrong, with the API server's messages.
The service-account token volume (kube-api-access-*) is not added: jobs cannot reach the loopback API.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pytest_runnerconf.local import quantity
from pytest_runnerconf.local.kstore import Forbidden, Invalid

DEFAULT_GRACE_S = 30
DEFAULT_TOLERATION_S = 300
# The built-in classes, and the one PriorityClass the local cluster holds for job pods (config.toml's
# priority_class_name).
PRIORITY_CLASSES = {
    "system-node-critical": 2000001000,
    "system-cluster-critical": 2000000000,
    "runnerconf-ci-jobs": 1000,
}
# RuntimeClass objects the local cluster holds: runc, the handler Docker runs every container with.
RUNTIME_CLASSES = frozenset({"runc"})
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_VOLUME_SOURCES = (
    "emptyDir",
    "hostPath",
    "secret",
    "configMap",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
    "csi",
    "nfs",
    "ephemeral",
)


def admit(kind: str, obj: dict[str, Any]) -> None:
    """The store's admission hook: pods are defaulted, admitted and validated; other kinds pass."""
    if kind != "Pod":
        return
    default_pod(obj)
    admit_priority(obj)
    validate_pod(obj)


# ---------------------------------------------------------------- defaulting


def pull_policy_for(image: str) -> str:
    """Always for :latest or no tag (and no digest), else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_container(c: dict[str, Any]) -> None:
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = pull_policy_for(str(c.get("image", "")))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    resources = c.setdefault("resources", {}) or {}
    c["resources"] = resources
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for key, value in limits.items():
            requests.setdefault(key, value)
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")


def _default_volume(v: dict[str, Any]) -> None:
    if not any(src in v for src in _VOLUME_SOURCES):
        v["emptyDir"] = {}
    for src in ("secret", "configMap"):
        if src in v:
            v[src].setdefault("defaultMode", 420)


def default_pod(pod: dict[str, Any]) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    spec.setdefault("enableServiceLinks", True)
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _default_container(c)
    for v in spec.get("volumes") or []:
        _default_volume(v)
    # ServiceAccount admission; the deprecated serviceAccount field mirrors it.
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
    spec["serviceAccount"] = spec["serviceAccountName"]
    # DefaultTolerationSeconds admission
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": DEFAULT_TOLERATION_S,
                }
            )
    # PrepareForCreate: a new pod's status is the API server's, whatever the client sent.
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}


def admit_priority(pod: dict[str, Any]) -> None:
    """Priority admission: the class's value, or 0 without a class."""
    spec = pod["spec"]
    name = spec.get("priorityClassName")
    if not name:
        spec["priority"] = 0
    elif name in PRIORITY_CLASSES:
        spec["priority"] = PRIORITY_CLASSES[name]
    else:
        raise Forbidden(
            f'pods "{pod["metadata"]["name"]}" is forbidden: no PriorityClass with name {name} was found'
        )
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    runtime = spec.get("runtimeClassName")
    if runtime and runtime not in RUNTIME_CLASSES:
        # The RuntimeClass admission plugin's refusal.
        raise Forbidden(
            f'pods "{pod["metadata"]["name"]}" is forbidden: pod rejected: RuntimeClass "{runtime}" not found'
        )


def qos_class(spec: dict[str, Any]) -> str:
    """The API server computes qosClass: Guaranteed, Burstable or BestEffort."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    res = [c.get("resources") or {} for c in containers]
    if not any(r.get("limits") or r.get("requests") for r in res):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k)) == (r.get("limits") or {}).get(k)
        for r in res
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


# ---------------------------------------------------------------- validation


def validate_pod(pod: dict[str, Any]) -> None:
    """The checks of ValidatePodCreate that a runner's config can trip, with the API server's wording."""
    spec = pod["spec"]
    errors: list[str] = []
    volumes = [v.get("name", "") for v in spec.get("volumes") or []]
    seen: set[str] = set()
    for i, name in enumerate(volumes):
        if name in seen:
            errors.append(f'spec.volumes[{i}].name: Duplicate value: "{name}"')
        seen.add(name)
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            errors += _container_errors(f"spec.{group}[{i}]", c, set(volumes), names)
    for i, alias in enumerate(spec.get("hostAliases") or []):
        try:
            ipaddress.ip_address(str(alias.get("ip", "")))
        except ValueError:
            errors.append(
                f'spec.hostAliases[{i}].ip: Invalid value: "{alias.get("ip", "")}": must be a valid IP address'
            )
    if errors:
        detail = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        raise Invalid(f'Pod "{pod["metadata"]["name"]}" is invalid: {detail}')


def _container_errors(path: str, c: dict[str, Any], volumes: set[str], names: set[str]) -> list[str]:
    errors = []
    name = str(c.get("name", ""))
    if not _LABEL_RE.match(name) or len(name) > 63:
        errors.append(f'{path}.name: Invalid value: "{name}": {_LABEL_MSG}')
    elif name in names:
        errors.append(f'{path}.name: Duplicate value: "{name}"')
    names.add(name)
    for j, mount in enumerate(c.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            errors.append(f'{path}.volumeMounts[{j}].name: Not found: "{mount.get("name")}"')
    res = c.get("resources") or {}
    for kind in ("cpu", "memory"):
        req = (res.get("requests") or {}).get(kind)
        lim = (res.get("limits") or {}).get(kind)
        if req and lim and quantity.parse(req).value > quantity.parse(lim).value:
            errors.append(
                f'{path}.resources.requests: Invalid value: "{req}": must be less than or equal to {kind} limit of {lim}'
            )
    return errors


# ---------------------------------------------------------------- ResourceQuota (the quota-exceeded fault)

FULL_QUOTA = "runnerconf-jobs"  # the namespace's pod-count quota under quota-exceeded
FULL_QUOTA_PODS = 10


def refuse_over_quota(pod: dict[str, Any], quota: str = FULL_QUOTA, pods: int = FULL_QUOTA_PODS) -> Forbidden:
    """The ResourceQuota admission plugin's refusal for a namespace whose pod quota is used up.

    Wording of plugin/pkg/admission/resourcequota (`exceeded quota: %s, requested: %s, used: %s, limited:
    %s`, resources as sorted name=quantity lists) inside the API server's Forbidden status, e.g. public
    kubectl output `pods "test-pod" is forbidden: exceeded quota: money-claims-quota, requested:
    requests.cpu=20,requests.memory=60Gi, used: ..., limited: ...` (hmcts/cnp-flux-config#2122).
    """
    name = pod["metadata"].get("name") or pod["metadata"].get("generateName", "")
    return Forbidden(
        f'pods "{name}" is forbidden: exceeded quota: {quota}, requested: pods=1, used: pods={pods}, '
        f"limited: pods={pods}"
    )
