"""The emulated runner's config.toml: typed, validated, with the real runner's feature-flag defaults."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_runnerconf.local import quantity
from pytest_runnerconf.local.errors import LocalConfigError
from pytest_runnerconf.local.model import ServiceDef
from pytest_runnerconf.local.tracewriter import DEFAULT_OUTPUT_LIMIT

# helpers/featureflags/flags.go at v18.11.4: every flag and its default.
FEATURE_FLAG_DEFAULTS: dict[str, bool] = {
    "FF_TEST_FEATURE": False,
    "FF_NETWORK_PER_BUILD": False,
    "FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY": False,
    "FF_USE_DIRECT_DOWNLOAD": True,
    "FF_SKIP_NOOP_BUILD_STAGES": True,
    "FF_USE_FASTZIP": False,
    "FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR": False,
    "FF_ENABLE_BASH_EXIT_CODE_CHECK": False,
    "FF_USE_WINDOWS_LEGACY_PROCESS_STRATEGY": False,
    "FF_USE_NEW_BASH_EVAL_STRATEGY": False,
    "FF_USE_LEGACY_BASH_EVAL": False,
    "FF_USE_POWERSHELL_PATH_RESOLVER": False,
    "FF_USE_DYNAMIC_TRACE_FORCE_SEND_INTERVAL": False,
    "FF_SCRIPT_SECTIONS": False,
    "FF_ENABLE_JOB_CLEANUP": False,
    "FF_KUBERNETES_HONOR_ENTRYPOINT": False,
    "FF_POSIXLY_CORRECT_ESCAPES": False,
    "FF_RESOLVE_FULL_TLS_CHAIN": False,
    "FF_DISABLE_POWERSHELL_STDIN": False,
    "FF_USE_POD_ACTIVE_DEADLINE_SECONDS": True,
    "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION": False,
    "FF_SET_PERMISSIONS_BEFORE_CLEANUP": True,
    "FF_SECRET_RESOLVING_FAILS_IF_MISSING": True,
    "FF_PRINT_POD_EVENTS": False,
    "FF_USE_GIT_BUNDLE_URIS": True,
    "FF_USE_GIT_NATIVE_CLONE": False,
    "FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR": False,
    "FF_USE_INIT_WITH_DOCKER_EXECUTOR": False,
    "FF_LOG_IMAGES_CONFIGURED_FOR_JOB": False,
    "FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO": True,
    "FF_CLEAN_UP_FAILED_CACHE_EXTRACT": False,
    "FF_USE_WINDOWS_JOB_OBJECT": False,
    "FF_TIMESTAMPS": True,
    "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION": False,
    "FF_USE_LEGACY_GCS_CACHE_ADAPTER": False,
    "FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR": False,
    "FF_USE_LEGACY_S3_CACHE_ADAPTER": False,
    "FF_GIT_URLS_WITHOUT_TOKENS": False,
    "FF_WAIT_FOR_POD_TO_BE_REACHABLE": False,
    "FF_MASK_ALL_DEFAULT_TOKENS": True,
    "FF_EXPORT_HIGH_CARDINALITY_METRICS": False,
    "FF_USE_FLEETING_ACQUIRE_HEARTBEATS": False,
    "FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY": True,
    "FF_USE_ADAPTIVE_REQUEST_CONCURRENCY": True,
    "FF_USE_GITALY_CORRELATION_ID": True,
    "FF_USE_GIT_PROACTIVE_AUTH": False,
    "FF_HASH_CACHE_KEYS": False,
    "FF_ENABLE_JOB_INPUTS_INTERPOLATION": True,
    "FF_USE_JOB_ROUTER": False,
    "FF_SCRIPT_TO_STEP_MIGRATION": False,
    "FF_CONCRETE": False,
}

# helpers/shorten_token.go (v18.2+): prefixes stripped in this order, then 9 characters kept.
_TOKEN_PREFIXES = (
    re.compile(r"^glrt-(t[123]_)?|^t[123]_|^glrtr-"),
    re.compile(r"^glcbt-"),
    re.compile(r"^GR[0-9A-Fa-f]{7}"),
)
SHORT_TOKEN_LEN = 9


def short_token(token: str) -> str:
    """The runner's ShortenToken (v18.2 and later)."""
    for prefix in _TOKEN_PREFIXES:
        token = prefix.sub("", token, count=1)
    return token[:SHORT_TOKEN_LEN]


