"""The evidence bundle: everything one run observed, saved as browsable files and re-assertable offline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_runnerconf import safefiles
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.scrub import MASK as MASK  # the scrubber's names stay importable from here
from pytest_runnerconf.scrub import scrub_json, scrub_text
from pytest_runnerconf.trace import LimitCut, Trace, output_limit_cut, parse_trace

EVIDENCE_VERSION = 1
EVIDENCE_FILE = "evidence.json"


@dataclass
class PodObservation:
    name: str
    first_seen: float
    spec: dict[str, Any] = field(default_factory=dict)  # the pod object as first seen
    last: dict[str, Any] = field(default_factory=dict)  # the last pod object seen
    # One entry per watch event: {"time", "type", "phase", "containers": {name: state}, "deletionTimestamp"}.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deleted_at: float | None = None


@dataclass
class Diagnosis:
    """Why a job's pod never started, as the run found it before the runner gave up (it then cancels the job).

    cause is one of outcome.CAUSES (pod-not-started, quota, image-pull); sentence names the likely cause and
    quotes the pod's events, Warnings first, each group by time; events are the ones the sentence used.
    """

    cause: str
    sentence: str
    pod: str = ""
    pending_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    # True: the run gave up on the pod and cancelled the job; False: the runner failed the job first and the
    # run read the pod's events afterwards.
    cancelled: bool = True


@dataclass
class Attempt:
    """One attempt of a probe job that the run retried: how it ended, as GitLab and the classification said.

    end is jobend's kind (infrastructure, script-failure, ...); cause and sentence are the classification's.
    """

    job_id: int
    web_url: str = ""
    status: str = ""
    failure_reason: str = ""
    end: str = ""
    cause: str | None = None
    sentence: str = ""
    started_at: float | None = None  # GitLab's clock
    finished_at: float | None = None
    pod: str = ""  # its pod's name ("" when none was seen)


@dataclass
class JobEvidence:
    name: str
    job: dict[str, Any]  # the GitLab job JSON
    trace: str  # raw, as the API returned it
    pod: PodObservation | None = None
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    started_at: float | None = None  # GitLab's clock
    finished_at: float | None = None  # GitLab's clock
    # This machine's clock: when the run first saw the job in a finished status (the one clock the cleanup
    # checks compare with pod and Secret deletions, which the run also times itself).
    observed_end: float | None = None
    observed_start: float | None = None  # this machine's clock: when the run first saw the job running
    diagnosis: Diagnosis | None = None  # set when the run gave up on a pod that never started
    # The attempts this job replaced through GitLab's retry, oldest first; the job itself is the last attempt.
    retried: list[Attempt] = field(default_factory=list)

    @cached_property
    def trace_parsed(self) -> Trace:
        return parse_trace(self.trace)

    @property
    def output_limit_cut(self) -> LimitCut | None:
        """Where the runner cut this job's trace at its output_limit (None: not cut)."""
        return output_limit_cut(self.trace)

    @property
    def web_url(self) -> str:
        return str(self.job.get("web_url") or "")

    @property
    def status(self) -> str:
        return str(self.job.get("status") or "")

    @property
    def duration_s(self) -> float | None:
        """Observed start to finish; falls back to GitLab's own duration."""
        if self.started_at is not None and self.finished_at is not None:
            return self.finished_at - self.started_at
        duration = self.job.get("duration")
        return float(duration) if isinstance(duration, int | float) else None


