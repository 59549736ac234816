"""RFC 3339 times as GitLab and Kubernetes write them ("2026-11-23T00:00:04.123Z"), as epoch seconds."""

from __future__ import annotations

from datetime import datetime


def epoch(stamp: object) -> float | None:
    """STAMP as seconds since the epoch; a number passes through; None when absent or unreadable."""
    if isinstance(stamp, int | float):
        return float(stamp)
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
