"""Local-cluster images built from Debian packages and tagged by a content hash of their recipe."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from filelock import FileLock

from pytest_runnerconf.local.errors import LocalConfigError, LocalStartError
from pytest_runnerconf.local.netsvc import pid_running
from pytest_runnerconf.resources import fixtures_path

# Bump when the build steps below change what ends up in an image: every tag changes with it.
BUILD_SCRIPT_VERSION = "1"
REPOSITORY_PREFIX = "runnerconf"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
RECIPES_ENV = "RUNNERCONF_IMAGE_RECIPES"
CACHE_ENV = "RUNNERCONF_CACHE_DIR"
MIRROR_ENV = "RUNNERCONF_DEBIAN_MIRROR"
_PR_SET_PDEATHSIG = 1
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Trimmed after debootstrap: apt's caches and docs are most of a minbase image's size and nobody reads them.
_TRIM = (
    "var/cache/apt/archives",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "var/log",
)

Log = Callable[[str], None]


class ImageBuildError(LocalStartError):
    """A local image could not be built (debootstrap, apt download or docker import failed)."""


@dataclass(frozen=True)
class FileSpec:
    src: Path
    dest: str
    mode: int


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    builder: str
    packages: tuple[str, ...]
    suite: str = "bookworm"
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    files: tuple[FileSpec, ...] = ()


def recipes_dir() -> Path:
    override = os.environ.get(RECIPES_ENV)
    if override:
        return Path(override)
    return fixtures_path("local", "images")


def image_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.toml"))


def load_recipe(name: str) -> Recipe:
    path = recipes_dir() / f"{name}.toml"
    if not path.is_file():
        raise LocalConfigError(
            f"no image recipe {name!r} at {path}; known images: {', '.join(image_names())}"
        )
    data = tomllib.loads(path.read_text())
    builder = data.get("builder", "")
    if builder not in ("debootstrap", "deb-extract"):
        raise LocalConfigError(
            f"image recipe {path} has builder {builder!r}; use 'debootstrap' or 'deb-extract'"
        )
    files = tuple(
        FileSpec(src=path.parent / f["src"], dest=f["dest"], mode=int(str(f.get("mode", "0644")), 8))
        for f in data.get("files", [])
    )
    return Recipe(
        name=name,
        path=path,
        builder=builder,
        packages=tuple(data.get("packages", [])),
        suite=data.get("suite", "bookworm"),
        cmd=_opt_tuple(data.get("cmd")),
        entrypoint=_opt_tuple(data.get("entrypoint")),
        env={"PATH": DEFAULT_PATH, **data.get("env", {})},
        files=files,
    )


def _opt_tuple(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def recipe_hash(name: str) -> str:
    """Hex sha256 over the build-script version, the recipe file and every file it copies in."""
    recipe = load_recipe(name)
    digest = hashlib.sha256()
    digest.update(f"build-script {BUILD_SCRIPT_VERSION}\n".encode())
    digest.update(recipe.path.read_bytes())
    for spec in recipe.files:
        digest.update(f"\nfile {spec.dest} {spec.mode:o}\n".encode())
        digest.update(spec.src.read_bytes())
    return digest.hexdigest()


def image_tag(name: str) -> str:
    return f"{REPOSITORY_PREFIX}/{name}:{recipe_hash(name)[:12]}"


def missing_images(client: docker.DockerClient, names: Iterable[str] | None = None) -> list[str]:
    """The images (name:tag) of the current recipes that are not built yet."""
    wanted = sorted(set(names) if names is not None else image_names())
    return [f"{n} ({image_tag(n)})" for n in wanted if not _has_image(client, image_tag(n))]


def ensure_images(
    client: docker.DockerClient, names: Iterable[str] | None = None, log: Log = print
) -> dict[str, str]:
    """Build every named image whose tag is missing (concurrently); return name -> tag."""
    wanted = sorted(set(names) if names is not None else image_names())
    tags = {name: image_tag(name) for name in wanted}
    missing = [n for n in wanted if not _has_image(client, tags[n])]
    for name in wanted:
        if name not in missing:
            log(f"image {name}: {tags[name]} cached")
    if missing:
        with ThreadPoolExecutor(max_workers=len(missing)) as pool:
            # list() re-raises the first build error after every build has finished or failed.
            list(pool.map(lambda n: _build_locked(client, n, tags[n], log), missing))
    return tags


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    path = Path(override) if override else Path("/var/cache/runnerconf")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build_locked(client: docker.DockerClient, name: str, tag: str, log: Log) -> None:
    locks = cache_dir() / "locks"
    locks.mkdir(exist_ok=True)
    # Another process (an xdist worker, a second CLI) may be building the same tag: wait for it.
    with FileLock(str(locks / f"{name}.lock")):
        if _has_image(client, tag):
            log(f"image {name}: {tag} cached (built by another process)")
            return
        started = time.monotonic()
        build_image(client, load_recipe(name), tag)
        log(f"image {name}: {tag} built in {time.monotonic() - started:.1f} s")


def build_image(client: docker.DockerClient, recipe: Recipe, tag: str) -> None:
    builds = cache_dir() / "build"
    builds.mkdir(exist_ok=True)
    _remove_stale_builds(builds)
    workdir = Path(tempfile.mkdtemp(prefix=f"{recipe.name}-{os.getpid()}-", dir=builds))
    try:
        rootfs = workdir / "rootfs"
        if recipe.builder == "debootstrap":
            _debootstrap(recipe, rootfs, workdir / "build.log")
        else:
            _deb_extract(recipe, rootfs, workdir)
        _trim(rootfs)
        _copy_files(recipe, rootfs)
        _import(client, rootfs, recipe, tag)
    finally:
        _remove_tree(workdir)


def _remove_stale_builds(builds: Path) -> None:
    """Remove build dirs left by killed processes (their pid, the second name field, is gone)."""
    for entry in builds.iterdir():
        # "<name>-<pid>-<mkdtemp suffix>"; names may hold dashes, mkdtemp suffixes never do.
        match = re.search(r"-(\d+)-[^-]+$", entry.name)
        if match and not pid_running(int(match.group(1))):
            _remove_tree(entry)


def _remove_tree(path: Path) -> None:
    # debootstrap mounts /proc and /sys into the target; a failed run can leave them mounted, and
    # rmtree through a live /proc or /sys mount would walk the host's kernel trees.
    _unmount_below(path)
    shutil.rmtree(path, ignore_errors=True)


def _unmount_below(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _die_with_parent() -> None:
    # A killed build must not leave debootstrap writing into a dir the next build removes as stale.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run_logged(argv: list[str], log_path: Path, what: str) -> None:
    with open(log_path, "ab") as out:
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, check=False, preexec_fn=_die_with_parent
        )
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        raise ImageBuildError(f"{what} failed with exit {result.returncode}: {' | '.join(tail)}")


def _debootstrap(recipe: Recipe, rootfs: Path, log_path: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed; run `apt-get install -y debootstrap` as root")
    mirror = os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)
    argv = ["debootstrap", "--variant=minbase"]
    if recipe.packages:
        argv.append("--include=" + ",".join(recipe.packages))
    argv += [recipe.suite, str(rootfs), mirror]
    _run_logged(argv, log_path, f"debootstrap of image {recipe.name!r} (log {log_path})")


def _deb_extract(recipe: Recipe, rootfs: Path, workdir: Path) -> None:
    debs = workdir / "debs"
    debs.mkdir()
    log_path = workdir / "build.log"
    _apt_download(list(recipe.packages), debs, log_path)
    rootfs.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        _run_logged(["dpkg-deb", "-x", str(deb), str(rootfs)], log_path, f"extracting {deb.name}")
    _busybox_skeleton(rootfs)


def _apt_download(packages: list[str], dest: Path, log_path: Path) -> None:
    argv = ["apt-get", "download", *packages]
    with open(log_path, "ab") as out:
        first = subprocess.run(argv, cwd=dest, stdout=out, stderr=subprocess.STDOUT, check=False)
    if first.returncode == 0:
        return
    # A fresh machine may have no package lists yet.
    _run_logged(["apt-get", "update"], log_path, "apt-get update")
    with open(log_path, "ab") as out:
        result = subprocess.run(argv, cwd=dest, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"apt-get download {' '.join(packages)} failed; see {log_path}")


def _busybox_skeleton(rootfs: Path) -> None:
    busybox = rootfs / "bin" / "busybox"
    if not busybox.is_file():
        raise ImageBuildError(f"busybox-static did not provide {busybox}")
    listing = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in listing:
        link = rootfs / applet
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    for d in ("tmp", "root", "proc", "sys", "dev", "etc", "var/tmp", "run"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "var" / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


def _trim(rootfs: Path) -> None:
    for rel in _TRIM:
        target = rootfs / rel
        if target.is_dir() and not target.is_symlink():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif target.exists():
            target.unlink()


def _copy_files(recipe: Recipe, rootfs: Path) -> None:
    for spec in recipe.files:
        dest = rootfs / spec.dest.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.src, dest)
        dest.chmod(spec.mode)


def _changes(recipe: Recipe) -> list[str]:
    changes = [f"ENV {key}={json.dumps(value)}" for key, value in sorted(recipe.env.items())]
    if recipe.entrypoint is not None:
        changes.append(f"ENTRYPOINT {json.dumps(list(recipe.entrypoint))}")
    if recipe.cmd is not None:
        changes.append(f"CMD {json.dumps(list(recipe.cmd))}")
    return changes


def _import(client: docker.DockerClient, rootfs: Path, recipe: Recipe, tag: str) -> None:
    """Import the rootfs untagged, and tag it only once tar has finished cleanly: no half images."""
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None
    try:
        result = client.api.import_image_from_data(_chunks(tar.stdout), changes=_changes(recipe))
    finally:
        tar.stdout.close()
        tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        tar_rc = tar.wait()
    image_id = _imported_id(result)
    if tar_rc != 0:
        _discard(client, image_id)
        raise ImageBuildError(f"tar of {recipe.name!r} rootfs failed ({tar_rc}): {tar_err.strip()[-300:]}")
    if not image_id:
        raise ImageBuildError(f"docker import of {recipe.name!r} returned no image id: {str(result)[-300:]}")
    repository, _, version = tag.rpartition(":")
    client.images.get(image_id).tag(repository, version)


def _chunks(stream: object) -> Iterator[bytes]:
    while chunk := stream.read(1 << 20):  # type: ignore[attr-defined]
        yield chunk


def _imported_id(result: object) -> str:
    text = result if isinstance(result, str) else json.dumps(result)
    for line in reversed(text.splitlines()):
        try:
            status = json.loads(line).get("status", "")
        except (ValueError, AttributeError):
            continue
        if status.startswith("sha256:"):
            return status
    return ""


def _discard(client: docker.DockerClient, image_id: str) -> None:
    if image_id:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image_id, force=True)
