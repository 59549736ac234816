"""Run a plan on a cluster: preflight, push, pipeline, follow jobs and pods, collect the evidence bundle."""

from __future__ import annotations

import contextlib
import queue
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gitlab.exceptions
import requests

from pytest_runnerconf import rbac, retry, sweep
from pytest_runnerconf.collect import Collector
from pytest_runnerconf.errors import (
    GitLabError,
    KubeError,
    ProbeProtocolError,
    RunnerConfError,
    RunnerConfWarning,
    RunTimeout,
)
from pytest_runnerconf.evidence import (
    Diagnosis,
    JobEvidence,
    PodObservation,
    RunEvidence,
    records_from_trace,
    save,
)
from pytest_runnerconf.gitlab_driver import GitLabDriver, JobNotRetryable
from pytest_runnerconf.interrupts import Interrupted, signal_name, since_signal
from pytest_runnerconf.kube_driver import (
    SECRETS,
    KubeDriver,
    PodEvent,
    PodWatch,
    SecretsForbidden,
    WatchFailed,
    secret_meta,
)
from pytest_runnerconf.marker import BRANCH_PREFIX, commit_message, scratch_branch
from pytest_runnerconf.pending import diagnose, never_ran, pending_deadline
from pytest_runnerconf.plan import RUN_ID_VARIABLE, Plan, job_directives, job_names, render_pipeline
from pytest_runnerconf.podjob import POD_LABEL, identify, is_runner_pod, same_token, trace_token
from pytest_runnerconf.profile import Profile
from pytest_runnerconf.progress import FINISHED, Progress, RunChanges
from pytest_runnerconf.rfc3339 import epoch
from pytest_runnerconf.runner_config import configmap_of
from pytest_runnerconf.trace import parse_trace

NOT_STARTED = frozenset({"created", "pending", "waiting_for_resource", "preparing", "scheduled"})
# How the run notes the Eviction it made of a job's pod ("evict job disruption-evict: eviction of pod P accepted (201)"):
# the disruption checks find what the API server answered by this prefix and the job name.
EVICTION_NOTE = "evict job"
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 3.0
CANCEL_GRACE_S = 30.0  # how long we watch our pods go away after cancelling on an error
STRAY_MARGIN_S = 300.0
DEFAULT_JOB_TIMEOUT_S = 3600.0  # GitLab's default job timeout, for a finished pod that names no bound
# The marks a run records in RunEvidence.timings, in order: the branch pushed, the pipeline created, every
# job finished, every pod (and Secret) gone or the cleanup deadline passed, the evidence collected.
TIMING_MARKS = ("pushed", "pipeline_created", "jobs_finished", "cleanup_done", "collected")


@dataclass
class PodTracker:
    """Folds pod watch events into one PodObservation per pod of PROJECT_ID (other jobs' pods are kept too).

    The watch selects on the `pod` label, which every runner since 16.0 sets (the project label only came in
    17.9), so pods of other projects arrive too and are dropped here.
    """

    pods: dict[str, PodObservation] = field(default_factory=dict)
    job_of: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # pod name -> its runner's short token
    project_id: int | None = None

    def apply(self, event: PodEvent) -> None:
        pod = event.pod
        name = event.name
        obs = self.pods.get(name)
        if obs is None:
            who = identify(pod)
            if self.project_id is not None and who.project_id != self.project_id:
                return
            if not is_runner_pod(pod):
                return
            obs = PodObservation(name=name, first_seen=event.time, spec=pod)
            self.pods[name] = obs
            if who.job_id is not None:
                self.job_of[name] = who.job_id
            if who.token:
                self.tokens[name] = who.token
        obs.last = pod
        obs.timeline.append(timeline_entry(event))
        if event.type == "DELETED":
            obs.deleted_at = event.time

    def for_job(self, job_id: int) -> PodObservation | None:
        names = [n for n, j in self.job_of.items() if j == job_id]
        return self.pods[names[-1]] if names else None

    def alive(self, job_ids: set[int]) -> list[str]:
        return [n for n, j in self.job_of.items() if j in job_ids and self.pods[n].deleted_at is None]

    def phase(self, name: str) -> str:
        return str(self.pods[name].last.get("status", {}).get("phase") or "")


def timeline_entry(event: PodEvent) -> dict[str, Any]:
    """One watch event as the evidence keeps it; containers map name -> the Kubernetes `state` object."""
    status = event.pod.get("status") or {}
    containers: dict[str, Any] = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            containers[cs.get("name", "")] = cs.get("state") or {}
    return {
        "time": event.time,
        "type": event.type,
        "phase": status.get("phase"),
        "containers": containers,
        "deletionTimestamp": event.pod.get("metadata", {}).get("deletionTimestamp"),
    }


