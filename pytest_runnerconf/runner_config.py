"""Expectations from the deployed runner: read its config.toml and derive what the checks expect.

A profile's ``runner_config`` names where the runner's config lives: ``configmap:NAMESPACE/NAME[#KEY]`` (read
through the Kubernetes API, one ``get`` of that ConfigMap) or a path to a config.toml. The keys are the
runner's own (``common/config.go``: ``RunnerSettings`` and ``KubernetesConfig`` toml tags at v18.11.4). Only
the keys the tables below name are kept from the parsed document; everything else, the runner token and any
other credential among it, is dropped at once and never reaches the profile, the evidence or the report.

The official Helm chart (gitlab-org/charts/gitlab-runner) deploys a ConfigMap ``<release>-gitlab-runner``
whose key ``config.toml`` holds the global part (concurrent, check_interval, ...) and ``config.template.toml``
the ``[[runners]]`` part from the chart's ``runners.config`` value; a hand-made ConfigMap usually has one
``config.toml`` with everything. Without ``#KEY`` the first of the two that has a Kubernetes runner is used.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_runnerconf.errors import ConfigError, KubeError
from pytest_runnerconf.profile import Profile, expectations_from_table, is_quantity
from pytest_runnerconf.scrub import is_secret_key, remember

CONFIGMAP_PREFIX = "configmap:"
# The chart's two keys, in the order they are tried when the reference names none.
DEFAULT_KEYS = ("config.toml", "config.template.toml")
KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class RunnerConfigRef:
    """Where the runner's config.toml is: a ConfigMap (namespace, name, optional key) or a file."""

    setting: str  # clusters.NAME.runner_config, for every sentence about it
    namespace: str = ""
    name: str = ""
    key: str | None = None
    path: str | None = None

    @property
    def is_configmap(self) -> bool:
        return self.path is None

    def describe(self, key: str | None = None) -> str:
        if self.path is not None:
            return f"file {self.path}"
        key = key or self.key
        return f"ConfigMap {self.namespace}/{self.name}" + (f" key {key}" if key else "")


def parse_ref(setting: str, value: str, base: Path | None = None) -> RunnerConfigRef:
    """The reference a ``runner_config`` value gives; relative paths are relative to BASE (the profile's dir).

    Raises:
        ConfigError: naming SETTING, for a configmap: value without NAMESPACE/NAME.
    """
    text = value.strip()
    if not text.startswith(CONFIGMAP_PREFIX):
        path = Path(text).expanduser()
        return RunnerConfigRef(setting, path=str(base / path if base and not path.is_absolute() else path))
    rest = text[len(CONFIGMAP_PREFIX) :]
    where, sep, key = rest.partition("#")
    namespace, slash, name = where.partition("/")
    if not slash or not namespace.strip() or not name.strip() or "/" in name or (sep and not key.strip()):
        raise ConfigError(
            f"{setting} = {value!r} is not a ConfigMap reference; write configmap:NAMESPACE/NAME or "
            "configmap:NAMESPACE/NAME#KEY (for example configmap:gitlab-runner/gitlab-runner#config.template.toml)"
        )
    return RunnerConfigRef(setting, namespace.strip(), name.strip(), key.strip() if sep else None)


# ---------------------------------------------------------------- what is kept of the config

