"""Expectations about what the pod spec promises: [expect.labels], [expect.scheduling], [expect.security],
[expect.image_policy].

Each table is a frozen dataclass whose field names are the profile keys (the runner's config.toml names where
one exists). Keys are checked strictly, as the other expect tables are; a value of the wrong type is one
sentence naming the file and the dotted key.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from pytest_runnerconf.errors import ConfigError


@dataclass(frozen=True)
class LabelsExpect:
    """`pod_labels`/`pod_annotations` as config.toml writes them (values may hold `$CI_*` variables) and the
    `*_overwrite_allowed` regexes ("" = job overrides are ignored)."""

    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    pod_labels_overwrite_allowed: str = ""
    pod_annotations_overwrite_allowed: str = ""


@dataclass(frozen=True)
class SchedulingExpect:
    """node_selector and what else config.toml puts into the pod's scheduling fields ("" = not set)."""

    node_selector: dict[str, str] = field(default_factory=dict)
    node_selector_overwrite_allowed: str = ""
    # config.toml's node_tolerations: "key=value" -> effect ("key" alone for Exists).
    node_tolerations: dict[str, str] = field(default_factory=dict)
    # [runners.kubernetes.affinity] as config.toml writes it (snake_case keys).
    affinity: dict[str, Any] = field(default_factory=dict)
    priority_class_name: str = ""
    service_account: str = ""
    runtime_class_name: str = ""
    image_pull_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecurityExpect:
    """The user/group identities config.toml's security contexts give each container, and the job-level
    `image: kubernetes: user:` allow-lists."""

    build_run_as_user: int | None = None
    build_run_as_group: int | None = None
    helper_run_as_user: int | None = None
    helper_run_as_group: int | None = None
    service_run_as_user: int | None = None
    service_run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    fs_group: int | None = None
    # Capabilities the build container drops (the runner's default is NET_RAW).
    build_cap_drop: tuple[str, ...] = ("NET_RAW",)
    allowed_users: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    # The build container's hardening (None: not checked), as build_container_security_context sets it
    # (common/config.go KubernetesContainerSecurityContext, v18.11): allow_privilege_escalation, the seccomp and
    # AppArmor profile types (RuntimeDefault, Localhost, Unconfined; the pod's when the container sets none) and
    # proc_mount (Default or Unmasked).
    build_allow_privilege_escalation: bool | None = None
    build_seccomp_profile: str | None = None
    build_app_armor_profile: str | None = None
    build_proc_mount: str | None = None


@dataclass(frozen=True)
class ImagePolicyExpect:
    """config.toml's image allow-lists (doublestar patterns; empty = any) and pull policies (Docker-style
    names: always, if-not-present, never; empty = the cluster's default)."""

    allowed_images: tuple[str, ...] = ()
    allowed_services: tuple[str, ...] = ()
    pull_policy: tuple[str, ...] = ()
    allowed_pull_policies: tuple[str, ...] = ()
    # A missing image must fail its job within this many seconds (default: well inside poll_timeout).
    pull_failure_deadline_s: int = 60


TABLES: dict[str, type] = {
    "labels": LabelsExpect,
    "scheduling": SchedulingExpect,
    "security": SecurityExpect,
    "image_policy": ImagePolicyExpect,
}


def _problem(file: str, key: str, value: Any, want: str) -> ConfigError:
    return ConfigError(
        f"{file}: {key} = {value!r} ({type(value).__name__}) is not allowed; it must be {want}"
    )


def _convert(file: str, key: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):  # int | None: None is the default, never written
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise _problem(file, key, value, "true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _problem(file, key, value, "a string")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _problem(file, key, value, "a non-negative integer")
        return value
    if origin is tuple:
        item = args[0]
        if not isinstance(value, list):
            raise _problem(file, key, value, f"a list of {'integers' if item is int else 'strings'}")
        return tuple(_convert(file, f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if origin is dict and args[1] is Any:
        if not isinstance(value, dict):
            raise _problem(file, key, value, "a table")
        return dict(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _problem(file, key, value, 'a table of strings ({ "key" = "value" })')
        return dict(value)
    raise AssertionError(f"unsupported expectation type {hint}")  # pragma: no cover - a bug here


def parse_table(name: str, file: str, key: str, value: Any) -> Any:
    """[expect.NAME] from a profile, validated.

    Raises:
        ConfigError: naming FILE and the dotted KEY of the first problem.
    """
    cls = TABLES[name]
    if not isinstance(value, dict):
        raise _problem(file, key, value, "a table")
    hints = typing.get_type_hints(cls)
    allowed = sorted(hints)
    for sub in value:
        if sub not in hints:
            near = difflib.get_close_matches(sub, allowed, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{file}: unknown key {key}.{sub}{hint}; allowed keys: {', '.join(allowed)}")
    return cls(**{sub: _convert(file, f"{key}.{sub}", val, hints[sub]) for sub, val in value.items()})


def summarize(value: Any) -> dict[str, Any] | None:
    """The table as JSON (Profile.summary()["expect"][name]); None when the profile sets none."""
    if value is None:
        return None
    out: dict[str, Any] = {}
    for f in fields(value):
        item = getattr(value, f.name)
        out[f.name] = (
            list(item) if isinstance(item, tuple) else dict(item) if isinstance(item, dict) else item
        )
    return out


def restore(name: str, data: Any) -> Any:
    """summarize()'s JSON back into the table (an evidence bundle's recorded profile); None stays None."""
    if not isinstance(data, dict):
        return None
    cls = TABLES[name]
    hints = typing.get_type_hints(cls)
    values = {}
    for key, item in data.items():
        if key not in hints:
            continue  # a later version's key: not judged by these checks
        values[key] = tuple(item) if isinstance(item, list) else item
    return cls(**values)