@dataclass(frozen=True)
class DNSConfig:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[tuple[str, str | None], ...] = ()

    def is_empty(self) -> bool:
        return not (self.nameservers or self.searches or self.options)


@dataclass(frozen=True)
class HostAlias:
    ip: str
    hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmptyDirVolume:
    """`[[runners.kubernetes.volumes.empty_dir]]` (common/config.go KubernetesEmptyDir, v18.11)."""

    name: str
    mount_path: str
    sub_path: str = ""
    medium: str = ""
    size_limit: str = ""


@dataclass(frozen=True)
class SecurityProfile:
    """A `seccomp_profile` / `app_armor_profile` table (v18.11): type and, for Localhost, the profile."""

    type: str = ""
    localhost_profile: str = ""


@dataclass(frozen=True)
class ContainerSecurityContext:
    """One `*_container_security_context` table; None means "not set" (the global value applies)."""

    privileged: bool | None = None
    allow_privilege_escalation: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    selinux_type: str = ""
    proc_mount: str = ""
    seccomp_profile: SecurityProfile | None = None
    app_armor_profile: SecurityProfile | None = None
    cap_add: tuple[str, ...] | None = None
    cap_drop: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PodSecurityContext:
    fs_group: int | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    supplemental_groups: tuple[int, ...] = ()
    selinux_type: str = ""
    seccomp_profile: SecurityProfile | None = None
    app_armor_profile: SecurityProfile | None = None

    def is_empty(self) -> bool:
        return self == PodSecurityContext()


@dataclass(frozen=True)
class KubernetesSection:
    """`[runners.kubernetes]`; field names are the TOML keys; quantities stay strings, as in the runner."""

    namespace: str = ""
    image: str = ""
    helper_image: str = ""
    privileged: bool | None = None
    allow_privilege_escalation: bool | None = None
    cpu_limit: str = ""
    cpu_request: str = ""
    memory_limit: str = ""
    memory_request: str = ""
    ephemeral_storage_limit: str = ""
    ephemeral_storage_request: str = ""
    cpu_limit_overwrite_max_allowed: str = ""
    cpu_request_overwrite_max_allowed: str = ""
    memory_limit_overwrite_max_allowed: str = ""
    memory_request_overwrite_max_allowed: str = ""
    ephemeral_storage_limit_overwrite_max_allowed: str = ""
    ephemeral_storage_request_overwrite_max_allowed: str = ""
    helper_cpu_limit: str = ""
    helper_cpu_request: str = ""
    helper_memory_limit: str = ""
    helper_memory_request: str = ""
    helper_ephemeral_storage_limit: str = ""
    helper_ephemeral_storage_request: str = ""
    helper_cpu_limit_overwrite_max_allowed: str = ""
    helper_cpu_request_overwrite_max_allowed: str = ""
    helper_memory_limit_overwrite_max_allowed: str = ""
    helper_memory_request_overwrite_max_allowed: str = ""
    helper_ephemeral_storage_limit_overwrite_max_allowed: str = ""
    helper_ephemeral_storage_request_overwrite_max_allowed: str = ""
    service_cpu_limit: str = ""
    service_cpu_request: str = ""
    service_memory_limit: str = ""
    service_memory_request: str = ""
    service_ephemeral_storage_limit: str = ""
    service_ephemeral_storage_request: str = ""
    service_cpu_limit_overwrite_max_allowed: str = ""
    service_cpu_request_overwrite_max_allowed: str = ""
    service_memory_limit_overwrite_max_allowed: str = ""
    service_memory_request_overwrite_max_allowed: str = ""
    service_ephemeral_storage_limit_overwrite_max_allowed: str = ""
    service_ephemeral_storage_request_overwrite_max_allowed: str = ""
    pod_cpu_limit: str = ""
    pod_cpu_request: str = ""
    pod_memory_limit: str = ""
    pod_memory_request: str = ""
    pod_cpu_limit_overwrite_max_allowed: str = ""
    pod_cpu_request_overwrite_max_allowed: str = ""
    pod_memory_limit_overwrite_max_allowed: str = ""
    pod_memory_request_overwrite_max_allowed: str = ""
    dns_policy: str = ""
    dns_config: DNSConfig = DNSConfig()
    host_aliases: tuple[HostAlias, ...] = ()
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    pod_labels_overwrite_allowed: str = ""
    pod_annotations_overwrite_allowed: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    node_selector_overwrite_allowed: str = ""
    # Which `kubernetes: user:` IDs a job may ask for (numeric strings; root only when listed).
    allowed_users: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    # Images a job may name (doublestar patterns); empty = any. The runner's own image and helper always pass.
    allowed_images: tuple[str, ...] = ()
    allowed_services: tuple[str, ...] = ()
    # Docker-style names ("always", "if-not-present", "never"); a single string is accepted as in the runner.
    pull_policy: tuple[str, ...] | str = ()
    allowed_pull_policies: tuple[str, ...] = ()
    # "key=value" (Equal) or "key" (Exists) -> effect, as getPodTolerations reads them
    node_tolerations: dict[str, str] = field(default_factory=dict)
    node_tolerations_overwrite_allowed: str = ""
    # [runners.kubernetes.affinity] as written (snake_case keys, the runner's KubernetesAffinity structs)
    affinity: dict[str, Any] = field(default_factory=dict)
    priority_class_name: str = ""
    runtime_class_name: str = ""
    service_account: str = ""
    scheduler_name: str = ""
    poll_interval: int = 3
    poll_timeout: int = 180
    cleanup_grace_period_seconds: int | None = None
    pod_termination_grace_period_seconds: int | None = None
    image_pull_secrets: tuple[str, ...] = ()
    use_service_account_image_pull_secrets: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    logs_base_dir: str = ""
    scripts_base_dir: str = ""
    services: tuple[ServiceDef, ...] = ()
    # [runners.kubernetes.volumes]: only its empty_dir list (the other kinds need storage this cluster lacks)
    volumes: tuple[EmptyDirVolume, ...] = ()
    build_container_security_context: ContainerSecurityContext = ContainerSecurityContext()
    helper_container_security_context: ContainerSecurityContext = ContainerSecurityContext()
    service_container_security_context: ContainerSecurityContext = ContainerSecurityContext()
    init_permissions_container_security_context: ContainerSecurityContext = ContainerSecurityContext()
    pod_security_context: PodSecurityContext = PodSecurityContext()
    # v18.11.0 on: a PodDisruptionBudget (minAvailable 1) for each job pod, so a drain cannot evict it.
    pod_disruption_budget: bool = False