# [[runners]] keys (RunnerSettings) and [runners.kubernetes] keys (KubernetesConfig) that are kept; the rest of
# the document is dropped right after parsing.
RUNNER_KEYS = ("name", "executor", "builds_dir", "output_limit")
_LIMIT_KEYS = tuple(
    f"{prefix}{res}_{kind}{cap}"
    for prefix in ("", "helper_", "service_", "pod_")
    for res in ("cpu", "memory", "ephemeral_storage")
    for kind in ("limit", "request")
    for cap in ("", "_overwrite_max_allowed")
)
# Not (yet) expectations of a check: kept and shown in the profile's runner_config section, ready to be wired.
REPORTED_KEYS = (
    "namespace",
    "image",
    "helper_image",
    "privileged",
    "allow_privilege_escalation",
    "cap_add",
    "cap_drop",
    "pod_labels",
    "pod_annotations",
    "node_selector",
    "node_tolerations",
    "pod_security_context",
    "init_permissions_container_security_context",
    "build_container_security_context",
    "helper_container_security_context",
    "service_container_security_context",
    "poll_interval",
    "cleanup_grace_period_seconds",
    "cleanup_resources_timeout",
    "pod_termination_grace_period_seconds",
    "service_account",
    "priority_class_name",
    "runtime_class_name",
    "scheduler_name",
)
# Ephemeral storage and pod-level requests and limits have no expectation yet (their caps do): shown as they are.
UNCHECKED_LIMIT_KEYS = tuple(
    k
    for k in _LIMIT_KEYS
    if ("ephemeral_storage" in k or k.startswith("pod_")) and not k.endswith("_overwrite_max_allowed")
)
KUBERNETES_KEYS = (
    *_LIMIT_KEYS,
    "poll_timeout",
    "dns_policy",
    "dns_config",
    "volumes",
    "pod_disruption_budget",
    *REPORTED_KEYS,
)

# The runner's defaults where a missing key still has a value the checks depend on (common/consts.go
# KubernetesPollTimeout = 180, applied in KubernetesConfig.GetPollTimeout when poll_timeout <= 0; the
# Kubernetes executor's default builds_dir is /builds, executors/kubernetes DefaultBuildsDir; output_limit 0
# means DefaultTraceOutputLimit, 4 MiB = 4096 KB, network/trace.go setupLogLimit).
RUNNER_DEFAULTS: dict[str, Any] = {"poll_timeout": 180, "builds_dir": "/builds", "output_limit": 4096}

# The runner's spellings of dns_policy (common/config.go KubernetesDNSPolicy.Get) -> the pod spec's.
DNS_POLICIES = {
    "": "ClusterFirst",
    "none": "None",
    "default": "Default",
    "cluster-first": "ClusterFirst",
    "cluster-first-with-host-net": "ClusterFirstWithHostNet",
}


@dataclass(frozen=True)
class RunnerSettings:
    """The kept part of one Kubernetes runner's config: its [[runners]] keys and [runners.kubernetes] keys."""

    where: str  # "ConfigMap ci/gitlab-runner key config.toml" / "file ./config.toml"
    runner: dict[str, Any]
    kubernetes: dict[str, Any]

    def value(self, key: str) -> Any:
        """A key by its config name: "builds_dir" ([[runners]]) or any [runners.kubernetes] key."""
        if key in RUNNER_KEYS:
            return self.runner.get(key)
        return self.kubernetes.get(key)

    def has(self, key: str) -> bool:
        return (self.runner if key in RUNNER_KEYS else self.kubernetes).get(key) is not None


