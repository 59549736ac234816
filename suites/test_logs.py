"""RC-LOG: the build container's output reaches the job log whole and in order, and the job ends with its script."""

from __future__ import annotations

import re
from collections.abc import Callable

from pytest_runnerconf import JobEvidence, check, fail, held

JobLookup = Callable[[str], JobEvidence]
_LINE = re.compile(r"^runnerconf-logs (\d+)/(\d+) (\S+)$")


@check(
    id="RC-LOG-001",
    claim="what the build container prints reaches the job log whole and in order, and the job ends when its script ends",
    remediation="in attach mode the runner reads the output and the script's exit status back from the pod's "
    "logs emptyDir (/logs-<project>-<job>/output.log, through the helper): check that the logs volume is one "
    "emptyDir shared by every container (pod_spec patches, webhooks, volume plugins), that the helper can "
    "read what the build writes (chmod 777 by init-permissions, security contexts), and the node's disk",
    area="logs",
    probes=("logs",),
    judges_failures=("logs",),  # a job that outlives its script runs into its timeout: that is the failure
)
def test_build_output_reaches_the_job_log(job_evidence: JobLookup) -> None:
    job = job_evidence("logs")
    trace = job.trace_parsed
    seen = [m for m in (_LINE.match(line.strip()) for line in trace.section_text("step_script")) if m]
    numbers = [int(m.group(1)) for m in seen]
    want = list(range(1, int(seen[0].group(2)) + 1)) if seen else list(range(1, 201))
    if job.status != "success" or numbers != want:
        missing = sorted(set(want) - set(numbers))
        observed = (
            f"job {job.status or 'unknown status'} ({trace.failure or trace.final or 'no final line'}); "
            f"{len(numbers)} of {len(want)} lines in the job log"
            + (f", missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "")
            + ("" if numbers == sorted(numbers) else ", out of order")
        )
        fail("RC-LOG-001", f"job success with lines 1..{len(want)} in order", observed, job=job)
    long_lines = [m.group(3) for m in seen if int(m.group(1)) == 100]
    if not long_lines or len(long_lines[0]) != 3600:
        fail(
            "RC-LOG-001",
            "line 100 whole (3600 characters)",
            f"{len(long_lines[0]) if long_lines else 0} characters",
            job=job,
        )
    held(
        "RC-LOG-001",
        {"job": "success", "lines": len(want), "line 100 characters": 3600},
        {"job": job.status, "lines in order": len(numbers), "line 100 characters": len(long_lines[0])},
        job=job,
        summary=f"{len(numbers)} of {len(want)} lines in order, line 100 whole ({len(long_lines[0])} "
        f"characters), job {job.status}",
    )
