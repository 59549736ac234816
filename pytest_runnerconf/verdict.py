"""Structured verdicts: what a check expected and observed, carried on its pytest report as plain data.

The check helpers (checks.fail, expect_equal, expect_true) record each expectation they judge here; the plugin
moves them onto the report's user_properties, which travel from xdist workers to the controller, and the
reports read them back as data. No report ever parses a failure message.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from _pytest.outcomes import Failed

from pytest_runnerconf.evidence import JobEvidence

# user_properties names (JUnit shows them as testcase properties, report.json reads them).
EXPECTATIONS_PROPERTY = "runnerconf_expectations"  # list of Expectation dicts, in the order judged
COULD_NOT_TEST_PROPERTY = "runnerconf_could_not_test"  # {"cause", "sentence", "job", "job_url"}


def plain(value: Any) -> Any:
    """VALUE as JSON data (what execnet and report.json can carry); other objects become their repr."""
    return json.loads(json.dumps(value, default=repr))


@dataclass(frozen=True)
class Expectation:
    check: str
    expected: Any
    observed: Any
    held: bool
    job: str | None = None
    job_url: str | None = None
    pod: str | None = None
    detail: str = ""
    # What was observed in a few words for a person (a report's table cell), written by the check from the
    # same data as `observed`: "pod deleted 1.4 s after the job ended, deadline 60 s".
    summary: str = ""

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(asdict(self))
        return data


def short_form(value: Any) -> str:
    """VALUE on one line: text as it is (whitespace folded), anything structured as compact JSON.

    What an expectation says when its check wrote no summary of its own.
    """
    text = value if isinstance(value, str) else json.dumps(plain(value), sort_keys=isinstance(value, dict))
    return " ".join(text.split())


def where(job: JobEvidence | None) -> dict[str, str | None]:
    """The job, its web URL and its pod, as an expectation names them."""
    if job is None:
        return {"job": None, "job_url": None, "pod": None}
    pod = job.pod.name if job.pod is not None else (job.trace_parsed.pod_name if job.trace else None)
    return {"job": job.name, "job_url": job.web_url or None, "pod": pod}


class ConformanceFailure(Failed):
    """pytest's own failure (so every tool reports `failed`), carrying the expectation that did not hold."""

    # As pytest's Failed: summaries say "ConformanceFailure: RC-...", not the module's path.
    __module__ = "builtins"

    def __init__(self, message: str, expectation: Expectation) -> None:
        super().__init__(message, pytrace=False)
        self.expectation = expectation


class Recorder:
    """The expectations judged by the test that runs in this process (one at a time, also under xdist)."""

    def __init__(self) -> None:
        self.judged: list[Expectation] = []

    def add(self, expectation: Expectation) -> None:
        self.judged.append(expectation)

    def take(self) -> list[Expectation]:
        judged, self.judged = self.judged, []
        return judged


RECORDER = Recorder()


def expectations_of(user_properties: list[tuple[str, object]]) -> list[dict[str, Any]]:
    value = dict(user_properties).get(EXPECTATIONS_PROPERTY)
    return [dict(e) for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def could_not_test_of(user_properties: list[tuple[str, object]]) -> dict[str, Any] | None:
    value = dict(user_properties).get(COULD_NOT_TEST_PROPERTY)
    return dict(value) if isinstance(value, dict) else None
