"""Evidence bundle: save/load round trip, browsable layout, and that credentials never reach disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_runnerconf.errors import ConfigError
from pytest_runnerconf.evidence import (
    EVIDENCE_VERSION,
    MASK,
    JobEvidence,
    PodObservation,
    RunEvidence,
    load,
    records_from_trace,
    save,
)

TRACES = Path(__file__).resolve().parent / "data" / "traces"
JOB_TOKEN = "glcbt-64_abcdefghijklmnopqrstuvwx"
REGISTRY_PASSWORD = "hunter2-registry-pass"
PAT = "glpat-personalaccesstoken00"


def pod_object(name: str) -> dict:
    env = [
        {"name": "CI_JOB_ID", "value": "101"},
        {"name": "CI_JOB_TOKEN", "value": JOB_TOKEN},
        {"name": "CI_REGISTRY_PASSWORD", "value": REGISTRY_PASSWORD},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    ]
    return {
        "metadata": {"name": name, "annotations": {"job.runner.gitlab.com/id": "101"}},
        "spec": {
            "automountServiceAccountToken": False,
            "imagePullSecrets": [{"name": name}],
            "containers": [{"name": "build", "env": env}, {"name": "helper", "env": []}],
            "volumes": [{"name": "creds", "secret": {"secretName": "registry-creds"}}],
        },
    }


def make_run() -> RunEvidence:
    raw = (TRACES / "runner-18.11-timestamps-success.txt").read_text(encoding="utf-8")
    trace_with_token = raw + f"\n2026-11-23T00:00:08.000000Z 01O leaked {PAT} here"
    pod = PodObservation(
        name="runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4",
        first_seen=1795392001.5,
        spec=pod_object("runner-t3abcdefg-project-42-concurrent-0-x1y2z3w4"),
        last={"status": {"phase": "Succeeded"}},
        timeline=[
            {
                "time": 1795392001.5,
                "type": "ADDED",
                "phase": "Pending",
                "containers": {},
                "deletionTimestamp": None,
            },
            {
                "time": 1795392004.6,
                "type": "MODIFIED",
                "phase": "Running",
                "containers": {"build": {"running": {"startedAt": "2026-11-23T00:00:04Z"}}},
                "deletionTimestamp": None,
            },
            {
                "time": 1795392009.0,
                "type": "DELETED",
                "phase": "Succeeded",
                "containers": {},
                "deletionTimestamp": "x",
            },
        ],
        events=[{"reason": "Scheduled", "message": "assigned ci/x to node-1", "time": 1795392001.6}],
        deleted_at=1795392009.0,
    )
    job = JobEvidence(
        name="probe: ordering/dns",
        job={
            "id": 101,
            "status": "success",
            "web_url": "http://127.0.0.1:8929/runnerconf/scratch/-/jobs/101",
            "token": "job-secret-token",
            "variables": [
                {"key": "DEPLOY_PASSWORD", "value": "swordfish-42"},
                {"key": "STAGE", "value": "x"},
            ],
        },
        trace=trace_with_token,
        pod=pod,
        records={"ordering": [{"t": 1.0}]},
        started_at=1795392001.0,
        finished_at=1795392007.5,
    )
    other = JobEvidence(name="probe-oom", job={"id": 102, "duration": 12.25}, trace="", pod=None)
    return RunEvidence(
        run_id="run-1",
        cluster="local",
        profile={"name": "local", "token_env": "RUNNERCONF_LOCAL_TOKEN"},
        gitlab_url="http://127.0.0.1:8929",
        project="runnerconf/scratch",
        gitlab_version="18.0.0",
        kubernetes_version="v1.31.0",
        branch="runnerconf/run-1",
        pipeline={"id": 7, "web_url": "http://127.0.0.1:8929/runnerconf/scratch/-/pipelines/7"},
        plan=["probe: ordering/dns", "probe-oom"],
        started_at=1795392000.0,
        finished_at=1795392020.0,
        jobs={job.name: job, other.name: other},
        stray_pods=[{"name": "runner-old-pod", "age_s": 9000}],
        leftover={"pods": [], "secrets": ["runner-t3abcdefg-project-42-concurrent-0-abcde"]},
        notes=["local emulation, not a real runner"],
    )


def all_text(directory: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(directory.rglob("*")) if p.is_file())


def test_round_trip(tmp_path: Path) -> None:
    run = make_run()
    path = save(run, tmp_path / "bundle")
    assert path == tmp_path / "bundle" / "evidence.json"
    assert run.evidence_dir == str(tmp_path / "bundle")
    loaded = load(tmp_path / "bundle")
    assert loaded.version == EVIDENCE_VERSION
    assert (loaded.run_id, loaded.cluster, loaded.branch, loaded.plan) == (
        run.run_id,
        run.cluster,
        run.branch,
        run.plan,
    )
    assert (
        loaded.pipeline == run.pipeline
        and loaded.stray_pods == run.stray_pods
        and loaded.leftover == run.leftover
    )
    assert loaded.notes == run.notes and loaded.profile == run.profile
    assert (loaded.gitlab_version, loaded.kubernetes_version) == ("18.0.0", "v1.31.0")
    assert list(loaded.jobs) == list(run.jobs)
    job, original = loaded.jobs["probe: ordering/dns"], run.jobs["probe: ordering/dns"]
    assert job.pod is not None and original.pod is not None
    assert job.pod.timeline == original.pod.timeline
    assert job.pod.events == original.pod.events
    assert (job.pod.first_seen, job.pod.deleted_at, job.pod.last) == (
        1795392001.5,
        1795392009.0,
        original.pod.last,
    )
    assert job.records == original.records
    assert (job.started_at, job.finished_at) == (1795392001.0, 1795392007.5)
    assert job.trace_parsed.runner_version == "18.11.4"
    assert job.trace_parsed is job.trace_parsed  # parsed once
    assert loaded.jobs["probe-oom"].pod is None
    assert loaded.evidence_dir == str(tmp_path / "bundle")


def test_layout_is_browsable(tmp_path: Path) -> None:
    save(make_run(), tmp_path)
    jobdir = tmp_path / "jobs" / "probe_ordering_dns"
    assert sorted(p.name for p in jobdir.iterdir()) == [
        "events.json",
        "pod.json",
        "timeline.json",
        "trace.txt",
    ]
    assert sorted(p.name for p in (tmp_path / "jobs" / "probe-oom").iterdir()) == ["trace.txt"]
    assert json.loads((jobdir / "timeline.json").read_text())[1]["phase"] == "Running"
    assert "section_start:" in (jobdir / "trace.txt").read_text()  # raw trace kept as is
    doc = json.loads((tmp_path / "evidence.json").read_text())
    assert doc["version"] == EVIDENCE_VERSION
    assert doc["jobs"][0]["dir"] == "jobs/probe_ordering_dns"


def test_secrets_are_scrubbed_before_writing(tmp_path: Path) -> None:
    run = make_run()
    save(run, tmp_path, secrets=["swordfish-42"])
    text = all_text(tmp_path)
    for secret in (JOB_TOKEN, REGISTRY_PASSWORD, PAT, "job-secret-token", "swordfish-42"):
        assert secret not in text
    loaded = load(tmp_path)
    job = loaded.jobs["probe: ordering/dns"]
    assert job.pod is not None
    env = {e["name"]: e.get("value") for e in job.pod.spec["spec"]["containers"][0]["env"]}
    assert env == {
        "CI_JOB_ID": "101",
        "CI_JOB_TOKEN": MASK,
        "CI_REGISTRY_PASSWORD": MASK,
        "FROM_SECRET": None,
    }
    assert job.job["token"] == MASK
    assert job.job["variables"] == [{"key": "DEPLOY_PASSWORD", "value": MASK}, {"key": "STAGE", "value": "x"}]
    assert f"leaked {MASK} here" in job.trace
    # Names of secrets, references to them and booleans are kept: they are evidence, not credentials.
    spec = job.pod.spec["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["volumes"][0]["secret"]["secretName"] == "registry-creds"
    assert loaded.leftover["secrets"] == ["runner-t3abcdefg-project-42-concurrent-0-abcde"]
    assert loaded.profile["token_env"] == "RUNNERCONF_LOCAL_TOKEN"
    # The in-memory evidence is not altered by saving.
    assert run.jobs["probe: ordering/dns"].job["token"] == "job-secret-token"


def test_records_from_trace_groups_by_probe() -> None:
    job = JobEvidence("j", {}, (TRACES / "runner-17.11-success.txt").read_text(encoding="utf-8"))
    assert list(records_from_trace(job.trace_parsed)) == ["ordering", "aliases"]


def test_durations_and_slowest_job() -> None:
    run = make_run()
    assert run.jobs["probe: ordering/dns"].duration_s == pytest.approx(6.5)
    assert run.jobs["probe-oom"].duration_s == 12.25  # GitLab's duration when not observed
    assert run.slowest_job() == ("probe-oom", 12.25)
    assert run.wall_s == 20.0


def test_load_refuses_other_versions_and_missing_files(tmp_path: Path) -> None:
    save(make_run(), tmp_path)
    doc = json.loads((tmp_path / "evidence.json").read_text())
    doc["version"] = 99
    (tmp_path / "evidence.json").write_text(json.dumps(doc))
    with pytest.raises(
        ConfigError, match="evidence version 99 is not supported; this plugin reads version 1"
    ):
        load(tmp_path)
    doc["version"] = EVIDENCE_VERSION
    (tmp_path / "evidence.json").write_text(json.dumps(doc))
    (tmp_path / "jobs" / "probe_ordering_dns" / "timeline.json").unlink()
    with pytest.raises(ConfigError, match=r"timeline\.json: evidence file missing"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="evidence file missing"):
        load(tmp_path / "elsewhere")


# ---------------------------------------------------------------- hostile bundles


def test_a_symlink_in_the_bundle_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    bundle = tmp_path / "bundle"
    save(make_run(), bundle)
    jobdir = next((bundle / "jobs").iterdir())
    (jobdir / "trace.txt").unlink()
    (jobdir / "trace.txt").symlink_to(victim)
    with pytest.raises(ConfigError, match="is a symlink; refusing to write through it"):
        save(make_run(), bundle)
    assert victim.read_text() == "untouched\n"


def test_a_symlinked_job_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bundle = tmp_path / "bundle"
    (bundle / "jobs").mkdir(parents=True)
    (bundle / "jobs" / "probe_ordering_dns").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ConfigError, match="is a symlink; refusing to write through it"):
        save(make_run(), bundle)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("where", ["../outside", "/etc", "jobs/../../outside"])
def test_replay_reads_only_inside_the_bundle(tmp_path: Path, where: str) -> None:
    bundle = tmp_path / "bundle"
    save(make_run(), bundle)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "trace.txt").write_text("not the bundle's\n")
    doc = json.loads((bundle / "evidence.json").read_text())
    doc["jobs"][0]["dir"] = where
    (bundle / "evidence.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="points outside the bundle"):
        load(bundle)


def test_replay_refuses_a_file_symlinked_out_of_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    save(make_run(), bundle)
    (tmp_path / "secret.txt").write_text("elsewhere\n")
    jobdir = next((bundle / "jobs").iterdir())
    (jobdir / "trace.txt").unlink()
    (jobdir / "trace.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ConfigError, match="points outside the bundle"):
        load(bundle)
