"""Run a command on a pseudo-terminal and read what a terminal of a given size would show."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyte

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class PtyResult:
    returncode: int
    raw: str  # every byte the command wrote, as the terminal received it (CR LF from the tty's onlcr)
    columns: int

    def screen(self, rows: int = 200) -> list[str]:
        """The rows a terminal of `columns` shows at the end (trailing blanks and empty rows dropped)."""
        screen = pyte.Screen(self.columns, rows)
        pyte.Stream(screen).feed(self.raw)
        shown = [row.rstrip() for row in screen.display]
        while shown and not shown[-1]:
            shown.pop()
        return shown

    def lines(self) -> list[str]:
        """The output as a log file holds it: split at line feeds, colours removed, CRs kept."""
        return [ANSI.sub("", line).removesuffix("\r") for line in self.raw.split("\n")]


def run_in_pty(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    columns: int = 100,
    timeout_s: float = 300.0,
) -> PtyResult:
    """Run ARGV with a pseudo-terminal as stdin, stdout and stderr; bounded by TIMEOUT_S."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            proc.kill()
            raise AssertionError(f"{argv[0]} did not end within {timeout_s:g}s")
    finally:
        os.close(master)
    return PtyResult(proc.wait(timeout=30), b"".join(chunks).decode(errors="replace"), columns)
