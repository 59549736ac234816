"""--runnerconf-dry-run: plans, writes the pipeline file locally, preflights read-only and creates nothing.

Offline: the plan's jobs and images, the estimate from a saved bundle, the settings it refuses, and a whole dry
run against a GitLab that cannot be reached (exit 6, every problem named). On the local cluster (docker, under
the cluster lock): GitLab's branches, their commits and the pipelines are the same before and after, with the
full context (exit 0) and with the restricted one, whose missing `watch pods` grant the dry run names (exit 6).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf import dry_run
from pytest_runnerconf.plan import make_plan, render_pipeline
from pytest_runnerconf.profile import profile_from_table

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
BUNDLE = ROOT / "tests" / "data" / "bundles" / "local-clean.tar.gz"
TOKEN_ENV = "RUNNERCONF_DRY_RUN_TEST_TOKEN"
TOKEN = "glpat-dry-run-test-token-0123"


def _profile(**overrides: Any) -> Any:
    table = {
        "gitlab_url": "http://127.0.0.1:9",
        "token_env": TOKEN_ENV,
        "project": "g/p",
        "namespace": "ci",
        "runner_tags": ["t"],
        **overrides,
    }
    return profile_from_table("x", table, "runnerconf.toml")


def test_the_plan_names_each_job_its_probe_image_and_services() -> None:
    plan = make_plan(["ordering", "aliases"], ["RC-ORD-004"])
    profile = _profile()
    ci_yaml, _ = render_pipeline(plan, profile, "run-1")
    jobs = {job.name: job for job in dry_run.probe_jobs(plan, profile, ci_yaml, "run-1")}
    assert jobs["ordering"].probe == "ordering"
    assert jobs["ordering"].image == profile.expect.images.build
    assert jobs["ordering"].services == (f"{profile.expect.images.service} as rc-tcp",)
    assert {job.probe for job in jobs.values()} == {"ordering", "aliases"}
    assert "aliases-invalid" in jobs  # a probe may make several jobs


def _bundle(into: Path) -> Path:
    with tarfile.open(BUNDLE) as tar:
        tar.extractall(into, filter="data")
    return into


def test_the_estimate_comes_from_the_planned_jobs_in_the_last_bundle(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "bundle")
    from pytest_runnerconf.evidence import load

    run = load(bundle)
    durations = {n: j.duration_s for n, j in run.jobs.items() if j.duration_s is not None}
    around = run.wall_s - max(durations.values())
    found = dry_run.estimate(bundle, ["ordering", "new-job"])
    assert found is not None and found.seconds == round(around + durations["ordering"], 1)
    assert found.seconds < run.wall_s  # one job of the fifteen: shorter than the whole run
    assert "left out: new-job" in found.basis
    nothing = dry_run.estimate(bundle, ["new-job"])
    assert nothing is not None and nothing.seconds is None and "none of the planned jobs" in nothing.basis
    assert dry_run.estimate(None, ["ordering"]) is None


def _child(
    work: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNERCONF_", "PYTEST_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_ordering.py", "-p", "no:cacheprovider", *args],
        cwd=work,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _workdir(base: Path, profile: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "suites").mkdir()
    shutil.copy(SUITES / "test_ordering.py", base / "suites" / "test_ordering.py")
    (base / "pytest.ini").write_text("[pytest]\n")
    (base / "runnerconf.toml").write_text(profile)
    return base


UNREACHABLE = f"""[clusters.x]
gitlab_url = "http://127.0.0.1:9"
token_env = "{TOKEN_ENV}"
project = "g/p"
namespace = "ci"
kubeconfig = "no-such-kubeconfig"

