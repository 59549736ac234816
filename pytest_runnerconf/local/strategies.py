"""How the emulated runner executes a stage in a pod: the attach strategy (default) or the legacy exec one.

Attach (runner v18.11 `runWithAttach`, runner-facts §2): each stage's script is written into the scripts
volume by an exec of the container's shell, then one line is attached to the container's main process
(the shell-detect command, reading its stdin): the build gets
`sh -c '(<scripts>/detect_shell_script <scripts>/<stage> 2>&1 | tee -a <logs>/output.log) &'`, the helper
`gitlab-runner-build <<< <scripts>/<stage> 2>&1 | tee -a <logs>/output.log`. The output reaches the trace
only through the logs volume: `gitlab-runner-helper read-logs` follows output.log in the helper container,
and the stage's exit code is the JSON status line its script's EXIT trap writes there.

Legacy (`FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY=true`): each stage is an exec of the shell with the
script on stdin; output and exit code come back on the exec stream.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_runnerconf.local.podspec import BASH_DETECT_SHELL_SCRIPT, BASH_DETECT_WITH_ARGS
from pytest_runnerconf.local.tracewriter import SCRIPT_STREAM, TraceWriter

DETECT_SHELL_SCRIPT = "detect_shell_script"
DOCKER_COMMAND = ["sh", "-c", BASH_DETECT_SHELL_SCRIPT]  # BashShell.GetConfiguration DockerCommand
HELPER_COMMAND = ["gitlab-runner-build"]  # helperImageInfo.Cmd on Linux
WAIT_LOG_FILE_TIMEOUT = "1m0s"
# The runner's log-processor reconnect back-off (backoff.Backoff{Min: 1s, Max: 30s}).
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0
PREDEFINED = {"prepare_script", "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
              "archive_cache", "archive_cache_on_failure", "upload_artifacts_on_success",
              "upload_artifacts_on_failure", "cleanup_file_variables"}  # fmt: skip


# The silent-stream-cut fault: a proxy in front of the API server ends exec/attach streams idle this long, and
# the runner takes the cut stream for the end of a successful step. Long enough that no other probe's step
# (the cpu probe's silent 4 s, the cancel probe's wait for its cancel) is cut; expect.silent_step_s is longer.
SILENT_CUT_S = 15.0


def user_stage(stage: str) -> bool:
    """The stages that run the job's own script (step_script, step_<name>, build_script)."""
    return stage.startswith("step_") or stage == "build_script"


class StrategyError(Exception):
    """The stage could not be run at all (exec/attach failed): the runner's system-failure path."""


class Node(Protocol):
    """The pod's containers as the runner reaches them: pods/exec and pods/attach."""

    def run_in(
        self, namespace: str, pod: str, container: str, command: list[str], input: bytes | None = None
    ) -> tuple[bytes, int | None]: ...

    def attach(self, namespace: str, pod: str, container: str, data: bytes) -> None: ...

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> Any: ...


@dataclass(frozen=True)
class PodPaths:
    namespace: str
    pod: str
    scripts_dir: str
    logs_dir: str

    @property
    def log_file(self) -> str:
        return f"{self.logs_dir}/output.log"

    def script(self, stage: str) -> str:
        return f"{self.scripts_dir}/{stage}"


# ---------------------------------------------------------------- stage scripts


def stage_script(body: str, *, report_status: bool) -> str:
    """A stage's script as the bash shell writes it: TERM ends it cleanly, errexit/pipefail, the body
    evaluated in a subshell with stdin closed; with `report_status` (attach) it prints the JSON status lines
    the log processor reads: {"script": ...} first, {"command_exit_code": N, "script": ...} on EXIT."""
    parts = ["#!/usr/bin/env bash", "", "trap 'exit 1' TERM", ""]
    if report_status:
        parts += [
            'printf \'{"script": "%s"}\\n\' "$0"',
            "runner_script_trap() {",
            "\tstatus=$?",
            "\techo",
            '\tprintf \'{"command_exit_code": %d, "script": "%s"}\\n\' "$status" "$0"',
            "\texit 0",
            "}",
            "trap runner_script_trap EXIT",
            "",
        ]
    parts += [
        "if set -o | grep pipefail > /dev/null; then set -o pipefail; fi; set -o errexit",
        "set +o noclobber",
        f"(trap 'exit 1' TERM; eval {shlex.quote(body)}) < /dev/null",
        "exit 0",
        "",
    ]
    return "\n".join(parts)


