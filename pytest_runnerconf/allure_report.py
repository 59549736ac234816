"""Allure adapter: labels each check with its ID, area and claim, links its GitLab jobs and attaches their
evidence and pod timelines; at the session's end, the results directory's environment, categories and (in
GitLab CI) executor files."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_runnerconf import safefiles
from pytest_runnerconf.checks import CheckInfo, info_for
from pytest_runnerconf.errors import RunnerConfError
from pytest_runnerconf.evidence import JobEvidence, RunEvidence
from pytest_runnerconf.outcome import CAUSES
from pytest_runnerconf.plan import ProbeLibrary, item_probes
from pytest_runnerconf.scrub import scrub_data, scrub_json, scrub_text

# allure-pytest registers its listener under this name only when --alluredir is given.
ALLURE_LISTENER = "allure_listener"
CHECK_ID_LABEL = "check_id"


def allure_active(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin(ALLURE_LISTENER)


def probe_job_names(probe: str, library: ProbeLibrary | None = None) -> tuple[str, ...]:
    """The job names a probe template defines (its top-level keys); the probe's own name if it has none."""
    try:
        path = (library or ProbeLibrary()).template(probe)
        jobs = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, RunnerConfError):
        return (probe,)
    return tuple(str(name) for name in jobs) if isinstance(jobs, dict) and jobs else (probe,)


def jobs_for_probes(
    probes: Iterable[str], run: RunEvidence, library: ProbeLibrary | None = None
) -> list[JobEvidence]:
    """The jobs of RUN that the probes produced, in probe order, each once."""
    names: list[str] = []
    for probe in probes:
        names.extend(n for n in probe_job_names(probe, library) if n not in names)
    return [run.jobs[name] for name in names if name in run.jobs]


def run_secrets(run: RunEvidence) -> tuple[str, ...]:
    """The token values the run could have leaked: read from where its profile says the token lives."""
    found = []
    value = os.environ.get(run.profile.get("token_env") or "", "").strip()
    if value:
        found.append(value)
    token_file = run.profile.get("token_file")
    # An unreadable token file leaves the scrubbing of token-shaped strings, which always applies.
    if token_file:
        with contextlib.suppress(OSError):
            found.append(Path(token_file).expanduser().read_text(encoding="utf-8").strip())
    return tuple(found)


def _json(data: Any, secrets: tuple[str, ...]) -> str:
    # The same two passes as evidence.save: credential-named values, then token values and shapes anywhere.
    return scrub_json(data, secrets)


def attach_job(
    job: JobEvidence, secrets: tuple[str, ...] = (), *, watched_until: float | None = None
) -> None:
    """Link one job in GitLab and attach its raw trace, pod timeline picture (SVG), pod spec, pod status
    timeline and pod events to the running test."""
    import allure

    from pytest_runnerconf.report_html import pod_svg, safe_url

    url = safe_url(job.web_url)
    if url is not None:
        allure.dynamic.link(url, name=f"{job.name}: GitLab job")
    allure.attach(
        scrub_text(job.trace, secrets), name=f"{job.name}: trace", attachment_type=allure.attachment_type.TEXT
    )
    if job.pod is None:
        return
    svg = pod_svg(job, watched_until=watched_until)
    if svg is not None:
        allure.attach(
            scrub_text(svg, secrets), name=f"{job.name}: pod timeline picture",
            attachment_type=allure.attachment_type.SVG,
        )  # fmt: skip
    parts = (("pod spec", job.pod.spec), ("pod timeline", job.pod.timeline), ("pod events", job.pod.events))
    for title, data in parts:
        allure.attach(
            _json(data, secrets), name=f"{job.name}: {title}", attachment_type=allure.attachment_type.JSON
        )


def label_check(info: CheckInfo, variant: str = "") -> None:
    """ID, area and claim of the check on the running test; the remediation as a plain paragraph."""
    import allure

    allure.dynamic.id(info.id)
    allure.dynamic.label(CHECK_ID_LABEL, info.id)
    allure.dynamic.feature(info.area)
    allure.dynamic.suite(info.area)
    allure.dynamic.title(info.claim + (f" [{variant}]" if variant else ""))
    allure.dynamic.description(f"{info.claim}\n\nRemediation: {info.remediation}")


