"""Benchmark: how large report.html is and how long it takes to render, for a saved run.

Reads an evidence bundle and the report.json written with it, renders report.html a few times and prints the
page's size (plain and gzipped), its timeline count and the render time (first and median). Usage:
    .venv/bin/python benchmarks/report_render.py EVIDENCE_DIR REPORT_DIR [repeats]
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_runnerconf import evidence, report_html  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    run = evidence.load(Path(argv[0]))
    report_dir = Path(argv[1])
    doc = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    repeats = int(argv[2]) if len(argv) > 2 else 10
    times, page = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        page = report_html.render(doc, run, report_dir=report_dir)
        times.append(time.perf_counter() - started)
    data = page.encode()
    print(
        f"report.html: {len(run.jobs)} jobs, {len(doc.get('results') or [])} results, "
        f"{page.count('<svg')} timelines, {len(data) / 1024:.0f} KiB ({len(gzip.compress(data)) / 1024:.0f} KiB "
        f"gzipped); render first {times[0] * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
