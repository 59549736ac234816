"""report.html: the report.json document and the run's evidence rendered as one self-contained page.

Jinja2 templates (package data under templates/) with autoescaping on everywhere: a trace, an event message
or a check's observed value is text from the cluster and is never markup. Geometry (where a span sits in an
SVG) is computed here, so the templates only place what they are given. No external asset, no script: the
page works offline and from a CI artifact.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from pytest_runnerconf import versions
from pytest_runnerconf.evidence import EVIDENCE_FILE, JobEvidence, RunEvidence
from pytest_runnerconf.profile import flat_keys
from pytest_runnerconf.scrub import scrub_text
from pytest_runnerconf.timeline import Timeline, cleanup_tail, job_spans, pod_timeline, run_picture

# The outcomes the page styles, worst last; another outcome still renders, unstyled.
OUTCOMES = ("passed", "skipped", "could_not_test", "failed", "error")
# The fields of a result shown under its row, in this order, whenever the result has them.
DETAIL_FIELDS = ("observed", "expected", "cause", "sentence", "detail", "remediation", "message")
# Fields that are the row itself, its links or bookkeeping rather than something to read under it.
_ROW_FIELDS = frozenset(
    {"id", "claim", "area", "outcome", "job", "job_url", "pod", "duration", "nodeid", "expectations"}
) | {"summary"}  # the observed cell shows it

SVG_WIDTH = 1100
LABEL_WIDTH = 230
RIGHT_PAD = 16
ROW_HEIGHT = 20
AXIS_HEIGHT = 22
_NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


# One environment per process: it keeps the compiled templates (compiling is most of a render's time).
@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_runnerconf", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def safe_url(url: object) -> str | None:
    """URL when it is an http(s) address (a link from job JSON must not be javascript: or data:), else None."""
    text = str(url or "")
    return text if re.match(r"^https?://", text, re.I) else None


def _value(value: object) -> str:
    """A result field as text: strings as they are, anything structured as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------- time and geometry


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def _nice_step(duration: float) -> float:
    """A round step that gives at most about ten ticks; past the largest round one, a tenth of DURATION (a
    bundle whose clocks disagree by years must still draw in ten ticks, not in hundreds of thousands)."""
    return next((s for s in _NICE_STEPS if duration / s <= 10), duration / 10)


@dataclass
class _Axis:
    start: float
    end: float

    @property
    def span(self) -> float:
        return max(self.end - self.start, 1e-6)

    def x(self, t: float) -> float:
        plot = SVG_WIDTH - LABEL_WIDTH - RIGHT_PAD
        return round(LABEL_WIDTH + (t - self.start) / self.span * plot, 1)

    def ticks(self) -> list[dict[str, Any]]:
        step = _nice_step(self.span)
        count = int(self.span / step) + 1
        return [
            {"x": self.x(self.start + n * step), "label": f"{n * step:g}s"}
            for n in range(count)
            if self.start + n * step <= self.end + 1e-9
        ]


@dataclass
class SvgView:
    """What the timeline template draws: rows of positioned spans and marks, ticks, size."""

    id: str
    title: str
    height: int
    width: int = SVG_WIDTH
    label_width: int = LABEL_WIDTH
    rows: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""


def _when(t: float, axis: _Axis) -> str:
    return f"{clock(t)} UTC (+{t - axis.start:.2f}s)"


