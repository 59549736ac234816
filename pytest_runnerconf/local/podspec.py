"""Job -> Kubernetes pod spec, exactly as the GitLab Runner v18.11 Kubernetes executor builds it."""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_runnerconf.local import quantity
from pytest_runnerconf.local.model import JobPayload, ServiceDef
from pytest_runnerconf.local.runner_config import (
    FEATURE_FLAG_DEFAULTS,
    ContainerSecurityContext,
    RunnerConfig,
    SecurityProfile,
)

RUNNER_VERSION = "18.11.4"
RUNNER_REVISION = "5b1ba4d9"
RUNNER_ARCH = "linux/amd64"

DEFAULT_HELPER_IMAGE = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v18.11.4"

# shells/bash.go BashDetectShellScript; the executor runs a non-login shell, so "$@" becomes "".
_BASH_DETECT_TEMPLATE = """if [ -x /usr/local/bin/bash ]; then
\texec /usr/local/bin/bash $@
elif [ -x /usr/bin/bash ]; then
\texec /usr/bin/bash $@
elif [ -x /bin/bash ]; then
\texec /bin/bash $@
elif [ -x /usr/local/bin/sh ]; then
\texec /usr/local/bin/sh $@
elif [ -x /usr/bin/sh ]; then
\texec /usr/bin/sh $@
elif [ -x /bin/sh ]; then
\texec /bin/sh $@
elif [ -x /busybox/sh ]; then
\texec /busybox/sh $@
else
\techo shell not found
\texit 1
fi

"""
BASH_DETECT_SHELL_SCRIPT = _BASH_DETECT_TEMPLATE.replace("$@", "")
# The copy saved as <scripts>/detect_shell_script keeps "$@": it is run with the stage script as argument.
BASH_DETECT_WITH_ARGS = _BASH_DETECT_TEMPLATE

PODSPEC_FAULTS = frozenset(
    {"no-host-aliases", "ignore-dns-config", "overrides-ignored", "pod-labels-dropped"}
)

_NAME_SUFFIX_CHARS = string.ascii_lowercase + string.digits
_NAME_MAX = 63
_NAME_SUFFIX_LEN = 8

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")
_DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_SUBDOMAIN_FMT}$")
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)

_RUNNER_LABEL_NAMESPACE = re.compile(r"(^|.*\.)runner.gitlab.com(/.*|$)")

_DNS_POLICIES = {
    "": "ClusterFirst",
    "none": "None",
    "default": "Default",
    "cluster-first": "ClusterFirst",
    "cluster-first-with-host-net": "ClusterFirstWithHostNet",
}


class PreparationError(Exception):
    """The runner refused the job while preparing it; the message is the runner's own text.

    stage is where the real runner fails: "prepare_executor" (Prepare, retried 3 times, then a system failure)
    or "prepare_script" (pod creation).
    """

    def __init__(
        self,
        message: str,
        stage: str = "prepare_executor",
        lines: tuple[str, ...] = (),
        *,
        retry: bool = True,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.lines = lines  # what the runner logs before the error (e.g. the list of allowed images)
        self.retry = retry  # False for a BuildError, which Prepare does not retry


@dataclass
class PodPlan:
    pod: dict[str, Any]
    secret: dict[str, Any] | None
    service_containers: list[tuple[ServiceDef, str]]
    project_dir: str
    scripts_dir: str
    logs_dir: str
    # Lines the runner prints in prepare_executor (overrides) and when it creates the pod (prepare_script).
    executor_log_lines: list[str] = field(default_factory=list)
    pod_log_lines: list[str] = field(default_factory=list)
    feature_flags: dict[str, bool] = field(default_factory=dict)
    # "Using effective pull policy of [...] for container ..." (preparePullManager, in Prepare)
    pull_policy_lines: list[str] = field(default_factory=list)

    @property
    def log_lines(self) -> list[str]:
        return self.executor_log_lines + self.pod_log_lines

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def legacy(self) -> bool:
        """FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY: stages by exec, no logs volume."""
        return bool(self.feature_flags.get("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY"))


# --- names and validation --------------------------------------------------------------------------------


def make_rfc1123_compatible(name: str) -> str:
    """helpers/dns MakeRFC1123Compatible."""
    name = re.sub(r"[^-a-z0-9]", "", name.lower())
    name = re.sub(r"^[^a-z0-9]+", "", name)
    return name[:_NAME_MAX]


def project_unique_name(short: str, project_id: int, project_concurrent_id: int) -> str:
    return make_rfc1123_compatible(f"runner-{short}-project-{project_id}-concurrent-{project_concurrent_id}")


def resource_name(pattern: str, rand: Callable[[], str]) -> str:
    """generateNameForK8sResources: prefix cut so that prefix + '-' + 8 chars fits in 63."""
    return f"{pattern[: _NAME_MAX - _NAME_SUFFIX_LEN - 1]}-{rand()}"


def random_suffix() -> str:
    return "".join(random.choice(_NAME_SUFFIX_CHARS) for _ in range(_NAME_SUFFIX_LEN))


def sanitize_label(value: str) -> str:
    """sanitizeLabel (executors/kubernetes/util.go): trimmed again after the cut to 63 characters."""
    value = re.sub(r"[^A-Za-z0-9\-_.]", "_", value)
    return value.strip("-_.")[:63].strip("-_.")


def dns1123_subdomain_errors(name: str) -> list[str]:
    """k8s.io/apimachinery IsDNS1123Subdomain, with its messages."""
    errs = []
    if len(name) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.match(name):
        errs.append(
            f"{_DNS1123_SUBDOMAIN_MSG} (e.g. 'example.com', regex used for validation is "
            f"'{_DNS1123_SUBDOMAIN_FMT}')"
        )
    return errs


def is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS1123_LABEL_RE.match(name))


