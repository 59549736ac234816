"""runner_config: reading the deployed runner's config.toml, deriving expectations, origins, errors, secrets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf import rbac
from pytest_runnerconf import runner_config as rc
from pytest_runnerconf.errors import ConfigError, KubeError
from pytest_runnerconf.local.provider import builtin_expect
from pytest_runnerconf.profile import (
    DnsExpect,
    Limits,
    flat_keys,
    load_profile,
    profile_from_summary,
)
from pytest_runnerconf.resources import fixtures_path
from pytest_runnerconf.scrub import scrub_text

DATA = Path(__file__).resolve().parent / "data" / "runner_config"
FULL = DATA / "full-kubernetes.toml"
SECRETS = (
    "glrt-t2_FAKEfakeFAKEfake0123",
    "fakeSecretKeyValue0123456789",
    "FAKEACCESSKEY0001",
    "fake-bearer-token-0123456789",
)
SETTING = "runnerconf.toml: clusters.prod.runner_config"


def write_profile(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "runnerconf.toml"
    path.write_text(
        f"""
[clusters.prod]
gitlab_url = "https://gitlab.example.com"
token_env = "RC_TEST_TOKEN"
project = "infra/scratch"
namespace = "ci"
{extra}
""",
        encoding="utf-8",
    )
    return path


def chart_data() -> dict[str, str]:
    doc = json.loads((DATA / "helm-chart-configmap.json").read_text(encoding="utf-8"))
    return dict(doc["data"])


def from_configmap(data: Mapping[str, str]) -> rc.ReadConfigMap:
    def read(namespace: str, name: str) -> Mapping[str, str]:
        assert (namespace, name) == ("gitlab-runner", "gitlab-runner")
        return data

    return read


# ---------------------------------------------------------------- references


def test_ref_forms() -> None:
    ref = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner#config.template.toml")
    assert (ref.namespace, ref.name, ref.key, ref.path) == (
        "gitlab-runner",
        "gitlab-runner",
        "config.template.toml",
        None,
    )
    assert ref.describe() == "ConfigMap gitlab-runner/gitlab-runner key config.template.toml"
    assert rc.parse_ref(SETTING, "configmap:ci/gitlab-runner").key is None
    assert rc.parse_ref(SETTING, "conf/config.toml", Path("/etc/rc")).path == "/etc/rc/conf/config.toml"


@pytest.mark.parametrize(
    "value", ["configmap:gitlab-runner", "configmap:/x", "configmap:a/b/c", "configmap:a/b#"]
)
def test_malformed_configmap_reference_is_one_sentence(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        rc.parse_ref(SETTING, value)
    assert str(info.value) == (
        f"{SETTING} = {value!r} is not a ConfigMap reference; write configmap:NAMESPACE/NAME or "
        "configmap:NAMESPACE/NAME#KEY (for example configmap:gitlab-runner/gitlab-runner#config.template.toml)"
    )


# ---------------------------------------------------------------- derivation


def test_the_local_runner_config_gives_the_builtin_local_expectations() -> None:
    """fixtures/local/profile.toml mirrors config.toml by hand: every value config.toml holds is derived."""
    text = fixtures_path("local", "config.toml").read_text(encoding="utf-8").replace("@local-dns", "10.9.8.7")
    # config.toml holds two runners (the capacity runner is the second): the one under test is named.
    derived = rc.derive(rc.parse_config(text, "file config.toml", SETTING, runner_name="runnerconf-local"))
    builtin = builtin_expect()
    builtin["dns"]["nameservers"] = ["10.9.8.7"]
    expected = dict(flat_keys(builtin))
    got = dict(flat_keys(derived.expect))
    assert {k: v for k, v in got.items() if expected.get(k) != v} == {}
    # What the runner's config does not say: the plugin's deadlines, the probe images, kernel behaviour; and
    # what it says that is not derived yet (labels, scheduling, security, image policy: reported, see below;
    # capacity: the limit is config.toml's, the tag GitLab's; cache: the other runner's tag is GitLab's too;
    # registry: where a job pushes and its credentials' variables are the project's;
    # disruption: pod_disruption_budget is set on the cache runner, not on the runner under test).
    assert sorted({k.split(".")[0] for k in set(expected) - set(got)}) == [
        "cache",
        "capacity",
        "cgroup",
        "cleanup_deadline_s",
        "disruption",
        "image_policy",
        "images",
        "labels",
        "log_burst_kib",
        "oom_report",
        "pending_deadline_s",
        "pickup_deadline_s",
        "registry",
        "run_deadline_s",
        "scheduling",
        "security",
        "service_oom_reported",
        "silent_step_s",
    ]
    assert got["output_limit_kb"] == 2048
    assert derived.reported["privileged"] is True
    assert derived.reported["cleanup_grace_period_seconds"] == 5


def test_every_derived_expectation_and_its_config_key() -> None:
    derived = rc.derive(rc.parse_config(FULL.read_text(encoding="utf-8"), "file full.toml", SETTING))
    assert derived.runner == "k8s-prod"
    assert derived.expect["builds_dir"] == "/ci/builds"
    assert derived.expect["poll_timeout_s"] == 600
    assert derived.expect["build"] == {
        "cpu_limit": "2",
        "cpu_request": "1",
        "memory_limit": "4Gi",
        "memory_request": "2Gi",
    }
    assert derived.expect["helper"] == {"cpu_limit": "500m", "memory_limit": "512Mi"}
    assert derived.expect["service"] == {"cpu_limit": "1", "memory_request": "1Gi"}
    assert derived.expect["override_caps"] == {
        "cpu_limit": "4",
        "memory_limit": "8Gi",
        "ephemeral_storage_limit": "20Gi",
        "helper_memory_request": "1Gi",
        "service_memory_limit": "2Gi",
    }
    assert derived.expect["dns"] == {
        "policy": "ClusterFirst",
        "nameservers": [],
        "searches": ["corp.example.test"],
        "options": ["ndots:3", "edns0"],
    }
    assert derived.sources["poll_timeout_s"] == "[runners.kubernetes] poll_timeout"
    assert derived.sources["builds_dir"] == "[[runners]] builds_dir"
    assert (
        derived.sources["override_caps.cpu_limit"] == "[runners.kubernetes] cpu_limit_overwrite_max_allowed"
    )
    assert derived.sources["dns"] == "[runners.kubernetes] dns_policy and [runners.kubernetes] dns_config"
    # Not yet compared by a check: shown as the runner has them, ready to be wired.
    reported = derived.reported
    assert reported["pod_labels"] == {"team": "platform"}
    assert reported["pod_annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert reported["node_selector"] == {"kubernetes.io/arch": "amd64"}
    assert reported["node_tolerations"] == {"ci=true": "NoSchedule"}
    assert reported["pod_security_context"] == {
        "run_as_non_root": True,
        "run_as_user": 1000,
        "fs_group": 1000,
    }
    assert reported["build_container_security_context"]["capabilities"] == {"drop": ["ALL"]}
    assert reported["privileged"] is False
    assert reported["ephemeral_storage_limit"] == "10Gi"
    assert reported["pod_cpu_limit"] == "4"
    assert reported["cleanup_resources_timeout"] == "5m"


def test_missing_keys_take_the_runners_defaults_only_where_it_has_one() -> None:
    text = (
        '[[runners]]\n  name = "bare"\n  executor = "kubernetes"\n  [runners.kubernetes]\n    image = "x"\n'
    )
    derived = rc.derive(rc.parse_config(text, "file bare.toml", SETTING))
    # common/consts.go KubernetesPollTimeout = 180; the Kubernetes executor's builds dir /builds; 4 MiB of trace.
    # No volume under /certs: TLS Docker-in-Docker cannot reach the build, so it is not offered.
    assert derived.expect == {
        "builds_dir": "/builds",
        "poll_timeout_s": 180,
        "output_limit_kb": 4096,
        "dind_tls": False,
    }
    assert derived.sources["poll_timeout_s"] == "[runners.kubernetes] poll_timeout (the runner's default)"
    assert "dns" not in derived.expect  # no DNS settings: nothing to compare the pod's resolver with


def test_the_token_and_other_credentials_are_dropped_at_once() -> None:
    settings = rc.parse_config(FULL.read_text(encoding="utf-8"), "file full.toml", SETTING)
    kept = json.dumps([settings.runner, settings.kubernetes, rc.section(rc.derive(settings))])
    for secret in SECRETS:
        assert secret not in kept
    assert "token" not in settings.runner and "bearer_token" not in settings.kubernetes
    # Should one still reach an output, it is masked there.
    assert SECRETS[0] not in scrub_text(f"x {SECRETS[0]} y")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'cpu_limit = "two"',
            "file t.toml: [runners.kubernetes] cpu_limit = 'two' is not a Kubernetes quantity; the runner would "
            "refuse it too",
        ),
        (
            'dns_policy = "ClusterFirst"',
            "file t.toml: [runners.kubernetes] dns_policy = 'ClusterFirst': unsupported kubernetes-dns-policy; the "
            "runner accepts 'none', 'default', 'cluster-first', 'cluster-first-with-host-net'",
        ),
        (
            'poll_timeout = "3m"',
            "file t.toml: [runners.kubernetes] poll_timeout = '3m' is not allowed; it must be a whole number of "
            "seconds",
        ),
    ],
)
def test_values_the_runner_would_refuse_are_named(line: str, message: str) -> None:
    text = f'[[runners]]\n  executor = "kubernetes"\n  [runners.kubernetes]\n    {line}\n'
    with pytest.raises(ConfigError) as info:
        rc.derive(rc.parse_config(text, "file t.toml", SETTING))
    assert str(info.value) == message


# ---------------------------------------------------------------- which runner, which key


def test_several_kubernetes_runners_need_runner_name() -> None:
    text = (DATA / "two-runners.toml").read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        rc.parse_config(text, "file two.toml", SETTING)
    assert str(info.value) == (
        f"{SETTING}: file two.toml has 2 Kubernetes runners (small, large); set "
        "runnerconf.toml: clusters.prod.runner_name to the one under test"
    )
    assert rc.parse_config(text, "file two.toml", SETTING, "large").kubernetes == {"cpu_limit": "4"}
    with pytest.raises(ConfigError) as info:
        rc.parse_config(text, "file two.toml", SETTING, "docker-side")
    assert "has no Kubernetes runners named 'docker-side' (has: small, large)" in str(info.value)


def test_no_kubernetes_runner_and_bad_toml_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        rc.parse_config("concurrent = 1\n", "file g.toml", SETTING)
    assert str(info.value) == (
        f'{SETTING}: file g.toml has no [[runners]] entry with executor = "kubernetes"; point it at the config '
        "of the Kubernetes runner under test"
    )
    with pytest.raises(ConfigError, match=r"file g.toml is not valid TOML \(.*line 1"):
        rc.parse_config("concurrent = \n", "file g.toml", SETTING)


def test_the_charts_configmap_uses_the_template_key() -> None:
    ref = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner")
    settings = rc.load(ref, from_configmap(chart_data()), None)
    assert settings.where == "ConfigMap gitlab-runner/gitlab-runner key config.template.toml"
    derived = rc.derive(settings)
    assert derived.expect["poll_timeout_s"] == 300
    assert derived.expect["build"] == {"cpu_request": "250m", "memory_limit": "1Gi"}


def test_configmap_keys_that_hold_no_runner_are_named() -> None:
    named = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner#config.toml")
    with pytest.raises(ConfigError) as info:
        rc.load(named, from_configmap(chart_data()), None)
    assert "ConfigMap gitlab-runner/gitlab-runner key config.toml has no [[runners]] entry" in str(info.value)
    missing = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner#runner.toml")
    with pytest.raises(ConfigError) as info:
        rc.load(missing, from_configmap(chart_data()), None)
    assert str(info.value) == (
        f"{SETTING}: ConfigMap gitlab-runner/gitlab-runner key runner.toml does not exist (the ConfigMap has: "
        "check-live, config.template.toml, config.toml, entrypoint, register-the-runner); fix the #KEY of "
        f"{SETTING}"
    )
    bare = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner")
    with pytest.raises(ConfigError) as info:
        rc.load(bare, from_configmap({"entrypoint": "#!/bin/sh\n"}), None)
    assert str(info.value) == (
        f"{SETTING}: ConfigMap gitlab-runner/gitlab-runner has no Kubernetes runner in config.toml or "
        "config.template.toml (the ConfigMap has: entrypoint); name the key with "
        "configmap:gitlab-runner/gitlab-runner#KEY"
    )


def test_an_unreadable_configmap_is_a_profile_error_and_an_unreachable_api_could_not_test() -> None:
    ref = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner")

    def refused(namespace: str, name: str) -> Mapping[str, str]:
        raise rc.ConfigMapUnreadable("it does not exist (404 from https://k8s.example.test)")

    with pytest.raises(ConfigError) as info:
        rc.load(ref, refused, None)
    assert str(info.value) == (
        f"{SETTING}: cannot read the runner config ConfigMap gitlab-runner/gitlab-runner: it does not exist "
        "(404 from https://k8s.example.test)"
    )

    def down(namespace: str, name: str) -> Mapping[str, str]:
        raise KubeError("cannot reach the Kubernetes API at https://k8s.example.test (connection refused)")

    with pytest.raises(KubeError) as kinfo:
        rc.load(ref, down, None)
    assert not isinstance(kinfo.value, ConfigError)
    assert str(kinfo.value).startswith(
        f"{SETTING}: cannot read the runner config ConfigMap gitlab-runner/gitlab-runner: cannot reach"
    )


# ---------------------------------------------------------------- into the profile: precedence and origins


def test_profile_values_win_and_every_expectation_says_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(FULL.read_text(encoding="utf-8"), encoding="utf-8")
    path = write_profile(
        tmp_path,
        'runner_config = "config.toml"\n[clusters.prod.expect]\npoll_timeout_s = 90\n'
        '[clusters.prod.expect.build]\ncpu_limit = "3"\n',
    )
    profile = rc.resolve(load_profile(path, "prod"))
    exp = profile.expect
    assert exp.poll_timeout_s == 90  # the profile's own value wins
    assert exp.build == Limits(cpu_limit="3", cpu_request="1", memory_limit="4Gi", memory_request="2Gi")
    assert exp.builds_dir == "/ci/builds"
    assert exp.dns == DnsExpect(
        policy="ClusterFirst", searches=("corp.example.test",), options=(("ndots", "3"), ("edns0", None))
    )
    assert exp.pending_deadline_s == 180.0  # not in config.toml: the plugin's default
    where = {s.key: (s.origin, s.file) for s in profile.expect_sources()}
    config = f"file {tmp_path / 'config.toml'}"
    assert where["poll_timeout_s"] == ("profile", str(path))
    assert where["build.cpu_limit"] == ("profile", str(path))
    assert where["build.cpu_request"] == ("runner config", f"{config}: [runners.kubernetes] cpu_request")
    assert where["dns.searches"] == (
        "runner config",
        f"{config}: [runners.kubernetes] dns_policy and [runners.kubernetes] dns_config",
    )
    assert where["pending_deadline_s"] == ("default", None)
    assert where["helper.cpu_request"] == ("default", None)
    # The summary (evidence, report) carries the section, never the token, and survives the round trip.
    summary = profile.summary()
    assert summary["runner_config_found"]["reported"]["node_selector"] == {"kubernetes.io/arch": "amd64"}
    for secret in SECRETS:
        assert secret not in json.dumps(summary)
    again = profile_from_summary(json.loads(json.dumps(summary)))
    assert again.expect == profile.expect
    assert rc.resolve(again) is again  # applied once: a replay does not read the config again


def test_a_profile_dns_table_keeps_its_own_dns_whole(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(FULL.read_text(encoding="utf-8"), encoding="utf-8")
    path = write_profile(
        tmp_path,
        'runner_config = "config.toml"\n[clusters.prod.expect.dns]\npolicy = "None"\nnameservers = ["1.2.3.4"]\n',
    )
    exp = rc.resolve(load_profile(path, "prod")).expect
    assert exp.dns == DnsExpect(policy="None", nameservers=("1.2.3.4",))


def test_a_missing_runner_config_file_is_one_sentence(tmp_path: Path) -> None:
    path = write_profile(tmp_path, 'runner_config = "nowhere/config.toml"\n')
    with pytest.raises(ConfigError) as info:
        rc.resolve(load_profile(path, "prod"))
    assert str(info.value) == (
        f"{path}: clusters.prod.runner_config: cannot read the runner config file "
        f"{tmp_path / 'nowhere' / 'config.toml'} (No such file or directory); fix the path or use "
        "configmap:NAMESPACE/NAME"
    )


def test_runner_name_without_runner_config_is_refused(tmp_path: Path) -> None:
    path = write_profile(tmp_path, 'runner_name = "large"\n')
    with pytest.raises(ConfigError) as info:
        load_profile(path, "prod")
    assert str(info.value) == (
        f"{path}: clusters.prod.runner_name is set but runner_config is not; set runner_config to the "
        "runner's config.toml or remove runner_name"
    )


# ---------------------------------------------------------------- RBAC: the one get, only when needed


def test_the_configmap_get_is_asked_only_when_runner_config_names_one(tmp_path: Path) -> None:
    assert [r.resource for r in rbac.rules(["secrets"])] == ["pods", "events", "secrets"]
    path = write_profile(
        tmp_path, 'runner_config = "configmap:gitlab-runner/gitlab-runner#config.template.toml"\n'
    )
    profile = load_profile(path, "prod")
    assert profile.runner_config_found is None  # a ConfigMap is read at run start, not at load
    cm = rc.configmap_of(profile)
    assert cm == ("gitlab-runner", "gitlab-runner")
    rule = rbac.rules([], cm)[-1]
    assert (rule.resource, rule.verbs[0][0], rule.namespace, rule.names) == (
        "configmaps",
        "get",
        "gitlab-runner",
        ("gitlab-runner",),
    )
    text = rbac.manifest("ci", [], checks=3, configmap=cm)
    assert text.count("\nkind: Role\n") == 2  # the ConfigMap is in another namespace: a Role there
    assert "  namespace: gitlab-runner\nrules:\n" in text
    assert "    resourceNames: [gitlab-runner]\n    verbs: [get]\n" in text
    same = rbac.manifest("gitlab-runner", [], checks=3, configmap=cm)
    assert same.count("\nkind: Role\n") == 1 and "resourceNames: [gitlab-runner]" in same
    assert rbac.manifest("ci", [], checks=3) == rbac.manifest("ci", [], checks=3, configmap=None)
    assert "configmaps" not in rbac.manifest("ci", ["secrets"], checks=3)


def test_reads_keep_only_the_named_runners_settings(tmp_path: Path) -> None:
    data: dict[str, Any] = {"config.toml": (DATA / "two-runners.toml").read_text(encoding="utf-8")}
    ref = rc.parse_ref(SETTING, "configmap:gitlab-runner/gitlab-runner")
    settings = rc.load(ref, from_configmap(data), "small")
    assert settings.runner == {"name": "small", "executor": "kubernetes"}
    assert "glrt-t1_FAKE" not in json.dumps(rc.section(rc.derive(settings)))


# ---------------------------------------------------------------- the token never reaches evidence or a report


def test_reports_and_evidence_show_origins_and_section_but_never_the_token(tmp_path: Path) -> None:
    from pytest_runnerconf.evidence import load, save
    from pytest_runnerconf.report import write_reports
    from tests.report_inputs import clean
    from tests.report_schema import assert_valid_report

    (tmp_path / "config.toml").write_text(FULL.read_text(encoding="utf-8"), encoding="utf-8")
    profile = rc.resolve(load_profile(write_profile(tmp_path, 'runner_config = "config.toml"\n'), "prod"))
    _doc, run = clean(tmp_path / "bundle")
    run.profile = profile.summary()
    save(run, tmp_path / "bundle")
    paths = write_reports([], load(tmp_path / "bundle"), tmp_path / "report", argv=["pytest"])
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert_valid_report(report)
    header = report["profile"]
    origins = {e["key"]: e["origin"] for e in header["expectations"]}
    assert origins["build.memory_limit"] == "runner config" and origins["cleanup_deadline_s"] == "default"
    assert header["runner_config"]["reported"]["pod_labels"] == {"team": "platform"}
    assert "deployed runner config" in paths["html"].read_text(encoding="utf-8")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "config.toml"]
    assert written
    for path in written:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for secret in SECRETS:
            assert secret not in text, (path, secret)


def test_a_replay_uses_what_the_run_read_and_never_reads_the_configmap_again(tmp_path: Path) -> None:
    value = "configmap:gitlab-runner/gitlab-runner"
    path = write_profile(
        tmp_path, f'runner_config = "{value}"\n[clusters.prod.expect]\nrun_deadline_s = 900\n'
    )
    read = rc.resolve(load_profile(path, "prod"), from_configmap(chart_data()))
    recorded = json.loads(json.dumps(read.summary()))  # as the evidence bundle keeps it

    fresh = load_profile(path, "prod")  # the replay's profile: the reference, nothing read
    derived = rc.from_record(recorded, value)
    assert derived is not None
    replayed = rc.apply(fresh, derived)
    assert replayed.expect == read.expect
    assert replayed.expect.poll_timeout_s == 300 and replayed.expect.run_deadline_s == 900
    assert {s.key: s.origin for s in replayed.expect_sources()} == {
        s.key: s.origin for s in read.expect_sources()
    }
    # A run that read another config (or none) gives nothing to reuse.
    assert rc.from_record(recorded, "configmap:ci/other") is None
    assert rc.from_record(fresh.summary(), value) is None


def test_a_volume_under_certs_means_tls_dind_is_offered() -> None:
    """GitLab's TLS DinD set-up on Kubernetes: an empty_dir at /certs/client shared with the build."""
    text = (
        '[[runners]]\n  name = "tls"\n  executor = "kubernetes"\n  [runners.kubernetes]\n'
        '  [[runners.kubernetes.volumes.empty_dir]]\n    name = "docker-certs"\n    mount_path = "/certs/client"\n'
        '    medium = "Memory"\n'
    )
    derived = rc.derive(rc.parse_config(text, "file tls.toml", SETTING))
    assert derived.expect["dind_tls"] is True
    assert derived.sources["dind_tls"] == "[runners.kubernetes] volumes"
    other = text.replace("/certs/client", "/cache")
    assert rc.derive(rc.parse_config(other, "file other.toml", SETTING)).expect["dind_tls"] is False


def _toml(line: str) -> str:
    return f'[[runners]]\n  executor = "kubernetes"\n  [runners.kubernetes]\n    {line}\n'


def test_pod_disruption_budget_gives_the_disruption_expectation_with_its_key() -> None:
    on = rc.derive(rc.parse_config(_toml("pod_disruption_budget = true"), "file c.toml", SETTING))
    assert on.expect["disruption"] == {"pod_disruption_budget": True}
    assert on.sources["disruption.pod_disruption_budget"] == "[runners.kubernetes] pod_disruption_budget"
    off = rc.derive(rc.parse_config(_toml("pod_disruption_budget = false"), "file c.toml", SETTING))
    assert off.expect["disruption"] == {"pod_disruption_budget": False}
    assert "disruption" not in rc.derive(rc.parse_config(_toml(""), "file c.toml", SETTING)).expect
    with pytest.raises(
        ConfigError, match=r"pod_disruption_budget = 'yes' is not allowed; it must be true or false"
    ):
        rc.derive(rc.parse_config(_toml('pod_disruption_budget = "yes"'), "file c.toml", SETTING))
