"""The emulated Kubernetes-executor runner: one job -> one pod, stages in the real order, cleanup."""

from __future__ import annotations

import io
import shlex
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pytest_runnerconf.local import quantity
from pytest_runnerconf.local.errors import LocalConfigError
from pytest_runnerconf.local.faults import ENV_VAR as FAULTS_ENV_VAR
from pytest_runnerconf.local.faults import parse_faults
from pytest_runnerconf.local.kstore import NotFound
from pytest_runnerconf.local.model import JobPayload, JobSink
from pytest_runnerconf.local.pods import DockerPods, ImageChoice
from pytest_runnerconf.local.podspec import PodPlan, PreparationError, build_pod, go_duration
from pytest_runnerconf.local.runner_config import RunnerConfig, short_token
from pytest_runnerconf.local.tracewriter import GREEN, RED, RESET, TraceWriter

BEHAVIOUR_VERSION = "18.11.4"
PREPARATION_RETRIES = 3
PREPARATION_RETRY_DELAY_S = 3.0
# How long after a script exits 137 to wait for the cgroup OOM notice before calling it a plain kill.
OOM_NOTICE_WAIT_S = 3.0
SLOW_CLEANUP_DELAY_S = 90.0


class JobAborted(Exception):
    """The job was cancelled or ran out of time; the message is the runner's."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class StageFailed(Exception):
    def __init__(self, message: str, *, system: bool) -> None:
        super().__init__(message)
        self.system = system


@dataclass
class RunningJob:
    payload: JobPayload
    faults: frozenset[str]
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float = 0.0
    pod: dict[str, Any] | None = None  # the pod object once created, so cleanup happens whatever fails


class LocalRunner:
    """Implements the JobQueue protocol for the GitLab side; runs up to `concurrent` jobs at once."""

    def __init__(
        self,
        cfg: RunnerConfig,
        pods: DockerPods,
        store: Any,
        sink: JobSink,
        *,
        tags: frozenset[str],
        resolve_image: Callable[[str], ImageChoice],
        faults: frozenset[str] = frozenset(),
        manager_hostname: str = "runnerconf-local",
        registry: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.pods = pods
        self.store = store
        self.sink = sink
        self.tags = tags
        self.resolve_image = resolve_image
        self.faults = faults
        self.manager_hostname = manager_hostname
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers=max(1, cfg.concurrent), thread_name_prefix="job")
        self._jobs: dict[int, RunningJob] = {}
        self._lock = threading.Lock()
        self._concurrency_ids: set[int] = set()

    # ---- JobQueue ------------------------------------------------------------------------------------------

    def runner_tags(self) -> frozenset[str]:
        return self.tags

    def submit(self, payload: JobPayload) -> None:
        # Faults come from the cluster and, per pipeline, from RUNNERCONF_LOCAL_FAULTS, so one running
        # cluster can serve a clean run and fault runs side by side.
        try:
            job_faults = parse_faults(payload.variable(FAULTS_ENV_VAR))
        except LocalConfigError:
            job_faults = frozenset()
        job = RunningJob(payload, self.faults | job_faults)
        with self._lock:
            self._jobs[payload.id] = job
        self._pool.submit(self._run_guarded, job)

    def cancel(self, job_id: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job:
            job.cancel.set()

    def shutdown(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- one job -------------------------------------------------------------------------------------------

    def _acquire_concurrency_id(self) -> int:
        with self._lock:
            n = 0
            while n in self._concurrency_ids:
                n += 1
            self._concurrency_ids.add(n)
            return n

    def _run_guarded(self, job: RunningJob) -> None:
        try:
            self._run(job)
        except Exception as exc:  # a bug in the emulation must still end the job, never hang it
            self.sink.append_trace(job.payload.id, f"ERROR: Job failed (system failure): {exc}\n".encode())
            self.sink.job_finished(job.payload.id, "failed", "runner_system_failure")
        finally:
            with self._lock:
                self._jobs.pop(job.payload.id, None)

    def _run(self, job: RunningJob) -> None:
        p = job.payload
        rcfg = self.cfg.runner
        masked = [v.value for v in p.variables if v.masked] + [rcfg.token]
        trace = TraceWriter(
            lambda data: self.sink.append_trace(p.id, data),
            timestamps=self.cfg.feature_flag("FF_TIMESTAMPS"),
            masked=masked,
        )
        self.sink.job_started(p.id, rcfg.name)
        job.deadline = time.time() + p.timeout_s
        concurrency = self._acquire_concurrency_id()
        plan: PodPlan | None = None
        status, reason, final = "success", None, ""
        try:
            trace.line(
                f"Running with gitlab-runner {BEHAVIOUR_VERSION} (runnerconf local emulation, not a real runner)"
            )
            trace.line(f"  on {rcfg.name} {short_token(rcfg.token)}, system ID: r_runnerconflocal")
            plan = self._prepare(job, trace, concurrency)
            self._stages(job, plan, trace)
        except JobAborted as exc:
            status = exc.status
            reason = None if status == "canceled" else "job_execution_timeout"
            final = f"{RED}ERROR: Job failed: {exc}{RESET}"
        except StageFailed as exc:
            status = "failed"
            reason = "runner_system_failure" if exc.system else "script_failure"
            kind = " (system failure)" if exc.system else ""
            final = f"{RED}ERROR: Job failed{kind}: {exc}{RESET}"
        finally:
            if job.pod is not None:
                self._cleanup(job, trace)
            with self._lock:
                self._concurrency_ids.discard(concurrency)
        if status == "success":
            final = f"{GREEN}Job succeeded{RESET}"
        trace.line(final)
        self.sink.job_finished(p.id, status, reason)

    def _check(self, job: RunningJob) -> None:
        if job.cancel.is_set():
            raise JobAborted("canceled", "canceled")
        if time.time() > job.deadline:
            raise JobAborted(
                f"execution took longer than {go_duration(job.payload.timeout_s)} seconds", "failed"
            )

    def _prepare(self, job: RunningJob, trace: TraceWriter, concurrency: int) -> PodPlan:
        p = job.payload
        trace.section_start("prepare_executor", 'Preparing the "kubernetes" executor')
        plan = None
        for attempt in range(PREPARATION_RETRIES):
            try:
                plan = build_pod(
                    p,
                    self.cfg,
                    faults=job.faults,
                    manager_hostname=self.manager_hostname,
                    concurrency_id=concurrency,
                    registry=self.registry,
                )
                break
            except PreparationError as exc:
                if exc.stage != "prepare_executor":
                    # Errors met while creating the pod are not retried by the runner.
                    trace.section_end("prepare_executor")
                    raise StageFailed(str(exc), system=True) from None
                trace.error(f"Preparation failed: {exc}")
                trace.line(f"Will be retried in {int(PREPARATION_RETRY_DELAY_S)}s ...")
                if attempt == PREPARATION_RETRIES - 1 or job.cancel.wait(PREPARATION_RETRY_DELAY_S):
                    trace.section_end("prepare_executor")
                    self._check(job)
                    raise StageFailed(str(exc), system=True) from None
        assert plan is not None
        pod = plan.pod
        trace.info(f"Using Kubernetes namespace: {pod['metadata']['namespace']}")
        trace.info(f"Using Kubernetes executor with image {p.image} ...")
        trace.info("Using attach strategy to execute scripts...")
        for line in plan.executor_log_lines:
            trace.info(line)
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            trace.info(f"Using effective pull policy of [IfNotPresent] for container {c['name']}")
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            choice = self.resolve_image(c["image"])
            if choice.local and choice.local != c["image"]:
                trace.info(
                    f"Local emulation: image {c['image']} for container {c['name']} runs as its stand-in "
                    f"{choice.local} (built from Debian packages; no registry reachable)"
                )
        if (
            any((c.get("securityContext") or {}).get("privileged") for c in pod["spec"]["containers"])
            and self.pods.privileged_mode != "privileged"
        ):
            trace.warning(
                "Local emulation: this host refuses --privileged; privileged containers run pseudo-privileged "
                "(all capabilities but CAP_SYS_RESOURCE, no seccomp/AppArmor, all devices)"
            )
        healthchecks = self._healthcheck_ports(plan)
        if healthchecks:
            # The runner creates the pod early when a service must be health-checked.
            self._create_pod(job, plan, trace)
            self._wait_services(job, plan, healthchecks, trace)
        trace.section_end("prepare_executor")
        self._check(job)
        trace.section_start("prepare_script", "Preparing environment")
        if not healthchecks:
            self._create_pod(job, plan, trace)
        trace.line(f"Running on {pod['metadata']['name']} via {self.manager_hostname}...")
        trace.section_end("prepare_script")
        return plan

    def _create_pod(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        k8s = self.cfg.runner.kubernetes
        for line in plan.pod_log_lines:
            trace.line(line)
        invalid = validate_pod(plan.pod)
        if invalid:
            raise StageFailed(f"setting up build pod: {invalid}", system=True)
        stored = self.store.create(plan.pod)
        plan.pod = stored
        job.pod = stored
        if plan.secret is not None:
            secret = dict(plan.secret)
            if "leak-secrets" not in job.faults:
                secret["metadata"] = dict(secret["metadata"])
                secret["metadata"]["ownerReferences"] = [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": stored["metadata"]["name"],
                        "uid": stored["metadata"]["uid"],
                    }
                ]
            self.store.create(secret)
        ns, name = stored["metadata"]["namespace"], stored["metadata"]["name"]
        pod_error: list[BaseException] = []

        def start_pod() -> None:
            try:
                self.pods.run(stored, job.faults)
            except Exception as exc:  # surfaced by the wait loop below as the runner would: pod failed
                pod_error.append(exc)

        starter = threading.Thread(target=start_pod, daemon=True, name=f"pod-{name}")
        starter.start()
        poll = max(0.2, float(k8s.poll_interval))
        attempts = max(1, int(k8s.poll_timeout / poll))
        for _ in range(attempts):
            self._check(job)
            if pod_error:
                raise StageFailed(
                    f"prepare environment: setting up the pod failed: {pod_error[0]}", system=True
                )
            status = self._pod(ns, name).get("status", {})
            phase = status.get("phase", "Pending")
            build = next((s for s in status.get("containerStatuses", []) if s["name"] == "build"), None)
            waiting = [
                s
                for s in status.get("containerStatuses", [])
                if "waiting" in s.get("state", {})
                and s["state"]["waiting"].get("reason")
                in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
            ]
            if waiting:
                msg = waiting[0]["state"]["waiting"].get("message", "")
                raise StageFailed(f"prepare environment: image pull failed: {msg}", system=True)
            if phase == "Running" and build and build.get("ready"):
                return
            if phase in ("Failed", "Succeeded"):
                raise StageFailed(
                    "prepare environment: waiting for pod running: pod status is failed. Check "
                    "https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information",
                    system=True,
                )
            trace.line(f"Waiting for pod {ns}/{name} to be running on the node <unknown>, status is {phase}")
            for cond in status.get("conditions", []):
                if cond.get("reason"):
                    trace.line(f'\t{cond["reason"]}: "{cond.get("message", "")}"')
            if job.cancel.wait(poll):
                self._check(job)
        raise StageFailed(
            "prepare environment: waiting for pod running: timed out waiting for pod to start. Check "
            "https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information",
            system=True,
        )

    def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.store.get("Pod", namespace, name)
        except NotFound:
            return {}

    def _healthcheck_ports(self, plan: PodPlan) -> list[int]:
        ports = []
        for service, _name in plan.service_containers:
            for var in service.variables:
                if var.key == "HEALTHCHECK_TCP_PORT" and var.value.strip().isdigit():
                    ports.append(int(var.value))
        return ports

    def _wait_services(self, job: RunningJob, plan: PodPlan, ports: list[int], trace: TraceWriter) -> None:
        trace.info(
            f"Waiting for services to be up and running (timeout {go_duration(job.payload.timeout_s)})..."
        )
        script = "\n".join(
            [
                f"echo 'waiting for TCP connection to localhost on [{' '.join(map(str, ports))}]...'",
                *[
                    f"echo 'dialing localhost:{p}...'; "
                    f"until nc -z -w 1 127.0.0.1 {p} 2>/dev/null; do sleep 0.2; done; "
                    f"echo 'dial succeeded on localhost:{p}. Exiting...'"
                    for p in ports
                ],
            ]
        )
        code = self._exec(job, plan, "helper", ["sh", "-c", script], trace)
        if code != 0:
            trace.warning(f"Health check aborted due to error: exit code {code}")

    # ---- stages --------------------------------------------------------------------------------------------

    def _stages(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        p = job.payload
        order = ["get_sources", "step_script"]
        if "script-before-sources" in job.faults:
            order.reverse()
        script_error: StageFailed | None = None
        for stage in order:
            self._check(job)
            if stage == "get_sources":
                self._get_sources(job, plan, trace)
            else:
                if order[0] == "step_script":
                    # The broken runner still creates the project directory, so the script runs (early).
                    self.pods.exec(*pod_ref(plan), "build", ["mkdir", "-p", plan.project_dir])
                try:
                    self._step_script(job, plan, trace)
                except StageFailed as exc:
                    if exc.system:
                        raise
                    script_error = exc
                    break
        if p.after_script:
            self._check(job)
            trace.section_start("after_script", "Running after_script")
            code = self._run_script(job, plan, "after_script", p.after_script, trace)
            if code != 0:
                trace.warning(
                    f"after_script failed, but job will continue unaffected: command terminated with exit code {code}"
                )
            trace.section_end("after_script")
        success = script_error is None
        art = p.artifacts
        if art and art.paths and (art.when == "always" or (art.when == "on_failure") != success):
            name = "upload_artifacts_on_success" if success else "upload_artifacts_on_failure"
            header = (
                "Uploading artifacts for successful job" if success else "Uploading artifacts for failed job"
            )
            trace.section_start(name, header)
            self._upload_artifacts(job, plan, trace)
            trace.section_end(name)
        trace.section_start(
            "cleanup_file_variables", "Cleaning up project directory and file based variables"
        )
        trace.section_end("cleanup_file_variables")
        if script_error is not None:
            raise script_error

    def _get_sources(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        p = job.payload
        d = shlex.quote(plan.project_dir)
        script = f"""set -e
