"""The `runnerconf` command: verbs around the conformance suite; target providers add their own."""

from __future__ import annotations

import argparse
import sys

from pytest_runnerconf import __version__
from pytest_runnerconf.errors import ConfigError, RunnerConfError
from pytest_runnerconf.targets import load_provider, provider_names

EXIT_USAGE = 4
EXIT_COULD_NOT_TEST = 6


def _err(message: str) -> None:
    print(f"runnerconf: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runnerconf",
        description="Companion command of the pytest-runnerconf conformance suite "
        "(run the suite itself with `pytest --pyargs pytest_runnerconf.suites --runner-cluster=NAME`).",
    )
    parser.add_argument("--version", action="version", version=f"runnerconf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for name in provider_names():
        try:
            provider = load_provider(name)
        except ConfigError:
            continue  # a provider that cannot be imported offers no verbs; its runs say why
        add = getattr(provider, "add_commands", None)
        if callable(add):
            add(commands)
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