def save_script(path: str, content: str) -> str:
    """GenerateSaveScript: what the exec into the target container runs to write a script into the volume."""
    return f"touch {path}\nchmod 777 {path}\nprintf '%s' {shlex.quote(content)} > {path}\n"


def parse_status(text: str) -> dict[str, Any] | None:
    """StageCommandStatus.TryUnmarshal: a JSON object with command_exit_code and/or script, else None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not ({"command_exit_code", "script"} & data.keys()):
        return None
    return data


# ---------------------------------------------------------------- strategies


Checker = Callable[[], None]  # raises when the job must stop (cancel, timeout, a dead build container)


class Strategy(Protocol):
    def start(self) -> None: ...

    def run(self, stage: str, body: str, check: Checker) -> int: ...

    def cancel(self, stage: str) -> None: ...

    def close(self) -> None: ...


def container_for(stage: str) -> str:
    """getContainerInfo: predefined stages run in the helper, user scripts in the build container."""
    return "helper" if stage in PREDEFINED else "build"


class AttachStrategy:
    def __init__(self, node: Node, paths: PodPaths, trace: TraceWriter, *, cut_silent: bool = False) -> None:
        self.node = node
        self.paths = paths
        self.trace = trace
        self.cut_silent = cut_silent
        self._last_output = time.monotonic()
        self._statuses: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._stream: Any = None
        self._offset = 0
        self._thread = threading.Thread(target=self._process_logs, daemon=True, name=f"logs-{paths.pod}")

    def start(self) -> None:
        """setupTrappingScripts, then the log processor (processLogs) for the rest of the job."""
        try:
            self._save("build", DETECT_SHELL_SCRIPT, BASH_DETECT_WITH_ARGS)
        except StrategyError as exc:
            raise StrategyError(f"setting up trapping scripts on emptyDir: {exc}") from None
        self._thread.start()

    def _save(self, container: str, name: str, content: str) -> None:
        path = self.paths.script(name)
        try:
            output, code = self.node.run_in(
                self.paths.namespace,
                self.paths.pod,
                container,
                DOCKER_COMMAND,
                input=save_script(path, content).encode(),
            )
        except Exception as exc:
            raise StrategyError(str(exc)) from None
        if code != 0:
            self.trace.output(output)
            self.trace.flush()
            raise StrategyError(f"command terminated with exit code {code}")

    def command_line(self, stage: str) -> str:
        redirect = f"2>&1 | tee -a {self.paths.log_file}"
        script = self.paths.script(stage)
        if container_for(stage) == "helper":
            return " ".join([*HELPER_COMMAND, "<<<", script, redirect])
        return " ".join(["sh", "-c", f"'({self.paths.script(DETECT_SHELL_SCRIPT)} {script} {redirect}) &'"])

    def run(self, stage: str, body: str, check: Checker) -> int:
        container = container_for(stage)
        self._save(container, stage, stage_script(body, report_status=True))
        try:
            self.node.attach(
                self.paths.namespace, self.paths.pod, container, (self.command_line(stage) + "\n").encode()
            )
        except Exception as exc:
            raise StrategyError(f"{exc}") from None
        script = self.paths.script(stage)
        started = time.monotonic()
        while True:
            check()
            try:
                status = self._statuses.get(timeout=0.2)
            except queue.Empty:
                if self._cut(stage, started):
                    return 0
                continue
            if status.get("script") == script and "command_exit_code" in status:
                return int(status["command_exit_code"])

    def _cut(self, stage: str, started: float) -> bool:
        quiet_since = max(started, self._last_output)
        return self.cut_silent and user_stage(stage) and time.monotonic() - quiet_since > SILENT_CUT_S

    def cancel(self, stage: str) -> None:
        """The stage cancellation script: TERM the processes running the stage's script."""
        name = self.paths.script(stage)
        kill = (
            "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null) || continue; "
            f'case "$c" in *{name}*) kill -TERM ${{p#/proc/}} 2>/dev/null;; esac; done; exit 0'
        )
        with contextlib.suppress(Exception):  # the container is gone already: nothing left to stop
            self.node.run_in(self.paths.namespace, self.paths.pod, container_for(stage), ["sh", "-c", kill])

    def _process_logs(self) -> None:
        """gitlab-runner-helper read-logs in the helper, reattached with back-off whenever its stream ends."""
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            command = [
                "gitlab-runner-helper", "read-logs", "--path", self.paths.log_file,
                "--offset", str(self._offset), "--wait-file-timeout", WAIT_LOG_FILE_TIMEOUT,
            ]  # fmt: skip
            try:
                self._stream = self.node.exec(
                    self.paths.namespace, self.paths.pod, "helper", command, stdin=False, tty=False
                )
                for _, chunk in self._stream.output():
                    self._lines(chunk)
                    backoff = BACKOFF_MIN_S
            except Exception:
                pass  # the helper is gone or the stream broke: reattach, as the runner does
            finally:
                if self._stream is not None:
                    self._stream.close()
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    _pending = b""

    def _lines(self, chunk: bytes) -> None:
        self._last_output = time.monotonic()
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for raw in lines:
            offset, sep, text = raw.partition(b" ")
            if sep and offset.isdigit():
                self._offset = int(offset)
            else:
                text = raw  # a line without an offset (read-logs' own error message) goes to the trace as is
            decoded = text.decode("utf-8", "replace")
            status = parse_status(decoded)
            if status is not None:
                self._statuses.put(status)
            else:
                self.trace.output((decoded + "\n").encode(), stream=SCRIPT_STREAM)

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()


