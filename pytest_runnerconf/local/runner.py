"""The emulated Kubernetes-executor runner: one job -> one pod, stages in the real order, cleanup.

It follows gitlab-runner v18.11 (`executors/kubernetes`, `common/build.go`): Prepare (retried 3 times), the
pod created in prepare_script and waited for as `waitForPodRunning` does, every stage run by the attach
strategy (or the legacy exec one, see strategies.py), after_script, artifacts and cleanup_file_variables
still run after a failed script, cleanup before the final line. Messages are the runner's own wording.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shlex
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pytest_runnerconf.local.admission import refuse_over_quota
from pytest_runnerconf.local.archives import tar_members, zip_entries, zip_to_tar
from pytest_runnerconf.local.errors import LocalConfigError
from pytest_runnerconf.local.faults import ENV_VAR as FAULTS_ENV_VAR
from pytest_runnerconf.local.faults import PENDING_POLL_TIMEOUT_S, SLOW_SCHEDULING_S, parse_faults
from pytest_runnerconf.local.kstore import AlreadyExists, NotFound, StoreError
from pytest_runnerconf.local.model import JobPayload, JobSink
from pytest_runnerconf.local.podspec import PodPlan, PreparationError, build_pod, go_duration
from pytest_runnerconf.local.podstatus import ImageChoice
from pytest_runnerconf.local.runner_config import RunnerConfig, short_token
from pytest_runnerconf.local.s3cache import clean_url, http_get, http_put, object_name, presigned_url
from pytest_runnerconf.local.scheduling import NODE_NAME, keep_unschedulable, unschedulable
from pytest_runnerconf.local.strategies import (
    DOCKER_COMMAND,
    PodPaths,
    Strategy,
    StrategyError,
    container_for,
    make_strategy,
)
from pytest_runnerconf.local.tracewriter import (
    GREEN,
    RED,
    RESET,
    SCRIPT_STREAM,
    YELLOW,
    LimitedSink,
    TraceWriter,
)

BEHAVIOUR_VERSION = "18.11.4"
PREPARATION_RETRIES = 3
PREPARATION_RETRY_DELAY_S = 3.0
# How long after a script exits 137 to wait for the cgroup OOM notice before calling it a plain kill. The
# wait ends as soon as the pod status shows the container terminated (any reason), so only a kill that leaves
# the container running waits it out; 3 s was too short when two 31-job runs shared the 2-CPU node (the
# engine's oom event came later and RC-OOM-003 saw a plain exit 137).
OOM_NOTICE_WAIT_S = 15.0
SLOW_CLEANUP_DELAY_S = 90.0
SHELL_PROFILE_HINT = "Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information"
TIMEOUT_DOCS = "https://docs.gitlab.com/ci/runners/configure_runners/#set-script-and-after_script-timeouts"


class JobAborted(Exception):
    """The job was cancelled or ran out of time; the message is the runner's."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


# The kubernetes Service's address as a pod sees it (the first address of kubeadm's and kind's default service
# CIDR): where an in-cluster runner's client sends its requests.
API_SERVICE = "10.96.0.1:443"


class StageFailed(Exception):
    """A failed job. `system` picks the final line's form; `reason` is what GitLab records.

    GitLab has no image_pull_failure reason, so the runner's failure-reason mapper sends
    runner_system_failure for it while the trace keeps the plain "Job failed:" form.
    """

    def __init__(self, message: str, *, system: bool, reason: str | None = None) -> None:
        super().__init__(message)
        self.system = system
        self.reason = reason or ("runner_system_failure" if system else "script_failure")


def prepare_failure(inner: str, *, system: bool = True, reason: str | None = None) -> StageFailed:
    """executePrepareScripts wraps every prepare_script-stage error this way."""
    return StageFailed(f"prepare environment: {inner}. {SHELL_PROFILE_HINT}", system=system, reason=reason)


@dataclass
class RunningJob:
    payload: JobPayload
    faults: frozenset[str]
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float = 0.0
    pod: dict[str, Any] | None = None  # the pod object once created, so cleanup happens whatever fails
    secret: dict[str, Any] | None = None  # the per-job registry Secret once created (before the pod)
    ended: threading.Event = field(default_factory=threading.Event)  # the job is over: helpers stop
    stage: str = ""
    attempted: set[str] = field(default_factory=set)  # stages started, for what runs after a failure


class Slots:
    """The global `concurrent` of one runner process, shared by all its [[runners]] entries.

    commands/multi.go: `concurrent` workers request jobs for any entry; an entry at its `limit` does not
    request ("runner limit met"), so its job stays pending on GitLab instead of holding a worker.
    """

    def __init__(self, concurrent: int) -> None:
        self.concurrent = max(1, concurrent)
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: list[Callable[[], None]] = []

    def register(self, dispatch: Callable[[], None]) -> None:
        self._waiters.append(dispatch)

    def take(self) -> bool:
        with self._lock:
            if self._used >= self.concurrent:
                return False
            self._used += 1
            return True

    def give(self) -> None:
        with self._lock:
            self._used -= 1
        for dispatch in list(self._waiters):  # outside the lock: each takes its own runner's lock first
            dispatch()


