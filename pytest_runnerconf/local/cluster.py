"""Start, find and stop the embedded local cluster (one per machine, described by a state file)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytest_runnerconf import rbac
from pytest_runnerconf.local.errors import LocalConfigError, LocalStartError
from pytest_runnerconf.local.faults import ENV_VAR as FAULTS_ENV_VAR
from pytest_runnerconf.local.model import LEAST_CONTEXT, NO_SECRETS_CONTEXT, ClusterInfo
from pytest_runnerconf.local.netsvc import pid_running
from pytest_runnerconf.resources import fixtures_path

STATE_NAME = "state.json"
TOKEN_NAME = "gitlab-token"
START_DEADLINE_S = 900.0  # a cold start builds images from Debian packages
Log = Callable[[str], None]


def default_home() -> Path:
    if os.environ.get("RUNNERCONF_LOCAL_HOME"):
        return Path(os.environ["RUNNERCONF_LOCAL_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/runnerconf/local")
    return Path.home() / ".cache" / "runnerconf" / "local"


def source_digest(config: Path | None = None) -> str:
    """A digest of the emulator's code (this package) and the config files a cluster starts from."""
    local = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    named = [(str(p.relative_to(local)), p) for p in sorted(local.rglob("*.py"))]
    named += [
        ("config.toml", config or fixtures_path("local", "config.toml")),
        ("cluster.toml", fixtures_path("local", "cluster.toml")),
    ]
    for name, path in named:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def read_state(home: Path | None = None) -> ClusterInfo | None:
    """The ClusterInfo of a running local cluster, or None."""
    path = (home or default_home()) / STATE_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    info = ClusterInfo(**data)
    if not pid_running(info.pid):
        return None
    return info


def _answers(url: str, ca_file: str = "") -> bool:
    import ssl

    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") and ca_file else None
    try:
        with urllib.request.urlopen(f"{url}/api/v4/version", timeout=2, context=context) as resp:
            return resp.status in (200, 401)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