@dataclass(frozen=True)
class CacheS3Section:
    """`[runners.cache.s3]` (cache/cacheconfig/cacheconfig.go CacheS3Config, v18.11): the keys used here."""

    server_address: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)  # a credential: never in a repr, a log or a trace
    bucket_name: str = ""
    bucket_location: str = ""
    insecure: bool = False


@dataclass(frozen=True)
class CacheSection:
    """`[runners.cache]` (cacheconfig.Config): the distributed cache the helper archives to and restores from."""

    type: str = ""
    path: str = ""
    shared: bool = False
    s3: CacheS3Section | None = None


# TOML key -> field of the two tables above (the runner's toml tags are CamelCase)
_CACHE_KEYS = {"Type": "type", "Path": "path", "Shared": "shared"}
_S3_KEYS = {
    "ServerAddress": ("server_address", str),
    "AccessKey": ("access_key", str),
    "SecretKey": ("secret_key", str),
    "BucketName": ("bucket_name", str),
    "BucketLocation": ("bucket_location", str),
    "Insecure": ("insecure", bool),
}


@dataclass(frozen=True)
class RunnerSection:
    """One `[[runners]]` entry."""

    name: str
    url: str
    token: str = field(repr=False)
    executor: str
    builds_dir: str = ""
    # Kilobytes of trace the runner keeps (common/config.go OutputLimit); 0 (unset) is the 4096 KiB default.
    output_limit: int = 0
    # Jobs this entry runs at once (common/config.go Limit); 0 (unset) is no limit but the global concurrent.
    limit: int = 0
    environment: tuple[str, ...] = ()
    feature_flags: dict[str, bool] = field(default_factory=dict)
    kubernetes: KubernetesSection = KubernetesSection()
    cache: CacheSection | None = None

    @property
    def short_token(self) -> str:
        return short_token(self.token)


