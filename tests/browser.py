"""Headless Debian Chromium driven over the DevTools protocol: load a page, read its DOM, see what failed.

websocket-client (already installed with the kubernetes client) carries the protocol. The flags are the ones
that work on a closed network: without the background-networking ones Chromium keeps dialling out.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
)
START_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 30.0


def chromium_path() -> str | None:
    return shutil.which("chromium")


@dataclass
class PageLoad:
    """What one page load showed: failed requests, console errors and uncaught exceptions."""

    failed_loads: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.failed_loads + self.console_errors


class Browser:
    """One Chromium process with a fresh profile and one page; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width, self.height = width, height
        self._profile = Path(tempfile.mkdtemp(prefix="runnerconf-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: websocket.WebSocket | None = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        binary = chromium_path()
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self._proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}",
             "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer and zygote processes go with it, by this group's id
        )  # fmt: skip
        port = self._wait_for_port()
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        # No Origin header: Chromium refuses DevTools websockets from an origin it was not told to allow.
        self._ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=LOAD_TIMEOUT_S, suppress_origin=True
        )
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait(timeout=10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _signal(self, signum: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)

    def _wait_for_port(self) -> int:
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode} before listening")
            if active.is_file():
                first = active.read_text().split("\n", 1)[0].strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {START_TIMEOUT_S:.0f}s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command; events that arrive meanwhile are kept for the page load to read."""
        assert self._ws is not None
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})
            if "method" in message:
                self._events.append(message)

    def _wait_event(self, method: str) -> None:
        assert self._ws is not None
        if any(e["method"] == method for e in self._events):
            return
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if "method" in message:
                self._events.append(message)
                if message["method"] == method:
                    return
        raise RuntimeError(f"no {method} within {LOAD_TIMEOUT_S:.0f}s")

    def load(self, url: str) -> PageLoad:
        self._events.clear()
        self.call("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired")
        # A round trip after the load event: whatever the page logged while loading has arrived by then.
        self.call("Runtime.evaluate", expression="document.readyState")
        seen = PageLoad()
        for event in self._events:
            method, params = event["method"], event.get("params") or {}
            if method == "Network.requestWillBeSent":
                seen.requests.append(str(params.get("request", {}).get("url")))
            elif method == "Network.loadingFailed":
                seen.failed_loads.append(f"{params.get('type')}: {params.get('errorText')}")
            elif (
                method == "Network.responseReceived"
                and int(params.get("response", {}).get("status") or 0) >= 400
            ):
                seen.failed_loads.append(
                    f"{params['response'].get('url')}: HTTP {params['response'].get('status')}"
                )
            elif method == "Runtime.exceptionThrown":
                seen.console_errors.append(str(params.get("exceptionDetails", {}).get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                seen.console_errors.append(json.dumps(params.get("args")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                seen.console_errors.append(str(params["entry"].get("text")))
        return seen

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
