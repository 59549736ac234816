"""The seam between the plugin and target providers (the embedded local cluster is one).

A ``--runner-cluster`` name that no profile file defines may be offered by a provider registered under the
entry-point group ``pytest_runnerconf.targets``. A provider turns the user's (optional) ``[clusters.NAME]``
table into a complete :class:`Target` before the run starts: its profile, the pipeline variables the run must
pass, and what to close when the session ends. Nothing else of the provider is visible to the plugin, and
no product module imports a provider's package.

Example (a provider's module)::

    class MyProvider:
        name = "kind-lab"

        def validate(self, table, source):
            ...  # cheap checks at pytest_configure; raise ConfigError naming the key

        def open(self, table, source, log):
            ...  # start or find the target, then
            return Target(profile=profile_from_table(self.name, values, source))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.profile import Profile

ENTRY_POINT_GROUP = "pytest_runnerconf.targets"
Log = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """A target ready to be run against: everything the run needs from its provider."""

    profile: Profile
    # Passed to the pipeline as variables (the local cluster's faults travel this way).
    pipeline_variables: Mapping[str, str] = field(default_factory=dict)
    # Called once when the session ends (stops a cluster the provider started for this session).
    close: Callable[[], None] | None = None


@runtime_checkable
class TargetProvider(Protocol):
    """What a ``pytest_runnerconf.targets`` entry point must load to (a class or an instance)."""

    name: str

    def validate(self, table: Mapping[str, Any] | None, source: str) -> None:
        """Check the user's table for this target without starting anything.

        Raises:
            ConfigError: naming SOURCE and the key to fix.
        """

    def open(self, table: Mapping[str, Any] | None, source: str, log: Log) -> Target:
        """Start or find the target and return its complete profile.

        Raises:
            ConfigError: the user's settings cannot be used.
            InfraError: the target cannot be started or reached (could not test).
        """


# Optional: ``running(table, source) -> Target | None`` returns the target only if it already runs, without
# starting anything (`runnerconf sweep` uses it); a provider without it is opened as usual.


def provider_names() -> tuple[str, ...]:
    """Names of the installed providers, read from the entry points without importing them."""
    return tuple(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)))


def load_provider(name: str) -> TargetProvider | None:
    """The provider registered under NAME, or None; imports only that one provider."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != name:
            continue
        try:
            loaded = ep.load()
        except ImportError as exc:
            raise ConfigError(
                f"the target provider {name!r} ({ep.value}) cannot be imported ({exc}); reinstall the "
                "package that provides it (for 'local': pip install 'pytest-runnerconf[local]')"
            ) from None
        provider = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(provider, TargetProvider):
            raise ConfigError(f"the target provider {name!r} ({ep.value}) does not implement TargetProvider")
        return provider
    return None
