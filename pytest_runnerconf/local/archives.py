"""Zip archives the emulated helper writes (artifacts.zip, cache.zip) and unpacks into a pod.

The helper's archiver (commands/helpers/archive/zip) stores paths relative to the project directory, with
an entry per directory before its files; the extractor writes them back under the project directory. The
pod side moves through tar streams, the form the container runtime takes and gives.
"""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from collections.abc import Iterable

# Files the helper extracts stay writable by the build user: the real helper chowns them to the build
# container's uid/gid after extraction (changeFilesOwnership); the emulation opens them up instead.
FILE_MODE = 0o666
DIR_MODE = 0o777


def zip_entries(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A zip of (relative path, content) pairs, directory entries first as the helper's archiver writes them."""
    buf = io.BytesIO()
    seen: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, content in files:
            parts = rel.split("/")[:-1]
            for n in range(1, len(parts) + 1):
                directory = "/".join(parts[:n]) + "/"
                if directory not in seen:
                    seen.add(directory)
                    zf.writestr(directory, b"")
            zf.writestr(rel, content)
    return buf.getvalue()


def tar_members(data: bytes, base: str = "") -> list[tuple[str, bytes]]:
    """The regular files of a tar stream (a container's archive of one path) as (BASE + name, content)."""
    found: list[tuple[str, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                fh = tar.extractfile(member)
                if fh is not None:
                    found.append((base + member.name, fh.read()))
    return found


def zip_to_tar(data: bytes) -> tuple[bytes, int]:
    """A zip archive as a tar stream to unpack into the project directory, and how many files it holds.

    Raises:
        zipfile.BadZipFile: the bytes are no zip archive (the extractor's "zip: not a valid zip file").
        ValueError: an entry would land outside the project directory.
    """
    out = io.BytesIO()
    count = 0
    now = int(time.time())
    with zipfile.ZipFile(io.BytesIO(data)) as zf, tarfile.open(fileobj=out, mode="w") as tar:
        for entry in zf.infolist():
            name = entry.filename
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"{name}: path outside the project directory")
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = now
            if entry.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = DIR_MODE
                tar.addfile(info)
                continue
            content = zf.read(entry)
            info.size = len(content)
            info.mode = FILE_MODE
            tar.addfile(info, io.BytesIO(content))
            count += 1
    return out.getvalue(), count
