"""Every check can fail: the suite on the local cluster, once clean and under every fault.

Each fault must fail at least one check in its areas and, with the faults of its group, none outside their
areas; the clean run passes everything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.report_schema import assert_valid_report

ROOT = Path(__file__).resolve().parent.parent
# CI runs the whole suite with the opt-in disruptive checks (they evict their own probe pod): so does every run here.
WHOLE_SUITE = ["-m", "disruptive or not disruptive"]

# fault -> areas allowed (and required) to fail; the first three come from the spine's issue, the rest
# from the catalogue's fault table.
MATRIX: dict[str, set[str]] = {
    # The runner never learns that a build script ended: every job runs into its timeout, so only the logs
    # probe (whose timeout is short) runs under it, and the logs check is what fails. First, as the slowest.
    "logs-volume-broken": {"logs"},
    "init-not-first": {"ordering"},
    "script-before-sources": {"ordering", "builds"},
    "builds-not-shared": {"ordering", "builds"},  # the ordering probe script comes from the clone too
    # DinD name resolution broken: the DinD module's builds may fail too (issue 16), nothing else.
    "no-host-aliases": {"aliases", "dns", "dind"},
    "ignore-dns-config": {"dns", "dind"},
    "dind-dns-fallback": {"dns", "dind"},
    "limits-not-applied": {"resources", "oom_cpu"},
    "oom-unreported": {"oom_cpu"},
    "overrides-ignored": {"resources"},
    "security-context-ignored": {"security"},
    "allowed-users-ignored": {"security"},
    "pod-labels-dropped": {"labels"},
    "pull-errors-unreported": {"images"},
    "node-selector-ignored": {"scheduling"},
    "leak-pods": {"cleanup"},
    "leak-secrets": {"cleanup"},
    "slow-cleanup": {"cleanup"},
    "eviction-unnoticed": {"disruption"},  # the evicted job succeeds: RC-DIS-001; the pod still goes
    # no budget on the cache runner's pods: RC-DIS-003's eviction is accepted
    "pdb-not-created": {"disruption"},
    "silent-stream-cut": {"logs"},
    "output-truncated-silently": {"logs"},
    "concurrency-one": {"capacity"},
    "limit-ignored": {"capacity"},
    "scheduling-slow": {"capacity"},
    "dind-mtu-too-big": {"dind"},  # RC-DND-001 (the MTUs) and RC-DND-006 (the transfer stalls)
    "dind-certs-not-shared": {"dind"},
    "registry-push-denied": {"dind"},  # RC-DND-004 (login refused); RC-DND-005 has nothing to pull
    "cache-upload-fails-silently": {"cache"},  # RC-CCH-001 (and the migration RC-CCH-002): nothing to restore
    "cache-not-shared": {"cache"},  # RC-CCH-002 only: the other runner looks under its own prefix
}


# Whole-suite runs of several faults at once. A group's faults break disjoint areas, so its run must fail
# each fault's areas and nothing outside their union: every check of every other area passes with all of them
# in. One whole-suite run per fault, two at a time, took 33 minutes on a 2-CPU node (two saturating runs
# take twice as long each); six groups take a sixth of that. The price: a group cannot tell which of its faults
# failed a check inside the union. Interacting faults go to different groups (leak-pods and slow-cleanup both
# leave pods; the DinD faults all break RC-DND-*; limits-not-applied and oom-unreported both judge the OOM).
GROUPS: tuple[tuple[str, ...], ...] = (
    ("no-host-aliases", "limits-not-applied", "pull-errors-unreported", "pdb-not-created",
     "cache-upload-fails-silently"),
    ("ignore-dns-config", "oom-unreported", "node-selector-ignored", "silent-stream-cut", "cache-not-shared"),
    ("dind-dns-fallback", "overrides-ignored", "leak-pods", "output-truncated-silently"),
    ("dind-mtu-too-big", "security-context-ignored", "leak-secrets", "concurrency-one"),
    ("dind-certs-not-shared", "allowed-users-ignored", "slow-cleanup", "limit-ignored"),
    ("registry-push-denied", "pod-labels-dropped", "eviction-unnoticed", "scheduling-slow"),
)  # fmt: skip
GROUP_OF = {fault: ",".join(group) for group in GROUPS for fault in group}

# Faults that leave the cluster untestable rather than non-conformant: no check fails, the run exits 6 and every
# check they touch is could_not_test with this cause (report.json results[].outcome and results[].cause).
UNTESTABLE: dict[str, str] = {
    "pod-pending-timeout": "pod-not-started",
    "quota-exceeded": "quota",
    "runner-flaky-once": "api-error",  # without --runnerconf-retry: the first attempts are all there is
}
# Faults combined with an untestable one: these checks (and only these) still fail.
COMBINED: dict[str, set[str]] = {"quota-exceeded,leak-secrets": {"RC-CLN-005"}}
EXIT_COULD_NOT_TEST = 6

# Faults that must change no verdict: the run copes with them (GitLab losing a write's answer: the run must
# reconcile, not repeat the write; an expiring watch, flaky APIs: the run must retry and relist). Each run goes
# alone on the cluster like the clean run, so the verdicts can be compared and the cluster's log lines are its
# own. GitLab's fault shares a run with one of the watch's; the two watch faults together fail the watch's
# reopening more than its five tries in a row (a 410, then a 500 on the relist, ...), so they go apart.
HARMLESS = (
    "gitlab-lost-response",
    "watch-expired",
    "api-flaky",
)
HARMLESS_RUNS = ("gitlab-lost-response,watch-expired", "api-flaky")
# What each harmless fault must have done during its run: patterns of the cluster's "fault" log lines.
MET: dict[str, tuple[str, ...]] = {
    "gitlab-lost-response": (),  # said in the evidence notes instead
    "watch-expired": (r"fault watch-expired: watch history reset",),
    "api-flaky": (
        r"fault api-flaky: answered 500 to the (list|watch)",
        r"fault api-flaky: answered 503 to the (list|watch)",
        r"fault api-flaky: cut short the body",
        r"fault api-flaky: answered 502 to GET",
        r"fault api-flaky: answered 429 \(Retry-After: \w{3}, ",
    ),
}

# Runs with --runnerconf-retry: label -> (fault, N). Under runner-flaky-once every job's first attempt is a
# runner system failure: retried once, the verdicts are the clean run's. init-not-first is a conformance failure:
# even with retries to spare it is judged on its one attempt.
RETRY_RUNS: dict[str, tuple[str, int]] = {
    "runner-flaky-once+retry": ("runner-flaky-once", 1),
    "init-not-first+retry": ("init-not-first", 2),
}

# The spine's faults break get_sources or /builds, which every probe script depends on (they come from the
# clone): run them against the modules the issue names, where each must make its matching checks fail.
SOURCES_FAULTS = {"script-before-sources", "builds-not-shared", "init-not-first"}
SPINE_MODULES = ["suites/test_ordering.py", "suites/test_builds_volume.py"]
MODULES = {fault: SPINE_MODULES for fault in SOURCES_FAULTS} | {"logs-volume-broken": ["suites/test_logs.py"]}
# Runs light enough to share the node with a group's run: few jobs (the spine's), or jobs that mostly wait
# (logs-volume-broken waits out its timeouts, pod-pending-timeout its pods). None uses the capacity runner.
LIGHT = [*sorted(MODULES), "pod-pending-timeout"]


# The capacity checks measure how many of their jobs one runner with limit 2 runs at once: pipelines of other
# runs sharing that runner take its slots, so the light runs that share the node with a group leave the capacity
# module out (pod-pending-timeout's pending jobs would hold its slots); the groups, one at a time, judge it.
CAPACITY_MODULE = "suites/test_capacity.py"


def run_suite(
    fault: str,
    out: Path,
    cluster_log: Path | None = None,
    *,
    retries: int = 0,
    label: str = "",
    overlapping: bool = False,
) -> dict[str, Any]:
    """Run the suite under FAULT (with --runnerconf-retry=RETRIES); with CLUSTER_LOG, keep the lines the
    cluster logged meanwhile. LABEL names the run's directories (default: the fault). OVERLAPPING: other
    runs share the cluster meanwhile."""
    offset = cluster_log.stat().st_size if cluster_log is not None and cluster_log.exists() else 0
    started = time.monotonic()
    env = dict(os.environ)
    env.pop("RUNNERCONF_LOCAL_FAULTS", None)
    if fault:
        env["RUNNERCONF_LOCAL_FAULTS"] = fault
    label = label or fault or "clean"
    report = out / label
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *MODULES.get(fault, ["suites"]),
            *WHOLE_SUITE,
            *([f"--ignore={CAPACITY_MODULE}"] if overlapping else []),
            "--runner-cluster=local",
            f"--runnerconf-report={report}",
            f"--runnerconf-evidence={out / 'evidence' / label}",
            f"--runnerconf-retry={retries}",
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
    path = report / "report.json"
    if not path.exists():
        raise AssertionError(f"no report for {label} (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    doc = json.loads(path.read_text())
    assert_valid_report(doc)  # every real report the matrix makes satisfies the shipped schema
    doc["exit"] = proc.returncode
    doc["output"] = proc.stdout[-3000:]
    doc["wall_s"] = round(time.monotonic() - started, 1)
    doc["cluster_log"] = ""
    if cluster_log is not None and cluster_log.exists():
        with cluster_log.open("rb") as fh:
            fh.seek(offset)
            doc["cluster_log"] = fh.read().decode(errors="replace")
    return doc


def selected_faults(session: pytest.Session) -> set[str]:
    """The faults whose rows this session runs (`-k api-flaky` runs the clean run and that row only)."""
    selected: set[str] = set()
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is not None and item.module.__name__ == __name__:
            selected.update(str(params[key]) for key in ("fault", "faults") if key in params)
    return selected


@pytest.fixture(scope="module")
def matrix(
    local_cluster: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("matrix")
    wanted = selected_faults(request.session)
    cluster_log = Path(local_cluster.home) / "cluster.log"
    # The clean run goes alone: its CPU check needs the node not to be saturated by other runs' jobs.
    docs = {"": run_suite("", out)}
    for run in HARMLESS_RUNS:
        if wanted & set(run.split(",")):
            docs.update(dict.fromkeys(run.split(","), run_suite(run, out, cluster_log)))
    # Faults travel with each pipeline, so runs may share the cluster: the groups go one after another (each
    # saturates the node), the light runs meanwhile on a second lane.
    light = [f for f in LIGHT if f in wanted]
    groups = [g for g in GROUPS if wanted & set(g)]

    def run_groups() -> None:
        for group in groups:
            doc = run_suite(",".join(group), out)
            docs.update(dict.fromkeys(group, doc))
            if "leak-pods" in group:  # before its pods outlive their timeout in the next group's run
                remove_leaked_pods(local_cluster, doc)

    with ThreadPoolExecutor(2) as pool:
        lanes = [pool.submit(run_groups)]
        lanes.append(
            pool.submit(lambda: docs.update({f: run_suite(f, out, overlapping=True) for f in light}))
        )
        for lane in lanes:
            lane.result()
    # Runs whose pods are refused go one at a time: a Secret without a pod is this run's only when no other
    # pipeline of the project ran alongside (otherwise RC-CLN-005 says it could not tell).
    for fault in [f for f in [*UNTESTABLE, *COMBINED] if f not in docs and f in wanted]:
        docs[fault] = run_suite(fault, out)
    for label, (fault, retries) in RETRY_RUNS.items():
        if label in wanted:
            docs[label] = run_suite(fault, out, retries=retries, label=label)
    print(
        "\nfault matrix wall times: " + ", ".join(f"{f or 'clean'} {d['wall_s']}s" for f, d in docs.items())
    )
    yield docs


def remove_leaked_pods(local_cluster: Any, doc: dict[str, Any]) -> None:
    """leak-pods leaves its pods on purpose: remove them through the API, as an operator would, before they
    outlive their job timeout and become strays that every later run's RC-CLN-006 rightly reports."""
    from kubernetes.client.exceptions import ApiException

    from tests.local.pipelines import Cluster

    evidence = json.loads((Path(doc["evidence"]) / "evidence.json").read_text())
    core = Cluster(local_cluster).core
    for job in evidence["jobs"]:
        pod = job.get("pod")
        if pod and pod.get("deleted_at") is None:
            try:
                core.delete_namespaced_pod(pod["name"], local_cluster.namespace, grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def failing_areas(doc: dict[str, Any]) -> dict[str, list[str]]:
    areas: dict[str, list[str]] = {}
    for r in doc["results"]:
        if r["outcome"] in ("failed", "error"):
            areas.setdefault(r["area"], []).append(r["id"])
    return areas


def unobserved(doc: dict[str, Any]) -> dict[str, str]:
    """Passed checks that did not record what they observed (held expectations with a summary)."""
    missing = {}
    for r in doc["results"]:
        judged = r.get("expectations") or []
        if r["outcome"] != "passed":
            continue
        if not judged or not all(e.get("held") is True and e.get("summary") for e in judged):
            missing[r["id"]] = f"expectations {judged}"
        elif not r.get("summary"):
            missing[r["id"]] = "no summary on the result"
    return missing


def test_clean_run_passes_every_check(matrix: dict[str, dict[str, Any]]) -> None:
    doc = matrix[""]
    assert failing_areas(doc) == {}, doc["output"]
    assert unobserved(doc) == {}
    outcomes = {r["outcome"] for r in doc["results"]}
    assert outcomes == {"passed"}, doc["output"]
    assert {r["area"] for r in doc["results"]} >= {
        "ordering",
        "builds",
        "aliases",
        "dns",
        "resources",
        "cleanup",
    }
    assert doc["exit"] == 0


def test_every_fault_has_one_run_and_a_groups_areas_are_disjoint() -> None:
    assert sorted(",".join(HARMLESS_RUNS).split(",")) == sorted(HARMLESS)
    for group in GROUPS:
        seen: set[str] = set()
        for fault in group:
            assert not MATRIX[fault] & seen, f"{fault} shares an area with a fault of its group {group}"
            seen |= MATRIX[fault]
    assert sorted([*GROUP_OF, *MODULES]) == sorted(MATRIX), "each fault runs in one group or alone"


@pytest.mark.parametrize("fault", list(MATRIX))
def test_fault_fails_its_area_and_no_other(fault: str, matrix: dict[str, dict[str, Any]]) -> None:
    doc = matrix[fault]
    areas = failing_areas(doc)
    mine = MATRIX[fault]
    group = GROUP_OF.get(fault, fault).split(",")
    allowed = set().union(*(MATRIX[f] for f in group))
    assert mine & set(areas), (
        f"{fault}: no check of {sorted(mine)} failed (run: {','.join(group)})\n{doc['output']}"
    )
    outside = {a: ids for a, ids in areas.items() if a not in allowed}
    assert not outside, f"{','.join(group)} failed checks outside {sorted(allowed)}: {outside}"
    # The checks a fault leaves passing still say what they saw; the failing ones say what went wrong.
    assert unobserved(doc) == {}
    failed = [
        r
        for r in doc["results"]
        if r["outcome"] == "failed" and any(e.get("held") is False for e in r.get("expectations") or [])
    ]
    assert all(r.get("summary") for r in failed), [r["id"] for r in failed if not r.get("summary")]
    assert doc["exit"] == 1, "a conformance failure exits 1, not as an infrastructure error"


def verdicts(doc: dict[str, Any]) -> dict[str, str]:
    return {r["nodeid"]: r["outcome"] for r in doc["results"]}


def _inconclusive(r: dict[str, Any]) -> bool:
    """A check's honest answer to evidence that cannot decide: the CPU check's on a node too busy for its
    loops, the capacity checks' when retried jobs did not wait for the runner together."""
    return r["outcome"] == "could_not_test" and r.get("cause") == "inconclusive"


def same_verdicts(doc: dict[str, Any], clean: dict[str, Any]) -> None:
    """DOC judged every check as the clean run did, its exit status included; a check one of the two runs
    found inconclusive is left out (it neither passed nor failed there)."""
    busy = {r["nodeid"] for d in (doc, clean) for r in d["results"] if _inconclusive(r)}
    mine = {k: v for k, v in verdicts(doc).items() if k not in busy}
    theirs = {k: v for k, v in verdicts(clean).items() if k not in busy}
    assert mine == theirs, doc["output"]
    untested = {r["nodeid"] for d in (doc, clean) for r in d["results"] if r["outcome"] == "could_not_test"}
    if busy and untested <= busy:  # exit 6 only for the inconclusive check: the same run otherwise
        assert {doc["exit"], clean["exit"]} <= {0, EXIT_COULD_NOT_TEST}, doc["output"]
    else:
        assert doc["exit"] == clean["exit"], doc["output"]


@pytest.mark.parametrize("fault", HARMLESS)
def test_harmless_fault_changes_no_verdict_and_makes_one_pipeline(
    fault: str, matrix: dict[str, dict[str, Any]], local_cluster: Any
) -> None:
    import gitlab

    doc, clean = matrix[fault], matrix[""]
    same_verdicts(doc, clean)
    evidence = json.loads((Path(doc["evidence"]) / "evidence.json").read_text())
    if fault == "gitlab-lost-response":
        assert any("lost the answer" in note for note in evidence["notes"]), evidence["notes"]
    met = {pattern: len(re.findall(pattern, doc["cluster_log"])) for pattern in MET[fault]}
    print(f"\n{fault}: {doc['wall_s']}s (clean {clean['wall_s']}s); injected {met}")
    assert all(met.values()), f"{fault} was not met during its run: {met}"
    gl = gitlab.Gitlab(local_cluster.gitlab_url, private_token=local_cluster.gitlab_token)
    pipelines = gl.projects.get(local_cluster.project).pipelines.list(ref=evidence["branch"], get_all=True)
    assert [p.id for p in pipelines] == [evidence["pipeline"]["id"]], "GitLab holds one pipeline for the run"


@pytest.mark.parametrize("fault", list(UNTESTABLE))
def test_untestable_fault_fails_nothing_and_says_why(fault: str, matrix: dict[str, dict[str, Any]]) -> None:
    doc = matrix[fault]
    assert failing_areas(doc) == {}, doc["output"]
    untested = [r for r in doc["results"] if r["outcome"] == "could_not_test"]
    assert untested, f"{fault}: no check said it could not test\n{doc['output']}"
    causes = {r["id"]: r.get("cause") for r in untested}
    assert set(causes.values()) == {UNTESTABLE[fault]}, causes
    assert doc["exit"] == EXIT_COULD_NOT_TEST, doc["output"]


@pytest.mark.parametrize("faults", list(COMBINED))
def test_leak_under_an_untestable_fault_still_fails(faults: str, matrix: dict[str, dict[str, Any]]) -> None:
    doc = matrix[faults]
    failed = {r["id"] for r in doc["results"] if r["outcome"] in ("failed", "error")}
    assert failed == COMBINED[faults], doc["output"]
    assert doc["exit"] == 1


def attempts_per_job(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return dict(doc["attempts"])


@pytest.mark.parametrize("fault", ["runner-flaky-once+retry"])
def test_retry_turns_an_infrastructure_fault_into_the_clean_verdicts(
    fault: str, matrix: dict[str, dict[str, Any]]
) -> None:
    doc, clean = matrix[fault], matrix[""]
    same_verdicts(doc, clean)
    jobs = attempts_per_job(doc)
    assert jobs.keys() == clean["attempts"].keys()
    for name, rows in jobs.items():
        (cleanly,) = clean["attempts"][name]
        if not cleanly["pod"]:
            # The runner refuses this job before any pod (an override above its cap, an invalid alias): it
            # never waits for a pod, so the fault cannot meet it, and its real end is what its check judges.
            assert len(rows) == 1 and rows[0]["status"] == cleanly["status"], (name, rows)
            continue
        first, last = rows  # exactly two: the fault's system failure, then the run the clean one had
        assert (first["status"], first["failure_reason"], first["end"], first["cause"]) == (
            "failed",
            "runner_system_failure",
            "infrastructure",
            "api-error",
        ), name
        assert "connection refused" in first["sentence"] and first["pod"], first
        assert last["job_id"] > first["job_id"] and last["pod"] != first["pod"], last
        assert last["status"] == cleanly["status"], (name, last)  # as the clean run ended it
    # The fault meets every job that gets a pod (the catalogue's refusal probes get none), and most do.
    podded = sum(bool(clean["attempts"][name][0]["pod"]) for name in jobs)
    assert sum(len(rows) == 2 for rows in jobs.values()) == podded > len(jobs) // 2, (
        "the fault met every podded job"
    )
    named = [r for r in doc["results"] if r["attempts"]]
    assert named, "the results name their jobs' attempts"
    for r in named:  # each result carries every attempt of each job it read
        assert len(r["attempts"]) == sum(len(jobs[n]) for n in {a["job"] for a in r["attempts"]}), r
    assert "ran 2 times" in doc["output"]
    print(f"\n{fault}: {doc['wall_s']}s (clean {clean['wall_s']}s)")


@pytest.mark.parametrize("fault", ["init-not-first+retry"])
def test_a_conformance_failure_is_never_retried(fault: str, matrix: dict[str, dict[str, Any]]) -> None:
    doc = matrix[fault]
    areas = failing_areas(doc)
    assert areas and set(areas) <= MATRIX["init-not-first"], doc["output"]
    assert doc["exit"] == 1
    jobs = attempts_per_job(doc)
    assert jobs and all(len(rows) == 1 for rows in jobs.values()), {n: len(r) for n, r in jobs.items()}
    if "init-not-first" in matrix:
        assert verdicts(doc) == verdicts(matrix["init-not-first"])


def test_the_clean_run_replays_to_the_same_verdicts_and_a_valid_report(
    matrix: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The saved bundle of a real run, re-asserted offline: the same verdict per check, a valid report.json."""
    doc = matrix[""]
    bundle = Path(doc["evidence"])
    assert (bundle / "evidence.json").is_file(), doc["evidence"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", *WHOLE_SUITE, f"--runnerconf-replay={bundle}",
         f"--runnerconf-report={tmp_path}", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == doc["exit"], proc.stdout[-3000:]
    replayed = json.loads((tmp_path / "report.json").read_text())
    assert_valid_report(replayed)
    verdicts = {(r["id"], r["nodeid"]): r["outcome"] for r in doc["results"]}
    assert {(r["id"], r["nodeid"]): r["outcome"] for r in replayed["results"]} == verdicts
