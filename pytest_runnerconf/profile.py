"""Cluster profiles: where to run (runnerconf.toml) and what the runner there is expected to do."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_runnerconf import expect_pod
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.expect_pod import ImagePolicyExpect, LabelsExpect, SchedulingExpect, SecurityExpect

PROFILE_FILE = "runnerconf.toml"
DEFAULT_MAX_TRACE_BYTES = 32 * 1024 * 1024  # 8x the runner's default output_limit (4096 KiB)
DEFAULT_MAX_ARTIFACT_BYTES = 16 * 1024 * 1024
# Keys a target provider owns: set on any other cluster they would silently do nothing.
PROVIDER_KEYS = {"local_faults": "local"}

# Pod-spec spelling first; the runner's config.toml spelling is accepted as an alias.
DNS_POLICIES = ("None", "Default", "ClusterFirst", "ClusterFirstWithHostNet")
_DNS_ALIASES = {
    "none": "None",
    "default": "Default",
    "cluster-first": "ClusterFirst",
    "clusterfirst": "ClusterFirst",
    "cluster-first-with-host-net": "ClusterFirstWithHostNet",
    "clusterfirstwithhostnet": "ClusterFirstWithHostNet",
}

_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def is_quantity(text: str) -> bool:
    return bool(_QUANTITY.match(text))


def quantity_value(text: str) -> Decimal:
    """A Kubernetes quantity as a number (cores for CPU, bytes for memory): "1500m" -> 1.5, "1Gi" -> 2**30."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    suffix = match.group(3) or ""
    number = text.strip()[: len(text.strip()) - len(suffix)]
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
        return Decimal(number) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError) as exc:  # pragma: no cover - the regex admits only valid forms
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc


@dataclass(frozen=True)
class Limits:
    cpu_limit: str | None = None
    cpu_request: str | None = None
    memory_limit: str | None = None
    memory_request: str | None = None


@dataclass(frozen=True)
class DnsExpect:
    policy: str
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[tuple[str, str | None], ...] = ()

    def resolv_options(self) -> tuple[str, ...]:
        """The options as resolv.conf writes them: ("ndots:2", "rotate")."""
        return tuple(name if value is None else f"{name}:{value}" for name, value in self.options)


@dataclass(frozen=True)
class ImagesExpect:
    build: str = "alpine:3.20"
    service: str = "busybox:1.36"
    dind: str = "docker:27-dind"
    docker_cli: str = "docker:27-cli"
    dind_pull: str = "alpine:3.20"
    insecure_registries: tuple[str, ...] = ()


@dataclass(frozen=True)
class CapacityExpect:
    """RC-CAP-*: a runner (reached by its own tag) whose `limit` (or `concurrent`) lets LIMIT jobs run at once."""

    runner_tag: str
    limit: int
    # RC-CAP-003: how soon after its creation each of the runner's pods must be bound to a node (None: the
    # profile's pickup_deadline_s).
    schedule_within_s: float | None = None


@dataclass(frozen=True)
class CacheExpect:
    """RC-CCH-002: another runner (reached by its own tag) sharing the first one's distributed cache."""

    other_runner_tag: str


@dataclass(frozen=True)
class RegistryExpect:
    """RC-DND-003..005: the registry a DinD job pushes what it builds to, logging in with CI/CD variables.

    The variables hold the credentials (GitLab's own container registry hands every job CI_REGISTRY_USER and
    CI_REGISTRY_PASSWORD; another registry needs project variables the operator sets); the probe reads them
    by name, so their values never pass through this tool.
    """

    address: str
    repository: str
    user_variable: str = "CI_REGISTRY_USER"
    password_variable: str = "CI_REGISTRY_PASSWORD"


@dataclass(frozen=True)
class DisruptionExpect:
    """RC-DIS-003: whether the runner protects its job pods with a PodDisruptionBudget ([runners.kubernetes]
    pod_disruption_budget = true, runner 18.11.0 on), and the tag of the runner that does."""

    pod_disruption_budget: bool = False
    # None: the profile's own runner_tags (the runner under test is the one with the setting).
    runner_tag: str | None = None


