"""Check metadata (stable IDs, claims, remediation hints) and uniform conformance failure messages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import pytest

from pytest_runnerconf.evidence import JobEvidence
from pytest_runnerconf.verdict import RECORDER, ConformanceFailure, Expectation, short_form, where

MARKER = "runnerconf_check"
# For the plugin's pytest_configure: config.addinivalue_line("markers", MARKER_HELP).
MARKER_HELP = f"{MARKER}(id): the conformance check a test implements (set by @check)"
_ID = re.compile(r"^RC-[A-Z]{2,4}-\d{3}$")

F = TypeVar("F", bound=Callable[..., Any])
# What a check may declare in reads=(...): "pods/eviction" is the one write, asked only by the opt-in
# disruption checks (the run evicts their probe pod), so the Role grants it only when one is selected.
KUBE_READS = ("secrets", "pods/eviction")


@dataclass(frozen=True)
class CheckInfo:
    id: str
    claim: str
    remediation: str
    area: str
    probes: tuple[str, ...] = ()
    # Kubernetes resources the check reads besides the job pods and their events (which every run watches),
    # e.g. ("secrets",): the run lists them only when a selected check needs them; `runnerconf rbac` grants them.
    reads: tuple[str, ...] = ()
    # Jobs whose failures are this check's evidence (an OOM kill, a refused override): a runner system failure
    # of these jobs is judged by the check, not turned into could_not_test by job_evidence.
    judges_failures: tuple[str, ...] = ()


CHECKS: dict[str, CheckInfo] = {}


def register(info: CheckInfo) -> CheckInfo:
    """Add INFO to CHECKS; the same ID twice with different metadata is a bug in the suite."""
    if not _ID.match(info.id):
        raise ValueError(f"check id {info.id!r} must look like RC-ORD-001 (RC-<2-4 capitals>-<3 digits>)")
    for name in ("claim", "remediation", "area"):
        if not getattr(info, name).strip():
            raise ValueError(f"check {info.id} needs a non-empty {name}")
    known = CHECKS.get(info.id)
    if known is not None and known != info:
        raise ValueError(
            f"check id {info.id} is registered twice with different metadata: {known} and {info}"
        )
    CHECKS[info.id] = info
    return info


def check(
    *,
    id: str,
    claim: str,
    remediation: str,
    area: str,
    probes: tuple[str, ...] = (),
    reads: tuple[str, ...] = (),
    judges_failures: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Declare that a test function implements check ID; stores the CheckInfo and marks the test.

    judges_failures names the probe jobs whose failed end the check judges itself (see CheckInfo).
    """
    unknown = sorted(set(reads) - set(KUBE_READS))
    if unknown:
        raise ValueError(f"check {id}: reads={unknown} is not one of {', '.join(KUBE_READS)}")
    info = register(
        CheckInfo(
            id=id,
            claim=claim,
            remediation=remediation,
            area=area,
            probes=tuple(probes),
            reads=tuple(reads),
            judges_failures=tuple(judges_failures),
        )
    )

    def decorate(func: F) -> F:
        func.runnerconf_check = info  # type: ignore[attr-defined]
        marked: F = pytest.mark.runnerconf_check(id=info.id)(func)
        return marked

    return decorate


def info_for(item: pytest.Item) -> CheckInfo | None:
    """The CheckInfo of a collected test, or None for tests that are not checks."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    check_id = marker.kwargs.get("id") or (marker.args[0] if marker.args else None)
    return CHECKS.get(check_id) if isinstance(check_id, str) else None


def _info(check_id_or_info: str | CheckInfo) -> CheckInfo:
    if isinstance(check_id_or_info, CheckInfo):
        return check_id_or_info
    try:
        return CHECKS[check_id_or_info]
    except KeyError:
        raise ValueError(
            f"unknown check id {check_id_or_info!r}; registered: {', '.join(sorted(CHECKS)) or 'none'}"
        ) from None


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str, sort_keys=isinstance(value, dict))
    else:
        text = repr(value)
    # Continuation lines of a multi-line value stay under their label.
    return text.replace("\n", "\n            ")


def _job_line(job: JobEvidence) -> str:
    found = where(job)
    url = f" {found['job_url']}" if found["job_url"] else ""
    return f"  job: {job.name}{url}  pod: {found['pod'] or '(none seen)'}"


def format_failure(
    check_id_or_info: str | CheckInfo,
    expected: Any,
    observed: Any,
    *,
    job: JobEvidence | None = None,
    detail: str = "",
) -> str:
    """The failure message every check uses: ID and claim, expected, observed, where, and what to fix."""
    info = _info(check_id_or_info)
    lines = [f"{info.id} {info.claim}", f"  expected: {_show(expected)}", f"  observed: {_show(observed)}"]
    if detail:
        lines.append(f"  detail:   {_show(detail)}")
    if job is not None:
        lines.append(_job_line(job))
    lines.append(f"  fix: {info.remediation}")
    return "\n".join(lines)


def _expectation(
    check_id_or_info: str | CheckInfo,
    expected: Any,
    observed: Any,
    held: bool,
    job: JobEvidence | None,
    detail: str,
    summary: str,
) -> Expectation:
    return Expectation(
        _info(check_id_or_info).id,
        expected,
        observed,
        held,
        detail=detail,
        summary=" ".join(summary.split()) or short_form(observed),
        **where(job),
    )


def fail(
    check_id_or_info: str | CheckInfo,
    expected: Any,
    observed: Any,
    *,
    job: JobEvidence | None = None,
    detail: str = "",
    summary: str = "",
) -> NoReturn:
    """End the check as failed: the message for people, the expectation as data for the reports.

    SUMMARY says what was observed in a few words (the report's table cell); without one it is OBSERVED on
    one line.
    """
    __tracebackhide__ = True
    expectation = _expectation(check_id_or_info, expected, observed, False, job, detail, summary)
    RECORDER.add(expectation)
    raise ConformanceFailure(
        format_failure(check_id_or_info, expected, observed, job=job, detail=detail), expectation
    )


def held(
    check_id_or_info: str | CheckInfo,
    expected: Any,
    observed: Any,
    *,
    summary: str,
    job: JobEvidence | None = None,
    detail: str = "",
) -> None:
    """Record that an expectation held: what was expected and observed, as data, and a few words for people.

    A check calls it once it has judged everything, so a passing report says what it verified (which limits,
    which resolv.conf, how long cleanup took), not only that it passed.
    """
    RECORDER.add(_expectation(check_id_or_info, expected, observed, True, job, detail, summary))


def expect_equal(
    check_id_or_info: str | CheckInfo,
    expected: Any,
    observed: Any,
    *,
    job: JobEvidence | None = None,
    detail: str = "",
    summary: str = "",
) -> None:
    """Fail unless OBSERVED equals EXPECTED; a pass is recorded with both values too."""
    __tracebackhide__ = True
    expect_true(
        check_id_or_info, observed == expected, expected, observed, job=job, detail=detail, summary=summary
    )


def expect_true(
    check_id_or_info: str | CheckInfo,
    condition: bool,
    expected: Any,
    observed: Any,
    *,
    job: JobEvidence | None = None,
    detail: str = "",
    summary: str = "",
) -> None:
    """Fail unless CONDITION holds; a pass is recorded with the expected and observed values too."""
    __tracebackhide__ = True
    if not condition:
        fail(check_id_or_info, expected, observed, job=job, detail=detail, summary=summary)
    held(check_id_or_info, expected, observed, job=job, detail=detail, summary=summary)
