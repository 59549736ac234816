"""The report of a multi-cluster invocation: a check x cluster matrix, a section per cluster, one exit status.

Each cluster also gets the full single-cluster report (timelines, evidence links) in REPORT_DIR/<cluster>/;
REPORT_DIR/report.{json,md,html} holds every result (each with its `cluster`), the matrix and the sections.
report.json stays a version-2 report: the keys a single-cluster report has (the run facts at the top are null:
they differ per cluster and are in `clusters`), plus `clusters` and `matrix`, which only this report has.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_runnerconf import report, report_html, report_md, safefiles
from pytest_runnerconf.outcome import CAUSES, OUTCOMES
from pytest_runnerconf.report import CheckResult, compare_reports
from pytest_runnerconf.scrub import scrub_data, scrub_json, scrub_text

if TYPE_CHECKING:
    from pytest_runnerconf.multicluster import ClusterError, MultiSession

# What a cluster section copies from that cluster's own report.json.
SECTION_FIELDS = (
    "gitlab_url", "gitlab_version", "kubernetes_version", "project", "pipeline_url", "runner_versions",
    "cgroup_versions", "wall_s", "slowest_job", "jobs", "evidence",
)  # fmt: skip
# The keys only a report of several clusters has (the schema's optional ones), at the top and in each result.
MULTI_KEYS = ("exit_code", "clusters", "matrix")
MULTI_RESULT_KEYS = ("cluster",)
_SEVERITY = {"passed": 0, "skipped": 1, "could_not_test": 2, "failed": 3, "error": 4}
_SAFE_DIR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def cluster_dir(name: str, index: int) -> str:
    """The directory under the report directory for cluster NAME's own report (a safe path component)."""
    return name if _SAFE_DIR.match(name) else f"cluster-{index + 1}"