def records_from_trace(trace: Trace) -> dict[str, list[dict[str, Any]]]:
    """Probe records grouped by probe name, in trace order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in trace.records:
        grouped.setdefault(record.probe, []).append(record.data)
    return grouped


@dataclass
class RunEvidence:
    version: int = EVIDENCE_VERSION
    run_id: str = ""
    cluster: str = ""
    profile: dict[str, Any] = field(default_factory=dict)  # Profile.summary(): never the token
    gitlab_url: str = ""
    project: str = ""
    gitlab_version: str = ""  # GitLab's /version; "" (or "unknown") when it could not be read
    kubernetes_version: str = ""  # the API server's gitVersion
    branch: str = ""
    pipeline: dict[str, Any] = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)  # probe job names
    started_at: float = 0.0
    finished_at: float = 0.0
    jobs: dict[str, JobEvidence] = field(default_factory=dict)
    stray_pods: list[dict[str, Any]] = field(default_factory=list)  # runner pods older than the job timeout
    leftover: dict[str, Any] = field(default_factory=dict)  # pods/secrets still there at the deadline
    # per-job Secret names -> {"first_seen", "deleted_at", "before"} (metadata only; None when not allowed to
    # list); "before": present when the run started, so not this run's
    secrets: dict[str, dict[str, Any]] | None = field(default_factory=dict)
    secrets_skipped: str = ""  # with secrets None: the reason the run was not allowed to list them (RBAC)
    stray_error: str = ""  # why the namespace's runner pods could not be listed for the stray check
    # Short tokens of the runner under test (its pods' id-short label or name, the trace's "on NAME TOKEN")
    runner_tokens: list[str] = field(default_factory=list)
    # Other pipelines of the project that may have run alongside (None: could not be listed): their jobs use
    # the same runner slots, so a Secret without a pod cannot be told apart from theirs by its name.
    other_pipelines: list[int] | None = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # When each phase of the run ended, on this machine's clock (see run.TIMING_MARKS): what the wall time
    # was spent on. Bundles from before it have none.
    timings: dict[str, float] = field(default_factory=dict)
    evidence_dir: str = ""  # where save() wrote it or load() read it; not part of the saved data

    @property
    def wall_s(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    def runner_versions(self) -> list[str]:
        versions = {job.trace_parsed.runner_version for job in self.jobs.values() if job.trace}
        return sorted(v for v in versions if v)

    def slowest_job(self) -> tuple[str, float] | None:
        timed = [(job.duration_s, name) for name, job in self.jobs.items() if job.duration_s is not None]
        if not timed:
            return None
        duration, name = max(timed)
        return name, duration


# ---------------------------------------------------------------- save / load


def _job_dirname(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "job"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _write_json(directory: Path, rel: str, data: Any, secrets: tuple[str, ...]) -> Path:
    return safefiles.write_text(directory, rel, scrub_json(data, secrets) + "\n")


def _save_job(job: JobEvidence, directory: Path, rel: str, secrets: tuple[str, ...]) -> dict[str, Any]:
    # newline="" keeps the trace's \r (section markers end in \r\x1b[0K) exactly as the runner wrote it.
    safefiles.write_text(directory, f"{rel}/trace.txt", scrub_text(job.trace, secrets), newline="")
    entry: dict[str, Any] = {
        "name": job.name,
        "dir": rel,
        "job": job.job,
        "records": job.records,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "observed_end": job.observed_end,
        "observed_start": job.observed_start,
        "diagnosis": None if job.diagnosis is None else asdict(job.diagnosis),
        "retried": [asdict(a) for a in job.retried],
        "pod": None,
    }
    if job.pod is not None:
        pod = job.pod
        meta = {"name": pod.name, "first_seen": pod.first_seen, "deleted_at": pod.deleted_at}
        _write_json(directory, f"{rel}/pod.json", {**meta, "spec": pod.spec, "last": pod.last}, secrets)
        _write_json(directory, f"{rel}/timeline.json", pod.timeline, secrets)
        _write_json(directory, f"{rel}/events.json", pod.events, secrets)
        entry["pod"] = meta
    return entry


def save(run: RunEvidence, directory: Path, *, secrets: Iterable[str] = ()) -> Path:
    """Write the bundle: evidence.json plus jobs/<name>/{trace.txt,pod.json,timeline.json,events.json}.

    Everything passes the scrubber (pytest_runnerconf.scrub); pass the run's real token in SECRETS so that
    it is masked wherever it appears. No file is written through a symlink inside DIRECTORY.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hidden = tuple(secrets)
    taken: set[str] = set()
    jobs = [
        _save_job(job, directory, f"jobs/{_job_dirname(name, taken)}", hidden)
        for name, job in run.jobs.items()
    ]
    doc = {
        "version": run.version,
        "run_id": run.run_id,
        "cluster": run.cluster,
        "profile": run.profile,
        "gitlab_url": run.gitlab_url,
        "project": run.project,
        "gitlab_version": run.gitlab_version,
        "kubernetes_version": run.kubernetes_version,
        "branch": run.branch,
        "pipeline": run.pipeline,
        "plan": run.plan,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "stray_pods": run.stray_pods,
        "leftover": run.leftover,
        "secrets": run.secrets,
        "secrets_skipped": run.secrets_skipped,
        "stray_error": run.stray_error,
        "runner_tokens": run.runner_tokens,
        "other_pipelines": run.other_pipelines,
        "notes": run.notes,
        "timings": run.timings,
        "jobs": jobs,
    }
    path = _write_json(directory, EVIDENCE_FILE, doc, hidden)
    run.evidence_dir = str(directory)
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: evidence file missing; the bundle is incomplete") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); the bundle is damaged") from None


