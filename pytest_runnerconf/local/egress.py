"""The egress guard: nothing a local pod (or a container dockerd starts inside one) sends leaves this machine.

Pods are containers on Docker's default bridge, and Docker forwards and masquerades their traffic to the world.
Every host service of the local cluster (DNS, registries, GitLab, the API server, S3) listens on the bridge's
gateway address, which is input to the host, never forwarded; so refusing every packet forwarded from the
bridge to another interface keeps the cluster's traffic here, whatever a fault makes a pod do (dockerd handing
its containers 8.8.8.8, a RUN step resolving a name through it). REJECT rather than DROP: a resolver told
"administratively prohibited" fails at once instead of waiting out its timeouts.

The rule goes into DOCKER-USER, the chain Docker keeps for the host's own rules and consults first.
"""

from __future__ import annotations

import shutil
import subprocess

from pytest_runnerconf.local.errors import LocalConfigError

COMMENT = "runnerconf local cluster: pods reach this machine only"


def _rule(bridge: str) -> list[str]:
    return [
        "DOCKER-USER",
        "-i",
        bridge,
        "!",
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "REJECT",
        "--reject-with",
        "icmp-admin-prohibited",
    ]


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables") or "/usr/sbin/iptables"
    return subprocess.run([binary, "-w", *args], capture_output=True, text=True, check=False)


def guarded(bridge: str) -> bool:
    """Whether the guard's rule for BRIDGE is in place."""
    return _iptables("-C", *_rule(bridge)).returncode == 0


def guard(bridge: str) -> None:
    """Put the rule in place (once: a rule left by a crashed cluster is reused)."""
    if guarded(bridge):
        return
    done = _iptables("-I", *_rule(bridge))
    if done.returncode != 0:
        raise LocalConfigError(
            f"the local cluster cannot keep its pods' traffic on this machine: `iptables -I DOCKER-USER` "
            f"failed ({done.stderr.strip() or done.returncode}); it needs root and the iptables Docker uses"
        )


def unguard(bridge: str) -> None:
    """Remove the rule (every copy of it), leaving Docker's own rules alone."""
    while guarded(bridge):
        if _iptables("-D", *_rule(bridge)).returncode != 0:
            return
