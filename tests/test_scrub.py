"""Planted secrets of every shape appear 0 times in every output: the scrubber, shape by shape and sink by sink.

The sink tests run one real pytest session (a child process) over a replayed bundle whose trace, pod spec,
notes, failure message, captured output and progress line all carry every planted secret, with JUnit, Allure
and the conformance report switched on; then they read what that session wrote. Each sink also has a positive
control (a marker planted next to the secrets must arrive), so a sink that never received the text cannot
pass by accident.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_runnerconf.evidence import JobEvidence, PodObservation, RunEvidence, save
from pytest_runnerconf.profile import profile_from_table
from pytest_runnerconf.scrub import KNOWN, MASK, ScrubbingStream, remember, scrub_data, scrub_json, scrub_text

TOKEN_ENV = "RUNNERCONF_LEAKY_TOKEN"
PROFILE_TOKEN = "opaque-profile-token-7e2d91c4"  # no known shape: only "the run knows it" masks it
_DOCKER_CONFIG = json.dumps({"auths": {"registry.example.com": {"auth": "ZG9ja2VyOmQwY2tlcnBhc3M="}}})
_PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"


@dataclass(frozen=True)
class Shape:
    secret: str  # what must never appear
    text: str  # how it is planted ({s} is the secret)

    def planted(self) -> str:
        return self.text.replace("{s}", self.secret)


SHAPES: dict[str, Shape] = {
    "gitlab-personal-token": Shape("glpat-Zq8vR2mN4kP7sT1wX3yB", "{s}"),
    "gitlab-job-token": Shape("glcbt-64_Hq3Lm9Vx2Pt7Rw5Ks8Nd", "CI_JOB_TOKEN is {s}"),
    "gitlab-runner-token": Shape("glrt-t1_Bv6Yc4Gh8Jk2Mn5Qp9Sw", "{s}"),
    "gitlab-deploy-token": Shape("gldt-Fx7Tz3Wq9Lb2Nc5Rv8Hm", "{s}"),
    "gitlab-trigger-token": Shape("glptt-0f3a9c5e7b1d4a6c8e2f0b9d7a5c3e1f4b6d8a0c", "{s}"),
    "instance-prefixed-token": Shape("acme-glpat-Yw2Er5Ty8Ui1Op4As7Df", "{s}"),
    "runner-registration-token": Shape("GR1348941Kq2Wx5Ez8Rc3Tv6Yb9Un", "{s}"),
    "jwt": Shape(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqb2ItNDIiLCJpc3MiOiJnaXRsYWIifQ.c2lnbmF0dXJl", "CI_JOB_JWT {s}"
    ),
    "url-credentials": Shape("Url5ecretPassw0rd", "https://gitlab-ci-token:{s}@gitlab.example.com/g/p.git"),
    "proxy-credentials": Shape("pr0xyPassw0rd9", "https_proxy=http://bob:{s}@proxy.example.com:3128"),
    "bearer-header": Shape("0paqueBearerT0ken41", "Authorization: Bearer {s}"),
    "basic-header": Shape(base64.b64encode(b"alice:basicPassw0rd").decode(), "Authorization: Basic {s}"),
    "private-token-header": Shape("0paquePrivateT0ken7", "PRIVATE-TOKEN: {s}"),
    "docker-auths": Shape(
        "ZG9ja2VyOmQwY2tlcnBhc3M=", _DOCKER_CONFIG.replace("ZG9ja2VyOmQwY2tlcnBhc3M=", "{s}")
    ),
    "docker-config-base64": Shape(base64.b64encode(_DOCKER_CONFIG.encode()).decode(), "config {s}"),
    "aws-access-key-id": Shape("AKIAZ7Q3W5E8R2T4Y6U9", "aws key {s}"),
    "aws-secret-access-key": Shape("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq9w8e7r6t", "AWS_SECRET_ACCESS_KEY={s}"),
    "gcp-api-key": Shape("AIzaSyB3x9Q2w7E5r1T8y4U6i0O2p3A5s7D9f1G", "key={s}"),
    "pem-private-key": Shape(
        _PEM_BODY, "-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----"
    ),
    "secret-named-variable": Shape("v4riableSecretValue", "export CI_REGISTRY_PASSWORD='{s}'"),
    "run-token": Shape(PROFILE_TOKEN, "token {s} in use"),
}


# ---------------------------------------------------------------- the scrubber itself


@pytest.fixture
def run_knows_token() -> None:
    remember(PROFILE_TOKEN)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape_is_masked_in_text(shape: str, run_knows_token: None) -> None:
    planted = SHAPES[shape].planted()
    scrubbed = scrub_text(f"before {planted} after")
    assert SHAPES[shape].secret not in scrubbed
    assert MASK in scrubbed and scrubbed.startswith("before ") and scrubbed.endswith(" after")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape_is_masked_in_json(shape: str, run_knows_token: None) -> None:
    doc = {"message": SHAPES[shape].planted(), "lines": [SHAPES[shape].planted()]}
    text = scrub_json(doc)
    assert SHAPES[shape].secret not in text and json.loads(text)["message"]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape_is_masked_when_written_in_pieces(shape: str, run_knows_token: None) -> None:
    out = io.StringIO()
    stream = ScrubbingStream(out)
    planted = f"line {SHAPES[shape].planted()} end\n"
    for piece in (planted[: len(planted) // 2], planted[len(planted) // 2 :]):
        stream.write(piece)
    stream.flush()
    assert SHAPES[shape].secret not in out.getvalue() and out.getvalue().endswith("end\n")


def test_structured_values_are_masked_by_name() -> None:
    env = [{"name": "CI_REGISTRY_PASSWORD", "value": "short1"}, {"name": "CI_JOB_ID", "value": "42"}]
    data = scrub_data({"env": env, "variables": [{"key": "DEPLOY_TOKEN", "value": "x1y2z3"}], "auth": "a2V5"})
    assert data["env"] == [
        {"name": "CI_REGISTRY_PASSWORD", "value": MASK},
        {"name": "CI_JOB_ID", "value": "42"},
    ]
    assert data["variables"][0]["value"] == MASK and data["auth"] == MASK


@pytest.mark.parametrize(
    "text",
    [
        'token_env = "RUNNERCONF_TOKEN", token_file = "~/.config/runnerconf/prod.token"',
        "check the runner's RBAC (secrets delete) and 'Error cleaning up secrets' in the job log",
        '"automountServiceAccountToken": false, "secretName": "registry-creds"',
        "runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4 via runner-manager-7 at 2026-11-23T00:00:04Z",
        "https://gitlab.example.com:8443/runnerconf/scratch/-/jobs/101 and git@gitlab.example.com:g/p.git",
        "RUNNERCONF ordering "
        + base64.b64encode(json.dumps({"init": "done", "t": 1.5} | {"x": "y" * 30}).encode()).decode(),
        "Basic authentication is not used; Bearer tokens neither",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub_text(text) == text


def test_a_setting_that_names_a_secret_variable_is_shown() -> None:
    # [expect.registry] password_variable: an operator fixing it must see which variable the run reads.
    registry = {"password_variable": "RUNNERCONF_REGISTRY_PASSWORD", "user_variable": "CI_REGISTRY_USER"}
    assert scrub_data({"registry": registry}) == {"registry": registry}
    assert scrub_data({"registry_password": "hunter2-hunter2"}) == {"registry_password": MASK}


def test_the_runner_short_token_is_not_a_secret() -> None:
    from pytest_runnerconf.scrub import harvest

    # It names every job pod (runner-<short token>-project-...): masking it would garble every output.
    env = [{"name": "CI_RUNNER_SHORT_TOKEN", "value": "runnercon"}]
    harvest({"env": env})
    assert scrub_data({"env": env}) == {"env": env}
    assert scrub_text("runner-runnercon-project-1-concurrent-0") == "runner-runnercon-project-1-concurrent-0"


def test_a_value_seen_under_a_secret_name_is_masked_everywhere() -> None:
    from pytest_runnerconf.scrub import harvest

    harvest({"env": [{"name": "CI_DEPENDENCY_PROXY_PASSWORD", "value": "harvested-value-93"}]})
    assert scrub_text("the script printed harvested-value-93") == f"the script printed {MASK}"


@pytest.fixture(autouse=True)
def _forget_known() -> Iterator[None]:
    yield
    KNOWN.clear()


# ---------------------------------------------------------------- every sink of a real session


def _planted_lines(where: str) -> list[str]:
    return [f"in-{where} {name}: {shape.planted()}" for name, shape in SHAPES.items()]


CHECK_MODULE = f"""
import warnings

