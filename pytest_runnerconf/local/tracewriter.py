"""Write a job trace the way the runner does: sections, colours, masking and FF_TIMESTAMPS prefixes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

CYAN = "\x1b[36;1m"
GREEN = "\x1b[32;1m"
RED = "\x1b[31;1m"
YELLOW = "\x1b[0;33m"
RESET = "\x1b[0;m"
CLEAR = "\x1b[0K"

BOLD_YELLOW = "\x1b[33;1m"  # helpers.ANSI_BOLD_YELLOW
# common/consts.go DefaultTraceOutputLimit: the trace limit when [[runners]] output_limit is unset or 0.
DEFAULT_OUTPUT_LIMIT = 4 * 1024 * 1024

EXECUTOR_STREAM = "00"
SCRIPT_STREAM = "01"


def timestamp_prefix(ts: float, stream: str, kind: str = "O", continued: bool = False) -> str:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream}{kind}{'+' if continued else ' '}"


def limit_message(limit: int) -> bytes:
    """helpers/trace/buffer.go writeLimitExceededMessage (the same from v16.0 to v19.3): not timestamped."""
    return (
        f"\n{BOLD_YELLOW}Job's log exceeded limit of {limit} bytes.\n"
        f"Job execution will continue but no more output will be collected.{RESET}\n"
    ).encode()


class LimitedSink:
    """The runner's limitWriter: the trace keeps its first LIMIT bytes, then says so once and drops the rest.

    The cut falls exactly at LIMIT bytes of what was written (masked and timestamped), even inside a line.
    ANNOUNCE=False is the output-truncated-silently fault: the same cut without the message.
    """

    def __init__(self, append: Callable[[bytes], None], limit: int, *, announce: bool = True) -> None:
        self._append = append
        self.limit = limit
        self.written = 0
        self._announce = announce

    def __call__(self, data: bytes) -> None:
        capacity = self.limit - self.written
        if capacity <= 0:
            return
        if len(data) >= capacity:
            self._append(data[:capacity])
            self.written += capacity
            if self._announce:
                message = limit_message(self.limit)
                self._append(message)
                self.written += len(message)
            return
        self._append(data)
        self.written += len(data)


class TraceWriter:
    """Appends lines to a job's trace through a sink; thread-safe; never writes a masked value."""

    def __init__(
        self,
        append: Callable[[bytes], None],
        *,
        timestamps: bool,
        masked: list[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._append = append
        self._timestamps = timestamps
        self._masked = sorted((m for m in masked or [] if len(m) >= 8), key=len, reverse=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._partial: dict[str, str] = {}

    def _mask(self, text: str) -> str:
        for secret in self._masked:
            text = text.replace(secret, "[MASKED]")
        return text

    def _emit(self, text: str, stream: str, kind: str = "O") -> None:
        text = self._mask(text)
        if self._timestamps:
            text = timestamp_prefix(self._clock(), stream, kind) + text
        with self._lock:
            self._append((text + "\n").encode())

    def line(self, text: str = "", *, stream: str = EXECUTOR_STREAM, stderr: bool = False) -> None:
        """A plain line; `stderr` marks lines the runner writes to its stderr stream (E in the prefix)."""
        self._emit(text, stream, "E" if stderr else "O")

    def info(self, text: str) -> None:
        self._emit(f"{CLEAR}{text}{RESET}" if text else "", EXECUTOR_STREAM)

    def header(self, text: str) -> None:
        self._emit(f"{CLEAR}{CYAN}{text}{RESET}", EXECUTOR_STREAM)

    def warning(self, text: str) -> None:
        self._emit(f"{YELLOW}WARNING: {text}{RESET}", EXECUTOR_STREAM)

    def error(self, text: str) -> None:
        self._emit(f"{RED}ERROR: {text}{RESET}", EXECUTOR_STREAM)

    def command(self, text: str) -> None:
        self._emit(f"{GREEN}$ {text}{RESET}", SCRIPT_STREAM)

    def section_start(self, name: str, header: str) -> None:
        self._emit(
            f"section_start:{int(self._clock())}:{name}\r{CLEAR}{CLEAR}{CYAN}{header}{RESET}", EXECUTOR_STREAM
        )

    def section_end(self, name: str) -> None:
        self._emit(f"section_end:{int(self._clock())}:{name}\r{CLEAR}", EXECUTOR_STREAM)

    def output(self, chunk: bytes, *, stream: str = SCRIPT_STREAM) -> None:
        """Script output arrives in arbitrary chunks; emit whole lines, keep the rest for later."""
        data = self._partial.get(stream, "") + chunk.decode("utf-8", "replace")
        *lines, rest = data.split("\n")
        self._partial[stream] = rest
        for line in lines:
            self._emit(line, stream)

    def flush(self, *, stream: str = SCRIPT_STREAM) -> None:
        rest = self._partial.pop(stream, "")
        if rest:
            self._emit(rest, stream)
