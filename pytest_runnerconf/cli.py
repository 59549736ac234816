"""The `runnerconf` command: verbs around the conformance suite; target providers add their own."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from pytest_runnerconf import __version__
from pytest_runnerconf.errors import ConfigError, RunnerConfError
from pytest_runnerconf.rbac import ROLE_NAME
from pytest_runnerconf.scrub import ScrubbingStream
from pytest_runnerconf.targets import Target, load_provider, provider_names

EXIT_USAGE = 4  # as pytest's own usage errors
EXIT_COULD_NOT_TEST = 6
NO_CLUSTER = (
    "no cluster selected: pass --runner-cluster=NAME or set RUNNERCONF_CLUSTER "
    "(--runner-cluster=local needs no configuration)"
)
CLUSTER_DESTS = ("runner_cluster", "runnerconf_config")  # the plugin's options that pick a cluster


def _err(message: str) -> None:
    print(f"runnerconf: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """Bad command lines exit 4, like pytest's usage errors and the suite's own configuration errors."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------- verbs about a cluster


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """--runner-cluster and --runnerconf-config, read as the plugin reads them (with the same env vars).

    A verb that is about a cluster adds these and calls :func:`open_cluster`.
    """
    from pytest_runnerconf.session import OPTIONS

    for option in OPTIONS:
        if option.dest in CLUSTER_DESTS:
            metavar = "PATH" if option.is_path else "NAME"
            parser.add_argument(
                option.flag, dest=option.dest, metavar=metavar, help=f"{option.help}; env {option.env}"
            )


@contextlib.contextmanager
def open_cluster(
    args: argparse.Namespace, log: Callable[[str], None], *, start: bool = True
) -> Iterator[Target | None]:
    """The target --runner-cluster names, opened as a run opens it, and closed after use.

    Paths are relative to the current directory, as on pytest's command line. A provider's target (the
    built-in 'local') is started when none runs and stopped again afterwards; with START=False it is only
    used when it already runs (None otherwise).

    Raises:
        ConfigError: no cluster given, or the profile cannot be used.
        RunnerConfError: the target cannot be started or reached.
    """
    from pytest_runnerconf.session import check_settings, command_settings, open_target, resolve_target

    settings = command_settings(vars(args), Path.cwd())
    if not settings.cluster:
        raise ConfigError(NO_CLUSTER)
    if settings.multi:  # a verb acts on one cluster; only a pytest session runs several
        raise ConfigError(
            f"--runner-cluster={settings.cluster} names {len(settings.clusters)} clusters; a runnerconf verb "
            "acts on one: give one NAME"
        )
    check_settings(settings)
    target = open_target(resolve_target(settings), log, start=start)
    try:
        yield target
    finally:
        if target is not None and target.close is not None:
            target.close()


