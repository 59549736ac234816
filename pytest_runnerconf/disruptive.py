"""The opt-in marker `disruptive`: checks that disturb the cluster (evict a pod) run only when asked for.

A disruptive check evicts its own probe pod and needs `create pods/eviction`; a plain `pytest suites` must
neither do that nor ask for the grant. So such checks are deselected unless the -m expression names the
marker (`-m disruptive`, `-m "disruptive or not disruptive"` for the whole suite), and pytest counts them as
deselected, with one line that says how to run them.
"""

from __future__ import annotations

import re

import pytest

MARKER = "disruptive"
HELP = (
    f"{MARKER}: an opt-in check that disturbs the cluster (evicts its probe pod, needs create "
    "pods/eviction); deselected unless -m names it"
)
_NAMED = re.compile(rf"\b{MARKER}\b")


def asked_for(markexpr: str) -> bool:
    """Whether the -m expression mentions the marker (then pytest's own -m decides what runs)."""
    return bool(_NAMED.search(markexpr or ""))


def deselect(config: pytest.Config, items: list[pytest.Item]) -> str:
    """Drop the disruptive items unless -m names the marker; the one-line note saying so ("" if none)."""
    if asked_for(str(config.getoption("markexpr", "") or "")):
        return ""
    dropped = [item for item in items if item.get_closest_marker(MARKER) is not None]
    if not dropped:
        return ""
    config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if item.get_closest_marker(MARKER) is None]
    return (
        f"runnerconf: {len(dropped)} disruptive checks deselected (they evict a probe pod and need create "
        'pods/eviction); run them with -m disruptive, or the whole suite with -m "disruptive or not disruptive"'
    )
