"""Validation of report.json documents against the schema the package ships (jsonschema, draft 2020-12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema

from pytest_runnerconf.report import report_schema


def errors_of(doc: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every way DOC breaks the schema, as `path: message` (empty when it is a valid report.json)."""
    validator = jsonschema.Draft202012Validator(schema or report_schema())
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(doc)
    )


def assert_valid_report(doc: Any, schema: dict[str, Any] | None = None) -> None:
    __tracebackhide__ = True
    problems = errors_of(doc, schema)
    assert problems == [], "report.json breaks its schema:\n" + "\n".join(problems[:20])


def assert_valid_report_file(path: Path) -> dict[str, Any]:
    import json

    __tracebackhide__ = True
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert_valid_report(doc)
    return doc
