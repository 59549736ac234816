"""Benchmark: does the suite take about as long as its slowest probe job?

Runs `pytest suites --runner-cluster=local` a few times and prints, per run, the run's wall time (push to
last pod gone), its slowest job and their ratio, from the conformance report. Usage:
    .venv/bin/python benchmarks/suite_wall.py [runs] [extra pytest args...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(extra: list[str]) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "suites",
                "--runner-cluster=local",
                f"--runnerconf-report={tmp}",
                f"--runnerconf-evidence={tmp}/evidence",
                "-q",
                "-p",
                "no:cacheprovider",
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        session = time.monotonic() - t0
        doc = json.loads((Path(tmp) / "report.json").read_text())
    slowest = doc["slowest_job"]
    return {
        "session_s": session,
        "wall_s": doc["wall_s"],
        "slowest_s": slowest["duration_s"],
        "slowest": slowest["name"],
        "ratio": doc["wall_s"] / slowest["duration_s"],
    }


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for i in range(runs):
        r = one(sys.argv[2:])
        print(
            f"run {i + 1}: session {r['session_s']:.1f}s, pipeline wall {r['wall_s']:.1f}s, "
            f"slowest job {r['slowest_s']:.1f}s ({r['slowest']}), wall/slowest {r['ratio']:.2f}"
        )


if __name__ == "__main__":
    main()