def svg_view(timeline: Timeline, view_id: str, links: dict[str, str] | None = None) -> SvgView:
    axis = _Axis(timeline.start, timeline.end)
    rows = []
    for n, row in enumerate(timeline.rows):
        y = AXIS_HEIGHT + n * ROW_HEIGHT
        spans = []
        for span in row.spans:
            x0, x1 = axis.x(span.start), axis.x(span.end)
            width = max(x1 - x0, 2.0)
            end = _when(span.end, axis) + (" (not seen to end; watched until then)" if span.open_end else "")
            detail = f" — {span.detail}" if span.detail else ""
            spans.append(
                {
                    "x": x0,
                    "w": round(width, 1),
                    "kind": span.kind,
                    "label": scrub_text(span.label),
                    # Room for the label inside the bar at about 6.5 px a character.
                    "show_label": width > 6.5 * len(span.label) + 6,
                    "open": span.open_end,
                    "title": scrub_text(
                        f"{row.label or 'trace sections'}: {span.label} {_when(span.start, axis)} → "
                        f"{end}, {span.duration:.2f}s{detail}"
                    ),
                }
            )
        marks = [
            {
                "x": axis.x(mark.time),
                "kind": mark.kind,
                "label": mark.label,
                # Event messages are the cluster's free text: scrubbed here, while a secret still has its
                # shape (the page's escaping of quotes would hide a JSON-shaped one from the final pass).
                "title": scrub_text(
                    f"{mark.label} at {_when(mark.time, axis)}" + (f" — {mark.detail}" if mark.detail else "")
                ),
            }
            for mark in row.marks
        ]
        short = row.label if len(row.label) <= 34 else row.label[:33] + "…"
        rows.append(
            {
                "label": row.label,
                "short": short,
                "y": y,
                "spans": spans,
                "marks": marks,
                "link": (links or {}).get(row.label),
            }
        )
    height = AXIS_HEIGHT + len(rows) * ROW_HEIGHT + 6
    summary = f"{_when(timeline.start, axis)} to {clock(timeline.end)} UTC, {timeline.duration:.1f}s"
    return SvgView(view_id, timeline.title, height, rows=rows, ticks=axis.ticks(), summary=summary)


@functools.cache
def _svg_css() -> str:
    """The stylesheet's rules for timelines, with its colour variables, for an SVG read outside the page."""
    css = importlib.resources.files("pytest_runnerconf").joinpath("templates/report.css").read_text("utf-8")
    root = next((line for line in css.splitlines() if line.startswith(":root")), "")
    variables = root[root.find("{") + 1 : root.rfind("}")].strip()
    rules = [line for line in css.splitlines() if "svg.timeline" in line]
    return " ".join([f"svg.timeline {{ {variables} }}", *rules])


def pod_svg(job: JobEvidence, *, watched_until: float | None = None) -> str | None:
    """One job pod's timeline as a standalone SVG document (styles inside it); None when it had no pod."""
    line = pod_timeline(job, watched_until=watched_until)
    if line is None:
        return None
    view = svg_view(line, anchor("svg", job.name))
    return _environment().get_template("timeline.svg.j2").render(view=view, style=_svg_css())


# ---------------------------------------------------------------- the document


def anchor(kind: str, name: str) -> str:
    """An HTML id from a job or check name: safe characters only, stable across renders."""
    return f"{kind}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")


def verdict(counts: dict[str, int]) -> str:
    """The run in words, as its exit status says it: a failure or an error (exit 1) is not conformant; with
    neither, a check that could not be tested (exit 6), or no check that passed, leaves it untested."""
    if counts.get("failed") or counts.get("error"):
        return "not conformant"
    if counts.get("could_not_test") or not counts.get("passed"):
        return "could not test"
    return "conformant"


def reproduce_command(argv: list[str] | None) -> str | None:
    """The session's command line as a person would type it again; None when there is none."""
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program in ("pytest", "py.test"):
        return shlex.join(["pytest", *argv[1:]])
    if program in ("__main__.py", "pytest.py") or argv[0].endswith("pytest/__main__.py"):
        return shlex.join(["python", "-m", "pytest", *argv[1:]])
    return shlex.join(argv)