# github.com/distribution/reference ReferenceRegexp (v0.6.0), used by SplitNameAndVersion.
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|[-]+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[(?:[a-fA-F0-9:]+)\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$", re.ASCII)
_NO_PORT_RE = re.compile(r"^(.*?)(|:[0-9]+)(|/.*)$", re.DOTALL)


def image_aliases(image: str) -> list[str]:
    """SplitNameAndVersion: drop tag and registry port; '/' -> '__' and (if different) '/' -> '-'."""
    match = _REFERENCE_RE.match(image)
    if not match:
        return []
    no_port = _NO_PORT_RE.match(match.group(1))
    assert no_port is not None  # the pattern matches every string
    service = no_port.group(1) + no_port.group(3)
    alias = service.replace("/", "__")
    alternative = service.replace("/", "-")
    return [alias] if alias == alternative else [alias, alternative]


def explicit_aliases(alias: str) -> list[str]:
    """Image.Aliases(): split on commas and whitespace."""
    return alias.replace(",", " ").split()


def go_duration(seconds: int) -> str:
    """time.Duration.String() for whole seconds, e.g. 3600 -> "1h0m0s"."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def go_quote(value: str) -> str:
    """Go's %q for the printable strings that appear in these messages."""
    return json.dumps(value, ensure_ascii=False)


# --- variables -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Var:
    key: str
    value: str
    file: bool = False


def go_expand(value: str, lookup: Callable[[str], str]) -> str:
    """os.Expand: $NAME, ${NAME}, $$ and the shell special variables, as the runner expands variables."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 >= len(value):
            out.append(ch)
            i += 1
            continue
        name, width = _shell_name(value[i + 1 :])
        if name:
            out.append(lookup(name))
        elif width == 0:
            out.append("$")
        i += 1 + width
    return "".join(out)


def _shell_name(rest: str) -> tuple[str, int]:
    special = "*#$@!?-0123456789"
    if rest[0] == "{":
        if len(rest) > 2 and rest[1] in special and rest[2] == "}":
            return rest[1], 3
        end = rest.find("}", 1)
        if end == 1:
            return "", 2
        if end == -1:
            return "", 1
        return rest[1:end], end + 1
    if rest[0] in special:
        return rest[0], 1
    width = 0
    while width < len(rest) and (rest[width].isascii() and (rest[width].isalnum() or rest[width] == "_")):
        width += 1
    return rest[:width], width


def _lookup_in(variables: list[_Var]) -> Callable[[str], str]:
    tmp_dir = next((v.value for v in reversed(variables) if v.key == "RUNNER_TEMP_PROJECT_DIR"), "")

    def lookup(key: str) -> str:
        if key == "$":
            return "$"
        if key in "*#@!?0123456789" and len(key) == 1:
            return ""
        for var in reversed(variables):
            if var.key == key:
                return f"{tmp_dir}/{key}" if var.file else var.value
        return ""

    return lookup


def _expand_all(variables: list[_Var]) -> list[_Var]:
    lookup = _lookup_in(variables)
    return [_Var(v.key, go_expand(v.value, lookup), v.file) for v in variables]


def _env(variables: list[_Var]) -> list[dict[str, str]]:
    """buildVariables: a repeated key keeps its first position and takes the last value."""
    lookup = _lookup_in(variables)
    env: list[dict[str, str]] = []
    index: dict[str, int] = {}
    for var in variables:
        value = lookup(var.key) if var.file else var.value
        entry = {"name": var.key, "value": value} if value else {"name": var.key}
        if var.key in index:
            env[index[var.key]] = entry
        else:
            index[var.key] = len(env)
            env.append(entry)
    return env


def _truthy(value: str) -> bool | None:
    """spec.Variables.Bool: Go ParseBool, else an integer equal to 1."""
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    try:
        return int(value) == 1
    except ValueError:
        return None


def resolve_feature_flags(cfg: RunnerConfig, job: JobPayload) -> dict[str, bool]:
    """Defaults, then job variables, then config.toml, which wins."""
    flags = dict(FEATURE_FLAG_DEFAULTS)
    for name in flags:
        raw = job.variable(name)
        parsed = _truthy(raw) if raw else None
        if parsed is not None:
            flags[name] = parsed
    flags.update(cfg.runner.feature_flags)
    return flags


@dataclass(frozen=True)
class _JobContext:
    job: JobPayload
    cfg: RunnerConfig
    flags: dict[str, bool]
    project_dir: str
    concurrent_id: int
    project_concurrent_id: int


def _all_variables(ctx: _JobContext) -> list[_Var]:
    """Build.GetAllVariables() restricted to public/internal ones, in the runner's order, expanded."""
    job, cfg = ctx.job, ctx.cfg
    out = [_Var(name, "true" if on else "false") for name, on in ctx.flags.items()]
    if job.image:
        out.append(_Var("CI_JOB_IMAGE", job.image))
    out.append(_Var("CI_RUNNER_SHORT_TOKEN", cfg.runner.short_token))
    for entry in cfg.runner.environment:
        key, sep, value = entry.partition("=")
        if sep:
            out.append(_Var(key, value))
    out += [
        _Var("CI_BUILDS_DIR", cfg.builds_dir),
        _Var("CI_PROJECT_DIR", ctx.project_dir),
        _Var("CI_CONCURRENT_ID", str(ctx.concurrent_id)),
        _Var("CI_CONCURRENT_PROJECT_ID", str(ctx.project_concurrent_id)),
        _Var("CI_SERVER", "yes"),
        _Var("CI_JOB_STATUS", "running"),
        _Var("CI_JOB_TIMEOUT", str(_timeout(job))),
    ]
    out += [
        _Var(v.key, v.value, v.file) for v in job.variables if v.key not in FEATURE_FLAG_DEFAULTS and v.public
    ]
    out += [
        _Var("CI_DISPOSABLE_ENVIRONMENT", "true"),
        _Var("CI_RUNNER_VERSION", RUNNER_VERSION),
        _Var("CI_RUNNER_REVISION", RUNNER_REVISION),
        _Var("CI_RUNNER_EXECUTABLE_ARCH", RUNNER_ARCH),
        _Var("RUNNER_TEMP_PROJECT_DIR", ctx.project_dir + ".tmp"),
    ]
    return _expand_all(out)


def _timeout(job: JobPayload) -> int:
    return job.timeout_s if job.timeout_s > 0 else 3600


# --- resources and overrides -----------------------------------------------------------------------------

_KINDS = (("cpu", "CPU"), ("memory", "Memory"), ("ephemeral_storage", "EphemeralStorage"))
_RESOURCE_KEYS = {"cpu": "cpu", "memory": "memory", "ephemeral_storage": "ephemeral-storage"}


@dataclass
class _Resources:
    requests: dict[str, str]
    limits: dict[str, str]

    def as_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.limits:
            out["limits"] = _quantities(self.limits)
        if self.requests:
            out["requests"] = _quantities(self.requests)
        return out


def _quantities(values: dict[str, str]) -> dict[str, str]:
    return {_RESOURCE_KEYS[k]: quantity.canonicalize(v) for k, v in values.items() if v}


@dataclass
class _Overrides:
    """Evaluates KUBERNETES_* variables against their *_overwrite_max_allowed caps, logging as the runner."""

    cfg: RunnerConfig
    enabled: bool
    lines: list[str] = field(default_factory=list)

    def group(
        self, cfg_prefix: str, field_prefix: str, kind: str, variables: dict[str, str], base: dict[str, str]
    ) -> dict[str, str]:
        """One ResourceList (limits or requests) of one container group; kind is "limit" or "request"."""
        kube = self.cfg.runner.kubernetes
        out: dict[str, str] = {}
        for key, label in _KINDS:
            setting = f"{cfg_prefix}{key}_{kind}"
            if not hasattr(kube, setting):
                continue  # the pod-level group has no ephemeral storage
            cap = getattr(kube, f"{setting}_overwrite_max_allowed")
            requested = variables.get(f"KUBERNETES_{setting.upper()}", "") if self.enabled else ""
            value = self._one(f"{field_prefix}{label}{kind.title()}", base.get(key, ""), cap, requested)
            if value:
                _check_quantity(key, value)
                out[key] = value
        return out

    def _one(self, field_name: str, value: str, cap: str, requested: str) -> str:
        if not cap or not requested:
            return value
        try:
            q_cap, q_req = quantity.parse(cap), quantity.parse(requested)
        except quantity.QuantityError as exc:
            raise PreparationError(f"parsing resource limit: {go_quote(str(exc))}") from exc
        if q_req > q_cap:
            raise PreparationError(
                f"the resource {go_quote(field_name)} requested {go_quote(requested)} "
                f"is higher than limit allowed {go_quote(cap)}"
            )
        self.lines.append(f"{go_quote(field_name)} overwritten with {go_quote(requested)}")
        return requested

    def mapping(
        self,
        field_name: str,
        values: dict[str, str],
        regex: str,
        variables: list[_Var],
        prefix: str,
        split: Callable[[str], tuple[str, str]] | None = None,
    ) -> dict[str, str]:
        """evaluateMapOverwrite: KUBERNETES_POD_LABELS_*/ANNOTATIONS_* = "k=v" (or SPLIT's form), allowed by a
        regex."""
        # overrides-ignored stands for a runner that ignores the resource overrides only (RC-RES-*).
        if not regex:
            return dict(values)
        out = dict(values)
        for var in variables:
            if not var.key.startswith(prefix):
                continue
            if not re.search(regex, var.value):
                raise PreparationError(
                    f"couldn't prepare overwrites: provided value {go_quote(var.value)} "
                    f"does not match {go_quote(regex)}"
                )
            if split is not None:
                key, value = split(var.value)
            else:
                key, sep, value = var.value.partition("=")
                if not sep:
                    raise PreparationError(
                        f'couldn\'t prepare overwrites: provided value {go_quote(var.value)} does not match "k=v"'
                    )
            out[key] = value
            self.lines.append(f"{go_quote(field_name)} {go_quote(key)} overwritten with {go_quote(value)}")
        return out


def _check_quantity(key: str, value: str) -> None:
    try:
        quantity.parse(value)
    except quantity.QuantityError as exc:
        name = {"ephemeral_storage": "ephemeralStorage"}.get(key, key)
        raise PreparationError(
            f"parsing resource {go_quote(name)} with value {go_quote(value)}: {go_quote(str(exc))}"
        ) from exc


def _config_values(cfg: RunnerConfig, prefix: str, kind: str) -> dict[str, str]:
    kube = cfg.runner.kubernetes
    return {key: getattr(kube, f"{prefix}{key}_{kind}", "") for key, _ in _KINDS}


@dataclass
class _PlannedResources:
    build: _Resources
    helper: _Resources
    services: dict[str, _Resources]
    pod: _Resources


def _guarded(prefix: str, ov: _Overrides, *args: Any) -> dict[str, str]:
    """Run one override evaluation, prefixing a refusal with the runner's wrapping text."""
    try:
        return ov.group(*args)
    except PreparationError as exc:
        raise PreparationError(f"{prefix}: {exc}") from exc


def _plan_resources(
    ov: _Overrides, job_vars: dict[str, str], services: list[tuple[ServiceDef, str]]
) -> _PlannedResources:
    """Same evaluation order (and so log order) as createOverwrites, then the per-service pass."""
    planned: dict[str, dict[str, str]] = {}
    for prefix, label, what in (
        ("", "", "build"),
        ("service_", "Service", "service"),
        ("helper_", "Helper", "helper"),
        ("pod_", "Pod", "Pod"),
    ):
        for kind in ("request", "limit"):
            planned[f"{prefix}{kind}"] = _guarded(
                f"couldn't prepare overwrites: invalid {what} {kind}s specified",
                ov,
                prefix,
                label,
                kind,
                job_vars,
                _config_values(ov.cfg, prefix, kind),
            )
    per_service: dict[str, _Resources] = {}
    wrap = "couldn't prepare explicit service overwrites: invalid service"
    for service, name in sorted(services, key=lambda item: item[1]):
        svc_vars = {v.key: v.value for v in service.variables}
        limits = _guarded(
            f"{wrap} limits specified", ov, "service_", "Service", "limit", svc_vars, planned["service_limit"]
        )
        requests = _guarded(
            f"{wrap} requests specified",
            ov,
            "service_",
            "Service",
            "request",
            svc_vars,
            planned["service_request"],
        )
        per_service[name] = _Resources(requests, limits)
    return _PlannedResources(
        build=_Resources(planned["request"], planned["limit"]),
        helper=_Resources(planned["helper_request"], planned["helper_limit"]),
        services=per_service,
        pod=_Resources(planned["pod_request"], planned["pod_limit"]),
    )


# --- images and pull policies ----------------------------------------------------------------------------

_DOCKER_PULL_POLICIES = {"always": "Always", "if-not-present": "IfNotPresent", "never": "Never"}
ALLOWED_IMAGES_DOCS = "https://docs.gitlab.com/runner/configuration/advanced-configuration/"


def doublestar_match(pattern: str, name: str) -> bool:
    """github.com/bmatcuk/doublestar Match for image names: * and ? stay within a path segment, ** crosses them,
    {a,b} alternatives and [...] classes as in the library."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "{":
            end = pattern.find("}", i)
            if end == -1:
                return False  # ErrBadPattern: doublestar reports no match
            out.append("(?:" + "|".join(re.escape(a) for a in pattern[i + 1 : end].split(",")) + ")")
            i = end + 1
            continue
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                return False
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body[:1] in "!^" and body else body) + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), name) is not None


def verify_allowed_image(
    image: str, option: str, allowed: tuple[str, ...], internal: tuple[str, ...]
) -> None:
    """common.VerifyAllowedImage: a listed pattern or an internal image passes; an empty list allows any.

    Raises PreparationError("disallowed image") carrying the lines the runner logs first."""
    if any(doublestar_match(p, image) for p in allowed) or image in internal or not allowed:
        return
    lines = (
        "",
        f"ERROR: The {go_quote(image)} image is not present on list of allowed {option}:",
        *(f"- {p}" for p in allowed),
        "",
        f"Please check runner's allowed_images configuration: {ALLOWED_IMAGES_DOCS}",
    )
    raise PreparationError("setting up build pod: disallowed image", stage="prepare_script", lines=lines)


def _k8s_policies(names: tuple[str, ...] | str, where: str) -> list[str]:
    """ConvertFromDockerPullPolicy; an unknown name is the runner's conversion error."""
    out = []
    for name in (names,) if isinstance(names, str) else names:
        if name == "":
            out.append("")
        elif name in _DOCKER_PULL_POLICIES:
            out.append(_DOCKER_PULL_POLICIES[name])
        else:
            raise PreparationError(
                f"converting pull policy for container {go_quote(where)}: unsupported pull_policy {go_quote(name)}"
            )
    return out


def effective_pull_policies(
    cfg: RunnerConfig, requested: dict[str, tuple[str, ...]]
) -> tuple[dict[str, list[str]], list[str]]:
    """preparePullManager: per container the job's pull_policy, else config.toml's (GetPullPolicies: [""] when
    none), limited to allowed_pull_policies (ComputeEffectivePullPolicies); and the runner's log lines."""
    kube = cfg.runner.kubernetes
    configured = _k8s_policies(kube.pull_policy, "config") or [""]
    allowed = _k8s_policies(kube.allowed_pull_policies, "config") or configured
    out: dict[str, list[str]] = {}
    lines = []
    for name, ci in requested.items():
        policies = _k8s_policies(ci, name) or configured
        effective = [p for p in policies if p in allowed]
        if not effective:
            source = (
                "GitLab pipeline config"
                if ci
                else "Runner config"
                if kube.pull_policy
                else "Runner config (default)"
            )
            raise PreparationError(
                f"invalid pull policy for container {go_quote(name)}: pull_policy ([{' '.join(policies)}]) "
                f"defined in {source} is not one of the allowed_pull_policies ([{' '.join(allowed)}])",
                retry=False,
            )
        out[name] = effective
        lines.append(f"Using effective pull policy of [{' '.join(effective)}] for container {name}")
    return out, lines


# --- services and host aliases ---------------------------------------------------------------------------


def name_services(services: list[ServiceDef]) -> list[tuple[ServiceDef, str]]:
    """prepareOptions/getServiceName: first unused explicit alias that is a DNS-1123 label, else svc-<n>."""
    used: set[str] = set()
    index = 0
    named = []
    for service in services:
        if not service.name:
            continue
        name = ""
        for alias in explicit_aliases(service.alias):
            if alias in used:
                continue
            used.add(alias)
            if is_dns1123_label(alias):
                name = alias
                break
        if not name:
            name = f"svc-{index}"
            index += 1
        named.append((service, name))
    return named


def service_hostnames(services: list[tuple[ServiceDef, str]]) -> list[str]:
    """createServicesHostAlias over the services in container-name order; an invalid explicit alias fails."""
    hostnames: list[str] = []
    for service, _ in sorted(services, key=lambda item: item[1]):
        hostnames += [a for a in image_aliases(service.name) if not dns1123_subdomain_errors(a)]
        for alias in explicit_aliases(service.alias):
            errors = dns1123_subdomain_errors(alias)
            if errors:
                raise PreparationError(
                    f"setting up build pod: provided host alias {alias} for service {service.name} "
                    f"is invalid DNS. {', '.join(errors)}",
                    stage="prepare_script",
                )
            hostnames.append(alias)
    return hostnames


def _host_aliases(cfg: RunnerConfig, services: list[tuple[ServiceDef, str]]) -> list[dict[str, Any]]:
    aliases = []
    hostnames = service_hostnames(services)
    if hostnames:
        aliases.append({"ip": "127.0.0.1", "hostnames": hostnames})
    for alias in cfg.runner.kubernetes.host_aliases:
        aliases.append({"ip": alias.ip, "hostnames": list(alias.hostnames)})
    return aliases


# --- containers ------------------------------------------------------------------------------------------


def _security_context(cfg: RunnerConfig, own: ContainerSecurityContext) -> dict[str, Any]:
    """GetContainerSecurityContext: NET_RAW dropped by default, cap_add removes, cap_drop wins."""
    kube = cfg.runner.kubernetes
    enabled = {"NET_RAW": False}
    enabled.update(dict.fromkeys(kube.cap_add, True))
    enabled.update(dict.fromkeys(kube.cap_drop, False))
    # The runner builds these lists from a Go map (random order); sorted here so specs compare stably.
    add = sorted(c for c, on in enabled.items() if on) or None
    drop = sorted(c for c, on in enabled.items() if not on) or None
    if own.cap_add is not None:
        add = list(own.cap_add)
    if own.cap_drop is not None:
        drop = list(own.cap_drop)
    caps = {k: v for k, v in (("add", add), ("drop", drop)) if v is not None}
    ctx: dict[str, Any] = {"capabilities": caps}
    optional = {
        "privileged": own.privileged if own.privileged is not None else kube.privileged,
        "allowPrivilegeEscalation": (
            own.allow_privilege_escalation
            if own.allow_privilege_escalation is not None
            else kube.allow_privilege_escalation
        ),
        "runAsUser": own.run_as_user,
        "runAsGroup": own.run_as_group,
        "runAsNonRoot": own.run_as_non_root,
        "readOnlyRootFilesystem": own.read_only_root_filesystem,
        "procMount": _proc_mount(own.proc_mount),
        "seLinuxOptions": {"type": own.selinux_type} if own.selinux_type else None,
        "seccompProfile": _profile(own.seccomp_profile),
        "appArmorProfile": _profile(own.app_armor_profile),
    }
    ctx.update({k: v for k, v in optional.items() if v is not None})
    return ctx


_ID_SOURCES = ("container security context", "pod security context", "job configuration")


def _validate_id(kind: str, id_str: str, allowed: tuple[str, ...], *, check: bool = True) -> int:
    """parseAndValidateID + isUserOrGroupAllowed (v18.11.1+: IDs compared numerically, so "00" is root).

    Raises ValueError with the runner's text."""
    if id_str == "":
        return -1
    try:
        value = int(id_str, 10)
    except ValueError:
        raise ValueError(
            f"failed to parse {kind}: strconv.ParseInt: parsing {go_quote(id_str)}: invalid syntax"
        ) from None
    if value < 0:
        raise ValueError(f"failed to parse {kind}: negative values not allowed")
    noun = "user" if kind == "UID" else "group"
    listed = {int(e) for e in allowed if re.fullmatch(r"[+-]?\d+", e)}
    if check and ((value == 0 and 0 not in listed) or (value != 0 and allowed and value not in listed)):
        raise ValueError(
            f"validating {kind}: {noun} {go_quote(id_str)} is not in the allowed list: [{' '.join(allowed)}]"
        )
    return value


def container_ids(
    cfg: RunnerConfig,
    own: ContainerSecurityContext,
    job_user: str,
    container: str,
    lines: list[str],
    faults: frozenset[str] = frozenset(),
) -> tuple[int, int]:
    """getContainerUIDGID: the container's context, else the pod's, else the job's validated user/group."""
    kube = cfg.runner.kubernetes
    psc = kube.pod_security_context
    uid_str, _, gid_str = job_user.partition(":")
    picked = []
    for kind, id_str, mine, pods, allowed in (
        ("UID", uid_str, own.run_as_user, psc.run_as_user, kube.allowed_users),
        ("GID", gid_str, own.run_as_group, psc.run_as_group, kube.allowed_groups),
    ):
        if mine is not None:
            value, source = mine, _ID_SOURCES[0]
        elif pods is not None:
            value, source = pods, _ID_SOURCES[1]
        else:
            source = _ID_SOURCES[2]
            try:
                # allowed-users-ignored: a broken runner that accepts any requested ID
                value = _validate_id(kind, id_str, allowed, check="allowed-users-ignored" not in faults)
            except ValueError as exc:
                value = -1
                lines.append(
                    f"WARNING: Error parsing '{kind.lower()}' from image options for container "
                    f"{go_quote(container)}, using the configured security context: {exc}"
                )
        if source != _ID_SOURCES[2] and id_str:
            what = "user" if kind == "UID" else "group"
            lines.append(
                f"Overriding {what} for container {go_quote(container)} to {go_quote(id_str)} is not allowed: "
                f"{what} is set to {value} in {source}"
            )
        picked.append(value)
    return picked[0], picked[1]


def _security_with_ids(
    cfg: RunnerConfig,
    own: ContainerSecurityContext,
    job_user: str,
    container: str,
    lines: list[str],
    faults: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """getSecurityContextWithUIDGID: the container context with the picked runAsUser/runAsGroup."""
    context = _security_context(cfg, own)
    uid, gid = container_ids(cfg, own, job_user, container, lines, faults)
    if uid > -1:
        context["runAsUser"] = uid
    if gid > -1:
        context["runAsGroup"] = gid
    return context


def _proc_mount(value: str) -> str | None:
    """getProcMount: title-cased; only Default and Unmasked reach the spec (others: a manager-log error)."""
    title = value.strip().title()
    return title if title in ("Default", "Unmasked") else None


_PROFILE_TYPES = ("RuntimeDefault", "Unconfined", "Localhost")


def _profile(profile: SecurityProfile | None) -> dict[str, str] | None:
    """toAPI of seccomp/AppArmor profiles (v18.11): an invalid type, or Localhost without a profile, is dropped."""
    if profile is None or not profile.type or profile.type not in _PROFILE_TYPES:
        return None
    if profile.type == "Localhost":
        if not profile.localhost_profile:
            return None
        return {"type": "Localhost", "localhostProfile": profile.localhost_profile}
    return {"type": profile.type}


def _container(
    name: str,
    image: str,
    *,
    command: list[str],
    args: list[str],
    env: list[dict[str, str]],
    resources: _Resources,
    mounts: list[dict[str, str]],
    security: dict[str, Any],
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if env:
        container["env"] = env
    container["resources"] = resources.as_k8s()
    container["volumeMounts"] = [dict(m) for m in mounts]
    container["securityContext"] = security
    container["stdin"] = True
    return container


def _init_permissions(
    cfg: RunnerConfig,
    logs_dir: str,
    scripts_dir: str,
    resources: _Resources,
    mounts: list[dict[str, str]],
    *,
    attach: bool,
    dumb_init: bool,
) -> dict[str, Any]:
    """buildPermissionsInitContainer: opens output.log to every user (attach) and copies dumb-init (flag)."""
    log_file = f"{logs_dir}/output.log"
    steps = [f"touch {log_file} && (chmod 777 {log_file} || exit 0)"] if attach else []
    if dumb_init:
        steps.append(f"cp /usr/bin/dumb-init {scripts_dir}")
    return {
        "name": "init-permissions",
        "image": _helper_image(cfg),
        "command": ["sh", "-c", ";\n".join(steps)],
        "resources": resources.as_k8s(),
        "volumeMounts": [dict(m) for m in mounts],
        "securityContext": _security_context(
            cfg, cfg.runner.kubernetes.init_permissions_container_security_context
        ),
    }


def _helper_image(cfg: RunnerConfig) -> str:
    return cfg.runner.kubernetes.helper_image or DEFAULT_HELPER_IMAGE


def _base_dir(default: str, configured: str, job: JobPayload) -> str:
    base = configured.rstrip("/\\") + default if configured else default
    return f"{base}-{job.project_id}-{job.id}"


# --- the pod ---------------------------------------------------------------------------------------------


def _labels(ctx: _JobContext, unique: str, pod_labels: dict[str, str]) -> dict[str, str]:
    job, cfg = ctx.job, ctx.cfg
    labels = {
        "pod": sanitize_label(unique),
        "project.runner.gitlab.com/id": str(job.project_id),
        # The runner reads these predefined variables; the payload fields stand in if GitLab sent none.
        "project.runner.gitlab.com/namespace-id": sanitize_label(
            job.variable("CI_PROJECT_NAMESPACE_ID", str(job.namespace_id))
        ),
        "project.runner.gitlab.com/name": sanitize_label(job.project_name),
        "project.runner.gitlab.com/namespace": sanitize_label(
            job.variable("CI_PROJECT_NAMESPACE", job.namespace_path)
        ),
        "project.runner.gitlab.com/root-namespace": sanitize_label(
            job.variable("CI_PROJECT_ROOT_NAMESPACE", job.root_namespace)
        ),
        "job.runner.gitlab.com/pod": sanitize_label(unique),
        "manager.runner.gitlab.com/name": sanitize_label(cfg.runner.name),
        "manager.runner.gitlab.com/id-short": sanitize_label(cfg.runner.short_token),
    }
    expand = _lookup_for_job(job)
    for key, value in pod_labels.items():
        if not _RUNNER_LABEL_NAMESPACE.match(key):  # users may not set runner.gitlab.com labels
            labels[key] = sanitize_label(go_expand(value, expand))
    return labels


def _lookup_for_job(job: JobPayload) -> Callable[[str], str]:
    return _lookup_in([_Var(v.key, v.value, v.file) for v in job.variables])


def _annotations(job: JobPayload, pod_annotations: dict[str, str]) -> dict[str, str]:
    annotations = {
        "job.runner.gitlab.com/id": str(job.id),
        "job.runner.gitlab.com/url": job.job_url,
        "job.runner.gitlab.com/sha": job.sha,
        "job.runner.gitlab.com/before_sha": job.before_sha,
        "job.runner.gitlab.com/ref": job.ref,
        "job.runner.gitlab.com/name": job.name,
        "job.runner.gitlab.com/timeout": go_duration(_timeout(job)),
        "project.runner.gitlab.com/id": str(job.project_id),
    }
    expand = _lookup_for_job(job)
    # No namespace check here: config annotations may overwrite the runner's, as the docs say.
    annotations.update({k: go_expand(v, expand) for k, v in pod_annotations.items()})
    return annotations


def _dns(cfg: RunnerConfig, faults: frozenset[str], lines: list[str]) -> dict[str, Any]:
    kube = cfg.runner.kubernetes
    if "ignore-dns-config" in faults:
        return {"dnsPolicy": "ClusterFirst"}
    out: dict[str, Any] = {}
    policy = _DNS_POLICIES.get(kube.dns_policy)
    if policy is None:
        lines.append(
            "WARNING: falling back to cluster's default policy: "
            f"unsupported kubernetes-dns-policy: {go_quote(kube.dns_policy)}"
        )
    else:
        out["dnsPolicy"] = policy
    if not kube.dns_config.is_empty():
        dns_config: dict[str, Any] = {}
        if kube.dns_config.nameservers:
            dns_config["nameservers"] = list(kube.dns_config.nameservers)
        if kube.dns_config.searches:
            dns_config["searches"] = list(kube.dns_config.searches)
        if kube.dns_config.options:
            dns_config["options"] = [
                {"name": n} if v is None else {"name": n, "value": v} for n, v in kube.dns_config.options
            ]
        out["dnsConfig"] = dns_config
    return out


def _pod_security_context(cfg: RunnerConfig) -> dict[str, Any] | None:
    psc = cfg.runner.kubernetes.pod_security_context
    if psc.is_empty():
        return None
    values = {
        "fsGroup": psc.fs_group,
        "runAsGroup": psc.run_as_group,
        "runAsNonRoot": psc.run_as_non_root,
        "runAsUser": psc.run_as_user,
        "supplementalGroups": list(psc.supplemental_groups) or None,
        "seLinuxOptions": {"type": psc.selinux_type} if psc.selinux_type else None,
        "seccompProfile": _profile(psc.seccomp_profile),
        "appArmorProfile": _profile(psc.app_armor_profile),
    }
    return {k: v for k, v in values.items() if v is not None}


def _docker_cfg_secret(
    job: JobPayload, cfg: RunnerConfig, name: Callable[[], str], registry: str | None
) -> dict[str, Any] | None:
    """The per-job kubernetes.io/dockercfg Secret from the job's registry credentials (CI_JOB_TOKEN)."""
    server = registry if registry is not None else job.variable("CI_REGISTRY")
    if not server or not job.token:
        return None
    auths = {server: {"username": "gitlab-ci-token", "password": job.token, "serveraddress": server}}
    encoded = base64.b64encode(json.dumps(auths, separators=(",", ":")).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        # Named like the pod but with its own random suffix: the runner calls the name generator again.
        "metadata": {"name": name(), "namespace": cfg.runner.kubernetes.namespace},
        "type": "kubernetes.io/dockercfg",
        "data": {".dockercfg": encoded},
    }


def build_pod(
    job: JobPayload,
    cfg: RunnerConfig,
    *,
    images: Callable[[str], str] | None = None,
    faults: frozenset[str] = frozenset(),
    manager_hostname: str = "runnerconf-local",
    rand: Callable[[], str] | None = None,
    concurrency_id: int = 0,
    project_concurrency_id: int | None = None,
    registry: str | None = None,
) -> PodPlan:
    """Plan the pod (and credentials Secret) the real runner would create for this job.

    concurrency_id is the runner-wide slot (CI_CONCURRENT_ID); project_concurrency_id the per-project one in
    the pod name (CI_CONCURRENT_PROJECT_ID), the same slot unless given. registry is the registry the job's
    credentials are for (default: the job's CI_REGISTRY); without one no Secret is planned.
    images and manager_hostname are accepted for the caller's convenience and unused: the spec keeps public
    image names, and the host only appears in the "Running on ... via ..." line, printed by the caller.
    Raises PreparationError with the runner's text when the runner would refuse the job.
    """
    del images, manager_hostname
    rand = rand or random_suffix
    kube = cfg.runner.kubernetes
    flags = resolve_feature_flags(cfg, job)
    project_dir = f"{cfg.builds_dir.rstrip('/')}/{job.project_path}"
    if project_concurrency_id is None:
        project_concurrency_id = concurrency_id
    ctx = _JobContext(job, cfg, flags, project_dir, concurrency_id, project_concurrency_id)

    services = name_services(list(kube.services) + list(job.services))
    overrides = _Overrides(cfg, enabled="overrides-ignored" not in faults)
    expanded_job_vars = _expand_all([_Var(v.key, v.value, v.file) for v in job.variables])
    pod_labels = overrides.mapping(
        "PodLabels",
        kube.pod_labels,
        kube.pod_labels_overwrite_allowed,
        expanded_job_vars,
        "KUBERNETES_POD_LABELS_",
    )
    pod_annotations = overrides.mapping(
        "PodAnnotations",
        kube.pod_annotations,
        kube.pod_annotations_overwrite_allowed,
        expanded_job_vars,
        "KUBERNETES_POD_ANNOTATIONS_",
    )
    node_selector = overrides.mapping(
        "NodeSelector",
        kube.node_selector,
        kube.node_selector_overwrite_allowed,
        expanded_job_vars,
        "KUBERNETES_NODE_SELECTOR_",
    )
    tolerations = overrides.mapping(
        "NodeTolerations",
        kube.node_tolerations,
        kube.node_tolerations_overwrite_allowed,
        expanded_job_vars,
        "KUBERNETES_NODE_TOLERATIONS_",
        split=_split_toleration,
    )
    if "node-selector-ignored" in faults:
        node_selector = {}  # a broken runner that never writes node_selector into the pod
    if "pod-labels-dropped" in faults:
        # A broken runner (or an admission webhook) that loses the configured labels and annotations.
        pod_labels, pod_annotations = {}, {}
    resources = _plan_resources(overrides, {v.key: v.value for v in expanded_job_vars}, services)
    policies, pull_lines = effective_pull_policies(
        cfg,
        {
            "init-permissions": job.image_pull_policies,
            "build": job.image_pull_policies,
            "helper": job.image_pull_policies,
            **{name: service.pull_policies for service, name in services},
        },
    )
    internal = (kube.image, _helper_image(cfg))

    unique = project_unique_name(cfg.runner.short_token, job.project_id, project_concurrency_id)
    secret = _docker_cfg_secret(job, cfg, lambda: resource_name(unique, rand), registry)
    pod_name = resource_name(unique, rand)

    scripts_dir = _base_dir("/scripts", kube.scripts_base_dir, job)
    logs_dir = _base_dir("/logs", kube.logs_base_dir, job)
    # getVolumeMounts: the attach strategy needs the scripts and logs volumes; the legacy exec strategy only
    # the scripts one, and that only for dumb-init.
    attach = not flags["FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY"]
    dumb_init = flags["FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR"]
    with_volumes = [n for n, wanted in (("scripts", attach or dumb_init), ("logs", attach)) if wanted]
    all_vars = _all_variables(ctx)
    expand = _lookup_in(all_vars)
    # getVolumeMountsForConfig: config.toml's volumes between the logs and repo mounts, paths expanded.
    config_mounts = [
        {"name": v.name, "mountPath": go_expand(v.mount_path, expand)}
        | ({"subPath": go_expand(v.sub_path, expand)} if v.sub_path else {})
        for v in kube.volumes
    ]
    mounts = [
        *({"name": n, "mountPath": scripts_dir if n == "scripts" else logs_dir} for n in with_volumes),
        *config_mounts,
        {"name": "repo", "mountPath": cfg.builds_dir},
    ]
    # dind-certs-not-shared: a runner config whose certificates volume reaches the DinD service only.
    build_mounts = (
        [m for m in mounts if not str(m["mountPath"]).startswith("/certs")]
        if "dind-certs-not-shared" in faults
        else mounts
    )
    pod_lines: list[str] = []
    for service, _ in sorted(services, key=lambda item: item[1]):
        verify_allowed_image(service.name, "services", kube.allowed_services, internal)
    verify_allowed_image(job.image or kube.image, "images", kube.allowed_images, internal)
    service_containers = [
        _container(
            name,
            service.name,
            command=list(service.entrypoint),
            args=list(service.command),
            env=_env(_expand_all(all_vars + [_Var(v.key, v.value, v.file) for v in service.variables])),
            resources=resources.services[name],
            mounts=mounts,
            security=_security_with_ids(
                cfg, kube.service_container_security_context, service.user, name, pod_lines, faults
            ),
        )
        for service, name in sorted(services, key=lambda item: item[1])
    ]
    shell_command = ["sh", "-c", BASH_DETECT_SHELL_SCRIPT]
    build = _container(
        "build",
        job.image or kube.image,
        command=shell_command,
        args=[],
        env=_env(all_vars),
        resources=resources.build,
        mounts=build_mounts,
        security=_security_with_ids(
            cfg, kube.build_container_security_context, job.image_user, "build", pod_lines, faults
        ),
    )
    helper = _container(
        "helper",
        _helper_image(cfg),
        command=shell_command,
        args=[],
        env=[],
        resources=resources.helper,
        mounts=mounts,
        security=_security_with_ids(cfg, kube.helper_container_security_context, "", "helper", pod_lines),
    )
    # buildInitContainers: init-permissions in attach mode, or for dumb-init in legacy mode.
    inits = (
        [
            _init_permissions(
                cfg, logs_dir, scripts_dir, resources.helper, mounts, attach=attach, dumb_init=dumb_init
            )
        ]
        if attach or dumb_init
        else []
    )
    # getVolumes: config.toml's volumes first (getVolumesForEmptyDirs: medium and sizeLimit as given).
    config_volumes = [
        {
            "name": v.name,
            "emptyDir": {k: val for k, val in (("medium", v.medium), ("sizeLimit", v.size_limit)) if val},
        }
        for v in kube.volumes
    ]
    spec: dict[str, Any] = {
        "volumes": [*config_volumes, *({"name": n, "emptyDir": {}} for n in ("repo", *with_volumes))]
    }
    if inits:
        spec["initContainers"] = inits
    spec["containers"] = [build, helper, *service_containers]
    spec["restartPolicy"] = "Never"
    if kube.pod_termination_grace_period_seconds is not None:
        spec["terminationGracePeriodSeconds"] = kube.pod_termination_grace_period_seconds
    if flags["FF_USE_POD_ACTIVE_DEADLINE_SECONDS"]:
        pod_lines.append(
            "Using FF_USE_POD_ACTIVE_DEADLINE_SECONDS, the Pod activeDeadlineSeconds will be set to "
            f"the job timeout: {go_duration(job.timeout_s)}..."
        )
        spec["activeDeadlineSeconds"] = job.timeout_s + 1
    spec.update(_dns(cfg, faults, pod_lines))
    _add_optional_spec(spec, cfg, secret, node_selector, tolerations)
    if "no-host-aliases" not in faults:
        host_aliases = _host_aliases(cfg, services)
        if host_aliases:
            spec["hostAliases"] = host_aliases
    pod_resources = resources.pod.as_k8s()
    if pod_resources:
        spec["resources"] = pod_resources
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        # GetPullPolicyFor: the first effective policy ("" is left for the API server to default)
        first = (policies.get(c["name"]) or [""])[0]
        if first:
            c["imagePullPolicy"] = first
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": kube.namespace,
            "labels": _labels(ctx, unique, pod_labels),
            "annotations": _annotations(job, pod_annotations),
        },
        "spec": spec,
    }
    return PodPlan(
        pod=pod,
        secret=secret,
        service_containers=services,
        project_dir=project_dir,
        scripts_dir=scripts_dir,
        logs_dir=logs_dir,
        executor_log_lines=overrides.lines,
        pod_log_lines=pod_lines,
        feature_flags=flags,
        pull_policy_lines=pull_lines,
    )


def _add_optional_spec(
    spec: dict[str, Any],
    cfg: RunnerConfig,
    secret: dict[str, Any] | None,
    node_selector: dict[str, str],
    tolerations: dict[str, str],
) -> None:
    kube = cfg.runner.kubernetes
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = pod_tolerations(tolerations)
    if kube.service_account:
        spec["serviceAccountName"] = kube.service_account
    security = _pod_security_context(cfg)
    if security is not None:
        spec["securityContext"] = security
    if not kube.use_service_account_image_pull_secrets:
        pull_secrets = [{"name": n} for n in kube.image_pull_secrets]
        if secret is not None:
            pull_secrets.append({"name": secret["metadata"]["name"]})
        if pull_secrets:
            spec["imagePullSecrets"] = pull_secrets
    spec["affinity"] = camel_keys(kube.affinity)
    if kube.scheduler_name:
        spec["schedulerName"] = kube.scheduler_name
    if kube.runtime_class_name:
        spec["runtimeClassName"] = kube.runtime_class_name
    if kube.priority_class_name:
        spec["priorityClassName"] = kube.priority_class_name


def pod_tolerations(values: dict[str, str]) -> list[dict[str, str]]:
    """getPodTolerations: "key=value" -> Equal, "key" -> Exists; the effect as given ("" left out).

    The runner ranges over a Go map (random order); sorted here so specs compare stably."""
    out = []
    for keyvalue, effect in sorted(values.items()):
        key, sep, value = keyvalue.partition("=")
        toleration = {"key": key, "operator": "Equal" if sep else "Exists"}
        if value:
            toleration["value"] = value
        if effect:
            toleration["effect"] = effect
        out.append(toleration)
    return out


def _split_toleration(text: str) -> tuple[str, str]:
    """splitToleration: "key=value:Effect" -> ("key=value", "Effect"); never an error."""
    keyvalue, _, effect = text.partition(":")
    return keyvalue, effect


def camel_keys(value: Any) -> Any:
    """config.toml's snake_case affinity tables as the API's camelCase fields (the runner's struct tags)."""
    if isinstance(value, dict):
        return {_camel(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [camel_keys(v) for v in value]
    return value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