from pytest_runnerconf import check, fail
from pytest_runnerconf.progress import END, note

LINES = {_planted_lines("failure")!r}
STDOUT = {_planted_lines("stdout")!r}
PROGRESS = {_planted_lines("progress")!r}
WARNING = {_planted_lines("warning")!r}


@check(id="RC-LKY-001", claim="nothing leaks", remediation="none", area="leaks", probes=("ordering",))
def test_leaks(runnerconf, job_evidence):
    for line in PROGRESS:
        runnerconf.progress(note(line))
    runnerconf.progress(END)
    print("\\n".join(STDOUT))
    warnings.warn(UserWarning("\\n".join(WARNING)))  # the warnings summary is terminal-only text
    fail("RC-LKY-001", "no secret", "\\n".join(LINES), job=job_evidence("ordering"))
"""


def _leaky_run() -> RunEvidence:
    profile = profile_from_table(
        "leaky",
        {
            "gitlab_url": "https://gitlab.example.com",
            "token_env": TOKEN_ENV,
            "project": "g/p",
            "namespace": "ci",
        },
        "runnerconf.toml",
    )
    env = [{"name": "CI_REGISTRY_PASSWORD", "value": SHAPES["secret-named-variable"].secret}]
    env += [{"name": f"PLANTED_{i}", "value": shape.planted()} for i, shape in enumerate(SHAPES.values())]
    pod = PodObservation(
        name="runner-abc-project-1-concurrent-0-x1y2z3w4",
        first_seen=1.0,
        spec={"metadata": {"name": "runner-abc"}, "spec": {"containers": [{"name": "build", "env": env}]}},
    )
    job = JobEvidence(
        name="ordering",
        job={
            "id": 1,
            "name": "ordering",
            "status": "success",
            "web_url": "https://gitlab.example.com/g/p/-/jobs/1",
        },
        trace="\n".join(_planted_lines("trace")) + "\nJob succeeded\n",
        pod=pod,
    )
    return RunEvidence(
        run_id="leaky-1",
        cluster="leaky",
        profile=profile.summary(),
        gitlab_url=profile.gitlab_url,
        project="g/p",
        branch="runnerconf/leaky-1",
        jobs={"ordering": job},
        notes=_planted_lines("notes"),
    )


def _write_raw_bundle(run: RunEvidence, directory: Path) -> None:
    """The bundle as a hostile or older writer could have left it: nothing scrubbed."""
    job = run.jobs["ordering"]
    jobdir = directory / "jobs" / "ordering"
    jobdir.mkdir(parents=True)
    (jobdir / "trace.txt").write_text(job.trace, encoding="utf-8")
    assert job.pod is not None
    pod = {"name": job.pod.name, "first_seen": 1.0, "deleted_at": None, "spec": job.pod.spec, "last": {}}
    (jobdir / "pod.json").write_text(json.dumps(pod), encoding="utf-8")
    (jobdir / "timeline.json").write_text("[]", encoding="utf-8")
    # An event whose message carries every secret: the pod's timeline picture shows it on hover.
    event = {"type": "Warning", "reason": "Planted", "message": "\n".join(_planted_lines("event")),
             "lastTimestamp": "2026-11-23T00:00:05Z"}  # fmt: skip
    (jobdir / "events.json").write_text(json.dumps([event]), encoding="utf-8")
    entry = {
        "name": "ordering",
        "dir": "jobs/ordering",
        "job": job.job,
        "records": {},
        "pod": {"name": job.pod.name},
    }
    doc = {
        "version": run.version,
        "run_id": run.run_id,
        "cluster": run.cluster,
        "profile": run.profile,
        "gitlab_url": run.gitlab_url,
        "project": run.project,
        "branch": run.branch,
        # What the Allure environment shows: the versions (as a hostile GitLab could answer them).
        "gitlab_version": "\n".join(_planted_lines("version")),
        "pipeline": {},
        "plan": ["ordering"],
        "notes": run.notes,
        "jobs": [entry],
    }
    (directory / "evidence.json").write_text(json.dumps(doc), encoding="utf-8")


@dataclass(frozen=True)
class Outputs:
    terminal: str
    files: dict[str, str]  # sink -> everything written there, concatenated

    def sink(self, name: str) -> str:
        return self.terminal if name == "terminal" else self.files[name]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    pytest.importorskip("allure_pytest")
    work = tmp_path_factory.mktemp("leaky")
    _write_raw_bundle(_leaky_run(), work / "bundle")
    (work / "test_leaky.py").write_text(CHECK_MODULE, encoding="utf-8")
    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNERCONF_", "PYTEST_", "CI"))}
    env[TOKEN_ENV] = PROFILE_TOKEN
    # As a GitLab CI job runs it: Allure's executor.json describes the job, from these variables.
    env.update(GITLAB_CI="true", CI_JOB_URL="https://gitlab.example.com/g/p/-/jobs/1")
    env["CI_JOB_NAME"] = "\n".join(_planted_lines("ci-job"))
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "test_leaky.py", "--runnerconf-replay=bundle",
            "--junitxml=junit.xml", "-o", "junit_logging=all", "--alluredir=allure",
            "--runnerconf-report=report", "-p", "no:cacheprovider", "-rA",
        ],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the check failed, as planted

    def read(paths: list[Path]) -> str:
        assert paths, "the sink wrote nothing"
        return "\n".join(p.read_text(encoding="utf-8") for p in paths)

    allure = work / "allure"
    files = {
        "junit": read([work / "junit.xml"]),
        "allure-result": read(sorted(allure.glob("*-result.json"))),
        "allure-attachment": read(sorted(allure.glob("*-attachment*"))),
        "allure-timeline-svg": read(sorted(allure.glob("*-attachment.svg"))),
        "allure-environment": read([allure / "environment.properties"]),
        "allure-executor": read([allure / "executor.json"]),
        "report.json": read([work / "report" / "report.json"]),
        "report.md": read([work / "report" / "report.md"]),
        "report.html": read([work / "report" / "report.html"]),
    }
    saved = tmp_path_factory.mktemp("saved")
    save(_leaky_run(), saved, secrets=(PROFILE_TOKEN,))
    files["evidence"] = read(sorted(p for p in saved.rglob("*") if p.is_file()))
    return Outputs(proc.stdout + proc.stderr, files)


# sink -> the markers of the planted text that must reach it (so the sink really saw every secret)
SINKS: dict[str, tuple[str, ...]] = {
    "terminal": ("in-failure", "in-stdout", "in-progress", "in-warning"),
    "junit": ("in-failure", "in-stdout"),
    "allure-result": ("in-failure",),
    "allure-attachment": ("in-trace", "in-stdout", "PLANTED_0", "in-event"),
    "allure-timeline-svg": ("in-event",),
    "allure-environment": ("in-version",),
    "allure-executor": ("in-ci-job",),
    "report.json": ("in-failure", "in-notes"),
    "report.md": ("in-failure", "in-notes"),
    "report.html": ("in-failure", "in-notes"),
    "evidence": ("in-trace", "in-notes", "PLANTED_0"),
}


@pytest.mark.parametrize("sink", list(SINKS))
def test_planted_text_reaches_the_sink(sink: str, outputs: Outputs) -> None:
    text = outputs.sink(sink)
    for marker in SINKS[sink]:
        assert marker in text, f"{sink}: {marker} never arrived, so the sink proves nothing"
    assert MASK in text


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("sink", list(SINKS))
def test_no_planted_secret_in_any_sink(sink: str, shape: str, outputs: Outputs) -> None:
    assert outputs.sink(sink).count(SHAPES[shape].secret) == 0