@dataclass(frozen=True)
class RunnerConfig:
    """The config.toml. `runner` is the entry this view is for (the first one unless for_runner() picked
    another): every per-runner setting the emulation reads comes from it; `runners` is every entry."""

    concurrent: int
    runner: RunnerSection
    check_interval: int = 0
    source: str = "<text>"
    runners: tuple[RunnerSection, ...] = ()

    def entries(self) -> tuple[RunnerSection, ...]:
        return self.runners or (self.runner,)

    def for_runner(self, section: RunnerSection) -> RunnerConfig:
        """The same config seen by another [[runners]] entry (as a real runner's worker sees its own)."""
        return dataclasses.replace(self, runner=section)

    def feature_flag(self, name: str) -> bool:
        """The config's value, else the runner's default; an unknown flag is off."""
        return self.runner.feature_flags.get(name, FEATURE_FLAG_DEFAULTS.get(name, False))

    @property
    def builds_dir(self) -> str:
        return self.runner.builds_dir or "/builds"

    @property
    def output_limit_bytes(self) -> int:
        """network/trace.go setupLogLimit: output_limit KiB, the default when unset (0)."""
        return self.runner.output_limit * 1024 if self.runner.output_limit != 0 else DEFAULT_OUTPUT_LIMIT


# --- loading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    source: str
    table: str


