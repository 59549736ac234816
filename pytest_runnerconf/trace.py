"""Parse raw GitLab job traces: timestamps, ANSI, section markers, probe records and the final verdict."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pytest_runnerconf.errors import ProbeProtocolError

# FF_TIMESTAMPS prefix: "<RFC3339 UTC> <2-hex stream><O|E><' '|'+'>"; '+' continues the previous line.
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z) ([0-9a-f]{2}[OE])([ +])")
# The \r\e[0K tail is required so that a script echoing "section_start:..." is not taken as a marker.
_SECTION = re.compile(r"section_(start|end):(\d+):([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?\r\x1b\[0K")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# The header is `Running with <name> <version> (<revision>)` in every runner from 16.0 to 19.x
# (AppVersionInfo.Line in common/version.go); a version may hold spaces ("development version") or a
# pre-release tail ("17.0.0~pre.88.g761ae5dd"), so the revision in brackets is what ends it.
_VERSION = re.compile(r"^Running with gitlab-runner (?P<version>.+?)(?: \((?P<revision>[^()]*)\))?\s*$")
_VERSION_NUMBER = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
_RUNNING_ON = re.compile(r"^Running on (\S+) via ")
_PROBE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
RECORD_TAG = "RUNNERCONF"
# helpers/trace/buffer.go writeLimitExceededMessage, the same from v16.0 to v19.3: written straight after the
# last byte the limit lets through (no timestamp prefix), after a newline of its own.
_LIMIT_MESSAGE = re.compile(
    rb"\n(?:\x1b\[[0-9;]*m)?Job's log exceeded limit of (\d+) bytes\.\r?\n"
    rb"Job execution will continue but no more output will be collected\."
)
_FAILED = "ERROR: Job failed: "
_SYSTEM_FAILED = "ERROR: Job failed (system failure): "


@dataclass
class TraceLine:
    text: str
    time: float | None = None
    # "<2-hex stream><O|E>" from the timestamp prefix, e.g. "01O" (script stdout); None without FF_TIMESTAMPS.
    stream: str | None = None


@dataclass
class Section:
    name: str
    start: int
    end: int | None
    options: dict[str, str]
    # Indexes into Trace.lines; a section with no output has last_line == first_line - 1.
    first_line: int
    last_line: int

    @property
    def duration(self) -> int | None:
        return None if self.end is None else self.end - self.start


@dataclass
class ProbeRecord:
    probe: str
    data: dict[str, Any]
    line: int  # index into Trace.lines
    time: float | None


@dataclass
class Trace:
    lines: list[TraceLine] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    records: list[ProbeRecord] = field(default_factory=list)
    runner_version: str | None = None
    runner_revision: str | None = None
    final: str | None = None
    final_line: int | None = None  # index into lines of the final verdict line
    failure: str | None = None
    system_failure: bool = False

    def section(self, name: str) -> Section | None:
        """The first section called NAME."""
        return next((s for s in self.sections if s.name == name), None)

    def records_for(self, probe: str) -> list[dict[str, Any]]:
        return [r.data for r in self.records if r.probe == probe]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def pod_name(self) -> str | None:
        """The pod named by `Running on <pod> via <host>...` in prepare_script."""
        for line in self.lines:
            if match := _RUNNING_ON.match(line.text):
                return match.group(1)
        return None

    @property
    def succeeded(self) -> bool:
        return self.final == "Job succeeded"

    def section_names(self) -> list[str]:
        return [s.name for s in self.sections]

    def section_text(self, name: str) -> list[str]:
        """The clean lines of the first section called NAME (empty when there is none)."""
        section = self.section(name)
        if section is None:
            return []
        return [line.text for line in self.lines[section.first_line : section.last_line + 1]]


@dataclass
class _RawLine:
    text: str
    time: float | None
    stream: str | None


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _logical_lines(text: str) -> list[_RawLine]:
    """Split into lines, drop timestamp prefixes and join '+' continuations onto their line."""
    lines: list[_RawLine] = []
    for raw in text.split("\n"):
        match = _TIMESTAMP.match(raw)
        if match is None:
            lines.append(_RawLine(raw, None, None))
            continue
        body = raw[match.end() :]
        if match.group(3) == "+" and lines:
            lines[-1].text += body
        else:
            lines.append(_RawLine(body, _epoch(match.group(1)), match.group(2)))
    return lines


def strip_timestamps(text: str) -> str:
    """Remove FF_TIMESTAMPS prefixes and join continuation lines, as GitLab's log view does."""
    return "\n".join(line.text for line in _logical_lines(text))


def _clean(text: str) -> str:
    """What a log viewer shows: no ANSI, and only the text after the last carriage return."""
    text = _ANSI.sub("", text).rstrip("\r")
    return text.rsplit("\r", 1)[-1]