class LocalRunner:
    """Implements the JobQueue protocol for the GitLab side for one [[runners]] entry (cfg.runner).

    It runs up to its `limit` jobs at once (0: no limit) within the process's `concurrent` (Slots); a job
    beyond either stays pending on GitLab until a slot frees, as a real runner does not request it.
    """

    def __init__(
        self,
        cfg: RunnerConfig,
        node: Any,
        store: Any,
        sink: JobSink,
        *,
        tags: frozenset[str],
        resolve_image: Callable[[str], ImageChoice],
        delete_pod: Callable[[str, str, float], None],
        faults: frozenset[str] = frozenset(),
        manager_hostname: str = "runnerconf-local",
        registry: str | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = node  # the kubelet: pods/exec, pods/attach and the pod's containers
        self.store = store
        self.sink = sink
        self.tags = tags
        self.resolve_image = resolve_image
        self.delete_pod = delete_pod
        self.faults = faults
        self.manager_hostname = manager_hostname
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers=max(1, cfg.concurrent), thread_name_prefix="job")
        self._slots = slots or Slots(cfg.concurrent)
        self._slots.register(self._dispatch)
        self._waiting: list[RunningJob] = []  # submitted, not yet taken: pending on GitLab
        self._running = 0
        self._jobs: dict[int, RunningJob] = {}
        self._lock = threading.Lock()
        self._concurrency_ids: set[int] = set()
        self._flaked: set[tuple[int, str]] = set()  # runner-flaky-once: (pipeline, job name) already failed

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
        faults = self.faults | job_faults
        if "registry-push-denied" in faults:
            payload = revoked_registry_password(payload)
        job = RunningJob(payload, faults)
        with self._lock:
            self._jobs[payload.id] = job
            self._waiting.append(job)
        self._dispatch()

    def _cap(self, job: RunningJob) -> int | None:
        """How many jobs this entry may run at once for JOB (None: only `concurrent` caps them)."""
        limit = self.cfg.runner.limit
        if limit <= 0 or "limit-ignored" in job.faults:
            return None
        return 1 if "concurrency-one" in job.faults else limit

    def _dispatch(self) -> None:
        """Start waiting jobs in order while this entry's limit and the process's concurrent allow."""
        start: list[RunningJob] = []
        with self._lock:
            while self._waiting:
                cap = self._cap(self._waiting[0])
                if (cap is not None and self._running >= cap) or not self._slots.take():
                    break
                self._running += 1
                start.append(self._waiting.pop(0))
        for job in start:
            self._pool.submit(self._run_guarded, job)

    def cancel(self, job_id: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job:
            job.cancel.set()

    def shutdown(self) -> None:
        with self._lock:
            self._waiting.clear()
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
                self._running -= 1
            self._slots.give()

    def _run(self, job: RunningJob) -> None:
        p = job.payload
        rcfg = self.cfg.runner
        masked = [v.value for v in p.variables if v.masked] + [rcfg.token]
        if rcfg.cache is not None and rcfg.cache.s3 is not None and rcfg.cache.s3.secret_key:
            masked.append(rcfg.cache.s3.secret_key)
        sink = LimitedSink(
            lambda data: self.sink.append_trace(p.id, data),
            self.cfg.output_limit_bytes,
            announce="output-truncated-silently" not in job.faults,
        )
        trace = TraceWriter(
            sink,
            timestamps=self.cfg.feature_flag("FF_TIMESTAMPS"),
            masked=masked,
        )
        self.sink.job_started(p.id, rcfg.name)
        job.deadline = time.time() + p.timeout_s
        concurrency = self._acquire_concurrency_id()
        strategy: Strategy | None = None
        status, reason, final = "success", None, ""
        try:
            trace.line(
                f"Running with gitlab-runner {BEHAVIOUR_VERSION} (runnerconf local emulation, not a real runner)"
            )
            trace.line(f"  on {rcfg.name} {short_token(rcfg.token)}, system ID: r_runnerconflocal")
            plan = self._prepare(job, trace, concurrency)
            strategy = self._prepare_script(job, plan, trace)
            self._stages(job, plan, strategy, trace)
        except JobAborted as exc:
            status = exc.status
            reason = None if status == "canceled" else "job_execution_timeout"
            final = f"{RED}ERROR: Job failed: {exc}{RESET}"
        except StageFailed as exc:
            status = "failed"
            reason = exc.reason
            kind = " (system failure)" if exc.system else ""
            final = f"{RED}ERROR: Job failed{kind}: {exc}{RESET}"
        finally:
            if strategy is not None:
                strategy.close()
            job.ended.set()
            if job.pod is not None or job.secret is not None:
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

    # ---- prepare_executor -------------------------------------------------------------------------------

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
                for line in exc.lines:
                    trace.line(line)
                if not exc.retry:
                    # A BuildError (an invalid pull policy): Prepare gives up at once, the job fails plainly.
                    trace.section_end("prepare_executor")
                    raise StageFailed(str(exc), system=False) from None
                if exc.stage != "prepare_executor":
                    # Errors met while creating the pod are not retried by the runner.
                    trace.section_end("prepare_executor")
                    raise prepare_failure(str(exc)) from None
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
        if not plan.legacy:
            trace.info("Using attach strategy to execute scripts...")
        for line in plan.executor_log_lines:
            trace.info(line)
        for line in plan.pull_policy_lines:
            trace.info(line)
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            choice = self.resolve_image(c["image"])
            if choice.local and choice.local != c["image"]:
                trace.info(
                    f"Local emulation: image {c['image']} for container {c['name']} runs as its stand-in "
                    f"{choice.local} (built from Debian packages; no registry reachable)"
                )
        if (
            any((c.get("securityContext") or {}).get("privileged") for c in pod["spec"]["containers"])
            and self.node.privileged_mode != "privileged"
        ):
            trace.warning(
                "Local emulation: this host refuses --privileged; privileged containers run pseudo-privileged "
                "(all capabilities but CAP_SYS_RESOURCE, no seccomp/AppArmor, all devices)"
            )
        healthchecks = self._healthcheck_ports(plan)
        if healthchecks:
            # waitForServices: with a service to health-check the pod is created already in Prepare.
            try:
                self._create_pod(job, plan, trace)
                self._wait_services(job, plan, healthchecks, trace)
            except StageFailed as exc:
                trace.section_end("prepare_executor")
                raise StageFailed(_unwrap_prepare(str(exc)), system=exc.system, reason=exc.reason) from None
        trace.section_end("prepare_executor")
        self._check(job)
        return plan

    def _healthcheck_ports(self, plan: PodPlan) -> list[str]:
        ports = []
        for service, _name in sorted(plan.service_containers, key=lambda item: item[1]):
            for var in service.variables:
                if var.key == "HEALTHCHECK_TCP_PORT" and var.value.strip():
                    ports.append(var.value.strip())
        return ports

    def _wait_services(self, job: RunningJob, plan: PodPlan, ports: list[str], trace: TraceWriter) -> None:
        """`gitlab-runner-helper health-check` exec'd in the helper through its shell, output to the trace."""
        ns, name = pod_ref(plan)
        command = "gitlab-runner-helper health-check " + "".join(f"--port '{p}' " for p in ports)
        try:
            stream = self.node.exec(ns, name, "helper", DOCKER_COMMAND, stdin=True, tty=False)
        except StoreError as exc:
            trace.line(f"Health check aborted due to error: {exc}")
            raise StageFailed(str(exc), system=True) from None
        try:
            stream.write_stdin((command + "\n").encode())
            stream.close_stdin()
            done = threading.Event()

            def pump() -> None:
                try:
                    for _, chunk in stream.output():
                        trace.output(chunk)
                finally:
                    trace.flush()
                    done.set()

            threading.Thread(target=pump, daemon=True, name=f"health-{name}").start()
            while not done.wait(0.2):
                self._check(job)
                failure = self._pod_failure(
                    ns, name, ("build", "helper", *[n for _, n in plan.service_containers])
                )
                if failure:
                    trace.line(f"Health check aborted due to error: {failure}")
                    raise StageFailed(failure, system=True)
        finally:
            stream.close()

    # ---- prepare_script: the pod -----------------------------------------------------------------------

    def _prepare_script(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> Strategy:
        trace.section_start("prepare_script", "Preparing environment")
        try:
            if job.pod is None:
                self._create_pod(job, plan, trace)
            ns, name = pod_ref(plan)
            strategy = make_strategy(
                plan.legacy,
                self.node,
                PodPaths(ns, name, plan.scripts_dir, plan.logs_dir),
                trace,
                cut_silent="silent-stream-cut" in job.faults,
            )
            try:
                strategy.start()
                body = f'echo "Running on $(hostname) via {self.manager_hostname}..."\n'
                code = self._run_stage(job, plan, strategy, "prepare_script", body)
            except StrategyError as exc:
                strategy.close()
                raise prepare_failure(str(exc)) from None
            except StageFailed as exc:  # the pod failed while the prepare script ran
                strategy.close()
                raise prepare_failure(str(exc), system=exc.system, reason=exc.reason) from None
            except BaseException:
                strategy.close()
                raise
            if code != 0:
                strategy.close()
                raise prepare_failure(f"command terminated with exit code {code}", system=False)
            return strategy
        finally:
            trace.section_end("prepare_script")

    def _create_pod(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        for line in plan.pod_log_lines:
            trace.line(line)
        if plan.secret is not None and job.secret is None:
            # setupCredentials runs before setupBuildPod: a refused pod leaves a Secret for Cleanup to delete.
            try:
                job.secret = self.store.create(plan.secret)
            except StoreError as exc:
                raise prepare_failure(f"setting up credentials: {exc}") from None
        try:
            if "quota-exceeded" in job.faults:
                raise refuse_over_quota(plan.pod)
            stored = self.store.create(plan.pod)  # the API server defaults, validates and admits it
        except StoreError as exc:
            raise prepare_failure(f"setting up build pod: {exc}") from None
        plan.pod = stored
        job.pod = stored
        # buildPodReferences: what the runner hangs on the pod, so the garbage collector deletes it with the pod.
        owner = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": stored["metadata"]["name"],
            "uid": stored["metadata"]["uid"],
        }
        if job.secret is not None and "leak-secrets" not in job.faults:
            # setOwnerReferencesForResources: the garbage collector then deletes the Secret with its pod.

            def own(obj: dict[str, Any]) -> None:
                obj["metadata"]["ownerReferences"] = [owner]

            secret_meta = job.secret["metadata"]
            try:
                job.secret = self.store.update("Secret", secret_meta["namespace"], secret_meta["name"], own)
            except StoreError as exc:
                raise prepare_failure(f"setting up build pod: error setting ownerReferences: {exc}") from None
        if self.cfg.runner.kubernetes.pod_disruption_budget and "pdb-not-created" not in job.faults:
            self._create_pdb(stored, owner)
        ns, name = stored["metadata"]["namespace"], stored["metadata"]["name"]
        pod_error: list[BaseException] = []

        # The scheduler decides before the runner's first look, so its "Waiting for pod" lines name the node.
        why = unschedulable(stored, self.store.get("Node", "", NODE_NAME))
        slow = why is None and "scheduling-slow" in job.faults and self.cfg.runner.limit > 0
        if why is None and not slow and "pod-pending-timeout" not in job.faults:
            self.node.bind(stored)

        def start_pod() -> None:
            try:
                if "pod-pending-timeout" in job.faults:
                    keep_unschedulable(self.store, stored, job.ended)  # no node ever takes it
                    return
                if why is not None:  # nodeSelector, affinity or taints keep it off the one node
                    keep_unschedulable(self.store, stored, job.ended, message=why)
                    return
                if slow:  # no room until the node pool has grown: Unschedulable for a while, then bound
                    scaled = threading.Event()
                    timer = threading.Timer(SLOW_SCHEDULING_S, scaled.set)
                    timer.start()
                    keep_unschedulable(self.store, stored, scaled)
                    timer.cancel()
                    if job.ended.is_set() or not scaled.is_set():
                        return  # the job ended (or its pod went) while it waited
                self.node.run(stored, job.faults)
            except Exception as exc:  # surfaced by the wait below as the runner would see it: a failed pod
                pod_error.append(exc)

        threading.Thread(target=start_pod, daemon=True, name=f"pod-{name}").start()
        self._wait_for_pod(job, ns, name, trace, pod_error)

    def _create_pdb(self, pod: dict[str, Any], owner: dict[str, Any]) -> None:
        """createPodDisruptionBudget (v18.11.0 on, `pod_disruption_budget = true`), right after the pod's owner
        references: "<pod>-pdb", owned by the pod, minAvailable 1 over the pod's job.runner.gitlab.com/pod
        label; on a conflict the existing one is read (executors/kubernetes/kubernetes.go v18.11.1, lines
        2156-2161 and 2860-2916). No cleanup deletes it: the garbage collector removes it with the pod.
        """
        meta = pod["metadata"]
        label = "job.runner.gitlab.com/pod"
        name = f"{meta['name']}-pdb"
        budget: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "ownerReferences": [owner],
            },
            "spec": {
                "minAvailable": 1,
                "selector": {"matchLabels": {label: (meta.get("labels") or {}).get(label, "")}},
            },
        }
        try:
            try:
                self.store.create(budget)
            except AlreadyExists:
                self.store.get("PodDisruptionBudget", meta["namespace"], name)
        except StoreError as exc:
            raise prepare_failure(
                f"setting up build pod: error creating PodDisruptionBudget: {exc}"
            ) from None

    def _wait_for_pod(
        self, job: RunningJob, ns: str, name: str, trace: TraceWriter, pod_error: list[BaseException]
    ) -> None:
        """waitForPodRunning: poll until Running with build Ready; pull failures and ended pods end it."""
        k8s = self.cfg.runner.kubernetes
        poll = max(0.2, float(k8s.poll_interval))
        # The fault stands for a cluster whose runner has a short poll_timeout, so the run ends in minutes.
        # pull-errors-unreported: a runner that never looks at container waiting reasons, with the short
        # poll_timeout of the pending fault so the run ends in seconds, not minutes.
        unreported = "pull-errors-unreported" in job.faults
        short = "pod-pending-timeout" in job.faults or unreported
        timeout = PENDING_POLL_TIMEOUT_S if short else k8s.poll_timeout
        attempts = max(1, int(timeout / poll))
        if "runner-flaky-once" in job.faults and self._first_attempt(job):
            # The API server dropped out for a moment: getPodPhase's GET fails and Run ends the job with
            # it as a system failure (executors/kubernetes/util.go@v18.11.0 returns the client's error).
            raise prepare_failure(
                f'waiting for pod running: Get "https://{API_SERVICE}/api/v1/namespaces/{ns}/pods/{name}": '
                f"dial tcp {API_SERVICE}: connect: connection refused"
            )
        for _ in range(attempts + 1):
            self._check(job)
            if pod_error:
                raise prepare_failure(f"waiting for pod running: {pod_error[0]}")
            pod = self._pod(ns, name)
            status = pod.get("status", {})
            phase = status.get("phase", "Pending")
            statuses = status.get("containerStatuses", [])
            build = next((s for s in statuses if s["name"] == "build"), None)
            if phase == "Running" and build and build.get("ready"):
                return
            if phase == "Succeeded":
                raise prepare_failure(
                    "waiting for pod running: pod already succeeded before it begins running"
                )
            if phase == "Failed":
                raise prepare_failure("waiting for pod running: pod status is failed")
            policies = {
                c.get("name", ""): c.get("imagePullPolicy", "")
                for c in [
                    *pod.get("spec", {}).get("initContainers", []),
                    *pod.get("spec", {}).get("containers", []),
                ]
            }
            if not unreported:
                self._check_terminal_container_errors(
                    job, [*statuses, *status.get("initContainerStatuses", [])], trace, policies
                )
            node = pod.get("spec", {}).get("nodeName") or "<unknown>"
            trace.line(
                f"Waiting for pod {ns}/{name} to be running on the node {node}, status is {phase}",
                stderr=True,
            )
            for cond in status.get("conditions", []):
                if cond.get("reason"):
                    trace.line(f'\t{cond["reason"]}: "{cond.get("message", "")}"', stderr=True)
            if job.cancel.wait(poll):
                self._check(job)
        self._print_warning_events(job, trace)  # Run logs the pod's Warning events on any error
        raise prepare_failure("waiting for pod running: timed out waiting for pod to start")

    def _first_attempt(self, job: RunningJob) -> bool:
        """Whether this is the first job of its name in its pipeline this runner runs (a retry is not)."""
        key = (job.payload.pipeline_id, job.payload.name)
        with self._lock:
            first = key not in self._flaked
            self._flaked.add(key)
        return first

    def _check_terminal_container_errors(
        self,
        job: RunningJob,
        statuses: list[dict[str, Any]],
        trace: TraceWriter,
        policies: dict[str, str] | None = None,
    ) -> None:
        """watchers.CheckTerminalContainerErrors, then what Run does with an image pull error."""
        for st in statuses:
            waiting = st.get("state", {}).get("waiting") or {}
            reason = waiting.get("reason")
            if st.get("ready") or reason not in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                continue
            message = f"image pull failed: {waiting.get('message', '')}"
            self._print_warning_events(job, trace)
            if reason == "InvalidImageName":  # a BuildError without a reason: script_failure in v18.11
                raise prepare_failure(f"waiting for pod running: {message}", system=False)
            trace.warning(
                f'Failed to pull image "{st.get("image", "")}" for container "{st["name"]}" with policy '
                f'"{(policies or {}).get(st["name"], "")}": {message}'
            )
            raise prepare_failure(
                f'waiting for pod running: pulling image "{st.get("image", "")}" for container {st["name"]}: {message}',
                system=False,
                reason="runner_system_failure",
            )

    def _print_warning_events(self, job: RunningJob, trace: TraceWriter) -> None:
        """print_pod_warning_events (default on): each Warning event of the pod, oldest first."""
        if job.pod is None:
            return
        meta = job.pod["metadata"]
        try:
            events, _ = self.store.list(
                "Event", meta["namespace"], field_selector=f"involvedObject.name={meta['name']},type=Warning"
            )
        except StoreError:
            return
        for ev in sorted(
            events, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["resourceVersion"].zfill(12))
        ):
            trace.warning(f"Event retrieved from the cluster: {ev.get('message', '')}")

    def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.store.get("Pod", namespace, name)
        except NotFound:
            return {}

    # ---- stages --------------------------------------------------------------------------------------------

    def _run_stage(
        self,
        job: RunningJob,
        plan: PodPlan,
        strategy: Strategy,
        stage: str,
        body: str,
        *,
        after_failure: bool = False,
    ) -> int:
        """One stage through the strategy, watching the pod as watchPodStatus does meanwhile.

        After a failure the job still goes through its last stages; then only the deadline stops them and only
        the stage's own container is watched.
        """
        ns, name = pod_ref(plan)
        job.stage = stage
        job.attempted.add(stage)
        watched = (container_for(stage),) if after_failure else ("build", "helper")

        def check() -> None:
            if not after_failure:
                self._check(job)
            elif time.time() > job.deadline:
                raise StageFailed("job timeout exceeded", system=True)
            failure = self._pod_failure(ns, name, watched)
            if failure:
                raise StageFailed(failure, system=True)

        def unnoticed() -> bool:
            # eviction-unnoticed: a runner without the pod informer that takes the evicted pod's broken
            # stream for the stage's end, so the job goes on and succeeds.
            return "eviction-unnoticed" in job.faults and evicted_or_gone(self._pod(ns, name))

        try:
            code = strategy.run(stage, body, check)
        except StrategyError as exc:
            if unnoticed():
                return 0
            raise StageFailed(str(exc), system=True) from None
        except StageFailed:
            if unnoticed():
                return 0
            raise
        except JobAborted:
            strategy.cancel(stage)
            raise
        return 0 if unnoticed() else code

    def _pod_failure(self, ns: str, name: str, watched: tuple[str, ...]) -> str | None:
        """The runner's pod-status check: a gone pod, a non-Running phase, a terminated build/helper."""
        pod = self._pod(ns, name)
        if not pod:
            return f'pods "{name}" not found'
        disrupted = disruption_target(pod)
        if disrupted is not None:
            # The pod informer's first word on an evicted pod (watchers/pod.go checkTerminalPodErrors, v17.9.0
            # on): the condition comes before the deletion, so it is what ends the job.
            return (
                f'pod "{ns}/{name}" is disrupted: reason "{disrupted.get("reason", "")}", '
                f'message "{disrupted.get("message", "")}"'
            )
        for st in pod.get("status", {}).get("containerStatuses", []):
            term = st.get("state", {}).get("terminated")
            if st["name"] in watched and term is not None:
                return f"Error in container {st['name']}: exit code: {term.get('exitCode')}, reason: '{term.get('reason', '')}'"
        phase = pod.get("status", {}).get("phase")
        if phase != "Running":
            return f'pod "{name}" status is "{phase}"'
        return None

    def _stages(self, job: RunningJob, plan: PodPlan, strategy: Strategy, trace: TraceWriter) -> None:
        p = job.payload
        order = ["get_sources", "restore_cache", "download_artifacts", "step_script"]
        if "script-before-sources" in job.faults:
            order.reverse()
        error: StageFailed | JobAborted | None = None
        for stage in order:
            self._check(job)
            try:
                if stage == "get_sources":
                    self._get_sources(job, plan, strategy, trace)
                elif stage == "restore_cache":
                    self._restore_cache(job, plan, trace)
                elif stage == "download_artifacts":
                    self._download_artifacts(job, plan, trace)
                else:
                    self._step_script(job, plan, strategy, trace)
            except StageFailed as exc:
                error = exc
                break
            except JobAborted as exc:
                if exc.status != "canceled":
                    trace.warning(
                        f"{stage} could not run to completion because the timeout was exceeded. For more "
                        f"control over job and script timeouts see: {TIMEOUT_DOCS}"
                    )
                    raise
                trace.warning("script canceled externally (UI, API)")
                error = exc
                break
        # after_script belongs to the user scripts: it runs once step_script was started, however that ended.
        if p.after_script and "step_script" in job.attempted:
            self._after_script(job, plan, strategy, trace, error)
        success = error is None
        if any(c.when == "always" or (c.when == "on_failure") != success for c in p.cache):
            self._archive_cache(job, plan, trace, success)
        art = p.artifacts
        if art and art.paths and (art.when == "always" or (art.when == "on_failure") != success):
            self._upload_artifacts(job, plan, strategy, trace, success)
        self._cleanup_file_variables(job, plan, strategy, trace)
        if error is not None:
            raise error

    def _after_script(
        self, job: RunningJob, plan: PodPlan, strategy: Strategy, trace: TraceWriter, error: Exception | None
    ) -> None:
        if time.time() > job.deadline:
            return  # the job's context has expired: later stages do not run
        trace.section_start("after_script", "Running after_script")
        # executeAfterScript: CI_JOB_STATUS says how the script ended (the stage script exports it).
        state = "success" if error is None else "canceled" if isinstance(error, JobAborted) else "failed"
        body = f"export CI_JOB_STATUS={state}\n" + self._user_script(
            plan, job.payload.after_script, job.payload
        )
        try:
            code = self._run_stage(job, plan, strategy, "after_script", body, after_failure=True)
        except StageFailed as exc:
            trace.warning(f"after_script failed, but job will continue unaffected: {exc}")
        else:
            if code != 0:
                trace.warning(
                    f"after_script failed, but job will continue unaffected: command terminated with exit code {code}"
                )
        trace.section_end("after_script")

    def _get_sources(self, job: RunningJob, plan: PodPlan, strategy: Strategy, trace: TraceWriter) -> None:
        p = job.payload
        d = shlex.quote(plan.project_dir)
        # The stand-in remote is a bind-mounted bare repository owned by the cluster's user: git's ownership
        # check must be lifted for upload-pack too (its own process), or a helper running as another uid (a
        # helper_container_security_context run_as_user) is refused with "detected dubious ownership".
        body = f"""echo "Fetching changes with git depth set to 20..."
mkdir -p {d}
git -c safe.directory='*' init -q {d}
echo "Initialized empty Git repository in {plan.project_dir}/.git/"
cd {d}
git -c safe.directory='*' remote add origin file:///runnerconf/repo.git
echo "Created fresh repository."
git -c safe.directory='*' fetch --upload-pack="git -c safe.directory='*' upload-pack" -q --depth 20 origin +refs/heads/{shlex.quote(p.ref)}:refs/remotes/origin/{shlex.quote(p.ref)}
echo "Checking out {p.sha[:8]} as detached HEAD (ref is {p.ref})..."
git -c safe.directory='*' -c advice.detachedHead=false checkout -q -f {p.sha}
echo
echo "Skipping Git submodules setup"
"""
        trace.section_start("get_sources", "Getting source from Git repository")
        try:
            code = self._run_stage(job, plan, strategy, "get_sources", body)
        finally:
            trace.section_end("get_sources")
        if code != 0:
            raise StageFailed(f"command terminated with exit code {code}", system=False)

    # ---- cache (shells/abstract.go cacheExtractor / cacheArchiver; commands/helpers/cache_*.go) ----------

    def _cache_object(self, job: RunningJob, key: str) -> str | None:
        """The S3 object of KEY for this runner (cache.GetAdapter), None without a distributed S3 cache."""
        cache = self.cfg.runner.cache
        if cache is None or cache.type != "s3" or cache.s3 is None:
            return None
        if "cache-not-shared" in job.faults:
            cache = dataclasses.replace(
                cache, shared=False
            )  # each runner under its own runner/<token> prefix
        return object_name(cache, self.cfg.runner.short_token, job.payload.project_id, key)

    def _restore_cache(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        p = job.payload
        caches = [c for c in p.cache if c.paths or c.untracked]
        if not caches:
            return  # ErrSkipBuildStage: no section at all
        ns, pod = pod_ref(plan)
        trace.section_start("restore_cache", "Restoring cache")
        try:
            for cache in caches:
                if cache.policy == "push":
                    trace.line(
                        f"{GREEN}Not downloading cache {cache.key} due to policy{RESET}", stream=SCRIPT_STREAM
                    )
                    continue
                trace.line(f"{GREEN}Checking cache for {cache.key}...{RESET}", stream=SCRIPT_STREAM)
                if self._extract_cache(job, cache.key, ns, pod, plan, trace):
                    trace.line(f"{GREEN}Successfully extracted cache{RESET}", stream=SCRIPT_STREAM)
                else:
                    trace.line(f"{YELLOW}WARNING: Failed to extract cache{RESET}", stream=SCRIPT_STREAM)
        finally:
            trace.section_end("restore_cache")

    def _extract_cache(
        self, job: RunningJob, key: str, ns: str, pod: str, plan: PodPlan, trace: TraceWriter
    ) -> bool:
        """cache-extractor: download the presigned URL, then unpack cache.zip into the project directory."""
        name = self._cache_object(job, key)
        cache = self.cfg.runner.cache
        if name is None or cache is None:
            trace.line(
                helper_log(
                    "",
                    "No URL provided, cache will not be downloaded from shared cache server. Instead a local "
                    "version of cache will be extracted.",
                ),
                stream=SCRIPT_STREAM,
            )
            # the pod's cache directory is an emptyDir: a new pod has no local cache.zip
            trace.line(helper_log("WARNING", "Cache file does not exist"), stream=SCRIPT_STREAM)
            return False
        url = presigned_url(cache, "GET", name, job.payload.timeout_s)
        got = http_get(url)
        if got.status == 404:
            trace.line(helper_log("WARNING", "file does not exist"), stream=SCRIPT_STREAM)  # os.ErrNotExist
            return False
        if got.status != 200:
            trace.line(
                helper_log("WARNING", f"received: {got.status} {_status_text(got.status)}"),
                stream=SCRIPT_STREAM,
            )
            return False
        fields = {"ETag": got.etag} if got.etag else {}
        trace.line(helper_log("", f"Downloading cache from {clean_url(url)}", **fields), stream=SCRIPT_STREAM)
        try:
            tar, _count = zip_to_tar(got.body)
            self.node.put_archive(ns, pod, "helper", plan.project_dir, tar)
        except (zipfile.BadZipFile, ValueError, StoreError) as exc:
            trace.line(helper_log("FATAL", str(exc)), stream=SCRIPT_STREAM)
            return False
        return True

    def _archive_cache(self, job: RunningJob, plan: PodPlan, trace: TraceWriter, success: bool) -> None:
        p = job.payload
        caches = [c for c in p.cache if (c.paths or c.untracked)]
        if not caches:
            return
        name = "archive_cache" if success else "archive_cache_on_failure"
        header = "Saving cache for successful job" if success else "Saving cache for failed job"
        ns, pod = pod_ref(plan)
        trace.section_start(name, header)
        try:
            for cache in caches:
                if cache.policy == "pull":
                    trace.line(
                        f"{GREEN}Not uploading cache {cache.key} due to policy{RESET}", stream=SCRIPT_STREAM
                    )
                    continue
                trace.line(f"{GREEN}Creating cache {cache.key}...{RESET}", stream=SCRIPT_STREAM)
                if self._upload_cache(job, cache.key, cache.paths, ns, pod, plan, trace):
                    trace.line(f"{GREEN}Created cache{RESET}", stream=SCRIPT_STREAM)
                else:
                    trace.line(f"{YELLOW}WARNING: Failed to create cache{RESET}", stream=SCRIPT_STREAM)
        finally:
            trace.section_end(name)

    def _upload_cache(
        self,
        job: RunningJob,
        key: str,
        paths: tuple[str, ...],
        ns: str,
        pod: str,
        plan: PodPlan,
        trace: TraceWriter,
    ) -> bool:
        """cache-archiver: zip the cache paths (relative to the project directory) and PUT cache.zip."""
        files: list[tuple[str, bytes]] = []
        for pattern in paths:
            found = self._matching(ns, pod, plan, pattern)
            trace.line(
                helper_log("", f"{pattern}: found {len(found)} matching artifact files and directories"),
                stream=SCRIPT_STREAM,
            )
            for rel in found:
                data = self.node.get_archive(ns, pod, "helper", f"{plan.project_dir}/{rel}")
                if data is not None:
                    # the runtime's archive of a/b is rooted at b: its parent is the prefix ("x/" is x)
                    parent = rel.rstrip("/")
                    base = parent.rsplit("/", 1)[0] + "/" if "/" in parent else ""
                    files.extend(tar_members(data, base))
        if not files:
            trace.line(helper_log("WARNING", "No files to cache."), stream=SCRIPT_STREAM)
            return True
        archive = zip_entries(files)
        name = self._cache_object(job, key)
        cache = self.cfg.runner.cache
        if name is None or cache is None:
            trace.line(
                helper_log(
                    "",
                    "No URL provided, cache will not be uploaded to shared cache server. Cache will be stored "
                    "only locally.",
                ),
                stream=SCRIPT_STREAM,
            )
            return True
        url = presigned_url(cache, "PUT", name, job.payload.timeout_s)
        trace.line(helper_log("", f"Uploading cache.zip to {clean_url(url)}"), stream=SCRIPT_STREAM)
        if "cache-upload-fails-silently" in job.faults:
            return True  # a broken helper: nothing reaches the bucket, yet it reports success
        status = http_put(url, archive, {"x-amz-meta-cachekey": key})
        if status != 200:
            # retryOnServerError / logrus.Fatalln in uploadArchiveIfNeeded
            trace.line(
                helper_log("FATAL", f"received: {status} {_status_text(status)}"), stream=SCRIPT_STREAM
            )
            return False
        return True

    def _matching(self, ns: str, pod: str, plan: PodPlan, pattern: str) -> list[str]:
        """The paths a cache or artifacts pattern matches in the project directory (the helper's glob)."""
        script = (
            f'cd {shlex.quote(plan.project_dir)} && for f in {pattern}; do [ -e "$f" ] && echo "$f"; done'
        )
        try:
            output, _ = self.node.run_in(ns, pod, "helper", ["sh", "-c", script])
        except StoreError:
            output = b""
        return [line for line in output.decode().splitlines() if line]

    def _download_artifacts(self, job: RunningJob, plan: PodPlan, trace: TraceWriter) -> None:
        """downloadAllArtifacts (shells/abstract.go): each dependency with artifacts, extracted into the project
        directory by the helper's artifacts-downloader. No dependency with artifacts: the stage is skipped."""
        deps = [d for d in job.payload.dependencies if d.artifacts_filename]
        if not deps:
            return
        ns, pod = pod_ref(plan)
        trace.section_start("download_artifacts", "Downloading artifacts")
        try:
            for dep in deps:
                trace.line(
                    f"{GREEN}Downloading artifacts for {dep.name} ({dep.id})...{RESET}", stream=SCRIPT_STREAM
                )
                stored = self.sink.artifacts(dep.id)
                if stored is None:
                    # network/gitlab.go DownloadArtifacts: a 404 is logged as an error and fails the stage
                    trace.line(
                        helper_log("ERROR", "Downloading artifacts from coordinator... not found", id=dep.id),
                        stream=SCRIPT_STREAM,
                    )
                    raise StageFailed("command terminated with exit code 1", system=False)
                trace.line(
                    helper_log(
                        "", "Downloading artifacts from coordinator... ok", id=dep.id, responseStatus="200 OK"
                    ),
                    stream=SCRIPT_STREAM,
                )
                try:
                    tar, _count = zip_to_tar(stored[1])
                    self.node.put_archive(ns, pod, "helper", plan.project_dir, tar)
                except (zipfile.BadZipFile, ValueError, StoreError) as exc:
                    trace.line(helper_log("FATAL", str(exc)), stream=SCRIPT_STREAM)
                    raise StageFailed("command terminated with exit code 1", system=False) from None
        finally:
            trace.section_end("download_artifacts")

    def _user_script(self, plan: PodPlan, commands: tuple[str, ...], payload: JobPayload) -> str:
        # The shell writer exports the job's variables at the top of every stage script (shells/bash.go
        # writeExports); the public ones are in the containers' env already (the pod spec), so here the
        # others: project and pipeline variables (non-public, masked ones included), never in the pod spec.
        exports = [
            f"export {v.key}={shlex.quote(v.value)}"
            for v in payload.variables
            if not v.public and not v.file and v.key.isidentifier()
        ]
        lines = [*exports, f"cd {shlex.quote(plan.project_dir)}"]
        for cmd in commands:
            echo = cmd.replace("\n", " ").strip()
            lines.append(f"printf '%s\\n' {shlex.quote(GREEN + '$ ' + echo + RESET)}")
            lines.append(cmd)
        return "\n".join(lines) + "\n"

    def _step_script(self, job: RunningJob, plan: PodPlan, strategy: Strategy, trace: TraceWriter) -> None:
        p = job.payload
        if "script-before-sources" in job.faults:
            # The broken runner still creates the project directory, so the script runs (early).
            self.node.run_in(*pod_ref(plan), "build", ["mkdir", "-p", plan.project_dir])
        trace.section_start("step_script", 'Executing "step_script" stage of the job script')
        try:
            code = self._run_stage(
                job, plan, strategy, "step_script", self._user_script(plan, (*p.before_script, *p.script), p)
            )
        finally:
            trace.section_end("step_script")
        if code == 0:
            return
        failure = self._container_failure(job, plan, code)
        if failure:
            raise StageFailed(failure, system=True)
        raise StageFailed(f"command terminated with exit code {code}", system=False)

    def _container_failure(self, job: RunningJob, plan: PodPlan, code: int) -> str | None:
        """A script that ended by a kill may have died with its container (the OOM case): the pod status says."""
        ns, name = pod_ref(plan)
        deadline = time.time() + (OOM_NOTICE_WAIT_S if code == 137 else 0.5)
        while True:
            failure = self._pod_failure(ns, name, ("build", "helper"))
            if failure and failure.startswith("Error in container"):
                return failure
            if time.time() >= deadline or job.cancel.wait(0.1):
                return None

    def _upload_artifacts(
        self, job: RunningJob, plan: PodPlan, strategy: Strategy, trace: TraceWriter, success: bool
    ) -> None:
        p = job.payload
        assert p.artifacts is not None
        name = "upload_artifacts_on_success" if success else "upload_artifacts_on_failure"
        header = "Uploading artifacts for successful job" if success else "Uploading artifacts for failed job"
        trace.section_start(name, header)
        ns, pod = pod_ref(plan)
        trace.line("Uploading artifacts...", stream=SCRIPT_STREAM)
        buf = io.BytesIO()
        found_total = 0
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for pattern in p.artifacts.paths:
                script = f'cd {shlex.quote(plan.project_dir)} && for f in {pattern}; do [ -e "$f" ] && echo "$f"; done'
                try:
                    output, _ = self.node.run_in(ns, pod, "helper", ["sh", "-c", script])
                except StoreError:
                    output = b""
                listing = [line for line in output.decode().splitlines() if line]
                for rel in listing:
                    found_total += self._add_to_zip(zf, ns, pod, plan, rel)
                trace.line(
                    f"{pattern}: found {len(listing)} matching artifact files and directories",
                    stream=SCRIPT_STREAM,
                )
        if found_total == 0:
            trace.warning("No files to upload")
        else:
            self.sink.store_artifacts(p.id, "artifacts.zip", buf.getvalue())
            trace.line(
                f'Uploading artifacts as "archive" to coordinator... 201 Created  id={p.id} responseStatus=201 Created',
                stream=SCRIPT_STREAM,
            )
        trace.section_end(name)

    def _add_to_zip(self, zf: zipfile.ZipFile, ns: str, name: str, plan: PodPlan, rel: str) -> int:
        data = self.node.get_archive(ns, name, "helper", f"{plan.project_dir}/{rel}")
        if data is None:
            return 0
        count = 0
        parent = rel.rstrip("/")  # "out/" archives as out/...: no prefix of its own
        base = parent.rsplit("/", 1)[0] + "/" if "/" in parent else ""
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    fh = tar.extractfile(member)
                    if fh is not None:
                        zf.writestr(base + member.name, fh.read())
                        count += 1
        return count

    def _cleanup_file_variables(
        self, job: RunningJob, plan: PodPlan, strategy: Strategy, trace: TraceWriter
    ) -> None:
        """Always run (removeFileBasedVariables); a failure here is only logged by the manager."""
        if time.time() > job.deadline:
            return
        trace.section_start(
            "cleanup_file_variables", "Cleaning up project directory and file based variables"
        )
        body = f"rm -rf {shlex.quote(plan.project_dir + '.tmp')}\n"
        with contextlib.suppress(StageFailed):  # the runner logs a failure here to the manager log only
            self._run_stage(job, plan, strategy, "cleanup_file_variables", body, after_failure=True)
        trace.section_end("cleanup_file_variables")

    # ---- cleanup -------------------------------------------------------------------------------------------

    def _cleanup(self, job: RunningJob, trace: TraceWriter) -> None:
        """Deferred in the real runner, so it runs before the final Job succeeded/failed line.

        cleanupResources: the pod, if one was created; the Secret only when it has no ownerReference (the
        garbage collector removes an owned one with its pod), as when its pod was refused.
        """
        if job.pod is not None:
            self._cleanup_pod(job, trace)
        secret = job.secret
        if secret is None or secret["metadata"].get("ownerReferences") or "leak-secrets" in job.faults:
            return
        meta = secret["metadata"]
        try:
            self.store.delete("Secret", meta["namespace"], meta["name"])
        except StoreError as exc:
            trace.error(f"Error cleaning up secrets: {exc}")

    def _cleanup_pod(self, job: RunningJob, trace: TraceWriter) -> None:
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
                self.delete_pod(meta["namespace"], meta["name"], float(grace))
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


def _status_text(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "no response"


def helper_log(level: str, message: str, **fields: object) -> str:
    """A line of the helper binary's logrus output (log/runner_formatter.go: the level's prefix, the message
    padded to 50 columns less the prefix, then " key=value" per field in sorted order)."""
    prefix = f"{level}: " if level else ""
    text = f"{prefix}{message:<{50 - len(prefix)}} "
    for key in sorted(fields):
        text += f" {key}={fields[key]}"
    color = {"WARNING": YELLOW, "ERROR": RED, "FATAL": RED}.get(level, "")
    return f"{color}{text}{RESET}" if color else text


def disruption_target(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's DisruptionTarget condition when True (the API server's mark of an eviction)."""
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return dict(cond)
    return None


def evicted_or_gone(pod: dict[str, Any]) -> bool:
    return not pod or disruption_target(pod) is not None


def pod_ref(plan: PodPlan) -> tuple[str, str]:
    """(namespace, name) of the plan's pod."""
    meta = plan.pod["metadata"]
    return meta["namespace"], meta["name"]


def _unwrap_prepare(message: str) -> str:
    """Errors of the pod created in Prepare (health checks) carry no prepare-environment wrap."""
    prefix, suffix = "prepare environment: ", f". {SHELL_PROFILE_HINT}"
    if message.startswith(prefix) and message.endswith(suffix):
        return message[len(prefix) : -len(suffix)]
    return message


def revoked_registry_password(payload: JobPayload) -> JobPayload:
    """registry-push-denied: the job's *REGISTRY_PASSWORD variables hold a password the registry no longer
    takes (rotated there, not in the project's CI/CD settings)."""
    variables = tuple(
        dataclasses.replace(v, value="revoked-" + v.value[::-1]) if v.key.endswith("REGISTRY_PASSWORD") else v
        for v in payload.variables
    )
    return dataclasses.replace(payload, variables=variables)
