"""Data passed between the local cluster's GitLab side and its emulated runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# kubeconfig contexts of the local cluster besides its full-rights one
LEAST_CONTEXT = "runnerconf-local-least"  # exactly the Role `runnerconf rbac` generates for the whole suite
NO_SECRETS_CONTEXT = "runnerconf-local-no-secrets"  # the same without the Secret rule


@dataclass(frozen=True)
class Variable:
    """One CI/CD variable as GitLab hands it to a runner."""

    key: str
    value: str
    public: bool = True
    masked: bool = False
    file: bool = False


@dataclass(frozen=True)
class ServiceDef:
    """One `services:` entry of a job, normalised from string or mapping form."""

    name: str
    alias: str = ""
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    variables: tuple[Variable, ...] = ()
    user: str = ""  # `kubernetes: user:` ("uid" or "uid:gid"), checked against allowed_users/allowed_groups
    pull_policies: tuple[str, ...] = ()  # `pull_policy:` (Docker-style names)


@dataclass(frozen=True)
class ArtifactsDef:
    paths: tuple[str, ...] = ()
    when: str = "on_success"  # on_success | on_failure | always
    name: str = ""


@dataclass(frozen=True)
class CacheDef:
    """One `cache:` entry of a job (the job request's `cache` item)."""

    key: str = "default"  # GitLab's key when the job names none
    paths: tuple[str, ...] = ()
    policy: str = "pull-push"  # pull-push | pull | push
    when: str = "on_success"  # on_success | on_failure | always
    untracked: bool = False


@dataclass(frozen=True)
class Dependency:
    """A job whose artifacts this job downloads (the job request's `dependencies` entry)."""

    id: int
    name: str
    token: str = field(repr=False)
    artifacts_filename: str = ""  # empty: the job stored no artifacts, so there is nothing to download


@dataclass(frozen=True)
class JobPayload:
    """What the emulated runner receives for one job (the job request response of GitLab)."""

    id: int
    name: str
    stage: str
    token: str
    project_id: int
    project_name: str
    project_path: str  # namespace/name, e.g. "runnerconf/scratch"
    namespace_path: str  # e.g. "runnerconf"
    namespace_id: int
    root_namespace: str
    project_url: str  # web_url of the project
    pipeline_id: int
    ref: str
    sha: str
    before_sha: str
    repo_path: Path  # bare git repository on disk the helper clones from
    image: str
    image_entrypoint: tuple[str, ...] | None = None
    image_user: str = ""  # image's `kubernetes: user:`
    image_pull_policies: tuple[str, ...] = ()  # image's `pull_policy:`
    services: tuple[ServiceDef, ...] = ()
    before_script: tuple[str, ...] = ()
    script: tuple[str, ...] = ()
    after_script: tuple[str, ...] = ()
    variables: tuple[Variable, ...] = ()  # predefined, then global yaml, job yaml, pipeline
    artifacts: ArtifactsDef | None = None
    dependencies: tuple[Dependency, ...] = ()
    cache: tuple[CacheDef, ...] = ()
    timeout_s: int = 3600
    tags: tuple[str, ...] = ()
    allow_failure: bool = False

    @property
    def job_url(self) -> str:
        return f"{self.project_url}/-/jobs/{self.id}"

    def variable(self, key: str, default: str = "") -> str:
        """Last definition wins, as in GitLab's variable precedence."""
        for var in reversed(self.variables):
            if var.key == key:
                return var.value
        return default


class JobSink(Protocol):
    """How the runner reports back to the GitLab side (in-process)."""

    def job_started(self, job_id: int, runner_description: str) -> None: ...

    def append_trace(self, job_id: int, data: bytes) -> None: ...

    def job_finished(self, job_id: int, status: str, failure_reason: str | None) -> None:
        """status: success | failed | canceled; failure_reason e.g. script_failure, runner_system_failure."""

    def store_artifacts(self, job_id: int, filename: str, data: bytes) -> None: ...

    def artifacts(self, job_id: int) -> tuple[str, bytes] | None:
        """A finished job's artifacts archive (filename, bytes), as the artifacts-downloader fetches it."""


class JobQueue(Protocol):
    """How the GitLab side hands jobs to the runner (in-process)."""

    def submit(self, payload: JobPayload) -> None: ...

    def cancel(self, job_id: int) -> None: ...

    def runner_tags(self) -> frozenset[str]: ...


@dataclass
class ClusterInfo:
    """Where a running local cluster can be reached; written to its state file."""

    gitlab_url: str
    gitlab_token: str
    kubeconfig: str
    kube_context: str
    project: str
    runner_tag: str
    namespace: str
    pid: int
    home: str
    faults: list[str] = field(default_factory=list)
    local_dns: str = ""  # address of the cluster's own DNS server (the pods' nameserver)
    token_file: str = ""  # the GitLab token, alone in a 0600 file: what a profile's token_file points at
    gitlab_ca_file: str = (
        ""  # the CA that signed an HTTPS local GitLab's certificate (`local up --tls-gitlab`)
    )
    # What the cluster runs: a digest of the emulator's code and its config (cluster.source_digest), so a
    # checkout never judges its runs against a cluster started from other code or another config.toml.
    source_digest: str = ""
    started_from: str = ""  # the package directory that started it, for the message when they differ

    def shell_lines(self) -> list[str]:
        return [
            f"GITLAB_URL={self.gitlab_url}",
            f"GITLAB_TOKEN={self.gitlab_token}",
            f"KUBECONFIG={self.kubeconfig}",
            f"PROJECT={self.project}",
            f"RUNNER_TAG={self.runner_tag}",
            f"NAMESPACE={self.namespace}",
            *([f"GITLAB_CA_FILE={self.gitlab_ca_file}"] if self.gitlab_ca_file else []),
        ]
