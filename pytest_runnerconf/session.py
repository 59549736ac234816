"""One pipeline run per test session, shared by xdist workers; a could-not-test error ends it with exit 6."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from filelock import FileLock

from pytest_runnerconf.errors import ConfigError, RunnerConfError
from pytest_runnerconf.evidence import RunEvidence, load
from pytest_runnerconf.plan import Plan
from pytest_runnerconf.profile import LOCAL_NAME, Profile, load_profile, profile_from_summary

# Exit statuses besides pytest's own: 4 (usage) is reused for configuration errors found at run time.
EXIT_USAGE = int(pytest.ExitCode.USAGE_ERROR)
EXIT_COULD_NOT_TEST = 6  # the target could not be tested: unreachable, unauthorised, stuck

SHARED_KEY = "runnerconf_shared"  # workerinput key: the directory all workers of one session share
LOCAL_TOKEN_ENV = "RUNNERCONF_LOCAL_TOKEN"
SKIP_REASON = "needs --runner-cluster=NAME (local needs no config)"
# Placeholders for reading the local profile before the cluster runs (only local_faults is used then).
_PRELOAD_VALUES = {
    k: "http://127.0.0.1" if k == "gitlab_url" else "x"
    for k in ("gitlab_url", "kubeconfig", "project", "runner_tag", "namespace", "token_env", "local_dns")
}


@dataclass(frozen=True)
class Option:
    dest: str
    flag: str
    ini: str
    env: str
    help: str


OPTIONS = (
    Option("runner_cluster", "--runner-cluster", "runner_cluster", "RUNNERCONF_CLUSTER",
           "Cluster profile to test (a [clusters.NAME] table, or the built-in 'local')"),
    Option("runnerconf_config", "--runnerconf-config", "runnerconf_config", "RUNNERCONF_CONFIG",
           "Profile file (default: runnerconf.toml at the rootdir)"),
    Option("runnerconf_evidence", "--runnerconf-evidence", "runnerconf_evidence", "RUNNERCONF_EVIDENCE",
           "Directory for the evidence bundle (default: runnerconf-evidence/<run-id>)"),
    Option("runnerconf_replay", "--runnerconf-replay", "runnerconf_replay", "RUNNERCONF_REPLAY",
           "Re-assert a saved evidence bundle offline instead of running pipelines"),
    Option("runnerconf_report", "--runnerconf-report", "runnerconf_report", "RUNNERCONF_REPORT",
           "Directory for the conformance report (default: runnerconf-report)"),
    Option("runnerconf_baseline", "--runnerconf-baseline", "runnerconf_baseline", "RUNNERCONF_BASELINE",
           "Upgrade gate: a previous report.json; exit 1 only for checks that passed there and fail now"),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    cluster: str | None
    config_path: Path
    evidence_dir: Path | None
    replay_dir: Path | None
    report_dir: Path
    rootdir: Path
    baseline: Path | None = None  # the upgrade gate's previous report.json

    @property
    def active(self) -> bool:
        return bool(self.cluster or self.replay_dir)


def _value(config: pytest.Config, option: Option) -> str | None:
    """CLI > ini > environment."""
    cli = config.getoption(option.dest, default=None)
    if cli:
        return str(cli)
    ini = config.getini(option.ini)
    if ini:
        return str(ini)
    return os.environ.get(option.env) or None


def resolve_settings(config: pytest.Config) -> Settings:
    root = Path(config.rootpath)
    values = {o.dest: _value(config, o) for o in OPTIONS}

    def path(key: str) -> Path | None:
        raw = values[key]
        return None if raw is None else (root / Path(raw).expanduser())

    return Settings(
        cluster=values["runner_cluster"],
        config_path=path("runnerconf_config") or root / "runnerconf.toml",
        evidence_dir=path("runnerconf_evidence"),
        replay_dir=path("runnerconf_replay"),
        report_dir=path("runnerconf_report") or root / "runnerconf-report",
        rootdir=root,
        baseline=path("runnerconf_baseline"),
    )


def validate(settings: Settings) -> None:
    """Configuration problems found before collection become a usage error (exit 4)."""
    if settings.replay_dir is not None and not settings.replay_dir.is_dir():
        raise pytest.UsageError(f"--runnerconf-replay={settings.replay_dir} is not a directory")
    if settings.cluster and settings.cluster != LOCAL_NAME:
        try:
            load_profile(settings.config_path, settings.cluster)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
    elif settings.cluster == LOCAL_NAME:
        try:
            _local_faults(settings)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None


def _config_file(settings: Settings) -> Path | None:
    return settings.config_path if settings.config_path.is_file() else None


def _local_faults(settings: Settings) -> frozenset[str]:
    from pytest_runnerconf.local.faults import faults_from_env, parse_faults

    pre = load_profile(_config_file(settings), LOCAL_NAME, local_values=dict(_PRELOAD_VALUES))
    return parse_faults(pre.local_faults) | faults_from_env()


def local_values(info: Any) -> dict[str, str]:
    """The built-in local profile's placeholders, from a running local cluster's ClusterInfo."""
    return {
        "gitlab_url": info.gitlab_url,
        "kubeconfig": info.kubeconfig,
        "project": info.project,
        "runner_tag": info.runner_tag,
        "namespace": info.namespace,
        "token_env": LOCAL_TOKEN_ENV,
        "local_dns": getattr(info, "local_dns", "") or "127.0.0.1",
    }


# ---------------------------------------------------------------- shared directory (xdist)


def make_shared_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="runnerconf-session-"))


def remove_shared_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def stored_error(shared: Path) -> tuple[str, int] | None:
    """The could-not-test message the producing worker stored, if any."""
    path = shared / "error.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["message"]), int(data["code"])


def _store_error(shared: Path, message: str, code: int) -> None:
    (shared / "error.json").write_text(json.dumps({"message": message, "code": code}), encoding="utf-8")


# ---------------------------------------------------------------- the session


Progress = Callable[[str], None]


class RunnerConfSession:
    """What the fixtures hand out: the profile and the run's evidence, computed once per session."""

    def __init__(self, config: pytest.Config, settings: Settings, shared: Path, progress: Progress) -> None:
        self.config = config
        self.settings = settings
        self.shared = shared
        self.progress = progress
        self.plan = Plan(probes=())
        self._profile: Profile | None = None
        self._evidence: RunEvidence | None = None
        self._stop_local: Callable[[], None] | None = None

    # -- errors

    def fatal(self, message: str, code: int) -> NoReturn:
        """End the session once, without a traceback: exit CODE here, or skip and let the controller exit."""
        _store_error(self.shared, message, code)
        if is_worker(self.config):
            pytest.skip(f"could not test: {message}")
        pytest.exit(f"runnerconf: could not test: {message}", returncode=code)

    # -- profile

    def profile(self) -> Profile:
        if self._profile is None:
            self._profile = self._load_profile(self._shared_local_values())
        return self._profile

    def _shared_local_values(self) -> dict[str, str] | None:
        path = self.shared / "local_values.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _load_profile(self, values: dict[str, str] | None) -> Profile:
        name = self.settings.cluster
        # A replayed local run is judged by the local profile it recorded (its values came from that cluster).
        if self.settings.replay_dir is not None and name in (None, LOCAL_NAME):
            return self._replay_profile()
        assert name is not None
        try:
            return load_profile(
                _config_file(self.settings) or self.settings.config_path, name, local_values=values
            )
        except ConfigError as exc:
            self.fatal(str(exc), EXIT_USAGE)

    def _replay_profile(self) -> Profile:
        # Without --runner-cluster, replay judges the evidence against the expectations it was recorded with.
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
        return self._evidence

    def _obtain(self) -> RunEvidence:
        if self.settings.replay_dir is not None:
            try:
                return load(self.settings.replay_dir)
            except ConfigError as exc:
                self.fatal(str(exc), EXIT_USAGE)
        # The xdist recipe: the first worker through the lock runs the pipeline, the others load its bundle.
        with FileLock(str(self.shared / "run.lock")):
            error = stored_error(self.shared)
            if error is not None:
                self.fatal(*error)
            pointer = self.shared / "evidence.path"
            if pointer.is_file():
                return load(Path(pointer.read_text(encoding="utf-8")))
            try:
                run = self._produce()
            except ConfigError as exc:
                self.fatal(str(exc), EXIT_USAGE)
            except RunnerConfError as exc:
                self.fatal(str(exc), EXIT_COULD_NOT_TEST)
            pointer.write_text(run.evidence_dir, encoding="utf-8")
            return run

    def _produce(self) -> RunEvidence:
        from pytest_runnerconf.run import execute, new_run_id

        if self.settings.cluster == LOCAL_NAME:
            self._start_local()
        profile = self.profile()
        run_id = new_run_id()
        directory = self.settings.evidence_dir or (self.settings.rootdir / "runnerconf-evidence" / run_id)
        try:
            return execute(profile, self.plan, run_id, directory, self.progress)
        finally:
            self.progress("")  # clears the live line; the terminal summary has the run's one-line summary

    def _start_local(self) -> None:
        from pytest_runnerconf.local.cluster import ensure_running

        info, stop = ensure_running(_local_faults(self.settings), log=self.progress)
        self._stop_local = stop
        # The local token is handed over in-process only; the profile names the variable, never the value.
        os.environ[LOCAL_TOKEN_ENV] = info.gitlab_token
        values = local_values(info)
        (self.shared / "local_values.json").write_text(json.dumps(values), encoding="utf-8")

    def close(self) -> None:
        if self._stop_local is not None:
            stop, self._stop_local = self._stop_local, None
            stop()
