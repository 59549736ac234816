"""The node's exec streams keep a command's first output when it came in the same read as the HTTP headers.

A fake engine on a unix socket answers exec start with the upgrade's headers and the first output frame in one
write, as a real engine's answer reaches a client that was slow to read it (a busy node: `kubectl exec ... cat
/etc/hosts` printed nothing in CI). No Docker needed: the Docker SDK talks to the fake engine.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from pytest_runnerconf.local.runtime import Runtime

OUTPUT = b"# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def answer(conn: socket.socket, *, at_once: bool) -> None:
    """One HTTP request on CONN: exec create answers an Id, exec start the stream (then EOF)."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(65536)
    head, _, body = request.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        body += conn.recv(65536)
    path = head.split(b" ")[1].decode()
    if path.endswith("/exec"):
        reply = json.dumps({"Id": "e1"}).encode()
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply))  # fmt: skip
        return
    headers = (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
               b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")  # fmt: skip
    if at_once:  # the headers and the first output in one segment
        conn.sendall(headers + frame(1, OUTPUT))
    else:
        conn.sendall(headers)
        conn.sendall(frame(1, OUTPUT))
    conn.sendall(frame(2, b"done\n"))
    conn.shutdown(socket.SHUT_WR)


@pytest.fixture(params=[True, False], ids=["headers-and-output-at-once", "output-after-headers"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                answer(conn, at_once=request.param)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}"
    server.close()


def test_the_first_output_is_kept_whatever_read_brought_it(engine: str) -> None:
    client = docker.DockerClient(base_url=engine, version="1.41")
    stream = Runtime(client, "c1").exec("container", ["cat", "/etc/hosts"], stdin=False)
    try:
        chunks = list(stream.output())
    finally:
        stream.close()
    assert chunks == [(1, OUTPUT), (2, b"done\n")]
