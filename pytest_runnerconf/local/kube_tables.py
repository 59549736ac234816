"""Server-side Table printing (meta.k8s.io/v1 Table), as the API server's printers fill the columns kubectl shows.

The columns and cell logic follow Kubernetes 1.32 `pkg/printers/internalversion/printers.go` (printPod,
printEvent, printConfigMap, printSecret, printNamespace, printPodDisruptionBudget) and apimachinery's `duration.HumanDuration`; the
request decides whether each row carries its object (includeObject) as PartialObjectMetadata, in full or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TABLE_API_VERSION = "meta.k8s.io/v1"


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    format: str = ""
    priority: int = 0  # 1 = shown only with -o wide
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


Cells = Callable[[dict[str, Any], float], list[Any]]


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    cells: Cells


# ---------------------------------------------------------------- durations and times


def human_duration(seconds: float) -> str:
    """apimachinery duration.HumanDuration: '75s', '2m5s', '45m', '3h20m', '30h', '3d4h', '20d', '2y'."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 3 * 60:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = (s % 3600) // 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    text = value.rstrip("Z")
    head, _, frac = text.partition(".")
    try:
        base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return base + (float("0." + frac) if frac else 0.0)


def since(value: str | None, now: float) -> str:
    """translateTimestampSince: '<unknown>' for a zero time."""
    ts = parse_time(value)
    return "<unknown>" if ts is None else human_duration(now - ts)


# ---------------------------------------------------------------- pods


