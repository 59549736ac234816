"""RC-VOL: the `repo` emptyDir at builds_dir is shared by every container and carries clone and artifacts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_runnerconf import JobEvidence, Profile, RunEvidence, check, could_not_test, fail, held

JobLookup = Callable[[str], JobEvidence]
ProbeLookup = Callable[[JobEvidence, str], dict[str, Any]]
ARTIFACT = "runnerconf-artifact.txt"
REPO_VOLUME = "repo"


def _builds_dir(profile: Profile) -> str:
    return profile.expect.builds_dir.rstrip("/") or "/"


@check(
    id="RC-VOL-001",
    claim="the `repo` emptyDir is mounted at builds_dir in every container of the job pod",
    remediation="check builds_dir and [[runners.kubernetes.volumes]] in the runner's config.toml: a volume "
    "mounted at builds_dir replaces the repo emptyDir; pod_spec patches can drop the mount",
    area="builds",
    probes=("builds",),
)
def test_repo_volume_in_every_container(job_evidence: JobLookup, runnerconf_profile: Profile) -> None:
    job = job_evidence("builds")
    if job.pod is None:
        could_not_test("no-evidence", f"no pod was seen for job {job.name}", job=job)
    spec = job.pod.spec.get("spec") or {}
    volume = next((v for v in spec.get("volumes") or [] if v.get("name") == REPO_VOLUME), None)
    if volume is None or "emptyDir" not in volume:
        fail("RC-VOL-001", f"a volume {REPO_VOLUME!r} of type emptyDir", volume or "no such volume", job=job)
    want = _builds_dir(runnerconf_profile)
    wrong: dict[str, Any] = {}
    mounted: dict[str, list[str]] = {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        mounts = [
            m.get("mountPath") for m in container.get("volumeMounts") or [] if m.get("name") == REPO_VOLUME
        ]
        mounted[container.get("name", "?")] = mounts
        if [p.rstrip("/") or "/" for p in mounts] != [want]:
            wrong[container.get("name", "?")] = mounts or "not mounted"
    if wrong:
        fail("RC-VOL-001", f"{REPO_VOLUME} mounted once at {want} in every container", wrong, job=job)
    held(
        "RC-VOL-001",
        f"{REPO_VOLUME} (emptyDir) mounted once at {want} in every container",
        {"volume": volume, "mounts": mounted},
        job=job,
        summary=f"emptyDir {REPO_VOLUME} mounted at {want} in {len(mounted)} containers "
        f"({', '.join(mounted)})",
    )


def _pipeline_sha(job: JobEvidence, run: RunEvidence) -> str:
    return str((job.job.get("commit") or {}).get("id") or run.pipeline.get("sha") or "")


@check(
    id="RC-VOL-002",
    claim="the helper's clone is at $CI_PROJECT_DIR under builds_dir, checked out at the pipeline's SHA",
    remediation="check builds_dir, GIT_STRATEGY/GIT_CLONE_PATH and the helper image; a stale volume at "
    "builds_dir can leave another checkout in place",
    area="builds",
    probes=("builds",),
)
def test_clone_at_project_dir(
    job_evidence: JobLookup,
    probe_record: ProbeLookup,
    runnerconf_evidence: RunEvidence,
    runnerconf_profile: Profile,
) -> None:
    job = job_evidence("builds")
    record = probe_record(job, "builds")
    project_dir = str(record.get("ci_project_dir") or "")
    root = _builds_dir(runnerconf_profile)
    if not project_dir.startswith(root.rstrip("/") + "/"):
        fail("RC-VOL-002", f"CI_PROJECT_DIR under {root}", project_dir or "(unset)", job=job)
    want = _pipeline_sha(job, runnerconf_evidence)
    got = str(record.get("head_sha") or "").strip()
    if not got or got != want:
        fail(
            "RC-VOL-002",
            f"{project_dir}/.git at {want}",
            got or f"no checkout (.git/HEAD: {record.get('git_head')!r})",
            job=job,
            detail=f"files in {project_dir}: {record.get('files')}",
        )
    held(
        "RC-VOL-002",
        {"under": root, "sha": want},
        {"ci_project_dir": project_dir, "head_sha": got},
        job=job,
        summary=f"clone at {project_dir}, HEAD {got[:12]} = the pipeline's SHA",
    )


@check(
    id="RC-VOL-003",
    claim="a file the build writes under $CI_PROJECT_DIR reaches the helper's artifact upload",
    remediation="the helper uploads from the shared repo volume: check builds_dir, volumes mounted over it, "
    "and the helper's access to GitLab (artifact upload errors in the trace)",
    area="builds",
    probes=("builds",),
)
def test_artifact_reaches_upload(job_evidence: JobLookup, runnerconf_evidence: RunEvidence) -> None:
    job = job_evidence("builds")
    files = job.job.get("runnerconf_artifacts") or {}
    if ARTIFACT not in files:
        listed = [a.get("filename") for a in job.job.get("artifacts") or []]
        fail(
            "RC-VOL-003",
            f"{ARTIFACT} in the job's artifacts archive",
            f"archive files: {sorted(files) or 'none'}; GitLab lists: {listed or 'no artifacts'}",
            job=job,
        )
    content = files[ARTIFACT].strip()
    if content != runnerconf_evidence.run_id:
        fail("RC-VOL-003", f"{ARTIFACT} containing the run id {runnerconf_evidence.run_id}", content, job=job)
    held(
        "RC-VOL-003",
        {"file": ARTIFACT, "content": runnerconf_evidence.run_id},
        {"archive files": sorted(files), "content": content},
        job=job,
        summary=f"{ARTIFACT} in the artifacts archive with the run id {content}",
    )


@check(
    id="RC-VOL-004",
    claim="services see the same builds_dir as the build (a file a service writes there reaches the build)",
    remediation="services must mount the repo emptyDir like build and helper; check pod_spec patches and "
    "[[runners.kubernetes.volumes]] entries that mount something else at builds_dir",
    area="builds",
    probes=("builds",),
)
def test_service_shares_builds(
    job_evidence: JobLookup, probe_record: ProbeLookup, runnerconf_evidence: RunEvidence
) -> None:
    job = job_evidence("builds")
    record = probe_record(job, "builds")
    marker = str(record.get("sidecar_marker") or "").strip()
    if record.get("sidecar_marker_found") is not True or marker != runnerconf_evidence.run_id:
        where = f"{record.get('builds_dir')}/.runnerconf-sidecar-{runnerconf_evidence.run_id}"
        fail(
            "RC-VOL-004",
            f"the sidecar service's marker {where} visible to build, containing the run id",
            f"found={record.get('sidecar_marker_found')} content={marker!r}",
            job=job,
            detail=f"build's mounts under builds_dir: {record.get('builds_mounts')}",
        )
    held(
        "RC-VOL-004",
        {
            "marker": f".runnerconf-sidecar-{runnerconf_evidence.run_id}",
            "content": runnerconf_evidence.run_id,
        },
        {"found": True, "content": marker, "builds_dir": record.get("builds_dir")},
        job=job,
        summary=f"the sidecar service's marker reached the build under {record.get('builds_dir')} "
        f"with the run id {marker}",
    )