def annotate(item: pytest.Item, library: ProbeLibrary | None = None) -> None:
    """Label a check and attach the evidence of the jobs its probes ran; nothing for other tests."""
    info = info_for(item)
    if info is None:
        return
    callspec = getattr(item, "callspec", None)
    label_check(info, callspec.id if callspec is not None else "")
    # Only evidence the test itself obtained: annotating must never start a run.
    run = (getattr(item, "funcargs", None) or {}).get("runnerconf_evidence")
    if not isinstance(run, RunEvidence):
        return
    secrets = run_secrets(run)
    for job in jobs_for_probes(item_probes(item), run, library):
        attach_job(job, secrets, watched_until=run.finished_at or None)


# ---------------------------------------------------------------- the results directory's own files

CATEGORIES_FILE = "categories.json"
ENVIRONMENT_FILE = "environment.properties"
EXECUTOR_FILE = "executor.json"


def categories() -> list[dict[str, Any]]:
    """Allure's categories: conformance failures apart from each cause of could not test, and from bugs.

    Allure gives a result the first category that matches; a could-not-test result is `broken` and its
    message is `could not test (CAUSE): sentence` (outcome.CouldNotTest), so each cause is matched by name
    before the catch-all for broken results (a bug in a check or the plugin).
    """
    found: list[dict[str, Any]] = [
        {
            "name": "conformance failures",
            "description": "the cluster does not do what the check's claim promises",
            "matchedStatuses": ["failed"],
        }
    ]
    for cause, meaning in CAUSES.items():
        found.append(
            {
                "name": f"could not test: {cause}",
                "description": meaning,
                "matchedStatuses": ["broken"],
                "messageRegex": rf"(?s).*could not test \({re.escape(cause)}\): .*",
            }
        )
    found.append(
        {
            "name": "errors in a check or the plugin",
            "description": "a bug, with its traceback: neither a verdict on the cluster nor missing evidence",
            "matchedStatuses": ["broken"],
        }
    )
    found.append({"name": "not applicable", "matchedStatuses": ["skipped"]})
    return found


def _property(text: object) -> str:
    """A value as Java's .properties format reads it back: one line, \\, =, : and non-Latin-1 escaped."""
    out = []
    for char in " ".join(str(text).split()):
        if char in "\\=:#!":
            out.append("\\" + char)
        elif ord(char) > 0x7E:  # the file is read as Latin-1: anything beyond ASCII as a \\u escape
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else "?")
        else:
            out.append(char)
    return "".join(out)


def environment(doc: dict[str, Any]) -> dict[str, str]:
    """Allure's environment widget from report.json's header: the cluster, the versions and the profile, with
    the expectations that did not come from the plugin's defaults."""
    profile = doc.get("profile") or {}
    found = {
        "cluster": doc.get("cluster"),
        "verdict": doc.get("verdict"),
        "gitlab.url": doc.get("gitlab_url"),
        "gitlab.version": doc.get("gitlab_version"),
        "kubernetes.version": doc.get("kubernetes_version"),
        "runner.versions": ", ".join(doc.get("runner_versions") or []),
        "cgroup": ", ".join(doc.get("cgroup_versions") or []),
        "pipeline": doc.get("pipeline_url"),
        "profile": profile.get("name"),
        "profile.source": profile.get("source"),
        "namespace": profile.get("namespace"),
        "command": doc.get("command"),
    }
    for item in profile.get("expectations") or []:
        if isinstance(item, dict) and item.get("origin") not in (None, "default"):
            value = item.get("value")
            found[f"expect.{item.get('key')}"] = value if isinstance(value, str) else json.dumps(value)
    return {key: str(value) for key, value in found.items() if value not in (None, "")}


# GitLab CI's predefined variables that describe the job which ran the session.
_CI_VARIABLES = (
    "GITLAB_CI",
    "CI_JOB_URL",
    "CI_SERVER_URL",
    "CI_PIPELINE_ID",
    "CI_PROJECT_PATH",
    "CI_JOB_NAME",
)


