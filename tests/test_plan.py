"""The plan renders probe templates into one pipeline, and the probe scripts print decodable records."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.plan import (
    RUN_ID_VARIABLE,
    STAGE,
    Plan,
    ProbeLibrary,
    builtin_probes_dir,
    job_directives,
    job_names,
    make_plan,
    render_pipeline,
)
from pytest_runnerconf.profile import Expectations, ImagesExpect, Profile
from pytest_runnerconf.trace import parse_trace

GOLDEN = Path(__file__).parent / "data" / "golden"
RUN_ID = "20260101-000000-abcdef"
# RUNNERCONF_UPDATE_GOLDEN=1 rewrites the golden files instead of comparing against them.
UPDATE = os.environ.get("RUNNERCONF_UPDATE_GOLDEN") == "1"


def _profile(**expect: object) -> Profile:
    return Profile(
        name="prod",
        gitlab_url="https://gitlab.example.test",
        token_env="RUNNERCONF_TOKEN",
        token_file=None,
        project="group/scratch",
        runner_tags=("k8s", "conformance"),
        kubeconfig=None,
        kube_context=None,
        namespace="ci",
        expect=Expectations(
            images=ImagesExpect(build="registry.test/alpine:3.20", service="registry.test/busybox:1.36"),
            **expect,  # type: ignore[arg-type]
        ),
        source="runnerconf.toml",
    )


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, (
        f"{path} differs; RUNNERCONF_UPDATE_GOLDEN=1 refreshes it"
    )


def test_render_matches_golden() -> None:
    text, files = render_pipeline(make_plan(["ordering", "builds"]), _profile(), RUN_ID)
    _golden("pipeline-builds-ordering.yml", text)
    assert sorted(files) == [".runnerconf/builds.sh", ".runnerconf/lib.sh", ".runnerconf/ordering.sh"]
    assert files[".runnerconf/lib.sh"] == (builtin_probes_dir() / "lib.sh").read_text()


def test_render_one_stage_tags_images_and_run_id() -> None:
    text, _ = render_pipeline(make_plan(["builds", "ordering"]), _profile(builds_dir="/mnt/builds/"), RUN_ID)
    doc = yaml.safe_load(text)
    assert doc["stages"] == [STAGE]
    assert doc["variables"] == {RUN_ID_VARIABLE: RUN_ID}
    assert job_names(text) == ["builds", "ordering"]
    for name in job_names(text):
        job = doc[name]
        assert job["stage"] == STAGE
        assert job["tags"] == ["k8s", "conformance"]
        assert job["image"] == "registry.test/alpine:3.20"
        assert [s["name"] for s in job["services"]] == ["registry.test/busybox:1.36"]
    assert "{{" not in text
    assert doc["builds"]["variables"]["RUNNERCONF_BUILDS_DIR"] == "/mnt/builds"
    assert f"/mnt/builds/.runnerconf-sidecar-{RUN_ID}" in doc["builds"]["services"][0]["command"][2]
    assert doc["ordering"]["services"][0]["variables"] == {"HEALTHCHECK_TCP_PORT": "8080"}
    assert doc["builds"]["artifacts"]["paths"] == ["runnerconf-artifact.txt"]


def test_plan_is_sorted_union() -> None:
    assert make_plan(["ordering", "builds", "ordering"], ["RC-ORD-001"]) == Plan(
        probes=("builds", "ordering"), checks=("RC-ORD-001",)
    )


def test_no_tags_means_no_tags_key() -> None:
    profile = _profile()
    untagged = Profile(**{**vars(profile), "runner_tags": ()})
    text, _ = render_pipeline(make_plan(["builds"]), untagged, RUN_ID)
    assert "tags" not in yaml.safe_load(text)["builds"]


def test_unknown_probe_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown probe 'no-such-probe'.*known probes.*builds, .*ordering"):
        make_plan(["no-such-probe"])


def test_empty_plan_refused() -> None:
    with pytest.raises(ConfigError, match="no probe jobs"):
        render_pipeline(Plan(probes=()), _profile(), RUN_ID)


def _only(directory: Path) -> ProbeLibrary:
    """A library of one directory standing in for the built-in one."""
    (directory / "lib.sh").write_text("")
    return ProbeLibrary((directory,))


def test_unknown_placeholder_names_file(tmp_path: Path) -> None:
    library = _only(tmp_path)
    (tmp_path / "bad.yml").write_text('bad:\n  image: "{{ images.nope }}"\n  script: [true]\n')
    with pytest.raises(ConfigError, match=r"bad\.yml: unknown placeholder \{\{ images\.nope \}\}"):
        render_pipeline(Plan(probes=("bad",), library=library), _profile(), RUN_ID)


def test_duplicate_job_across_probes_refused(tmp_path: Path) -> None:
    library = _only(tmp_path)
    for probe in ("a", "b"):
        (tmp_path / f"{probe}.yml").write_text("same:\n  script: [true]\n")
    with pytest.raises(ConfigError, match="job 'same' is already defined"):
        render_pipeline(Plan(probes=("a", "b"), library=library), _profile(), RUN_ID)


def test_directives_are_stripped_and_returned(tmp_path: Path) -> None:
    library = _only(tmp_path)
    (tmp_path / "c.yml").write_text(
        "c-cancel:\n  x-runnerconf:\n    cancel_on_record: c-cancel\n  script: [true]\n"
        "c-plain:\n  script: [true]\n"
    )
    plan = Plan(probes=("c",), library=library)
    text, _ = render_pipeline(plan, _profile(), RUN_ID)
    assert "x-runnerconf" not in text
    assert job_directives(plan, _profile(), RUN_ID) == {"c-cancel": {"cancel_on_record": "c-cancel"}}


def test_unknown_directive_refused(tmp_path: Path) -> None:
    library = _only(tmp_path)
    (tmp_path / "c.yml").write_text("c:\n  x-runnerconf:\n    cancel_after: 3\n  script: [true]\n")
    with pytest.raises(
        ConfigError, match=r"c\.yml: job 'c' has unknown x-runnerconf keys \['cancel_after'\]"
    ):
        job_directives(Plan(probes=("c",), library=library), _profile(), RUN_ID)


def test_extra_probe_directory_adds_probes_and_scripts(tmp_path: Path) -> None:
    (tmp_path / "team.yml").write_text("team-job:\n  script: [sh .runnerconf/team.sh]\n")
    (tmp_path / "team.sh").write_text("echo team\n")
    library = ProbeLibrary.with_extra([tmp_path])
    plan = make_plan(["team", "builds"], library=library)
    text, files = render_pipeline(plan, _profile(), RUN_ID)
    assert "team-job" in yaml.safe_load(text) and "builds" in yaml.safe_load(text)
    assert files[".runnerconf/team.sh"] == "echo team\n"
    assert files[".runnerconf/lib.sh"] == (builtin_probes_dir() / "lib.sh").read_text()


def test_probe_defined_twice_is_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "builds.yml").write_text("mine:\n  script: [true]\n")
    with pytest.raises(
        ConfigError, match=r"probe 'builds' is defined twice: .*builds\.yml and .*builds\.yml"
    ):
        make_plan(["builds"], library=ProbeLibrary.with_extra([tmp_path]))


def test_extra_probe_directory_may_not_replace_lib(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("")
    with pytest.raises(ConfigError, match=r"lib\.sh is the built-in probe library's name"):
        make_plan(["builds"], library=ProbeLibrary.with_extra([tmp_path]))


# ---------------------------------------------------------------- probe scripts under a real sh


def _sh(script: str, cwd: Path, env: dict[str, str]) -> str:
    env = {"PATH": os.environ["PATH"], **env}
    result = subprocess.run(
        ["sh", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _checkout(tmp_path: Path) -> Path:
    project = tmp_path / "builds" / "group" / "scratch"
    (project / ".runnerconf").mkdir(parents=True)
    _, files = render_pipeline(make_plan(["builds", "ordering"]), _profile(), RUN_ID)
    for path, content in files.items():
        (project / path).write_text(content)
    return project


def test_lib_escapes_hostile_values(tmp_path: Path) -> None:
    project = _checkout(tmp_path)
    nasty = 'quote " backslash \\ tab \t end'
    out = _sh(
        '. .runnerconf/lib.sh; rc_begin; rc_str s "$NASTY"; rc_num n 1.5; rc_num bad 12abc; rc_bool t 0; '
        'rc_bool f 1; rc_lines l "$(printf "one\\n\\ntwo \\"2\\"")"; rc_lines empty ""; rc_emit libtest',
        project,
        {"NASTY": nasty},
    )
    [record] = parse_trace(out).records_for("libtest")
    assert record == {"s": nasty, "n": 1.5, "bad": None, "t": True, "f": False, "l": ["one", 'two "2"'],
                      "empty": []}  # fmt: skip


def test_lib_keeps_multiline_strings(tmp_path: Path) -> None:
    project = _checkout(tmp_path)
    out = _sh('. .runnerconf/lib.sh; rc_begin; rc_str m "$(printf "a\\nb\\r")"; rc_emit ml', project, {})
    assert parse_trace(out).records_for("ml") == [{"m": "a\nb\r"}]


def test_builds_probe_reads_checkout_and_sidecar_marker(tmp_path: Path) -> None:
    project = _checkout(tmp_path)
    builds = tmp_path / "builds"
    sha = "0123456789abcdef0123456789abcdef01234567"
    (project / ".git" / "refs" / "heads").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/runnerconf/x\n")
    (project / ".git" / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/runnerconf/x\n")
    (builds / f".runnerconf-sidecar-{RUN_ID}").write_text(f"{RUN_ID}\n")
    env = {"RUNNERCONF_RUN_ID": RUN_ID, "CI_PROJECT_DIR": str(project), "RUNNERCONF_BUILDS_DIR": str(builds)}
    [record] = parse_trace(_sh("sh .runnerconf/builds.sh", project, env)).records_for("builds")
    assert record["head_sha"] == sha
    assert record["sidecar_marker_found"] is True
    assert record["sidecar_marker"] == RUN_ID
    assert record["ci_project_dir"] == str(project)
    assert {".git", ".runnerconf", "runnerconf-artifact.txt"} <= set(record["files"])
    assert (project / "runnerconf-artifact.txt").read_text() == f"{RUN_ID}\n"


def test_ordering_probe_reports_closed_port_without_waiting_forever(tmp_path: Path) -> None:
    project = _checkout(tmp_path)
    # Port 9 (discard) on loopback is closed on this machine; the probe polls for a bounded time.
    env = {"RUNNERCONF_RUN_ID": RUN_ID, "RUNNERCONF_SERVICE_PORT": "9"}
    out = _sh("sh .runnerconf/ordering.sh", project, {**env, "RUNNERCONF_CONNECT_ATTEMPTS": "2"})
    [record] = parse_trace(out).records_for("ordering")
    assert record["immediate"] is False
    assert record["connected_at"] is None
    assert record["port"] == 9
    assert record["tool"] in ("python3", "nc")


def test_a_probe_job_may_need_another_in_the_same_pipeline(tmp_path: Path) -> None:
    library = _only(tmp_path)
    (tmp_path / "pair.yml").write_text(
        "pair-save:\n  script: [true]\npair-use:\n  needs: [pair-save]\n  script: [true]\n"
    )
    text, _ = render_pipeline(Plan(probes=("pair",), library=library), _profile(), RUN_ID)
    document = yaml.safe_load(text)
    # one stage for all: the needing job waits for its need only, the rest of the pipeline runs at once
    assert document["pair-use"]["needs"] == ["pair-save"]
    assert document["pair-use"]["stage"] == document["pair-save"]["stage"] == STAGE


def test_a_need_no_probe_of_the_run_defines_is_refused_before_the_push(tmp_path: Path) -> None:
    library = _only(tmp_path)
    (tmp_path / "use.yml").write_text("use:\n  needs: [{job: save}]\n  script: [true]\n")
    (tmp_path / "save.yml").write_text("save:\n  script: [true]\n")
    with pytest.raises(
        ConfigError, match=r"use\.yml: job 'use' needs job 'save', which no probe of this run"
    ):
        render_pipeline(Plan(probes=("use",), library=library), _profile(), RUN_ID)
    render_pipeline(Plan(probes=("save", "use"), library=library), _profile(), RUN_ID)
