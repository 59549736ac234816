"""The emulated runner executes stages as runner v18.11 does: attach strategy, legacy exec, after-failure stages.

Real containers: what the job itself sees in the scripts and logs volumes, what reaches the trace, and
how a broken logs volume (fault logs-volume-broken) fails a job the way it would on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.local.pipelines import Cluster, JobRun, lines_between

TAG = "runnerconf-local"

ATTACH = f"""
stages: [test]
default:
  tags: [{TAG}]

attach:
  image: alpine:3.20
  script:
    - echo first-line
    - echo "SCRIPTS>"; ls /scripts-$CI_PROJECT_ID-$CI_JOB_ID; echo "<SCRIPTS"
    # prefixed: a bare status line echoed here would be read (and dropped) by the runner's log processor too
    - echo "LOG>"; sed 's/^/| /' /logs-$CI_PROJECT_ID-$CI_JOB_ID/output.log; echo "<LOG"

legacy:
  image: alpine:3.20
  variables:
    FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY: "true"
  script:
    - echo legacy-ran
    - ls -d /logs-* 2>/dev/null || echo no-logs-volume

afterfail:
  image: alpine:3.20
  script:
    - echo failing > artifact.txt
    - exit 3
  after_script:
    - echo after-script-ran status=$CI_JOB_STATUS
  artifacts:
    when: on_failure
    paths: [artifact.txt]

badimage:
  image: registry.runnerconf.test:5000/nosuch/image:1
  script:
    - echo never
"""

# Under logs-volume-broken the runner never learns that the script ended; the short timeout bounds it.
PROBE = f"""
stages: [test]
logs:
  image: alpine:3.20
  tags: [{TAG}]
  timeout: 45 seconds
  script:
    - echo script-output-marker
"""


@pytest.fixture(scope="module")
def cluster(local_cluster: Any) -> Cluster:
    return Cluster(local_cluster)


@pytest.fixture(scope="module")
def runs(cluster: Cluster) -> dict[str, JobRun]:
    return cluster.run(ATTACH)


@pytest.fixture(scope="module")
def logs_runs(cluster: Cluster) -> Iterator[dict[str, JobRun]]:
    def one(fault: str) -> tuple[str, JobRun]:
        variables = {"RUNNERCONF_LOCAL_FAULTS": fault} if fault else {}
        return fault, cluster.run(PROBE, variables, timeout=180)["logs"]

    with ThreadPoolExecutor(2) as pool:
        yield dict(pool.map(one, ["", "logs-volume-broken"]))


def test_attach_strategy_writes_scripts_and_reads_output_log(runs: dict[str, JobRun]) -> None:
    run = runs["attach"]
    assert run.job.status == "success", run.trace.text[-2000:]
    assert "Using attach strategy to execute scripts..." in run.trace.text
    scripts = lines_between(run.trace.text, "SCRIPTS>", "<SCRIPTS")
    assert {"detect_shell_script", "prepare_script", "get_sources", "step_script"} <= set(scripts)
    log = [line[2:] for line in lines_between(run.trace.text, "LOG>", "<LOG")]
    # output.log holds every stage's output and the status lines the runner reads the exit codes from
    assert any(
        line.startswith('{"command_exit_code": 0, "script": "/scripts-') and "/get_sources" in line
        for line in log
    )
    assert "first-line" in log
    assert not any(line.text.startswith('{"command_exit_code"') for line in run.trace.lines), (
        "status lines stay out of the trace"
    )
    assert run.trace.final == "Job succeeded"


def test_legacy_exec_strategy_by_feature_flag(runs: dict[str, JobRun]) -> None:
    run = runs["legacy"]
    assert run.job.status == "success", run.trace.text[-2000:]
    assert "Using attach strategy" not in run.trace.text
    assert "legacy-ran" in run.trace.text and "no-logs-volume" in run.trace.text
    spec = run.pod.first["spec"]
    # config.toml's volumes (the DinD certificates' empty_dir) stay; the legacy strategy drops scripts and logs
    assert [v["name"] for v in spec["volumes"]] == ["docker-certs", "repo"]
    assert "initContainers" not in spec


def test_after_a_failed_script_the_after_failure_stages_run(runs: dict[str, JobRun]) -> None:
    run = runs["afterfail"]
    assert run.job.status == "failed" and run.job.failure_reason == "script_failure"
    names = [s.name for s in run.trace.sections]
    assert names[-4:] == [
        "step_script",
        "after_script",
        "upload_artifacts_on_failure",
        "cleanup_file_variables",
    ]
    assert "after-script-ran status=failed" in run.trace.text
    assert run.job.artifacts_file["filename"] == "artifacts.zip"
    assert run.trace.failure == "command terminated with exit code 3"


def test_image_pull_failure_worded_and_classified_as_the_runner_does(runs: dict[str, JobRun]) -> None:
    run = runs["badimage"]
    assert run.job.status == "failed" and run.job.failure_reason == "runner_system_failure"
    assert not run.trace.system_failure, "an image pull failure is a build error (no '(system failure)')"
    assert run.trace.failure.startswith(
        'prepare environment: waiting for pod running: pulling image "registry.runnerconf.test:5000/nosuch/image:1" for container build: '
        "image pull failed: rpc error: code = NotFound"
    )
    assert run.trace.failure.endswith(
        ". Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information"
    )
    text = run.trace.text
    assert (
        'WARNING: Event retrieved from the cluster: Failed to pull image "registry.runnerconf.test:5000/nosuch/image:1"'
        in text
    )
    assert (
        'Failed to pull image "registry.runnerconf.test:5000/nosuch/image:1" for container "build" with policy "IfNotPresent": image pull failed'
        in text
    )
    waiting = [line.text for line in run.trace.lines if line.text.startswith("Waiting for pod ")]
    assert all(" to be running on the node runnerconf-local, status is " in line for line in waiting)


def test_broken_logs_volume_fails_the_job_by_its_timeout(logs_runs: dict[str, JobRun]) -> None:
    clean, broken = logs_runs[""], logs_runs["logs-volume-broken"]
    assert clean.job.status == "success" and "script-output-marker" in clean.trace.text
    # The helper's stages still report (their output.log is the helper's own copy); the build's never do.
    assert "Fetching changes with git depth set to 20..." in broken.trace.text
    assert "script-output-marker" not in broken.trace.text
    assert broken.job.status == "failed" and broken.job.failure_reason == "job_execution_timeout"
    assert broken.trace.failure == "execution took longer than 45s seconds"
    assert (
        "WARNING: step_script could not run to completion because the timeout was exceeded."
        in broken.trace.text
    )
    volumes = [v["name"] for v in broken.pod.first["spec"]["volumes"]]
    assert "logs" in volumes, "the pod spec is the runner's; the breakage is the node's"
