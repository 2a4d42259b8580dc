"""Hostile HTTP over real TCP: huge headers, many slow clients."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest_twisted
import treq
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.support import reactor
from tests.support.http import basic, project_with_tokens


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_oversized_headers_are_refused(registry: Any) -> None:
    port = registry.port.getHost().port
    huge = b"GET /-/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    answer = await deferToThread(_raw, port, huge)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    many = b"GET /-/health HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(1000)) + b"\r\n"
    answer = await deferToThread(_raw, port, many)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    # And the server is fine afterwards.
    resp = await treq.get(registry.url + "/-/health")
    assert resp.code == 200


@pytest_twisted.ensureDeferred
async def test_slow_clients_do_not_delay_others(registry: Any) -> None:
    project, _, read = await project_with_tokens(registry, public=True)
    port = registry.port.getHost().port

    def open_slow() -> list[socket.socket]:
        sockets = []
        for _ in range(200):  # each sends half a request line, then nothing
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /api/v4/proj")
            sockets.append(s)
        return sockets

    # Connect from a thread: the server's reactor must keep accepting.
    slow = await deferToThread(open_slow)
    try:
        await deferLater(reactor, 0.1, lambda: None)
        started = time.monotonic()
        for _ in range(20):
            resp = await treq.get(registry.api(project.id) + "/simple/", headers=basic(read))
            assert resp.code == 200
            await resp.content()
        assert time.monotonic() - started < 5.0
    finally:
        for s in slow:
            s.close()
