""".gitlab-ci.yml parsing into job definitions for the keyword subset probe jobs use, with GitLab's errors."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml

from pytest_runnerconf.local.errors import LocalAPIError
from pytest_runnerconf.local.model import ArtifactsDef, CacheDef, ServiceDef, Variable

DEFAULT_STAGES = ("build", "test", "deploy")
EDGE_PRE, EDGE_POST = ".pre", ".post"
MAX_EXTENDS_DEPTH = 11
MAX_TIMEOUT_S = 30 * 24 * 3600

# Global keywords are never job names; `default:` takes the job-level keys listed in _DEFAULT_KEYS.
_GLOBAL_KEYS = {
    "stages",
    "types",
    "variables",
    "default",
    "image",
    "services",
    "before_script",
    "after_script",
}
_IGNORED_GLOBAL_KEYS = {"cache", "workflow"}  # never job names; a global cache is a default (see _defaults)
_UNSUPPORTED_GLOBAL_KEYS = {"include"}
_DEFAULT_KEYS = {
    "image",
    "services",
    "before_script",
    "after_script",
    "tags",
    "timeout",
    "artifacts",
    "cache",
}
_DEFAULT_IGNORED = {"interruptible", "retry", "hooks", "id_tokens"}
_JOB_KEYS = {
    "stage",
    "image",
    "services",
    "script",
    "before_script",
    "after_script",
    "variables",
    "tags",
    "artifacts",
    "timeout",
    "allow_failure",
    "extends",
    "when",
    "needs",
    "cache",
}
_JOB_IGNORED = {
    "interruptible",
    "retry",
    "coverage",
    "dependencies",
    "id_tokens",
    "hooks",
    "environment",
}
_JOB_UNSUPPORTED = {"rules", "only", "except", "parallel", "trigger", "run", "inherit", "release"}
_JOB_WHEN = ("on_success", "on_failure", "always", "never")
_ARTIFACT_KEYS = {
    "paths",
    "when",
    "name",
    "expire_in",
    "untracked",
    "exclude",
    "expose_as",
    "public",
    "reports",
}
_IMAGE_KEYS = {"name", "entrypoint", "pull_policy", "docker", "kubernetes"}
_SERVICE_KEYS = {"name", "alias", "command", "entrypoint", "variables", "pull_policy", "docker", "kubernetes"}
_DURATION_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
    "mo": 2592000,
    "month": 2592000,
    "months": 2592000,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")

# libyaml (which GitLab's Psych wraps) words some problems differently from PyYAML
_PROBLEM_REWRITES = (
    ("while parsing a block mapping", "expected <block end>", "did not find expected key"),
    ("while parsing a block collection", "expected <block end>", "did not find expected '-' indicator"),
    ("while parsing a flow sequence", "expected ','", "did not find expected ',' or ']'"),
    ("while parsing a flow mapping", "expected ','", "did not find expected ',' or '}'"),
    ("", "expected the node content", "did not find expected node content"),
    ("", "expected '<document start>'", "did not find expected <document start>"),
    ("", "mapping values are not allowed here", "mapping values are not allowed in this context"),
    ("", "that cannot start any token", "found character that cannot start any token"),
)


class CIConfigError(LocalAPIError):
    """The pipeline configuration is invalid; the message is GitLab's wording for the same mistake."""


@dataclass(frozen=True)
class JobDef:
    """One visible job after `extends`, `default:` and the deprecated globals have been applied."""

    name: str
    stage: str
    stage_idx: int
    script: tuple[str, ...]
    before_script: tuple[str, ...] = ()
    after_script: tuple[str, ...] = ()
    image: str = ""
    image_entrypoint: tuple[str, ...] | None = None
    image_user: str = ""
    image_pull_policies: tuple[str, ...] = ()
    services: tuple[ServiceDef, ...] = ()
    global_variables: tuple[Variable, ...] = ()
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = ()
    artifacts: ArtifactsDef | None = None
    artifacts_expire_in: str = ""
    timeout_s: int | None = None
    allow_failure: bool = False
    when: str = "on_success"
    # `needs:` (None: the job waits for the earlier stages; a tuple, even empty: only for these jobs).
    needs: tuple[NeedDef, ...] | None = None
    cache: tuple[CacheDef, ...] = ()


