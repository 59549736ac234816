"""A small threaded HTTP/1.1 server on loopback with regex routes, JSON and streamed responses."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]  # named groups of the route pattern, URL-decoded
    query: dict[str, str]  # first value of each query parameter
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body)

    def form(self) -> dict[str, Any]:
        """JSON body, or a urlencoded form (python-gitlab sends both kinds)."""
        ctype = self.headers.get("content-type", "")
        if "json" in ctype:
            return self.json() or {}
        if self.body:
            return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
        return {}


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str -> as is; iterator of bytes -> chunked stream
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """Return (handler, params, path_matched_other_method)."""
        other = False
        for m, rx, handler in self._routes:
            match = rx.match(path)
            if match:
                if m == method:
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}, False
                other = True
        return None, {}, other


def _make_handler_class(router: Router, not_found: Callable[[str], Response]) -> type:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests may carry tokens in query strings; never log them

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            handler, params, other = router.resolve(self.command, parts.path)
            request = Request(
                method=self.command,
                path=parts.path,
                params=params,
                query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            if handler is None:
                allowed = Response(405, {"message": "405 Method Not Allowed"})
                response = allowed if other else not_found(parts.path)
            else:
                try:
                    response = handler(request)
                except Exception as exc:  # a server bug must answer 500, not hang the client
                    response = Response(500, {"message": f"500 Internal Server Error: {exc}"})
            self._send(response)

        def _send(self, response: Response) -> None:
            body = response.body
            if isinstance(body, Iterator):
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                for k, v in response.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for chunk in body:
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    close = getattr(body, "close", None)
                    if close:
                        close()
                return
            if body is None:
                data = b""
            elif isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in response.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    return _Handler


class LoopbackServer:
    """Serve a Router on 127.0.0.1 at an ephemeral port in a daemon thread."""

    def __init__(self, router: Router, not_found: Callable[[str], Response], port: int = 0) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler_class(router, not_found))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="httpserve", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