def load_runner_config(source: str | Path, substitutions: dict[str, str] | None = None) -> RunnerConfig:
    """Read a config.toml from a path (Path or an existing file name) or from TOML text."""
    text, name = _read_source(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LocalConfigError(f"{name}: malformed TOML: {exc}") from exc
    data = _substitute(data, substitutions or {})
    return _runner_config(data, name)


def _read_source(source: str | Path) -> tuple[str, str]:
    if isinstance(source, Path):
        return _read_file(source), str(source)
    if "\n" not in source and source.endswith(".toml"):
        return _read_file(Path(source)), source
    return source, "<config text>"


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalConfigError(f"{path}: cannot read runner config: {exc.strerror}") from exc


def _substitute(value: Any, subs: dict[str, str]) -> Any:
    """Placeholders such as "@local-dns" are replaced in every string, so the file never names real hosts."""
    if isinstance(value, str):
        for key, replacement in subs.items():
            value = value.replace(key, replacement)
        return value
    if isinstance(value, list):
        return [_substitute(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, subs) for k, v in value.items()}
    return value


def _runner_config(data: dict[str, Any], source: str) -> RunnerConfig:
    ctx = _Ctx(source, "top level")
    runners = data.get("runners")
    if not isinstance(runners, list) or not runners or not all(isinstance(r, dict) for r in runners):
        raise LocalConfigError(f"{source}: expected at least one [[runners]] table")
    sections = tuple(_runner_section(raw, source) for raw in runners)
    for attr in ("name", "token"):
        values = [getattr(s, attr) for s in sections]
        if len(set(values)) != len(values):
            # Each entry is its own runner: the pod names, labels and GitLab's runner record come from these.
            raise LocalConfigError(
                f"{source}: two [[runners]] tables have the same {attr}; give each its own"
            )
    return RunnerConfig(
        concurrent=_typed(ctx, "concurrent", data.get("concurrent", 1), int),
        check_interval=_typed(ctx, "check_interval", data.get("check_interval", 0), int),
        runner=sections[0],
        source=source,
        runners=sections,
    )


def _runner_section(raw: dict[str, Any], source: str) -> RunnerSection:
    ctx = _Ctx(source, "[[runners]]")
    for key in ("name", "url", "token", "executor"):
        if key not in raw:
            raise LocalConfigError(f"{source}: [[runners]] {key} is required")
    flags = _typed(ctx, "feature_flags", raw.get("feature_flags", {}), dict[str, bool])
    kube_raw = _typed(ctx, "kubernetes", raw.get("kubernetes", {}), dict)
    return RunnerSection(
        name=_typed(ctx, "name", raw["name"], str),
        url=_typed(ctx, "url", raw["url"], str),
        token=_typed(ctx, "token", raw["token"], str),
        executor=_typed(ctx, "executor", raw["executor"], str),
        builds_dir=_typed(ctx, "builds_dir", raw.get("builds_dir", ""), str),
        output_limit=_typed(ctx, "output_limit", raw.get("output_limit", 0), int),
        limit=_typed(ctx, "limit", raw.get("limit", 0), int),
        environment=_typed(ctx, "environment", raw.get("environment", []), tuple[str, ...]),
        feature_flags=flags,
        kubernetes=_kubernetes_section(kube_raw, source),
        cache=_cache_section(raw.get("cache"), source),
    )


def _cache_section(raw: Any, source: str) -> CacheSection | None:
    if raw is None:
        return None
    ctx = _Ctx(source, "[runners.cache]")
    table = _typed(ctx, "cache", raw, dict)
    values: dict[str, Any] = {}
    for key, attr in _CACHE_KEYS.items():
        if key in table:
            values[attr] = _typed(ctx, key, table[key], bool if attr == "shared" else str)
    s3_raw = table.get("s3")
    if s3_raw is not None:
        s3_ctx = _Ctx(source, "[runners.cache.s3]")
        s3_table = _typed(ctx, "s3", s3_raw, dict)
        s3_values = {
            attr: _typed(s3_ctx, key, s3_table[key], kind)
            for key, (attr, kind) in _S3_KEYS.items()
            if key in s3_table
        }
        values["s3"] = CacheS3Section(**s3_values)
    return CacheSection(**values)


_NESTED = {"dns_config", "host_aliases", "services", "pod_security_context", "affinity", "volumes"}
_QUANTITY_KEY = re.compile(r"(cpu|memory|ephemeral_storage)_(limit|request)(_overwrite_max_allowed)?$")


def _kubernetes_section(raw: dict[str, Any], source: str) -> KubernetesSection:
    ctx = _Ctx(source, "[runners.kubernetes]")
    hints = typing.get_type_hints(KubernetesSection)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            continue  # the real runner ignores keys it does not know; so do we
        if key in _NESTED:
            values[key] = _nested(ctx, key, value)
        elif hints[key] is ContainerSecurityContext:
            values[key] = _container_security_context(_Ctx(source, f"[runners.kubernetes.{key}]"), value)
        else:
            values[key] = _typed(ctx, key, value, hints[key])
            if _QUANTITY_KEY.search(key) and values[key]:
                _check_quantity(ctx, key, values[key])
    return KubernetesSection(**values)


def _nested(ctx: _Ctx, key: str, value: Any) -> Any:
    sub = _Ctx(ctx.source, f"[runners.kubernetes.{key}]")
    if key == "dns_config":
        return _dns_config(sub, _typed(ctx, key, value, dict))
    if key == "host_aliases":
        return tuple(_host_alias(sub, item) for item in _typed(ctx, key, value, list[dict]))
    if key == "services":
        return tuple(_service(sub, item) for item in _typed(ctx, key, value, list[dict]))
    if key == "affinity":
        return _typed(ctx, key, value, dict)
    if key == "volumes":
        table = _typed(ctx, key, value, dict)
        sub = _Ctx(ctx.source, "[[runners.kubernetes.volumes.empty_dir]]")
        return tuple(
            _empty_dir(sub, item) for item in _typed(sub, "empty_dir", table.get("empty_dir", []), list[dict])
        )
    return _pod_security_context(sub, _typed(ctx, key, value, dict))


def _dns_config(ctx: _Ctx, raw: dict[str, Any]) -> DNSConfig:
    options = []
    for opt in _typed(ctx, "options", raw.get("options", []), list[dict]):
        name = _typed(ctx, "options.name", opt.get("name"), str)
        value = _typed(ctx, "options.value", opt.get("value"), str | None)
        options.append((name, value))
    return DNSConfig(
        nameservers=_typed(ctx, "nameservers", raw.get("nameservers", []), tuple[str, ...]),
        searches=_typed(ctx, "searches", raw.get("searches", []), tuple[str, ...]),
        options=tuple(options),
    )


def _host_alias(ctx: _Ctx, raw: dict[str, Any]) -> HostAlias:
    return HostAlias(
        ip=_typed(ctx, "ip", raw.get("ip"), str),
        hostnames=_typed(ctx, "hostnames", raw.get("hostnames", []), tuple[str, ...]),
    )


def _empty_dir(ctx: _Ctx, raw: dict[str, Any]) -> EmptyDirVolume:
    return EmptyDirVolume(
        name=_typed(ctx, "name", raw.get("name"), str),
        mount_path=_typed(ctx, "mount_path", raw.get("mount_path"), str),
        sub_path=_typed(ctx, "sub_path", raw.get("sub_path", ""), str),
        medium=_typed(ctx, "medium", raw.get("medium", ""), str),
        size_limit=_typed(ctx, "size_limit", raw.get("size_limit", ""), str),
    )


def _service(ctx: _Ctx, raw: dict[str, Any]) -> ServiceDef:
    return ServiceDef(
        name=_typed(ctx, "name", raw.get("name"), str),
        alias=_typed(ctx, "alias", raw.get("alias", ""), str),
        command=_typed(ctx, "command", raw.get("command", []), tuple[str, ...]),
        entrypoint=_typed(ctx, "entrypoint", raw.get("entrypoint", []), tuple[str, ...]),
    )


def _profile(ctx: _Ctx, key: str, raw: Any) -> SecurityProfile | None:
    if raw is None:
        return None
    table = _typed(ctx, key, raw, dict)
    return SecurityProfile(
        type=_typed(ctx, f"{key}.type", table.get("type", ""), str),
        localhost_profile=_typed(ctx, f"{key}.localhost_profile", table.get("localhost_profile", ""), str),
    )


def _security_values(ctx: _Ctx, raw: dict[str, Any], cls: type) -> dict[str, Any]:
    """The scalar keys of a security-context table, typed; profile tables become SecurityProfile."""
    values: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if name.startswith("cap_") or name not in raw:
            continue
        if name.endswith("_profile"):
            values[name] = _profile(ctx, name, raw[name])
        else:
            values[name] = _typed(ctx, name, raw[name], hint)
    return values


def _container_security_context(ctx: _Ctx, raw: Any) -> ContainerSecurityContext:
    raw = _typed(ctx, "(table)", raw, dict)
    caps = _typed(ctx, "capabilities", raw.get("capabilities", {}), dict)
    values = _security_values(ctx, raw, ContainerSecurityContext)
    return ContainerSecurityContext(
        **values,
        cap_add=_typed(ctx, "capabilities.add", caps.get("add"), tuple[str, ...] | None),
        cap_drop=_typed(ctx, "capabilities.drop", caps.get("drop"), tuple[str, ...] | None),
    )


def _pod_security_context(ctx: _Ctx, raw: dict[str, Any]) -> PodSecurityContext:
    return PodSecurityContext(**_security_values(ctx, raw, PodSecurityContext))


def _check_quantity(ctx: _Ctx, key: str, value: str) -> None:
    try:
        quantity.parse(value)
    except quantity.QuantityError as exc:
        raise LocalConfigError(
            f"{ctx.source}: {ctx.table} {key} = {value!r} is not a Kubernetes quantity "
            f'(e.g. "500m", "2", "512Mi"): {exc}'
        ) from exc


# --- type checking ---------------------------------------------------------------------------------------


def _typed(ctx: _Ctx, key: str, value: Any, expected: Any) -> Any:
    """Check a TOML value against a type hint and convert lists to tuples; errors name file, key and type."""
    ok, converted = _convert(value, expected)
    if not ok:
        shown = "<hidden>" if "token" in key or "secret" in key.lower() else repr(value)
        raise LocalConfigError(
            f"{ctx.source}: {ctx.table} {key} must be {_describe(expected)}, "
            f"got {type(value).__name__} {shown}"
        )
    return converted


def _convert(value: Any, expected: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(expected):
            ok, converted = _convert(value, option)
            if ok:
                return True, converted
        return False, None
    if expected is type(None):
        return value is None, None
    if origin is tuple:
        return _convert_seq(value, typing.get_args(expected)[0], tuple)
    if origin is list:
        return _convert_seq(value, typing.get_args(expected)[0], list)
    if origin is dict:
        key_t, val_t = typing.get_args(expected)
        if not isinstance(value, dict):
            return False, None
        pairs = [(_convert(k, key_t), _convert(v, val_t)) for k, v in value.items()]
        if not all(k[0] and v[0] for k, v in pairs):
            return False, None
        return True, {k[1]: v[1] for k, v in pairs}
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, expected), value


def _convert_seq(value: Any, item_t: Any, kind: type) -> tuple[bool, Any]:
    if not isinstance(value, list):
        return False, None
    items = [_convert(v, item_t) for v in value]
    if not all(ok for ok, _ in items):
        return False, None
    return True, kind(v for _, v in items)


def _describe(expected: Any, plural: bool = False) -> str:
    origin = typing.get_origin(expected)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a, plural) for a in typing.get_args(expected))
    if expected is type(None):
        return "absent"
    if origin in (tuple, list):
        return f"{'arrays' if plural else 'an array'} of {_describe(typing.get_args(expected)[0], True)}"
    if origin is dict:
        return f"{'tables' if plural else 'a table'} of {_describe(typing.get_args(expected)[1], True)}"
    names = {str: "string", int: "integer", bool: "boolean (true/false)", dict: "table"}
    name = names.get(expected, getattr(expected, "__name__", str(expected)))
    if plural:
        return name.replace("boolean", "booleans") if expected is bool else f"{name}s"
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"
