"""The conformance report (JSON, Markdown, HTML), the one-line run summary and the upgrade-gate comparison."""

from __future__ import annotations

import importlib.resources
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_runnerconf import report_html, report_md, retry, safefiles, versions
from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.evidence import RunEvidence
from pytest_runnerconf.outcome import CAUSES, OUTCOMES
from pytest_runnerconf.profile import expect_sources_of
from pytest_runnerconf.scrub import scrub_data, scrub_json, scrub_text

# 2: the outcome could_not_test (with cause and sentence) and the structured verdict fields.
REPORT_VERSION = 2
# The JSON Schema of report.json, shipped in the package: what the gate and any dashboard may rely on.
REPORT_SCHEMA = f"schemas/report-v{REPORT_VERSION}.schema.json"
# When one check ID has several results (parametrised tests), the worst one is its verdict.
_SEVERITY = {"passed": 0, "skipped": 1, "could_not_test": 2, "failed": 3, "error": 4}
WORDS = {"could_not_test": "could not test"}
# What the upgrade gate cannot count as verified: the check ran no judgement on this cluster.
UNVERIFIED = ("could_not_test", "skipped", "error")


@dataclass
class CheckResult:
    id: str
    claim: str
    area: str
    outcome: str  # one of outcome.OUTCOMES
    message: str = ""  # what the terminal showed: the failure message, the skip reason, the traceback
    job: str | None = None
    duration: float = 0.0
    nodeid: str = ""
    cause: str | None = None  # could_not_test: one of outcome.CAUSES
    sentence: str = ""  # could_not_test: the one sentence that says why
    remediation: str = ""  # the check's hint: which runner setting to look at when it does not pass
    # The deciding expectation: a failure's, or a pass's only one (all of them are in `expectations`).
    expected: Any = None
    observed: Any = None
    pod: str | None = None
    job_url: str | None = None
    detail: str = ""
    expectations: list[dict[str, Any]] = field(default_factory=list)
    read: list[str] = field(default_factory=list)  # the probe jobs the check looked up (job_evidence)
    # Every attempt of the jobs the result names or read (retry.attempt_rows); several per job when retried.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # What was observed in a few words: the failing expectation's summary, or those of a pass's expectations.
    summary: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    @property
    def has_observation(self) -> bool:
        """expected/observed hold the deciding expectation: the one that failed, or a pass's only one."""
        if self.outcome == "failed":
            return any(e.get("held") is False for e in self.expectations)
        return self.outcome == "passed" and len(self.expectations) == 1

    def why(self) -> str:
        """One line for a table cell: what was observed, why it could not be tested, or the message."""
        if self.outcome == "could_not_test":
            return f"{self.cause}: {self.sentence}"
        if self.summary and self.outcome in ("passed", "failed"):
            return f"observed: {self.summary}"
        if self.has_observation:
            return f"observed: {_one_line(self.observed)}"
        lines = [line.strip() for line in self.message.splitlines() if line.strip()]
        if self.outcome == "passed":
            return ""
        return lines[-1] if self.outcome == "skipped" and lines else (lines[0] if lines else "")


def _one_line(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, default=repr, sort_keys=isinstance(value, dict))
    )
    return " ".join(text.split())


def summary_line(run: RunEvidence, evidence: Path | str | None = None) -> str:
    """`runnerconf: wall <X>s, slowest job <Y>s (<name>), <N> jobs, evidence <path>`."""
    slowest = run.slowest_job()
    name, duration = slowest if slowest else ("-", 0.0)
    where = evidence if evidence is not None else (run.evidence_dir or "(not saved)")
    return (
        f"runnerconf: wall {run.wall_s:.1f}s, slowest job {duration:.1f}s ({name}), "
        f"{len(run.jobs)} jobs, evidence {where}"
    )


def _known(version: str) -> str | None:
    return None if version in ("", "unknown") else version  # python-gitlab says "unknown" when it cannot read


def _profile_header(run: RunEvidence) -> dict[str, Any] | None:
    """The profile's name and file, and each expectation with where its value came from."""
    if not run.profile:
        return None
    expect = run.profile.get("expect")
    recorded = run.profile.get("expect_set")
    expectations = [
        asdict(source)
        for source in expect_sources_of(
            str(run.profile.get("name") or "NAME"),
            expect if isinstance(expect, dict) else {},
            recorded if isinstance(recorded, dict) else None,
        )
    ]
    return {
        "name": run.profile.get("name"),
        "source": run.profile.get("source"),
        "namespace": run.profile.get("namespace"),
        "expectations": expectations,
        # What runner_config read (profile.Profile.runner_config_found); absent for a profile without one.
        "runner_config": run.profile.get("runner_config_found"),
    }