@dataclass
class _Run:
    """State shared by the phases of one execute() call."""

    profile: Profile
    run_id: str
    changes: RunChanges
    gitlab: GitLabDriver
    kube: KubeDriver
    watch: PodWatch | None = None
    secret_watch: PodWatch | None = None  # the runner Secrets' metadata, into the same queue as the pods'
    events: queue.Queue[PodEvent | WatchFailed] = field(default_factory=queue.Queue)
    collector: Collector | None = None
    tracker: PodTracker = field(default_factory=PodTracker)
    pipeline: dict[str, Any] = field(default_factory=dict)
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    seen_status: dict[int, tuple[str, float]] = field(default_factory=dict)
    seen_running: dict[int, float] = field(default_factory=dict)  # first time each job was seen running
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    directives: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)  # the pipeline's variables
    cancelled: set[int] = field(default_factory=set)
    evicted: set[int] = field(default_factory=set)  # jobs whose pod the run tried to evict
    branch: str = ""
    pushing: bool = False  # the branch POST was sent: the branch may exist even if its answer was lost
    cleaned: list[str] = field(default_factory=list)  # what an abort undid, for the interrupt summary
    left: list[str] = field(default_factory=list)  # what it could not undo
    # Per-job Secrets by name: first_seen, deleted_at, owner_references; None when they cannot be listed.
    secrets: dict[str, dict[str, Any]] | None = field(default_factory=dict)
    secrets_before: set[str] | None = None  # present before the pipeline: not this run's
    secrets_skipped: str = ""  # why Secrets were not looked at although a check could use them (RBAC)
    stray_error: str = ""  # the stray-pod listing failed: the stray check cannot judge
    diagnoses: dict[int, Diagnosis] = field(default_factory=dict)  # jobs whose pod never started
    unfinished_at_start: set[int] | None = None  # the project's other pipelines still going when we began
    retries: retry.Retries = field(default_factory=retry.Retries)  # --runnerconf-retry and what it replaced
    timings: dict[str, float] = field(default_factory=dict)  # TIMING_MARKS reached, this machine's clock

    def mark(self, name: str) -> None:
        self.timings[name] = time.time()

    @property
    def secret_name_part(self) -> str:
        return f"-project-{self.gitlab.project_id}-"  # in every per-job Secret's name, of any runner version

    def start_secrets(self) -> None:
        """List the runner Secrets once (those there now are not this run's), then watch them from that list.

        Pods have their watch; the Secrets have one too (metadata only): a deletion is timed when it happens,
        and the run stops waiting the moment the last one goes, without asking the API again and again.
        """
        if self.secrets is None:
            return
        try:
            listed, version = self.kube.list_secret_meta(self.secret_name_part)
        except SecretsForbidden as exc:
            self.secrets, self.secrets_skipped = None, str(exc)
            return
        except KubeError as exc:
            self.notes.append(f"per-job Secrets not observed: {exc}")
            self.secrets = None
            return
        now = time.time()
        self.secrets_before = {str(meta["name"]) for meta in listed}
        for meta in listed:
            self._secret_seen(meta, now, before=True)
        self.secret_watch = self.kube.watch_secrets(version, self.events).start()

    def _secret_seen(self, meta: dict[str, Any], at: float, *, before: bool = False) -> None:
        assert self.secrets is not None
        seen = self.secrets.setdefault(
            str(meta["name"]), {"first_seen": at, "deleted_at": None, "before": before}
        )
        seen.update({k: v for k, v in meta.items() if k != "name"})

    def apply_secret(self, event: PodEvent) -> None:
        """Fold one Secret watch event into `secrets` (only the project's per-job Secrets are kept)."""
        meta = secret_meta(event.pod)
        name = str(meta["name"] or "")
        if self.secrets is None or self.secret_name_part not in name:
            return
        if event.type != "DELETED":
            self._secret_seen(meta, event.time)
            return
        seen = self.secrets.setdefault(name, {"first_seen": None, "deleted_at": None, "before": False})
        if seen["deleted_at"] is None:
            seen["deleted_at"] = event.time
            if event.relisted:
                seen["upper_bound"] = True  # gone while the watch was expired: deleted by then, not then

    def secret_watch_failed(self, failure: WatchFailed) -> None:
        """The Secret watch gave up: the run goes on; RC-CLN-005 says why it cannot judge."""
        if isinstance(failure.error, SecretsForbidden):
            self.secrets, self.secrets_skipped = None, str(failure.error)
        else:
            self.notes.append(f"per-job Secrets not observed: {failure.error}")
            self.secrets = None

    def settle_secrets(self) -> None:
        """One last list after the wait: what the watch had not delivered yet is timed by this look.

        A Secret our pod references existed when the pod was made (the runner creates it first); one the run
        never saw lived while the watch was expired, so it was gone by this look: an upper bound on when.
        """
        if self.secrets is None:
            return
        try:
            listed, _ = self.kube.list_secret_meta(self.secret_name_part)
        except KubeError as exc:
            self.notes.append(f"the last look at the per-job Secrets failed: {exc}")
            return
        now = time.time()
        self.drain()  # events already queued carry their exact times
        secrets = self.secrets_now()  # the drain may have met the Secret watch's failure
        if secrets is None:
            return
        present = {str(meta["name"]) for meta in listed}
        for meta in listed:
            if meta["name"] not in secrets:  # the watch had not delivered it yet: still there, seen now
                self._secret_seen(meta, now)
        for name, seen in secrets.items():
            if name not in present and seen["deleted_at"] is None:
                seen["deleted_at"], seen["upper_bound"] = now, True
        for name in self.referenced_secrets() - present - secrets.keys():
            secrets[name] = {
                "first_seen": None,
                "deleted_at": now,
                "before": False,
                "never_listed": True,
            }

    def secrets_now(self) -> dict[str, dict[str, Any]] | None:
        return self.secrets

    def referenced_secrets(self) -> set[str]:
        """The Secrets our job pods name in imagePullSecrets."""
        return {
            str(ref.get("name"))
            for name, job_id in self.tracker.job_of.items()
            if job_id in self.jobs
            for ref in self.tracker.pods[name].spec.get("spec", {}).get("imagePullSecrets") or []
        }

    def pending_secrets(self) -> list[str]:
        """This run's per-job Secrets (named in its pods' imagePullSecrets) not deleted yet.

        Other runs may share the namespace (and leak Secrets on purpose): only our pods' Secrets count.
        """
        if self.secrets is None:
            return []
        ours = self.referenced_secrets()
        before = self.secrets_before or set()
        return [
            n for n, s in self.secrets.items() if s["deleted_at"] is None and n in ours and n not in before
        ]

    def drain(self, wait_s: float = 0.0) -> None:
        """Apply queued pod and Secret events; block up to wait_s for the first one (our only sleep)."""
        block = wait_s > 0
        while True:
            try:
                item = self.events.get(timeout=wait_s) if block else self.events.get_nowait()
            except queue.Empty:
                return
            block = False
            if isinstance(item, WatchFailed):
                if item.resource == SECRETS:
                    self.secret_watch_failed(item)
                    continue
                raise item.error
            if item.resource == SECRETS:
                self.apply_secret(item)
            else:
                self.tracker.apply(item)

    def job_ids(self) -> set[int]:
        return set(self.jobs) | self.retries.replaced_ids  # a retried attempt's pod is still ours to watch go

    def report(self, waiting: tuple[str, int] = ("", 0)) -> None:
        """Tell the progress display what changed since the last look; it decides what to show."""
        pods = {
            name: (job_id, self.tracker.pods[name].deleted_at is not None)
            for name, job_id in self.tracker.job_of.items()
            if job_id in self.jobs
        }
        self.changes.look(self.pipeline, self.jobs, pods, waiting)


