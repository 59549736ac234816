"""Pods mapped to their job, project and runner from every mark the runner has written since 16.0."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.kube_driver import PodEvent
from pytest_runnerconf.podjob import identify, is_runner_pod, parse_name, same_token, trace_token
from pytest_runnerconf.run import PodTracker

DATA = Path(__file__).parent / "data" / "pods"


def pod(version: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"pod-{version}.json").read_text(encoding="utf-8"))
    return data


def test_runner_16_pod_is_mapped_by_annotation_and_name() -> None:
    who = identify(pod("16.11"))
    assert (who.job_id, who.project_id, who.token, who.source) == (1234, 42, "xy12ab34", "annotation")


def test_runner_16_pod_without_annotations_is_mapped_by_the_build_env() -> None:
    bare = pod("16.11")
    bare["metadata"]["annotations"] = {}
    who = identify(bare)
    assert (who.job_id, who.project_id, who.token, who.source) == (1234, 42, "xy12ab34", "env")


def test_a_pod_without_env_is_mapped_by_its_mounts() -> None:
    bare = pod("16.11")
    bare["metadata"]["annotations"] = {}
    for c in bare["spec"]["containers"]:
        c.pop("env", None)
    who = identify(bare)
    assert (who.job_id, who.project_id, who.source) == (1234, 42, "mount")


def test_runner_17_pod_uses_labels_and_keeps_the_tokens_case() -> None:
    who = identify(pod("17.11"))
    assert (who.job_id, who.project_id, who.token) == (1235, 42, "xY12aB34")
    assert same_token(who.token, "xy12ab34") and not same_token(who.token, "other123")


def test_names_and_pause_pods() -> None:
    assert parse_name("runner-t-1-abc-project-7-concurrent-12-a1b2c3d4") == ("t-1-abc", 7, 12)
    assert parse_name("nginx-5d8f7") is None
    assert is_runner_pod(pod("16.11"))
    pause = {"metadata": {"name": "runner-pause-x-y", "labels": {"runner.gitlab.com/pause-pod": "true"}}}
    assert not is_runner_pod(pause)
    assert not is_runner_pod({"metadata": {"name": "web-0", "labels": {"pod": "web"}}})


@pytest.mark.parametrize(
    "header",
    [
        "Running with gitlab-runner 16.11.0 (91a27b2a)\n  on k8s runner xy12ab34, system ID: s_0e0b\n",
        "2026-01-02T03:04:05.123456Z 00O Running with gitlab-runner 18.11.4 (abc)\n"
        "2026-01-02T03:04:05.123457Z 00O   on k8s-runner xY12aB34, system ID: s_0e0b\n",
    ],
)
def test_trace_header_names_the_runner(header: str) -> None:
    assert same_token(trace_token(header), "xy12ab34")


def test_tracker_keeps_only_the_projects_runner_pods() -> None:
    tracker = PodTracker(project_id=42)
    old = pod("16.11")
    old["metadata"]["annotations"] = {}
    other = copy.deepcopy(pod("17.11"))
    other["metadata"]["name"] = "runner-xy12ab34-project-99-concurrent-0-zzzzzzzz"
    other["metadata"]["labels"]["project.runner.gitlab.com/id"] = "99"
    for c in other["spec"]["containers"]:
        c["env"] = [{"name": "CI_PROJECT_ID", "value": "99"}, {"name": "CI_JOB_ID", "value": "7"}]
    for obj in (old, other, {"metadata": {"name": "web-0", "labels": {"pod": "web"}}}):
        tracker.apply(PodEvent("ADDED", obj, 1.0))
    assert tracker.job_of == {old["metadata"]["name"]: 1234}
    assert tracker.tokens == {old["metadata"]["name"]: "xy12ab34"}
    assert tracker.for_job(1234) is not None and tracker.for_job(7) is None
