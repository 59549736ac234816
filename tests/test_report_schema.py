"""report.json's shipped JSON Schema: it is a valid schema, it knows every field the plugin writes, every report
the plugin writes satisfies it, and a broken document does not."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_runnerconf.outcome import CAUSES, OUTCOMES
from pytest_runnerconf.report import REPORT_VERSION, CheckResult, report_schema, write_reports
from pytest_runnerconf.report_multi import MULTI_KEYS, MULTI_RESULT_KEYS
from tests import report_inputs
from tests.report_schema import assert_valid_report, errors_of

RESULTS = [
    CheckResult("RC-ORD-001", "a claim", "ordering", "passed", observed="1", expected="1", remediation="fix"),
    CheckResult(
        "RC-DNS-002",
        "dns",
        "dns",
        "failed",
        "x",
        "dns",
        observed={"a": [1]},
        expectations=[
            {
                "check": "RC-DNS-002",
                "expected": 1,
                "observed": 2,
                "held": False,
                "job": "dns",
                "job_url": None,
                "pod": None,
                "detail": "",
            }
        ],
    ),
    CheckResult("RC-VOL-001", "vol", "builds", "could_not_test", cause="quota", sentence="refused by quota"),
    CheckResult("RC-CLN-001", "cleanup", "cleanup", "skipped", "Skipped: no deadline"),
    CheckResult("RC-OOM-001", "oom", "oom", "error", "KeyError: x"),
]


def _written(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    _, run = report_inputs.failing(tmp_path / "evidence")
    doc: dict[str, Any] = json.loads(
        write_reports(RESULTS, run, tmp_path / "report", **kwargs)["json"].read_text()
    )
    return doc


def test_the_schema_is_a_draft_2020_12_schema_of_this_version() -> None:
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["version"] == {"const": REPORT_VERSION}


def test_the_schema_knows_every_outcome_cause_and_field(tmp_path: Path) -> None:
    schema = report_schema()
    result = schema["$defs"]["result"]
    assert result["properties"]["outcome"]["enum"] == list(OUTCOMES)
    assert result["properties"]["cause"]["enum"] == [*CAUSES, None]
    # A field added to CheckResult must be added to the schema (and the schema's version thought about).
    # Only a report of several clusters has the optional keys (report_multi); a single cluster's has every other.
    single = set(result["properties"]) - set(MULTI_RESULT_KEYS)
    assert single == {f.name for f in dataclasses.fields(CheckResult)}
    assert set(result["required"]) == single
    assert set(schema["properties"]["counts"]["required"]) == set(OUTCOMES)
    doc = _written(tmp_path)
    assert set(schema["required"]) == set(schema["properties"]) - set(MULTI_KEYS) == set(doc)


def test_what_write_reports_writes_is_valid(tmp_path: Path) -> None:
    baseline = _written(tmp_path / "before")
    assert_valid_report(baseline)
    with_baseline = _written(
        tmp_path / "now", baseline=("old/report.json", baseline), argv=["pytest", "suites"]
    )
    assert_valid_report(with_baseline)
    assert with_baseline["baseline"]["path"] == "old/report.json"
    # No run at all (nothing but skipped checks), and a run whose profile came from a real profile file.
    without_run = json.loads(write_reports(RESULTS[:1], None, tmp_path / "none")["json"].read_text())
    assert_valid_report(without_run)


def _mutations() -> dict[str, Callable[[dict[str, Any]], None]]:
    def result(which: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
        return lambda doc: next(r for r in doc["results"] if r["outcome"] == which).update(fields)

    return {
        "unknown outcome": result("passed", outcome="green"),
        "could not test without a cause": result("could_not_test", cause=None),
        "could not test without a sentence": result("could_not_test", sentence=""),
        "unknown cause": result("could_not_test", cause="bad-luck"),
        "a cause on a pass": result("passed", cause="quota"),
        "a malformed check id": result("passed", id="DNS-2"),
        "a negative duration": result("failed", duration=-1),
        "a missing result field": lambda doc: doc["results"][0].pop("claim"),
        "a result field nobody knows": result("error", colour="red"),
        "another version": lambda doc: doc.update(version=3),
        "a verdict in other words": lambda doc: doc.update(verdict="PASS"),
        "a count missing": lambda doc: doc["counts"].pop("skipped"),
        "a negative count": lambda doc: doc["counts"].update(failed=-1),
        "results not a list": lambda doc: doc.update(results={}),
        "a cause nobody documented": lambda doc: doc["causes"].update({"bad-luck": "?"}),
        "an expectation origin nobody knows": lambda doc: doc["profile"]["expectations"][0].update(
            origin="x"
        ),
        "a baseline finding with no outcome": lambda doc: doc.update(
            baseline={
                "path": "b",
                "regressions": [
                    {"id": "RC-DNS-002", "claim": "", "before": "passed", "now": "red", "why": ""}
                ],
                "not_verified": [],
                "fixed": [],
                "known_failures": [],
            }
        ),
        "a top-level field nobody knows": lambda doc: doc.update(colour="red"),
    }


@pytest.mark.parametrize("mutation", list(_mutations()))
def test_a_broken_report_fails_validation(mutation: str, tmp_path: Path) -> None:
    doc = _written(tmp_path)
    assert_valid_report(doc)  # valid before: the mutation alone breaks it
    doc["profile"] = doc["profile"] or {"name": "x", "source": "y", "namespace": None, "expectations": []}
    if not doc["profile"]["expectations"]:
        doc["profile"]["expectations"] = [
            {"key": "k", "value": 1, "origin": None, "file": None, "setting": None}
        ]
    broken = copy.deepcopy(doc)
    _mutations()[mutation](broken)
    assert errors_of(broken) != [], mutation
