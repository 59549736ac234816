"""Benchmark: how fast the local cluster starts a job pod and answers an exec.

Runs a few single-job pipelines whose job waits to be released and measures, on this machine's clock:
  - pod start: the pod's ADDED watch event -> the event where it is Running with build Ready;
  - exec: `kubectl exec <pod> -c build -- true` (the real binary, warm discovery cache) and the Python client's
    WebSocket exec of the same command, each repeated.
Usage (under the cluster lock; it reuses a running local cluster or starts one):
    .venv/bin/python benchmarks/pod_latency.py [pipelines] [execs-per-pod]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client, config, watch  # noqa: E402
from kubernetes.stream import stream  # noqa: E402

from pytest_runnerconf.local.cluster import ensure_running  # noqa: E402
from tests.local.pipelines import Cluster  # noqa: E402

JOB = "latency"
PIPELINE = f"""
stages: [test]
{JOB}:
  image: alpine:3.20
  tags: [runnerconf-local]
  script:
    - i=0; until [ -f /builds/release ]; do i=$((i+1)); [ $i -lt 1200 ] || exit 9; sleep 0.1; done
"""


def _summary(name: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[max(0, round(0.9 * len(values)) - 1)]
    return f"{name}: n={len(values)} median {statistics.median(values) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"


def one_pipeline(cluster: Cluster, kubectl: list[str], env: dict[str, str], execs: int) -> dict[str, Any]:
    ns = cluster.info.namespace
    seen: dict[str, float] = {}
    pod_name: dict[str, str] = {}
    stop = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        rv = cluster.core.list_namespaced_pod(ns).metadata.resource_version
        while not stop.is_set():
            for ev in w.stream(cluster.core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=2):
                pod = ev["object"]
                rv = pod.metadata.resource_version
                if (pod.metadata.annotations or {}).get("job.runner.gitlab.com/name") != JOB:
                    continue
                now = time.monotonic()
                if ev["type"] == "ADDED":
                    seen.setdefault("added", now)
                    pod_name["name"] = pod.metadata.name
                ready = any(s.name == "build" and s.ready for s in pod.status.container_statuses or [])
                if pod.status.phase == "Running" and ready:
                    seen.setdefault("ready", now)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    done: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: done.update(cluster.run(PIPELINE, timeout=240)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while "ready" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    name = pod_name["name"]
    kubectl_times, client_times = [], []
    # stream() patches its ApiClient's request method while it runs: never share one with the watch thread.
    exec_api = client.CoreV1Api(config.new_client_from_config(config_file=cluster.info.kubeconfig))
    for _ in range(execs):
        t0 = time.monotonic()
        proc = subprocess.run(
            [*kubectl, "exec", name, "-c", "build", "--", "true"], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(f"kubectl exec failed ({proc.returncode}): {proc.stderr}")
        kubectl_times.append(time.monotonic() - t0)
        t0 = time.monotonic()
        stream(
            exec_api.connect_get_namespaced_pod_exec,
            name,
            ns,
            container="build",
            command=["true"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
        )
        client_times.append(time.monotonic() - t0)
    subprocess.run(
        [*kubectl, "exec", name, "-c", "build", "--", "touch", "/builds/release"], env=env, check=True
    )
    runner.join(timeout=240)
    stop.set()
    return {"start": seen["ready"] - seen["added"], "kubectl": kubectl_times, "client": client_times}


def main() -> None:
    pipelines = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    execs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    info, stop = ensure_running(log=lambda line: print(line, file=sys.stderr))
    try:
        cluster = Cluster(info)
        binary = shutil.which("kubectl")
        if binary is None:
            raise SystemExit("no kubectl on PATH")
        home = tempfile.mkdtemp()
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "KUBECONFIG": info.kubeconfig}
        subprocess.run([binary, "get", "pods"], env=env, check=True, capture_output=True)  # warm the cache
        results = [one_pipeline(cluster, [binary], env, execs) for _ in range(pipelines)]
        print(_summary("pod start (ADDED -> Running, build Ready)", [r["start"] for r in results]))
        print(_summary("kubectl exec -- true", [t for r in results for t in r["kubectl"]]))
        print(_summary("python client exec (wss)", [t for r in results for t in r["client"]]))
    finally:
        if stop is not None:
            stop()


if __name__ == "__main__":
    main()
