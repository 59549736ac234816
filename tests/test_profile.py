"""Profile loading: the example and built-in profiles, every error message, and token handling."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.profile import (
    DnsExpect,
    Limits,
    find_profile_file,
    known_clusters,
    load_profile,
    quantity_value,
)

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
[clusters.prod]
gitlab_url = "https://gitlab.example.com"
token_env = "RC_TEST_TOKEN"
project = "infra/scratch"
namespace = "ci"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runnerconf.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, name: str = "prod", **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_profile(path, name, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_example_profile_loads_with_every_section() -> None:
    profile = load_profile(ROOT / "runnerconf.example.toml", "prod")
    assert profile.gitlab_url == "https://gitlab.example.com"
    assert profile.token_env == "RUNNERCONF_PROD_TOKEN"
    assert profile.runner_tags == ("k8s", "prod")
    assert profile.kube_context == "prod-eu-1"
    assert profile.kubeconfig is not None and not profile.kubeconfig.startswith("~")
    exp = profile.expect
    assert exp.build == Limits(cpu_limit="2", cpu_request="500m", memory_limit="4Gi", memory_request="1Gi")
    assert exp.override_caps["cpu_limit"] == "4"
    assert exp.dns == DnsExpect(
        policy="None",
        nameservers=("10.0.0.2",),
        searches=("gitlab-runner-jobs.svc.cluster.local", "svc.cluster.local", "cluster.local"),
        options=(("ndots", "2"), ("timeout", "2")),
    )
    assert exp.dns.resolv_options() == ("ndots:2", "timeout:2")
    assert exp.images.build.endswith("alpine:3.20")


def test_minimal_cluster_gets_defaults(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, MINIMAL), "prod")
    assert profile.runner_tags == ()
    assert profile.kubeconfig is None and profile.kube_context is None
    assert profile.expect.builds_dir == "/builds"
    assert profile.expect.cleanup_deadline_s == 60.0
    assert profile.expect.build == Limits()
    assert profile.expect.dns is None
    assert profile.expect.oom_report == "container"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert error_of(path) == (
        f"{path}: profile file not found; create it (see runnerconf.example.toml) "
        "or use --runner-cluster=local"
    )


def test_no_file_names_the_cluster_where_it_looked_and_the_builtin_ones(tmp_path: Path) -> None:
    looked = (tmp_path / "runnerconf.toml", tmp_path / "xdg" / "runnerconf" / "runnerconf.toml")
    message = error_of(None, "prod", looked_in=looked, targets=("local",))
    assert message == (
        f"no profile file defines cluster 'prod' (looked in: {looked[0]}, {looked[1]}); "
        "built-in clusters: local; create one from runnerconf.example.toml or point --runnerconf-config at it"
    )


def test_profile_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, xdg = tmp_path / "work", tmp_path / "xdg"
    cwd.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert find_profile_file(None, cwd) == (
        None,
        (cwd / "runnerconf.toml", xdg / "runnerconf" / "runnerconf.toml"),
    )
    (xdg / "runnerconf").mkdir(parents=True)
    (xdg / "runnerconf" / "runnerconf.toml").write_text(MINIMAL)
    assert find_profile_file(None, cwd)[0] == xdg / "runnerconf" / "runnerconf.toml"
    (cwd / "runnerconf.toml").write_text(MINIMAL)
    assert find_profile_file(None, cwd)[0] == cwd / "runnerconf.toml"
    explicit = tmp_path / "mine.toml"
    assert find_profile_file(explicit, cwd) == (None, (explicit,))


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[clusters.prod.expect\n")  # MINIMAL has 6 lines
    message = error_of(path)
    assert message.startswith(f"{path}: TOML syntax error: ")
    assert "line 7" in message


def test_unknown_cluster_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + MINIMAL.replace("prod", "staging"))
    assert error_of(path, "qa") == f"{path}: no cluster 'qa' under [clusters]; known clusters: prod, staging"
    assert error_of(path, "qa", targets=("local",)).endswith("known clusters: local, prod, staging")
    assert known_clusters(path, ("local",)) == ["local", "prod", "staging"]


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ("project", "missing required key clusters.prod.project; it must be the scratch project path"),
        ("namespace", "missing required key clusters.prod.namespace; it must be the job namespace"),
        ("token_env", "missing required key clusters.prod.token_env (or token_file);"),
    ],
)
def test_missing_required_key(tmp_path: Path, drop: str, expected: str) -> None:
    text = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(drop))
    assert expected in error_of(write(tmp_path, text))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('runner_tags = "k8s"', "clusters.prod.runner_tags = 'k8s' (str) is not allowed; it must be a list"),
        (
            '[clusters.prod.expect]\ncleanup_deadline_s = "60"',
            "clusters.prod.expect.cleanup_deadline_s = '60' (str) is not allowed; it must be a positive",
        ),
        (
            "[clusters.prod.expect]\nservice_oom_reported = 1",
            "clusters.prod.expect.service_oom_reported = 1 (int) is not allowed; it must be true or false",
        ),
        (
            '[clusters.prod.expect]\noom_report = "kernel"',
            "clusters.prod.expect.oom_report = 'kernel' is not allowed; use one of: container, process",
        ),
        (
            "[clusters.prod.expect]\nbuild = 3",
            "clusters.prod.expect.build = 3 (int) is not allowed; it must be a table",
        ),
    ],
)
def test_wrong_type(tmp_path: Path, extra: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + extra + "\n")
    assert error_of(path).startswith(f"{path}: {expected}")


def test_unknown_key_suggests_the_near_one(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[clusters.prod.expect]\nbuidls_dir = "/b"\n')
    message = error_of(path)
    assert message.startswith(
        f"{path}: unknown key clusters.prod.expect.buidls_dir (did you mean builds_dir?); "
    )
    assert "allowed keys: build, builds_dir, cache, capacity, cgroup, cleanup_deadline_s," in message
    path = write(tmp_path, MINIMAL + '[clusters.prod.expect.build]\ncpu_limt = "1"\n')
    assert "unknown key clusters.prod.expect.build.cpu_limt (did you mean cpu_limit?)" in error_of(path)
    path = write(tmp_path, MINIMAL.replace("[clusters.prod]", 'token = "x"\n[clusters.prod]'))
    assert f"{path}: unknown key (top level).token; allowed keys: clusters" == error_of(path)


def test_bad_quantity(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[clusters.prod.expect.build]\nmemory_limit = "512MB"\n')
    assert error_of(path) == (
        f"{path}: clusters.prod.expect.build.memory_limit = '512MB' is not a Kubernetes quantity; "
        'use a form such as "500m", "2", "512Mi" or "1Gi"'
    )
    path = write(tmp_path, MINIMAL + '[clusters.prod.expect.override_caps]\ncpu_limit = "lots"\n')
    assert "clusters.prod.expect.override_caps.cpu_limit = 'lots' is not a Kubernetes quantity" in error_of(
        path
    )


def test_bad_dns_policy(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[clusters.prod.expect.dns]\npolicy = "ClusterLast"\n')
    assert error_of(path) == (
        f"{path}: clusters.prod.expect.dns.policy = 'ClusterLast' is not a DNS policy; "
        "use one of: None, Default, ClusterFirst, ClusterFirstWithHostNet"
    )


def test_dns_policy_accepts_the_runner_spelling_and_option_tables(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[clusters.prod.expect.dns]\npolicy = "cluster-first"\n'
        'options = [{name = "ndots", value = "3"}, "rotate"]\n'
    )
    dns = load_profile(write(tmp_path, text), "prod").expect.dns
    assert dns == DnsExpect(policy="ClusterFirst", options=(("ndots", "3"), ("rotate", None)))
    assert dns.resolv_options() == ("ndots:3", "rotate")


def test_local_faults_on_another_cluster_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL.replace('namespace = "ci"', 'namespace = "ci"\nlocal_faults = ["leak-pods"]')
    )
    assert error_of(path) == (
        f"{path}: clusters.prod.local_faults is a setting of the built-in 'local' cluster only and has no "
        "effect here; remove it from clusters.prod"
    )


def test_token_from_env_then_file_and_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "glpat-abcdefghijklmnopqrst"
    token_file = tmp_path / "token"
    token_file.write_text("glpat-fromthefile0000000\n", encoding="utf-8")
    text = MINIMAL.replace(
        'token_env = "RC_TEST_TOKEN"', f'token_env = "RC_TEST_TOKEN"\ntoken_file = "{token_file}"'
    )
    profile = load_profile(write(tmp_path, text), "prod")
    monkeypatch.setenv("RC_TEST_TOKEN", secret)
    assert profile.token() == secret
    assert secret not in repr(profile) and secret not in str(profile.summary())
    monkeypatch.delenv("RC_TEST_TOKEN")
    assert profile.token() == "glpat-fromthefile0000000"


def test_missing_token_names_env_var_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RC_TEST_TOKEN", raising=False)
    path = write(tmp_path, MINIMAL)
    profile = load_profile(path, "prod")
    with pytest.raises(ConfigError) as info:
        profile.token()
    assert str(info.value) == (
        f"{path}: environment variable RC_TEST_TOKEN holding the GitLab token is not set; "
        "export it or change clusters.prod.token_env"
    )
    missing = tmp_path / "absent.token"
    profile = load_profile(
        write(tmp_path, MINIMAL.replace('token_env = "RC_TEST_TOKEN"', f'token_file = "{missing}"')), "prod"
    )
    with pytest.raises(
        ConfigError, match=r"cannot read the GitLab token file .*absent\.token.*clusters\.prod\.token_file"
    ):
        profile.token()


def test_quantity_values() -> None:
    assert quantity_value("1500m") == Decimal("1.5")
    assert quantity_value("1") == quantity_value("1000m")
    assert quantity_value("1Gi") == 2**30
    assert quantity_value("512Mi") * 2 == quantity_value("1Gi")
    assert quantity_value("1e3") == 1000
    with pytest.raises(ValueError):
        quantity_value("1 GB")


def test_relative_paths_in_a_profile_are_relative_to_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like paths in an ini file (and in a kubeconfig): not relative to wherever pytest happens to start.
    home = tmp_path / "config" / "runnerconf"
    home.mkdir(parents=True)
    (home / "token").write_text("glpat-relativetoken00000\n", encoding="utf-8")
    path = home / "runnerconf.toml"
    path.write_text(
        MINIMAL.replace('token_env = "RC_TEST_TOKEN"', 'token_file = "token"\nkubeconfig = "kube/prod.yaml"'),
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    profile = load_profile(path, "prod")
    assert profile.kubeconfig == str(home / "kube" / "prod.yaml")
    assert profile.token_file == str(home / "token")
    assert profile.token() == "glpat-relativetoken00000"


def test_absolute_and_home_paths_in_a_profile_stay_as_written(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'token_env = "RC_TEST_TOKEN"', 'token_file = "/run/secrets/t"\nkubeconfig = "~/.kube/c"'
    )
    profile = load_profile(write(tmp_path, text), "prod")
    assert profile.token_file == "/run/secrets/t"
    assert profile.kubeconfig == str(Path.home() / ".kube" / "c")


def test_each_expectation_says_where_its_value_came_from(tmp_path: Path) -> None:
    from pytest_runnerconf.profile import profile_from_summary

    path = write(tmp_path, MINIMAL + '[clusters.prod.expect]\ncleanup_deadline_s = 90\n'
                 '[clusters.prod.expect.build]\ncpu_limit = "2"\n[clusters.prod.expect.dns]\npolicy = "None"\n')  # fmt: skip
    profile = load_profile(path, "prod")
    sources = {s.key: s for s in profile.expect_sources()}
    assert (sources["cleanup_deadline_s"].origin, sources["cleanup_deadline_s"].file) == (
        "profile",
        str(path),
    )
    assert sources["cleanup_deadline_s"].value == 90.0
    assert sources["build.cpu_limit"].setting == "clusters.prod.expect.build.cpu_limit"
    assert (
        sources["build.cpu_limit"].origin == "profile" and sources["build.memory_limit"].origin == "default"
    )
    # A table set in the file covers its values, also those left at their defaults within it.
    assert sources["dns.policy"].origin == "profile"
    assert (sources["builds_dir"].origin, sources["builds_dir"].file, sources["builds_dir"].value) == (
        "default",
        None,
        "/builds",
    )
    # Every expectation is listed once; the evidence keeps where each came from.
    keys = [s.key for s in profile.expect_sources()]
    assert len(keys) == len(set(keys)) and "images.build" in keys
    again = profile_from_summary(profile.summary())
    assert again.expect_sources() == profile.expect_sources()


def test_the_local_cluster_names_its_own_profile_for_what_the_user_did_not_set() -> None:
    from pytest_runnerconf.local.model import ClusterInfo
    from pytest_runnerconf.local.provider import local_profile

    info = ClusterInfo(
        gitlab_url="http://127.0.0.1", gitlab_token="", kubeconfig="-", kube_context="-", project="p/p",
        runner_tag="t", namespace="ci", pid=0, home="", token_file="-",
    )  # fmt: skip
    profile = local_profile(
        info,
        {"cleanup_deadline_s": 45, "build": {"cpu_limit": "2"}, "poll_timeout_s": 20},
        "/home/me/runnerconf.toml",
        {"poll_timeout_s": "the local fault pod-pending-timeout"},
    )
    sources = {s.key: s for s in profile.expect_sources()}
    assert (sources["cleanup_deadline_s"].origin, sources["cleanup_deadline_s"].file) == (
        "profile",
        "/home/me/runnerconf.toml",
    )
    assert sources["build.cpu_limit"].origin == "profile"
    assert sources["build.memory_limit"].origin == "target" and "profile.toml" in str(
        sources["build.memory_limit"].file
    )
    assert sources["dns.policy"].origin == "target"
    assert (sources["poll_timeout_s"].origin, sources["poll_timeout_s"].file) == (
        "target",
        "the local fault pod-pending-timeout",
    )
    assert sources["images.docker_cli"].origin == "target"


def test_registry_to_push_to_defaults_to_gitlabs_own_variables(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + '[clusters.prod.expect.registry]\naddress = "registry.example.com/"\nrepository = "/infra/rc"\n'
    )
    registry = load_profile(write(tmp_path, text), "prod").expect.registry
    assert registry is not None
    assert (registry.address, registry.repository) == ("registry.example.com", "infra/rc")
    assert (registry.user_variable, registry.password_variable) == (
        "CI_REGISTRY_USER",
        "CI_REGISTRY_PASSWORD",
    )
    assert load_profile(write(tmp_path, MINIMAL), "prod").expect.registry is None


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'repository = "infra/rc"',
            "missing required key clusters.prod.expect.registry.address; it must be the registry to push to",
        ),
        (
            'address = "r.example.com"\nrepository = "x"\npassword_variable = "MY-PASS"',
            "clusters.prod.expect.registry.password_variable = 'MY-PASS' (str) is not a CI/CD variable name",
        ),
    ],
)
def test_registry_mistakes_name_the_setting(tmp_path: Path, table: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + f"[clusters.prod.expect.registry]\n{table}\n")
    assert expected in error_of(path)
