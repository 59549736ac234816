"""The README documents every check of the suite (ID and claim), so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_every_check_with_its_claim() -> None:
    readme = (ROOT / "README.md").read_text()
    suites = "".join(p.read_text() for p in sorted((ROOT / "suites").glob("test_*.py")))
    ids = set(re.findall(r'id="(RC-[A-Z]+-\d{3})"', suites))
    assert len(ids) >= 30
    documented = set(re.findall(r"^\| (RC-[A-Z]+-\d{3}) \|", readme, flags=re.M))
    assert documented == ids


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert "./scripts/conformance-local" in block and "./scripts/test" in block
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_progress_excerpt_is_in_the_current_log_format() -> None:
    # The excerpt was copied from a captured run; a change of the display's wording must update it.
    from pytest_runnerconf.display import describe
    from pytest_runnerconf.progress import ProgressEvent, RunState

    readme = (ROOT / "README.md").read_text()
    block = (
        readme.split("## Progress in a terminal and in a CI log", 1)[1].split("```text", 1)[1].split("```")[0]
    )
    lines = [line for line in block.splitlines() if line.startswith("runnerconf local: ")]
    assert len(lines) >= 10
    state = RunState(pipeline=1, jobs=14, finished=(("success", 9), ("failed", 4), ("canceled", 1)))
    templates = [
        describe(ProgressEvent("preflight", url="URL", name="NS")),
        describe(ProgressEvent("pipeline", number=1, count=14, url="URL")),
        describe(ProgressEvent("job-started", name="JOB")),
        describe(ProgressEvent("job-finished", name="JOB", status="STATUS", seconds=1.0)),
        describe(
            ProgressEvent(
                "waiting",
                name="pods",
                state=RunState(**{**state.__dict__, "waiting": "pods", "waiting_count": 4}),
            )
        ),
        describe(
            ProgressEvent("waiting", name="secrets", state=RunState(waiting="secrets", waiting_count=1))
        ),
        describe(
            ProgressEvent("done", state=RunState(**{**state.__dict__, "pods_seen": 12, "pods_deleted": 12}))
        ),
    ]
    patterns = [
        re.compile(re.escape(t).replace("URL", r"\S+").replace("NS", r"\S+").replace("JOB", r"\S+")
                   .replace("STATUS", r"\w+").replace(r"1\.0", r"[\d.]+"))
        for t in templates
    ]  # fmt: skip
    for line in lines:
        text = re.sub(r"^runnerconf local: \[ *\d+s\] ", "", line)
        assert any(p.fullmatch(text) for p in patterns), line


def test_readme_rbac_block_is_what_runnerconf_rbac_generates(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_runnerconf.cli import main

    assert main(["rbac", "--namespace", "gitlab-runner-jobs", str(ROOT / "suites")]) == 0
    generated = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == generated
    assert (
        "resources: [secrets]" in block
        and "`list`/`watch` on secrets let this credential read the data" in block
    )
    assert "verbs: [list, watch]" in block.split("resources: [secrets]", 1)[1], "the Secret watch needs both"


def test_rbac_for_checks_that_read_no_secrets_grants_none(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_runnerconf.cli import main

    assert main(["rbac", "--namespace", "ci", "-k", "ordering or dns", str(ROOT / "suites")]) == 0
    manifest = capsys.readouterr().out
    assert (
        "secrets" not in manifest and "resources: [pods]" in manifest and "verbs: [list, watch]" in manifest
    )


def test_example_ci_job_is_bounded_interruptible_and_serialised_per_cluster() -> None:
    import yaml

    job = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())["conformance"]
    assert job["interruptible"] is True and job["timeout"]
    assert job["resource_group"] == "runnerconf-$RUNNERCONF_CLUSTER"


def test_readme_screenshot_is_of_a_real_local_run_made_by_the_script() -> None:
    """docs/report.png is made by scripts/readme-screenshot, which stamps the run it shows into the PNG."""
    from tests.readme_screenshot import MADE_BY, WIDTH, chunks, provenance

    readme = (ROOT / "README.md").read_text()
    assert "](docs/report.png)" in readme and "scripts/readme-screenshot" in readme
    png = (ROOT / "docs" / "report.png").read_bytes()
    stamp = provenance(png)
    assert stamp is not None, "docs/report.png was not made by scripts/readme-screenshot"
    assert stamp["made_by"] == MADE_BY and stamp["cluster"] == "local"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]+", str(stamp["run_id"])), stamp
    # The full suite: every check, one pipeline of all its probe jobs.
    assert stamp["results"] >= 34 and stamp["jobs"] >= 10, stamp
    assert sum(stamp["counts"].values()) == stamp["results"]
    width = int.from_bytes(chunks(png)[0][1][:4], "big")
    assert width == WIDTH


def test_the_screenshot_stamp_round_trips_in_a_png() -> None:
    import struct
    import zlib

    from tests.readme_screenshot import CHUNK_KEY, chunks, provenance, with_text

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # one grey pixel
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )
    assert provenance(png) is None
    stamped = with_text(png, CHUNK_KEY, '{"run_id": "20261202-143906-38ed87"}')
    assert [kind for kind, _ in chunks(stamped)] == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    assert provenance(stamped) == {"run_id": "20261202-143906-38ed87"}
    kind, data = chunks(stamped)[1]
    crc = stamped[stamped.index(b"tEXt") + 4 + len(data) : stamped.index(b"tEXt") + 8 + len(data)]
    assert struct.unpack(">I", crc)[0] == zlib.crc32(kind + data)  # a valid chunk, as viewers check it