@dataclass(frozen=True)
class Expectations:
    builds_dir: str = "/builds"
    cleanup_deadline_s: float = 60.0
    pickup_deadline_s: float = 300.0
    pending_deadline_s: float = 180.0
    # The runner's [runners.kubernetes] poll_timeout when known: the pending deadline is then set below it.
    poll_timeout_s: float | None = None
    run_deadline_s: float = 1800.0
    build: Limits = field(default_factory=Limits)
    helper: Limits = field(default_factory=Limits)
    service: Limits = field(default_factory=Limits)
    override_caps: dict[str, str] = field(default_factory=dict)
    dns: DnsExpect | None = None
    images: ImagesExpect = field(default_factory=ImagesExpect)
    oom_report: str = "container"
    cgroup: str = "auto"
    service_oom_reported: bool = False
    # RC-DND-002: whether the runner offers TLS Docker-in-Docker (a certificates volume, an empty_dir at
    # /certs/client, shared by the DinD service and the build); None: the profile does not say, so skipped.
    dind_tls: bool | None = None
    # RC-LOG-002: how long the silent step stays silent. 330 s is past the 300 s idle timeouts that load
    # balancers in front of API servers are known to cut exec/attach streams at.
    silent_step_s: float = 330.0
    # The runner's [[runners]] output_limit (kilobytes; 4096 when unset, common/consts.go
    # DefaultTraceOutputLimit) and how much the burst probe prints: above the limit the trace must be cut
    # exactly there, with the runner's message.
    output_limit_kb: int = 4096
    log_burst_kib: int = 3072
    # None: the profile names no runner to measure capacity on, so RC-CAP-* are skipped.
    capacity: CapacityExpect | None = None
    # None: the profile names no second runner sharing the cache, so RC-CCH-002 is skipped.
    cache: CacheExpect | None = None
    # None: the profile names no registry to push to, so RC-DND-004/005 are skipped (RC-DND-003 still builds).
    registry: RegistryExpect | None = None
    # None: the profile does not say whether job pods get a PodDisruptionBudget, so RC-DIS-003 is skipped.
    disruption: DisruptionExpect | None = None
    # What the pod spec promises (expect_pod): None when the profile sets no such table.
    labels: LabelsExpect | None = None
    scheduling: SchedulingExpect | None = None
    security: SecurityExpect | None = None
    image_policy: ImagePolicyExpect | None = None


# Where an expectation's value came from (report.html and report.json show it next to the value).
ORIGINS = {
    "profile": "set in the profile file",
    "target": "built into the target provider (its own profile of the cluster it runs)",
    "default": "the plugin's built-in default",
    "runner config": "read from the deployed runner's config.toml (runner_config): its file is the ConfigMap "
    "or path and the config key",
}


@dataclass(frozen=True)
class ExpectSource:
    """One expectation and where its value came from.

    origin is one of ORIGINS; file the profile file (or the provider's built-in one) that set it, None for a
    built-in default; setting the dotted key that sets it (clusters.prod.expect.build.cpu_limit).
    """

    key: str
    value: Any
    origin: str | None  # None: not recorded (evidence saved before sources were)
    file: str | None
    setting: str


def expect_sources_of(
    name: str, expect: Mapping[str, Any], expect_set: Mapping[str, Any] | None
) -> list[ExpectSource]:
    """Each expectation of an expect table (Profile.summary()'s "expect") and where it came from.

    EXPECT_SET maps dotted keys that someone set to (origin, file); a key set as a whole table (dns) covers
    its leaves; any other key is a built-in default. None: not recorded, so no origin is claimed.
    """
    sources = []
    for key, value in flat_keys(dict(expect)):
        origin: str | None = None
        file: str | None = None
        if expect_set is not None:
            parts = key.split(".")
            covering = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
            found = next((expect_set[k] for k in covering if k in expect_set), None)
            origin, file = (str(found[0]), str(found[1])) if found is not None else ("default", None)
        sources.append(ExpectSource(key, value, origin, file, f"clusters.{name}.expect.{key}"))
    return sources


