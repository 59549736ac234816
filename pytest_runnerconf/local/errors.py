"""The local cluster's own errors; its provider turns them into the plugin's at the seam."""

from __future__ import annotations


class LocalError(Exception):
    """Base of every error the local cluster raises on purpose."""


class LocalConfigError(LocalError):
    """A local-cluster setting is wrong: an unknown fault, a broken recipe or runner config."""


class LocalSetupMissing(LocalError):
    """What `runnerconf local setup` provides (engine, host packages, images) is not there."""


class LocalStartError(LocalError):
    """The local cluster, its engine or one of its host services could not start or be reached."""


class LocalAPIError(LocalError):
    """The emulated GitLab or Kubernetes refuses a request; carries the message a real server gives."""
