"""The `runnerconf` command: verbs around the conformance suite; target providers add their own."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from pytest_runnerconf import __version__
from pytest_runnerconf.errors import ConfigError, RunnerConfError
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
def open_cluster(args: argparse.Namespace, log: Callable[[str], None]) -> Iterator[Target]:
    """The target --runner-cluster names, opened as a run opens it, and closed after use.

    Paths are relative to the current directory, as on pytest's command line. A provider's target (the
    built-in 'local') is started when none runs and stopped again afterwards.

    Raises:
        ConfigError: no cluster given, or the profile cannot be used.
        RunnerConfError: the target cannot be started or reached.
    """
    from pytest_runnerconf.session import check_settings, command_settings, open_target, resolve_target

    settings = command_settings(vars(args), Path.cwd())
    if not settings.cluster:
        raise ConfigError(NO_CLUSTER)
    check_settings(settings)
    target = open_target(resolve_target(settings), log)
    try:
        yield target
    finally:
        if target.close is not None:
            target.close()


def cmd_profile(args: argparse.Namespace) -> int:
    """Print the profile of --runner-cluster as a run uses it (JSON; token sources, never a token)."""
    with open_cluster(args, log=_err) as target:
        print(json.dumps(target.profile.summary(), indent=2))
    return 0


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except RunnerConfError as exc:
        _err(str(exc))
        return EXIT_COULD_NOT_TEST
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