class LocalCluster:
    """Everything one local cluster runs, in this process: engine check, images, DNS, registry, APIs, runner."""

    def __init__(
        self,
        home: Path,
        faults: frozenset[str] = frozenset(),
        config: Path | None = None,
        *,
        tls_gitlab: bool = False,
    ) -> None:
        self.home = home
        self.faults = faults
        self.tls_gitlab = tls_gitlab
        self.config_path = config or fixtures_path("local", "config.toml")
        self._stops: list[Callable[[], None]] = []
        self.info: ClusterInfo | None = None

    def start(self, log: Log = print) -> ClusterInfo:
        from pytest_runnerconf.local import admission, egress, engine, images, netsvc, pdb, scheduling, setup
        from pytest_runnerconf.local.apifaults import RunFaults
        from pytest_runnerconf.local.gitlab_api import GitLabAPI
        from pytest_runnerconf.local.gitlab_state import GitLabState
        from pytest_runnerconf.local.kstore import KubeStore
        from pytest_runnerconf.local.kube_api import ALL_VERBS, OPERATOR_VERBS, KubeAPI, write_kubeconfig
        from pytest_runnerconf.local.kubelet import Kubelet
        from pytest_runnerconf.local.poddeletion import PodDeletion
        from pytest_runnerconf.local.runner import LocalRunner, Slots
        from pytest_runnerconf.local.runner_config import load_runner_config
        from pytest_runnerconf.local.runners import RunnerSet
        from pytest_runnerconf.local.runtime import Runtime
        from pytest_runnerconf.local.s3cache import S3Server
        from pytest_runnerconf.local.standins import StandIns
        from pytest_runnerconf.local.tlsca import LocalCA

        self.home.mkdir(parents=True, exist_ok=True)
        self._hold_home_lock()
        settings = tomllib.loads(fixtures_path("local", "cluster.toml").read_text())
        cl = settings["cluster"]
        t0 = time.monotonic()
        # Never installs or builds anything: that is `runnerconf local setup`'s job alone.
        client = setup.require()
        log(f"runnerconf local: docker engine ready ({time.monotonic() - t0:.1f}s)")
        built = images.ensure_images(client, log=log)
        cluster_id = secrets.token_hex(4)
        gateway = netsvc.bridge_gateway(client)
        netsvc.stop_all(self.home)  # a crashed cluster of this home may still hold the ports
        # The DNS port is the machine-wide lock: only once it is ours are other clusters' leftovers dead.
        dns = netsvc.start_dns(self.home, gateway, {cl["registry_host"]: gateway})
        self._stops.append(dns.stop)
        cleanup_leftovers(client, self.home, services=False)
        bridge = netsvc.bridge_name(client)
        egress.guard(bridge)
        self._stops.append(lambda: egress.unguard(bridge))
        registry = netsvc.start_registry(self.home, gateway, cl["registry_port"])
        self._stops.append(registry.stop)
        for repo, role in cl["registry_images"].items():
            netsvc.push_to_registry(client, built[role], repo, gateway, cl["registry_port"])
        # The scratch project's container registry: login required, with credentials made per start that the
        # project hands its jobs as CI/CD variables (what an operator sets up for DinD pushes).
        push_user, push_password = "runnerconf-ci", secrets.token_urlsafe(18)
        push_registry = netsvc.start_registry(
            self.home,
            gateway,
            cl["push_registry_port"],
            name="push-registry",
            htpasswd=netsvc.write_htpasswd(
                self.home / "run" / "push-registry.htpasswd", push_user, push_password
            ),
        )
        self._stops.append(push_registry.stop)
        log(
            f"runnerconf local: DNS {dns.address}, registry {registry.address}, project registry "
            f"{push_registry.address} ({time.monotonic() - t0:.1f}s)"
        )

        # One CA per start: clients trust it through the kubeconfig (and gitlab_ca_file for an HTTPS GitLab).
        ca = LocalCA.create(self.home / "pki")
        gitlab_tls = ca.issue("gitlab").server_context() if self.tls_gitlab else None
        gitlab_token = "glpat-" + secrets.token_urlsafe(20)
        state = GitLabState(self.home / "gitlab", gitlab_token, None)
        run_faults = RunFaults()  # a run's API faults: told by GitLab, looked up by the Kubernetes API
        gitlab = GitLabAPI(state, gitlab_token, faults=self.faults, run_faults=run_faults).start(
            tls=gitlab_tls
        )
        self._stops.insert(0, gitlab.stop)
        state.base_url = gitlab.url
        # The runners' distributed cache: an S3 server on the pods' network with a secret made per start
        # (config.toml names only placeholders; the deployed copy redacts the key).
        s3_server = S3Server(gateway)
        s3_secret = secrets.token_urlsafe(24)
        substitutions = {
            "@local-dns": gateway,
            "@gitlab-url": gitlab.url,
            "@s3-address": s3_server.address,
            "@s3-secret-key": s3_secret,
        }
        cfg = load_runner_config(self.config_path, substitutions=substitutions)
        buckets = [s.cache.s3 for s in cfg.entries() if s.cache is not None and s.cache.s3 is not None]
        if buckets:
            s3_server.start([b.bucket_name for b in buckets], buckets[0].access_key, s3_secret)
            self._stops.insert(0, s3_server.stop)
            log(f"runnerconf local: S3 cache server {s3_server.address} ({time.monotonic() - t0:.1f}s)")
        namespace = cfg.runner.kubernetes.namespace
        store = KubeStore()
        store.admission.append(admission.admit)
        store.admission.append(pdb.admit)
        store.create({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": namespace}})
        store.create(scheduling.node_object())  # the node the kubelet (Docker) stands for
        store.create(
            {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "gitlab-runner", "namespace": namespace},
                # The runner's config as deployed (values filled in); the token is a secret, not published.
                "data": {"config.toml": deployed_config(self.config_path.read_text(), substitutions)},
            }
        )
        standins = StandIns(settings["standins"], built)
        project = state.create_project(cl["project"])
        for key, value in cl["registry_variables"].items():
            # "@user"/"@password": the per-start credentials; the password is masked in job logs, as an
            # operator marks it.
            secret = value == "@password"
            state.set_project_variable(project, key, push_password if secret else push_user, masked=secret)

        def repo_mounts(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
            pid = int(pod["metadata"]["annotations"]["project.runner.gitlab.com/id"])
            return {str(state.repo_path(pid)): {"bind": "/runnerconf/repo.git", "mode": "ro"}}

        kubelet = Kubelet(
            Runtime(client, cluster_id),
            store,
            resolve_image=standins.resolve,
            privileged=engine.privileged_kwargs(client, built["base"]),
            pause_image=built["base"],
            repo_mounts=repo_mounts,
            state_dir=self.home / "kubelet",
            node_ip=gateway,  # the node's address on the pods' network
            net_tools_image=built["dind"],
        )
        self._stops.append(kubelet.remove_all)
        deletion = PodDeletion(store, kubelet)
        store.on_delete["Pod"] = deletion.delete
        slots = Slots(cfg.concurrent)  # the one process's `concurrent`, over all its [[runners]] entries
        runner = RunnerSet(
            [
                LocalRunner(
                    cfg.for_runner(section),
                    kubelet,
                    store,
                    state,
                    tags=frozenset({tag}),
                    resolve_image=standins.resolve,
                    delete_pod=deletion.delete,
                    faults=self.faults,
                    registry=f"{cl['registry_host']}:{cl['registry_port']}",
                    slots=slots,
                )
                for section, tag in runner_tags(cfg, cl)
            ]
        )
        state.job_queue = runner
        self._stops.insert(0, runner.shutdown)

        kube_token = secrets.token_urlsafe(24)
        restricted = secrets.token_urlsafe(24)
        # What `runnerconf rbac` generates, with and without the Secret rule: the plugin's own local runs use
        # the first, so a manifest that grants too little fails every local run.
        least = secrets.token_urlsafe(24)
        no_secrets = secrets.token_urlsafe(24)
        kube_api = KubeAPI(
            store,
            {
                # the operator's context: what the plugin needs, plus kubectl logs and exec
                kube_token: OPERATOR_VERBS,
                restricted: frozenset(ALL_VERBS - {"watch", "delete"}),
                least: rbac.grants(["secrets", "pods/eviction"]),
                no_secrets: rbac.grants([]),
            },
            users={
                least: f"system:serviceaccount:{namespace}:{rbac.ROLE_NAME}",
                no_secrets: f"system:serviceaccount:{namespace}:{rbac.ROLE_NAME}-no-secrets",
            },
            node=kubelet,
            faults=self.faults,
            run_faults=run_faults,
        )
        kube = kube_api.start(tls=ca.issue("kube-apiserver").server_context())
        self._stops.insert(0, kube_api.stop)  # also ends open watches
        kubeconfig = self.home / "kubeconfig"
        write_kubeconfig(
            kubeconfig,
            kube.url,
            {
                "runnerconf-local": kube_token,
                "runnerconf-local-restricted": restricted,
                LEAST_CONTEXT: least,
                NO_SECRETS_CONTEXT: no_secrets,
            },
            "runnerconf-local",
            namespace,
            ca_pem=ca.pem,
        )
        token_file = self.home / TOKEN_NAME
        _write_private(token_file, gitlab_token + "\n")
        self._stops.append(lambda: token_file.unlink(missing_ok=True))
        self.info = ClusterInfo(
            gitlab_url=gitlab.url,
            gitlab_token=gitlab_token,
            kubeconfig=str(kubeconfig),
            kube_context="runnerconf-local",
            project=project["path_with_namespace"] if isinstance(project, dict) else cl["project"],
            runner_tag=cl["runner_tag"],
            namespace=namespace,
            pid=os.getpid(),
            home=str(self.home),
            faults=sorted(self.faults),
            local_dns=gateway,
            token_file=str(token_file),
            gitlab_ca_file=str(ca.cert_file) if self.tls_gitlab else "",
            source_digest=source_digest(self.config_path),
            started_from=str(Path(__file__).resolve().parent.parent),
        )
        _write_private(self.home / STATE_NAME, json.dumps(asdict(self.info)))  # holds the tokens
        log(f"runnerconf local: up in {time.monotonic() - t0:.1f}s")
        return self.info

    def _hold_home_lock(self) -> None:
        """One cluster per home, held for the process's life: what a second start may clean up is dead."""
        fd = os.open(self.home / "cluster.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LocalConfigError(
                f"a local cluster already runs from {self.home}; reuse it or stop it with `runnerconf local down`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())  # lets `local down` find a cluster whose state file is lost
        self._stops.append(lambda: os.close(fd))

    def stop(self) -> None:
        if self.info is not None:  # only the cluster that wrote the state file may remove it
            (self.home / STATE_NAME).unlink(missing_ok=True)
        while self._stops:
            stop = self._stops.pop(0)
            with contextlib.suppress(Exception):
                stop()


def runner_tags(cfg: Any, cluster: dict[str, Any]) -> list[tuple[Any, str]]:
    """Each [[runners]] entry with the tag it is registered with (tags live on GitLab, not in config.toml).

    The first entry carries cluster.toml's runner_tag; any other entry needs its own in extra_runner_tags
    (runner name -> tag), so that jobs reach it only when they ask for it.
    """
    extra = cluster.get("extra_runner_tags") or {}
    pairs = [(cfg.entries()[0], str(cluster["runner_tag"]))]
    for section in cfg.entries()[1:]:
        if section.name not in extra:
            raise LocalConfigError(
                f"{cfg.source}: [[runners]] {section.name!r} has no tag; add it to extra_runner_tags in "
                "the local cluster's cluster.toml"
            )
        pairs.append((section, str(extra[section.name])))
    return pairs


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (it holds tokens)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)


def deployed_config(text: str, substitutions: dict[str, str]) -> str:
    """config.toml as the running runner has it: placeholders filled in, the token and the cache's SecretKey
    redacted (secrets)."""
    import re

    lines = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):  # comments keep naming the placeholders they explain
            for key, value in substitutions.items():
                line = line.replace(key, value)
        lines.append(line)
    return re.sub(r'(?m)^(\s*(?:token|SecretKey)\s*=\s*)".*"', r'\1"[REDACTED]"', "".join(lines))


def cleanup_leftovers(client: Any, home: Path, *, services: bool = True) -> int:
    """Remove every container/volume a local cluster made and stop its DNS/registry processes."""
    from pytest_runnerconf.local import netsvc
    from pytest_runnerconf.local.runtime import CLUSTER_LABEL, remove_labelled

    removed = remove_labelled(client, CLUSTER_LABEL)
    # Docker creates a bind's named volume on the fly, without labels, when a container names one a
    # concurrent cleanup had just removed: those carry our pod-volume names, so match them by name.
    for volume in client.volumes.list(filters={"name": "rc-runner-"}):
        if volume.name.startswith("rc-runner-") and not (volume.attrs.get("Labels") or {}):
            with contextlib.suppress(Exception):
                volume.remove(force=True)
                removed += 1
    # the kubelet's per-pod files (managed /etc/hosts) of a cluster that did not stop cleanly
    shutil.rmtree(home / "kubelet", ignore_errors=True)
    if services:
        netsvc.stop_all(home)
        # A crashed cluster's egress guard goes with the rest of what it left, unless another home's cluster
        # runs: its DNS server holds port 53 on the gateway, the machine-wide lock of local clusters.
        from pytest_runnerconf.local import egress

        with contextlib.suppress(Exception):
            gateway = netsvc.bridge_gateway(client)
            if netsvc.port_free(gateway, 53, (socket.SOCK_DGRAM,)):
                egress.unguard(netsvc.bridge_name(client))
    return removed


def serve_foreground(
    home: Path, faults: frozenset[str], log: Log = print, *, tls_gitlab: bool = False
) -> int:
    """`runnerconf local up`: run until SIGINT/SIGTERM, then remove everything."""
    cluster = LocalCluster(home, faults, tls_gitlab=tls_gitlab)
    stopping = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        info = cluster.start(log)
        for line in info.shell_lines():
            if not line.startswith("GITLAB_TOKEN="):
                log(line)
        log(f"GITLAB_TOKEN=<in {home / STATE_NAME}>")
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        log("runnerconf local: stopping")
        cluster.stop()
    return 0


def start_detached(
    home: Path, faults: frozenset[str], log: Log = print, *, tls_gitlab: bool = False
) -> ClusterInfo:
    """Start a cluster in the background and wait until it answers."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "cluster.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0  # relay only this start's lines
    env = dict(os.environ)
    env["RUNNERCONF_LOCAL_HOME"] = str(home)
    # Faults asked for here are the cluster's own; those of a run travel with its pipeline instead, so a
    # cluster started by a faulted run must not keep the fault for later runs.
    env.pop(FAULTS_ENV_VAR, None)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest_runnerconf.cli",
                "local",
                "up",
                "--faults",
                ",".join(sorted(faults)),
                *(["--tls-gitlab"] if tls_gitlab else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_DEADLINE_S
    offset = log_start
    while time.monotonic() < deadline:
        info = read_state(home)
        if info is not None and info.pid == proc.pid and _answers(info.gitlab_url, info.gitlab_ca_file):
            return info
        code = proc.poll()
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read().decode(errors="replace")
        complete, _, _ = chunk.rpartition("\n")
        for line in complete.splitlines():
            if line.startswith("runnerconf local:"):
                log(line)
        offset += len(complete.encode()) + (1 if complete else 0)
        if code is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
            raise LocalStartError(
                f"the local cluster exited during start-up (exit {code}); its log {log_path} ends:\n{tail}"
            )
        time.sleep(0.5)
    proc.terminate()
    raise LocalStartError(f"the local cluster did not answer within {START_DEADLINE_S:.0f}s; see {log_path}")


def _is_cluster(pid: int) -> bool:
    """Only signal a process that is a local cluster (a recorded pid may have been reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    named = any(arg == b"pytest_runnerconf.cli" or arg.endswith(b"/runnerconf") for arg in cmdline)
    return named and b"local" in cmdline and b"up" in cmdline


def stop_running(home: Path | None = None, timeout: float = 120.0) -> bool:
    """`runnerconf local down`: stop the running cluster and remove whatever any cluster left behind."""
    home = home or default_home()
    info = read_state(home)
    pids = {info.pid} if info is not None else set()
    with contextlib.suppress(OSError, ValueError):
        pids.add(int((home / "cluster.lock").read_text().strip() or 0))
    stopped = False
    for pid in sorted(p for p in pids if p > 0 and p != os.getpid() and _is_cluster(p)):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_running(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    (home / STATE_NAME).unlink(missing_ok=True)
    try:
        from pytest_runnerconf.local import engine

        cleanup_leftovers(engine.docker_client(ensure=False), home)
    except Exception:
        pass
    return stopped


def ensure_running(log: Log = print) -> tuple[ClusterInfo, Callable[[], None] | None]:
    """Reuse a running local cluster, or start one (returning a stop callable).

    A run's faults travel with its pipeline (RUNNERCONF_LOCAL_FAULTS), so one clean cluster serves clean
    and faulted runs alike.

    Raises:
        LocalSetupMissing: the engine, a host package or an image is missing (`runnerconf local setup`).
        LocalStartError: the cluster could not start.
    """
    from filelock import FileLock

    from pytest_runnerconf.local import setup

    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    # Concurrent sessions (xdist workers, parallel runs) must agree on one cluster, not start two.
    with FileLock(str(home / "start.lock"), timeout=START_DEADLINE_S):
        info = read_state(home)
        if info is not None and _answers(info.gitlab_url, info.gitlab_ca_file):
            if info.source_digest != source_digest():
                raise LocalStartError(
                    f"the local cluster running (pid {info.pid}) was started from other code or another "
                    f"config.toml ({info.started_from or 'an older version'}), not this checkout's "
                    f"{Path(__file__).resolve().parent.parent}; stop it with `runnerconf local down` once "
                    "nothing uses it, then run again"
                )
            return info, None
        if info is not None:
            raise LocalStartError(
                f"a local cluster is recorded in {home / STATE_NAME} but does not answer; run `runnerconf local down`"
            )
        setup.require()  # checked here, where the sentence reaches the user, not in the detached child
        info = start_detached(home, frozenset(), log)

    def stop() -> None:
        stop_running(home)

    return info, stop
