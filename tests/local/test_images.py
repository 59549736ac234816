"""The local engine (ping, packages, --privileged probe) and the Debian-built images."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from pytest_runnerconf.local import engine, images
from pytest_runnerconf.local.engine import EngineError
from pytest_runnerconf.local.errors import LocalConfigError as ConfigError

RECIPES = images.recipes_dir()


@pytest.fixture
def recipe_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped recipes in a temp dir that a test may change."""
    target = tmp_path / "recipes"
    shutil.copytree(RECIPES, target)
    monkeypatch.setenv(images.RECIPES_ENV, str(target))
    return target


# --- recipes and hashes (no engine) -------------------------------------------------------------------


def test_shipped_recipes_and_tags() -> None:
    assert {"base", "dind", "tiny"} <= set(images.image_names())
    for name in ("base", "dind", "tiny"):
        tag = images.image_tag(name)
        repo, _, version = tag.partition(":")
        assert repo == f"runnerconf/{name}"
        assert len(version) == 12 and all(c in "0123456789abcdef" for c in version)
        assert images.recipe_hash(name).startswith(version)


def test_dind_recipe_is_shaped_like_docker_dind() -> None:
    recipe = images.load_recipe("dind")
    assert recipe.entrypoint == ("/usr/local/bin/dockerd-entrypoint.sh",)
    assert recipe.env["DOCKER_TLS_CERTDIR"] == ""
    assert "docker.io" in recipe.packages
    assert [f.dest for f in recipe.files] == ["/usr/local/bin/dockerd-entrypoint.sh"]


def test_hash_is_stable_and_follows_recipe_files_and_script_version(
    recipe_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {n: images.recipe_hash(n) for n in ("base", "dind", "tiny")}
    assert before == {n: images.recipe_hash(n) for n in ("base", "dind", "tiny")}

    (recipe_copy / "base.toml").write_text((recipe_copy / "base.toml").read_text() + "\n# touched\n")
    assert images.recipe_hash("base") != before["base"]
    assert images.recipe_hash("tiny") == before["tiny"]

    # A file copied into the image counts as part of its recipe.
    entry = recipe_copy / "dockerd-entrypoint.sh"
    entry.write_text(entry.read_text() + "# touched\n")
    assert images.recipe_hash("dind") != before["dind"]

    monkeypatch.setattr(images, "BUILD_SCRIPT_VERSION", "test-next")
    assert images.recipe_hash("tiny") != before["tiny"]


def test_unknown_or_broken_recipe_is_a_config_error(recipe_copy: Path) -> None:
    with pytest.raises(ConfigError, match="known images: base, dind, helper, tiny"):
        images.load_recipe("nope")
    (recipe_copy / "odd.toml").write_text('builder = "dockerfile"\npackages = []\n')
    with pytest.raises(ConfigError, match="builder 'dockerfile'"):
        images.load_recipe("odd")


def test_host_packages_are_installed_and_the_check_is_quick() -> None:
    started = time.monotonic()
    assert engine.ensure_host_packages() == []
    assert time.monotonic() - started < 5


def test_unreachable_docker_host_is_one_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    for ensure in (True, False):
        with pytest.raises(EngineError) as caught:
            engine.docker_client(ensure=ensure)
        message = str(caught.value)
        assert "nothing.sock" in message and "DOCKER_HOST" in message
        assert message.count(". ") == 0 and "\n" not in message


# --- engine -------------------------------------------------------------------------------------------


def test_privileged_probe_is_cached_and_leaves_nothing(docker_client: Any) -> None:
    kwargs, mode = engine.privileged_kwargs(docker_client)
    assert mode in ("privileged", "pseudo-privileged")
    if mode == "privileged":
        assert kwargs == {"privileged": True}
    else:
        assert kwargs["cap_add"] == ["ALL"] and kwargs["cap_drop"] == ["SYS_RESOURCE"]
        assert kwargs["device_cgroup_rules"] == ["a *:* rwm"]
    started = time.monotonic()
    again, mode_again = engine.privileged_kwargs(docker_client)
    assert (again, mode_again) == (kwargs, mode) and time.monotonic() - started < 0.1
    again["cap_add"] = ["mutated"]  # callers get copies, not the cache
    assert engine.privileged_kwargs(docker_client)[0] == kwargs
    probes = docker_client.containers.list(all=True, filters={"label": "runnerconf.role=privileged-probe"})
    assert probes == []


# --- the shipped images -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(docker_client: Any) -> dict[str, str]:
    return images.ensure_images(docker_client, log=lambda _line: None)


def _run(client: Any, image: str, script: str, **kwargs: Any) -> str:
    out = client.containers.run(image, ["sh", "-c", script], remove=True, **kwargs)
    return out.decode()


def test_warm_ensure_is_cached_and_quick(docker_client: Any, built: dict[str, str]) -> None:
    lines: list[str] = []
    started = time.monotonic()
    tags = images.ensure_images(docker_client, log=lines.append)
    assert time.monotonic() - started < 5
    assert tags == built
    assert sorted(lines) == sorted(f"image {n}: {t} cached" for n, t in tags.items())


def test_base_image_has_what_build_and_helper_need(docker_client: Any, built: dict[str, str]) -> None:
    out = _run(
        docker_client,
        built["base"],
        'echo "PATH=$PATH"; for c in git socat nc busybox ip ps update-ca-certificates; do '
        'command -v "$c" >/dev/null && echo "has $c"; done; ls /var/lib/apt/lists | wc -l',
    )
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in out
    for tool in ("git", "socat", "nc", "busybox", "ip", "ps", "update-ca-certificates"):
        assert f"has {tool}" in out
    assert out.strip().splitlines()[-1] == "0"  # apt lists trimmed


def test_tiny_image_is_busybox_only_and_small(docker_client: Any, built: dict[str, str]) -> None:
    image = docker_client.images.get(built["tiny"])
    assert image.attrs["Size"] < 10 * 1024 * 1024
    script = "readlink /bin/sh; wget --help 2>&1 | head -1; id -un; ls -ld /tmp"
    out = _run(docker_client, built["tiny"], script)
    lines = out.splitlines()
    assert lines[0] == "/bin/busybox"
    assert lines[1].startswith("BusyBox")
    assert lines[2] == "root"
    assert lines[3].startswith("drwxrwxrwt")


def test_dind_image_config_and_cli(docker_client: Any, built: dict[str, str]) -> None:
    config = docker_client.images.get(built["dind"]).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/dockerd-entrypoint.sh"]
    assert "DOCKER_TLS_CERTDIR=" in config["Env"]
    # Not a dockerd invocation: the entrypoint execs it unchanged (stands in for docker:*-cli).
    out = docker_client.containers.run(built["dind"], ["docker", "--version"], remove=True).decode()
    assert out.startswith("Docker version")


def test_dind_entrypoint_runs_dockerd_on_tcp_and_unix(docker_client: Any, built: dict[str, str]) -> None:
    kwargs, mode = engine.privileged_kwargs(docker_client)
    container = docker_client.containers.run(built["dind"], detach=True, **kwargs)
    try:
        _wait_for(lambda: container.exec_run(["docker", "info"]).exit_code == 0, 30, container)
        tcp = container.exec_run(["docker", "-H", "tcp://127.0.0.1:2375", "info", "--format", "{{.ID}}"])
        assert tcp.exit_code == 0, tcp.output
        sysctl = container.exec_run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && echo writable"])
        assert sysctl.output.decode().strip() == "writable"
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)
    assert ("running pseudo-privileged" in logs) == (mode == "pseudo-privileged")
    assert "read-only file system" not in logs
    assert "WARN cannot" not in logs


