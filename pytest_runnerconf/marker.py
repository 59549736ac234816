"""What marks GitLab objects as this tool's: the scratch branch prefix, the run id and the commit message."""

from __future__ import annotations

import re

BRANCH_PREFIX = "runnerconf/"
# run.new_run_id(): local time, then 6 hex digits ("20261201-221530-a1b2c3").
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


def scratch_branch(run_id: str) -> str:
    return f"{BRANCH_PREFIX}{run_id}"


def commit_message(run_id: str) -> str:
    """The scratch commit's message; "[ci skip]": the push must not start a pipeline, ours comes via the API."""
    return f"runnerconf run {run_id} [ci skip]"


def run_id_of(branch: str) -> str | None:
    """The run id a scratch branch (or pipeline ref) carries, or None when it is not this tool's."""
    if not branch.startswith(BRANCH_PREFIX):
        return None
    run_id = branch[len(BRANCH_PREFIX) :]
    return run_id if RUN_ID.match(run_id) else None


def is_ours(branch: str, head_message: str) -> bool:
    """A branch carries the run marker: the prefix, a run id, and the head commit this tool writes."""
    run_id = run_id_of(branch)
    return run_id is not None and head_message.strip() == commit_message(run_id).strip()