echo "Fetching changes with git depth set to 20..."
mkdir -p {d}
git -c safe.directory='*' init -q {d}
echo "Initialized empty Git repository in {plan.project_dir}/.git/"
cd {d}
git -c safe.directory='*' remote add origin file:///runnerconf/repo.git
echo "Created fresh repository."
git -c safe.directory='*' fetch -q --depth 20 origin +refs/heads/{shlex.quote(p.ref)}:refs/remotes/origin/{shlex.quote(p.ref)}
echo "Checking out {p.sha[:8]} as detached HEAD (ref is {p.ref})..."
git -c safe.directory='*' -c advice.detachedHead=false checkout -q -f {p.sha}
echo
echo "Skipping Git submodules setup"
"""
        trace.section_start("get_sources", "Getting source from Git repository")
        code = self._exec(job, plan, "helper", ["sh", "-c", script], trace)
        trace.section_end("get_sources")
        if code != 0:
            raise StageFailed(f"command terminated with exit code {code}", system=False)

    def _step_script(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        p = job.payload
        trace.section_start("step_script", 'Executing "step_script" stage of the job script')
        code = self._run_script(job, plan, "step_script", (*p.before_script, *p.script), trace)
        trace.section_end("step_script")
        if code == 0:
            return
        failure = self._container_failure(job, plan, code)
        if failure:
            raise StageFailed(failure, system=True)
        raise StageFailed(f"command terminated with exit code {code}", system=False)

    def _container_failure(self, job: RunningJob, plan: PodPlan, code: int) -> str | None:
        """The runner's pod-status watch: a terminated build/helper container is a system failure."""
        ns, name = pod_ref(plan)
        deadline = time.time() + (OOM_NOTICE_WAIT_S if code == 137 else 0.5)
        while True:
            for cname in ("build", "helper"):
                c = self.pods.container_state(ns, name, cname)
                if c is not None and c.exit_code is not None:
                    statuses = self._pod(ns, name).get("status", {}).get("containerStatuses", [])
                    st: dict[str, Any] = next((s for s in statuses if s["name"] == cname), {})
                    term = st.get("state", {}).get("terminated", {})
                    reason = term.get("reason", "Error")
                    return f"Error in container {cname}: exit code: {c.exit_code}, reason: '{reason}'"
            if time.time() >= deadline or job.cancel.wait(0.1):
                return None

    def _render_script(self, plan: PodPlan, commands: tuple[str, ...] | list[str]) -> str:
        lines = ["set -e", f"cd {shlex.quote(plan.project_dir)}"]
        for cmd in commands:
            echo = cmd.replace("\n", " ").strip()
            lines.append(f"printf '%s\\n' {shlex.quote(GREEN + '$ ' + echo + RESET)}")
            lines.append(cmd)
        return "\n".join(lines) + "\n"

    def _run_script(
        self, job: RunningJob, plan: PodPlan, stage: str, commands: tuple[str, ...], trace: TraceWriter
    ) -> int:
        ns, name = pod_ref(plan)
        path = f"{plan.scripts_dir}/{stage}"
        self.pods.put_file(ns, name, "build", path, self._render_script(plan, commands).encode())
        return self._exec(job, plan, "build", ["sh", path], trace)

    def _exec(
        self, job: RunningJob, plan: PodPlan, container: str, cmd: list[str], trace: TraceWriter
    ) -> int:
        """Run a command in a pod container, streaming its output into the trace; honour cancel/timeout."""
        ns, name = pod_ref(plan)
        try:
            output, exit_code = self.pods.exec_stream(ns, name, container, cmd)
        except Exception as exc:
            raise StageFailed(f"Error in container {container}: {exc}", system=True) from None
        done = threading.Event()

        def pump() -> None:
            try:
                for chunk in output:
                    trace.output(chunk)
            except Exception:
                pass
            finally:
                trace.flush()
                done.set()

        threading.Thread(target=pump, daemon=True, name=f"exec-{name}-{container}").start()
        while not done.wait(0.2):
            self._check(job)
        code = exit_code()
        return 137 if code is None else int(code)

    def _upload_artifacts(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        p = job.payload
        assert p.artifacts is not None
        ns, name = pod_ref(plan)
        trace.line("Uploading artifacts...")
        buf = io.BytesIO()
        found_total = 0
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for pattern in p.artifacts.paths:
                script = f'cd {shlex.quote(plan.project_dir)} && for f in {pattern}; do [ -e "$f" ] && echo "$f"; done'
                output, _ = self.pods.exec(ns, name, "helper", ["sh", "-c", script])
                listing = [line for line in output.decode().splitlines() if line]
                for rel in listing:
                    found_total += self._add_to_zip(zf, ns, name, plan, rel)
                trace.line(f"{pattern}: found {len(listing)} matching artifact files and directories")
        if found_total == 0:
            trace.warning("No files to upload")
            return
        filename = "artifacts.zip"
        self.sink.store_artifacts(p.id, filename, buf.getvalue())
        trace.line(
            f'Uploading artifacts as "archive" to coordinator... 201 Created  id={p.id} responseStatus=201 Created'
        )

    def _add_to_zip(self, zf: zipfile.ZipFile, ns: str, name: str, plan: PodPlan, rel: str) -> int:
        data = self.pods.get_archive(ns, name, "helper", f"{plan.project_dir}/{rel}")
        if data is None:
            return 0
        count = 0
        base = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    fh = tar.extractfile(member)
                    if fh is not None:
                        zf.writestr(base + member.name, fh.read())
                        count += 1
        return count

    # ---- cleanup -------------------------------------------------------------------------------------------

    def _cleanup(self, job: RunningJob, trace: TraceWriter) -> None:
        """Deferred in the real runner, so it runs before the final Job succeeded/failed line."""
        pod = job.pod
        assert pod is not None
        meta = pod["metadata"]
        if "leak-pods" in job.faults:
            return
        grace = self.cfg.runner.kubernetes.cleanup_grace_period_seconds
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)

        def delete() -> None:
            try:
                self.pods.delete(meta["namespace"], meta["name"], float(grace))
            except Exception as exc:
                trace.error(f"Error cleaning up pod: {exc}")

        if "slow-cleanup" in job.faults:
            timer = threading.Timer(SLOW_CLEANUP_DELAY_S, delete)
            timer.daemon = True  # a stopping cluster removes every pod anyway; never wait for this
            timer.start()
            return
        # DELETE returns once the pod is marked Terminating; containers stop in the background (propagation
        # Background), so the final job line is written before the pod is gone, as with the real runner.
        delete()


def pod_ref(plan: PodPlan) -> tuple[str, str]:
    """(namespace, name) of the plan's pod."""
    meta = plan.pod["metadata"]
    return meta["namespace"], meta["name"]


def validate_pod(pod: dict[str, Any]) -> str | None:
    """The API server's resource validation: a request above its limit makes the pod invalid."""
    spec = pod["spec"]
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group, [])):
            res = c.get("resources") or {}
            for kind in ("cpu", "memory"):
                req = (res.get("requests") or {}).get(kind)
                lim = (res.get("limits") or {}).get(kind)
                if req and lim and quantity.parse(req).value > quantity.parse(lim).value:
                    return (
                        f'Pod "{pod["metadata"]["name"]}" is invalid: spec.{group}[{i}].resources.requests: '
                        f'Invalid value: "{req}": must be less than or equal to {kind} limit of {lim}'
                    )
    return None