@dataclass(frozen=True)
class NeedDef:
    """One `needs:` entry: the job waited for and whether its artifacts are downloaded (default true)."""

    job: str
    artifacts: bool = True


@dataclass(frozen=True)
class PipelineDef:
    stages: tuple[str, ...]  # including .pre and .post
    variables: tuple[Variable, ...]
    jobs: tuple[JobDef, ...]


# YAML -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    path: tuple[str, ...]


class _Loader(yaml.SafeLoader):
    """Safe loading plus GitLab's `!reference [job, key, ...]` tag."""


def _construct_reference(loader: yaml.SafeLoader, node: yaml.Node) -> _Reference:
    if not isinstance(node, yaml.SequenceNode):
        raise CIConfigError("!reference tag should be an array of strings")
    return _Reference(tuple(str(v) for v in loader.construct_sequence(node)))


_Loader.add_constructor("!reference", _construct_reference)


def _yaml_error(exc: yaml.YAMLError) -> CIConfigError:
    """Render a PyYAML error the way Psych does: `(<unknown>): <problem> <context> at line L column C`."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return CIConfigError(f"(<unknown>): {exc}")
    context = exc.context or ""
    problem = exc.problem or ""
    for ctx, needle, libyaml in _PROBLEM_REWRITES:
        if needle in problem and (not ctx or ctx == context):
            problem = libyaml
            break
    if "found undefined alias" in problem:
        return CIConfigError(f"Unknown alias: {problem.rsplit(' ', 1)[-1].strip(chr(39))}")
    mark = exc.context_mark if exc.context_mark is not None else exc.problem_mark
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    text = " ".join(part for part in (problem, context) if part)
    return CIConfigError(f"(<unknown>): {text}{where}")


def load_yaml(text: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    if data is None:
        raise CIConfigError("Please provide content of .gitlab-ci.yml")
    if not isinstance(data, dict):
        raise CIConfigError("Invalid configuration format")
    return {str(k): v for k, v in data.items()}


def _resolve_references(node: Any, root: dict[str, Any], depth: int = 0) -> Any:
    if depth > 10:
        raise CIConfigError("!reference tags are nested too deeply (max 10 levels)")
    if isinstance(node, _Reference):
        target: Any = root
        for key in node.path:
            if not isinstance(target, dict) or key not in target:
                raise CIConfigError(f"!reference [{', '.join(node.path)}] could not be found")
            target = target[key]
        return _resolve_references(copy.deepcopy(target), root, depth + 1)
    if isinstance(node, dict):
        return {k: _resolve_references(v, root, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_references(v, root, depth) for v in node]
    return node


# scalar helpers --------------------------------------------------------------------------------------


def parse_duration(value: Any) -> int | None:
    """Seconds for GitLab durations ("600", "10 minutes", "1h 30m", "2 hours 5 min"); None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(",", " ").replace(" and ", " ")
    if not text:
        return None
    if re.fullmatch(r"\d+", text):
        return int(text)
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if text[pos : match.start()].strip():
            return None
        unit = match.group(2) or "s"
        if unit not in _DURATION_UNITS:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        return None
    return int(total)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _flatten_script(value: Any, where: str, depth: int = 0) -> list[str]:
    message = f"{where} config should be a string or a nested array of strings up to 10 levels deep"
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or depth >= 10:
        raise CIConfigError(message)
    lines: list[str] = []
    for item in value:
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            lines.append(str(item))
        elif isinstance(item, list):
            lines.extend(_flatten_script(item, where, depth + 1))
        else:
            raise CIConfigError(message)
    return lines