def _kubernetes_runners(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    runners = doc.get("runners")
    if not isinstance(runners, list):
        return []
    chosen = []
    for runner in runners:
        if not isinstance(runner, dict):
            continue
        executor = runner.get("executor")
        # The chart's template may leave executor out: register adds it from the chart's runners.executor.
        if executor == KUBERNETES or (executor is None and isinstance(runner.get("kubernetes"), dict)):
            chosen.append(runner)
    return chosen


def parse_config(text: str, where: str, setting: str, runner_name: str | None = None) -> RunnerSettings:
    """The Kubernetes runner of a config.toml TEXT read from WHERE (named RUNNER_NAME when several are).

    Raises:
        ConfigError: naming SETTING and WHERE: not TOML, no Kubernetes runner, several and no runner_name.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{setting}: {where} is not valid TOML ({exc}); point it at the runner's config.toml"
        ) from None
    _remember_secrets(doc)
    candidates = _kubernetes_runners(doc)
    del doc  # holds the runner token: nothing but the kept keys below may outlive this function
    if not candidates:
        raise ConfigError(
            f'{setting}: {where} has no [[runners]] entry with executor = "kubernetes"; point it at the '
            "config of the Kubernetes runner under test"
        )
    names = [str(r.get("name") or "(unnamed)") for r in candidates]
    if runner_name is not None:
        matching = [r for r in candidates if r.get("name") == runner_name]
        if len(matching) != 1:
            problem = "no" if not matching else f"{len(matching)}"
            raise ConfigError(
                f"{setting}: {where} has {problem} Kubernetes runners named {runner_name!r} (has: "
                f"{', '.join(names)}); fix {setting.rsplit('.', 1)[0]}.runner_name"
            )
        runner = matching[0]
    elif len(candidates) > 1:
        raise ConfigError(
            f"{setting}: {where} has {len(candidates)} Kubernetes runners ({', '.join(names)}); set "
            f"{setting.rsplit('.', 1)[0]}.runner_name to the one under test"
        )
    else:
        runner = candidates[0]
    kubernetes = runner.get("kubernetes") if isinstance(runner.get("kubernetes"), dict) else {}
    assert isinstance(kubernetes, dict)
    return RunnerSettings(
        where=where,
        runner={k: runner[k] for k in RUNNER_KEYS if k in runner},
        kubernetes={k: kubernetes[k] for k in KUBERNETES_KEYS if k in kubernetes},
    )


def _remember_secrets(value: Any, key: str = "") -> None:
    """Mask every credential of the document in all output from now on, should one ever get that far."""
    if isinstance(value, dict):
        for sub, item in value.items():
            _remember_secrets(item, str(sub))
    elif isinstance(value, list):
        for item in value:
            _remember_secrets(item, key)
    elif isinstance(value, str) and len(value) >= 8 and (key == "token" or is_secret_key(key)):
        remember(value)


def configmap_of(profile: Profile) -> tuple[str, str] | None:
    """(namespace, name) of the ConfigMap the profile's runner_config names, else None (for the RBAC rule)."""
    if profile.runner_config is None or not profile.runner_config.startswith(CONFIGMAP_PREFIX):
        return None
    ref = parse_ref(f"clusters.{profile.name}.runner_config", profile.runner_config)
    return ref.namespace, ref.name


def choose_key(data: Mapping[str, str], ref: RunnerConfigRef) -> tuple[str, str]:
    """(key, text) of a ConfigMap's data that holds the Kubernetes runner: ref.key, else DEFAULT_KEYS in order.

    Raises:
        ConfigError: the named key is missing, or neither default key has a Kubernetes runner.
    """
    keys = sorted(data)
    if ref.key is not None:
        if ref.key not in data:
            raise ConfigError(
                f"{ref.setting}: {ref.describe()} does not exist (the ConfigMap has: {', '.join(keys) or 'no keys'}); "
                f"fix the #KEY of {ref.setting}"
            )
        return ref.key, data[ref.key]
    for key in DEFAULT_KEYS:
        text = data.get(key)
        if text is None:
            continue
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue  # a template the chart renders later, or broken: parse_config says which when chosen
        if _kubernetes_runners(doc):
            return key, text
    raise ConfigError(
        f"{ref.setting}: {ref.describe()} has no Kubernetes runner in {' or '.join(DEFAULT_KEYS)} (the "
        f"ConfigMap has: {', '.join(keys) or 'no keys'}); name the key with configmap:"
        f"{ref.namespace}/{ref.name}#KEY"
    )


ReadConfigMap = Callable[[str, str], Mapping[str, str]]  # (namespace, name) -> data; raises KubeError


def load(
    ref: RunnerConfigRef, read_configmap: ReadConfigMap | None, runner_name: str | None
) -> RunnerSettings:
    """The runner settings REF points at, read from the file or through READ_CONFIGMAP.

    Raises:
        ConfigError: one sentence naming the setting and what was tried (file missing, ConfigMap not found or
            not readable, no Kubernetes runner in it).
        KubeError: the Kubernetes API could not be reached (could not test, not a profile error).
    """
    if ref.path is not None:
        path = Path(ref.path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{ref.setting}: cannot read the runner config {ref.describe()} ({exc.strerror}); fix the path "
                f"or use configmap:NAMESPACE/NAME"
            ) from None
        return parse_config(text, ref.describe(), ref.setting, runner_name)
    assert read_configmap is not None, "a ConfigMap reference needs the Kubernetes API"
    try:
        data = read_configmap(ref.namespace, ref.name)
    except ConfigMapUnreadable as exc:
        raise ConfigError(f"{ref.setting}: cannot read the runner config {ref.describe()}: {exc}") from None
    except (
        KubeError
    ) as exc:  # the API is down or refuses the credentials: could not test, said of this setting
        raise KubeError(f"{ref.setting}: cannot read the runner config {ref.describe()}: {exc}") from None
    key, text = choose_key(data, ref)
    return parse_config(text, ref.describe(key), ref.setting, runner_name)


class ConfigMapUnreadable(KubeError):
    """The ConfigMap does not exist or may not be read: the profile's reference needs fixing."""


# ---------------------------------------------------------------- derivation: config key -> expectation


def _quantity(key: str) -> Callable[[RunnerSettings], Any]:
    def get(settings: RunnerSettings) -> Any:
        value = settings.value(key)
        text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if not is_quantity(text):
            raise ConfigError(
                f"{settings.where}: [runners.kubernetes] {key} = {value!r} is not a Kubernetes quantity; the "
                "runner would refuse it too"
            )
        return text

    return get


def _plain(key: str, kind: type, what: str) -> Callable[[RunnerSettings], Any]:
    def get(settings: RunnerSettings) -> Any:
        value = settings.value(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value <= 0):
            value = RUNNER_DEFAULTS[key]  # the number keys are omitzero: 0 (or less) is the runner's default
        if isinstance(value, bool) or not isinstance(value, kind) or not value:
            section = "[[runners]]" if key in RUNNER_KEYS else "[runners.kubernetes]"
            raise ConfigError(
                f"{settings.where}: {section} {key} = {value!r} is not allowed; it must be {what}"
            )
        return value

    return get


@dataclass(frozen=True)
class Derivation:
    """One row: expectation EXPECT_KEY comes from config key CONFIG_KEY through GET (which validates)."""

    config_key: str
    expect_key: str
    get: Callable[[RunnerSettings], Any]
    default_applies: bool = False  # the runner's default stands in when the key is missing


_LIMIT_ROWS = [
    Derivation(f"{prefix}{res}_{kind}", f"{container}.{res}_{kind}", _quantity(f"{prefix}{res}_{kind}"))
    for prefix, container in (("", "build"), ("helper_", "helper"), ("service_", "service"))
    for res in ("cpu", "memory")
    for kind in ("limit", "request")
]
_CAP_ROWS = [
    Derivation(
        f"{prefix}{res}_{kind}_overwrite_max_allowed",
        f"override_caps.{prefix}{res}_{kind}",
        _quantity(f"{prefix}{res}_{kind}_overwrite_max_allowed"),
    )
    for prefix in ("", "helper_", "service_", "pod_")
    for res in ("cpu", "memory", "ephemeral_storage")
    for kind in ("limit", "request")
]


def _dind_tls(settings: RunnerSettings) -> bool:
    """Whether the config mounts a volume at /certs or below in every container (getVolumeMountsForConfig),
    the way TLS Docker-in-Docker's client certificates reach the build; no such volume: not offered."""
    volumes = settings.value("volumes")
    if volumes is None:
        return False
    if not isinstance(volumes, dict):
        raise ConfigError(f"{settings.where}: [runners.kubernetes.volumes] must be a table of volume lists")
    paths = [
        str(volume.get("mount_path") or "")
        for kind in volumes.values()
        if isinstance(kind, list)
        for volume in kind
        if isinstance(volume, dict)
    ]
    return any(path == "/certs" or path.startswith("/certs/") for path in paths)


def _flag(key: str) -> Callable[[RunnerSettings], bool]:
    def get(settings: RunnerSettings) -> bool:
        value = settings.value(key)
        if not isinstance(value, bool):
            raise ConfigError(
                f"{settings.where}: [runners.kubernetes] {key} = {value!r} is not allowed; it must be true or false"
            )
        return value

    return get


DERIVATIONS: tuple[Derivation, ...] = (
    Derivation(
        "builds_dir", "builds_dir", _plain("builds_dir", str, "a directory path"), default_applies=True
    ),
    Derivation(
        "poll_timeout", "poll_timeout_s", _plain("poll_timeout", int, "a whole number of seconds"), True
    ),
    Derivation(
        "output_limit", "output_limit_kb", _plain("output_limit", int, "a whole number of kilobytes"), True
    ),
    Derivation("volumes", "dind_tls", _dind_tls, default_applies=True),
    # RC-DIS-003: common/config.go KubernetesConfig.PodDisruptionBudget (v18.11.0 on; unset means false, but a
    # runner older than 18.11 ignores the key either way, so only a key that is there says anything).
    Derivation(
        "pod_disruption_budget",
        "disruption.pod_disruption_budget",
        _flag("pod_disruption_budget"),
    ),
    *_LIMIT_ROWS,
    *_CAP_ROWS,
)
DNS_KEYS = ("dns_policy", "dns_config")  # one row: the DNS expectation is the policy and the config together


def _dns(settings: RunnerSettings) -> dict[str, Any] | None:
    policy = settings.value("dns_policy")
    config = settings.value("dns_config")
    if policy is None and config is None:
        return None  # the runner sets no DNS: the pod gets the cluster's default, nothing to compare with
    if not isinstance(policy, str | None) or (policy or "") not in DNS_POLICIES:
        # KubernetesDNSPolicy.Get's own words: every job of this runner fails with them.
        raise ConfigError(
            f"{settings.where}: [runners.kubernetes] dns_policy = {policy!r}: unsupported kubernetes-dns-policy; "
            f"the runner accepts {', '.join(repr(p) for p in DNS_POLICIES if p)}"
        )
    table: dict[str, Any] = {"policy": DNS_POLICIES[policy or ""]}
    if config is not None:
        if not isinstance(config, dict):
            raise ConfigError(f"{settings.where}: [runners.kubernetes] dns_config must be a table")
        for key in ("nameservers", "searches"):
            values = config.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(
                    f"{settings.where}: [runners.kubernetes.dns_config] {key} must be a list of strings"
                )
            table[key] = list(values)
        options = config.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, dict) and "name" in o for o in options):
            raise ConfigError(
                f"{settings.where}: [[runners.kubernetes.dns_config.options]] entries need a name (and a value)"
            )
        table["options"] = [
            str(o["name"]) if o.get("value") is None else f"{o['name']}:{o['value']}" for o in options
        ]
    return table