def _options(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    pairs = (item.partition("=") for item in raw.split(",") if item.strip())
    return {key.strip(): value.strip() for key, _, value in pairs}


@dataclass
class _Builder:
    trace: Trace = field(default_factory=Trace)
    open: list[Section] = field(default_factory=list)

    def add_line(self, raw: _RawLine) -> None:
        # Like GitLab's log view, a section marker also breaks the line: text on either side of it
        # becomes its own line, so every line belongs to exactly the sections open when it starts.
        pos = 0
        for match in _SECTION.finditer(raw.text):
            self._piece(raw, raw.text[pos : match.start()], keep_empty=False)
            self._marker(match)
            pos = match.end()
        self._piece(raw, raw.text[pos:], keep_empty=pos == 0)

    def _piece(self, raw: _RawLine, text: str, *, keep_empty: bool) -> None:
        text = _clean(text)
        if text or keep_empty:
            self._emit(TraceLine(text, raw.time, raw.stream))

    def _marker(self, match: re.Match[str]) -> None:
        kind, stamp, name, opts = match.groups()
        here = len(self.trace.lines)
        if kind == "start":
            section = Section(name, int(stamp), None, _options(opts), here, here - 1)
            self.open.append(section)
            self.trace.sections.append(section)
            return
        for section in reversed(self.open):
            if section.name == name:
                section.end = int(stamp)
                section.last_line = here - 1
                self.open.remove(section)
                return

    def _emit(self, line: TraceLine) -> None:
        index = len(self.trace.lines)
        self.trace.lines.append(line)
        self._inspect(line, index)

    def _inspect(self, line: TraceLine, index: int) -> None:
        text = line.text
        if self.trace.runner_version is None and (match := _VERSION.match(text)):
            self.trace.runner_version = match.group("version")
            self.trace.runner_revision = match.group("revision")
        if text.startswith(RECORD_TAG + " "):
            self.trace.records.append(_record(text, index, line.time))
        elif text == "Job succeeded":
            self.trace.final, self.trace.failure, self.trace.system_failure = text, None, False
            self.trace.final_line = index
        elif text.startswith(_SYSTEM_FAILED):
            self.trace.final, self.trace.failure = text, text[len(_SYSTEM_FAILED) :]
            self.trace.system_failure, self.trace.final_line = True, index
        elif text.startswith(_FAILED):
            self.trace.final, self.trace.failure = text, text[len(_FAILED) :]
            self.trace.system_failure, self.trace.final_line = False, index

    def finish(self) -> Trace:
        last = len(self.trace.lines) - 1
        for section in self.open:
            section.last_line = last
        return self.trace


def _record(text: str, index: int, time: float | None) -> ProbeRecord:
    parts = text.split()
    where = f"trace line {index + 1}"
    if len(parts) != 3 or not _PROBE_NAME.match(parts[1]):
        raise ProbeProtocolError(
            f"{where}: a {RECORD_TAG} record must be '{RECORD_TAG} <probe> <base64 json>'"
        )
    probe, payload = parts[1], parts[2]
    try:
        decoded = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        data = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise ProbeProtocolError(
            f"{where}: the {RECORD_TAG} record of probe {probe!r} does not decode: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ProbeProtocolError(
            f"{where}: the {RECORD_TAG} record of probe {probe!r} holds {type(data).__name__}, "
            "not a JSON object"
        )
    return ProbeRecord(probe, data, index, time)


@dataclass(frozen=True)
class LimitCut:
    """Where the runner cut a trace at its output_limit: the limit its message states and the byte offset
    of the message (every byte before it is trace the limit let through)."""

    limit: int
    offset: int


def output_limit_cut(raw: str) -> LimitCut | None:
    """The runner's "Job's log exceeded limit" cut in a raw trace, None when the trace was not cut."""
    data = raw.encode("utf-8", "surrogateescape")
    match = _LIMIT_MESSAGE.search(data)
    return None if match is None else LimitCut(int(match.group(1)), match.start())


def version_number(version: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a runner version such as "18.11.4" or "17.0.0~pre.88.g761ae5dd".

    None when VERSION is None or has no number, e.g. a runner built from source ("development version").
    """
    match = _VERSION_NUMBER.match(version or "")
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def parse_trace(raw: bytes | str) -> Trace:
    """Parse a raw trace as the GitLab API returns it (any runner version, with or without FF_TIMESTAMPS)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if text.endswith("\n"):
        text = text[:-1]
    builder = _Builder()
    if text:
        for line in _logical_lines(text):
            builder.add_line(line)
    return builder.finish()