def _header(run: RunEvidence | None) -> dict[str, Any]:
    if run is None:  # no evidence (every check skipped before a run): the same keys, nothing known
        return {
            "cluster": None,
            "gitlab_url": None,
            "gitlab_version": None,
            "kubernetes_version": None,
            "project": None,
            "pipeline_url": None,
            "runner_versions": [],
            "runner_behaviours": [],
            "cgroup_versions": [],
            "wall_s": None,
            "slowest_job": None,
            "attempts": {},
            "jobs": 0,
            "evidence": None,
            "notes": [],
            "profile": None,
        }
    slowest = run.slowest_job()
    return {
        "cluster": run.cluster,
        "gitlab_url": run.gitlab_url,
        "gitlab_version": _known(run.gitlab_version),
        "kubernetes_version": _known(run.kubernetes_version),
        "project": run.project,
        "pipeline_url": run.pipeline.get("web_url"),
        "runner_versions": run.runner_versions(),
        "runner_behaviours": versions.run_decisions(run),
        "cgroup_versions": report_html.cgroup_versions(run),
        "wall_s": round(run.wall_s, 1),
        "slowest_job": {"name": slowest[0], "duration_s": round(slowest[1], 1)} if slowest else None,
        "jobs": len(run.jobs),
        "evidence": run.evidence_dir or None,
        "notes": list(run.notes),
        "attempts": {name: retry.attempt_rows(job) for name, job in run.jobs.items()},
        "profile": _profile_header(run),
    }


def named_jobs(result: CheckResult) -> list[str]:
    """The jobs a result names: its own, those its expectations name, then those the check read."""
    names = [result.job] if result.job else []
    names += [str(e["job"]) for e in result.expectations if isinstance(e, dict) and e.get("job")]
    names += result.read
    return list(dict.fromkeys(names))


def _with_attempts(result: CheckResult, run: RunEvidence | None) -> CheckResult:
    if run is None:
        return result
    jobs = [run.jobs[n] for n in named_jobs(result) if n in run.jobs]
    return replace(result, attempts=[row for job in jobs for row in retry.attempt_rows(job)])


def _counts(results: list[CheckResult]) -> dict[str, int]:
    return {outcome: sum(r.outcome == outcome for r in results) for outcome in OUTCOMES}


def html_link(directory: Path, environ: Mapping[str, str] | None = None) -> str:
    """Where report.html is read from: in GitLab CI its artifact page (the job keeps DIRECTORY under the
    project directory as an artifact), elsewhere the file next to report.md."""
    env = os.environ if environ is None else environ
    job_url, project_dir = env.get("CI_JOB_URL", ""), env.get("CI_PROJECT_DIR", "")
    if job_url.startswith(("http://", "https://")) and project_dir:
        try:
            rel = Path(directory).resolve().relative_to(Path(project_dir).resolve())
        except ValueError:
            return "report.html"
        path = urllib.parse.quote((rel / "report.html").as_posix(), safe="/")
        return f"{job_url.rstrip('/')}/artifacts/file/{path}"
    return "report.html"


def write_reports(
    results: Iterable[CheckResult],
    run: RunEvidence | None,
    directory: Path,
    *,
    baseline: tuple[str, dict[str, Any]] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Path]:
    """Write report.json, report.md and report.html into DIRECTORY; returns {"json"|"md"|"html": path}.

    BASELINE, (its path, its report.json), adds what changed since then: the comparison the upgrade gate
    decides on. ARGV is the command line to reproduce the run (sys.argv when None).
    """
    # Scrubbed before rendering (HTML escaping would hide a secret from the text pass) and after.
    results = [
        CheckResult(**scrub_data(asdict(_with_attempts(r, run))))
        for r in sorted(results, key=lambda r: (r.id, r.nodeid))
    ]
    directory = Path(directory)
    counts = _counts(results)
    doc = {
        "version": REPORT_VERSION,
        "generated_at": time.time(),
        "verdict": report_html.verdict(counts),
        "command": report_html.reproduce_command(sys.argv if argv is None else argv),
        **_header(run),
        "counts": counts,
        # What each cause of could_not_test in this report means, so the file explains itself.
        "causes": {c: CAUSES[c] for c in sorted({r.cause for r in results if r.cause in CAUSES})},
        "results": [asdict(r) for r in results],
        "baseline": None,
    }
    if baseline is not None:
        doc["baseline"] = compare_reports(baseline[1], doc).data(baseline[0])
    doc = scrub_data(doc)
    texts = {
        "json": scrub_json(doc) + "\n",
        "md": scrub_text(report_md.render(doc, html_link(directory))),
        "html": scrub_text(report_html.render(doc, run, report_dir=directory)),
    }
    return {kind: safefiles.write_text(directory, f"report.{kind}", text) for kind, text in texts.items()}


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every report.json of this REPORT_VERSION satisfies."""
    text = importlib.resources.files("pytest_runnerconf").joinpath(REPORT_SCHEMA).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_report(source: Path | str | dict[str, Any]) -> dict[str, Any]:
    """A report.json (path or parsed) whose results compare() can read; ConfigError names what is wrong."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: report not found; give the report.json of a previous run") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the report ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a report.json ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ConfigError(f"{path}: not a runnerconf report.json (no results list)")
    for n, result in enumerate(doc["results"]):
        if (
            not (isinstance(result, dict) and isinstance(result.get("id"), str))
            or result.get("outcome") not in OUTCOMES
        ):
            raise ConfigError(
                f"{path}: result {n} is not a check result (it needs an id and an outcome of "
                f"{', '.join(OUTCOMES)})"
            )
    return doc