@dataclass(frozen=True)
class Derived:
    """What the runner config gives: expect values (nested, as a profile writes them), the config key behind
    each dotted expect key, and the reported (not yet checked) settings."""

    where: str
    runner: str | None
    expect: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # dotted expect key -> config key
    reported: dict[str, Any] = field(default_factory=dict)


def derive(settings: RunnerSettings) -> Derived:
    """Every expectation the table derives from SETTINGS, with the config key it came from.

    Raises:
        ConfigError: a kept value the runner would not accept either (naming where and the key).
    """
    derived = Derived(where=settings.where, runner=settings.runner.get("name"))
    for row in DERIVATIONS:
        if not settings.has(row.config_key) and not row.default_applies:
            continue
        _put(derived.expect, row.expect_key, row.get(settings))
        note = "" if settings.has(row.config_key) else " (the runner's default)"
        derived.sources[row.expect_key] = _config_name(row.config_key) + note
    dns = _dns(settings)
    if dns is not None:
        derived.expect["dns"] = dns
        derived.sources["dns"] = " and ".join(_config_name(k) for k in DNS_KEYS if settings.has(k))
    shown = (*REPORTED_KEYS, *UNCHECKED_LIMIT_KEYS)
    derived.reported.update({k: settings.kubernetes[k] for k in shown if k in settings.kubernetes})
    return derived


