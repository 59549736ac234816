"""One pipeline run per test session, shared by xdist workers; a could-not-test error ends it with exit 6."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
from filelock import FileLock

from pytest_runnerconf.errors import ConfigError, RunnerConfError
from pytest_runnerconf.evidence import RunEvidence, load
from pytest_runnerconf.interrupts import Interrupted, signal_name
from pytest_runnerconf.plan import Plan, ProbeLibrary
from pytest_runnerconf.profile import (
    Profile,
    cluster_tables,
    find_profile_file,
    load_profile,
    profile_from_summary,
)
from pytest_runnerconf.progress import END, Progress, note
from pytest_runnerconf.runner_config import apply as apply_runner_config
from pytest_runnerconf.runner_config import configmap_of
from pytest_runnerconf.runner_config import from_record as runner_config_from_record
from pytest_runnerconf.runner_config import resolve as resolve_runner_config
from pytest_runnerconf.scrub import harvest, remember, scrub_text
from pytest_runnerconf.targets import Log, Target, load_provider, provider_names

# Exit statuses besides pytest's own: 4 (usage) is reused for configuration errors found at run time.
EXIT_USAGE = int(pytest.ExitCode.USAGE_ERROR)
EXIT_COULD_NOT_TEST = 6  # the target could not be tested: unreachable, unauthorised, stuck
EXIT_INTERRUPTED = int(pytest.ExitCode.INTERRUPTED)  # Ctrl-C, SIGTERM, SIGHUP (after cleaning up)

SHARED_KEY = "runnerconf_shared"  # workerinput key: the directory all workers of one session share
SKIP_REASON = (
    "no cluster selected: pass --runner-cluster=NAME to run the checks "
    "(--runner-cluster=local needs no configuration) or --runnerconf-replay=DIR to re-assert saved evidence"
)


@dataclass(frozen=True)
class Option:
    dest: str
    flag: str
    ini: str
    env: str
    help: str
    is_path: bool = True
    multiple: bool = False  # several paths: repeat the flag, one per ini line, os.pathsep in the env
    repeatable: bool = False  # a name list: the flag may be repeated and each value may be comma-separated
    metavar: str = ""  # "" : PATH for a path, NAME otherwise
    switch: bool = False  # a flag without a value; true/false in the ini file, 1/0 (true/false) in the env


OPTIONS = (
    Option("runner_cluster", "--runner-cluster", "runner_cluster", "RUNNERCONF_CLUSTER",
           "Cluster profile to test (a [clusters.NAME] table, or the built-in 'local'); several (a,b or the "
           "flag repeated) run one pipeline per cluster at once and parametrise each check per cluster",
           is_path=False, repeatable=True),
    Option("runnerconf_config", "--runnerconf-config", "runnerconf_config", "RUNNERCONF_CONFIG",
           "Profile file (default: ./runnerconf.toml, then $XDG_CONFIG_HOME/runnerconf/runnerconf.toml)"),
    Option("runnerconf_evidence", "--runnerconf-evidence", "runnerconf_evidence", "RUNNERCONF_EVIDENCE",
           "Directory for the evidence bundle (default: runnerconf-evidence/<run-id>)"),
    Option("runnerconf_replay", "--runnerconf-replay", "runnerconf_replay", "RUNNERCONF_REPLAY",
           "Re-assert a saved evidence bundle offline instead of running pipelines"),
    Option("runnerconf_report", "--runnerconf-report", "runnerconf_report", "RUNNERCONF_REPORT",
           "Directory for the conformance report (default: runnerconf-report)"),
    Option("runnerconf_baseline", "--runnerconf-baseline", "runnerconf_baseline", "RUNNERCONF_BASELINE",
           "Upgrade gate: a previous report.json; exit 1 only for checks that passed there and fail now"),
    Option("runnerconf_probes", "--runnerconf-probes", "runnerconf_probes", "RUNNERCONF_PROBES",
           "Extra probe directory (<probe>.yml and <probe>.sh) for a team's own checks; may be repeated",
           multiple=True),
    Option("runnerconf_retry", "--runnerconf-retry", "runnerconf_retry", "RUNNERCONF_RETRY",
           "Retry a probe job up to N times when the runner or the cluster ended it before its probe could "
           "show anything (a runner system failure, a pod that never started); never a conformance failure "
           "(default 0)", is_path=False, metavar="N"),
    Option("runnerconf_dry_run", "--runnerconf-dry-run", "runnerconf_dry_run", "RUNNERCONF_DRY_RUN",
           "Plan the selected checks and run the read-only preflight, creating nothing (no branch, commit or "
           "pipeline): print the probe jobs, the pipeline file written, the expectations, the token scope and "
           "Kubernetes verbs the run needs, and an estimate from --runnerconf-replay/--runnerconf-baseline; "
           "exit 0 when the preflight passes, 6 when not", is_path=False, switch=True),
)  # fmt: skip
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class PathValue:
    """A path setting as the user typed it, where it came from, and the absolute path it resolved to."""

    typed: str
    path: Path
    origin: str  # "--runnerconf-config", "ini runnerconf_config", "env RUNNERCONF_CONFIG"

    def describe(self) -> str:
        """`--runnerconf-config=my.toml (/abs/dir/my.toml)`: what to fix, as typed and as resolved."""
        sep = "=" if self.origin.startswith("--") else " = "
        resolved = "" if self.typed == str(self.path) else f" ({self.path})"
        return f"{self.origin}{sep}{self.typed}{resolved}"


@dataclass(frozen=True)
class CountValue:
    """A count setting as the user typed it and where it came from; count() is None when it is not one."""

    typed: str
    origin: str  # "--runnerconf-retry", "ini runnerconf_retry", "env RUNNERCONF_RETRY"

    def count(self) -> int | None:
        text = self.typed.strip()
        return int(text) if text.isascii() and text.isdigit() else None

    def describe(self) -> str:
        sep = "=" if self.origin.startswith("--") else " = "
        return f"{self.origin}{sep}{self.typed}"


@dataclass(frozen=True)
class Settings:
    cluster: str | None
    config: PathValue | None  # an explicit profile file
    evidence_dir: Path | None
    replay: PathValue | None
    report_dir: Path
    invocation_dir: Path
    baseline: PathValue | None = None  # the upgrade gate's previous report.json
    probe_dirs: tuple[PathValue, ...] = ()
    evidence: PathValue | None = None  # evidence_dir and report_dir as typed, when they were given
    report: PathValue | None = None
    retry: CountValue | None = None  # --runnerconf-retry as given (check_settings refuses a bad one)
    dry_run_value: CountValue | None = (
        None  # --runnerconf-dry-run as given (check_settings refuses a bad one)
    )

    @property
    def dry_run(self) -> bool:
        """Plan and preflight only: nothing is created on GitLab (dry_run.py)."""
        return self.dry_run_value is not None and self.dry_run_value.typed.strip().lower() in TRUE

    @property
    def retries(self) -> int:
        """How often a probe job the infrastructure ended is retried (0: never)."""
        return (self.retry.count() or 0) if self.retry is not None else 0

    @property
    def clusters(self) -> tuple[str, ...]:
        """The cluster names --runner-cluster gives, in order, each once ("a,b" or the flag repeated)."""
        return split_clusters(self.cluster or "")

    @property
    def multi(self) -> bool:
        """Several clusters in one invocation: one pipeline per cluster, every check once per cluster."""
        return len(self.clusters) > 1

    @property
    def active(self) -> bool:
        return bool(self.cluster or self.replay)

    @property
    def replay_dir(self) -> Path | None:
        return self.replay.path if self.replay is not None else None

    def profile_file(self) -> tuple[Path | None, tuple[Path, ...]]:
        """The profile file to read and where one was looked for."""
        return find_profile_file(self.config.path if self.config else None, self.invocation_dir)

    def probe_library(self) -> ProbeLibrary:
        return ProbeLibrary.with_extra(p.path for p in self.probe_dirs)


def split_clusters(typed: str) -> tuple[str, ...]:
    """`a, b,a` -> ("a", "b"): the names of a --runner-cluster value, blanks dropped, each once."""
    return tuple(dict.fromkeys(name.strip() for name in typed.split(",") if name.strip()))


Values = tuple[list[str], str, Path]  # the values of one option, where they came from, their base directory
Lookup = Callable[[Option], Values]


def _raw_values(config: pytest.Config, option: Option) -> Values:
    """(values, origin, base directory): CLI > ini > environment.

    pytest's own rule for paths: relative to the invocation directory on the command line and in the
    environment, relative to the ini file's directory in an ini file.
    """
    here = Path(config.invocation_params.dir)
    cli = config.getoption(option.dest, default=None)
    if cli:
        return _given(cli), option.flag, here
    ini = config.getini(option.ini)
    if ini:
        base = Path(config.inipath).parent if config.inipath else Path(config.rootpath)
        return [v for v in _given(ini) if v.strip()], f"ini {option.ini}", base
    return _env_values(option, here)


def _given(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _env_values(option: Option, here: Path) -> Values:
    env = os.environ.get(option.env)
    if env:
        values = env.split(os.pathsep) if option.multiple else [env]
        return [v for v in values if v], f"env {option.env}", here
    return [], "", here


def _path_value(typed: str, origin: str, base: Path) -> PathValue:
    return PathValue(typed, (base / Path(typed).expanduser()).resolve(), origin)


def resolve_settings(config: pytest.Config) -> Settings:
    return _settings(lambda option: _raw_values(config, option), Path(config.invocation_params.dir))


def command_settings(given: Mapping[str, Any], here: Path) -> Settings:
    """The settings of a `runnerconf` verb: its options (by dest) > the environment; there is no ini file."""

    def lookup(option: Option) -> Values:
        value = given.get(option.dest)
        return (_given(value), option.flag, here) if value else _env_values(option, here)

    return _settings(lookup, here)


def _settings(lookup: Lookup, here: Path) -> Settings:
    values: dict[str, list[PathValue]] = {}
    plain: dict[str, CountValue] = {}  # the options that are no paths, as typed
    for option in OPTIONS:
        raw, origin, base = lookup(option)
        if not option.is_path:
            if raw:
                # A repeated name flag (--runner-cluster=a --runner-cluster=b) reads as "a,b".
                plain[option.dest] = CountValue(",".join(raw) if option.repeatable else raw[0], origin)
            continue
        values[option.dest] = [_path_value(v, origin, base) for v in raw]

    def one(dest: str) -> PathValue | None:
        found = values[dest]
        return found[0] if found else None

    evidence = one("runnerconf_evidence")
    report = one("runnerconf_report")
    cluster = plain.get("runner_cluster")
    return Settings(
        cluster=cluster.typed if cluster is not None else None,
        config=one("runnerconf_config"),
        evidence_dir=evidence.path if evidence else None,
        replay=one("runnerconf_replay"),
        report_dir=report.path if report else here / "runnerconf-report",
        invocation_dir=here,
        baseline=one("runnerconf_baseline"),
        probe_dirs=tuple(values["runnerconf_probes"]),
        evidence=evidence,
        report=report,
        retry=plain.get("runnerconf_retry"),
        dry_run_value=plain.get("runnerconf_dry_run"),
    )


def validate(settings: Settings) -> None:
    """Configuration problems found before collection become a usage error (exit 4)."""
    try:
        check_settings(settings)
    except ConfigError as exc:
        raise pytest.UsageError(scrub_text(str(exc))) from None


def check_settings(settings: Settings) -> None:
    """Raises ConfigError naming the first setting that cannot be used (nothing is started)."""
    if settings.replay is not None and not settings.replay.path.is_dir():
        raise ConfigError(f"{settings.replay.describe()} is not a directory; give an evidence bundle")
    if settings.config is not None and not settings.config.path.is_file():
        raise ConfigError(f"{settings.config.describe()}: profile file not found")
    for probe_dir in settings.probe_dirs:
        if not probe_dir.path.is_dir():
            raise ConfigError(f"{probe_dir.describe()}: probe directory not found")
    settings.probe_library().validate()
    if settings.retry is not None and settings.retry.count() is None:
        raise ConfigError(
            f"{settings.retry.describe()} is not a number of retries; give a whole number from 0 (never retry) up"
        )
    given = settings.dry_run_value
    if given is not None and given.typed.strip().lower() not in TRUE + FALSE:
        raise ConfigError(f"{given.describe()} is neither true nor false; give 1 or 0 (true or false)")
    if settings.dry_run and not settings.cluster:
        named = (
            given.describe()
            if given is not None and not given.origin.startswith("--")
            else "--runnerconf-dry-run"
        )
        raise ConfigError(
            f"{named} needs a cluster to preflight; pass "
            "--runner-cluster=NAME (a replayed bundle given with it is read for the estimate only)"
        )
    if settings.active:
        _check_output_dir(
            settings.report, settings.report_dir, "--runnerconf-report", "the conformance report"
        )
    if settings.cluster and settings.replay is None:
        default = settings.invocation_dir / "runnerconf-evidence"  # the run adds <run-id>
        where = settings.evidence_dir or default
        _check_output_dir(settings.evidence, where, "--runnerconf-evidence", "the evidence bundle")
    if settings.cluster and not settings.clusters:
        raise ConfigError(f"{settings.cluster!r} names no cluster; give --runner-cluster=NAME (or NAME,NAME)")
    if settings.dry_run and settings.multi:
        raise ConfigError(
            f"--runnerconf-dry-run preflights one cluster, not {len(settings.clusters)} "
            f"({', '.join(settings.clusters)}); run it once per cluster with --runner-cluster=NAME"
        )
    if settings.multi and settings.replay is not None:
        raise ConfigError(
            f"--runnerconf-replay re-asserts one evidence bundle, but --runner-cluster names "
            f"{len(settings.clusters)} clusters ({', '.join(settings.clusters)}); give one cluster or none"
        )
    for name in settings.clusters:
        resolve_target(replace(settings, cluster=name))


def _check_output_dir(given: PathValue | None, path: Path, flag: str, what: str) -> None:
    """PATH is a directory the run can write to, or one it can create (checked before anything runs)."""
    named = given.describe() if given is not None else f"the default directory {path} for {what}"
    hint = f"give a directory for {what}" if given is not None else f"remove it or pass {flag}=DIR"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{named} is not a directory; {hint}")
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{named} cannot be created: {existing} is not a directory; {hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{named} cannot be written: no write permission in {existing}; {hint}")


@dataclass(frozen=True)
class TargetSpec:
    """How the session will obtain its target: a profile from a file, or a provider with the user's table."""

    name: str
    profile: Profile | None = None
    provider: str | None = None
    table: dict[str, Any] | None = None
    source: str = ""