def pod_reason(pod: dict[str, Any]) -> str:
    """The STATUS column: printPod's reason algorithm, ported step by step."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    reason = status.get("reason") or status.get("phase") or ""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    init_specs = spec.get("initContainers") or []
    sidecars = {c.get("name") for c in init_specs if c.get("restartPolicy") == "Always"}
    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        term = state.get("terminated")
        waiting = state.get("waiting")
        if term is not None and term.get("exitCode") == 0:
            continue
        if cs.get("name") in sidecars and cs.get("started"):
            continue
        if term is not None:
            if term.get("reason"):
                reason = f"Init:{term['reason']}"
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    initialized = any(
        c.get("type") == "Initialized" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if not initializing or initialized:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                reason = (
                    f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
                )
            elif cs.get("ready") and "running" in state:
                has_running = True
        if reason == "Completed" and has_running:
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            reason = "Running" if ready else "NotReady"
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason


def _pod_cells(pod: dict[str, Any], now: float) -> list[Any]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready") and "running" in (s.get("state") or {}))
    total = len(spec.get("containers") or [])
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    gates = spec.get("readinessGates") or []
    return [
        meta.get("name", ""),
        f"{ready}/{total}",
        pod_reason(pod),
        str(restarts),
        since(meta.get("creationTimestamp"), now),
        ips[0]["ip"] if ips else "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"0/{len(gates)}" if gates else "<none>",
    ]


_POD = Printer(
    (
        Column("Name", format="name", description="Name must be unique within a namespace."),
        Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
        Column("Status", description="The aggregate status of the containers in this pod."),
        Column("Restarts", description="The number of times the containers in this pod have been restarted."),
        Column("Age", description="CreationTimestamp is a timestamp representing the server time."),
        Column("IP", priority=1, description="IP address allocated to the pod."),
        Column("Node", priority=1, description="Name of the Node this pod runs on."),
        Column("Nominated Node", priority=1, description="Node the scheduler nominated for this pod."),
        Column("Readiness Gates", priority=1, description="Readiness gates of this pod."),
    ),
    _pod_cells,
)


# ---------------------------------------------------------------- events


def _event_cells(ev: dict[str, Any], now: float) -> list[Any]:
    involved = ev.get("involvedObject") or {}
    source = ev.get("source") or {}
    first = ev.get("firstTimestamp") or ev.get("eventTime")
    series = ev.get("series") or {}
    last = series.get("lastObservedTime") or ev.get("lastTimestamp") or first
    component = source.get("component") or ev.get("reportingComponent") or ""
    host = source.get("host") or ev.get("reportingInstance") or ""
    return [
        since(last, now),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        str(ev.get("message", "")).strip(),
        since(first, now),
        int(series.get("count") or ev.get("count") or 1),
        (ev.get("metadata") or {}).get("name", ""),
    ]


_EVENT = Printer(
    (
        Column("Last Seen", description="Time of the last occurrence."),
        Column("Type", description="Type of this event (Normal, Warning)."),
        Column("Reason", description="Why the action was taken."),
        Column("Object", description="The object this event is about."),
        Column("Subobject", priority=1, description="The part of the object, e.g. a container."),
        Column("Source", priority=1, description="The component reporting this event."),
        Column("Message", description="A human-readable description of the status of this operation."),
        Column("First Seen", priority=1, description="Time of the first occurrence."),
        Column("Count", type="integer", priority=1, description="The number of times this event occurred."),
        Column("Name", format="name", priority=1, description="Name of the event."),
    ),
    _event_cells,
)


# ---------------------------------------------------------------- the rest


def _name_age(obj: dict[str, Any], now: float) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("name", ""), since(meta.get("creationTimestamp"), now)


def _configmap_cells(obj: dict[str, Any], now: float) -> list[Any]:
    name, age = _name_age(obj, now)
    return [name, len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age]


def _secret_cells(obj: dict[str, Any], now: float) -> list[Any]:
    name, age = _name_age(obj, now)
    return [name, obj.get("type", ""), len(obj.get("data") or {}), age]


def _pdb_cells(obj: dict[str, Any], now: float) -> list[Any]:
    """printPodDisruptionBudget: N/A for the bound that is not set."""
    name, age = _name_age(obj, now)
    spec = obj.get("spec") or {}
    shown = ["N/A" if spec.get(k) is None else str(spec[k]) for k in ("minAvailable", "maxUnavailable")]
    return [name, *shown, int((obj.get("status") or {}).get("disruptionsAllowed") or 0), age]


def _namespace_cells(obj: dict[str, Any], now: float) -> list[Any]:
    name, age = _name_age(obj, now)
    return [name, (obj.get("status") or {}).get("phase") or "Active", age]


_NAME_COL = Column("Name", format="name", description="Name must be unique within a namespace.")
_AGE_COL = Column("Age", description="CreationTimestamp is a timestamp representing the server time.")

PRINTERS: dict[str, Printer] = {
    "Pod": _POD,
    "Event": _EVENT,
    "ConfigMap": Printer((_NAME_COL, Column("Data", type="integer"), _AGE_COL), _configmap_cells),
    "Secret": Printer((_NAME_COL, Column("Type"), Column("Data", type="integer"), _AGE_COL), _secret_cells),
    "Namespace": Printer((_NAME_COL, Column("Status"), _AGE_COL), _namespace_cells),
    "PodDisruptionBudget": Printer(
        (
            _NAME_COL,
            Column(
                "Min Available",
                description='The minimum number of pods that must be available simultaneously. This can be either an integer or a string specifying a percentage, e.g. "28%".',
            ),
            Column(
                "Max Unavailable",
                description='The maximum number of pods that may be unavailable simultaneously. This can be either an integer or a string specifying a percentage, e.g. "28%".',
            ),
            Column(
                "Allowed Disruptions",
                type="integer",
                description="The number of disruptions that are currently allowed.",
            ),
            _AGE_COL,
        ),
        _pdb_cells,
    ),
}


# ---------------------------------------------------------------- tables


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """PartialObjectMetadata: the object's metadata alone (what a metadata-only client or a row gets)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": TABLE_API_VERSION,
        "metadata": obj.get("metadata") or {},
    }


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return partial_metadata(obj)


def table(
    kind: str,
    objects: list[dict[str, Any]],
    resource_version: str,
    *,
    include_object: str = "Metadata",
    headers: bool = True,
    now: float | None = None,
) -> dict[str, Any]:
    """A Table of `objects` (of one kind); without headers, as the later events of a watch carry it."""
    printer = PRINTERS[kind]
    now = time.time() if now is None else now
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, now), "object": _row_object(obj, include_object)}
        phase = (obj.get("status") or {}).get("phase")
        if kind == "Pod" and phase in ("Succeeded", "Failed"):
            message = "The pod has completed successfully." if phase == "Succeeded" else "The pod failed."
            row["conditions"] = [{"type": "Completed", "status": "True", "reason": phase, "message": message}]
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": TABLE_API_VERSION,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [c.definition() for c in printer.columns] if headers else None,
        "rows": rows,
    }