def executor(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Allure's executor.json for a session run by a GitLab CI job; None outside GitLab CI."""
    if environ.get("GITLAB_CI") != "true" or not str(environ.get("CI_JOB_URL", "")).startswith("http"):
        return None
    job_url = environ["CI_JOB_URL"].rstrip("/")
    pipeline = environ.get("CI_PIPELINE_ID", "")
    data: dict[str, Any] = {
        "name": "GitLab CI",
        "type": "gitlab",
        "url": environ.get("CI_SERVER_URL") or None,
        "buildName": " ".join(p for p in (environ.get("CI_PROJECT_PATH"), environ.get("CI_JOB_NAME")) if p),
        "buildUrl": job_url,
        "reportName": "runnerconf",
        "reportUrl": f"{job_url}/artifacts/browse",
    }
    if pipeline.isdigit():
        data["buildOrder"] = int(pipeline)
    return {key: value for key, value in data.items() if value not in (None, "")}


def write_results_files(
    directory: Path, doc: dict[str, Any], environ: Mapping[str, str], secrets: tuple[str, ...] = ()
) -> list[Path]:
    """Write environment.properties, categories.json and (in GitLab CI) executor.json into the Allure results
    DIRECTORY, from report.json's document DOC; every one scrubbed. Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    # Scrubbed before the escaping, which would hide a secret's shape (`KEY=...`, `Bearer ...`), and after.
    found = environment(doc).items()
    lines = [f"{_property(key)}={_property(scrub_text(value, secrets))}" for key, value in found]
    written = [
        safefiles.write_text(directory, ENVIRONMENT_FILE, scrub_text("\n".join(lines) + "\n", secrets)),
        safefiles.write_text(directory, CATEGORIES_FILE, _json(categories(), secrets) + "\n"),
    ]
    ran_by = executor(environ)
    if ran_by is not None:
        written.append(safefiles.write_text(directory, EXECUTOR_FILE, _json(ran_by, secrets) + "\n"))
    return written


def scrub_allure_writer() -> int:
    """Make allure-pytest's result writer scrub what it writes; returns how many writers were guarded.

    allure-pytest fills a test's status details from the exception itself and attaches captured output
    unasked, so scrubbing what this plugin attaches is not enough: the one place every result and
    attachment passes is its AllureFileLogger, which is given the scrubbing subclass below and registered
    again under its own name (allure's own clean-up still finds it).
    """
    import allure_commons
    from allure_commons.logger import AllureFileLogger

    guarded = 0
    manager = allure_commons.plugin_manager
    for plugin in list(manager.get_plugins()):
        if type(plugin) is AllureFileLogger:
            name = manager.get_name(plugin)
            manager.unregister(plugin)
            plugin.__class__ = _scrubbing_logger_class()
            manager.register(plugin, name)
            guarded += 1
    return guarded


@functools.cache
def _scrubbing_logger_class() -> type:
    import allure_commons
    from allure_commons.logger import AllureFileLogger

    class ScrubbingFileLogger(AllureFileLogger):
        def _report_item(self, item: Any) -> None:
            # Every result field (status message and trace, parameters, step names) as plain data.
            for attribute in type(item).__attrs_attrs__:
                setattr(item, attribute.name, _scrub_attrs(getattr(item, attribute.name)))
            super()._report_item(item)

        @allure_commons.hookimpl
        def report_attached_data(self, body: Any, file_name: str) -> None:
            text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
            super().report_attached_data(scrub_text(text), file_name)

        @allure_commons.hookimpl
        def report_attached_file(self, source: str, file_name: str) -> None:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return  # a file that is not text cannot be scrubbed, so it is not attached
            super().report_attached_data(scrub_text(text), file_name)

    return ScrubbingFileLogger


def _scrub_attrs(value: Any) -> Any:
    """Scrub strings inside allure's attrs model objects (results, steps, status details) in place."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [_scrub_attrs(v) for v in value]
    if isinstance(value, dict):
        return scrub_data(value)
    fields = getattr(type(value), "__attrs_attrs__", None)
    if fields is not None:
        for attribute in fields:
            setattr(value, attribute.name, _scrub_attrs(getattr(value, attribute.name)))
    return value


class AllureAdapter:
    """Hooks of the adapter; they run where tests run (an xdist worker, never its controller)."""

    def __init__(self, config: pytest.Config, library: Callable[[], ProbeLibrary]) -> None:
        self.config = config
        self.library = library

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # After every pytest_configure: allure-pytest has registered its writer by now.
        if allure_active(self.config):
            scrub_allure_writer()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # Before fixtures are torn down: the evidence is still in item.funcargs and allure's test is open,
        # also for checks that were skipped or errored in setup.
        if allure_active(self.config):
            annotate(item, self.library())