def _variables(value: Any, where: str) -> tuple[Variable, ...]:
    message = f"{where} config should be a hash of key value pairs, value can be a hash"
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise CIConfigError(message)
    result = []
    for key, raw in value.items():
        if isinstance(raw, dict):
            if "value" not in raw and not raw.keys() <= {"description", "options", "expand"}:
                raise CIConfigError(message)
            raw = raw.get("value", "")
        if isinstance(raw, bool) or (raw is not None and not isinstance(raw, str | int | float)):
            raise CIConfigError(message)
        result.append(Variable(str(key), "" if raw is None else str(raw)))
    return tuple(result)


def _unknown_keys(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = [str(k) for k in mapping if k not in allowed]
    if unknown:
        raise CIConfigError(f"{where} config contains unknown keys: {', '.join(unknown)}")


def _str_tuple(value: Any, where: str, what: str = "an array of strings") -> tuple[str, ...]:
    if value is None:
        return ()
    if not _is_str_list(value):
        raise CIConfigError(f"{where} config should be {what}")
    return tuple(value)


# image / services / artifacts ------------------------------------------------------------------------


def _image(value: Any, where: str) -> tuple[str, tuple[str, ...] | None]:
    if value is None:
        return "", None
    if isinstance(value, str):
        return value, None
    if not isinstance(value, dict):
        raise CIConfigError(f"{where} config should be a hash or a string")
    _unknown_keys(value, _IMAGE_KEYS, where)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise CIConfigError(f"{where}:name config should be a string")
    entry = value.get("entrypoint")
    return name, None if entry is None else _str_tuple(entry, f"{where}:entrypoint")


def pull_policies(value: Any, where: str) -> tuple[str, ...]:
    """An image's or service's `pull_policy:` (one name or a list of them)."""
    if not isinstance(value, dict) or value.get("pull_policy") is None:
        return ()
    policy = value["pull_policy"]
    names = [policy] if isinstance(policy, str) else policy
    if not isinstance(names, list) or not all(n in ("always", "never", "if-not-present") for n in names):
        raise CIConfigError(
            f"{where}:pull_policy config should be one of always, never, if-not-present, or an array of them"
        )
    return tuple(names)


def kubernetes_user(value: Any, where: str) -> str:
    """An image's or service's `kubernetes: {user: ...}` (a string or an integer) as the runner receives it."""
    if not isinstance(value, dict) or value.get("kubernetes") is None:
        return ""
    options = value["kubernetes"]
    if not isinstance(options, dict) or set(options) - {"user"}:
        raise CIConfigError(f"{where}:kubernetes config contains unknown keys (only user is allowed)")
    user = options.get("user", "")
    if isinstance(user, bool) or not isinstance(user, str | int):
        raise CIConfigError(f"{where}:kubernetes:user config should be a string or an integer")
    return str(user)


def _service(value: Any, where: str) -> ServiceDef:
    if isinstance(value, str):
        return ServiceDef(name=value)
    if not isinstance(value, dict):
        raise CIConfigError(f"{where} config should be a hash or a string")
    _unknown_keys(value, _SERVICE_KEYS, where)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise CIConfigError(f"{where}:name config should be a string")
    alias = value.get("alias") or ""
    if not isinstance(alias, str):
        raise CIConfigError(f"{where}:alias config should be a string")
    return ServiceDef(
        name=name,
        alias=alias,
        command=_str_tuple(value.get("command"), f"{where}:command"),
        entrypoint=_str_tuple(value.get("entrypoint"), f"{where}:entrypoint"),
        variables=_variables(value.get("variables"), f"{where}:variables"),
        user=kubernetes_user(value, where),
        pull_policies=pull_policies(value, where),
    )


def _services(value: Any, where: str) -> tuple[ServiceDef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CIConfigError(f"{where} config should be a array")
    return tuple(_service(item, f"{where}:service") for item in value)


def _artifacts(value: Any, where: str) -> tuple[ArtifactsDef | None, str]:
    if value is None:
        return None, ""
    if not isinstance(value, dict):
        raise CIConfigError(f"{where} config should be a hash")
    _unknown_keys(value, _ARTIFACT_KEYS, where)
    paths = _str_tuple(value.get("paths"), f"{where}:paths")
    when = value.get("when", "on_success")
    if when not in ("on_success", "on_failure", "always"):
        raise CIConfigError(f"{where}:when config should be one of: on_success, on_failure, always")
    name = value.get("name", "")
    if not isinstance(name, str):
        raise CIConfigError(f"{where}:name config should be a string")
    expire = value.get("expire_in", "")
    if expire and str(expire).strip().lower() != "never" and parse_duration(expire) is None:
        raise CIConfigError(f"{where}:expire_in config should be a duration")
    return ArtifactsDef(paths=paths, when=when, name=name), str(expire or "")


# extends ---------------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """GitLab's extends merge: mappings merge key by key, anything else (arrays too) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _extend(name: str, entries: dict[str, Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    job = entries[name]
    if not isinstance(job, dict) or "extends" not in job:
        return job
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise CIConfigError(f"{name}: nesting too deep in `extends`")
    if name in chain:
        raise CIConfigError(f"{name}: circular dependency detected in `extends`")
    bases = job["extends"]
    bases = [bases] if isinstance(bases, str) else bases
    if not _is_str_list(bases):
        raise CIConfigError(f"jobs:{name}:extends config should be an array of strings or a string")
    unknown = [b for b in bases if b not in entries]
    if unknown:
        raise CIConfigError(f"{name}: unknown keys in `extends` ({', '.join(unknown)})")
    merged: dict[str, Any] = {}
    for base in bases:
        if not isinstance(entries[base], dict):
            raise CIConfigError(f"{name}: invalid base hash in `extends`")
        merged = deep_merge(merged, _extend(base, entries, (*chain, name)))
    merged = deep_merge(merged, {k: v for k, v in job.items() if k != "extends"})
    merged.pop("extends", None)
    return merged


# stages / globals ------------------------------------------------------------------------------------


def _stages(config: dict[str, Any]) -> tuple[str, ...]:
    raw = config.get("stages", config.get("types"))
    if raw is None:
        raw = list(DEFAULT_STAGES)
    if not _is_str_list(raw):
        raise CIConfigError("stages config should be an array of strings")
    seen: list[str] = []
    for stage in raw:
        if stage not in seen and stage not in (EDGE_PRE, EDGE_POST):
            seen.append(stage)
    # GitLab moves .pre/.post to the edges wherever they are listed
    return (EDGE_PRE, *seen, EDGE_POST)


def _defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Merged `default:` and the deprecated top-level image/services/before_script/after_script."""
    defaults: dict[str, Any] = {
        k: config[k] for k in ("image", "services", "before_script", "after_script", "cache") if k in config
    }
    block = config.get("default")
    if block is None:
        return defaults
    if not isinstance(block, dict):
        raise CIConfigError("default config should be a hash")
    _unknown_keys(block, _DEFAULT_KEYS | _DEFAULT_IGNORED, "default")
    return {**defaults, **{k: v for k, v in block.items() if k in _DEFAULT_KEYS}}


# jobs ------------------------------------------------------------------------------------------------


def _check_job_keys(name: str, job: dict[str, Any]) -> None:
    where = f"jobs:{name}"
    unsupported = [k for k in job if k in _JOB_UNSUPPORTED and k != "run"]
    if unsupported:
        raise CIConfigError(
            f"{where} uses {', '.join(unsupported)}, which the runnerconf local cluster does not emulate"
        )
    _unknown_keys(job, _JOB_KEYS | _JOB_IGNORED, where)


def _job(
    name: str, job: Any, stages: tuple[str, ...], defaults: dict[str, Any], gvars: tuple[Variable, ...]
) -> JobDef:
    where = f"jobs:{name}"
    if not isinstance(job, dict) or "script" not in job:
        if isinstance(job, dict) and ("trigger" in job or "run" in job):
            raise CIConfigError(
                f"{where} uses trigger/run, which the runnerconf local cluster does not emulate"
            )
        raise CIConfigError(f"{where} config should implement the script:, run:, or trigger: keyword")
    _check_job_keys(name, job)
    job = {**{k: v for k, v in defaults.items() if k not in job}, **job}
    stage = job.get("stage", "test")
    if not isinstance(stage, str):
        raise CIConfigError(f"{where}:stage config should be a string")
    if stage not in stages:
        raise CIConfigError(
            f"{name} job: chosen stage does not exist; available stages are {', '.join(stages)}"
        )
    script = _flatten_script(job["script"], f"{where}:script")
    if not script:
        raise CIConfigError(f"{where}:script config can't be blank")
    image, entrypoint = _image(job.get("image"), f"{where}:image")
    artifacts, expire_in = _artifacts(job.get("artifacts"), f"{where}:artifacts")
    return JobDef(
        name=name,
        stage=stage,
        stage_idx=stages.index(stage),
        script=tuple(script),
        before_script=tuple(_optional_script(job.get("before_script"), f"{where}:before_script")),
        after_script=tuple(_optional_script(job.get("after_script"), f"{where}:after_script")),
        image=image,
        image_entrypoint=entrypoint,
        image_user=kubernetes_user(job.get("image"), f"{where}:image"),
        image_pull_policies=pull_policies(job.get("image"), f"{where}:image"),
        services=_services(job.get("services"), f"{where}:services"),
        global_variables=gvars,
        variables=_variables(job.get("variables"), f"{where}:variables"),
        tags=_str_tuple(job.get("tags"), f"{where}:tags"),
        artifacts=artifacts,
        artifacts_expire_in=expire_in,
        timeout_s=_timeout(job.get("timeout"), f"{where}:timeout"),
        allow_failure=_allow_failure(job.get("allow_failure", False), f"{where}:allow_failure"),
        when=_when(job.get("when", "on_success"), f"{where}:when"),
        needs=_needs(job.get("needs"), f"{where}:needs", "needs" in job),
        cache=_cache(job.get("cache"), f"{where}:cache"),
    )


_CACHE_KEYS = {"key", "paths", "policy", "when", "untracked", "fallback_keys", "unprotect"}


def _cache(value: Any, where: str) -> tuple[CacheDef, ...]:
    """A job's `cache:` (one table or a list of them); key as a string only (no `key: files:`)."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    caches: list[CacheDef] = []
    for item in items:
        if not isinstance(item, dict):
            raise CIConfigError(f"{where} config should be a hash or an array of hashes")
        _unknown_keys(item, _CACHE_KEYS, where)
        key = item.get("key", "default")
        if isinstance(key, int | float) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str):
            raise CIConfigError(
                f"{where}:key config should be a string or symbol (key: files: is not emulated)"
            )
        policy = item.get("policy", "pull-push")
        if policy not in ("pull-push", "pull", "push"):
            raise CIConfigError(f"{where}:policy config should be one of: pull-push, pull, push")
        when = item.get("when", "on_success")
        if when not in ("on_success", "on_failure", "always"):
            raise CIConfigError(f"{where}:when config should be one of: on_success, on_failure, always")
        untracked = item.get("untracked", False)
        if not isinstance(untracked, bool):
            raise CIConfigError(f"{where}:untracked config should be a boolean value")
        caches.append(
            CacheDef(
                key=key or "default",
                paths=_str_tuple(item.get("paths"), f"{where}:paths"),
                policy=policy,
                when=when,
                untracked=untracked,
            )
        )
    return tuple(caches)


def _needs(value: Any, where: str, present: bool) -> tuple[NeedDef, ...] | None:
    """`needs: [name, {job: name, artifacts: bool}]` (the keyword subset the probes use)."""
    if not present:
        return None
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CIConfigError(f"{where} config can only be a hash or an array")
    needs: list[NeedDef] = []
    for item in value:
        if isinstance(item, str):
            needs.append(NeedDef(item))
        elif isinstance(item, dict) and isinstance(item.get("job"), str):
            unknown = [str(k) for k in item if k not in ("job", "artifacts", "optional")]
            if unknown:
                raise CIConfigError(f"{where}:need config contains unknown keys: {', '.join(unknown)}")
            artifacts = item.get("artifacts", True)
            if not isinstance(artifacts, bool):
                raise CIConfigError(f"{where}:need:artifacts config should be a boolean value")
            needs.append(NeedDef(item["job"], artifacts))
        else:
            raise CIConfigError(f"{where}:need config should be a string or a hash with a job key")
    return tuple(needs)


def _check_needs(jobs: list[JobDef]) -> None:
    """GitLab's pipeline-level checks of `needs`: every needed job exists, and no job needs itself in a loop."""
    by_name = {j.name: j for j in jobs}
    for job in jobs:
        for need in job.needs or ():
            other = by_name.get(need.job)
            if other is None:
                # Gitlab::Ci::YamlProcessor's message (since 15.x it names needs:optional)
                raise CIConfigError(
                    f"'{job.name}' job needs '{need.job}' job, but '{need.job}' does not exist in the "
                    "pipeline. This might be because of the only, except, or rules keywords. To need a job "
                    "that sometimes does not exist in the pipeline, use needs:optional."
                )
            if other.stage_idx > job.stage_idx:
                raise CIConfigError(
                    f"{job.name} job: need {need.job} is not defined in current or prior stages"
                )

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise CIConfigError(f"{name}: circular dependency detected in `needs`")
        for need in by_name[name].needs or ():
            visit(need.job, (*chain, name))

    for job in jobs:
        visit(job.name, ())


def _optional_script(value: Any, where: str) -> list[str]:
    return [] if value is None else _flatten_script(value, where)


def _timeout(value: Any, where: str) -> int | None:
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise CIConfigError(f"{where} config should be a duration")
    if seconds > MAX_TIMEOUT_S:
        raise CIConfigError(f"{where} config should not exceed the limit")
    return seconds


def _allow_failure(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise CIConfigError(f"{where} config should be a hash or a boolean value")


def _when(value: Any, where: str) -> str:
    if value in _JOB_WHEN:
        return value
    if value in ("manual", "delayed"):
        raise CIConfigError(f"{where} {value} is not emulated by the runnerconf local cluster")
    raise CIConfigError(
        f"{where} config should be one of: on_success, on_failure, always, manual, delayed, never"
    )


def _job_entries(config: dict[str, Any]) -> dict[str, Any]:
    unsupported = sorted(k for k in config if k in _UNSUPPORTED_GLOBAL_KEYS)
    if unsupported:
        raise CIConfigError(f"{', '.join(unsupported)}: not emulated by the runnerconf local cluster")
    return {k: v for k, v in config.items() if k not in _GLOBAL_KEYS | _IGNORED_GLOBAL_KEYS}


def parse_config(yaml_text: str) -> PipelineDef:
    """Parse and validate a whole configuration; raises CIConfigError with GitLab's message."""
    config = load_yaml(yaml_text)
    config = _resolve_references(config, config)
    stages = _stages(config)
    gvars = _variables(config.get("variables"), "variables")
    defaults = _defaults(config)
    entries = _job_entries(config)
    jobs = []
    for name in entries:
        if name.startswith("."):
            continue
        merged = _extend(name, entries)
        jobs.append(_job(name, merged, stages, defaults, gvars))
    if not jobs:
        raise CIConfigError("jobs config should contain at least one visible job")
    visible = [j for j in jobs if j.when != "never"]
    _check_needs(visible)
    visible.sort(key=lambda j: j.stage_idx)  # stable: YAML order within a stage
    return PipelineDef(stages=stages, variables=gvars, jobs=tuple(visible))


def parse_pipeline(yaml_text: str) -> list[JobDef]:
    """The jobs a pipeline for this configuration creates, in stage order (YAML order within a stage)."""
    return list(parse_config(yaml_text).jobs)