def _verdicts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per check ID, its worst result."""
    worst: dict[str, dict[str, Any]] = {}
    for result in doc["results"]:
        known = worst.get(result["id"])
        if known is None or _SEVERITY[result["outcome"]] > _SEVERITY[known["outcome"]]:
            worst[result["id"]] = result
    return worst


def _result(doc_result: dict[str, Any]) -> CheckResult:
    """A report.json result as a CheckResult (fields a version-1 report lacks keep their defaults)."""
    known = {name: doc_result[name] for name in CheckResult.__dataclass_fields__ if name in doc_result}
    known.setdefault("claim", "")
    known.setdefault("area", "")
    return CheckResult(**known)


@dataclass(frozen=True)
class GateFinding:
    """One check whose verdict changed since the baseline: BEFORE there, NOW here (None: did not run)."""

    id: str
    claim: str
    now: str | None
    why: str = ""
    before: str = "passed"

    @property
    def regression(self) -> bool:
        return self.before == "passed" and self.now == "failed"

    def change(self) -> str:
        """`passed in baseline, failed now: observed: ...`."""
        was = f"{WORDS.get(self.before, self.before)} in baseline"
        if self.now is None:
            return f"{was}, not run now"
        said = f": {self.why}" if self.why else ""
        return f"{was}, {WORDS.get(self.now, self.now)} now{said}"

    def line(self) -> str:
        """`RC-X-001 claim: passed in baseline, failed now: observed: ...`."""
        return f"{self.id} {self.claim}: {self.change()}"


@dataclass(frozen=True)
class Comparison:
    """What changed between a baseline report and the current one, per check ID (its worst result).

    regressions: passed there, failed now. not_verified: passed there and now could not be tested, skipped,
    errored or did not run (the gate approves nothing on evidence it does not have). fixed: failed or errored
    there, passed now. known: IDs that fail (failed or error) now and failed there too.
    """

    regressions: list[GateFinding]
    not_verified: list[GateFinding]
    fixed: list[GateFinding]
    known: list[str]

    def data(self, path: str) -> dict[str, Any]:
        """As report.json's `baseline` section."""

        def rows(findings: list[GateFinding]) -> list[dict[str, Any]]:
            return [asdict(f) for f in findings]

        return {
            "path": path,
            "regressions": rows(self.regressions),
            "not_verified": rows(self.not_verified),
            "fixed": rows(self.fixed),
            "known_failures": list(self.known),
        }


_BAD = ("failed", "error")


def compare_reports(
    baseline_json: Path | str | dict[str, Any], current_json: Path | str | dict[str, Any]
) -> Comparison:
    """The one comparison of two reports: the gate's exit status and the reports' baseline section read it."""
    baseline = _verdicts(load_report(baseline_json))
    current = _verdicts(load_report(current_json))
    regressions, unverified, fixed = [], [], []
    for check_id in sorted(baseline):
        before, now = baseline[check_id], current.get(check_id)
        claim = (now or {}).get("claim") or before.get("claim") or ""
        if before["outcome"] == "passed":
            if now is None:
                unverified.append(GateFinding(check_id, claim, None))
            elif now["outcome"] == "failed":
                regressions.append(GateFinding(check_id, claim, "failed", _result(now).why()))
            elif now["outcome"] in UNVERIFIED:
                unverified.append(GateFinding(check_id, claim, now["outcome"], _result(now).why()))
        elif before["outcome"] in _BAD and now is not None and now["outcome"] == "passed":
            fixed.append(GateFinding(check_id, claim, "passed", _result(now).why(), before["outcome"]))
    known = [
        check_id
        for check_id in sorted(current)
        if current[check_id]["outcome"] in _BAD and baseline.get(check_id, {}).get("outcome") in _BAD
    ]
    return Comparison(regressions, unverified, fixed, known)


def gate_findings(
    baseline_json: Path | str | dict[str, Any], current_json: Path | str | dict[str, Any]
) -> list[GateFinding]:
    """Checks that passed in the baseline and now failed (regressions) or are not verified (UNVERIFIED, or
    missing): the upgrade gate approves nothing on evidence it does not have."""
    found = compare_reports(baseline_json, current_json)
    return sorted(found.regressions + found.not_verified, key=lambda f: f.id)


def compare(
    baseline_json: Path | str | dict[str, Any], current_json: Path | str | dict[str, Any]
) -> list[str]:
    """Regressions for the upgrade gate: checks that passed in the baseline and fail now."""
    return [f.line() for f in compare_reports(baseline_json, current_json).regressions]


def not_verified(
    baseline_json: Path | str | dict[str, Any], current_json: Path | str | dict[str, Any]
) -> list[str]:
    """Checks that passed in the baseline and now could not be tested, were skipped, errored or are missing."""
    return [f.line() for f in compare_reports(baseline_json, current_json).not_verified]


def known_failures(
    baseline_json: Path | str | dict[str, Any], current_json: Path | str | dict[str, Any]
) -> list[str]:
    """Check IDs that fail (failed or error) now and also failed in the baseline: the gate forgives them."""
    return compare_reports(baseline_json, current_json).known
