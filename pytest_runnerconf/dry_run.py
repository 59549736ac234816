"""--runnerconf-dry-run: plan the selected checks and run the read-only preflight; create nothing.

What a run would do, as structured data (DryRun) and as the lines the terminal shows: the probe jobs and their
images, where the rendered .gitlab-ci.yml was written (a local directory, never GitLab), the expectations and
where each came from, the GitLab token scope and the Kubernetes verbs the run needs with what each is for (and
whether the credentials have them, where that can be asked), and the duration the last run's evidence
suggests. The preflight is the run's own (GitLabDriver.preflight/readiness, KubeDriver.preflight): it reads,
and opens one pod watch that it drops at once; it pushes no branch, makes no commit and creates no pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pytest_runnerconf import rbac
from pytest_runnerconf.errors import ConfigError, RunnerConfError
from pytest_runnerconf.evidence import load
from pytest_runnerconf.marker import BRANCH_PREFIX
from pytest_runnerconf.plan import SCRIPTS_DIR, Plan, load_probe_jobs, render_pipeline, template_values
from pytest_runnerconf.podjob import POD_LABEL
from pytest_runnerconf.profile import ORIGINS, Profile
from pytest_runnerconf.runner_config import configmap_of
from pytest_runnerconf.safefiles import write_text
from pytest_runnerconf.scrub import scrub_data, scrub_text

if TYPE_CHECKING:
    from pytest_runnerconf.session import RunnerConfSession

PIPELINE_FILE = ".gitlab-ci.yml"
RESULT_FILE = "dry-run.json"
# What the run does with its GitLab token; readiness() refuses a token without `api` for the same reason.
TOKEN_SCOPES = (
    (
        "api",
        "push the scratch branch runnerconf/<run-id> (one commit: the pipeline file and the probe scripts), "
        "create its pipeline, cancel it on an error or Ctrl-C, delete the branch; read the jobs, their traces "
        "and artifacts (read_api alone cannot push or create a pipeline)",
    ),
)
ROLE = (
    "the token's user needs the Developer role (or higher) in the project: push a branch that no protected "
    "branch rule covers and run a pipeline"
)


@dataclass(frozen=True)
class ProbeJob:
    name: str
    probe: str
    image: str
    services: tuple[str, ...] = ()  # "image as alias"


@dataclass(frozen=True)
class Need:
    """One grant the run needs: a token scope or `verb resource`, what for, and whether it is there."""

    grant: str
    why: str
    granted: bool | None  # None: the credentials could not be asked
    caution: str = ""


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    basis: str  # one sentence: from what, and what it leaves out


@dataclass
class DryRun:
    cluster: str
    namespace: str
    gitlab_url: str
    project: str
    checks: tuple[str, ...]
    jobs: list[ProbeJob]
    directory: str  # where the rendered pipeline and its scripts were written
    pipeline_file: str
    scripts: list[str]
    expectations: list[dict[str, Any]]
    scopes: list[Need]
    verbs: list[Need]
    estimate: Estimate | None = None
    problems: list[str] = field(default_factory=list)  # the preflight's sentences; none: it passed
    notes: list[str] = field(default_factory=list)  # what does not stop the run (a check it will skip)

    @property
    def passed(self) -> bool:
        return not self.problems

    def data(self) -> dict[str, Any]:
        doc: dict[str, Any] = scrub_data(asdict(self))
        doc["passed"] = self.passed
        return doc


# ---------------------------------------------------------------- the plan, written locally


def probe_jobs(plan: Plan, profile: Profile, ci_yaml: str, run_id: str) -> list[ProbeJob]:
    """The jobs of the rendered pipeline: which probe made each, its image and its services."""
    document = yaml.safe_load(ci_yaml) or {}
    values = template_values(profile, run_id)
    made_by = {name: probe for probe in plan.probes for name in load_probe_jobs(probe, values, plan.library)}
    jobs = []
    for name, probe in made_by.items():
        job = document.get(name) or {}
        jobs.append(
            ProbeJob(
                name, probe, _image(job.get("image")), tuple(_service(s) for s in job.get("services") or [])
            )
        )
    return jobs


def _image(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value else "the runner's default image (the job names none)"


def _service(value: Any) -> str:
    if isinstance(value, dict):
        name, alias = str(value.get("name") or "?"), value.get("alias")
        return f"{name} as {alias}" if alias else name
    return str(value)


def write_plan(directory: Path, ci_yaml: str, scripts: dict[str, str]) -> tuple[Path, list[Path]]:
    """The pipeline file and probe scripts as the run would commit them, under DIRECTORY."""
    pipeline = write_text(directory, PIPELINE_FILE, ci_yaml)
    written = [write_text(directory, rel, text) for rel, text in sorted(scripts.items())]
    return pipeline, written


def expectations(profile: Profile) -> list[dict[str, Any]]:
    """Each expectation, its value, and where it came from (profile.ORIGINS), as the report's header has them."""
    return [{**asdict(source), "from": _origin_words(source.origin)} for source in profile.expect_sources()]