def new_run_id() -> str:
    import secrets

    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def execute(
    profile: Profile,
    plan: Plan,
    run_id: str,
    evidence_dir: Path,
    progress: Progress,
    variables: Mapping[str, str] | None = None,
    *,
    retries: int = 0,
) -> RunEvidence:
    """Run PLAN on the cluster of PROFILE and save the evidence bundle in EVIDENCE_DIR.

    VARIABLES are passed to the pipeline besides the run id (a target provider's, e.g. local faults).
    RETRIES: how often a job the infrastructure ended is retried (retry.py says which ends qualify).

    Raises:
        ConfigError: the profile cannot be used (token unset, bad template).
        GitLabError, KubeError: a preflight or API call failed (nothing is left behind).
        RunTimeout: no job was picked up, a pod stayed Pending, or the run exceeded its deadline.
    """
    ci_yaml, files = render_pipeline(plan, profile, run_id)
    changes = RunChanges(progress, profile.name)
    changes.preflight(profile.gitlab_url, profile.namespace)
    gitlab = GitLabDriver(profile)
    facts = gitlab.preflight()
    gitlab.readiness(BRANCH_PREFIX)
    kube = KubeDriver(profile)
    run = _Run(profile=profile, run_id=run_id, changes=changes, gitlab=gitlab, kube=kube)
    run.variables = {**dict(variables or {}), RUN_ID_VARIABLE: run_id}
    run.directives = job_directives(plan, profile, run_id)
    run.retries = retry.Retries(limit=retries, judged=plan.judged)
    run.tracker.project_id = int(gitlab.project_id)
    selector = POD_LABEL  # set by every runner version; the project is matched per pod (PodTracker)
    resource_version, secret_gap = kube.preflight(selector, rbac.rules(plan.reads, configmap_of(profile)))
    facts["kubernetes_version"] = kube.server_version()
    stray, run.stray_error = stray_pods(kube, run.notes)
    with contextlib.suppress(GitLabError):
        run.unfinished_at_start = {int(p["id"]) for p in gitlab.unfinished_pipelines()}
    _warn_leftovers(run)
    branch = run.branch = scratch_branch(run_id)
    planned = job_names(ci_yaml)
    run.watch = kube.watch_pods(selector, resource_version, run.events).start()
    if "secrets" not in plan.reads:
        run.secrets = None  # no selected check reads Secrets: do not list them at all (least privilege)
    elif secret_gap:
        run.secrets, run.secrets_skipped = None, secret_gap  # the review said no: do not even try
    run.start_secrets()
    run.collector = Collector(gitlab, kube)
    try:
        try:
            _run_pipeline(run, branch, {".gitlab-ci.yml": ci_yaml, **files})
            leftover = _await_cleanup(run)
            run.mark("cleanup_done")
        finally:
            run.watch.stop()
            if run.secret_watch is not None:
                run.secret_watch.stop()
        evidence = _collect(run, facts, branch, planned, stray, leftover)
        evidence.secrets, evidence.secrets_skipped = run.secrets, run.secrets_skipped
        save(evidence, evidence_dir, secrets=(_token(profile),))
        changes.done(len(leftover.get("pods") or ()))
    except KeyboardInterrupt as exc:
        # Ctrl-C, SIGTERM or SIGHUP: _run_pipeline has cancelled and deleted what it could; say what is left.
        raise _interrupted(run, exc, facts, planned, stray, evidence_dir) from None
    finally:
        run.collector.close()
    return evidence