def _config_name(key: str) -> str:
    return f"[[runners]] {key}" if key in RUNNER_KEYS else f"[runners.kubernetes] {key}"


def _put(table: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        table = table.setdefault(part, {})
    table[leaf] = value


# ---------------------------------------------------------------- into the profile

ORIGIN = "runner config"


def section(derived: Derived) -> dict[str, Any]:
    """The profile summary's runner_config_found: where, which runner, what was derived from which key, and
    the settings no check compares yet (pod labels, security contexts, node selector, ...)."""
    return {
        "source": derived.where,
        "runner": derived.runner,
        "derived": dict(sorted(derived.sources.items())),
        "reported": dict(sorted(derived.reported.items())),
    }


def _covered(key: str, keys: Collection[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:n]) in keys for n in range(len(parts), 0, -1))


def _flat_values(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [
            pair for k in sorted(value) for pair in _flat_values(value[k], f"{prefix}.{k}" if prefix else k)
        ]
    return [(prefix, value)] if prefix else []


def apply(profile: Profile, derived: Derived) -> Profile:
    """PROFILE with the expectations DERIVED gives wherever its own file (or provider) set none.

    A value the profile sets wins; the DNS expectation is one unit (policy, nameservers, searches and options
    describe one resolver set-up), so a profile that sets any part of expect.dns keeps its own whole.
    """
    own = dict(profile.expect_set)
    keep_dns = not any(key == "dns" or key.startswith("dns.") for key in own)
    merged: dict[str, Any] = {}
    sources: dict[str, tuple[str, str]] = {}
    for key, value in _flat_values(derived.expect):
        if key.split(".")[0] == "dns" and not keep_dns:
            continue
        if not _covered(key, own):
            _put(merged, key, value)
    for key, config_key in derived.sources.items():
        if (key == "dns" and keep_dns) or (key != "dns" and not _covered(key, own)):
            sources[key] = (ORIGIN, f"{derived.where}: {config_key}")
    # The profile's own values on top, as its summary states them (the validated form).
    for key, value in _flat_values(profile.summary()["expect"]):
        if _covered(key, own) and value is not None:
            _put(merged, key, value)
    expect = expectations_from_table(profile.source, f"clusters.{profile.name}.expect", merged)
    return replace(
        profile,
        expect=expect,
        expect_set={**sources, **own},
        runner_config_found=section(derived),
    )


def resolve(profile: Profile, read_configmap: ReadConfigMap | None = None) -> Profile:
    """PROFILE with its runner_config read and applied; PROFILE itself when it names none.

    READ_CONFIGMAP is needed only for a configmap: reference (a file is read here).

    Raises:
        ConfigError, KubeError: as load() does.
    """
    if profile.runner_config is None or profile.runner_config_found is not None:
        return profile  # none named, or already applied (a replayed profile)
    ref = parse_ref(f"{profile.source}: clusters.{profile.name}.runner_config", profile.runner_config)
    return apply(profile, derive(load(ref, read_configmap, profile.runner_name)))


def from_record(summary: Mapping[str, Any], runner_config: str) -> Derived | None:
    """What a recorded run derived (Profile.summary() in its evidence), when it read RUNNER_CONFIG too.

    A replay judges against the values the run read: the ConfigMap is not read again (the replay may have no
    cluster, and the config may have changed since).
    """
    found = summary.get("runner_config_found")
    if summary.get("runner_config") != runner_config or not isinstance(found, dict):
        return None
    expect_set = summary.get("expect_set") or {}
    ours = {
        k
        for k, where in expect_set.items()
        if isinstance(where, list | tuple) and list(where[:1]) == [ORIGIN]
    }
    derived = Derived(
        where=str(found.get("source") or runner_config),
        runner=found.get("runner"),
        sources={str(k): str(v) for k, v in (found.get("derived") or {}).items() if k in ours},
        reported=dict(found.get("reported") or {}),
    )
    for key, value in _flat_values(summary.get("expect") or {}):
        if _covered(key, ours) and value is not None:
            _put(derived.expect, key, value)
    return derived
