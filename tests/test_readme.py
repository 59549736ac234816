"""The README documents every check of the suite (ID and claim), so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

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