def _warn_leftovers(run: _Run) -> None:
    """Say so when earlier runs that died left branches or pipelines here (`runnerconf sweep` removes them)."""
    try:
        leftovers = sweep.find(run.gitlab, None, run.profile.expect.run_deadline_s, pods=False)
    except RunnerConfError as exc:
        run.notes.append(f"leftovers of earlier runs could not be looked for: {exc}")
        return
    if leftovers:
        message = sweep.warning(leftovers, run.profile.name)
        run.notes.append(message)
        warnings.warn(RunnerConfWarning(message), stacklevel=3)


def _token(profile: Profile) -> str:
    with contextlib.suppress(RunnerConfError):
        return profile.token()
    return ""


def _run_pipeline(run: _Run, branch: str, files: dict[str, str]) -> None:
    """Push, create the pipeline, follow it; always delete the branch, cancel on any error."""
    try:
        run.pushing = True
        run.gitlab.push_files(branch, files, commit_message(run.run_id))
        run.mark("pushed")
        run.pipeline = run.gitlab.create_pipeline(branch, run.variables, run.notes)
        run.mark("pipeline_created")
        _follow(run)
        run.mark("jobs_finished")
    except BaseException:
        _abort(run)
        raise
    finally:
        if run.pushing:
            _delete_branch(run, branch)


def _delete_branch(run: _Run, branch: str) -> None:
    try:
        run.gitlab.delete_branch(branch)
        run.cleaned.append(f"deleted branch {branch}")
    except GitLabError as exc:
        run.notes.append(f"the scratch branch {branch} could not be deleted: {exc}")
        run.left.append(f"branch {branch}")


def _abort(run: _Run) -> None:
    """Cancel our pipeline and watch our jobs end and pods go, within a bound; never masks the original error.

    When the pipeline's creation answer was lost (an interrupt or a dead connection mid-POST), the pipelines
    on our scratch branch are ours: they are found by the ref and cancelled too.
    """
    deadline = time.monotonic() + min(CANCEL_GRACE_S, run.profile.expect.cleanup_deadline_s)
    with contextlib.suppress(RunnerConfError):
        ours = [run.pipeline] if run.pipeline else []
        if not ours and run.pushing:
            ours = run.gitlab.pipelines_for_ref(run.branch)
            run.pipeline = ours[0] if ours else {}
        for pipeline in ours:
            if pipeline.get("status") not in FINISHED:
                run.gitlab.cancel_pipeline(int(pipeline["id"]))
                run.cleaned.append(f"cancelled pipeline #{pipeline['id']}")
    with contextlib.suppress(RunnerConfError):
        while run.pipeline and time.monotonic() < deadline:
            _refresh_jobs(run)
            settled = all(j.get("status") in FINISHED for j in run.jobs.values())
            if settled and not run.tracker.alive(run.job_ids()):
                break
            run.drain(wait_s=0.5)
    unfinished = [j for j in run.jobs.values() if j.get("status") not in FINISHED]
    if run.pipeline and unfinished:
        run.left.append(f"pipeline #{run.pipeline.get('id')} ({len(unfinished)} jobs not yet canceled)")
    run.left += [f"pod {name}" for name in run.tracker.alive(run.job_ids())]