def cmd_profile(args: argparse.Namespace) -> int:
    """Print the profile of --runner-cluster as a run uses it (JSON; token sources, never a token)."""
    from pytest_runnerconf.session import with_runner_config

    with open_cluster(args, log=_err) as target:
        assert target is not None
        # As a run: a runner_config ConfigMap is read (one get) and its expectations shown with their origins.
        print(json.dumps(with_runner_config(target.profile).summary(), indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Cancel and delete what runs that died left behind; list their pods (the runner's to delete)."""
    from pytest_runnerconf import sweep
    from pytest_runnerconf.errors import KubeError
    from pytest_runnerconf.gitlab_driver import GitLabDriver
    from pytest_runnerconf.kube_driver import KubeDriver

    with open_cluster(args, log=_err, start=False) as target:
        if target is None:  # starting a fresh built-in cluster to find it empty would be pointless
            print(f"runnerconf sweep: the {args.runner_cluster!r} cluster is not running; nothing to sweep")
            return 0
        profile = target.profile
        older = (
            profile.expect.run_deadline_s
            if args.older_than is None
            else sweep.parse_duration(args.older_than)
        )
        gitlab = GitLabDriver(profile)
        gitlab.preflight()
        try:
            leftovers = sweep.find(gitlab, KubeDriver(profile), older)
        except KubeError as exc:
            print(f"runnerconf sweep: runner pods are not listed: {exc}")
            leftovers = sweep.find(gitlab, None, older)
        if not leftovers:
            print(
                f"runnerconf sweep: nothing older than {older:g}s left behind by earlier runs on cluster "
                f"{profile.name}"
            )
            return 0
        lines = sweep.act(gitlab, leftovers, dry_run=args.dry_run)
    for line, _ok in lines:
        print(f"runnerconf sweep: {line}")
    return 0 if all(ok for _line, ok in lines) else EXIT_COULD_NOT_TEST


def _add_sweep(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "sweep",
        help="cancel and delete what earlier runs that died left behind (branches, pipelines; pods are listed)",
        description="Find runnerconf/* scratch branches and their pipelines older than --older-than that carry "
        "this tool's run marker, cancel the pipelines, delete the branches, and list the runner pods of their "
        "jobs (never deleted: the runner owns them). A built-in cluster is used only when it already runs.",
    )
    add_cluster_options(parser)
    parser.add_argument(
        "--older-than",
        default=None,
        metavar="DURATION",
        help="only what is at least this old (90s, 30m, 2h; default: the profile's expect.run_deadline_s)",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    parser.set_defaults(func=cmd_sweep)


class _SelectedReads:
    """A pytest plugin that notes what the selected checks read (after -k/-m deselection)."""

    def __init__(self) -> None:
        self.reads: set[str] = set()
        self.checks: set[str] = set()
        self.errors: list[str] = []

    def pytest_collection_finish(self, session: Any) -> None:
        from pytest_runnerconf.checks import info_for

        for item in session.items:
            info = info_for(item)
            if info is not None:
                self.checks.add(info.id)
                self.reads.update(info.reads)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.errors.append(
                f"{report.nodeid or 'collection'}: {report.longreprtext.strip().splitlines()[-1]}"
            )


_SUITE = ["--pyargs", "pytest_runnerconf.suites"]


def selected_reads(selection: list[str]) -> _SelectedReads:
    """Collect (never run) the checks SELECTION names, as pytest would: paths, -k, -m, --pyargs."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import pytest

    found = _SelectedReads()
    args = ["--collect-only", "-qq", "-p", "no:cacheprovider", *selection]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = pytest.main(args, plugins=[found])
    if found.errors or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        said = "; ".join(found.errors) or f"pytest exited {int(code)}"
        raise ConfigError(f"the checks {' '.join(selection)} could not be collected ({said})")
    return found


def cmd_rbac(args: argparse.Namespace) -> int:
    """Print the least-privilege Role the selected checks need in the job namespace."""
    from pytest_runnerconf import rbac
    from pytest_runnerconf.runner_config import configmap_of

    namespace = args.namespace
    configmap = None  # the runner config's ConfigMap, when the profile's runner_config names one
    if args.runner_cluster:
        with open_cluster(args, log=_err, start=False) as target:
            if target is not None:
                namespace = namespace or target.profile.namespace
                configmap = configmap_of(target.profile)
    if namespace is None:
        raise ConfigError(
            "give --namespace NS, or --runner-cluster NAME of a profile (or of a running built-in cluster) to "
            "take the job namespace from"
        )
    selection = [
        *(["-k", args.k] if args.k else []),
        *(["-m", args.m] if args.m else []),
        *(args.paths or _SUITE),
    ]
    found = selected_reads(selection)
    print(
        rbac.manifest(
            namespace,
            found.reads,
            checks=len(found.checks),
            service_account=args.service_account,
            configmap=configmap,
        ),
        end="",
    )
    return 0


def _add_rbac(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "rbac",
        help="print the least-privilege Role (and RoleBinding) the selected checks need in the job namespace",
        description="Collect the checks as pytest would (paths, -k, -m; default: the bundled suite) and print "
        "the Role they need, each verb with what it is for.",
    )
    add_cluster_options(parser)
    parser.add_argument("--namespace", default=None, help="the job namespace (default: the profile's)")
    parser.add_argument("--service-account", default=ROLE_NAME, help="the RoleBinding's subject")
    parser.add_argument("-k", default=None, metavar="EXPRESSION", help="select checks as pytest -k does")
    parser.add_argument("-m", default=None, metavar="MARKEXPR", help="select checks as pytest -m does")
    parser.add_argument("paths", nargs="*", help="check files or directories (default: the bundled suite)")
    parser.set_defaults(func=cmd_rbac)


# ---------------------------------------------------------------- the command


def verbs(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, str]]:
    """(verb, one-line help) of every runnable verb, nested ones as 'local up'."""
    found: list[tuple[str, str]] = []
    for action in parser._actions:  # argparse offers no public way to list subcommands
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            nested = verbs(sub, f"{prefix}{name} ")
            found.extend(nested or [(f"{prefix}{name}", helps.get(name, ""))])
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runnerconf",
        usage="runnerconf [-h] [--version] VERB ...",  # the verbs are listed below, nested ones too
        description="Companion command of the pytest-runnerconf conformance suite. Run the suite itself with\n"
        "  pytest --pyargs pytest_runnerconf.suites --runner-cluster=NAME",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runnerconf {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="VERB", help=argparse.SUPPRESS, prog="runnerconf"
    )
    profile = commands.add_parser(
        "profile",
        help="print the profile --runner-cluster resolves to, as a run uses it (JSON, no token)",
        description="Print the profile of a cluster as a run uses it: connection values, token sources (never "
        "a token) and expectations. A built-in target such as 'local' is started for it when none runs.",
    )
    add_cluster_options(profile)
    profile.set_defaults(func=cmd_profile)
    _add_sweep(commands)
    _add_rbac(commands)
    for name in provider_names():
        try:
            provider = load_provider(name)
        except ConfigError:
            continue  # a provider that cannot be imported offers no verbs; its runs say why
        add = getattr(provider, "add_commands", None)
        if callable(add):
            add(commands)
    listed = verbs(parser)
    width = max(len(name) for name, _ in listed)
    lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in sorted(listed))
    parser.epilog = f"verbs:\n{lines}\n\n`runnerconf VERB --help` shows a verb's options."
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    _err(f"warning: {message}")


def main(argv: list[str] | None = None) -> int:
    # What the command prints passes the scrubber, as everything the plugin writes does.
    streams = sys.stdout, sys.stderr, warnings.showwarning
    sys.stdout, sys.stderr = ScrubbingStream(sys.stdout), ScrubbingStream(sys.stderr)
    warnings.showwarning = _show_warning
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except RunnerConfError as exc:
        _err(str(exc))
        return EXIT_COULD_NOT_TEST
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr, warnings.showwarning = streams


if __name__ == "__main__":
    sys.exit(main())
