"""The local cluster as a target provider: the plugin's only way in (entry point pytest_runnerconf.targets)."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from pytest_runnerconf.errors import ConfigError, InfraError
from pytest_runnerconf.local.errors import LocalConfigError, LocalError
from pytest_runnerconf.local.faults import ENV_VAR, PENDING_POLL_TIMEOUT_S, parse_faults
from pytest_runnerconf.local.model import LEAST_CONTEXT, ClusterInfo
from pytest_runnerconf.profile import Profile, flat_keys, profile_from_table
from pytest_runnerconf.resources import fixtures_path
from pytest_runnerconf.targets import Target

NAME = "local"
USER_KEYS = ("expect", "local_faults")  # what a runnerconf.toml may set for the local cluster
DNS_PLACEHOLDER = "@local_dns"


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], val)
        else:
            merged[key] = val
    return merged


def _fill_dns(value: Any, address: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill_dns(v, address) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_dns(v, address) for v in value]
    return address if value == DNS_PLACEHOLDER else value


def user_settings(table: Mapping[str, Any] | None, source: str) -> tuple[dict[str, Any], frozenset[str]]:
    """The user's expect overrides and the faults asked for (profile key and RUNNERCONF_LOCAL_FAULTS)."""
    table = dict(table or {})
    for key in table:
        if key not in USER_KEYS:
            raise ConfigError(
                f"{source}: clusters.{NAME}.{key} is set by the local cluster itself; only "
                f"{' and '.join(USER_KEYS)} may be set there"
            )
    expect = table.get("expect", {})
    if not isinstance(expect, dict):
        raise ConfigError(f"{source}: clusters.{NAME}.expect must be a table")
    faults = table.get("local_faults", [])
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise ConfigError(f"{source}: clusters.{NAME}.local_faults must be a list of fault names")
    try:
        chosen = parse_faults(faults) | parse_faults(os.environ.get(ENV_VAR))
    except LocalConfigError as exc:
        where = f"clusters.{NAME}.local_faults or ${ENV_VAR}"
        raise ConfigError(f"{source}: {where}: {exc}") from None
    return expect, chosen


def builtin_expect() -> dict[str, Any]:
    data = tomllib.loads(fixtures_path("local", "profile.toml").read_text(encoding="utf-8"))
    return dict(data["expect"])


def local_table(info: ClusterInfo, expect: Mapping[str, Any]) -> dict[str, Any]:
    """The [clusters.local] table of a running cluster: its connection values and the expectations."""
    table: dict[str, Any] = {
        "gitlab_url": info.gitlab_url,
        "token_file": info.token_file,
        "project": info.project,
        "runner_tags": [info.runner_tag],
        "kubeconfig": info.kubeconfig,
        # Runs use the least-privilege context (`runnerconf rbac`), not the cluster's full-rights one.
        "kube_context": LEAST_CONTEXT,
        "namespace": info.namespace,
        "expect": _fill_dns(_merge(builtin_expect(), expect), info.local_dns or "127.0.0.1"),
    }
    if info.gitlab_ca_file:  # `runnerconf local up --tls-gitlab`: verify GitLab against the cluster's CA
        table["gitlab_ca_file"] = info.gitlab_ca_file
    return table


def local_profile(
    info: ClusterInfo, expect: Mapping[str, Any], source: str, provided: Mapping[str, str] | None = None
) -> Profile:
    """The local cluster's profile; expectations the user did not set are the built-in profile.toml's, and
    PROVIDED (dotted key -> why) are values the provider set itself for this run."""
    builtin = fixtures_path("local", "profile.toml")
    user = {key for key, _ in flat_keys(dict(expect)) if key not in (provided or {})}
    origins = {
        key: ("target", f"{builtin} (the local cluster's own profile)")
        for key, _ in flat_keys(builtin_expect())
        if key not in user and not any(key.startswith(f"{u}.") for u in user)
    }
    origins.update({key: ("target", why) for key, why in (provided or {}).items()})
    return profile_from_table(NAME, local_table(info, expect), source, origins=origins)


class LocalProvider:
    """Starts (or reuses) the embedded local cluster and describes it as a complete profile."""

    name = NAME

    def validate(self, table: Mapping[str, Any] | None, source: str) -> None:
        expect, _ = user_settings(table, source)
        # Validate the expectations now, with stand-in connection values, so a typo fails before collection.
        placeholder = ClusterInfo(
            gitlab_url="http://127.0.0.1", gitlab_token="", kubeconfig="-", kube_context="-", project="p/p",
            runner_tag="t", namespace="ci", pid=0, home="", token_file="-",
        )  # fmt: skip
        profile_from_table(NAME, local_table(placeholder, expect), source)

    def open(self, table: Mapping[str, Any] | None, source: str, log: Callable[[str], None]) -> Target:
        from pytest_runnerconf.local.cluster import ensure_running

        expect, faults = user_settings(table, source)
        provided: dict[str, str] = {}
        if "pod-pending-timeout" in faults and "poll_timeout_s" not in expect:
            # The fault's runner waits PENDING_POLL_TIMEOUT_S for a pod: the profile says so, as an operator's
            # would, so the run gives up on the pod (and diagnoses it) before the runner does.
            expect = {**expect, "poll_timeout_s": PENDING_POLL_TIMEOUT_S}
            provided["poll_timeout_s"] = "the local fault pod-pending-timeout (its runner's poll timeout)"
        try:
            info, stop = ensure_running(log=log)
        except LocalError as exc:
            raise InfraError(str(exc)) from None
        profile = local_profile(info, expect, source, provided)
        variables = {ENV_VAR: ",".join(sorted(faults))} if faults else {}
        return Target(profile=profile, pipeline_variables=variables, close=stop)

    def running(self, table: Mapping[str, Any] | None, source: str) -> Target | None:
        """The running local cluster as a target (never starts one); None when none runs."""
        from pytest_runnerconf.local.cluster import read_state

        expect, _ = user_settings(table, source)
        info = read_state()
        if info is None:
            return None
        return Target(profile=local_profile(info, expect, source))

    def add_commands(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        from pytest_runnerconf.local.cli import add_commands

        add_commands(commands)
