"""Benchmark: does the suite take about as long as its slowest probe job, and where does the rest go?

Runs `pytest suites --runner-cluster=local` several times and prints, per run and as the median of all runs,
where the run's time went, from the evidence bundle's timings (this machine's clock throughout):

    push → pipeline            the branch pushed to the pipeline created
    pipeline → first pod       the pipeline created to the watch's first job pod
    slowest job                the longest probe job, start to end as the run saw them
    last job end → last pod    the last job seen finished to the last job pod deleted
    last pod → run end         the last job pod deleted to the evidence collected
    gone → run end             the last pod AND per-job Secret gone to the evidence collected
    wall                       push to run end

and the ratios wall ÷ slowest job and wall ÷ (push → last pod and Secret gone). Usage:
    .venv/bin/python benchmarks/suite_wall.py [runs] [extra pytest args...]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_runnerconf.evidence import RunEvidence, load  # noqa: E402

COLUMNS = (
    ("push_to_pipeline", "push → pipeline"),
    ("pipeline_to_first_pod", "pipeline → first pod"),
    ("slowest_job", "slowest job"),
    ("last_job_end_to_last_pod", "last job end → last pod"),
    ("last_pod_to_run_end", "last pod → run end"),
    ("gone_to_run_end", "gone → run end"),
    ("wall", "wall"),
    ("wall_per_slowest", "wall ÷ slowest"),
    ("wall_per_push_to_gone", "wall ÷ push→gone"),
)


def _latest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def breakdown(run: RunEvidence) -> dict[str, float | None]:
    """Where one run's time went (seconds; None where the bundle lacks the mark)."""
    marks = run.timings
    pushed, created, end = marks.get("pushed"), marks.get("pipeline_created"), marks.get("collected")
    pods = [job.pod for job in run.jobs.values() if job.pod is not None]
    first_pod = min((p.first_seen for p in pods), default=None)
    last_pod = _latest([p.deleted_at for p in pods])
    last_job = _latest([job.observed_end for job in run.jobs.values()])
    ours = {
        str(ref.get("name")) for p in pods for ref in p.spec.get("spec", {}).get("imagePullSecrets") or []
    }
    last_secret = _latest([s.get("deleted_at") for n, s in (run.secrets or {}).items() if n in ours])
    gone = _latest([last_pod, last_secret])
    spans = [
        job.observed_end - job.observed_start
        for job in run.jobs.values()
        if job.observed_end is not None and job.observed_start is not None
    ]
    slowest = max(spans, default=None)

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    wall, push_to_gone = span(pushed, end), span(pushed, gone)
    return {
        "push_to_pipeline": span(pushed, created),
        "pipeline_to_first_pod": span(created, first_pod),
        "slowest_job": slowest,
        "last_job_end_to_last_pod": span(last_job, last_pod),
        "last_pod_to_run_end": span(last_pod, end),
        "gone_to_run_end": span(gone, end),
        "wall": wall,
        "wall_per_slowest": None if wall is None or not slowest else wall / slowest,
        "wall_per_push_to_gone": None if wall is None or not push_to_gone else wall / push_to_gone,
    }


def one(extra: list[str]) -> tuple[dict[str, float | None], float] | None:
    """One suite run's breakdown and its session time; None (its output shown) when it left no evidence."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "suites",
                "--runner-cluster=local",
                f"--runnerconf-report={tmp}/report",
                f"--runnerconf-evidence={tmp}/evidence",
                "-q",
                "-p",
                "no:cacheprovider",
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        session = time.monotonic() - t0
        bundle = next(Path(tmp, "evidence").rglob("evidence.json"), None)
        if bundle is None:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
            return None
        return breakdown(load(bundle.parent)), session


def _cell(value: Any, ratio: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if ratio else f"{value:.1f}s"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rows: list[dict[str, float | None]] = []
    header = " | ".join(["run", "session", *(label for _, label in COLUMNS)])
    print(header)
    for i in range(runs):
        result = one(sys.argv[2:])
        if result is None:
            print(f"{i + 1} | the run left no evidence bundle (its output is above)")
            continue
        row, session = result
        rows.append(row)
        cells = [_cell(row[key], key.startswith("wall_per")) for key, _ in COLUMNS]
        print(" | ".join([str(i + 1), f"{session:.1f}s", *cells]), flush=True)
    medians = []
    for key, _ in COLUMNS:
        known = [v for r in rows if (v := r[key]) is not None]
        medians.append(_cell(statistics.median(known) if known else None, key.startswith("wall_per")))
    print(" | ".join(["median", "", *medians]))


if __name__ == "__main__":
    main()