def _interrupted(
    run: _Run,
    exc: KeyboardInterrupt,
    facts: dict[str, Any],
    planned: list[str],
    stray: list[dict[str, Any]],
    evidence_dir: Path,
) -> Interrupted:
    """Save what the run saw as a partial bundle and phrase the one sentence the session ends with."""
    signame = signal_name(exc)
    took = since_signal()
    left = list(dict.fromkeys(run.left))
    run.notes.append(
        f"interrupted by {signame} {time.time() - run.started:.0f}s into the run"
        + (f"; cleanup took {took:.1f}s" if took is not None else "")
        + (f"; left behind: {', '.join(left)}" if left else "; nothing left behind")
    )
    jobs = {
        str(job.get("name")): JobEvidence(
            name=str(job.get("name")),
            job=job,
            trace="",
            pod=run.tracker.for_job(job_id),
            started_at=epoch(job.get("started_at")),
            finished_at=epoch(job.get("finished_at")),
            observed_end=observed_end(run, job_id),
            observed_start=run.seen_running.get(job_id),
            diagnosis=run.diagnoses.get(job_id),
        )
        for job_id, job in sorted(run.jobs.items())
    }
    leftover = {"interrupted": signame, "left": left, "pods": run.tracker.alive(run.job_ids())}
    evidence = _evidence(run, facts, run.branch, planned, stray, leftover, jobs)
    evidence.secrets, evidence.secrets_skipped = run.secrets, run.secrets_skipped
    saved = ""
    with contextlib.suppress(RunnerConfError, OSError):
        save(evidence, evidence_dir, secrets=(_token(run.profile),))
        saved = f"; partial evidence in {evidence_dir}"
    done = ", ".join(dict.fromkeys(run.cleaned)) or "nothing had been created yet"
    what = f"left behind: {', '.join(left)}" if left else "nothing left behind"
    timing = f" (cleanup took {took:.1f}s)" if took is not None else ""
    return Interrupted(signame, f"interrupted by {signame}: {done}; {what}{timing}{saved}")


def _refresh_jobs(run: _Run) -> bool:
    """Re-read the pipeline's jobs; True when any status changed."""
    changed = False
    for job in run.gitlab.pipeline_jobs(int(run.pipeline["id"])):
        job_id = int(job["id"])
        if job_id in run.retries.replaced_ids:
            continue  # a retried attempt (a GitLab that still lists it): its successor stands for it
        status = str(job.get("status"))
        if run.seen_status.get(job_id, ("", 0.0))[0] != status:
            run.seen_status[job_id] = (status, time.time())
            changed = True
        if status not in NOT_STARTED:
            run.seen_running.setdefault(job_id, run.seen_status[job_id][1])
        run.jobs[job_id] = job
    return changed


def _follow(run: _Run) -> None:
    expect = run.profile.expect
    created = queued = time.monotonic()  # queued: when the latest jobs were handed to GitLab (for pickup)
    backoff = BACKOFF_START_S
    while True:
        run.drain()
        if _refresh_jobs(run):
            backoff = BACKOFF_START_S
        if _retry_infrastructure(run):
            queued = time.monotonic()
        _cancel_on_records(run)
        _evict_on_records(run)
        _collect_finished(run)
        run.report()
        if run.jobs and all(j.get("status") in FINISHED for j in run.jobs.values()):
            run.pipeline = run.gitlab.pipeline(int(run.pipeline["id"]))
            return
        waited = time.monotonic() - created
        if not run.jobs:
            _check_pipeline_alive(run)
        elif time.monotonic() - queued > expect.pickup_deadline_s and all(
            j.get("status") in NOT_STARTED for j in run.jobs.values()
        ):
            tags = ", ".join(run.profile.runner_tags) or "(none)"
            raise RunTimeout(
                f"no job of pipeline #{run.pipeline['id']} left pending within "
                f"{expect.pickup_deadline_s:g}s; "
                f"no runner with tags [{tags}] picked them up (check clusters.{run.profile.name}.runner_tags "
                "and that the runner is online)",
                waited,
                ", ".join(sorted({str(j.get("status")) for j in run.jobs.values()})),
            )
        _check_pending_pods(run)
        if waited > expect.run_deadline_s:
            raise RunTimeout(
                f"pipeline #{run.pipeline['id']} did not finish within {expect.run_deadline_s:g}s "
                f"(clusters.{run.profile.name}.expect.run_deadline_s)",
                waited,
                _job_states(run),
            )
        run.drain(wait_s=backoff)
        backoff = min(backoff * 1.5, BACKOFF_MAX_S)