def matrix(names: Iterable[str], results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """{"clusters": [...], "rows": [{id, claim, area, outcomes: {cluster: outcome | None}, why: {...}}]}.

    A check with several results on one cluster (a parametrised check) shows its worst there; None: the check
    did not run on that cluster.
    """
    names = list(names)
    rows: dict[str, dict[str, Any]] = {}
    for result in sorted(results, key=lambda r: (str(r["id"]), str(r.get("nodeid") or ""))):
        cluster = result.get("cluster")
        if cluster not in names:
            continue
        row = rows.setdefault(
            str(result["id"]),
            {
                "id": result["id"],
                "claim": result.get("claim") or "",
                "area": result.get("area") or "",
                "outcomes": dict.fromkeys(names),
                "why": dict.fromkeys(names, ""),
            },
        )
        known = row["outcomes"][cluster]
        if known is None or _SEVERITY[str(result["outcome"])] > _SEVERITY[str(known)]:
            row["outcomes"][cluster] = result["outcome"]
            row["why"][cluster] = report._result(dict(result)).why()
    return {"clusters": names, "rows": list(rows.values())}


def section(
    name: str, doc: Mapping[str, Any] | None, error: ClusterError | None, href: str | None
) -> dict[str, Any]:
    """One cluster's part of the report: its verdict and exit status, counts, run facts, and why it stopped."""
    from pytest_runnerconf.multicluster import combine_exit, outcome_exit

    results = list(doc["results"]) if doc is not None else []
    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    codes = [outcome_exit(r["outcome"] for r in results)]
    if error is not None:
        codes.append(error.code)
    verdict = report_html.verdict(counts)
    if error is not None and error.code != 6 and not counts["failed"] and not counts["error"]:
        verdict = "could not test"
    return {
        "name": name,
        "verdict": verdict,
        "exit_code": combine_exit(codes),
        "counts": counts,
        "error": (
            {"message": error.message, "code": error.code, "cause": error.cause if error.code == 6 else None}
            if error is not None
            else None
        ),
        "report": href,
        **{key: (doc or {}).get(key) for key in SECTION_FIELDS},
        "not_passing": [
            {
                "id": r["id"],
                "claim": r.get("claim") or "",
                "outcome": r["outcome"],
                "why": report._result(r).why(),
            }
            for r in sorted(results, key=lambda r: (-_SEVERITY[r["outcome"]], r["id"]))
            if r["outcome"] not in ("passed", "skipped")
        ],
    }


def multi_doc(
    names: list[str],
    docs: Mapping[str, Mapping[str, Any] | None],
    errors: Mapping[str, ClusterError],
    hrefs: Mapping[str, str | None],
    argv: list[str] | None,
) -> dict[str, Any]:
    """The top-level report.json of several clusters, from each cluster's own report.json document."""
    from pytest_runnerconf.multicluster import combine_exit

    results = [{**r, "cluster": name} for name in names for r in (docs.get(name) or {}).get("results", [])]
    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    sections = [section(n, docs.get(n), errors.get(n), hrefs.get(n)) for n in names]
    notes = [f"{n}: {note}" for n in names for note in (docs.get(n) or {}).get("notes", [])]
    verdict = report_html.verdict(counts)
    if any(s["verdict"] == "could not test" for s in sections) and verdict == "conformant":
        verdict = "could not test"  # a cluster without evidence leaves the whole invocation untested
    return {
        "version": report.REPORT_VERSION,
        "generated_at": time.time(),
        "verdict": verdict,
        "command": report_html.reproduce_command(sys.argv if argv is None else argv),
        **report._header(None),  # the keys every report has; the run facts are each cluster's, in `clusters`
        "jobs": sum(int((docs.get(n) or {}).get("jobs") or 0) for n in names),
        "notes": notes,
        "counts": counts,
        "causes": {c: CAUSES[c] for c in sorted({str(r.get("cause")) for r in results} & set(CAUSES))},
        "results": results,
        "baseline": None,
        "exit_code": combine_exit(s["exit_code"] for s in sections),
        "clusters": sections,
        "matrix": matrix(names, results),
    }


def write_reports(
    results: Iterable[CheckResult],
    multi: MultiSession,
    directory: Path,
    *,
    baseline: tuple[str, dict[str, Any]] | None = None,
    argv: list[str] | None = None,
) -> Path:
    """Each cluster's own report in DIRECTORY/<cluster>/, then the combined one in DIRECTORY; its report.json."""
    directory = Path(directory)
    results = list(results)
    docs: dict[str, dict[str, Any] | None] = {}
    hrefs: dict[str, str | None] = {}
    for index, name in enumerate(multi.names):
        own = [r for r in results if multi.cluster_of.get(r.nodeid) == name]
        sub = cluster_dir(name, index)
        paths = report.write_reports(own, multi.run(name), directory / sub, argv=argv)
        docs[name] = json.loads(paths["json"].read_text(encoding="utf-8"))
        hrefs[name] = f"{sub}/report.html"
    doc = multi_doc(list(multi.names), docs, multi.errors(), hrefs, argv)
    if baseline is not None:
        doc["baseline"] = compare_reports(baseline[1], doc).data(baseline[0])
    doc = scrub_data(doc)
    texts = {
        "json": scrub_json(doc) + "\n",
        "md": scrub_text(render_md(doc)),
        "html": scrub_text(render_html(doc)),
    }
    paths = {kind: safefiles.write_text(directory, f"report.{kind}", text) for kind, text in texts.items()}
    return paths["json"]


# ---------------------------------------------------------------- rendering


def render_md(doc: Mapping[str, Any]) -> str:
    """report.md: the verdict, the matrix, and per cluster its verdict, facts and what did not pass."""
    cell, labels = report_md.cell, report_md.LABELS
    names = list(doc["matrix"]["clusters"])
    lines = [
        f"# GitLab Runner conformance: {doc['verdict']} ({len(names)} clusters, exit {doc['exit_code']})",
        "",
        "| check | claim | " + " | ".join(cell(n) for n in names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for row in doc["matrix"]["rows"]:
        outcomes = [labels.get(str(row["outcomes"][n]), "-") if row["outcomes"][n] else "-" for n in names]
        lines.append(f"| {cell(row['id'])} | {cell(row['claim'], 120)} | " + " | ".join(outcomes) + " |")
    for sec in doc["clusters"]:
        counts = ", ".join(f"{v} {report.WORDS.get(k, k)}" for k, v in sec["counts"].items() if v)
        lines += ["", f"## {cell(sec['name'])}: {sec['verdict']} (exit {sec['exit_code']})", ""]
        lines.append(f"- checks: {counts or 'none'}")
        if sec["error"] is not None:
            lines.append(f"- no evidence: {cell(sec['error']['message'])}")
        facts = (
            ("GitLab", sec["gitlab_version"]),
            ("Kubernetes", sec["kubernetes_version"]),
            ("runner", ", ".join(sec["runner_versions"] or [])),
            ("wall", f"{sec['wall_s']}s" if sec["wall_s"] is not None else None),
        )
        shown = ", ".join(f"{k} {cell(v)}" for k, v in facts if v)
        if shown:
            lines.append(f"- {shown}")
        url = report_md.link(sec["pipeline_url"])
        if url:
            lines.append(f"- pipeline: <{url}>")
        if sec["report"]:
            lines.append(f"- full report: [{cell(sec['report'])}]({sec['report']})")
        for item in sec["not_passing"]:
            word = labels.get(item["outcome"], item["outcome"])
            lines.append(f"- **{word}** {cell(item['id'])} {cell(item['claim'], 120)}: {cell(item['why'])}")
    return "\n".join(lines) + "\n"


def render_html(doc: Mapping[str, Any]) -> str:
    """report.html: one self-contained page with the matrix and a section per cluster."""
    template = report_html._environment().get_template("multi.html.j2")
    return template.render(doc=doc, words=report.WORDS, safe_url=report_html.safe_url)