def _wait_for(condition: Any, timeout_s: float, container: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        container.reload()
        assert container.status == "running", container.logs()[-2000:]
        assert time.monotonic() < deadline, f"not ready within {timeout_s} s: {container.logs()[-2000:]}"
        time.sleep(0.1)


# --- building (real apt downloads, small images) ------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty recipe dir and cache dir of the test's own."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    monkeypatch.setenv(images.RECIPES_ENV, str(recipes))
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path / "cache"))
    return recipes


def _remove_image(client: Any, tag: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(tag, force=True)


def test_build_then_cached_and_no_leftovers(docker_client: Any, scratch: Path) -> None:
    (scratch / "rctest-a.toml").write_text(
        'builder = "deb-extract"\npackages = ["busybox-static"]\ncmd = ["/bin/sh", "-c", "echo from-a"]\n'
        '[env]\nGREETING = "hi there"\n'
    )
    (scratch / "rctest-b.toml").write_text('builder = "deb-extract"\npackages = ["busybox-static"]\n')
    # What a killed debootstrap leaves: its dir (pid long gone) with /proc still mounted in the rootfs.
    stale = images.cache_dir() / "build" / "rctest-a-999999999-stale_1"
    (stale / "rootfs" / "proc").mkdir(parents=True)
    (stale / "junk").write_text("left by a killed build")
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "proc", "proc", str(stale / "rootfs" / "proc")], check=True)
    tags = {n: images.image_tag(n) for n in ("rctest-a", "rctest-b")}
    try:
        lines: list[str] = []
        assert images.ensure_images(docker_client, log=lines.append) == tags
        assert sorted(line.split(" built in ")[0] for line in lines) == [
            f"image {n}: {t}" for n, t in sorted(tags.items())
        ]
        assert docker_client.containers.run(tags["rctest-a"], remove=True).decode() == "from-a\n"
        env = docker_client.images.get(tags["rctest-a"]).attrs["Config"]["Env"]
        assert "GREETING=hi there" in env
        assert list((images.cache_dir() / "build").iterdir()) == []  # stale dir and own dirs gone
        assert str(stale) not in Path("/proc/self/mounts").read_text()

        lines.clear()
        assert images.ensure_images(docker_client, ["rctest-a"], log=lines.append) == {
            "rctest-a": tags["rctest-a"]
        }
        assert lines == [f"image rctest-a: {tags['rctest-a']} cached"]
    finally:
        if str(stale) in Path("/proc/self/mounts").read_text():
            subprocess.run(["umount", "-l", str(stale / "rootfs" / "proc")], check=False)
        for tag in tags.values():
            _remove_image(docker_client, tag)


def test_failed_build_leaves_no_image_and_no_rootfs(docker_client: Any, scratch: Path) -> None:
    (scratch / "rctest-bad.toml").write_text(
        'builder = "deb-extract"\npackages = ["runnerconf-no-such-package"]\n'
    )
    tag = images.image_tag("rctest-bad")
    with pytest.raises(images.ImageBuildError, match="runnerconf-no-such-package"):
        images.ensure_images(docker_client, ["rctest-bad"], log=lambda _line: None)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)
    assert list((images.cache_dir() / "build").iterdir()) == []