def _retry_infrastructure(run: _Run) -> bool:
    """Retry each newly failed job whose end the infrastructure caused, within the budget; True if any was.

    The new job takes the old one's place in run.jobs (GitLab's pipeline jobs list only the latest attempt);
    the old one is kept as an attempt for the evidence.
    """
    if run.retries.limit <= 0:
        return False
    done = False
    for job_id, job in list(run.jobs.items()):
        if job_id in run.retries.looked_at or not (
            job.get("status") == "failed" or (job.get("status") == "canceled" and job_id in run.diagnoses)
        ):
            continue
        pod = run.tracker.for_job(job_id)
        if pod is not None:
            pod.events = run.kube.pod_events(pod.name)  # the classification reads the pod's Warnings
        attempt = run.retries.consider(
            JobEvidence(
                name=str(job.get("name")),
                job=job,
                trace=run.gitlab.trace(job_id),
                pod=pod,
                started_at=epoch(job.get("started_at")),
                finished_at=epoch(job.get("finished_at")),
                diagnosis=run.diagnoses.get(job_id),
            )
        )
        if attempt is None:
            continue
        try:
            new = run.gitlab.retry_job(job_id)
        except JobNotRetryable as exc:
            run.notes.append(f"job {job.get('name')} was not retried: {exc}")
            continue
        run.retries.retried(str(job.get("name")), attempt)
        run.notes.append(f"job {job.get('name')} (#{job_id}) retried as #{new['id']}: {attempt.sentence}")
        del run.jobs[job_id]
        run.jobs[int(new["id"])] = new
        run.seen_status[int(new["id"])] = (str(new.get("status")), time.time())
        done = True
    return done


def _cancel_on_records(run: _Run) -> None:
    """Cancel each running job whose x-runnerconf cancel_on_record probe has printed its record."""
    for job_id, job in run.jobs.items():
        probe = run.directives.get(str(job.get("name")), {}).get("cancel_on_record")
        if not probe or job_id in run.cancelled or job.get("status") != "running":
            continue
        try:
            seen = parse_trace(run.gitlab.trace(job_id)).records_for(str(probe))
        except ProbeProtocolError:
            seen = []
        if seen:
            run.gitlab.cancel_job(job_id)
            run.cancelled.add(job_id)


def _evict_on_records(run: _Run) -> None:
    """Evict the pod of each running job whose x-runnerconf evict_on_record probe has printed its record.

    Tried once per job; what the API server answered goes into the notes, where the disruption checks read
    it (the eviction's effect they read from the pod itself: its DisruptionTarget condition and deletion).
    """
    for job_id, job in run.jobs.items():
        probe = run.directives.get(str(job.get("name")), {}).get("evict_on_record")
        if not probe or job_id in run.evicted or job.get("status") != "running":
            continue
        pod = run.tracker.for_job(job_id)
        if pod is None or pod.deleted_at is not None:
            continue  # the watch has not shown its pod yet: try again on the next pass
        try:
            seen = parse_trace(run.gitlab.trace(job_id)).records_for(str(probe))
        except ProbeProtocolError:
            seen = []
        if not seen:
            continue
        run.evicted.add(job_id)
        name = job.get("name")
        try:
            answer = run.kube.evict_pod(pod.name)
        except KubeError as exc:
            run.notes.append(f"{EVICTION_NOTE} {name}: pod {pod.name} could not be evicted: {exc}")
            continue
        said = f"refused (429): {answer.message}" if answer.refused else "accepted (201)"
        run.notes.append(f"{EVICTION_NOTE} {name}: eviction of pod {pod.name} {said}")


def _job_states(run: _Run) -> str:
    return ", ".join(f"{j.get('name')}={j.get('status')}" for j in run.jobs.values())


def _check_pipeline_alive(run: _Run) -> None:
    pipeline = run.gitlab.pipeline(int(run.pipeline["id"]))
    run.pipeline = pipeline
    if pipeline.get("status") in FINISHED:
        raise GitLabError(
            f"pipeline #{pipeline.get('id')} ended {pipeline.get('status')} without any job; "
            "GitLab rejected the generated .gitlab-ci.yml or no job matched "
            f"(see {pipeline.get('web_url', 'the pipeline page')})"
        )