def _origin_words(origin: str | None) -> str:
    """The report header's few words for ORIGIN; an origin it does not know by its profile.ORIGINS sentence."""
    from pytest_runnerconf.report_html import ORIGIN_WORDS

    if origin is None:
        return "not recorded"
    return ORIGIN_WORDS.get(origin) or ORIGINS.get(origin) or origin


# ---------------------------------------------------------------- the estimate


def estimate(source: Path | None, planned: list[str]) -> Estimate | None:
    """From the last run's evidence bundle (a directory) or report.json (a file); None when none is given.

    Jobs run at once, so a run lasts about its slowest job plus what it does around the jobs (push, pickup,
    cleanup): from a bundle, the planned jobs' slowest there plus that run's time around its own slowest.
    """
    if source is None:
        return None
    if not source.is_dir():
        return _from_report(source)
    try:
        run = load(source)
    except ConfigError as exc:
        return Estimate(None, f"no estimate: {exc}")
    durations = {name: job.duration_s for name, job in run.jobs.items() if job.duration_s is not None}
    known = [durations[n] for n in planned if n in durations]
    if not known:
        return Estimate(None, f"no estimate: none of the planned jobs has a duration in {source}")
    around = max(0.0, run.wall_s - max(durations.values()))
    basis = (
        f"the run in {source} took {run.wall_s:.0f}s wall for {len(run.jobs)} jobs, {around:.0f}s of it around "
        f"the jobs; the planned jobs' slowest there took {max(known):.0f}s"
    )
    unknown = [n for n in planned if n not in durations]
    if unknown:
        basis += f"; not in that run, so left out: {', '.join(unknown)}"
    return Estimate(round(around + max(known), 1), basis)


def _from_report(source: Path) -> Estimate:
    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Estimate(None, f"no estimate: {source} cannot be read as a report.json ({exc})")
    wall = doc.get("wall_s") if isinstance(doc, dict) else None
    if not isinstance(wall, int | float):
        return Estimate(None, f"no estimate: the report {source} records no wall time")
    slowest = doc.get("slowest_job") or {}
    said = f", slowest job {slowest.get('name')} {slowest.get('duration_s')}s" if slowest else ""
    return Estimate(
        float(wall), f"the run of the report {source} took {wall:.0f}s wall ({doc.get('jobs')} jobs{said})"
    )


# ---------------------------------------------------------------- the preflight


