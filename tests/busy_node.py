"""A clean run's outcomes on a machine whose 2 CPUs other work may share.

RC-CPU-001 says could not test (cause inconclusive) when the node was too busy for its loops to reach their
limit: an honest verdict, and not what the tests about installation or terminal output are about. They accept
that one outcome and nothing else: every other check passed, and the exit code is what it then must be (6).
"""

from __future__ import annotations

from typing import Any


def clean_run(code: int, report: dict[str, Any]) -> bool:
    """Every check passed (exit 0), or only busy-node inconclusives could not be tested (exit 6)."""
    results = report.get("results") or []
    if not results:
        return False
    others = [r for r in results if r["outcome"] != "passed"]
    if not others:
        return code == 0
    return code == 6 and all(
        r["outcome"] == "could_not_test" and r["cause"] == "inconclusive" for r in others
    )
