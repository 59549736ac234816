"""The seam: product modules never import the local cluster; a production run works with local/ unimportable;
the suite uses only the public check API; a team's own check and probe plug in without forking."""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_runnerconf

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_runnerconf"
TOKEN_ENV = "RUNNERCONF_SEAM_TEST_TOKEN"

# Installed as sitecustomize: any import of the local cluster's package fails and is recorded.
BLOCKER = """
import os
import sys


class _BlockLocal:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest_runnerconf.local" or name.startswith("pytest_runnerconf.local."):
            with open(os.environ["RUNNERCONF_BLOCKED_LOG"], "a", encoding="utf-8") as log:
                log.write(name + "\\n")
            raise ImportError(f"{name} is blocked for this test")
        return None


sys.meta_path.insert(0, _BlockLocal())
"""


def _imports(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_product_modules_never_import_the_local_cluster() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        local = {m for m in _imports(path) if m.startswith("pytest_runnerconf.local")}
        assert not local, f"{path.name} imports {local}"


def test_suite_modules_use_only_the_public_check_api() -> None:
    public = set(pytest_runnerconf.__all__)
    for path in sorted((ROOT / "suites").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("pytest_runnerconf")
            ):
                assert node.module == "pytest_runnerconf", f"{path.name} imports {node.module}"
                names = {alias.name for alias in node.names}
                assert names <= public, f"{path.name} imports non-public {names - public}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _blocked_run(pytester: pytest.Pytester, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    site = pytester.path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = pytester.path / "blocked.log"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERCONF_")}
    env.update(
        {
            "PYTHONPATH": str(site),
            "RUNNERCONF_BLOCKED_LOG": str(log),
            TOKEN_ENV: "glpat-seam-0000000000000000",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, log.read_text()


@pytest.fixture
def suite_copy(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(ROOT / "suites", pytester.path / "suites", ignore=shutil.ignore_patterns("__pycache__"))
    (pytester.path / "suites" / "__init__.py").unlink()
    pytester.makeini("[pytest]\n")
    return pytester


def test_production_run_works_with_the_local_cluster_unimportable(suite_copy: pytest.Pytester) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    (suite_copy.path / "runnerconf.toml").write_text(
        f'[clusters.prod]\ngitlab_url = "{url}"\ntoken_env = "{TOKEN_ENV}"\nproject = "g/p"\nnamespace = "ci"\n'
    )
    proc, blocked = _blocked_run(suite_copy, "suites", "--runner-cluster=prod")
    assert proc.returncode == 6, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"cannot reach GitLab at {url} (connection refused); check clusters.prod.gitlab_url" in proc.stdout
    assert blocked == "", f"a production run imported {blocked.split()}"
    collect, blocked = _blocked_run(suite_copy, "suites", "--collect-only", "-q")
    assert collect.returncode == 0 and blocked == "", collect.stdout + blocked


def test_local_cluster_unimportable_is_one_sentence(suite_copy: pytest.Pytester) -> None:
    proc, _ = _blocked_run(suite_copy, "suites", "--runner-cluster=local")
    assert proc.returncode == 4
    assert (
        "ERROR: the target provider 'local' (pytest_runnerconf.local.provider:LocalProvider) cannot be imported"
        in proc.stderr
    )
    assert "pip install 'pytest-runnerconf[local]'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- a team's own check and probe

TEAM_CHECK = '''
"""RC-TMX: a team's own check, written only against the public API."""

from pytest_runnerconf import JobEvidence, check, expect_equal


@check(
    id="RC-TMX-001",
    claim="the team's marker file reaches the build",
    remediation="look at the team's image",
    area="team",
    probes=("team-marker",),
)
def test_marker(job_evidence, probe_record) -> None:
    job: JobEvidence = job_evidence("team-marker")
    expect_equal("RC-TMX-001", "present", probe_record(job, "team-marker")["marker"], job=job)
'''


TEAM_PROBE = """team-marker:
  image: "{{ images.build }}"
  script:
    - sh .runnerconf/team-marker.sh
"""
TEAM_SCRIPT = """. .runnerconf/lib.sh
rc_begin
rc_str marker present
rc_emit team-marker
"""


def _team(pytester: pytest.Pytester) -> Path:
    checks = pytester.path / "teamchecks"
    checks.mkdir()
    (checks / "test_team.py").write_text(TEAM_CHECK)
    probes = pytester.path / "teamprobes"
    probes.mkdir()
    (probes / "team-marker.yml").write_text(TEAM_PROBE)
    (probes / "team-marker.sh").write_text(TEAM_SCRIPT)
    pytester.makeini("[pytest]\n")
    return probes


def test_team_probe_directory_joins_the_plan(pytester: pytest.Pytester) -> None:
    _team(pytester)
    pytester.makeconftest(
        """
        def pytest_collection_finish(session):
            from pytest_runnerconf.plugin import STATE
            print("PLAN", session.config.stash[STATE].plan.probes)
        """
    )
    result = pytester.runpytest(
        "--collect-only", "-q", "--runner-cluster=local", "--runnerconf-probes=teamprobes", "teamchecks"
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["PLAN ('team-marker',)"])
    missing = pytester.runpytest("--collect-only", "-q", "--runner-cluster=local", "teamchecks")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["ERROR: unknown probe 'team-marker' requested by a check; known probes: *"])


def test_team_probe_directory_from_the_ini_is_relative_to_the_ini(pytester: pytest.Pytester) -> None:
    _team(pytester)
    pytester.makeini("[pytest]\nrunnerconf_probes =\n    teamprobes\n")
    sub = pytester.path / "elsewhere"
    sub.mkdir()
    os.chdir(sub)
    result = pytester.runpytest(
        "--collect-only", "-q", "--runner-cluster=local", str(pytester.path / "teamchecks")
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()


def test_readme_example_is_the_tested_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert TEAM_CHECK.split('"""', 2)[2].strip() in readme
    assert TEAM_PROBE in readme and TEAM_SCRIPT in readme