def resolve_target(settings: Settings) -> TargetSpec:
    """Which target --runner-cluster names; validates it without starting anything.

    A provider's name (the built-in 'local') wins over a profile table of that name, which then only
    overrides the provider's settings.
    """
    name = settings.cluster
    assert name is not None
    path, looked_in = settings.profile_file()
    offered = provider_names()
    if name in offered:
        table: dict[str, Any] | None = None
        if path is not None:
            user = cluster_tables(path).get(name)
            if user is not None and not isinstance(user, dict):
                raise ConfigError(f"{path}: clusters.{name} must be a table")
            table = user
        source = str(path) if table is not None else f"the built-in {name!r} cluster"
        provider = load_provider(name)
        assert provider is not None
        provider.validate(table, source)
        return TargetSpec(name=name, provider=name, table=table, source=source)
    profile = load_profile(path, name, looked_in=looked_in, targets=offered)
    if profile.runner_config is not None and configmap_of(profile) is None:
        profile = resolve_runner_config(profile)  # a file: read now, so a bad one is a usage error at once
    return TargetSpec(name=name, profile=profile, source=profile.source)


def with_runner_config(profile: Profile) -> Profile:
    """PROFILE with the expectations its runner_config gives (a ConfigMap is read through the Kubernetes API,
    one `get`); unchanged when it names none.

    Raises:
        ConfigError: the runner config cannot be found, read or used (a usage error, exit 4).
        KubeError: the Kubernetes API cannot be reached (could not test).
    """

    def read(namespace: str, name: str) -> Mapping[str, str]:
        from pytest_runnerconf.kube_driver import KubeDriver

        return KubeDriver(profile).read_configmap(namespace, name)

    return resolve_runner_config(profile, read)