def _check_pending_pods(run: _Run) -> None:
    """Give up on a job whose pod stays Pending: diagnose it from its events, cancel that job, go on.

    The deadline lies below the runner's poll_timeout when the profile gives it, so the pod and its events
    are still there to read; the job's checks then say could not test, with the diagnosis as the reason.
    """
    limit, why = pending_deadline(run.profile.expect)
    now = time.time()
    for name in run.tracker.alive(run.job_ids()):
        job_id = run.tracker.job_of[name]
        obs = run.tracker.pods[name]
        if job_id in run.diagnoses or run.tracker.phase(name) != "Pending" or now - obs.first_seen <= limit:
            continue
        events = run.kube.pod_events(name)
        diagnosis = diagnose(name, obs.last, events, now - obs.first_seen, limit, why)
        run.diagnoses[job_id] = diagnosis
        run.notes.append(f"job {run.jobs[job_id].get('name')}: {diagnosis.sentence}; the run cancelled it")
        if run.jobs[job_id].get("status") not in FINISHED:
            try:
                run.gitlab.cancel_job(job_id)
            except GitLabError as exc:
                run.notes.append(f"job {run.jobs[job_id].get('name')} could not be cancelled: {exc}")
            run.cancelled.add(job_id)


def _collect_finished(run: _Run) -> None:
    """Start fetching the evidence of each job that finished and each job pod that is gone, in the background."""
    assert run.collector is not None
    for job_id, job in run.jobs.items():
        if job.get("status") in FINISHED:
            run.collector.job_finished(job_id)
    for name, job_id in run.tracker.job_of.items():
        if job_id in run.jobs and run.tracker.pods[name].deleted_at is not None:
            run.collector.pod_gone(name)


def _await_cleanup(run: _Run) -> dict[str, Any]:
    """After the last job: watch until every job pod and its Secret are DELETED or the cleanup deadline passes.

    Both watches feed the one queue, so each wait ends with the event that changes something; the garbage
    collector removes owner-referenced Secrets after their pod, so the Secrets may go last.
    """
    deadline_s = run.profile.expect.cleanup_deadline_s
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        alive, pending = run.tracker.alive(run.job_ids()), run.pending_secrets()
        if not alive and not pending:
            break
        run.report(("pods", len(alive)) if alive else ("secrets", len(pending)))
        run.drain(wait_s=min(BACKOFF_MAX_S, max(0.0, end - time.monotonic())))
        _collect_finished(run)
    run.settle_secrets()
    run.report()
    alive = run.tracker.alive(run.job_ids())
    return {"pods": alive, "deadline_s": deadline_s} if alive else {}


def stray_pods(kube: KubeDriver, notes: list[str]) -> tuple[list[dict[str, Any]], str]:
    """Runner pods in the namespace that outlived their own deadline, and why none could be listed ("" ok).

    Every runner's pods are listed (the `pod` label, from 16.0 on); each keeps its short token so that the
    cleanup check judges only the runner under test's, once the run has seen which runner that is.
    """
    try:
        body = kube.list_pods(POD_LABEL)
    except KubeError as exc:
        # Only the cleanup checks need this; the run itself can go on without it.
        notes.append(f"stray runner pods could not be listed: {exc}")
        return [], str(exc)
    now = time.time()
    stray: list[dict[str, Any]] = []
    for pod in body.get("items") or []:
        if not is_runner_pod(pod):
            continue
        meta = pod.get("metadata", {})
        created = epoch(meta.get("creationTimestamp"))
        bound = _job_timeout(pod)
        if bound is None and pod.get("status", {}).get("phase") in ("Pending", "Running"):
            continue  # no deadline on it: a live pod may be any project's long job, not a leak
        limit = (bound or DEFAULT_JOB_TIMEOUT_S) + STRAY_MARGIN_S
        if created is not None and now - created > limit:
            who = identify(pod)
            stray.append(
                {
                    "name": meta.get("name"),
                    "creationTimestamp": meta.get("creationTimestamp"),
                    "phase": pod.get("status", {}).get("phase"),
                    "job_id": who.job_id,
                    "project_id": who.project_id,
                    "token": who.token,
                }
            )
    return stray, ""


def _job_timeout(pod: dict[str, Any]) -> float | None:
    """The pod's own bound: activeDeadlineSeconds, else the job timeout annotation (17.11+); None: neither."""
    deadline = pod.get("spec", {}).get("activeDeadlineSeconds")
    if deadline:
        return float(deadline)
    annotation = (pod.get("metadata", {}).get("annotations") or {}).get("job.runner.gitlab.com/timeout")
    return go_seconds(str(annotation)) if annotation is not None else None


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_seconds(text: str) -> float | None:
    """A Go time.Duration string ("1h0m0s", "90m", "3600s") in seconds; None when it is not one."""
    text = text.strip()
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def runner_tokens(run: _Run, jobs: dict[str, JobEvidence]) -> list[str]:
    """Short tokens of the runner under test: from this run's pods, else from its jobs' trace headers."""
    tokens = {
        run.tracker.tokens[n]
        for n, j in run.tracker.job_of.items()
        if j in run.jobs and n in run.tracker.tokens
    }
    for job in jobs.values():
        token = trace_token(job.trace)
        if token and not any(same_token(token, t) for t in tokens):
            tokens.add(token)
    return sorted(tokens)


