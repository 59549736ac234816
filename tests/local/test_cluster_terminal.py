"""Progress output of real runs on the local cluster: captured to a file (a CI log) and on a pseudo-terminal.

Also the `runnerconf profile` verb against the built-in 'local' target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.cli import main
from pytest_runnerconf.evidence import load
from tests.busy_node import clean_run
from tests.pty_session import run_in_pty

ROOT = Path(__file__).resolve().parents[2]
OURS = re.compile(r"^runnerconf local: ")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BUILD_NUMBER", "RUNNERCONF_LOCAL_FAULTS")}
    return {**env, **extra}


def _argv(out: Path, *paths: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *paths,  # relative to the checkout, where the runs start (so pytest prints them as a user sees them)
        "--runner-cluster=local",
        f"--runnerconf-evidence={out / 'evidence'}",
        f"--runnerconf-report={out / 'report'}",
        "-p",
        "no:cacheprovider",
    ]


# Modules whose probe jobs are many (more than a screen's worth of job lines) and quick: the DinD, logs,
# disruption and capacity jobs, which make a whole run last 40 s, add nothing to what a log must look like.
MANY_QUICK_JOBS = [
    f"suites/test_{name}.py"
    for name in (
        "ordering",
        "builds_volume",
        "aliases",
        "resources",
        "images",
        "labels",
        "security",
        "cleanup",
    )
]


def test_a_run_captured_to_a_file_is_a_plain_log(local_cluster: Any, tmp_path: Path) -> None:
    log = tmp_path / "conformance.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            _argv(tmp_path, *MANY_QUICK_JOBS),
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    text = log.read_text()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert clean_run(proc.returncode, report), text[-3000:]
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    ours = [line for line in lines if OURS.match(line)]
    assert [line for line, n in Counter(ours).items() if n > 1] == []
    # Every job of the run ends exactly once, with the status GitLab gave it.
    jobs = load(tmp_path / "evidence").jobs
    assert len(jobs) >= 10
    for name, job in jobs.items():
        ends = [line for line in ours if re.search(rf"\] job {re.escape(name)} finished: ", line)]
        assert len(ends) == 1, (name, ends)
        assert f"finished: {job.status}" in ends[0]
    assert re.search(r"\] done: \d+ jobs \(.*\), (\d+) of \1 pods deleted$", ours[-1]), ours[-1]
    # pytest's rows: the module prefix before our lines, and again with its letters after them.
    first, last = lines.index(ours[0]), lines.index(ours[-1])
    assert re.fullmatch(r"suites/test_\w+\.py ", lines[first - 1])
    assert re.fullmatch(r"suites/test_\w+\.py \.+ +\[ *\d+%\]", lines[last + 1])
    assert not any(re.fullmatch(r"\s*\.+\s*", line) for line in lines)


def test_a_run_on_a_terminal_has_one_live_row(local_cluster: Any, tmp_path: Path) -> None:
    result = run_in_pty(_argv(tmp_path, "suites/test_ordering.py"), cwd=ROOT, env=_env(), timeout_s=600)
    assert result.returncode == 0, result.raw[-3000:]
    assert "\rrunnerconf local: [" in result.raw  # rewritten in place
    rows = result.screen()
    ours = [i for i, row in enumerate(rows) if OURS.match(row)]
    assert len(ours) == 1, rows  # the live row ended as the done line; nothing else of ours stays
    done = ours[0]
    assert " done: " in rows[done]
    assert rows[done - 1] == "suites/test_ordering.py"
    assert re.fullmatch(r"suites/test_ordering\.py \.+ +\[100%\]", rows[done + 1])


def test_profile_verb_opens_the_local_cluster(
    local_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNERCONF_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["profile", "--runner-cluster=local"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "local"
    assert shown["gitlab_url"] == local_cluster.gitlab_url
    assert shown["namespace"] == local_cluster.namespace
    assert local_cluster.gitlab_token not in json.dumps(shown)
