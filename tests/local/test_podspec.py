"""The job -> pod spec builder against the real runner's rules (runner-facts.md, v18.11.4)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.local.model import JobPayload, ServiceDef, Variable
from pytest_runnerconf.local.podspec import (
    BASH_DETECT_SHELL_SCRIPT,
    PodPlan,
    PreparationError,
    build_pod,
    doublestar_match,
    go_duration,
    go_expand,
    image_aliases,
    make_rfc1123_compatible,
    name_services,
    resource_name,
    sanitize_label,
)
from pytest_runnerconf.local.runner_config import FEATURE_FLAG_DEFAULTS, RunnerConfig, load_runner_config

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "local" / "config.toml"
SUBS = {"@local-dns": "172.17.0.1", "@gitlab-url": "http://127.0.0.1:8929/"}
HELPER = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v18.11.4"
POD = "runner-runnercon-project-42-concurrent-0-pod00000"
SECRET = "runner-runnercon-project-42-concurrent-0-sec00000"
INVALID_DNS = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


@pytest.fixture(scope="module")
def cfg() -> RunnerConfig:
    # config.toml's allowed_images/allowed_services would refuse the many images these tests name; the
    # allow-lists have their own tests (the config as shipped).
    return with_kube(load_runner_config(FIXTURE, SUBS), allowed_images=(), allowed_services=())


def make_job(**changes: Any) -> JobPayload:
    base = JobPayload(
        id=7,
        name="probe dns",
        stage="test",
        token="job-token-value",
        project_id=42,
        project_name="scratch",
        project_path="runnerconf/scratch",
        namespace_path="runnerconf",
        namespace_id=3,
        root_namespace="runnerconf",
        project_url="http://127.0.0.1:8929/runnerconf/scratch",
        pipeline_id=9,
        ref="main",
        sha="a" * 40,
        before_sha="0" * 40,
        repo_path=Path("/nonexistent/repo.git"),
        image="alpine:3.20",
        variables=(
            Variable("CI_PROJECT_NAMESPACE", "runnerconf"),
            Variable("CI_PROJECT_NAMESPACE_ID", "3"),
            Variable("CI_PROJECT_ROOT_NAMESPACE", "runnerconf"),
            Variable("CI_REGISTRY", "registry.runnerconf.test:5000"),
            Variable("CI_JOB_TOKEN", "job-token-value", public=False, masked=True),
            Variable("GREETING", "hello from $CI_PROJECT_DIR"),
        ),
        timeout_s=600,
    )
    return dataclasses.replace(base, **changes)


def with_vars(job: JobPayload, *extra: Variable) -> JobPayload:
    return dataclasses.replace(job, variables=job.variables + extra)


def names() -> Callable[[], str]:
    """The runner names the Secret first, then the pod; each call of the generator gets a new suffix."""
    it: Iterator[str] = iter(["sec00000", "pod00000", "extra000", "extra001"])
    return lambda: next(it)


def plan_for(job: JobPayload, cfg: RunnerConfig, **kwargs: Any) -> PodPlan:
    return build_pod(job, cfg, rand=names(), **kwargs)


def container(plan: PodPlan, name: str) -> dict[str, Any]:
    spec = plan.pod["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


def expected_build_env() -> list[dict[str, str]]:
    flags = [{"name": k, "value": str(v).lower()} for k, v in FEATURE_FLAG_DEFAULTS.items()]
    rest = [
        ("CI_JOB_IMAGE", "alpine:3.20"),
        ("CI_RUNNER_SHORT_TOKEN", "runnercon"),
        ("CI_BUILDS_DIR", "/builds"),
        ("CI_PROJECT_DIR", "/builds/runnerconf/scratch"),
        ("CI_CONCURRENT_ID", "0"),
        ("CI_CONCURRENT_PROJECT_ID", "0"),
        ("CI_SERVER", "yes"),
        ("CI_JOB_STATUS", "running"),
        ("CI_JOB_TIMEOUT", "600"),
        ("CI_PROJECT_NAMESPACE", "runnerconf"),
        ("CI_PROJECT_NAMESPACE_ID", "3"),
        ("CI_PROJECT_ROOT_NAMESPACE", "runnerconf"),
        ("CI_REGISTRY", "registry.runnerconf.test:5000"),
        ("GREETING", "hello from /builds/runnerconf/scratch"),
        ("CI_DISPOSABLE_ENVIRONMENT", "true"),
        ("CI_RUNNER_VERSION", "18.11.4"),
        ("CI_RUNNER_REVISION", "5b1ba4d9"),
        ("CI_RUNNER_EXECUTABLE_ARCH", "linux/amd64"),
        ("RUNNER_TEMP_PROJECT_DIR", "/builds/runnerconf/scratch.tmp"),
    ]
    return flags + [{"name": k, "value": v} for k, v in rest]


# getVolumeMounts order: scripts, logs, config.toml's volumes (the DinD certificates), repo.
CERTS = {"name": "docker-certs", "mountPath": "/certs/client"}
MOUNTS = [
    {"name": "scripts", "mountPath": "/scripts-42-7"},
    {"name": "logs", "mountPath": "/logs-42-7"},
    CERTS,
    {"name": "repo", "mountPath": "/builds"},
]
SECURITY = {"capabilities": {"drop": ["NET_RAW"]}, "privileged": True}
# config.toml's build and helper contexts: their own users, unprivileged (only services take privileged = true)
BUILD_SECURITY = {
    "capabilities": {"drop": ["NET_RAW"]},
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "runAsUser": 2000,
    "runAsGroup": 2001,
    "procMount": "Default",
    "seccompProfile": {"type": "RuntimeDefault"},
}
HELPER_SECURITY = {
    "capabilities": {"drop": ["NET_RAW"]},
    "privileged": False,
    "runAsUser": 3000,
    "runAsGroup": 3001,
}
HELPER_RESOURCES = {
    "limits": {"cpu": "500m", "memory": "256Mi"},
    "requests": {"cpu": "100m", "memory": "128Mi"},
}
SERVICE_RESOURCES = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "256Mi"}}


def expected_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD,
            "namespace": "ci",
            "labels": {
                "pod": "runner-runnercon-project-42-concurrent-0",
                "project.runner.gitlab.com/id": "42",
                "project.runner.gitlab.com/namespace-id": "3",
                "project.runner.gitlab.com/name": "scratch",
                "project.runner.gitlab.com/namespace": "runnerconf",
                "project.runner.gitlab.com/root-namespace": "runnerconf",
                "job.runner.gitlab.com/pod": "runner-runnercon-project-42-concurrent-0",
                "manager.runner.gitlab.com/name": "runnerconf-local",
                "manager.runner.gitlab.com/id-short": "runnercon",
                # config.toml's pod_labels, expanded with the job's variables (this job has none of them)
                "runnerconf.test/suite": "conformance",
                "runnerconf.test/ref": "",
                "runnerconf.test/job": "",
                "runnerconf.test/pipeline": "p",  # "p-" sanitised: trailing - trimmed
            },
            "annotations": {
                "job.runner.gitlab.com/id": "7",
                "job.runner.gitlab.com/url": "http://127.0.0.1:8929/runnerconf/scratch/-/jobs/7",
                "job.runner.gitlab.com/sha": "a" * 40,
                "job.runner.gitlab.com/before_sha": "0" * 40,
                "job.runner.gitlab.com/ref": "main",
                "job.runner.gitlab.com/name": "probe dns",
                "job.runner.gitlab.com/timeout": "10m0s",
                "project.runner.gitlab.com/id": "42",
                "runnerconf.test/ref": "",
                "runnerconf.test/job-url": "",
            },
        },
        "spec": {
            "volumes": [
                {"name": "docker-certs", "emptyDir": {"medium": "Memory"}},  # config volumes come first
                {"name": "repo", "emptyDir": {}},
                {"name": "scripts", "emptyDir": {}},
                {"name": "logs", "emptyDir": {}},
            ],
            "initContainers": [
                {
                    "name": "init-permissions",
                    "image": HELPER,
                    "imagePullPolicy": "IfNotPresent",
                    "command": [
                        "sh",
                        "-c",
                        "touch /logs-42-7/output.log && (chmod 777 /logs-42-7/output.log || exit 0)",
                    ],
                    "resources": HELPER_RESOURCES,
                    "volumeMounts": MOUNTS,
                    "securityContext": SECURITY,
                }
            ],
            "containers": [
                {
                    "name": "build",
                    "image": "alpine:3.20",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", BASH_DETECT_SHELL_SCRIPT],
                    "env": expected_build_env(),
                    "resources": {
                        "limits": {"cpu": "1", "memory": "512Mi"},
                        "requests": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "volumeMounts": MOUNTS,
                    "securityContext": BUILD_SECURITY,
                    "stdin": True,
                },
                {
                    "name": "helper",
                    "image": HELPER,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", BASH_DETECT_SHELL_SCRIPT],
                    "resources": HELPER_RESOURCES,
                    "volumeMounts": MOUNTS,
                    "securityContext": HELPER_SECURITY,
                    "stdin": True,
                },
            ],
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 601,
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["172.17.0.1"],
                "searches": ["ci.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "timeout", "value": "2"}],
            },
            # config.toml's scheduling settings, in the runner's field order (dict order does not matter)
            "nodeSelector": {"runnerconf.test/pool": "ci-jobs", "kubernetes.io/os": "linux"},
            "tolerations": [
                {
                    "key": "runnerconf.test/dedicated",
                    "operator": "Equal",
                    "value": "ci",
                    "effect": "NoSchedule",
                }
            ],
            "serviceAccountName": "runnerconf-job",
            "securityContext": {"fsGroup": 1500, "supplementalGroups": [1501]},
            "imagePullSecrets": [{"name": SECRET}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                                ]
                            }
                        ]
                    }
                },
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"runnerconf.test/suite": "conformance"}},
                            },
                        }
                    ]
                },
            },
            "runtimeClassName": "runc",
            "priorityClassName": "runnerconf-ci-jobs",
        },
    }


def test_whole_pod_for_a_job_without_services(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(), cfg)
    assert plan.pod == expected_pod()
    assert plan.service_containers == []
    assert (plan.project_dir, plan.scripts_dir, plan.logs_dir) == (
        "/builds/runnerconf/scratch",
        "/scripts-42-7",
        "/logs-42-7",
    )
    assert plan.log_lines == [
        "Using FF_USE_POD_ACTIVE_DEADLINE_SECONDS, the Pod activeDeadlineSeconds will be set to the job "
        "timeout: 10m0s..."
    ]


def test_bash_detect_script_is_the_runners_with_empty_args() -> None:
    assert BASH_DETECT_SHELL_SCRIPT.startswith(
        "if [ -x /usr/local/bin/bash ]; then\n\texec /usr/local/bin/bash \n"
    )
    assert (
        "elif [ -x /busybox/sh ]; then\n\texec /busybox/sh \nelse\n\techo shell not found\n\texit 1\nfi\n\n"
        in (BASH_DETECT_SHELL_SCRIPT)
    )
    assert "$@" not in BASH_DETECT_SHELL_SCRIPT


def test_registry_secret(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(), cfg)
    assert plan.secret is not None
    assert plan.secret["metadata"] == {"name": SECRET, "namespace": "ci"}
    assert plan.secret["type"] == "kubernetes.io/dockercfg"
    assert "labels" not in plan.secret["metadata"]
    decoded = json.loads(base64.b64decode(plan.secret["data"][".dockercfg"]))
    assert decoded == {
        "registry.runnerconf.test:5000": {
            "username": "gitlab-ci-token",
            "password": "job-token-value",
            "serveraddress": "registry.runnerconf.test:5000",
        }
    }


def test_no_registry_no_secret_and_config_pull_secrets_first(cfg: RunnerConfig) -> None:
    kube = dataclasses.replace(cfg.runner.kubernetes, image_pull_secrets=("regcred",))
    custom = dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, kubernetes=kube))
    assert plan_for(make_job(), custom).pod["spec"]["imagePullSecrets"] == [
        {"name": "regcred"},
        {"name": SECRET},
    ]
    no_registry = make_job(variables=tuple(v for v in make_job().variables if v.key != "CI_REGISTRY"))
    plan = build_pod(no_registry, cfg, rand=lambda: "onlyone0")
    assert plan.secret is None
    assert "imagePullSecrets" not in plan.pod["spec"]
    assert plan.pod["metadata"]["name"] == "runner-runnercon-project-42-concurrent-0-onlyone0"


def test_service_names_aliases_and_order(cfg: RunnerConfig) -> None:
    services = (
        ServiceDef("postgres:14"),
        ServiceDef("docker:27-dind", alias="docker"),
        ServiceDef("tutum/wordpress"),
        ServiceDef("registry.example.com:5000/group/svc:1", alias="db,pg"),
        ServiceDef("redis:7", alias="cache.local other"),
    )
    plan = plan_for(make_job(services=services), cfg)
    assert [(s.name, n) for s, n in plan.service_containers] == [
        ("postgres:14", "svc-0"),
        ("docker:27-dind", "docker"),
        ("tutum/wordpress", "svc-1"),
        ("registry.example.com:5000/group/svc:1", "db"),
        ("redis:7", "other"),  # "cache.local" is a valid hostname but not a DNS-1123 label
    ]
    spec = plan.pod["spec"]
    assert [c["name"] for c in spec["containers"]] == [
        "build",
        "helper",
        "db",
        "docker",
        "other",
        "svc-0",
        "svc-1",
    ]
    assert [c["image"] for c in spec["containers"][2:]] == [
        "registry.example.com:5000/group/svc:1",
        "docker:27-dind",
        "redis:7",
        "postgres:14",
        "tutum/wordpress",
    ]
    # One 127.0.0.1 entry, services in container-name order: image-derived names, then explicit aliases.
    assert spec["hostAliases"] == [
        {
            "ip": "127.0.0.1",
            "hostnames": [
                "registry.example.com-group-svc",
                "db",
                "pg",
                "docker",
                "docker",
                "redis",
                "cache.local",
                "other",
                "postgres",
                "tutum-wordpress",
            ],
        }
    ]
    for c in spec["containers"][2:]:
        assert c["volumeMounts"] == MOUNTS and c["stdin"] is True
        assert c["resources"] == SERVICE_RESOURCES and c["securityContext"] == SECURITY


def test_service_env_adds_service_variables_and_entrypoint(cfg: RunnerConfig) -> None:
    svc = ServiceDef(
        "postgres:14",
        alias="pg",
        command=("postgres", "-c", "fsync=off"),
        entrypoint=("docker-entrypoint.sh",),
        variables=(Variable("POSTGRES_DB", "db_$CI_JOB_TIMEOUT"), Variable("GREETING", "service wins")),
    )
    plan = plan_for(make_job(services=(svc,)), cfg)
    pg = container(plan, "pg")
    assert pg["command"] == ["docker-entrypoint.sh"]
    assert pg["args"] == ["postgres", "-c", "fsync=off"]
    env = pg["env"]
    build_env = container(plan, "build")["env"]
    # A repeated key keeps its first place and takes the last value; new keys go to the end.
    assert [e["name"] for e in env] == [e["name"] for e in build_env] + ["POSTGRES_DB"]
    assert {"name": "GREETING", "value": "service wins"} in env
    assert env[-1] == {"name": "POSTGRES_DB", "value": "db_600"}
    assert "env" not in container(plan, "helper")


def test_secret_variables_stay_out_of_env(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(services=(ServiceDef("postgres:14"),)), cfg)
    for name in ("build", "svc-0"):
        assert "CI_JOB_TOKEN" not in {e["name"] for e in container(plan, name)["env"]}


def test_eleven_services_sort_lexicographically(cfg: RunnerConfig) -> None:
    services = tuple(ServiceDef(f"busybox:1.{i}") for i in range(11))
    plan = plan_for(make_job(services=services), cfg)
    names_in_spec = [c["name"] for c in plan.pod["spec"]["containers"][2:]]
    assert names_in_spec == ["svc-0", "svc-1", "svc-10", *(f"svc-{i}" for i in range(2, 10))]
    assert container(plan, "svc-10")["image"] == "busybox:1.10"
    # Eleven identical derived names, all on the one 127.0.0.1 entry.
    assert plan.pod["spec"]["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["busybox"] * 11}]


def test_invalid_explicit_alias_fails_with_the_runner_text(cfg: RunnerConfig) -> None:
    job = make_job(services=(ServiceDef("postgres:14", alias="bad_alias"),))
    with pytest.raises(PreparationError) as err:
        plan_for(job, cfg)
    assert str(err.value) == (
        "setting up build pod: provided host alias bad_alias for service postgres:14 is invalid DNS. "
        + INVALID_DNS
    )
    assert err.value.stage == "prepare_script"


def test_invalid_alias_is_not_checked_when_host_aliases_are_faulted_away(cfg: RunnerConfig) -> None:
    job = make_job(services=(ServiceDef("postgres:14", alias="bad_alias"),))
    plan = plan_for(job, cfg, faults=frozenset({"no-host-aliases"}))
    assert "hostAliases" not in plan.pod["spec"]


@pytest.mark.parametrize(
    ("image", "aliases"),
    [
        ("postgres:14", ["postgres"]),
        ("docker:27-dind", ["docker"]),
        ("tutum/wordpress", ["tutum__wordpress", "tutum-wordpress"]),
        (
            "registry.example.com:5000/group/svc:1",
            ["registry.example.com__group__svc", "registry.example.com-group-svc"],
        ),
        ("postgres@sha256:" + "a" * 64, ["postgres"]),
        ("localhost:5000/x/y", ["localhost__x__y", "localhost-x-y"]),
        ("Postgres:14", []),  # not a valid reference: no derived names at all
    ],
)
def test_image_aliases(image: str, aliases: list[str]) -> None:
    assert image_aliases(image) == aliases


def test_config_host_aliases_come_after_the_services(cfg: RunnerConfig) -> None:
    from pytest_runnerconf.local.runner_config import HostAlias

    kube = dataclasses.replace(
        cfg.runner.kubernetes, host_aliases=(HostAlias("10.0.0.2", ("mirror.example",)),)
    )
    custom = dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, kubernetes=kube))
    plan = plan_for(make_job(services=(ServiceDef("postgres:14"),)), custom)
    assert plan.pod["spec"]["hostAliases"] == [
        {"ip": "127.0.0.1", "hostnames": ["postgres"]},
        {"ip": "10.0.0.2", "hostnames": ["mirror.example"]},
    ]
    assert "hostAliases" not in plan_for(make_job(), cfg).pod["spec"]


def test_config_services_come_first_in_numbering(cfg: RunnerConfig) -> None:
    kube = dataclasses.replace(cfg.runner.kubernetes, services=(ServiceDef("redis:7"),))
    custom = dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, kubernetes=kube))
    plan = plan_for(make_job(services=(ServiceDef("postgres:14"),)), custom)
    assert [(s.name, n) for s, n in plan.service_containers] == [
        ("redis:7", "svc-0"),
        ("postgres:14", "svc-1"),
    ]


def test_duplicate_alias_names_only_the_first_service() -> None:
    named = name_services([ServiceDef("a:1", alias="db"), ServiceDef("b:1", alias="db"), ServiceDef("c:1")])
    assert [n for _, n in named] == ["db", "svc-0", "svc-1"]


# --- resources and overrides -----------------------------------------------------------------------------


def test_override_within_cap_applies_and_logs(cfg: RunnerConfig) -> None:
    job = with_vars(
        make_job(),
        Variable("KUBERNETES_CPU_LIMIT", "1500m"),
        Variable("KUBERNETES_MEMORY_LIMIT", "1Gi"),
        Variable("KUBERNETES_MEMORY_REQUEST", "512Mi"),
        Variable("KUBERNETES_HELPER_CPU_LIMIT", "1"),
    )
    plan = plan_for(job, cfg)
    assert container(plan, "build")["resources"] == {
        "limits": {"cpu": "1500m", "memory": "1Gi"},
        "requests": {"cpu": "500m", "memory": "512Mi"},
    }
    helper_limits = {"cpu": "1", "memory": "256Mi"}
    assert container(plan, "helper")["resources"]["limits"] == helper_limits
    assert container(plan, "init-permissions")["resources"]["limits"] == helper_limits
    assert plan.executor_log_lines == [
        '"MemoryRequest" overwritten with "512Mi"',
        '"CPULimit" overwritten with "1500m"',
        '"MemoryLimit" overwritten with "1Gi"',
        '"HelperCPULimit" overwritten with "1"',
    ]


def test_override_values_are_printed_canonically_in_the_spec(cfg: RunnerConfig) -> None:
    plan = plan_for(with_vars(make_job(), Variable("KUBERNETES_CPU_LIMIT", "1.5")), cfg)
    assert container(plan, "build")["resources"]["limits"]["cpu"] == "1500m"
    assert plan.executor_log_lines == ['"CPULimit" overwritten with "1.5"']


def test_override_above_cap_is_refused(cfg: RunnerConfig) -> None:
    with pytest.raises(PreparationError) as err:
        plan_for(with_vars(make_job(), Variable("KUBERNETES_CPU_LIMIT", "2")), cfg)
    assert str(err.value) == (
        "couldn't prepare overwrites: invalid build limits specified: "
        'the resource "CPULimit" requested "2" is higher than limit allowed "1500m"'
    )
    assert err.value.stage == "prepare_executor"


def test_override_equal_to_cap_is_allowed(cfg: RunnerConfig) -> None:
    plan = plan_for(with_vars(make_job(), Variable("KUBERNETES_MEMORY_LIMIT", "1024Mi")), cfg)
    assert container(plan, "build")["resources"]["limits"]["memory"] == "1Gi"


def test_helper_and_service_caps_wrap_their_own_text(cfg: RunnerConfig) -> None:
    with pytest.raises(
        PreparationError, match=r"^couldn't prepare overwrites: invalid helper requests specified: "
    ):
        plan_for(with_vars(make_job(), Variable("KUBERNETES_HELPER_MEMORY_REQUEST", "1Gi")), cfg)
    with pytest.raises(
        PreparationError,
        match=r"^couldn't prepare overwrites: invalid service limits specified: "
        r'the resource "ServiceMemoryLimit"',
    ):
        plan_for(with_vars(make_job(), Variable("KUBERNETES_SERVICE_MEMORY_LIMIT", "3Gi")), cfg)


def test_override_without_cap_is_ignored_silently(cfg: RunnerConfig) -> None:
    job = with_vars(make_job(), Variable("KUBERNETES_EPHEMERAL_STORAGE_LIMIT", "5Gi"))
    plan = plan_for(job, cfg)
    assert "ephemeral-storage" not in container(plan, "build")["resources"]["limits"]
    assert plan.executor_log_lines == []
    # Pod-level variables have no cap in the fixture either: no pod resources appear.
    plan = plan_for(with_vars(make_job(), Variable("KUBERNETES_POD_CPU_LIMIT", "2")), cfg)
    assert "resources" not in plan.pod["spec"]


def test_invalid_override_quantity(cfg: RunnerConfig) -> None:
    with pytest.raises(PreparationError) as err:
        plan_for(with_vars(make_job(), Variable("KUBERNETES_CPU_REQUEST", "lots")), cfg)
    assert str(err.value).startswith(
        "couldn't prepare overwrites: invalid build requests specified: "
        'parsing resource limit: "quantities must'
    )


def test_service_overrides_from_service_variables(cfg: RunnerConfig) -> None:
    services = (
        ServiceDef(
            "docker:27-dind", alias="docker", variables=(Variable("KUBERNETES_SERVICE_MEMORY_LIMIT", "2Gi"),)
        ),
        # The docs' non-SERVICE_ name is ignored by the code.
        ServiceDef("postgres:14", alias="pg", variables=(Variable("KUBERNETES_CPU_REQUEST", "1"),)),
    )
    plan = plan_for(make_job(services=services), cfg)
    assert container(plan, "docker")["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert container(plan, "pg")["resources"] == SERVICE_RESOURCES
    assert container(plan, "build")["resources"]["requests"]["cpu"] == "500m"
    assert plan.executor_log_lines == ['"ServiceMemoryLimit" overwritten with "2Gi"']


def test_service_override_above_cap(cfg: RunnerConfig) -> None:
    svc = ServiceDef("postgres:14", variables=(Variable("KUBERNETES_SERVICE_CPU_LIMIT", "4"),))
    with pytest.raises(PreparationError) as err:
        plan_for(make_job(services=(svc,)), cfg)
    assert str(err.value) == (
        "couldn't prepare explicit service overwrites: invalid service limits specified: "
        'the resource "ServiceCPULimit" requested "4" is higher than limit allowed "1500m"'
    )


def test_no_resources_configured_gives_best_effort() -> None:
    cfg = load_runner_config(
        '[[runners]]\nname = "r"\nurl = "http://127.0.0.1/"\n'
        'token = "glrt-abcdefghijk"\nexecutor = "kubernetes"\n'
    )
    plan = build_pod(make_job(), cfg, rand=names())
    for c in plan.pod["spec"]["initContainers"] + plan.pod["spec"]["containers"]:
        assert c["resources"] == {}
        assert c["securityContext"] == {"capabilities": {"drop": ["NET_RAW"]}}
    assert plan.pod["metadata"]["namespace"] == ""
    assert plan.pod["spec"]["dnsPolicy"] == "ClusterFirst"
    assert "dnsConfig" not in plan.pod["spec"]


# --- DNS ------------------------------------------------------------------------------------------------


def with_kube(cfg: RunnerConfig, **changes: Any) -> RunnerConfig:
    kube = dataclasses.replace(cfg.runner.kubernetes, **changes)
    return dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, kubernetes=kube))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("none", "None"),
        ("default", "Default"),
        ("cluster-first", "ClusterFirst"),
        ("cluster-first-with-host-net", "ClusterFirstWithHostNet"),
        ("", "ClusterFirst"),
    ],
)
def test_dns_policy_mapping(cfg: RunnerConfig, policy: str, expected: str) -> None:
    plan = plan_for(make_job(), with_kube(cfg, dns_policy=policy))
    assert plan.pod["spec"]["dnsPolicy"] == expected
    assert not any("dns" in line for line in plan.log_lines)


def test_unknown_dns_policy_warns_and_omits_the_field(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(), with_kube(cfg, dns_policy="ClusterFirst"))
    assert "dnsPolicy" not in plan.pod["spec"]
    assert plan.pod["spec"]["dnsConfig"]["nameservers"] == ["172.17.0.1"]
    assert plan.pod_log_lines[-1] == (
        "WARNING: falling back to cluster's default policy: "
        'unsupported kubernetes-dns-policy: "ClusterFirst"'
    )


def test_dns_option_without_value(cfg: RunnerConfig) -> None:
    from pytest_runnerconf.local.runner_config import DNSConfig

    plan = plan_for(make_job(), with_kube(cfg, dns_config=DNSConfig(options=(("edns0", None),))))
    assert plan.pod["spec"]["dnsConfig"] == {"options": [{"name": "edns0"}]}


# --- faults ---------------------------------------------------------------------------------------------


def diff_paths(a: Any, b: Any, path: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                out.add(f"{path}/{key}")
            else:
                out |= diff_paths(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(
            *(diff_paths(x, y, f"{path}/{i}") for i, (x, y) in enumerate(zip(a, b, strict=True)))
        )
    return set() if a == b else {path}


SERVICE_JOB = {"services": (ServiceDef("postgres:14", alias="pg"),)}


@pytest.mark.parametrize(
    ("fault", "changed"),
    [
        ("no-host-aliases", {"/spec/hostAliases"}),
        ("ignore-dns-config", {"/spec/dnsPolicy", "/spec/dnsConfig"}),
        ("overrides-ignored", {"/spec/containers/0/resources/limits/cpu"}),
        ("leak-pods", set()),  # not a pod-spec fault
    ],
)
def test_each_fault_changes_exactly_its_part(cfg: RunnerConfig, fault: str, changed: set[str]) -> None:
    job = with_vars(make_job(**SERVICE_JOB), Variable("KUBERNETES_CPU_LIMIT", "1500m"))
    normal = plan_for(job, cfg)
    faulted = plan_for(job, cfg, faults=frozenset({fault}))
    assert diff_paths(normal.pod, faulted.pod) == changed
    assert faulted.secret == normal.secret


def test_fault_details(cfg: RunnerConfig) -> None:
    job = with_vars(make_job(), Variable("KUBERNETES_CPU_LIMIT", "9"))
    ignored = plan_for(job, cfg, faults=frozenset({"overrides-ignored"}))
    assert container(ignored, "build")["resources"]["limits"]["cpu"] == "1"  # neither applied nor refused
    assert ignored.executor_log_lines == []
    dns = plan_for(make_job(), cfg, faults=frozenset({"ignore-dns-config"}))
    assert dns.pod["spec"]["dnsPolicy"] == "ClusterFirst" and "dnsConfig" not in dns.pod["spec"]


# --- names, labels, annotations, flags --------------------------------------------------------------------


def test_pod_name_is_cut_to_63() -> None:
    long_prefix = make_rfc1123_compatible("runner-abcdefghi-project-123456789012345-concurrent-123456789")
    name = resource_name(long_prefix, lambda: "x1y2z3w4")
    assert len(long_prefix) > 54 and len(name) == 63
    assert name == long_prefix[:54] + "-x1y2z3w4"
    assert make_rfc1123_compatible("Runner_ABC-project-1") == "runnerabc-project-1"


def test_random_suffix_shape(cfg: RunnerConfig) -> None:
    plan = build_pod(make_job(), cfg)
    suffix = plan.pod["metadata"]["name"].rsplit("-", 1)[1]
    assert len(suffix) == 8 and suffix.isalnum() and suffix.lower() == suffix
    assert plan.secret is not None and plan.secret["metadata"]["name"] != plan.pod["metadata"]["name"]


def test_concurrency_ids(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(), cfg, concurrency_id=3, project_concurrency_id=1)
    assert plan.pod["metadata"]["labels"]["pod"] == "runner-runnercon-project-42-concurrent-1"
    env = {e["name"]: e.get("value", "") for e in container(plan, "build")["env"]}
    assert (env["CI_CONCURRENT_ID"], env["CI_CONCURRENT_PROJECT_ID"]) == ("3", "1")


def test_label_sanitising_and_protected_namespace(cfg: RunnerConfig) -> None:
    custom = with_kube(
        cfg,
        pod_labels={"team": "ci/$CI_PROJECT_NAMESPACE", "manager.runner.gitlab.com/name": "evil"},
        pod_annotations={"job.runner.gitlab.com/name": "renamed", "note": "$GREETING"},
    )
    plan = plan_for(make_job(project_name="My Project!"), custom)
    labels, annotations = plan.pod["metadata"]["labels"], plan.pod["metadata"]["annotations"]
    assert labels["team"] == "ci_runnerconf"
    assert labels["manager.runner.gitlab.com/name"] == "runnerconf-local"
    assert labels["project.runner.gitlab.com/name"] == "My_Project"
    assert annotations["job.runner.gitlab.com/name"] == "renamed"  # annotations may be overwritten
    assert annotations["note"] == "hello from $CI_PROJECT_DIR"  # job variables only, not runner-added ones
    assert sanitize_label("-._x" + "y" * 80) == "x" + "y" * 62


def test_pod_label_overrides_need_the_allow_regex(cfg: RunnerConfig) -> None:
    job = with_vars(make_job(), Variable("KUBERNETES_POD_LABELS_1", "tier=probe"))
    assert (
        "tier" not in plan_for(job, with_kube(cfg, pod_labels_overwrite_allowed="")).pod["metadata"]["labels"]
    )
    allowed = with_kube(cfg, pod_labels_overwrite_allowed="^tier=")
    plan = plan_for(job, allowed)
    assert plan.pod["metadata"]["labels"]["tier"] == "probe"
    assert plan.executor_log_lines == ['"PodLabels" "tier" overwritten with "probe"']
    refused = with_vars(make_job(), Variable("KUBERNETES_POD_LABELS_1", "owner=me"))
    with pytest.raises(PreparationError, match=r'provided value "owner=me" does not match "\^tier="'):
        plan_for(refused, allowed)


def test_job_flag_variable_and_config_precedence(cfg: RunnerConfig) -> None:
    job = with_vars(
        make_job(),
        Variable("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", "false"),
        Variable("FF_TIMESTAMPS", "false"),  # config.toml sets it true, and config wins
    )
    plan = plan_for(job, cfg)
    assert "activeDeadlineSeconds" not in plan.pod["spec"]
    assert plan.log_lines == []
    assert plan.feature_flags["FF_TIMESTAMPS"] is True
    env = {e["name"]: e.get("value") for e in container(plan, "build")["env"]}
    assert env["FF_USE_POD_ACTIVE_DEADLINE_SECONDS"] == "false" and env["FF_TIMESTAMPS"] == "true"


def test_security_context_rules(cfg: RunnerConfig) -> None:
    from pytest_runnerconf.local.runner_config import ContainerSecurityContext

    custom = with_kube(
        cfg,
        cap_add=("NET_RAW", "SYS_TIME"),
        cap_drop=("SYS_TIME",),
        allow_privilege_escalation=False,
        build_container_security_context=ContainerSecurityContext(),
        helper_container_security_context=ContainerSecurityContext(privileged=False, cap_drop=("ALL",)),
    )
    plan = plan_for(make_job(), custom)
    assert container(plan, "build")["securityContext"] == {
        "capabilities": {"add": ["NET_RAW"], "drop": ["SYS_TIME"]},
        "privileged": True,
        "allowPrivilegeEscalation": False,
    }
    assert container(plan, "helper")["securityContext"] == {
        "capabilities": {"add": ["NET_RAW"], "drop": ["ALL"]},
        "privileged": False,
        "allowPrivilegeEscalation": False,
    }


def test_termination_grace_and_timeout_formats(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(timeout_s=3600), with_kube(cfg, pod_termination_grace_period_seconds=10))
    assert plan.pod["spec"]["terminationGracePeriodSeconds"] == 10
    assert plan.pod["spec"]["activeDeadlineSeconds"] == 3601
    assert plan.pod["metadata"]["annotations"]["job.runner.gitlab.com/timeout"] == "1h0m0s"
    assert [go_duration(s) for s in (0, 59, 90, 3600, 5400, 86400)] == [
        "0s",
        "59s",
        "1m30s",
        "1h0m0s",
        "1h30m0s",
        "24h0m0s",
    ]


def test_go_expand() -> None:
    values = {"A": "x", "B_1": "y"}.get

    def lookup(k: str) -> str:
        return values(k) or ("$" if k == "$" else "")

    assert go_expand("$A-${B_1}-$C-$$-${}-$", lookup) == "x-y--$--$"
    assert go_expand("${A", lookup) == "A"  # bad syntax: "${" eaten, as os.Expand does


def test_plan_does_not_mutate_the_config(cfg: RunnerConfig) -> None:
    before = copy.deepcopy(cfg)
    plan_for(with_vars(make_job(), Variable("KUBERNETES_CPU_LIMIT", "1500m")), cfg)
    assert cfg == before


def test_proc_mount_seccomp_apparmor_and_selinux_reach_the_spec() -> None:
    # The first [[runners]] entry only (the fixture's later entries start with "\n[[runners]]"), without
    # config.toml's own security tables: this test declares them itself.
    first = "\n[[runners]]".join(FIXTURE.read_text().split("\n[[runners]]")[:2])
    text = first.split("\n  [runners.kubernetes.pod_security_context]")[0] + (
        "\n    [runners.kubernetes.pod_security_context]\n"
        '      selinux_type = "spc_t"\n'
        '      seccomp_profile = { type = "RuntimeDefault" }\n'
        "    [runners.kubernetes.build_container_security_context]\n"
        '      proc_mount = "unmasked"\n'
        '      selinux_type = "container_t"\n'
        '      seccomp_profile = { type = "Localhost", localhost_profile = "profiles/build.json" }\n'
        '      app_armor_profile = { type = "Unconfined" }\n'
        "    [runners.kubernetes.helper_container_security_context]\n"
        '      proc_mount = "Bogus"\n'  # dropped, as the runner drops it (with a manager-log error)
        '      seccomp_profile = { type = "Localhost" }\n'  # Localhost without a profile: dropped
        '      app_armor_profile = { type = "NotAType" }\n'
    )
    plan = plan_for(make_job(), load_runner_config(text, SUBS))
    build = container(plan, "build")["securityContext"]
    assert build["procMount"] == "Unmasked"
    assert build["seLinuxOptions"] == {"type": "container_t"}
    assert build["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/build.json"}
    assert build["appArmorProfile"] == {"type": "Unconfined"}
    helper = container(plan, "helper")["securityContext"]
    assert not {"procMount", "seccompProfile", "appArmorProfile", "seLinuxOptions"} & helper.keys()
    assert plan.pod["spec"]["securityContext"] == {
        "seLinuxOptions": {"type": "spc_t"},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_legacy_execution_strategy_pod_has_no_logs_volume_nor_init_permissions(cfg: RunnerConfig) -> None:
    job = with_vars(make_job(), Variable("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", "true"))
    plan = plan_for(job, cfg)
    spec = plan.pod["spec"]
    assert plan.legacy
    assert [v["name"] for v in spec["volumes"]] == ["docker-certs", "repo"]
    assert "initContainers" not in spec
    assert container(plan, "build")["volumeMounts"] == [CERTS, {"name": "repo", "mountPath": "/builds"}]
    dumb = plan_for(with_vars(job, Variable("FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR", "true")), cfg)
    assert [v["name"] for v in dumb.pod["spec"]["volumes"]] == ["docker-certs", "repo", "scripts"]
    assert dumb.pod["spec"]["initContainers"][0]["command"] == [
        "sh",
        "-c",
        "cp /usr/bin/dumb-init /scripts-42-7",
    ]


def test_pod_labels_dropped_fault_keeps_only_the_runners_labels(cfg: RunnerConfig) -> None:
    job = with_vars(make_job(), Variable("KUBERNETES_POD_LABELS_T", "runnerconf.test/team=platform"))
    clean = plan_for(job, cfg).pod["metadata"]
    assert clean["labels"]["runnerconf.test/team"] == "platform"
    assert clean["annotations"]["runnerconf.test/ref"] == ""
    broken = build_pod(job, cfg, faults=frozenset({"pod-labels-dropped"}), rand=lambda: "pod00000").pod
    labels, annotations = broken["metadata"]["labels"], broken["metadata"]["annotations"]
    assert not [k for k in labels if k.startswith("runnerconf.test/")]
    assert not [k for k in annotations if k.startswith("runnerconf.test/")]
    assert labels["job.runner.gitlab.com/pod"] == "runner-runnercon-project-42-concurrent-0"
    assert annotations["job.runner.gitlab.com/id"] == "7"


def test_node_selector_overrides_and_tolerations(cfg: RunnerConfig) -> None:
    job = with_vars(
        make_job(),
        Variable("KUBERNETES_NODE_SELECTOR_ARCH", "kubernetes.io/arch=amd64"),
        Variable("KUBERNETES_NODE_TOLERATIONS_1", "gpu:NoExecute"),
    )
    allowed = with_kube(cfg, node_tolerations_overwrite_allowed="^gpu")
    plan = plan_for(job, allowed)
    assert plan.pod["spec"]["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert {"key": "gpu", "operator": "Exists", "effect": "NoExecute"} in plan.pod["spec"]["tolerations"]
    assert '"NodeSelector" "kubernetes.io/arch" overwritten with "amd64"' in plan.executor_log_lines
    refused = with_vars(
        make_job(), Variable("KUBERNETES_NODE_SELECTOR_POOL", "runnerconf.test/pool=elsewhere")
    )
    with pytest.raises(
        PreparationError, match=r'provided value "runnerconf.test/pool=elsewhere" does not match'
    ):
        plan_for(refused, cfg)
    broken = build_pod(job, cfg, faults=frozenset({"node-selector-ignored"}), rand=lambda: "pod00000").pod
    assert "nodeSelector" not in broken["spec"]


def test_the_emulated_node_takes_only_pods_that_match_and_tolerate_it(cfg: RunnerConfig) -> None:
    from pytest_runnerconf.local import admission
    from pytest_runnerconf.local.scheduling import node_object, unschedulable

    pod = plan_for(make_job(), cfg).pod
    admission.admit("Pod", pod)
    assert unschedulable(pod, node_object()) is None
    elsewhere = {**pod, "spec": {**pod["spec"], "nodeSelector": {"runnerconf.test/pool": "other"}}}
    assert "1 node(s) didn't match Pod's node affinity/selector" in str(
        unschedulable(elsewhere, node_object())
    )
    untolerated = {**pod, "spec": {**pod["spec"], "tolerations": []}}
    assert "untolerated taint {runnerconf.test/dedicated: ci}" in str(
        unschedulable(untolerated, node_object())
    )


def test_job_user_is_applied_within_the_allow_lists_and_root_needs_listing(cfg: RunnerConfig) -> None:
    from pytest_runnerconf.local.runner_config import ContainerSecurityContext

    services = (
        ServiceDef(name="busybox:1.36", alias="ok", user="4000:4001"),
        ServiceDef(name="busybox:1.36", alias="root", user="0"),
        ServiceDef(name="busybox:1.36", alias="zeros", user="00"),
        ServiceDef(name="busybox:1.36", alias="other", user="4242"),
    )
    plan = plan_for(make_job(services=services, image_user="1000"), cfg)
    contexts = {c["name"]: c["securityContext"] for c in plan.pod["spec"]["containers"]}
    assert (contexts["ok"]["runAsUser"], contexts["ok"]["runAsGroup"]) == (4000, 4001)
    assert not {"runAsUser", "runAsGroup"} & (contexts["root"].keys() | contexts["zeros"].keys())
    assert "runAsUser" not in contexts["other"] and contexts["build"]["runAsUser"] == 2000
    lines = plan.pod_log_lines
    assert (
        "WARNING: Error parsing 'uid' from image options for container \"zeros\", using the configured security "
        'context: validating UID: user "00" is not in the allowed list: [4000 1000]'
    ) in lines
    assert 'validating UID: user "4242" is not in the allowed list: [4000 1000]' in " ".join(lines)
    assert (
        'Overriding user for container "build" to "1000" is not allowed: user is set to 2000 in container '
        "security context"
    ) in lines
    broken = build_pod(
        make_job(services=services), cfg, faults=frozenset({"allowed-users-ignored"}), rand=lambda: "pod00000"
    )
    assert {c["name"]: c["securityContext"].get("runAsUser") for c in broken.pod["spec"]["containers"]}[
        "zeros"
    ] == 0
    open_cfg = with_kube(cfg, build_container_security_context=ContainerSecurityContext())
    assert (
        container(plan_for(make_job(image_user="1000:1001"), open_cfg), "build")["securityContext"][
            "runAsUser"
        ]
        == 1000
    )


def test_allowed_images_and_services_refuse_with_the_runners_lines() -> None:
    shipped = load_runner_config(FIXTURE, SUBS)
    plan = plan_for(make_job(image="registry.runnerconf.test:5000/group/app:1"), shipped)
    assert container(plan, "build")["image"] == "registry.runnerconf.test:5000/group/app:1"
    with pytest.raises(PreparationError) as info:
        plan_for(make_job(image="python:3.12"), shipped)
    assert (str(info.value), info.value.stage) == ("setting up build pod: disallowed image", "prepare_script")
    assert info.value.lines == (
        "",
        'ERROR: The "python:3.12" image is not present on list of allowed images:',
        "- alpine:*",
        "- docker:*-cli",
        "- registry.runnerconf.test:5000/**",
        "",
        "Please check runner's allowed_images configuration: "
        "https://docs.gitlab.com/runner/configuration/advanced-configuration/",
    )
    with pytest.raises(PreparationError, match="disallowed image") as info:
        plan_for(make_job(services=(ServiceDef(name="postgres:16"),)), shipped)
    assert 'ERROR: The "postgres:16" image is not present on list of allowed services:' in info.value.lines
    # the default image and the helper always pass, whatever the lists say
    assert plan_for(make_job(image=""), shipped).pod["spec"]["containers"][0]["image"] == "alpine:3.20"
    assert doublestar_match("registry.runnerconf.test:5000/**", "registry.runnerconf.test:5000/a/b:1")
    assert not doublestar_match("alpine:*", "library/alpine:3")


def test_pull_policies_from_job_and_config_within_the_allowed_ones(cfg: RunnerConfig) -> None:
    plan = plan_for(make_job(image_pull_policies=("always",)), cfg)
    assert container(plan, "build")["imagePullPolicy"] == "Always"
    assert "Using effective pull policy of [Always] for container build" in plan.pull_policy_lines
    assert "Using effective pull policy of [IfNotPresent] for container helper" not in plan.pull_policy_lines
    with pytest.raises(PreparationError) as info:
        plan_for(make_job(image_pull_policies=("never",)), cfg)
    assert str(info.value) == (
        'invalid pull policy for container "init-permissions": pull_policy ([Never]) defined in GitLab pipeline '
        "config is not one of the allowed_pull_policies ([IfNotPresent Always])"
    )
    assert info.value.retry is False


def test_config_empty_dirs_mount_in_every_container_but_not_the_build_under_the_certs_fault(
    cfg: RunnerConfig,
) -> None:
    """getVolumeMountsForConfig (v18.11): every container of the pod, init and services included."""
    job = make_job(services=(ServiceDef(name="docker:27-dind", alias="docker"),))
    plan = plan_for(job, cfg)
    for c in [*plan.pod["spec"]["initContainers"], *plan.pod["spec"]["containers"]]:
        assert CERTS in c["volumeMounts"], c["name"]
    faulted = plan_for(job, cfg, faults=frozenset({"dind-certs-not-shared"}))
    assert CERTS not in container(faulted, "build")["volumeMounts"]
    assert CERTS in container(faulted, "docker")["volumeMounts"]


def test_empty_dir_volumes_are_read_with_their_fields(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'concurrent = 1\n[[runners]]\nname = "r"\nurl = "http://x"\ntoken = "glrt-t1_abc"\nexecutor = "kubernetes"\n'
        "[runners.kubernetes]\n"
        '[[runners.kubernetes.volumes.empty_dir]]\nname = "cache"\nmount_path = "/cache/$CI_PROJECT_ID"\n'
        'size_limit = "1Gi"\n'
    )
    volume = load_runner_config(path).runners[0].kubernetes.volumes[0]
    assert (volume.name, volume.mount_path, volume.size_limit, volume.medium) == (
        "cache",
        "/cache/$CI_PROJECT_ID",
        "1Gi",
        "",
    )
