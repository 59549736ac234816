"""The project's error hierarchy: every error says what happened, to what, and what to change."""

from __future__ import annotations


class RunnerConfError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RunnerConfError):
    """The profile, an option or a local-cluster setting is missing or malformed."""


class InfraError(RunnerConfError):
    """The target could not be tested (unreachable, unauthorised, stuck): not a conformance failure."""


class GitLabError(InfraError):
    """GitLab refused or failed a request."""


class KubeError(InfraError):
    """The Kubernetes API refused or failed a request."""


class RunTimeout(InfraError):
    """Something the run waited for did not happen within its deadline."""

    def __init__(self, message: str, waited_s: float, last_state: str = "") -> None:
        super().__init__(message)
        self.waited_s = waited_s
        self.last_state = last_state


class ProbeProtocolError(RunnerConfError):
    """A probe record in a job trace could not be decoded."""


class RunnerConfWarning(UserWarning):
    """Something the user should fix that does not stop the run (a readable token file, leftovers)."""