def _load_job(directory: Path, entry: dict[str, Any]) -> JobEvidence:
    # A bundle is data someone may have sent: its paths must not lead the replay out of it.
    jobdir = safefiles.inside(directory, str(entry["dir"]), f"{directory / EVIDENCE_FILE}: job directory")
    for name in ("trace.txt", "pod.json", "timeline.json", "events.json"):
        safefiles.inside(directory, f"{entry['dir']}/{name}", f"{directory / EVIDENCE_FILE}: job file")
    try:
        with open(jobdir / "trace.txt", encoding="utf-8", newline="") as fh:
            trace = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{jobdir / 'trace.txt'}: evidence file missing; the bundle is incomplete"
        ) from None
    pod = None
    if entry.get("pod") is not None:
        data = _read_json(jobdir / "pod.json")
        pod = PodObservation(
            name=data["name"],
            first_seen=data["first_seen"],
            spec=data.get("spec") or {},
            last=data.get("last") or {},
            timeline=_read_json(jobdir / "timeline.json"),
            events=_read_json(jobdir / "events.json"),
            deleted_at=data.get("deleted_at"),
        )
    return JobEvidence(
        name=entry["name"],
        job=entry.get("job") or {},
        trace=trace,
        pod=pod,
        records=entry.get("records") or {},
        started_at=entry.get("started_at"),
        finished_at=entry.get("finished_at"),
        observed_end=entry.get("observed_end"),
        observed_start=entry.get("observed_start"),
        diagnosis=_load_diagnosis(entry.get("diagnosis")),
        retried=[_load_attempt(a) for a in entry.get("retried") or [] if isinstance(a, dict)],
    )


def _load_attempt(data: dict[str, Any]) -> Attempt:
    # Bundles written before retries existed have no "retried" list: their jobs had one attempt.
    return Attempt(
        job_id=int(data.get("job_id") or 0),
        web_url=str(data.get("web_url") or ""),
        status=str(data.get("status") or ""),
        failure_reason=str(data.get("failure_reason") or ""),
        end=str(data.get("end") or ""),
        cause=data.get("cause"),
        sentence=str(data.get("sentence") or ""),
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        pod=str(data.get("pod") or ""),
    )


def _ints(data: Any) -> list[int] | None:
    return None if data is None else [int(x) for x in data]


def _load_diagnosis(data: Any) -> Diagnosis | None:
    if not isinstance(data, dict):
        return None
    return Diagnosis(
        cause=str(data.get("cause") or ""),
        sentence=str(data.get("sentence") or ""),
        pod=str(data.get("pod") or ""),
        pending_s=float(data.get("pending_s") or 0.0),
        events=list(data.get("events") or []),
        cancelled=bool(data.get("cancelled", True)),
    )


def load(directory: Path) -> RunEvidence:
    """Read a bundle written by save(); refuses bundles of another EVIDENCE_VERSION."""
    directory = Path(directory)
    doc = _read_json(safefiles.inside(directory, EVIDENCE_FILE, "evidence file"))
    version = doc.get("version") if isinstance(doc, dict) else None
    if version != EVIDENCE_VERSION:
        raise ConfigError(
            f"{directory / EVIDENCE_FILE}: evidence version {version!r} is not supported; "
            f"this plugin reads version {EVIDENCE_VERSION}"
        )
    jobs = [_load_job(directory, entry) for entry in doc.get("jobs", [])]
    return RunEvidence(
        version=version,
        run_id=doc.get("run_id", ""),
        cluster=doc.get("cluster", ""),
        profile=doc.get("profile") or {},
        gitlab_url=doc.get("gitlab_url", ""),
        project=doc.get("project", ""),
        gitlab_version=str(doc.get("gitlab_version") or ""),
        kubernetes_version=str(doc.get("kubernetes_version") or ""),
        branch=doc.get("branch", ""),
        pipeline=doc.get("pipeline") or {},
        plan=list(doc.get("plan") or []),
        started_at=doc.get("started_at", 0.0),
        finished_at=doc.get("finished_at", 0.0),
        jobs={job.name: job for job in jobs},
        stray_pods=list(doc.get("stray_pods") or []),
        leftover=doc.get("leftover") or {},
        secrets=doc.get("secrets", {}),
        secrets_skipped=str(doc.get("secrets_skipped") or ""),
        stray_error=str(doc.get("stray_error") or ""),
        runner_tokens=[str(t) for t in doc.get("runner_tokens") or []],
        other_pipelines=_ints(doc.get("other_pipelines", [])),
        notes=list(doc.get("notes") or []),
        timings={
            str(k): float(v) for k, v in (doc.get("timings") or {}).items() if isinstance(v, int | float)
        },
        evidence_dir=str(directory),
    )