def _collect(
    run: _Run,
    facts: dict[str, Any],
    branch: str,
    planned: list[str],
    stray: list[dict[str, Any]],
    leftover: dict[str, Any],
) -> RunEvidence:
    assert run.collector is not None
    _collect_finished(run)
    for name, job_id in run.tracker.job_of.items():
        if job_id in run.jobs:
            run.collector.pod_gone(name)  # pods still there at the deadline: their events as they are now
    jobs: dict[str, JobEvidence] = {}
    for job_id, summary in sorted(run.jobs.items()):
        jobs[str(summary.get("name"))] = _job_evidence(run, job_id)
    run.notes.extend(run.collector.capped().values())  # size caps that were hit, once per object
    evidence = _evidence(run, facts, branch, planned, stray, leftover, jobs)
    evidence.runner_tokens = runner_tokens(run, jobs)
    evidence.other_pipelines = other_pipelines(run)
    return evidence


def other_pipelines(run: _Run) -> list[int] | None:
    """The project's pipelines that may have run alongside ours: unfinished when it began, or newer than it.

    GitLab lists a project's pipelines newest first, so one page holds any created since ours.
    """
    if run.unfinished_at_start is None or not run.pipeline:
        return None
    ours = int(run.pipeline["id"])
    try:
        newest = run.gitlab.project.pipelines.list(per_page=100, get_all=False)
    except (gitlab.exceptions.GitlabError, requests.RequestException, RunnerConfError):
        return None
    later = {int(p.id) for p in newest if int(p.id) > ours}
    return sorted((later | run.unfinished_at_start) - {ours})


def _evidence(
    run: _Run,
    facts: dict[str, Any],
    branch: str,
    planned: list[str],
    stray: list[dict[str, Any]],
    leftover: dict[str, Any],
    jobs: dict[str, JobEvidence],
) -> RunEvidence:
    def pod_of(job_id: int) -> str | None:
        pod = run.tracker.for_job(job_id)
        return pod.name if pod is not None else None

    for name, job in jobs.items():
        job.retried = run.retries.earlier(name, pod_of)
    return RunEvidence(
        run_id=run.run_id,
        cluster=run.profile.name,
        profile=run.profile.summary(),
        gitlab_url=run.profile.gitlab_url,
        project=str(facts.get("project_path") or run.profile.project),
        gitlab_version=str(facts.get("gitlab_version") or ""),
        kubernetes_version=str(facts.get("kubernetes_version") or ""),
        branch=branch,
        pipeline=run.pipeline,
        plan=planned,
        started_at=run.started,
        finished_at=time.time(),
        jobs=jobs,
        stray_pods=stray,
        leftover=leftover,
        stray_error=run.stray_error,
        notes=run.notes,
        timings={**run.timings, "collected": time.time()},
    )


def _records(run: _Run, name: str, trace: str) -> dict[str, list[dict[str, Any]]]:
    # A garbled record is kept as a note: the job's other evidence still lets the other checks judge.
    try:
        return records_from_trace(parse_trace(trace))
    except ProbeProtocolError as exc:
        run.notes.append(f"job {name}: {exc}")
        return {}


def _job_evidence(run: _Run, job_id: int) -> JobEvidence:
    assert run.collector is not None
    side = run.collector.gitlab_side(job_id)
    job, trace = dict(side.job), side.trace
    if side.artifacts is not None:
        # Not a GitLab field: the downloaded archive's files, so checks can read what reached the upload.
        job["runnerconf_artifacts"] = side.artifacts
    pod = run.tracker.for_job(job_id)
    if pod is not None:
        pod.events = run.collector.events(pod.name)
    diagnosis = run.diagnoses.get(job_id)
    if diagnosis is None and pod is not None and job.get("status") == "failed" and never_ran(pod.timeline):
        # The runner gave up on the pod before the run did (no poll_timeout_s, or a longer pending deadline):
        # its events are still there to say why.
        end = pod.deleted_at if pod.deleted_at is not None else time.time()
        diagnosis = diagnose(
            pod.name, pod.last, pod.events, end - pod.first_seen, None, "until the runner gave up on it"
        )
    return JobEvidence(
        name=str(job.get("name")),
        job=job,
        trace=trace,
        pod=pod,
        records=_records(run, str(job.get("name")), trace),
        started_at=epoch(job.get("started_at")),
        finished_at=epoch(job.get("finished_at")),
        observed_end=observed_end(run, job_id),
        observed_start=run.seen_running.get(job_id),
        diagnosis=diagnosis,
    )


def observed_end(run: _Run, job_id: int) -> float | None:
    """This machine's time at which the run first saw the job finished (None: it never did)."""
    status, at = run.seen_status.get(job_id, ("", 0.0))
    return at if status in FINISHED else None
