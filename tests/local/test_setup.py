"""A test session never changes the host: missing set-up ends the run with one sentence naming the command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.local import images, setup

ROOT = Path(__file__).resolve().parents[2]


def _changed_recipes(tmp_path: Path) -> Path:
    """A copy of the image recipes with one changed, so its content-hashed tag is not built."""
    recipes = tmp_path / "recipes"
    shutil.copytree(images.recipes_dir(), recipes)
    with open(recipes / "tiny.toml", "a", encoding="utf-8") as out:
        out.write("\n# changed by test_setup: this recipe's image was never built\n")
    return recipes


def test_missing_image_is_named_and_not_built(
    docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(images.RECIPES_ENV, str(_changed_recipes(tmp_path)))
    tag = images.image_tag("tiny")
    gaps = setup.missing()
    assert gaps == [f"the image tiny ({tag})"]
    with pytest.raises(setup.LocalSetupMissing) as caught:
        setup.require()
    assert str(caught.value) == (
        f"the local cluster is not set up on this machine (missing: the image tiny ({tag})); "
        "run `runnerconf local setup` as root once, then run again"
    )


def test_run_without_set_up_is_one_sentence_and_changes_nothing(docker_client: Any, tmp_path: Path) -> None:
    recipes = _changed_recipes(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERCONF_")}
    # An empty home: no running cluster to reuse, so the session must check the set-up itself.
    env.update({images.RECIPES_ENV: str(recipes), "RUNNERCONF_LOCAL_HOME": str(tmp_path / "home")})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites" / "test_ordering.py"), "--runner-cluster=local",
         "-p", "no:cacheprovider", "-q", f"--runnerconf-report={tmp_path / 'report'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 6, out[-3000:]
    assert (
        "runnerconf: could not test: the local cluster is not set up on this machine (missing: the image tiny"
        in out
    )
    assert "run `runnerconf local setup` as root once, then run again" in out
    assert "Traceback" not in out
    monkey_env = dict(os.environ, **{images.RECIPES_ENV: str(recipes)})
    check = subprocess.run(
        [sys.executable, "-c", "from pytest_runnerconf.local import images; print(images.image_tag('tiny'))"],
        env=monkey_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    docker_client.images.list()  # the engine still answers
    with pytest.raises(Exception, match="No such image"):
        docker_client.images.get(check.stdout.strip())
    assert not (tmp_path / "home" / "state.json").exists()
