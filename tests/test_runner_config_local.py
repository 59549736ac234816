"""runner_config on the local cluster: a profile with only connection settings and
runner_config = "configmap:ci/gitlab-runner" gives the built-in local profile's verdicts.

Both runs take the modules whose expectations the runner config holds (resources: limits and override caps;
dns: policy and resolver config; builds: builds_dir), not the whole suite: the other modules judge values
config.toml does not say (the plugin's deadlines, OOM and CPU behaviour), and two full runs would double the
cost of this test for no more coverage. The two runs go at once; neither selection measures CPU speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf import runner_config as rc
from pytest_runnerconf.kube_driver import KubeDriver
from pytest_runnerconf.local.provider import builtin_expect
from pytest_runnerconf.profile import flat_keys, load_profile
from tests.report_schema import assert_valid_report

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["suites/test_resources.py", "suites/test_dns.py", "suites/test_builds_volume.py"]
# The operator's context of the local kubeconfig: the least-privilege one the built-in profile uses lacks the
# `get` on the ConfigMap that `runnerconf rbac` adds for a runner_config profile (tests/test_kube_driver.py
# shows that rule is enough).
OPERATOR_CONTEXT = "runnerconf-local"
LOCAL_TOKEN = "glrt-t1_runnerconflocal0000"  # fixtures/local/config.toml's fake runner token


def user_profile(info: Any, path: Path) -> Path:
    """Connection settings of the running cluster plus runner_config; the probe images (which registry the
    probes pull from, not a runner setting) as the built-in profile has them."""
    images = builtin_expect()["images"]
    lines = [
        "[clusters.viacm]",
        f'gitlab_url = "{info.gitlab_url}"',
        f'token_file = "{info.token_file}"',
        f'project = "{info.project}"',
        f'runner_tags = ["{info.runner_tag}"]',
        f'kubeconfig = "{info.kubeconfig}"',
        f'kube_context = "{OPERATOR_CONTEXT}"',
        f'namespace = "{info.namespace}"',
        'runner_config = "configmap:ci/gitlab-runner"',
        'runner_name = "runnerconf-local"',  # the ConfigMap's config.toml also holds the capacity runner
        *([f'gitlab_ca_file = "{info.gitlab_ca_file}"'] if info.gitlab_ca_file else []),
        "[clusters.viacm.expect.images]",
        *(f"{key} = {json.dumps(value)}" for key, value in images.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(cluster: str, out: Path, profile: Path | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "RUNNERCONF_LOCAL_FAULTS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *MODULES,
            f"--runner-cluster={cluster}",
            *([f"--runnerconf-config={profile}"] if profile else []),
            f"--runnerconf-report={out / cluster}",
            f"--runnerconf-evidence={out / 'evidence' / cluster}",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    path = out / cluster / "report.json"
    assert path.exists(), f"no report for {cluster} (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert_valid_report(doc)
    doc["exit"] = proc.returncode
    doc["output"] = proc.stdout[-3000:] + proc.stderr[-2000:]
    return doc


def verdicts(doc: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["outcome"] for r in doc["results"]}


def test_runner_config_from_the_local_configmap_gives_the_builtin_verdicts(
    local_cluster: Any, tmp_path: Path
) -> None:
    profile = user_profile(local_cluster, tmp_path / "runnerconf.toml")
    with ThreadPoolExecutor(2) as pool:
        builtin_run = pool.submit(run, "local", tmp_path)
        derived_run = pool.submit(run, "viacm", tmp_path, profile)
        builtin, derived = builtin_run.result(), derived_run.result()
    assert verdicts(builtin), builtin["output"]
    assert verdicts(derived) == verdicts(builtin), derived["output"]
    assert derived["exit"] == builtin["exit"], derived["output"]
    print("\nverdicts:", json.dumps(verdicts(derived), sort_keys=True))

    # The expectations themselves: every value the ConfigMap holds came from it, as the table derives it (that
    # this equals the built-in profile for the fixtures' config.toml is tests/test_runner_config.py's; a
    # cluster started from an older checkout publishes its own config).
    rows = {e["key"]: e for e in derived["profile"]["expectations"]}
    read = KubeDriver(load_profile(profile, "viacm")).read_configmap("ci", "gitlab-runner")["config.toml"]
    derived_here = rc.derive(
        rc.parse_config(
            read, "ConfigMap ci/gitlab-runner key config.toml", "test", runner_name="runnerconf-local"
        )
    )
    expected = dict(flat_keys(derived_here.expect))
    from_config = {key: row for key, row in rows.items() if row["origin"] == "runner config"}
    assert {k.split(".")[0] for k in from_config} == {
        "build",
        "builds_dir",
        "dind_tls",
        "dns",
        "helper",
        "output_limit_kb",
        "override_caps",
        "poll_timeout_s",
        "service",
    }
    for key, row in from_config.items():
        assert row["value"] == expected[key], key
        assert row["file"].startswith("ConfigMap ci/gitlab-runner key config.toml: "), row
    assert rows["build.cpu_limit"]["file"].endswith("[runners.kubernetes] cpu_limit")
    section = derived["profile"]["runner_config"]
    assert section["runner"] == "runnerconf-local" and section["reported"]["privileged"] is True

    # The runner token never gets into what the run wrote.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert LOCAL_TOKEN not in path.read_bytes().decode("utf-8", errors="replace"), path


pytestmark = pytest.mark.docker
