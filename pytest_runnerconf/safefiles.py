"""Files written and read without following symlinks out of the directory they belong to.

An evidence bundle or report directory may be shared (a CI artifact, a bundle someone sent): a planted
symlink must neither redirect a write (``jobs/x/trace.txt -> ~/.bashrc``) nor let a replay read a file
outside the bundle (``"dir": "../../etc"``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path, PurePosixPath

from pytest_runnerconf.errors import ConfigError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW


def _parts(rel: str) -> list[str]:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ConfigError(f"{rel!r} is not a plain relative path")
    return list(parts)


def write_text(root: Path, rel: str, text: str, *, newline: str | None = None) -> Path:
    """Write ROOT/REL, creating its directories; no component below ROOT may be a symlink.

    ROOT itself is the user's choice and may be a symlink. Raises ConfigError naming a symlink, and the
    OSError for any other reason the file cannot be written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    *dirs, name = _parts(rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        where = root
        for part in dirs:
            where = where / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                _refuse_symlink(fd, part, where)
                raise
            os.close(fd)
            fd = sub
        try:
            out = os.open(name, _FILE_FLAGS, 0o644, dir_fd=fd)
        except OSError:
            _refuse_symlink(fd, name, where / name)
            raise  # any other reason (a directory in the way, no permission) is the caller's to phrase
    finally:
        os.close(fd)
    with open(out, "w", encoding="utf-8", newline=newline) as fh:
        fh.write(text)
    return where / name


def _refuse_symlink(dir_fd: int, name: str, where: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise ConfigError(f"{where} is a symlink; refusing to write through it")


def inside(root: Path, rel: str, what: str) -> Path:
    """ROOT/REL after resolving symlinks, refused (ConfigError naming WHAT) unless it stays inside ROOT."""
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"{what} {rel!r} points outside the bundle {base}; refusing to read it")
    return target