[clusters.x.expect]
builds_dir = "/srv/builds"
"""


@pytest.mark.parametrize(
    ("args", "env", "sentence"),
    [
        (
            ["--runnerconf-dry-run"],
            {},
            "--runnerconf-dry-run needs a cluster to preflight; pass --runner-cluster",
        ),
        (
            ["--runner-cluster=x"],
            {"RUNNERCONF_DRY_RUN": "maybe"},
            "env RUNNERCONF_DRY_RUN = maybe is neither true nor false",
        ),
        (["--runner-cluster=x", "--runnerconf-dry-run", "-n", "2"], {}, "drop -n"),
    ],
)
def test_bad_dry_run_settings_are_one_sentence_and_exit_4(
    tmp_path: Path, args: list[str], env: dict[str, str], sentence: str
) -> None:
    work = _workdir(tmp_path / "w", UNREACHABLE)
    code, output = _child(work, *args, env={TOKEN_ENV: TOKEN, **env})
    assert code == 4, output
    assert sentence in output
    assert "Traceback" not in output
    assert not (work / "runnerconf-evidence").exists()


def test_a_dry_run_that_cannot_reach_gitlab_names_every_problem_and_exits_6(tmp_path: Path) -> None:
    work = _workdir(tmp_path / "w", UNREACHABLE)
    bundle = _bundle(tmp_path / "bundle")
    code, output = _child(
        work,
        "--runner-cluster=x",
        "--runnerconf-dry-run",
        f"--runnerconf-replay={bundle}",
        env={TOKEN_ENV: TOKEN},
    )
    assert code == 6, output
    assert TOKEN not in output and "Traceback" not in output
    assert "dry run of cluster x: nothing was created (no branch, commit or pipeline)" in output
    assert "  ordering (probe ordering): image alpine:3.20; services busybox:1.36 as rc-tcp" in output
    assert 'clusters.x.expect.builds_dir = "/srv/builds"  (profile file, ' in output
    assert "clusters.x.expect.cleanup_deadline_s = 60.0  (built-in default)" in output
    assert "  scope api: unknown (the preflight could not ask" in output
    assert "  watch pods: unknown" in output
    assert "preflight: did not pass: cannot reach GitLab at http://127.0.0.1:9 (connection refused)" in output
    assert (
        "preflight: did not pass: the kubeconfig " in output
        and "does not exist; check clusters.x.kubeconfig" in output
    )
    assert "estimated duration: about " in output and f"the run in {bundle} took" in output
    assert "passed" not in output.split("runnerconf dry run")[-1].split("\n", 1)[0]
    (written,) = (work / "runnerconf-evidence").iterdir()
    assert written.name.startswith("dry-run-")
    ci_yaml = (written / ".gitlab-ci.yml").read_text()
    assert "ordering:" in ci_yaml and "/srv/builds" not in ci_yaml.split("variables")[0]
    assert sorted(p.name for p in (written / ".runnerconf").iterdir()) == ["lib.sh", "ordering.sh"]
    doc = json.loads((written / "dry-run.json").read_text())
    assert doc["passed"] is False and len(doc["problems"]) == 2
    assert [v["grant"] for v in doc["verbs"]] == ["list pods", "watch pods", "list events"]
    assert TOKEN not in (written / "dry-run.json").read_text()
    assert not (work / "runnerconf-report").exists()  # no check ran: no report


# ---------------------------------------------------------------- on the local cluster


def _local_profile(info: Any, context: str) -> str:
    return f"""[clusters.dry]
gitlab_url = "{info.gitlab_url}"
token_env = "{TOKEN_ENV}"
project = "{info.project}"
runner_tags = ["{info.runner_tag}"]
kubeconfig = "{info.kubeconfig}"
kube_context = "{context}"
namespace = "{info.namespace}"
""" + (f'gitlab_ca_file = "{info.gitlab_ca_file}"\n' if getattr(info, "gitlab_ca_file", None) else "")


def _gitlab_state(info: Any) -> dict[str, Any]:
    """The project's branches with their head commits, and its pipelines, as python-gitlab lists them."""
    import gitlab

    gl = gitlab.Gitlab(
        info.gitlab_url,
        private_token=info.gitlab_token,
        keep_base_url=True,
        ssl_verify=getattr(info, "gitlab_ca_file", None) or True,
    )
    project = gl.projects.get(info.project)
    return {
        "branches": sorted((b.name, b.commit["id"]) for b in project.branches.list(get_all=True)),
        "pipelines": sorted((p.id, p.status) for p in project.pipelines.list(get_all=True)),
    }


@pytest.mark.parametrize(("context", "code"), [("runnerconf-local", 0), ("runnerconf-local-restricted", 6)])
def test_the_dry_run_leaves_gitlab_unchanged_and_names_what_the_context_lacks(
    local_cluster: Any, tmp_path: Path, context: str, code: int
) -> None:
    work = _workdir(tmp_path / "w", _local_profile(local_cluster, context))
    before = _gitlab_state(local_cluster)
    exit_code, output = _child(
        work, "--runner-cluster=dry", "--runnerconf-dry-run", env={TOKEN_ENV: local_cluster.gitlab_token}
    )
    after = _gitlab_state(local_cluster)
    (work / "output.txt").write_text(output)  # kept for a look at what the dry run said
    assert after == before, "the dry run changed GitLab"
    assert exit_code == code, output
    assert local_cluster.gitlab_token not in output and "Traceback" not in output
    assert "  list pods: granted" in output
    if code == 0:
        assert "  watch pods: granted" in output
        assert "  scope api: granted" in output or "  scope api: unknown" in output
        assert "preflight: passed; a run would start now" in output
    else:
        assert "  watch pods: MISSING" in output
        assert "preflight: did not pass: no RBAC to watch pods in namespace" in output
        assert "clusters.dry.kube_context" in output
    (written,) = (work / "runnerconf-evidence").iterdir()
    assert (written / ".gitlab-ci.yml").is_file()
