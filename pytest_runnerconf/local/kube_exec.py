"""`pods/exec` over WebSocket, the remote-command protocol kubectl 1.32 and the Python client speak.

Subprotocols `v5.channel.k8s.io` (kubectl offers only this one) and `v4.channel.k8s.io` (older Python
clients). Every message is a binary frame whose first byte is the channel: 0 stdin, 1 stdout, 2 stderr,
3 the final Status, 4 terminal resize, 255 CLOSE (v5: `[255, channel]` half-closes that stream). After the
command ends the server sends one Status on channel 3 and closes with 1000, which is when kubectl returns
(client-go `tools/remotecommand`, kubectl-fidelity.md §7). Frames go through wsproto; one thread moves
bytes both ways with select(), so no two threads ever use the (TLS) socket at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import select
from typing import Any, Protocol

from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from pytest_runnerconf.local.httpserve import Connection

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ExecSession(Protocol):
    """A command running in a container, as the node's runtime hands it over."""

    def fileno(self) -> int: ...

    def pending(self) -> bool:
        """Output is waiting that select() on fileno() cannot see (read past the exec's HTTP headers)."""

    def read(self) -> list[tuple[int, bytes]] | None:
        """Output now readable as (STDOUT|STDERR, bytes); None once the command's output has ended."""

    def write_stdin(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None: ...

    def exit_code(self) -> int | None: ...

    def close(self) -> None: ...


def choose_protocol(offered: str | None) -> str | None:
    names = [p.strip() for p in (offered or "").split(",") if p.strip()]
    return next((p for p in PROTOCOLS if p in names), None)


def accept_token(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def handshake_headers(key: str, protocol: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": accept_token(key),
        "Sec-WebSocket-Protocol": protocol,
    }


def exit_status(code: int | None, command: list[str]) -> dict[str, Any]:
    """The kubelet's channel-3 Status; the ExitCode cause comes first (the Python client reads causes[0])."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if code is None:
        return {
            "metadata": {},
            "status": "Failure",
            "message": "error executing command: the command's exit code could not be read",
            "reason": "InternalError",
        }
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {_go_list(command)}, "
        f"exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _go_list(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"


class _Channels:
    """Server end of one WebSocket: frames in, channel messages out."""

    def __init__(self, conn: Connection, protocol: str) -> None:
        self.conn = conn
        self.v5 = protocol.startswith("v5.")
        self.ws = WSConnection(ConnectionType.SERVER)
        self._partial = b""
        self.closed = False

    def send(self, channel: int, data: bytes) -> None:
        self.conn.sendall(self.ws.send(BytesMessage(data=bytes([channel]) + data)))

    def receive(self) -> list[tuple[int, bytes]]:
        """Complete channel messages from what the socket has now; marks `closed` on close or EOF."""
        data = self.conn.recv()
        self.ws.receive_data(data or None)
        messages = []
        for event in self.ws.events():
            if isinstance(event, Ping):
                self.conn.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = True
                if self.ws.state.name not in ("CLOSED", "LOCAL_CLOSING"):
                    self.conn.sendall(self.ws.send(event.response()))
            elif isinstance(event, BytesMessage | TextMessage):
                payload = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                self._partial += payload
                if event.message_finished:
                    if self._partial:
                        messages.append((self._partial[0], self._partial[1:]))
                    self._partial = b""
        if not data:
            self.closed = True
        return messages

    def finish(self) -> None:
        if not self.closed:
            self.conn.sendall(self.ws.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE)))


def serve(conn: Connection, protocol: str, session: ExecSession, command: list[str]) -> None:
    """Move stdin in and stdout/stderr out until the command ends; then its Status and a normal close."""
    channels = _Channels(conn, protocol)
    try:
        while not channels.closed:
            client_ready = conn.readable(0)
            ready: list[Any] = [conn.sock]
            if session.pending():
                ready = [session.fileno()]
            elif not client_ready:
                waitables: list[Any] = [conn.sock, session.fileno()]
                ready, _, _ = select.select(waitables, [], [], 5.0)
            if client_ready or conn.sock in ready:
                for channel, data in channels.receive():
                    _client_message(channels, session, channel, data)
            if session.fileno() in ready:
                chunks = session.read()
                if chunks is None:
                    break
                for channel, data in chunks:
                    if data:
                        channels.send(channel, data)
        if not channels.closed:
            channels.send(ERROR, json.dumps(exit_status(session.exit_code(), command)).encode())
            channels.finish()
    finally:
        session.close()


def _client_message(channels: _Channels, session: ExecSession, channel: int, data: bytes) -> None:
    if channel == STDIN:
        session.write_stdin(data)
    elif channel == RESIZE:
        try:
            size = json.loads(data or b"{}")
            session.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
        except (ValueError, TypeError):
            pass
    elif channel == CLOSE and channels.v5 and data[:1] == bytes([STDIN]):
        session.close_stdin()