def flat_keys(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested expect table as (dotted key, leaf value) pairs: build.cpu_limit, dns.policy, ... sorted."""
    if isinstance(value, dict) and value:
        pairs: list[tuple[str, Any]] = []
        for key in sorted(value):
            pairs += flat_keys(value[key], f"{prefix}.{key}" if prefix else str(key))
        return pairs
    return [(prefix, value)] if prefix else []


@dataclass(frozen=True)
class Profile:
    """One cluster under test. The token itself is never stored: token() reads it when needed."""

    name: str
    gitlab_url: str
    token_env: str | None
    token_file: str | None
    project: str
    runner_tags: tuple[str, ...]
    kubeconfig: str | None
    kube_context: str | None
    namespace: str
    expect: Expectations
    source: str
    # http:// to a host other than loopback sends the token in clear text: refused unless this says so.
    allow_insecure_http: bool = False
    # What the run reads at most of one job's trace and of one artifacts archive; a cut is reported.
    max_trace_bytes: int = DEFAULT_MAX_TRACE_BYTES
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    gitlab_ca_file: str | None = None  # a PEM bundle to verify GitLab's certificate (an internal CA)
    # Dotted expect keys that someone set -> (origin, file); every other expectation is a built-in default.
    expect_set: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Where the deployed runner's config.toml is (configmap:NS/NAME[#KEY] or a path), and which of its
    # Kubernetes runners is under test when it has several; runner_config.py reads and derives from it.
    runner_config: str | None = None
    runner_name: str | None = None
    # What was read from it (runner_config.Derived.section()): shown in the summary, never the token.
    runner_config_found: Mapping[str, Any] | None = None

    def expect_sources(self) -> list[ExpectSource]:
        """Every expectation (flattened as in summary()["expect"]) with where its value came from."""
        return expect_sources_of(self.name, _expect_summary(self.expect), self.expect_set)

    def token_file_warning(self) -> str | None:
        """A sentence when the token file may be read by other users (group or world bits set)."""
        if not self.token_file:
            return None
        path = Path(self.token_file).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError:
            return None
        if mode & 0o077:
            return (
                f"the GitLab token file {path} can be read by other users (mode {mode & 0o777:o}); "
                f"run `chmod 600 {path}` (clusters.{self.name}.token_file)"
            )
        return None

    def token(self) -> str:
        """The GitLab token: from the env var named by token_env, else from token_file."""
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if value:
                return value
        if self.token_file:
            path = Path(self.token_file).expanduser()
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{self.source}: cannot read the GitLab token file {path} ({exc.strerror}); "
                    f"fix clusters.{self.name}.token_file"
                ) from None
            if value:
                return value
            raise ConfigError(
                f"{self.source}: the GitLab token file {path} is empty; fix clusters.{self.name}.token_file"
            )
        if self.token_env:
            raise ConfigError(
                f"{self.source}: environment variable {self.token_env} holding the GitLab token is not set; "
                f"export it or change clusters.{self.name}.token_env"
            )
        raise ConfigError(
            f"{self.source}: no GitLab token source; set clusters.{self.name}.token_env or token_file"
        )

    def summary(self) -> dict[str, Any]:
        """What evidence and reports may show about the profile: everything except the token."""
        exp = self.expect
        return {
            "name": self.name,
            "gitlab_url": self.gitlab_url,
            "gitlab_ca_file": self.gitlab_ca_file,
            "token_env": self.token_env,
            "token_file": self.token_file,
            "project": self.project,
            "runner_tags": list(self.runner_tags),
            "kubeconfig": self.kubeconfig,
            "kube_context": self.kube_context,
            "namespace": self.namespace,
            "source": self.source,
            "allow_insecure_http": self.allow_insecure_http,
            "max_trace_bytes": self.max_trace_bytes,
            "max_artifact_bytes": self.max_artifact_bytes,
            "expect": _expect_summary(exp),
            "expect_set": {key: list(where) for key, where in sorted(self.expect_set.items())},
            "runner_config": self.runner_config,
            "runner_name": self.runner_name,
            "runner_config_found": None
            if self.runner_config_found is None
            else dict(self.runner_config_found),
        }


def profile_from_summary(summary: dict[str, Any]) -> Profile:
    """Rebuild a Profile from Profile.summary() as saved in an evidence bundle (no token)."""
    exp = summary["expect"]
    dns = exp.get("dns")
    images = dict(exp.get("images") or {})
    images["insecure_registries"] = tuple(images.get("insecure_registries") or ())
    return Profile(
        name=summary["name"],
        gitlab_url=summary["gitlab_url"],
        gitlab_ca_file=summary.get("gitlab_ca_file"),
        token_env=summary.get("token_env"),
        token_file=summary.get("token_file"),
        project=summary["project"],
        runner_tags=tuple(summary.get("runner_tags") or ()),
        kubeconfig=summary.get("kubeconfig"),
        kube_context=summary.get("kube_context"),
        namespace=summary["namespace"],
        source=f"{summary.get('source')} (as recorded in the evidence)",
        # A bundle from before expectation sources were recorded: every value shows as a default.
        expect_set={
            str(key): (str(where[0]), str(where[1]))
            for key, where in (summary.get("expect_set") or {}).items()
            if isinstance(where, list | tuple) and len(where) == 2
        },
        allow_insecure_http=bool(summary.get("allow_insecure_http", False)),
        max_trace_bytes=int(summary.get("max_trace_bytes") or DEFAULT_MAX_TRACE_BYTES),
        max_artifact_bytes=int(summary.get("max_artifact_bytes") or DEFAULT_MAX_ARTIFACT_BYTES),
        runner_config=summary.get("runner_config"),
        runner_name=summary.get("runner_name"),
        runner_config_found=summary.get("runner_config_found"),
        expect=Expectations(
            builds_dir=exp["builds_dir"],
            cleanup_deadline_s=exp["cleanup_deadline_s"],
            pickup_deadline_s=exp["pickup_deadline_s"],
            pending_deadline_s=exp["pending_deadline_s"],
            poll_timeout_s=exp.get("poll_timeout_s"),
            run_deadline_s=exp["run_deadline_s"],
            build=Limits(**exp["build"]),
            helper=Limits(**exp["helper"]),
            service=Limits(**exp["service"]),
            override_caps=dict(exp.get("override_caps") or {}),
            dns=None
            if dns is None
            else DnsExpect(
                policy=dns["policy"],
                nameservers=tuple(dns.get("nameservers") or ()),
                searches=tuple(dns.get("searches") or ()),
                options=tuple(_summary_dns_option(o) for o in dns.get("options") or ()),
            ),
            images=ImagesExpect(**images),
            oom_report=exp["oom_report"],
            cgroup=exp["cgroup"],
            service_oom_reported=exp["service_oom_reported"],
            # Bundles saved before the log expectations existed: the defaults.
            **{
                k: exp[k]
                for k in ("silent_step_s", "output_limit_kb", "log_burst_kib", "dind_tls")
                if k in exp
            },
            capacity=CapacityExpect(**exp["capacity"]) if exp.get("capacity") else None,
            cache=CacheExpect(**exp["cache"]) if exp.get("cache") else None,
            registry=RegistryExpect(**exp["registry"]) if exp.get("registry") else None,
            disruption=DisruptionExpect(**exp["disruption"]) if exp.get("disruption") else None,
            **{name: expect_pod.restore(name, exp.get(name)) for name in expect_pod.TABLES},
        ),
    )


def _summary_dns_option(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition(":")
    return name, (value if sep else None)


def _expect_summary(exp: Expectations) -> dict[str, Any]:
    def limits(lim: Limits) -> dict[str, str | None]:
        return dict(vars(lim))

    dns = None
    if exp.dns is not None:
        dns = {
            "policy": exp.dns.policy,
            "nameservers": list(exp.dns.nameservers),
            "searches": list(exp.dns.searches),
            "options": list(exp.dns.resolv_options()),
        }
    return {
        "builds_dir": exp.builds_dir,
        "cleanup_deadline_s": exp.cleanup_deadline_s,
        "pickup_deadline_s": exp.pickup_deadline_s,
        "pending_deadline_s": exp.pending_deadline_s,
        "poll_timeout_s": exp.poll_timeout_s,
        "run_deadline_s": exp.run_deadline_s,
        "build": limits(exp.build),
        "helper": limits(exp.helper),
        "service": limits(exp.service),
        "override_caps": dict(exp.override_caps),
        "dns": dns,
        "images": {**vars(exp.images), "insecure_registries": list(exp.images.insecure_registries)},
        "oom_report": exp.oom_report,
        "cgroup": exp.cgroup,
        "service_oom_reported": exp.service_oom_reported,
        "silent_step_s": exp.silent_step_s,
        "output_limit_kb": exp.output_limit_kb,
        "log_burst_kib": exp.log_burst_kib,
        "dind_tls": exp.dind_tls,
        "capacity": None if exp.capacity is None else dict(vars(exp.capacity)),
        "cache": None if exp.cache is None else dict(vars(exp.cache)),
        "registry": None if exp.registry is None else dict(vars(exp.registry)),
        "disruption": None if exp.disruption is None else dict(vars(exp.disruption)),
        **{name: expect_pod.summarize(getattr(exp, name)) for name in expect_pod.TABLES},
    }


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Ctx:
    """Where a value came from, so every error names the file and the dotted key."""

    file: str
    key: str

    def sub(self, key: str) -> _Ctx:
        return _Ctx(self.file, f"{self.key}.{key}")

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key} {problem}")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _str(ctx: _Ctx, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(f"= {_describe(value)} is not allowed; it must be a non-empty string")
    return value


def _str_list(ctx: _Ctx, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ctx.error(f"= {_describe(value)} is not allowed; it must be a list of non-empty strings")
    return tuple(value)


def _seconds(ctx: _Ctx, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ctx.error(f"= {_describe(value)} is not allowed; it must be a positive number of seconds")
    return float(value)


def _bytes(ctx: _Ctx, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
        raise ctx.error(f"= {_describe(value)} is not allowed; it must be a number of bytes, at least 1024")
    return value


def _kilobytes(ctx: _Ctx, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ctx.error(
            f"= {_describe(value)} is not allowed; it must be a whole number of kilobytes, at least 1"
        )
    return value


def _bool(ctx: _Ctx, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(f"= {_describe(value)} is not allowed; it must be true or false")
    return value


def _quantity(ctx: _Ctx, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ctx.error(
            f'= {_describe(value)} is not allowed; it must be a Kubernetes quantity such as "500m" or "512Mi"'
        )
    text = str(value).strip()
    if not is_quantity(text):
        raise ctx.error(
            f'= {value!r} is not a Kubernetes quantity; use a form such as "500m", "2", "512Mi" or "1Gi"'
        )
    return text


def _choice(*allowed: str) -> Callable[[_Ctx, Any], str]:
    def check(ctx: _Ctx, value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ctx.error(f"= {value!r} is not allowed; use one of: {', '.join(allowed)}")
        return value

    return check


def _table(ctx: _Ctx, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(f"= {_describe(value)} is not allowed; it must be a table")
    return value


def _check_keys(ctx: _Ctx, table: Mapping[str, Any], allowed: Mapping[str, Any] | tuple[str, ...]) -> None:
    names = sorted(allowed)
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(
                f"{ctx.file}: unknown key {ctx.key}.{key}{hint}; allowed keys: {', '.join(names)}"
            )


def _required(ctx: _Ctx, table: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in table:
        raise ConfigError(f"{ctx.file}: missing required key {ctx.key}.{key}; it must be {what}")
    return table[key]


def _limits(ctx: _Ctx, value: Any) -> Limits:
    table = _table(ctx, value)
    _check_keys(ctx, table, tuple(Limits.__dataclass_fields__))
    return Limits(**{key: _quantity(ctx.sub(key), val) for key, val in table.items()})


_CAP_KEYS = tuple(
    f"{prefix}{res}_{kind}"
    for prefix in ("", "helper_", "service_", "pod_")
    for res in ("cpu", "memory", "ephemeral_storage")
    for kind in ("limit", "request")
)


def _caps(ctx: _Ctx, value: Any) -> dict[str, str]:
    table = _table(ctx, value)
    _check_keys(ctx, table, _CAP_KEYS)
    return {key: _quantity(ctx.sub(key), val) for key, val in table.items()}


def _dns_policy(ctx: _Ctx, value: Any) -> str:
    if isinstance(value, str):
        if value in DNS_POLICIES:
            return value
        if value.lower() in _DNS_ALIASES:
            return _DNS_ALIASES[value.lower()]
    raise ctx.error(f"= {value!r} is not a DNS policy; use one of: {', '.join(DNS_POLICIES)}")


def _dns_option(ctx: _Ctx, item: Any) -> tuple[str, str | None]:
    # Both the resolv.conf form "ndots:2" and the runner's {name = "ndots", value = "2"} are accepted.
    if isinstance(item, str) and item.strip():
        name, sep, val = item.partition(":")
        return name.strip(), (val.strip() if sep else None)
    key = item.get("name") if isinstance(item, dict) else None
    if isinstance(item, dict) and set(item) <= {"name", "value"} and isinstance(key, str):
        value = item.get("value")
        if value is None or isinstance(value, str | int):
            return key, None if value is None else str(value)
    raise ctx.error(
        f'has the entry {item!r} which is not allowed; each option must be "name:value", "name" '
        f'or {{name = "...", value = "..."}}'
    )


def _dns(ctx: _Ctx, value: Any) -> DnsExpect:
    table = _table(ctx, value)
    _check_keys(ctx, table, ("policy", "nameservers", "searches", "options"))
    policy = _dns_policy(ctx.sub("policy"), _required(ctx, table, "policy", ", ".join(DNS_POLICIES)))
    options = table.get("options", [])
    if not isinstance(options, list):
        raise ctx.sub("options").error(f"= {_describe(options)} is not allowed; it must be a list")
    return DnsExpect(
        policy=policy,
        nameservers=_str_list(ctx.sub("nameservers"), table.get("nameservers", [])),
        searches=_str_list(ctx.sub("searches"), table.get("searches", [])),
        options=tuple(_dns_option(ctx.sub("options"), item) for item in options),
    )


def _images(ctx: _Ctx, value: Any) -> ImagesExpect:
    table = _table(ctx, value)
    _check_keys(ctx, table, tuple(ImagesExpect.__dataclass_fields__))
    kwargs: dict[str, Any] = {}
    for key, val in table.items():
        sub = ctx.sub(key)
        kwargs[key] = _str_list(sub, val) if key == "insecure_registries" else _str(sub, val)
    return ImagesExpect(**kwargs)


def _capacity(ctx: _Ctx, value: Any) -> CapacityExpect:
    table = _table(ctx, value)
    _check_keys(ctx, table, tuple(CapacityExpect.__dataclass_fields__))
    tag = _str(ctx.sub("runner_tag"), _required(ctx, table, "runner_tag", "the tag only that runner carries"))
    limit = _required(ctx, table, "limit", "the runner's limit (or concurrent), a whole number, at least 1")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ctx.sub("limit").error(
            f"= {_describe(limit)} is not allowed; it must be the runner's limit (or concurrent), a whole number, "
            "at least 1 (a runner without a limit cannot show its cap: leave expect.capacity out)"
        )
    within = table.get("schedule_within_s")
    return CapacityExpect(
        runner_tag=tag,
        limit=limit,
        schedule_within_s=None if within is None else _seconds(ctx.sub("schedule_within_s"), within),
    )


def _cache(ctx: _Ctx, value: Any) -> CacheExpect:
    table = _table(ctx, value)
    _check_keys(ctx, table, tuple(CacheExpect.__dataclass_fields__))
    tag = _required(
        ctx, table, "other_runner_tag", "the tag only the second runner sharing the cache carries"
    )
    return CacheExpect(other_runner_tag=_str(ctx.sub("other_runner_tag"), tag))


def _registry(ctx: _Ctx, value: Any) -> RegistryExpect:
    table = _table(ctx, value)
    _check_keys(ctx, table, tuple(RegistryExpect.__dataclass_fields__))
    address = _str(
        ctx.sub("address"),
        _required(
            ctx, table, "address", 'the registry to push to, host[:port] (GitLab\'s own: "$CI_REGISTRY")'
        ),
    )
    repository = _str(
        ctx.sub("repository"),
        _required(
            ctx, table, "repository", "the image path under it the probe may push to, e.g. group/project/rc"
        ),
    )
    names = {}
    for key in ("user_variable", "password_variable"):
        if key in table:
            name = _str(ctx.sub(key), table[key])
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ctx.sub(key).error(
                    f"= {_describe(name)} is not a CI/CD variable name (letters, digits and _, as GitLab takes them)"
                )
            names[key] = name
    return RegistryExpect(address=address.strip("/"), repository=repository.strip("/"), **names)


def _disruption(ctx: _Ctx, value: Any) -> DisruptionExpect:
    table = _table(ctx, value)
    _check_keys(ctx, table, tuple(DisruptionExpect.__dataclass_fields__))
    flag = _required(
        ctx,
        table,
        "pod_disruption_budget",
        "whether the runner's config.toml sets pod_disruption_budget = true",
    )
    tag = table.get("runner_tag")
    return DisruptionExpect(
        pod_disruption_budget=_bool(ctx.sub("pod_disruption_budget"), flag),
        runner_tag=None if tag is None else _str(ctx.sub("runner_tag"), tag),
    )


_EXPECT_FIELDS: dict[str, Callable[[_Ctx, Any], Any]] = {
    "builds_dir": _str,
    "cleanup_deadline_s": _seconds,
    "pickup_deadline_s": _seconds,
    "pending_deadline_s": _seconds,
    "poll_timeout_s": _seconds,
    "run_deadline_s": _seconds,
    "build": _limits,
    "helper": _limits,
    "service": _limits,
    "override_caps": _caps,
    "dns": _dns,
    "images": _images,
    "oom_report": _choice("container", "process"),
    "cgroup": _choice("auto", "v1", "v2"),
    "service_oom_reported": _bool,
    "dind_tls": _bool,
    "silent_step_s": _seconds,
    "output_limit_kb": _kilobytes,
    "log_burst_kib": _kilobytes,
    "capacity": _capacity,
    "cache": _cache,
    "registry": _registry,
    "disruption": _disruption,
}


def expectations_from_table(file: str, key: str, table: Mapping[str, Any]) -> Expectations:
    """Validated Expectations from an expect TABLE (errors name FILE and KEY, as a profile's do)."""
    return _expectations(_Ctx(file, key), dict(table))


def _expectations(ctx: _Ctx, value: Any) -> Expectations:
    table = _table(ctx, value)
    _check_keys(ctx, table, _EXPECT_FIELDS)
    return Expectations(**{key: _EXPECT_FIELDS[key](ctx.sub(key), val) for key, val in table.items()})


def _pod_table(name: str) -> Callable[[_Ctx, Any], Any]:
    return lambda ctx, value: expect_pod.parse_table(name, ctx.file, ctx.key, value)


_EXPECT_FIELDS.update({name: _pod_table(name) for name in expect_pod.TABLES})


_CLUSTER_KEYS = (
    "gitlab_url",
    "gitlab_ca_file",
    "token_env",
    "token_file",
    "project",
    "runner_tags",
    "kubeconfig",
    "kube_context",
    "namespace",
    "expect",
    "allow_insecure_http",
    "max_trace_bytes",
    "max_artifact_bytes",
    "runner_config",
    "runner_name",
)


def _optional_str(ctx: _Ctx, table: Mapping[str, Any], key: str) -> str | None:
    return _str(ctx.sub(key), table[key]) if key in table else None


def _expect_set(
    file: str, table: Mapping[str, Any], origins: Mapping[str, tuple[str, str]] | None
) -> dict[str, tuple[str, str]]:
    """Which expect keys the table sets: from the profile FILE, unless ORIGINS (a provider's) says otherwise."""
    expect = table.get("expect")
    found = {key: ("profile", file) for key, _ in flat_keys(expect if isinstance(expect, dict) else {})}
    found.update(origins or {})
    return found


def _cluster(
    ctx: _Ctx,
    name: str,
    value: Any,
    base: Path | None = None,
    origins: Mapping[str, tuple[str, str]] | None = None,
) -> Profile:
    table = _table(ctx, value)
    for key, owner in PROVIDER_KEYS.items():
        if key in table:
            raise ConfigError(
                f"{ctx.file}: {ctx.key}.{key} is a setting of the built-in {owner!r} cluster only and has no "
                f"effect here; remove it from {ctx.key}"
            )
    _check_keys(ctx, table, _CLUSTER_KEYS)
    url = _str(ctx.sub("gitlab_url"), _required(ctx, table, "gitlab_url", "the GitLab base URL"))
    if not url.startswith(("http://", "https://")):
        raise ctx.sub("gitlab_url").error(f"= {url!r} is not allowed; it must start with http:// or https://")
    insecure = _bool(ctx.sub("allow_insecure_http"), table.get("allow_insecure_http", False))
    problem = insecure_http(url, insecure)
    if problem:
        raise ctx.sub("gitlab_url").error(
            f"= {url!r} {problem}; use https:// or set {ctx.key}.allow_insecure_http = true"
        )
    if "token_env" not in table and "token_file" not in table:
        raise ConfigError(
            f"{ctx.file}: missing required key {ctx.key}.token_env (or token_file); "
            "it must name the environment variable (or file) that holds the GitLab token"
        )
    ca_file = _path(_optional_str(ctx, table, "gitlab_ca_file"), base)
    runner_config = _runner_config(ctx, table, base)
    runner_name = _optional_str(ctx, table, "runner_name")
    if runner_name is not None and runner_config is None:
        raise ctx.sub("runner_name").error(
            "is set but runner_config is not; set runner_config to the runner's config.toml or remove runner_name"
        )
    if ca_file is not None and not url.startswith("https://"):
        raise ctx.sub("gitlab_ca_file").error(
            f"is set but gitlab_url {url!r} is not https://; remove gitlab_ca_file or use the https URL"
        )
    return Profile(
        name=name,
        gitlab_url=url.rstrip("/"),
        gitlab_ca_file=ca_file,
        token_env=_optional_str(ctx, table, "token_env"),
        token_file=_path(_optional_str(ctx, table, "token_file"), base),
        project=_str(ctx.sub("project"), _required(ctx, table, "project", "the scratch project path")),
        runner_tags=_str_list(ctx.sub("runner_tags"), table.get("runner_tags", [])),
        kubeconfig=_path(_optional_str(ctx, table, "kubeconfig"), base),
        kube_context=_optional_str(ctx, table, "kube_context"),
        namespace=_str(ctx.sub("namespace"), _required(ctx, table, "namespace", "the job namespace")),
        expect=_expectations(ctx.sub("expect"), table.get("expect", {})),
        source=ctx.file,
        allow_insecure_http=insecure,
        max_trace_bytes=_bytes(
            ctx.sub("max_trace_bytes"), table.get("max_trace_bytes", DEFAULT_MAX_TRACE_BYTES)
        ),
        max_artifact_bytes=_bytes(
            ctx.sub("max_artifact_bytes"), table.get("max_artifact_bytes", DEFAULT_MAX_ARTIFACT_BYTES)
        ),
        expect_set=_expect_set(ctx.file, table, origins),
        runner_config=runner_config,
        runner_name=runner_name,
    )


def _runner_config(ctx: _Ctx, table: Mapping[str, Any], base: Path | None) -> str | None:
    """The runner_config reference checked for form (reading it is runner_config.resolve's job), paths made
    absolute as the profile's other paths are."""
    from pytest_runnerconf.runner_config import parse_ref  # that module builds on this one

    value = _optional_str(ctx, table, "runner_config")
    if value is None:
        return None
    ref = parse_ref(f"{ctx.file}: {ctx.key}.runner_config", value, base)
    return ref.path if ref.path is not None else value.strip()


def insecure_http(url: str, allowed: bool) -> str | None:
    """Why URL may not be used (http:// to a host other than loopback), or None."""
    parts = urlsplit(url)
    if parts.scheme != "http" or allowed:
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return "would send the token unencrypted over http:// to a host other than this machine"


def _path(value: str | None, base: Path | None) -> str | None:
    """A path of the profile: relative ones are relative to the profile file's directory, as ini paths are."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(base / path) if base is not None and not path.is_absolute() else str(path)


# ---------------------------------------------------------------- loading


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: profile file not found; create it (see runnerconf.example.toml) "
            "or use --runner-cluster=local"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the profile file ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None


def _clusters(file: str, doc: dict[str, Any]) -> dict[str, Any]:
    _check_keys(_Ctx(file, "(top level)"), doc, ("clusters",))
    clusters = doc.get("clusters", {})
    return _table(_Ctx(file, "clusters"), clusters)


def profile_from_table(
    name: str,
    table: Mapping[str, Any],
    source: str,
    base: Path | None = None,
    *,
    origins: Mapping[str, tuple[str, str]] | None = None,
) -> Profile:
    """A validated Profile from one [clusters.NAME] table (what target providers build theirs with).

    Relative kubeconfig and token_file paths are relative to BASE (the current directory when None).
    Every expect key the table sets counts as set in SOURCE; ORIGINS maps dotted expect keys to another
    (origin, file), for values a provider filled in itself (origin "target").

    Raises:
        ConfigError: naming SOURCE and the dotted key of the first problem.
    """
    return _cluster(_Ctx(source, f"clusters.{name}"), name, dict(table), base, origins)


def cluster_tables(path: Path) -> dict[str, Any]:
    """The [clusters] tables of a profile file (unvalidated beyond being tables)."""
    return _clusters(str(path), _read_toml(path))


def load_profile(
    path: Path | None, name: str, *, looked_in: tuple[Path, ...] = (), targets: tuple[str, ...] = ()
) -> Profile:
    """Read cluster NAME from a runnerconf.toml.

    Args:
        path: the profile file, or None when none was found.
        looked_in: where a profile file was looked for (for the message when there is none).
        targets: cluster names that target providers offer without a profile (listed as known names).

    Raises:
        ConfigError: the file is missing or malformed, or has no cluster NAME.
    """
    if path is None:
        where = ", ".join(str(p) for p in looked_in) or PROFILE_FILE
        offered = f"; built-in clusters: {', '.join(sorted(targets))}" if targets else ""
        raise ConfigError(
            f"no profile file defines cluster {name!r} (looked in: {where}){offered}; create one from "
            "runnerconf.example.toml or point --runnerconf-config at it"
        )
    clusters = cluster_tables(path)
    if name not in clusters:
        known = sorted({*clusters, *targets})
        raise ConfigError(
            f"{path}: no cluster {name!r} under [clusters]; known clusters: {', '.join(known) or 'none'}"
        )
    return _cluster(_Ctx(str(path), f"clusters.{name}"), name, clusters[name], path.resolve().parent)


def known_clusters(path: Path | None, targets: tuple[str, ...] = ()) -> list[str]:
    """Cluster names a --runner-cluster value may take (for help text and errors)."""
    names = set(targets)
    if path is not None and path.is_file():
        names.update(_clusters(str(path), _read_toml(path)))
    return sorted(names)


def find_profile_file(explicit: Path | None, cwd: Path) -> tuple[Path | None, tuple[Path, ...]]:
    """The profile file to use and the places looked in.

    Order: the explicit --runnerconf-config path (which must exist), ./runnerconf.toml in the invocation
    directory, then $XDG_CONFIG_HOME/runnerconf/runnerconf.toml (default ~/.config).
    """
    if explicit is not None:
        return (explicit if explicit.is_file() else None), (explicit,)
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidates = (cwd / PROFILE_FILE, config_home / "runnerconf" / PROFILE_FILE)
    return next((c for c in candidates if c.is_file()), None), candidates
