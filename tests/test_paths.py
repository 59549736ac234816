"""Paths as pytest users expect them: CLI and environment paths are relative to where pytest was started, ini
paths to the ini file's directory; errors show the path as typed and as resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PRINT_SETTINGS = """
def pytest_collection_finish(session):
    import json
    from pytest_runnerconf.plugin import STATE
    s = session.config.stash[STATE].settings
    print("SETTINGS " + json.dumps({
        "config": str(s.config.path) if s.config else None,
        "evidence": str(s.evidence_dir) if s.evidence_dir else None,
        "replay": str(s.replay.path) if s.replay else None,
        "report": str(s.report_dir),
        "baseline": str(s.baseline.path) if s.baseline else None,
        "probes": [str(p.path) for p in s.probe_dirs],
    }))
"""
ONE_CHECK = """
from pytest_runnerconf import check

@check(id="RC-PTH-001", claim="c", remediation="r", area="paths", probes=("builds",))
def test_x(runnerconf_evidence):
    pass
"""
# option -> (settings key, whether it must exist: file, dir or None)
OPTIONS = {
    "runnerconf_config": ("config", "file"),
    "runnerconf_evidence": ("evidence", None),
    "runnerconf_replay": ("replay", "dir"),
    "runnerconf_report": ("report", None),
    "runnerconf_baseline": ("baseline", "report"),
    "runnerconf_probes": ("probes", "dir"),
}


def _prepare(pytester: pytest.Pytester, base: Path, name: str, kind: str | None) -> None:
    target = base / "given"
    if kind == "file":
        target.write_text("[clusters]\n")
    elif kind == "dir":
        target.mkdir()
        if name == "runnerconf_replay":
            (target / "evidence.json").write_text(json.dumps({"version": 1, "jobs": []}))
    elif kind == "report":
        target.write_text(json.dumps({"results": []}))


def _settings(result: pytest.RunResult) -> dict[str, object]:
    line = next(ln for ln in result.stdout.lines if ln.startswith("SETTINGS "))
    return dict(json.loads(line.removeprefix("SETTINGS ")))


@pytest.fixture
def layout(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> tuple[pytest.Pytester, Path]:
    """rootdir with the ini and conftest; pytest is started from rootdir/work/here."""
    pytester.makeconftest(PRINT_SETTINGS)
    here = pytester.path / "work" / "here"
    here.mkdir(parents=True)
    for name in OPTIONS:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(here)
    return pytester, here


def _value(settings: dict[str, object], key: str) -> object:
    value = settings[key]
    return value[0] if isinstance(value, list) else value


@pytest.mark.parametrize("name", list(OPTIONS))
def test_cli_path_is_relative_to_the_invocation_directory(
    layout: tuple[pytest.Pytester, Path], name: str
) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    key, kind = OPTIONS[name]
    _prepare(pytester, here, name, kind)
    flag = "--" + name.replace("_", "-")
    result = pytester.runpytest("--collect-only", "-q", f"{flag}=given", str(pytester.path))
    assert result.ret in (0, 5), result.stdout.str() + result.stderr.str()
    assert _value(_settings(result), key) == str(here / "given")


@pytest.mark.parametrize("name", list(OPTIONS))
def test_env_path_is_relative_to_the_invocation_directory(
    layout: tuple[pytest.Pytester, Path], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    key, kind = OPTIONS[name]
    _prepare(pytester, here, name, kind)
    monkeypatch.setenv(name.upper(), "given")
    result = pytester.runpytest("--collect-only", "-q", str(pytester.path))
    assert result.ret in (0, 5), result.stdout.str() + result.stderr.str()
    assert _value(_settings(result), key) == str(here / "given")


@pytest.mark.parametrize("name", list(OPTIONS))
def test_ini_path_is_relative_to_the_ini_file(layout: tuple[pytest.Pytester, Path], name: str) -> None:
    pytester, _ = layout
    pytester.makeini(f"[pytest]\n{name} = given\n")
    key, kind = OPTIONS[name]
    _prepare(pytester, pytester.path, name, kind)
    result = pytester.runpytest("--collect-only", "-q", str(pytester.path))
    assert result.ret in (0, 5), result.stdout.str() + result.stderr.str()
    assert _value(_settings(result), key) == str(pytester.path / "given")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("runnerconf_config", "profile file not found"),
        ("runnerconf_replay", "is not a directory; give an evidence bundle"),
        ("runnerconf_baseline", "report not found; give the report.json of a previous run"),
        ("runnerconf_probes", "probe directory not found"),
    ],
)
def test_errors_show_the_path_as_typed_and_as_resolved(
    layout: tuple[pytest.Pytester, Path], name: str, problem: str
) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    flag = "--" + name.replace("_", "-")
    result = pytester.runpytest("--collect-only", f"{flag}=missing/thing", str(pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {flag}=missing/thing ({here / 'missing' / 'thing'})*{problem}*"])


def test_default_report_dir_is_where_pytest_was_started(layout: tuple[pytest.Pytester, Path]) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("--collect-only", "-q", str(pytester.path))
    assert _settings(result)["report"] == str(here / "runnerconf-report")


def test_without_a_cluster_the_header_and_skips_say_how_to_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_one=ONE_CHECK)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    lines = [ln for ln in result.stdout.lines if "runnerconf: checks skipped" in ln]
    assert len(lines) == 1
    assert "--runner-cluster=local needs no configuration" in lines[0]
    result.stdout.fnmatch_lines(
        ["SKIPPED *no cluster selected: pass --runner-cluster=NAME to run the checks*"]
    )


@pytest.mark.parametrize(
    ("flag", "needs", "what"),
    [
        ("--runnerconf-report", "replay", "the conformance report"),
        ("--runnerconf-evidence", "cluster", "the evidence bundle"),
    ],
)
def test_an_output_directory_that_cannot_be_one_is_a_usage_error_before_anything_runs(
    layout: tuple[pytest.Pytester, Path], flag: str, needs: str, what: str
) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    (here / "taken").write_text("a file where a directory should go\n")
    _prepare(pytester, here, "runnerconf_replay", "dir")  # an evidence bundle at here/given
    # A cluster that does not exist: the directory is checked first, so nothing is even looked up.
    active = "--runnerconf-replay=given" if needs == "replay" else "--runner-cluster=nowhere"
    for typed, problem in (
        ("taken", f"is not a directory; give a directory for {what}"),
        ("taken/sub", f"cannot be created: {here / 'taken'} is not a directory"),
    ):
        result = pytester.runpytest("--collect-only", active, f"{flag}={typed}", str(pytester.path))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {flag}={typed} ({here / typed}) {problem}*"])
        assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_default_output_directory_in_the_way_names_the_option_to_set(
    layout: tuple[pytest.Pytester, Path],
) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    (here / "runnerconf-evidence").write_text("not a directory\n")
    result = pytester.runpytest("--collect-only", "--runner-cluster=nowhere", str(pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: the default directory {here / 'runnerconf-evidence'} for the evidence bundle is not a "
            "directory; remove it or pass --runnerconf-evidence=DIR"
        ]
    )


def test_a_report_that_cannot_be_written_at_the_end_is_one_sentence(
    layout: tuple[pytest.Pytester, Path],
) -> None:
    pytester, here = layout
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_one=ONE_CHECK)
    _prepare(pytester, here, "runnerconf_replay", "dir")  # an evidence bundle at here/given
    (here / "out" / "report.json").mkdir(parents=True)  # passes the check at start, fails the write
    result = pytester.runpytest("--runnerconf-replay=given", "--runnerconf-report=out", str(pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        [f"runnerconf: the report could not be written to --runnerconf-report=out ({here / 'out'}): *"]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