def _job_dirs(run: RunEvidence) -> dict[str, str]:
    """Job name -> its folder in the saved bundle, as evidence.json records it ({} when not saved)."""
    if not run.evidence_dir:
        return {}
    try:
        saved = json.loads((Path(run.evidence_dir) / EVIDENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    jobs = saved.get("jobs") if isinstance(saved, dict) else None
    return {str(j["name"]): str(j["dir"]) for j in jobs or [] if isinstance(j, dict) and "dir" in j}


def _evidence_href(run: RunEvidence | None, report_dir: Path | None) -> str | None:
    """The bundle's folder relative to the report (both kept as CI artifacts side by side), else absolute."""
    if run is None or not run.evidence_dir:
        return None
    where = Path(run.evidence_dir).resolve()
    if report_dir is None:
        return where.as_uri()
    return urllib.parse.quote(Path(os.path.relpath(where, Path(report_dir).resolve())).as_posix(), safe="/")


def _present(value: object) -> bool:
    return value not in (None, "", [], {})


def _details(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Every field worth reading, known ones first, then whatever else a newer report.json carries."""
    shown = [(key, _value(result[key])) for key in DETAIL_FIELDS if _present(result.get(key))]
    extra = sorted(k for k in result if k not in _ROW_FIELDS and k not in DETAIL_FIELDS)
    shown += [(key, _value(result[key])) for key in extra if _present(result[key])]
    return shown


def _expectations_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each expectation the check judged (report.json's `expectations`): held or not, expected, observed."""
    judged = result.get("expectations")
    rows = []
    for item in judged if isinstance(judged, list) else []:
        if not isinstance(item, dict):
            continue
        held = item.get("held")
        rows.append(
            {
                "held": "held" if held is True else ("did not hold" if held is False else "not judged"),
                "class": "passed" if held is True else ("failed" if held is False else "skipped"),
                "expected": _value(item.get("expected")) if _present(item.get("expected")) else "",
                "observed": _value(item.get("observed")) if _present(item.get("observed")) else "",
                "job": str(item.get("job") or ""),
                "detail": str(item.get("detail") or ""),
            }
        )
    return rows


def _expectation_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The expectations table under a check: left out when it would only repeat the deciding one."""
    rows = _expectations_of(result)
    if len(rows) == 1 and _present(result.get("observed")):
        return []
    return rows


def _summary(result: dict[str, Any]) -> str:
    """What the closed details say: the could-not-test sentence, a skip's reason, else just "details"."""
    if result.get("sentence"):
        return str(result["sentence"])
    if result.get("outcome") == "skipped":
        return _first_line(str(result.get("message") or "")) or "details"
    return "details"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _short_observed(result: dict[str, Any]) -> str:
    """The observed value in one line: the check's own summary of it, else the field, else every judged
    expectation's, else the message's "observed:" line (a report.json from before structured verdicts).
    A check that observed nothing says why: the could-not-test cause and sentence, the skip's reason."""
    outcome = result.get("outcome")
    if outcome in ("passed", "failed") and _present(result.get("summary")):
        return str(result["summary"])
    if outcome == "could_not_test" and _present(result.get("sentence")):
        return f"{result.get('cause') or 'could not test'}: {result['sentence']}"
    if outcome == "skipped" and _present(result.get("message")):
        return _first_line(str(result["message"]))
    observed = result.get("observed")
    if _present(observed):
        return _value(observed)
    seen = [e["observed"] for e in _expectations_of(result) if e["observed"]]
    if seen:
        return "; ".join(seen)
    message = str(result.get("message") or "")
    for line in message.splitlines():
        if line.strip().startswith("observed:"):
            return line.strip().removeprefix("observed:").strip()
    return ""


def _job_names(result: dict[str, Any]) -> list[str]:
    """The jobs a result names: its "job" (one name or a list), then those its expectations name."""
    named = result.get("job")
    names = [named] if isinstance(named, str) else [str(n) for n in named] if isinstance(named, list) else []
    judged = result.get("expectations")
    for item in judged if isinstance(judged, list) else []:
        if isinstance(item, dict) and isinstance(item.get("job"), str):
            names.append(item["job"])
    return [n for n in dict.fromkeys(names) if n]


def _job_links(
    name: str,
    run: RunEvidence | None,
    pods: set[str],
    job_dirs: dict[str, str],
    evidence: str | None,
    *,
    named: bool,
) -> list[dict[str, str]]:
    """Links to a job in GitLab, to its pod's timeline and to its files in the bundle."""
    job = run.jobs.get(name) if run is not None else None
    prefix = f"{name}: " if named else ""
    links = []
    if job is not None and safe_url(job.web_url):
        links.append({"label": f"{prefix}job", "href": job.web_url})
    if name in pods:
        links.append({"label": "timeline", "href": "#" + anchor("pod", name)})
    if evidence is not None and name in job_dirs:
        folder = f"{evidence}/{job_dirs[name]}"
        links.append({"label": "trace", "href": f"{folder}/trace.txt"})
        if name in pods:
            links.append({"label": "pod", "href": f"{folder}/pod.json"})
            links.append({"label": "events", "href": f"{folder}/events.json"})
    return links


def _attempts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts of a result's jobs when any was retried (one attempt each says nothing new)."""
    rows = [a for a in result.get("attempts") or [] if isinstance(a, dict)]
    per_job = {str(a.get("job")) for a in rows}
    if len(rows) <= len(per_job):
        return []
    return [
        {
            "text": f"{a.get('job')} #{a.get('job_id')} {a.get('status')}"
            + (f" ({a.get('cause')})" if a.get("cause") else ""),
            "title": str(a.get("sentence") or ""),
            "href": safe_url(a.get("web_url")),
        }
        for a in rows
    ]


def _check_rows(
    doc: dict[str, Any],
    run: RunEvidence | None,
    pods: set[str],
    job_dirs: dict[str, str],
    evidence: str | None,
) -> list[dict[str, Any]]:
    areas: dict[str, list[dict[str, Any]]] = {}
    seen_ids: set[str] = set()
    for result in doc.get("results") or []:
        names = _job_names(result)
        links = []
        for job_name in names:
            links += _job_links(job_name, run, pods, job_dirs, evidence, named=len(names) > 1)
        url = safe_url(result.get("job_url"))
        if url is not None and not any(link["href"] == url for link in links):
            links.insert(0, {"label": "job", "href": url})
        check_id = str(result.get("id") or "")
        row = {
            "id": check_id,
            "anchor": anchor("check", check_id) if check_id not in seen_ids else None,
            "claim": str(result.get("claim") or ""),
            "outcome": str(result.get("outcome") or ""),
            "outcome_text": str(result.get("outcome") or "").replace("_", " "),
            "observed": _short_observed(result),
            "summary": _summary(result),
            "details": _details(result),
            "expectations": _expectation_rows(result),
            "jobs": names,
            "links": links,
            "attempts": _attempts(result),
            "nodeid": str(result.get("nodeid") or ""),
        }
        seen_ids.add(check_id)
        areas.setdefault(str(result.get("area") or "other"), []).append(row)
    return [
        {"name": name, "anchor": anchor("area", name), "checks": checks} for name, checks in areas.items()
    ]


def _counts(doc: dict[str, Any]) -> list[tuple[str, int]]:
    counts = doc.get("counts") or {}
    order = [o for o in OUTCOMES if o in counts] + sorted(o for o in counts if o not in OUTCOMES)
    return [(o, int(counts[o])) for o in order]


def cgroup_versions(run: RunEvidence) -> list[str]:
    """The cgroup versions the probes reported from inside the build containers ("v1", "v2")."""
    found = {
        str(record["cgroup"])
        for job in run.jobs.values()
        for records in job.records.values()
        for record in records
        if isinstance(record, dict) and record.get("cgroup")
    }
    return sorted(found)


def _facts(doc: dict[str, Any], run: RunEvidence | None, command: str | None) -> list[dict[str, Any]]:
    facts: list[dict[str, Any]] = []

    def add(label: str, text: object, href: str | None = None, code: bool = False) -> None:
        if text not in (None, "", []):
            facts.append({"label": label, "text": str(text), "href": href, "code": code})

    add("cluster", doc.get("cluster"))
    add("GitLab", doc.get("gitlab_url"), safe_url(doc.get("gitlab_url")))
    known = ("", "unknown", None)
    gitlab_version = doc.get("gitlab_version") or (run.gitlab_version if run is not None else "")
    kube_version = doc.get("kubernetes_version") or (run.kubernetes_version if run is not None else "")
    add("GitLab version", None if gitlab_version in known else gitlab_version)
    add("Kubernetes version", None if kube_version in known else kube_version)
    add("project", doc.get("project"))
    add("runner version", ", ".join(doc.get("runner_versions") or []) or "not in the traces")
    behaviours = doc.get("runner_behaviours")
    if isinstance(behaviours, list) and behaviours:
        add("runner behaviours", versions.behaviour_line(behaviours))
    cgroups = doc.get("cgroup_versions") or (cgroup_versions(run) if run is not None else [])
    add("cgroup", ", ".join(cgroups))
    pipeline = doc.get("pipeline_url")
    add("pipeline", pipeline, safe_url(pipeline))
    wall, slowest = doc.get("wall_s"), doc.get("slowest_job")
    if wall is not None:
        timing = f"{wall:.1f}s wall"
        if slowest:
            timing += f", slowest job {slowest['name']} {slowest['duration_s']:.1f}s"
        add("time", timing)
    if run is not None and (tail := cleanup_tail(run)) is not None:
        add("cleanup tail", f"{tail:.1f}s from the last job's end to the last pod gone")
    if run is not None:
        pods = [job.pod for job in run.jobs.values() if job.pod is not None]
        gone = sum(pod.deleted_at is not None for pod in pods)
        add("pods", f"{len(pods)} seen, {gone} seen deleted" if pods else "none seen")
    add("jobs", doc.get("jobs"))
    profile = doc.get("profile") or (run.profile if run is not None else None) or {}
    if profile:
        add("profile", f"{profile.get('name') or '-'} ({profile.get('source') or 'unknown source'})")
        add("namespace", profile.get("namespace"))
    add("evidence", doc.get("evidence"), code=True)
    generated = doc.get("generated_at")
    if isinstance(generated, int | float):
        add("generated", datetime.fromtimestamp(generated, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    add("reproduce", command, code=True)
    return facts


# How the header names where an expectation came from (profile.ORIGINS says it at length).
ORIGIN_WORDS = {
    "profile": "profile file",
    "target": "built into the target",
    "default": "built-in default",
    "runner config": "deployed runner config",
}


def _expectations(doc: dict[str, Any], run: RunEvidence | None) -> list[dict[str, str]]:
    """The profile's expectations (builds_dir, build.cpu_limit, dns.policy…), each with where it came from:
    report.json's profile section, else (a hand-made or older document) the run's profile without sources."""
    recorded = (doc.get("profile") or {}).get("expectations")
    if isinstance(recorded, list):
        items = [e for e in recorded if isinstance(e, dict) and e.get("key")]
    else:
        expect = (run.profile.get("expect") if run is not None else None) or {}
        items = [{"key": k, "value": v} for k, v in flat_keys(expect)]
    rows = []
    for item in items:
        origin = str(item.get("origin") or "")
        rows.append(
            {
                "key": str(item["key"]),
                "value": _value(item.get("value")),
                "origin": origin or "unknown",
                "from": ORIGIN_WORDS.get(origin, "not recorded"),
                "file": str(item.get("file") or ""),
                "setting": str(item.get("setting") or ""),
            }
        )
    return rows


def _origin_counts(rows: list[dict[str, str]]) -> str:
    """`3 from the profile file, 28 built into the target, 2 built-in default`, in ORIGIN_WORDS' order."""
    order = [*ORIGIN_WORDS.values(), "not recorded"]
    counted = {word: sum(row["from"] == word for row in rows) for word in order}
    return ", ".join(f"{n} {word}" for word, n in counted.items() if n)


def _baseline(doc: dict[str, Any]) -> dict[str, Any] | None:
    """report.json's baseline section (the gate's comparison), grouped for the page."""
    section = doc.get("baseline")
    if not isinstance(section, dict):
        return None
    groups = []
    for key, title in (("regressions", "regressed"), ("fixed", "fixed"), ("not_verified", "not verified")):
        findings = [f for f in section.get(key) or [] if isinstance(f, dict)]
        groups.append(
            {
                "key": key,
                "title": title,
                "findings": [
                    {
                        "id": str(f.get("id") or ""),
                        "anchor": anchor("check", str(f.get("id") or "")),
                        "claim": str(f.get("claim") or ""),
                        "before": str(f.get("before") or "").replace("_", " "),
                        "now": str(f.get("now") or "not run").replace("_", " "),
                        "now_class": str(f.get("now") or "skipped"),
                        "why": str(f.get("why") or ""),
                    }
                    for f in findings
                ],
            }
        )
    return {
        "path": str(section.get("path") or ""),
        "groups": groups,
        "known": [str(k) for k in section.get("known_failures") or []],
    }


def render(
    doc: dict[str, Any],
    run: RunEvidence | None,
    *,
    report_dir: Path | None = None,
    argv: list[str] | None = None,
) -> str:
    """report.html for DOC (report.json's content) and RUN (its evidence, None when there is none)."""
    timelines: list[dict[str, Any]] = []
    no_pod: list[str] = []
    picture = None
    job_dirs: dict[str, str] = {}
    if run is not None and run.jobs:
        job_dirs = _job_dirs(run)
        names = [n for n in run.plan if n in run.jobs] + [n for n in run.jobs if n not in run.plan]
        watched_until = max(run.finished_at, run.started_at)
        for name in names:
            job = run.jobs[name]
            line = pod_timeline(job, watched_until=run.finished_at or None)
            if line is None:
                no_pod.append(name)
                continue
            timelines.append(
                {
                    "name": name,
                    "anchor": anchor("pod", name),
                    "status": job.status,
                    "web_url": safe_url(job.web_url),
                    "pod": line.pod,
                    "duration": job.duration_s,
                    "svg": svg_view(line, anchor("svg", name)),
                    "spans": [
                        (span.kind, span.duration, span.open_end)
                        for span in job_spans(job, pushed_at=run.started_at, watched_until=watched_until)
                    ],
                }
            )
        links = {t["name"]: "#" + t["anchor"] for t in timelines}
        picture = svg_view(run_picture(run), "run-picture", links)
    evidence = _evidence_href(run, report_dir)
    pods = {t["name"] for t in timelines}
    counts = _counts(doc)
    areas = _check_rows(doc, run, pods, job_dirs, evidence)
    not_passing = [
        {**check, "anchor_to": anchor("check", check["id"]), "observed": _clip(check["observed"], 160)}
        for area in areas
        for check in area["checks"]
        if check["outcome"] not in ("passed", "skipped")
    ]
    command = reproduce_command(argv) if argv is not None else doc.get("command")
    expectations = _expectations(doc, run)
    template = _environment().get_template("report.html.j2")
    return template.render(
        verdict=verdict(dict(counts)),
        counts=counts,
        facts=_facts(doc, run, command),
        expectations=expectations,
        origin_counts=_origin_counts(expectations),
        baseline=_baseline(doc),
        picture=picture,
        timelines=timelines,
        no_pod=no_pod,
        areas=areas,
        not_passing=not_passing,
        notes=[str(n) for n in doc.get("notes") or []],
        evidence_href=evidence,
    )