def preflight(profile: Profile, plan: Plan) -> tuple[list[Need], list[Need], list[str], list[str]]:
    """(token scopes, Kubernetes verbs, problems, notes): the run's own read-only preflight, every part of it.

    A part that fails is one problem sentence and the others still run, so one dry run names everything
    the credentials lack.
    """
    from pytest_runnerconf.gitlab_driver import GitLabDriver
    from pytest_runnerconf.kube_driver import KubeDriver

    problems: list[str] = []
    notes: list[str] = []
    scopes_held: list[str] | None = None

    def attempt(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except ConfigError:
            raise
        except RunnerConfError as exc:
            problems.append(str(exc))
            return None

    gitlab = GitLabDriver(profile)
    if attempt(gitlab.preflight) is not None:
        scopes_held = gitlab.token_scopes()
        attempt(lambda: gitlab.readiness(BRANCH_PREFIX))
    scopes = [
        Need(scope, why, None if scopes_held is None else scope in scopes_held) for scope, why in TOKEN_SCOPES
    ]
    rules = rbac.rules(plan.reads, configmap_of(profile))  # the runner config's get, when it names one
    kube = attempt(lambda: KubeDriver(profile))
    missing: set[tuple[str, str]] | None = None
    if kube is not None:
        asked = attempt(lambda: kube.missing_grants(rules))
        if asked is not None:
            missing = {(verb, rule.resource) for rule, verb, _why in asked}
        found = attempt(lambda: kube.preflight(POD_LABEL, rules))
        if found is not None and found[1]:
            notes.append(f"{found[1]}: RC-CLN-005 will be skipped")
    verbs = [
        Need(
            f"{verb} {rule.resource}",
            why,
            None if missing is None else (verb, rule.resource) not in missing,
            rule.caution,
        )
        for rule in rules
        for verb, why in rule.verbs
    ]
    return scopes, verbs, problems, notes


# ---------------------------------------------------------------- the whole dry run


def dry_run(
    profile: Profile, plan: Plan, run_id: str, directory: Path, last_run: Path | None = None
) -> DryRun:
    """Plan, write the pipeline under DIRECTORY, estimate from LAST_RUN, preflight; DIRECTORY/dry-run.json too.

    Raises:
        ConfigError: the plan cannot be rendered or the profile cannot be used (no token, say).
        OSError: DIRECTORY cannot be written.
    """
    ci_yaml, scripts = render_pipeline(plan, profile, run_id)
    jobs = probe_jobs(plan, profile, ci_yaml, run_id)
    pipeline, written = write_plan(directory, ci_yaml, scripts)
    scopes, verbs, problems, notes = preflight(profile, plan)
    result = DryRun(
        cluster=profile.name,
        namespace=profile.namespace,
        gitlab_url=profile.gitlab_url,
        project=profile.project,
        checks=plan.checks,
        jobs=jobs,
        directory=str(directory),
        pipeline_file=str(pipeline),
        scripts=[str(p) for p in written],
        expectations=expectations(profile),
        scopes=scopes,
        verbs=verbs,
        estimate=estimate(last_run, [job.name for job in jobs]),
        problems=problems,
        notes=notes,
    )
    write_text(directory, RESULT_FILE, json.dumps(result.data(), indent=2) + "\n")
    return result


def _mark(granted: bool | None) -> str:
    return {True: "granted", False: "MISSING", None: "unknown (the preflight could not ask, see below)"}[
        granted
    ]


def lines(result: DryRun) -> list[str]:
    """What the terminal shows, in the order a reader checks it."""
    out = [
        f"dry run of cluster {result.cluster}: nothing was created (no branch, commit or pipeline)",
        f"checks ({len(result.checks)}): {', '.join(result.checks) or 'none'}",
        f"probe jobs ({len(result.jobs)}), all in one pipeline, all at once:",
    ]
    for job in result.jobs:
        services = f"; services {', '.join(job.services)}" if job.services else ""
        out.append(f"  {job.name} (probe {job.probe}): image {job.image}{services}")
    scripts = Path(result.directory) / SCRIPTS_DIR
    out.append(
        f"pipeline file: {result.pipeline_file} (probe scripts in {scripts}, {len(result.scripts)} files)"
    )
    out.append(f"expectations ({len(result.expectations)}), each with where it came from:")
    for item in result.expectations:
        where = f", {item['file']}" if item.get("file") else ""
        out.append(f"  {item['setting']} = {json.dumps(item['value'])}  ({item['from']}{where})")
    out.append(f"GitLab token ({result.gitlab_url}, project {result.project}): {ROLE}")
    for need in result.scopes:
        out.append(f"  scope {need.grant}: {_mark(need.granted)}; for: {need.why}")
    out.append(f"Kubernetes verbs in namespace {result.namespace}:")
    cautioned: set[str] = set()
    for need in result.verbs:
        caution = f" CAUTION: {need.caution}" if need.caution and need.caution not in cautioned else ""
        cautioned.add(need.caution)
        out.append(f"  {need.grant}: {_mark(need.granted)}; for: {need.why}{caution}")
    if result.estimate is not None:
        seconds = result.estimate.seconds
        said = f"about {seconds:.0f}s" if seconds is not None else "unknown"
        out.append(f"estimated duration: {said} ({result.estimate.basis})")
    else:
        out.append(
            "estimated duration: unknown (give the last run's evidence with --runnerconf-replay=DIR or its "
            "report.json with --runnerconf-baseline=FILE)"
        )
    out += [f"note: {note}" for note in result.notes]
    if result.passed:
        out.append("preflight: passed; a run would start now")
    else:
        out += [f"preflight: did not pass: {problem}" for problem in result.problems]
    out.append(f"dry run written to {Path(result.directory) / RESULT_FILE}")
    return [scrub_text(line) for line in out]


def perform(state: RunnerConfSession) -> tuple[bool, list[str]]:
    """The session's dry run: (preflight passed, the lines to show); a bad setting ends the session (exit 4).

    The evidence directory (--runnerconf-evidence, else runnerconf-evidence/dry-run-<run-id>) receives the
    rendered pipeline; a bundle of --runnerconf-replay, else the report.json of --runnerconf-baseline, gives
    the estimate.
    """
    from pytest_runnerconf.progress import END
    from pytest_runnerconf.run import new_run_id
    from pytest_runnerconf.session import EXIT_COULD_NOT_TEST, EXIT_USAGE

    settings = state.settings
    run_id = new_run_id()
    directory = settings.evidence_dir or settings.invocation_dir / "runnerconf-evidence" / f"dry-run-{run_id}"
    last_run = settings.replay_dir or (settings.baseline.path if settings.baseline is not None else None)
    try:
        try:
            profile = state.open_target().profile  # a cluster the provider starts stops with the session
        finally:
            state.progress(END)  # the display ends its lines before the dry run's own section
        result = dry_run(profile, state.plan, run_id, directory, last_run)
    except ConfigError as exc:
        state.fatal(str(exc), EXIT_USAGE)
    except OSError as exc:
        state.fatal(f"the dry run cannot write its plan to {directory}: {exc.strerror or exc}", EXIT_USAGE)
    except RunnerConfError as exc:
        state.fatal(str(exc), EXIT_COULD_NOT_TEST)
    return result.passed, lines(result)
