"""`runnerconf local ...`: set up, run and inspect the embedded local cluster."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable

from pytest_runnerconf.local.errors import LocalConfigError, LocalError
from pytest_runnerconf.local.faults import ENV_VAR, FAULTS, faults_from_env, parse_faults

EXIT_USAGE = 4
EXIT_FAILED = 6

Command = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(f"runnerconf: {message}", file=sys.stderr)


def _guard(command: Command) -> Command:
    """The local cluster's errors end the command with one sentence, never a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except LocalConfigError as exc:
            _err(str(exc))
            return EXIT_USAGE
        except LocalError as exc:
            _err(str(exc))
            return EXIT_FAILED

    return run


@_guard
def cmd_local_up(args: argparse.Namespace) -> int:
    from pytest_runnerconf.local import cluster, setup

    faults = parse_faults(args.faults) | faults_from_env()
    home = cluster.default_home()
    running = cluster.read_state(home)
    if running is not None:
        if args.detach:
            print("\n".join(running.shell_lines()))
            return 0
        _err(f"a local cluster already runs (pid {running.pid}); `runnerconf local down` stops it")
        return 1
    setup.require()
    if args.detach:
        info = cluster.start_detached(
            home, faults, log=lambda m: print(m, file=sys.stderr), tls_gitlab=args.tls_gitlab
        )
        print("\n".join(info.shell_lines()))
        return 0
    return cluster.serve_foreground(home, faults, tls_gitlab=args.tls_gitlab)


@_guard
def cmd_local_down(args: argparse.Namespace) -> int:
    from pytest_runnerconf.local import cluster

    t0 = time.monotonic()
    stopped = cluster.stop_running()
    what = "stopped" if stopped else "none was running; removed any leftovers"
    print(f"runnerconf local: {what} ({time.monotonic() - t0:.1f}s)")
    return 0


@_guard
def cmd_local_status(args: argparse.Namespace) -> int:
    from pytest_runnerconf.local import cluster

    info = cluster.read_state()
    if info is None:
        print("runnerconf local: not running")
        return 3
    print(
        f"runnerconf local: running (pid {info.pid}), GitLab {info.gitlab_url}, kubeconfig {info.kubeconfig}"
    )
    if info.faults:
        print(f"runnerconf local: faults {', '.join(info.faults)}")
    return 0


@_guard
def cmd_local_setup(args: argparse.Namespace) -> int:
    """Install/start the Docker engine and build the images; the only step that changes the host."""
    from pytest_runnerconf.local import setup

    setup.run_setup(log=print)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = commands.add_parser(
        "local",
        help="the embedded local cluster (GitLab and Kubernetes APIs, pods as Docker containers)",
        description="The embedded local cluster: a local emulation, not a real runner.",
    )
    lsub = local.add_subparsers(dest="local_command", required=True, metavar="VERB")
    lsub.add_parser(
        "setup", help="install the Docker engine and host packages, build the images (the only host change)"
    ).set_defaults(func=cmd_local_setup)
    up = lsub.add_parser(
        "up", help="run the local cluster (foreground; Ctrl-C stops it, removing everything)"
    )
    up.add_argument("--detach", action="store_true", help="start in the background and print shell lines")
    up.add_argument(
        "--faults",
        default="",
        help=f"comma-separated faults to inject (also ${ENV_VAR}); known: {', '.join(sorted(FAULTS))}",
    )
    up.add_argument(
        "--tls-gitlab",
        action="store_true",
        help="serve the local GitLab over HTTPS too (its CA file is printed as GITLAB_CA_FILE)",
    )
    up.set_defaults(func=cmd_local_up)
    lsub.add_parser(
        "down", help="stop the local cluster, remove every container, volume and process it started"
    ).set_defaults(func=cmd_local_down)
    lsub.add_parser("status", help="say whether the local cluster runs, and where").set_defaults(
        func=cmd_local_status
    )
