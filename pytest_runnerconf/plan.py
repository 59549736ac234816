"""The run plan: which probe jobs the selected checks need, rendered into one .gitlab-ci.yml."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_runnerconf.checks import info_for
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.profile import Profile
from pytest_runnerconf.resources import fixtures_path

LIB_SCRIPT = "lib.sh"  # the probes' shared shell library, committed with every plan
SCRIPTS_DIR = ".runnerconf"  # where probe scripts live in the scratch branch
STAGE = "runnerconf"
RUN_ID_VARIABLE = "RUNNERCONF_RUN_ID"
PROBE_MARKER = "runnerconf_probe"

DIRECTIVES_KEY = "x-runnerconf"  # per-job instructions for the run, stripped before GitLab sees the job
# cancel_on_record: cancel the job once it printed a record of that probe; evict_on_record: evict its pod
# (Eviction API, as a node drain does) once it printed a record of that probe; repeat: the job N times, named
# <name>-1 .. <name>-N (a number or a placeholder such as "{{ capacity.jobs }}"), for probes whose job count
# follows an expectation.
DIRECTIVES = ("cancel_on_record", "evict_on_record", "repeat")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_.]+)\s*\}\}")


@cache
def builtin_probes_dir() -> Path:
    return fixtures_path("probes")


@dataclass(frozen=True)
class ProbeLibrary:
    """The directories probe templates come from: the built-in one first, then a team's own.

    A probe is ``<name>.yml`` (its jobs) plus an optional ``<name>.sh`` (its script). A name defined in two
    directories is an error rather than a silent override, so a team's probe never shadows a built-in one.
    """

    directories: tuple[Path, ...] = field(default_factory=lambda: (builtin_probes_dir(),))

    @classmethod
    def with_extra(cls, extra: Iterable[Path]) -> ProbeLibrary:
        return cls((builtin_probes_dir(), *extra))

    def validate(self) -> None:
        """Raises ConfigError for a missing directory or a probe name defined twice."""
        seen: dict[str, Path] = {}
        for directory in self.directories:
            if not directory.is_dir():
                raise ConfigError(
                    f"probe directory {directory} does not exist; fix --runnerconf-probes (ini "
                    "runnerconf_probes, env RUNNERCONF_PROBES)"
                )
            if directory != self.directories[0] and (directory / LIB_SCRIPT).exists():
                raise ConfigError(
                    f"{directory / LIB_SCRIPT}: {LIB_SCRIPT} is the built-in probe library's name; "
                    "rename your shared script"
                )
            for path in sorted(directory.glob("*.yml")):
                if path.stem in seen:
                    raise ConfigError(
                        f"probe {path.stem!r} is defined twice: {seen[path.stem]} and {path}; rename one"
                    )
                seen[path.stem] = path

    def names(self) -> list[str]:
        return sorted({p.stem for d in self.directories if d.is_dir() for p in d.glob("*.yml")})

    def template(self, probe: str) -> Path:
        """The <probe>.yml file; ConfigError naming the known probes when there is none."""
        for directory in self.directories:
            path = directory / f"{probe}.yml"
            if path.is_file():
                return path
        raise ConfigError(
            f"unknown probe {probe!r} requested by a check; known probes: {', '.join(self.names()) or 'none'} "
            f"(from {', '.join(str(d) for d in self.directories)})"
        )

    def script(self, probe: str) -> Path | None:
        path = self.template(probe).with_suffix(".sh")
        return path if path.is_file() else None

    def lib(self) -> Path:
        return self.directories[0] / LIB_SCRIPT


@dataclass(frozen=True)
class Plan:
    """The probe jobs one run needs, the checks that asked for them and where their templates live."""

    probes: tuple[str, ...]
    checks: tuple[str, ...] = ()
    library: ProbeLibrary = field(default_factory=ProbeLibrary, compare=False)
    reads: frozenset[str] = frozenset()  # Kubernetes resources the checks read besides pods and events
    # Jobs whose failed end a check judges itself (@check(judges_failures=...)): their failures are evidence,
    # so a retry would throw a verdict away unless their pod never ran.
    judged: frozenset[str] = frozenset()


def item_probes(item: pytest.Item) -> tuple[str, ...]:
    """The probe names a collected test needs: @check(probes=...) plus any runnerconf_probe markers."""
    info = info_for(item)
    names: list[str] = list(info.probes) if info is not None else []
    for mark in item.iter_markers(PROBE_MARKER):
        names.extend(str(arg) for arg in mark.args)
    return tuple(names)


def item_check_id(item: pytest.Item) -> str | None:
    info = info_for(item)
    return info.id if info is not None else None


def plan_for_items(items: Iterable[pytest.Item], library: ProbeLibrary | None = None) -> Plan:
    """The union of the probes the (already deselected) items need, in a stable order."""
    probes: set[str] = set()
    checks: list[str] = []
    reads: set[str] = set()
    judged: set[str] = set()
    for item in items:
        probes.update(item_probes(item))
        info = info_for(item)
        if info is not None:
            reads.update(info.reads)
            judged.update(info.judges_failures)
            if info.id not in checks:
                checks.append(info.id)
    return make_plan(probes, checks, library, reads=reads, judged=judged)


def make_plan(
    probes: Iterable[str],
    checks: Iterable[str] = (),
    library: ProbeLibrary | None = None,
    *,
    reads: Iterable[str] = (),
    judged: Iterable[str] = (),
) -> Plan:
    """Validate probe names against the probe library so a typo fails before anything is pushed."""
    library = library or ProbeLibrary()
    library.validate()
    chosen = tuple(sorted(set(probes)))
    for probe in chosen:
        library.template(probe)
    return Plan(
        probes=chosen,
        checks=tuple(checks),
        library=library,
        reads=frozenset(reads),
        judged=frozenset(judged),
    )


def template_values(profile: Profile, run_id: str) -> dict[str, str]:
    """What `{{ name }}` placeholders in probe templates may refer to."""
    images = profile.expect.images
    silent_s = math.ceil(profile.expect.silent_step_s)
    capacity = profile.expect.capacity
    return {
        "run_id": run_id,
        "builds_dir": profile.expect.builds_dir.rstrip("/") or "/",
        "images.build": images.build,
        "images.service": images.service,
        "images.dind": images.dind,
        "images.docker_cli": images.docker_cli,
        "images.dind_pull": images.dind_pull,
        "logs.silent_s": str(silent_s),
        # The silent step plus three minutes for the rest of the job: bounds a run whose runner never ends it.
        "logs.silent_timeout": f"{math.ceil(silent_s / 60) + 3} minutes",
        "logs.burst_kib": str(profile.expect.log_burst_kib),
        # RC-CAP-*: the capacity jobs go to the runner the profile names; with none named they run on the
        # default tags (an empty tag is dropped by _finish_job) and the checks skip.
        "capacity.runner_tag": capacity.runner_tag if capacity is not None else "",
        # limit + 1 jobs: LIMIT run at once and one more waits; one job when there is nothing to measure.
        "capacity.jobs": str(capacity.limit + 1 if capacity is not None else 1),
        # RC-CCH-002: the restoring job goes to the other runner; with none named it runs on the default tags
        # (dropped empty tag) and the check skips.
        "cache.other_runner_tag": profile.expect.cache.other_runner_tag if profile.expect.cache else "",
        # RC-DIS-003: the protected job goes to the runner whose pods get a PodDisruptionBudget; with none named
        # it runs on the default tags (dropped empty tag).
        "disruption.runner_tag": (profile.expect.disruption.runner_tag or "")
        if profile.expect.disruption
        else "",
        **_registry_values(profile),
    }


# dockerd's own default insecure range: a --insecure-registry flag with nothing to name repeats it harmlessly.
DOCKERD_DEFAULT_INSECURE = "127.0.0.0/8"


def _registry_values(profile: Profile) -> dict[str, str]:
    """RC-DND-003..005's placeholders: where dind-build pushes, the credentials' variable names, and which
    registries its dockerd reaches over plain HTTP (those the profile lists as insecure_registries)."""
    registry = profile.expect.registry
    insecure = set(profile.expect.images.insecure_registries)
    pull_host = profile.expect.images.dind_pull.split("/", 1)[0]
    return {
        "registry.image": f"{registry.address}/{registry.repository}" if registry else "",
        # How dind-pull's containers reach the registry's API: plain HTTP only where dockerd is told so.
        "registry.scheme": "http" if registry and registry.address in insecure else "https",
        "registry.user_variable": registry.user_variable if registry else "",
        "registry.password_variable": registry.password_variable if registry else "",
        "dind.insecure_pull": pull_host if pull_host in insecure else DOCKERD_DEFAULT_INSECURE,
        "dind.insecure_push": registry.address
        if registry and registry.address in insecure
        else DOCKERD_DEFAULT_INSECURE,
    }


def _fill(value: Any, values: Mapping[str, str], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, values, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, where) for v in value]
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ConfigError(
                    f"{where}: unknown placeholder {{{{ {name} }}}}; known: {', '.join(sorted(values))}"
                )
            return values[name]

        return _PLACEHOLDER.sub(replace, value)
    return value


def load_probe_jobs(
    probe: str, values: Mapping[str, str], library: ProbeLibrary | None = None
) -> dict[str, Any]:
    """The job definitions of one probe template with placeholders filled."""
    path = (library or ProbeLibrary()).template(probe)
    try:
        jobs = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(jobs, dict) or not all(isinstance(v, dict) for v in jobs.values()):
        raise ConfigError(f"{path}: a probe template must map job names to job definitions")
    filled: dict[str, Any] = _fill(jobs, values, str(path))
    return _repeat(filled, path)


def _repeat(jobs: dict[str, Any], path: Path) -> dict[str, Any]:
    """Expand each job whose x-runnerconf table says `repeat = N` into N copies <name>-1 .. <name>-N."""
    out: dict[str, Any] = {}
    for name, job in jobs.items():
        table = job.get(DIRECTIVES_KEY)
        if not isinstance(table, dict) or "repeat" not in table:
            out[name] = job
            continue
        raw = table["repeat"]
        count = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else 0
        if isinstance(raw, bool) or count < 1:
            raise ConfigError(
                f"{path}: job {name!r} has {DIRECTIVES_KEY} repeat = {raw!r}; it must be 1 or more"
            )
        rest = {k: v for k, v in table.items() if k != "repeat"}
        for n in range(1, count + 1):
            copy = {k: v for k, v in job.items() if k != DIRECTIVES_KEY}
            if rest:
                copy[DIRECTIVES_KEY] = dict(rest)
            out[f"{name}-{n}"] = copy
    return out


def _finish_job(job: dict[str, Any], profile: Profile) -> dict[str, Any]:
    # One stage for all jobs so that the runner picks them up concurrently.
    done: dict[str, Any] = {"stage": STAGE}
    if profile.runner_tags:
        done["tags"] = list(profile.runner_tags)
    done.update({k: v for k, v in job.items() if k != DIRECTIVES_KEY})
    own_tags = job.get("tags")
    if isinstance(own_tags, list) and "" in own_tags:
        # A tag placeholder the profile leaves unset: the job runs on the profile's default tags instead.
        kept = [t for t in own_tags if t != ""] or list(profile.runner_tags)
        if kept:
            done["tags"] = kept
        else:
            done.pop("tags", None)
    return done


def job_directives(plan: Plan, profile: Profile, run_id: str) -> dict[str, dict[str, Any]]:
    """{job name: its x-runnerconf table} for the jobs of the plan that carry one."""
    values = template_values(profile, run_id)
    found: dict[str, dict[str, Any]] = {}
    for probe in plan.probes:
        for name, job in load_probe_jobs(probe, values, plan.library).items():
            table = job.get(DIRECTIVES_KEY)
            if table is None:
                continue
            unknown = sorted(set(table) - set(DIRECTIVES)) if isinstance(table, dict) else ["(not a table)"]
            if unknown:
                raise ConfigError(
                    f"{plan.library.template(probe)}: job {name!r} has unknown {DIRECTIVES_KEY} keys "
                    f"{unknown}; known: {', '.join(DIRECTIVES)}"
                )
            found[name] = dict(table)
    return found


def probe_scripts(probes: Iterable[str], library: ProbeLibrary | None = None) -> dict[str, str]:
    """Scripts to commit: the shared lib.sh plus <probe>.sh for each probe that has one."""
    library = library or ProbeLibrary()
    files = {f"{SCRIPTS_DIR}/{LIB_SCRIPT}": library.lib().read_text(encoding="utf-8")}
    for probe in probes:
        script = library.script(probe)
        if script is not None:
            files[f"{SCRIPTS_DIR}/{probe}.sh"] = script.read_text(encoding="utf-8")
    return files


def render_pipeline(plan: Plan, profile: Profile, run_id: str) -> tuple[str, dict[str, str]]:
    """Render the plan as (.gitlab-ci.yml text, {path: content} of the probe scripts).

    Raises:
        ConfigError: a template is malformed, two probes define the same job, or the plan is empty.
    """
    if not plan.probes:
        raise ConfigError("the plan has no probe jobs; select at least one check that needs a probe")
    values = template_values(profile, run_id)
    jobs: dict[str, Any] = {}
    defined_by: dict[str, str] = {}
    for probe in plan.probes:
        for name, job in load_probe_jobs(probe, values, plan.library).items():
            if name in jobs:
                raise ConfigError(
                    f"{plan.library.template(probe)}: job {name!r} is already defined by another probe"
                )
            jobs[name] = _finish_job(job, profile)
            defined_by[name] = probe
    _check_needs(jobs, defined_by, plan.library)
    document: dict[str, Any] = {
        "stages": [STAGE],
        "variables": {RUN_ID_VARIABLE: run_id},
        **jobs,
    }
    header = f"# Generated by pytest-runnerconf for run {run_id}; probes: {', '.join(plan.probes)}\n"
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)
    return text, probe_scripts(plan.probes, plan.library)


def needed_jobs(job: Mapping[str, Any]) -> list[str]:
    """The job names a job's `needs:` lists (strings or {job: name} tables); none without `needs:`."""
    found: list[str] = []
    for entry in job.get("needs") or []:
        name = entry.get("job") if isinstance(entry, dict) else entry
        if isinstance(name, str):
            found.append(name)
    return found


def _check_needs(jobs: Mapping[str, Any], defined_by: Mapping[str, str], library: ProbeLibrary) -> None:
    """A probe job may depend on another with `needs:` (it then waits for that job alone, not for a stage, so
    the pipeline stays one wave); the needed job must be in the same pipeline, so both belong to the probes
    the same check asks for. GitLab would refuse the pipeline otherwise, after the push: say it before."""
    for name, job in jobs.items():
        for needed in needed_jobs(job):
            if needed not in jobs:
                raise ConfigError(
                    f"{library.template(defined_by[name])}: job {name!r} needs job {needed!r}, which no probe "
                    "of this run defines; define both in one probe or list the other probe in the check's "
                    "probes"
                )


def job_names(ci_yaml: str) -> list[str]:
    """The job names of a rendered pipeline (every top-level key that is not a global keyword)."""
    document = yaml.safe_load(ci_yaml) or {}
    return [name for name in document if name not in ("stages", "variables", "workflow", "default")]
