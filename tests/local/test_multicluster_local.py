"""Two clusters in one invocation, for real: two profiles that both point at the running local cluster.

Both pipelines run at once on the one local runner: each must keep to its own scratch branch, jobs and pods,
and the report must hold the check x cluster matrix, a section per cluster and the combined exit status.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pytest_runnerconf.evidence import load
from pytest_runnerconf.local.provider import local_table
from tests.report_schema import assert_valid_report_file

ROOT = Path(__file__).resolve().parents[2]
SELECTION = "ordering or builds"
NAMES = ("east", "west")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # inside a list (scheduling's affinity terms): an inline table
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted one (label keys hold dots and slashes)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_table(prefix: str, table: dict[str, Any]) -> list[str]:
    lines = [f"[{prefix}]"]
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        lines += ["", *_toml_table(f"{prefix}.{_toml_key(key)}", value)]
    return lines


def _profile_file(directory: Path, info: Any) -> Path:
    """A user's runnerconf.toml with two cluster tables, each the running local cluster's own values."""
    table = local_table(info, {})
    lines: list[str] = []
    for name in NAMES:
        lines += [*_toml_table(f"clusters.{name}", table), ""]
    path = directory / "runnerconf.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    drop = ("CI", "BUILD_NUMBER", "RUNNERCONF_LOCAL_FAULTS", "RUNNERCONF_CLUSTER", "RUNNERCONF_CONFIG")
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_two_profiles_on_the_local_cluster_give_the_matrix(local_cluster: Any, tmp_path: Path) -> None:
    config = _profile_file(tmp_path, local_cluster)
    report_dir, evidence_dir = tmp_path / "report", tmp_path / "evidence"
    argv = [
        sys.executable, "-m", "pytest", "suites", "-k", SELECTION, "-v", "-p", "no:randomly", "-p", "no:cacheprovider",
        f"--runner-cluster={','.join(NAMES)}", f"--runnerconf-config={config}",
        f"--runnerconf-report={report_dir}", f"--runnerconf-evidence={evidence_dir}",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    print(f"two-cluster run of -k {SELECTION!r}: {wall:.1f}s")

    # Every check once per cluster, its ID ending in the cluster's name.
    ids = re.findall(r"^(suites/test_\w+\.py::\w+(?:\[[^\]]*\])?) PASSED", out, re.M)
    by_cluster = {
        name: sorted(i.removesuffix(f"[{name}]") for i in ids if i.endswith(f"[{name}]")) for name in NAMES
    }
    assert by_cluster[NAMES[0]] and by_cluster[NAMES[0]] == by_cluster[NAMES[1]], out[-6000:]
    # Every check's result starts its own row: none lands after a progress line of either cluster.
    assert not re.search(r"^runnerconf .*(PASSED|FAILED|SKIPPED)", out, re.M), out[-6000:]
    assert len(ids) == 2 * len(by_cluster[NAMES[0]])
    for name in NAMES:
        assert re.search(rf"^runnerconf {name}: \[ *\d+s\] pipeline #\d+ created", out, re.M), out[-3000:]
        assert re.search(rf"^runnerconf \[{name}\]: wall \d+\.\ds, ", out, re.M)

    doc = assert_valid_report_file(report_dir / "report.json")
    assert (doc["exit_code"], doc["verdict"]) == (0, "conformant")
    assert doc["matrix"]["clusters"] == list(NAMES)
    checks = {row["id"]: row["outcomes"] for row in doc["matrix"]["rows"]}
    assert checks and all(outcomes == dict.fromkeys(NAMES, "passed") for outcomes in checks.values()), checks
    assert {r["id"] for r in doc["results"]} == set(checks)
    sections = {s["name"]: s for s in doc["clusters"]}
    assert list(sections) == list(NAMES)
    runs = {}
    for name in NAMES:
        section = sections[name]
        assert (section["verdict"], section["exit_code"], section["error"]) == ("conformant", 0, None)
        assert section["counts"]["passed"] == len(by_cluster[name])
        own = assert_valid_report_file(report_dir / name / "report.json")
        assert own["cluster"] == name and len(own["results"]) == len(by_cluster[name])
        assert (report_dir / name / "report.html").is_file()
        runs[name] = load(Path(section["evidence"]))
        assert Path(section["evidence"]) == evidence_dir / name
    east, west = (runs[n] for n in NAMES)
    # Two pipelines on one runner, each with its own run id, scratch branch, jobs and pods.
    assert east.run_id != west.run_id and east.branch != west.branch
    assert east.pipeline["id"] != west.pipeline["id"]
    assert west.pipeline["id"] in (east.other_pipelines or []) or east.pipeline["id"] in (
        west.other_pipelines or []
    )
    east_pods = {j.pod.name for j in east.jobs.values() if j.pod is not None}
    west_pods = {j.pod.name for j in west.jobs.values() if j.pod is not None}
    assert east_pods and west_pods and not east_pods & west_pods
    for run in (east, west):
        ids_of_run = {int(j.job["id"]) for j in run.jobs.values()}
        assert all(
            int(j.job["pipeline"]["id"]) == int(run.pipeline["id"])
            for j in run.jobs.values()
            if "pipeline" in j.job
        )
        assert len(ids_of_run) == len(run.jobs)
    # The two runs overlapped: neither finished before the other started.
    assert east.started_at < west.finished_at and west.started_at < east.finished_at
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    assert f"| check | claim | {NAMES[0]} | {NAMES[1]} |" in md
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert html.count('<section class="cluster"') == 2 and f'href="{NAMES[0]}/report.html"' in html
