"""The `runnerconf` command: --version, a --help that lists every verb, cluster verbs take --runner-cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_runnerconf import __version__
from pytest_runnerconf.cli import EXIT_USAGE, NO_CLUSTER, build_parser, main, verbs

PROFILE = """
[clusters.prod]
gitlab_url = "https://gitlab.example.test"
token_env = "RUNNERCONF_CLI_TEST_TOKEN"
project = "group/scratch"
runner_tags = ["k8s"]
namespace = "ci"

[clusters.prod.expect]
cleanup_deadline_s = 45
"""


def _runnerconf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_runnerconf.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    done = _runnerconf("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"runnerconf {__version__}"


def test_help_lists_every_verb_on_one_line() -> None:
    done = _runnerconf("--help")
    assert done.returncode == 0
    listed = verbs(build_parser())
    names = {name for name, _ in listed}
    assert {"profile", "local setup", "local up", "local down", "local status"} <= names
    lines = done.stdout.splitlines()
    for name, text in listed:
        assert text, f"verb {name!r} has no help line"
        assert [line for line in lines if line.split(text)[0].strip() == name] == [f"  {name:<12}  {text}"]


@pytest.mark.parametrize("verb", sorted(name for name, _ in verbs(build_parser())))
def test_every_listed_verb_exists(verb: str) -> None:
    done = _runnerconf(*verb.split(), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: runnerconf {verb}")


@pytest.mark.parametrize("argv", [[], ["no-such-verb"], ["profile", "--no-such-option"]])
def test_a_bad_command_line_is_a_usage_error(argv: list[str]) -> None:
    done = _runnerconf(*argv)
    assert done.returncode == EXIT_USAGE
    assert "runnerconf" in done.stderr and "error:" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of the user's own, with the environment's cluster settings removed."""
    for name in ("RUNNERCONF_CLUSTER", "RUNNERCONF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _profile(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["profile", *argv]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_profile_takes_runner_cluster_like_the_plugin(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "runnerconf.toml").write_text(PROFILE)
    shown = _profile(capsys, "--runner-cluster=prod")
    assert shown["name"] == "prod" and shown["source"] == str(here / "runnerconf.toml")
    assert shown["token_env"] == "RUNNERCONF_CLI_TEST_TOKEN"
    assert shown["expect"]["cleanup_deadline_s"] == 45  # type: ignore[index]


def test_profile_shows_what_the_runner_config_gives_and_where_from(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parent / "data" / "runner_config" / "full-kubernetes.toml"
    (here / "runnerconf.toml").write_text(
        PROFILE.replace("[clusters.prod.expect]", f'runner_config = "{config}"\n[clusters.prod.expect]')
    )
    shown = _profile(capsys, "--runner-cluster=prod")
    assert shown["expect"]["poll_timeout_s"] == 600  # type: ignore[index]
    assert shown["expect"]["cleanup_deadline_s"] == 45  # type: ignore[index]  # the profile's own
    assert shown["expect_set"]["poll_timeout_s"] == [  # type: ignore[index]
        "runner config",
        f"file {config}: [runners.kubernetes] poll_timeout",
    ]
    assert shown["runner_config_found"]["runner"] == "k8s-prod"  # type: ignore[index]


def test_profile_reads_the_plugins_environment_variables(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "profiles").mkdir()
    (here / "profiles" / "mine.toml").write_text(PROFILE)
    monkeypatch.setenv("RUNNERCONF_CLUSTER", "prod")
    monkeypatch.setenv("RUNNERCONF_CONFIG", "profiles/mine.toml")  # relative to where the command runs
    assert _profile(capsys)["source"] == str(here / "profiles" / "mine.toml")


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        ([], NO_CLUSTER),
        (
            ["--runner-cluster=prod", "--runnerconf-config=gone.toml"],
            "--runnerconf-config=gone.toml ({here}/gone.toml): profile file not found",
        ),
        (["--runner-cluster=staging"], "no profile file defines cluster 'staging'"),
        (["--runner-cluster=a,b"], "--runner-cluster=a,b names 2 clusters; a runnerconf verb acts on one"),
    ],
)
def test_profile_bad_input_is_one_sentence_and_exit_4(
    here: Path, capsys: pytest.CaptureFixture[str], argv: list[str], sentence: str
) -> None:
    assert main(["profile", *argv]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("runnerconf: " + sentence.format(here=here))
    assert len(captured.err.strip().splitlines()) == 1
