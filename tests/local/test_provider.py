"""The local cluster's target provider: its built-in profile, the user's overrides and its faults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.local.faults import ENV_VAR
from pytest_runnerconf.local.model import ClusterInfo
from pytest_runnerconf.local.provider import LocalProvider, local_table, user_settings
from pytest_runnerconf.profile import profile_from_table
from pytest_runnerconf.resources import fixtures_path

INFO = ClusterInfo(
    gitlab_url="http://127.0.0.1:8929",
    gitlab_token="glpat-never-in-the-profile-0000",
    kubeconfig="/tmp/runnerconf/kubeconfig",
    kube_context="runnerconf-local",
    project="runnerconf/scratch",
    runner_tag="runnerconf-local",
    namespace="ci",
    pid=1,
    home="/tmp/runnerconf",
    local_dns="172.17.0.1",
    token_file="/tmp/runnerconf/gitlab-token",
)


def _profile(table: dict[str, object] | None = None, source: str = "runnerconf.toml") -> object:
    expect, _ = user_settings(table, source)
    return profile_from_table("local", local_table(INFO, expect), source)


def test_builtin_profile_comes_from_the_running_cluster() -> None:
    profile = _profile()
    assert profile.gitlab_url == "http://127.0.0.1:8929"  # type: ignore[attr-defined]
    assert profile.token_file == "/tmp/runnerconf/gitlab-token"  # type: ignore[attr-defined]
    assert profile.token_env is None  # type: ignore[attr-defined]
    assert profile.runner_tags == ("runnerconf-local",)  # type: ignore[attr-defined]
    # Runs use the least-privilege context (what `runnerconf rbac` generates), not the full-rights one.
    assert profile.kube_context == "runnerconf-local-least"  # type: ignore[attr-defined]
    expect = profile.expect  # type: ignore[attr-defined]
    assert expect.dns is not None and expect.dns.nameservers == ("172.17.0.1",)
    # the image mirror and the scratch project's registry, both plain HTTP
    assert expect.images.insecure_registries == (
        "registry.runnerconf.test:5000",
        "registry.runnerconf.test:5001",
    )
    assert "glpat-never" not in repr(profile) and "@" not in repr(profile)


def test_builtin_expectations_match_the_local_runner_config() -> None:
    config = tomllib.loads(fixtures_path("local", "config.toml").read_text(encoding="utf-8"))
    runner = config["runners"][0]
    kube = runner["kubernetes"]
    exp = _profile().expect  # type: ignore[attr-defined]
    for prefix, limits in (("", exp.build), ("helper_", exp.helper), ("service_", exp.service)):
        for field, value in vars(limits).items():
            assert kube[f"{prefix}{field}"] == value, f"{prefix}{field}"
    caps = {
        k.removesuffix("_overwrite_max_allowed"): v for k, v in kube.items() if k.endswith("_max_allowed")
    }
    assert caps == exp.override_caps
    assert exp.dns is not None and exp.dns.policy.lower() == kube["dns_policy"]
    assert list(exp.dns.searches) == kube["dns_config"]["searches"]
    assert [(o["name"], o["value"]) for o in kube["dns_config"]["options"]] == list(exp.dns.options)
    assert runner.get("builds_dir", "/builds") == exp.builds_dir
    assert kube["namespace"] == "ci"


def test_user_table_overrides_expectations_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    table = {"local_faults": ["leak-pods"], "expect": {"build": {"cpu_limit": "2"}}}
    profile = _profile(table)
    assert profile.expect.build.cpu_limit == "2"  # type: ignore[attr-defined]
    assert profile.expect.build.memory_limit == "512Mi"  # type: ignore[attr-defined]
    assert user_settings(table, "f.toml")[1] == frozenset({"leak-pods"})
    with pytest.raises(ConfigError) as caught:
        user_settings({"gitlab_url": "https://elsewhere.example"}, "f.toml")
    assert str(caught.value) == (
        "f.toml: clusters.local.gitlab_url is set by the local cluster itself; "
        "only expect and local_faults may be set there"
    )


def test_unknown_fault_names_the_key_and_the_known_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ConfigError) as caught:
        LocalProvider().validate({"local_faults": ["leak-pod"]}, "f.toml")
    message = str(caught.value)
    assert message.startswith(
        f"f.toml: clusters.local.local_faults or ${ENV_VAR}: unknown local-cluster fault 'leak-pod'"
    )
    assert "leak-pods" in message
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(ConfigError, match="unknown local-cluster fault 'nope'"):
        LocalProvider().validate(None, "the built-in 'local' cluster")


def test_bad_expectation_fails_validation_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match=r"clusters\.local\.expect\.build\.cpu_limit"):
        LocalProvider().validate({"expect": {"build": {"cpu_limit": "lots"}}}, "f.toml")


def test_profile_toml_has_no_connection_values() -> None:
    data = tomllib.loads(Path(fixtures_path("local", "profile.toml")).read_text(encoding="utf-8"))
    assert set(data) == {"expect"}


def test_a_cluster_started_from_other_code_or_config_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import json
    import os

    from pytest_runnerconf.local import cluster
    from pytest_runnerconf.local.errors import LocalStartError

    monkeypatch.setenv("RUNNERCONF_LOCAL_HOME", str(tmp_path))
    monkeypatch.setattr(cluster, "_answers", lambda url, ca="": True)  # as if its GitLab answered

    def recorded(digest: str) -> None:
        info = dataclasses.replace(INFO, pid=os.getpid(), home=str(tmp_path), source_digest=digest)
        (tmp_path / cluster.STATE_NAME).write_text(json.dumps(dataclasses.asdict(info)))

    recorded(cluster.source_digest())
    info, stop = cluster.ensure_running(log=lambda line: None)
    assert (info.pid, stop) == (os.getpid(), None)  # this checkout's cluster: reused, not ours to stop

    other_config = tmp_path / "config.toml"
    other_config.write_text(fixtures_path("local", "config.toml").read_text() + "\n# output_limit changed\n")
    assert cluster.source_digest(other_config) != cluster.source_digest()
    recorded(cluster.source_digest(other_config))
    with pytest.raises(
        LocalStartError, match=r"started from other code or another config\.toml .*local down"
    ):
        cluster.ensure_running(log=lambda line: None)
