"""report.md: the verdict, the counts and what did not pass, for CI job summaries and merge-request comments.

Rendered from report.json's document with Jinja2 (templates/report.md.j2). Markdown has no autoescaping, so
every value from the cluster or a check passes the `cell` filter: HTML-escaped (GitLab renders inline HTML),
pipes escaped, one line, clipped; a trace line that looks like markup stays text.
"""

from __future__ import annotations

import functools
import html
import json
import urllib.parse
from typing import Any

import jinja2

from pytest_runnerconf import versions
from pytest_runnerconf.outcome import OUTCOMES

# The outcome as one word in a table cell.
LABELS = {
    "passed": "PASS",
    "failed": "FAIL",
    "could_not_test": "COULD NOT TEST",
    "error": "ERROR",
    "skipped": "SKIP",
}
WORDS = {"could_not_test": "could not test"}
# Worst first: what a reader of a merge-request comment must see before the rest.
_ORDER = {"failed": 0, "error": 1, "could_not_test": 2}
CELL_LIMIT = 300
HEADER_FIELDS = (
    "cluster", "gitlab_url", "gitlab_version", "kubernetes_version", "runner_versions", "cgroup_versions",
    "wall_s", "slowest_job", "pipeline_url", "command", "notes",
)  # fmt: skip


def cell(value: object, limit: int = CELL_LIMIT) -> str:
    """VALUE as one Markdown table cell: JSON for structured values, escaped, on one line, clipped."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")


def link(url: object) -> str | None:
    """An http(s) URL fit for a Markdown link target (brackets, spaces and pipes encoded), else None."""
    text = str(url or "")
    if not text.startswith(("http://", "https://")):
        return None
    return urllib.parse.quote(text, safe=":/?#[]@!$&'*+,;=%-._~")


# One environment per process: it keeps the compiled templates (compiling is most of a render's time).
@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_runnerconf", "templates"),
        autoescape=False,  # Markdown, not HTML: the `cell` filter does the escaping that Markdown needs
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = cell
    return env


def _observed(result: dict[str, Any]) -> Any:
    """The check's own short form of what it observed when it wrote one (`summary`), else the deciding
    observed value, else every judged expectation's that did not hold."""
    if result.get("summary"):
        return result["summary"]
    if result.get("observed") not in (None, ""):
        return result["observed"]
    judged = [e for e in result.get("expectations") or [] if isinstance(e, dict)]
    missed = [e.get("observed") for e in judged if e.get("held") is False]
    return "; ".join(cell(v) for v in missed) if missed else None


def _why(result: dict[str, Any]) -> str:
    """For a check that did not pass: the cause and its sentence, or the first line of its message."""
    if result.get("outcome") == "could_not_test":
        return f"{result.get('cause')}: {result.get('sentence') or ''}"
    message = str(result.get("message") or "")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return "" if result.get("outcome") == "failed" and _observed(result) is not None else first


def not_passing(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for result in doc.get("results") or []:
        outcome = str(result.get("outcome") or "")
        if outcome not in _ORDER:
            continue
        rows.append(
            {
                "id": str(result.get("id") or ""),
                "claim": result.get("claim") or "",
                "label": LABELS.get(outcome, outcome),
                "outcome": outcome,
                "observed": _observed(result),
                "expected": result.get("expected"),
                "why": _why(result),
                "remediation": result.get("remediation") or "",
                "job_url": link(result.get("job_url")),
            }
        )
    return sorted(rows, key=lambda r: (_ORDER[r["outcome"]], r["id"]))


def render(doc: dict[str, Any], html_link: str) -> str:
    """report.md for DOC (report.json's content); HTML_LINK is where report.html is read."""
    counts = doc.get("counts") or {}
    words = [f"{counts[o]} {WORDS.get(o, o)}" for o in OUTCOMES if counts.get(o)]
    passed_or_skipped = [r for r in doc.get("results") or [] if r.get("outcome") in ("passed", "skipped")]
    # The header's fields, each present (None when this document has no such field: an older or hand-made one).
    header = {key: doc.get(key) for key in HEADER_FIELDS}
    behaviours = doc.get("runner_behaviours")
    template = _environment().get_template("report.md.j2")
    return template.render(
        h=header,
        verdict=str(doc.get("verdict") or ""),
        counts=", ".join(words) or "no checks",
        rows=not_passing(doc),
        others=passed_or_skipped,
        labels=LABELS,
        html_link=link(html_link) or urllib.parse.quote(html_link),
        baseline=doc.get("baseline"),
        words=WORDS,
        behaviours=versions.behaviour_line(behaviours) if isinstance(behaviours, list) and behaviours else "",
    )