def open_target(spec: TargetSpec, log: Log, *, start: bool = True) -> Target | None:
    """The target ready to use; with START=False a provider's target only if it already runs (else None).

    `runnerconf sweep` looks at what is there: starting a fresh local cluster to find it empty is pointless.
    """
    if spec.profile is not None:
        return Target(profile=spec.profile)
    assert spec.provider is not None
    provider = load_provider(spec.provider)
    assert provider is not None
    running = getattr(provider, "running", None)
    if not start and callable(running):
        found: Target | None = running(spec.table, spec.source)
        return found
    return provider.open(spec.table, spec.source, log)


# ---------------------------------------------------------------- shared directory (xdist)


def make_shared_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="runnerconf-session-"))


def remove_shared_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


COULD_NOT_TEST = "could not test: "
STARTED = "run.started"  # written by the worker that produces the run, before it starts anything


def stored_error(shared: Path) -> tuple[str, int, str] | None:
    """(message, exit code, prefix) the producing worker stored, if any; prefix + message is the sentence."""
    path = shared / "error.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["message"]), int(data["code"]), str(data.get("prefix", COULD_NOT_TEST))


def _store_error(shared: Path, message: str, code: int, prefix: str) -> None:
    doc = {"message": message, "code": code, "prefix": prefix}
    (shared / "error.json").write_text(json.dumps(doc), encoding="utf-8")