class ExecStrategy:
    """The legacy strategy: a pods/exec per stage, the script on the shell's stdin."""

    def __init__(self, node: Node, paths: PodPaths, trace: TraceWriter, *, cut_silent: bool = False) -> None:
        self.node = node
        self.paths = paths
        self.trace = trace
        self.cut_silent = cut_silent

    def start(self) -> None:
        return None

    def run(self, stage: str, body: str, check: Checker) -> int:
        container = container_for(stage)
        command = HELPER_COMMAND if container == "helper" else DOCKER_COMMAND
        try:
            stream = self.node.exec(
                self.paths.namespace, self.paths.pod, container, command, stdin=True, tty=False
            )
        except Exception as exc:
            raise StrategyError(f"{exc}") from None
        done = threading.Event()
        last_output = [time.monotonic()]

        def pump() -> None:
            try:
                for _, chunk in stream.output():
                    last_output[0] = time.monotonic()
                    self.trace.output(chunk)
            except Exception:
                pass
            finally:
                self.trace.flush()
                done.set()

        try:
            stream.write_stdin(stage_script(body, report_status=False).encode())
            stream.close_stdin()
            threading.Thread(target=pump, daemon=True, name=f"exec-{self.paths.pod}-{stage}").start()
            while not done.wait(0.2):
                check()
                if self.cut_silent and user_stage(stage) and time.monotonic() - last_output[0] > SILENT_CUT_S:
                    return 0  # the stream was cut; the runner sees no exit code and no error
            code = stream.exit_code()
        finally:
            stream.close()
        return 137 if code is None else int(code)

    def cancel(self, stage: str) -> None:
        return None  # closing the exec stream ends the shell the stage runs in

    def close(self) -> None:
        return None


def make_strategy(
    legacy: bool, node: Node, paths: PodPaths, trace: TraceWriter, *, cut_silent: bool = False
) -> Strategy:
    """CUT_SILENT: the silent-stream-cut fault."""
    kind = ExecStrategy if legacy else AttachStrategy
    return kind(node, paths, trace, cut_silent=cut_silent)


def wait_until(predicate: Callable[[], bool], timeout_s: float, check: Checker, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        check()
        time.sleep(step_s)
    return predicate()
