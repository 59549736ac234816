"""Loading the emulated runner's config.toml: types, errors, feature flags and short tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_runnerconf.local.errors import LocalConfigError as ConfigError
from pytest_runnerconf.local.runner_config import (
    FEATURE_FLAG_DEFAULTS,
    DNSConfig,
    HostAlias,
    load_runner_config,
    short_token,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "local" / "config.toml"
SUBS = {"@local-dns": "172.17.0.1", "@gitlab-url": "http://127.0.0.1:8929/"}

MINIMAL = """
concurrent = 2
[[runners]]
  name = "r"
  url = "http://127.0.0.1/"
  token = "glrt-t1_abcdefghijklmn"
  executor = "kubernetes"
  [runners.kubernetes]
    namespace = "ci"
"""


def test_fixture_loads_with_substitutions() -> None:
    cfg = load_runner_config(FIXTURE, SUBS)
    kube = cfg.runner.kubernetes
    assert cfg.concurrent == 40
    assert cfg.check_interval == 1
    assert cfg.runner.name == "runnerconf-local"
    assert cfg.runner.url == "http://127.0.0.1:8929/"
    assert cfg.runner.executor == "kubernetes"
    assert cfg.builds_dir == "/builds"
    assert cfg.runner.feature_flags == {"FF_TIMESTAMPS": True}
    assert (kube.namespace, kube.image, kube.privileged) == ("ci", "alpine:3.20", True)
    assert kube.helper_image.endswith("gitlab-runner-helper:x86_64-v18.11.4")
    assert (kube.poll_interval, kube.poll_timeout, kube.cleanup_grace_period_seconds) == (1, 180, 5)
    assert (kube.cpu_limit, kube.cpu_request, kube.memory_limit, kube.memory_request) == (
        "1",
        "500m",
        "512Mi",
        "256Mi",
    )
    assert kube.cpu_limit_overwrite_max_allowed == "1500m"
    assert kube.memory_limit_overwrite_max_allowed == "1Gi"
    assert kube.cpu_request_overwrite_max_allowed == "1"
    assert kube.memory_request_overwrite_max_allowed == "512Mi"
    assert (kube.helper_cpu_limit, kube.helper_memory_limit) == ("500m", "256Mi")
    assert (kube.service_cpu_limit, kube.service_memory_limit) == ("1", "1Gi")
    assert kube.helper_cpu_limit_overwrite_max_allowed and kube.service_memory_limit_overwrite_max_allowed
    assert kube.dns_policy == "none"
    assert kube.dns_config == DNSConfig(
        nameservers=("172.17.0.1",),
        searches=("ci.svc.cluster.local", "svc.cluster.local", "cluster.local"),
        options=(("ndots", "2"), ("timeout", "2")),
    )


def test_fixture_never_names_an_outside_resolver() -> None:
    cfg = load_runner_config(FIXTURE, {})
    assert cfg.runner.kubernetes.dns_config.nameservers == ("@local-dns",)


def test_load_from_text_and_defaults() -> None:
    cfg = load_runner_config(MINIMAL)
    kube = cfg.runner.kubernetes
    assert cfg.source == "<config text>"
    assert cfg.builds_dir == "/builds"  # the runner's default when builds_dir is unset
    assert kube.poll_interval == 3 and kube.poll_timeout == 180
    assert kube.privileged is None and kube.cleanup_grace_period_seconds is None
    assert kube.dns_config.is_empty()


def test_nested_tables_are_typed() -> None:
    text = (
        MINIMAL
        + """
    cap_add = ["NET_RAW", "SYS_TIME"]
    image_pull_secrets = ["regcred"]
    pod_labels = { team = "ci" }
    [[runners.kubernetes.host_aliases]]
      ip = "10.0.0.2"
      hostnames = ["mirror.example"]
    [[runners.kubernetes.services]]
      name = "redis:7"
      alias = "cache"
    [runners.kubernetes.build_container_security_context]
      privileged = false
      run_as_user = 1000
      [runners.kubernetes.build_container_security_context.capabilities]
        drop = ["ALL"]
    [runners.kubernetes.pod_security_context]
      fs_group = 2000
      supplemental_groups = [1, 2]