# ---------------------------------------------------------------- secrets this process knows


def remember_profile(profile: Profile) -> None:
    """Mask the profile's token in every output of this process (read from where the profile says)."""
    with contextlib.suppress(ConfigError):
        remember(profile.token())


def remember_run(run: RunEvidence) -> None:
    """The run's token and the credentials its evidence holds under secret names, for every later output."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        remember_profile(profile_from_summary(run.profile))
    for job in run.jobs.values():
        harvest(job.job)
        if job.pod is not None:
            harvest(job.pod.spec)


# ---------------------------------------------------------------- the session


class RunnerConfSession:
    """What the fixtures hand out: the profile and the run's evidence, computed once per session."""

    def __init__(self, config: pytest.Config, settings: Settings, shared: Path, progress: Progress) -> None:
        self.config = config
        self.settings = settings
        self.disruptive_note = ""  # the one line saying disruptive checks were deselected (disruptive.py)
        self.shared = shared
        self.progress = progress
        self.plan = Plan(probes=(), library=settings.probe_library())
        self._profile: Profile | None = None
        self._evidence: RunEvidence | None = None
        self._close: Callable[[], None] | None = None

    # -- errors

    def fatal(self, message: str, code: int, prefix: str = COULD_NOT_TEST) -> NoReturn:
        """End the session once, without a traceback: exit CODE here, or skip and let the controller exit."""
        message = scrub_text(message)
        _store_error(self.shared, message, code, prefix)
        if is_worker(self.config):
            pytest.skip(f"{prefix}{message}")
        pytest.exit(f"runnerconf: {prefix}{message}", returncode=code)

    # -- profile

    def profile(self) -> Profile:
        """The profile the run used (the target's, complete before the run) or the replayed one."""
        if self._profile is None:
            if self.settings.replay is not None and self.settings.cluster is None:
                self._profile = self._replay_profile()
            elif self.settings.replay is not None:
                spec = self._target_spec().profile
                self._profile = self._recorded_runner_config(spec) if spec else self._replay_profile()
            else:
                self.evidence()
                self._profile = profile_from_summary(
                    json.loads((self.shared / "profile.json").read_text(encoding="utf-8"))
                )
        return self._profile

    def _target_spec(self) -> TargetSpec:
        try:
            return resolve_target(self.settings)
        except ConfigError as exc:
            self.fatal(str(exc), EXIT_USAGE)

    def _recorded_runner_config(self, profile: Profile) -> Profile:
        """A replayed run's profile whose runner_config names a ConfigMap: the values the run read from it
        (the replay reads no cluster); unchanged when the run read another config or none."""
        if configmap_of(profile) is None or profile.runner_config_found is not None:
            return profile
        assert profile.runner_config is not None
        recorded = runner_config_from_record(self.evidence().profile, profile.runner_config)
        return profile if recorded is None else apply_runner_config(profile, recorded)

    def _replay_profile(self) -> Profile:
        # Without --runner-cluster (or for a provider's target), replay judges the evidence against the
        # expectations it was recorded with.
        summary = self.evidence().profile
        try:
            return profile_from_summary(summary)
        except (KeyError, TypeError, ValueError) as exc:
            self.fatal(
                f"the evidence in {self.settings.replay_dir} has no usable profile ({exc!r}); "
                "pass --runner-cluster=NAME to judge it against that profile",
                EXIT_USAGE,
            )

    # -- evidence

    def evidence(self) -> RunEvidence:
        if self._evidence is None:
            self._evidence = self._obtain()
            remember_run(self._evidence)
        return self._evidence

    def _obtain(self) -> RunEvidence:
        if self.settings.replay_dir is not None:
            try:
                return load(self.settings.replay_dir)
            except ConfigError as exc:
                self.fatal(str(exc), EXIT_USAGE)
        # The xdist recipe: the first worker through the lock runs the pipeline, the others load its bundle.
        # Whatever ends the producer (an error of any kind, even its process dying), no other worker starts a
        # second pipeline: it finds the stored error, or the start marker without a bundle.
        with FileLock(str(self.shared / "run.lock")):
            error = stored_error(self.shared)
            if error is not None:
                self.fatal(*error)
            pointer = self.shared / "evidence.path"
            if pointer.is_file():
                return load(Path(pointer.read_text(encoding="utf-8")))
            started = self.shared / STARTED
            if started.exists():
                self.fatal(
                    "the worker that ran the pipeline ended before it finished; its output above says why "
                    "(rerun without -n to see it in one place)",
                    int(pytest.ExitCode.TESTS_FAILED),
                    "",
                )
            started.write_text(str(os.getpid()), encoding="utf-8")
            try:
                run = self._produce()
            except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the run has cleaned up after itself
                summary = exc.summary if isinstance(exc, Interrupted) else ""
                name = signal_name(exc)
                self.fatal(
                    summary or f"interrupted by {name} before the run created anything", EXIT_INTERRUPTED, ""
                )
            except ConfigError as exc:
                self.fatal(str(exc), EXIT_USAGE)
            except RunnerConfError as exc:
                self.fatal(str(exc), EXIT_COULD_NOT_TEST)
            except BaseException as exc:
                # A bug (or an error nobody translated): this worker's check shows the traceback; the others
                # are told, and make no pipeline of their own.
                what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                _store_error(
                    self.shared,
                    scrub_text(f"the run stopped on an unexpected error ({what}); see the traceback of the "
                               "first check that needed it"),
                    int(pytest.ExitCode.TESTS_FAILED),
                    "",
                )  # fmt: skip
                raise
            pointer.write_text(run.evidence_dir, encoding="utf-8")
            return run

    def _produce(self) -> RunEvidence:
        try:
            return self._start_and_run()
        finally:
            self.progress(END)  # the display finishes its lines; the terminal summary has the run's summary

    def open_target(self) -> Target:
        """The target of --runner-cluster, opened (a provider's cluster started); it closes with the session."""
        target = open_target(self._target_spec(), lambda text: self.progress(note(text)))
        assert target is not None
        self._close = target.close
        # The expectations its runner_config gives (a ConfigMap read with one get), for the run and the dry run.
        target = replace(target, profile=with_runner_config(target.profile))
        remember_profile(target.profile)
        return target

    def _start_and_run(self) -> RunEvidence:
        from pytest_runnerconf.run import execute, new_run_id

        target = self.open_target()
        profile = target.profile
        (self.shared / "profile.json").write_text(json.dumps(profile.summary()), encoding="utf-8")
        run_id = new_run_id()
        directory = self.settings.evidence_dir or (
            self.settings.invocation_dir / "runnerconf-evidence" / run_id
        )
        return execute(
            profile,
            self.plan,
            run_id,
            directory,
            self.progress,
            target.pipeline_variables,
            retries=self.settings.retries,
        )

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()
