"""A small threaded HTTP/1.1 server on loopback with regex routes, JSON and streamed responses, optional TLS
and connections a handler takes over after its response head (protocol upgrades such as WebSocket)."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import ssl
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
    query_all: dict[str, list[str]] = field(default_factory=dict)  # every value (exec's repeated command=)
    scheme: str = "http"  # https when the server speaks TLS (for URLs the server hands back)

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


class Connection:
    """The raw connection a Takeover handler owns once the response head is sent.

    Reads go to the socket itself: an upgrading client (WebSocket) sends nothing before it has read the 101,
    so the HTTP layer's read buffer holds no bytes of the new protocol.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def readable(self, timeout: float) -> bool:
        """True when recv() will not block; TLS may hold decrypted bytes that select() cannot see."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)

    def recv(self, size: int = 65536) -> bytes:
        """At least one byte, or b"" at the end of the stream."""
        return self.sock.recv(size)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)


@dataclass
class Takeover:
    """A response that hands the connection to `run` after the head (status 101 for an upgrade)."""

    run: Callable[[Connection], None]


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str -> as is; iterator of bytes -> chunked stream; Takeover
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
            query_all = parse_qs(parts.query, keep_blank_values=True)
            request = Request(
                method=self.command,
                path=parts.path,
                params=params,
                query={k: v[0] for k, v in query_all.items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                query_all=query_all,
                scheme="https" if isinstance(self.connection, ssl.SSLSocket) else "http",
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
            if isinstance(body, Takeover):
                self.send_response(response.status)
                for k, v in response.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                # OSError covers a client that went away (reset, broken pipe, TLS alert): nothing to tell it.
                with contextlib.suppress(OSError):
                    body.run(Connection(self.connection))
                return
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


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that can speak TLS; the handshake happens in the request's own thread."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # Not at accept time: a slow or broken client must not hold up the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake (an untrusting client) is not a server error.
        pass


class LoopbackServer:
    """Serve a Router on 127.0.0.1 at an ephemeral port in a daemon thread, over TLS when given a context."""

    def __init__(
        self,
        router: Router,
        not_found: Callable[[str], Response],
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._httpd = _Server(("127.0.0.1", port), _make_handler_class(router, not_found))
        self._httpd.tls = tls
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="httpserve", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        scheme = "https" if self._httpd.tls is not None else "http"
        return f"{scheme}://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