"""
    )
    kube = load_runner_config(text).runner.kubernetes
    assert kube.cap_add == ("NET_RAW", "SYS_TIME")
    assert kube.image_pull_secrets == ("regcred",)
    assert kube.pod_labels == {"team": "ci"}
    assert kube.host_aliases == (HostAlias("10.0.0.2", ("mirror.example",)),)
    assert kube.services[0].name == "redis:7" and kube.services[0].alias == "cache"
    bcsc = kube.build_container_security_context
    assert (bcsc.privileged, bcsc.run_as_user, bcsc.cap_drop, bcsc.cap_add) == (False, 1000, ("ALL",), None)
    assert kube.pod_security_context.fs_group == 2000
    assert kube.pod_security_context.supplemental_groups == (1, 2)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("concurrent = \n[[runners]\n")
    with pytest.raises(ConfigError, match=r"config\.toml: malformed TOML"):
        load_runner_config(bad)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read runner config"):
        load_runner_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'privileged = "yes"',
            r"\[runners\.kubernetes\] privileged must be a boolean \(true/false\) or absent",
        ),
        ('poll_timeout = "180"', r"\[runners\.kubernetes\] poll_timeout must be an integer, got str '180'"),
        ("poll_timeout = true", r"poll_timeout must be an integer, got bool True"),
        ("cap_add = [1]", r"cap_add must be an array of strings"),
        ('cpu_limit = "lots"', r"cpu_limit = 'lots' is not a Kubernetes quantity"),
        ('memory_limit_overwrite_max_allowed = "1GB"', r"memory_limit_overwrite_max_allowed = '1GB'"),
    ],
)
def test_wrong_types_name_file_key_and_allowed(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "runner.toml"
    path.write_text(MINIMAL + f"    {line}\n")
    with pytest.raises(ConfigError, match=expected) as err:
        load_runner_config(path)
    assert str(path) in str(err.value)


def test_type_errors_never_show_the_token() -> None:
    text = MINIMAL.replace('token = "glrt-t1_abcdefghijklmn"', "token = 12345678901")
    with pytest.raises(ConfigError, match=r"token must be a string, got int <hidden>") as err:
        load_runner_config(text)
    assert "12345678901" not in str(err.value)


def test_token_not_in_repr() -> None:
    assert "abcdefghijklmn" not in repr(load_runner_config(MINIMAL))


def test_at_least_one_runner_required() -> None:
    with pytest.raises(ConfigError, match=r"at least one \[\[runners\]\]"):
        load_runner_config("concurrent = 1\n")


def test_fixture_has_a_capacity_runner_of_its_own() -> None:
    """RC-CAP-*: the second entry is its own runner (name, token, limit); the first keeps every setting."""
    cfg = load_runner_config(FIXTURE, SUBS)
    main, capacity, cache = cfg.entries()
    assert cfg.runner is main and main.name == "runnerconf-local" and main.limit == 0
    assert (capacity.name, capacity.limit, capacity.kubernetes.namespace) == ("runnerconf-capacity", 2, "ci")
    assert capacity.short_token == "rccapacit" != main.short_token
    view = cfg.for_runner(capacity)
    assert view.runner is capacity and view.concurrent == cfg.concurrent and view.entries() == cfg.entries()
    assert view.output_limit_bytes == 4096 * 1024  # its own output_limit (unset), not the first entry's
    # RC-CCH-002: the cache runner is its own runner too, on the same shared bucket as the first
    assert cache.name == "runnerconf-cache" and cache.short_token not in (
        main.short_token,
        capacity.short_token,
    )
    assert cache.cache == main.cache and main.cache is not None and main.cache.shared
    assert capacity.cache is None


def test_two_runners_with_one_name_or_token_are_refused() -> None:
    second = MINIMAL[MINIMAL.index("[[runners]]") :]
    with pytest.raises(ConfigError, match="two \\[\\[runners\\]\\] tables have the same name"):
        load_runner_config(MINIMAL + "\n" + second)
    renamed = second.replace('name = "', 'name = "other-', 1)
    with pytest.raises(ConfigError, match="same token"):
        load_runner_config(MINIMAL + "\n" + renamed)
    limited = renamed.replace("glrt-t1_", "glrt-t1_zz", 1).replace(
        '"kubernetes"\n', '"kubernetes"\n  limit = 3\n', 1
    )
    cfg = load_runner_config(MINIMAL + "\n" + limited)
    assert [r.limit for r in cfg.entries()] == [0, 3]


def test_required_runner_keys() -> None:
    with pytest.raises(ConfigError, match=r"\[\[runners\]\] token is required"):
        load_runner_config(MINIMAL.replace('  token = "glrt-t1_abcdefghijklmn"\n', ""))


def test_feature_flag_defaults_and_config_override() -> None:
    cfg = load_runner_config(
        MINIMAL.replace(
            '  executor = "kubernetes"',
            '  executor = "kubernetes"\n  [runners.feature_flags]\n'
            "    FF_PRINT_POD_EVENTS = true\n    FF_USE_POD_ACTIVE_DEADLINE_SECONDS = false",
        )
    )
    assert cfg.feature_flag("FF_TIMESTAMPS") is True
    assert cfg.feature_flag("FF_SKIP_NOOP_BUILD_STAGES") is True
    assert cfg.feature_flag("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY") is False
    assert cfg.feature_flag("FF_SCRIPT_SECTIONS") is False
    assert cfg.feature_flag("FF_PRINT_POD_EVENTS") is True
    assert cfg.feature_flag("FF_USE_POD_ACTIVE_DEADLINE_SECONDS") is False
    assert cfg.feature_flag("FF_NO_SUCH_FLAG") is False
    # every flag of helpers/featureflags/flags.go at v18.11.4, FF_USE_LEGACY_S3_CACHE_ADAPTER included
    assert len(FEATURE_FLAG_DEFAULTS) == 51
    assert FEATURE_FLAG_DEFAULTS["FF_USE_LEGACY_S3_CACHE_ADAPTER"] is False


def test_feature_flags_must_be_booleans() -> None:
    text = MINIMAL.replace(
        '  executor = "kubernetes"', '  executor = "kubernetes"\n  feature_flags = { X = "on" }'
    )
    with pytest.raises(ConfigError, match=r"feature_flags must be a table of booleans"):
        load_runner_config(text)


@pytest.mark.parametrize(
    ("token", "short"),
    [
        ("glrt-t1_runnerconflocal0000", "runnercon"),
        ("glrt-abcdefghijklmnop", "abcdefghi"),
        ("glrt-t3_zyxwvutsrqpo", "zyxwvutsr"),
        ("t2_abcdefghijkl", "abcdefghi"),
        ("glrtr-abcdefghijkl", "abcdefghi"),
        ("glcbt-abcdefghijkl", "abcdefghi"),
        ("GR1348941abcdefghijkl", "abcdefghi"),
        ("GR13489Zabcdefghijkl", "GR13489Za"),  # not 7 hex characters after GR: nothing stripped
        ("0123456789abcdef", "012345678"),
        ("short", "short"),
        ("glrt-t4_abcdefghijkl", "t4_abcdef"),  # only partitions t1..t3 are known prefixes
    ],
)
def test_short_token(token: str, short: str) -> None:
    assert short_token(token) == short
