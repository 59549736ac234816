"""The `runnerconf` command: run and inspect the embedded local cluster."""

from __future__ import annotations

import argparse
import sys
import time

from pytest_runnerconf.errors import RunnerConfError
from pytest_runnerconf.local.faults import ENV_VAR, FAULTS, faults_from_env, parse_faults


def _err(message: str) -> None:
    print(f"runnerconf: {message}", file=sys.stderr)


def cmd_local_up(args: argparse.Namespace) -> int:
    from pytest_runnerconf.local import cluster

    faults = parse_faults(args.faults) | faults_from_env()
    home = cluster.default_home()
    running = cluster.read_state(home)
    if running is not None:
        if args.detach:
            print("\n".join(running.shell_lines()))
            return 0
        _err(f"a local cluster already runs (pid {running.pid}); `runnerconf local down` stops it")
        return 1
    if args.detach:
        info = cluster.start_detached(home, faults, log=lambda m: print(m, file=sys.stderr))
        print("\n".join(info.shell_lines()))
        return 0
    return cluster.serve_foreground(home, faults)


def cmd_local_down(args: argparse.Namespace) -> int:
    from pytest_runnerconf.local import cluster

    t0 = time.monotonic()
    stopped = cluster.stop_running()
    what = "stopped" if stopped else "none was running; removed any leftovers"
    print(f"runnerconf local: {what} ({time.monotonic() - t0:.1f}s)")
    return 0


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


def cmd_local_setup(args: argparse.Namespace) -> int:
    """Install/start the Docker engine and build the images, so the first run does not pay for it."""
    from pytest_runnerconf.local import engine, images

    t0 = time.monotonic()
    client = engine.docker_client(ensure=True)
    engine.ensure_host_packages()
    print(f"runnerconf local: engine and host packages ready ({time.monotonic() - t0:.1f}s)")
    images.ensure_images(client, log=print)
    print(f"runnerconf local: set-up done ({time.monotonic() - t0:.1f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runnerconf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="the embedded local cluster (GitLab + Kubernetes APIs, Docker pods)")
    lsub = local.add_subparsers(dest="local_command", required=True)
    up = lsub.add_parser(
        "up", help="run the local cluster (foreground; Ctrl-C stops it and removes everything)"
    )
    up.add_argument("--detach", action="store_true", help="start in the background and print shell lines")
    up.add_argument(
        "--faults",
        default="",
        help=f"comma-separated faults to inject (also ${ENV_VAR}); known: {', '.join(sorted(FAULTS))}",
    )
    up.set_defaults(func=cmd_local_up)
    lsub.add_parser(
        "down", help="stop it and remove every container, volume and process it started"
    ).set_defaults(func=cmd_local_down)
    lsub.add_parser("status", help="say whether it runs and where").set_defaults(func=cmd_local_status)
    lsub.add_parser("setup", help="install the Docker engine and build the images").set_defaults(
        func=cmd_local_setup
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RunnerConfError as exc:
        _err(str(exc))
        return 6
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
