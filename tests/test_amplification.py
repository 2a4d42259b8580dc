"""Requests that cost a client little and the server much: Range sets, metric labels."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from pypireg.http.metrics import Metrics
from pypireg.http.ranges import MAX_RANGES, tame_range
from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import project_with_tokens, upload

SIZE = 1000


@pytest.mark.parametrize(("header", "tamed"), [
    (b"bytes=0-", b"bytes=0-999"),
    (b"bytes=0-,0-,0-", b"bytes=0-999"),
    (b"bytes=0-99,50-149,150-199", b"bytes=0-199"),
    (b"bytes=500-,0-10", b"bytes=0-10,500-999"),
    (b"bytes=-100,900-", b"bytes=900-999"),
    (b"bytes=0-0,2-2", b"bytes=0-0,2-2"),
    (b"bytes=0-10000", b"bytes=0-999"),
    (b"BYTES = 1-2", b"bytes=1-2"),
])
def test_ranges_are_resolved_sorted_and_merged(header: bytes, tamed: bytes) -> None:
    assert tame_range(header, SIZE) == tamed


@pytest.mark.parametrize("header", [
    b"items=0-1", b"bytes=", b"bytes=a-b", b"bytes=5-1", b"bytes=-", b"bytes=0-1;x",
    b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10) for i in range(MAX_RANGES + 1)),
    b"bytes=" + b",".join([b"0-"] * 200),  # more specs than anyone needs: ignored outright
])
def test_absurd_or_invalid_sets_are_ignored(header: bytes) -> None:
    assert tame_range(header, SIZE) is None


def test_unsatisfiable_sets_stay_for_their_416() -> None:
    assert tame_range(b"bytes=5000-6000", SIZE) == b"bytes=5000-6000"


def _raw_get(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_a_repeated_whole_file_range_sends_the_file_once(registry: Any) -> None:
    project, token, _ = await project_with_tokens(registry, public=True)
    wheel = wheel_bytes("demo", "1.0", payload=os.urandom(300_000))
    code, text, _ = await upload(registry, project.id, token, wheel_filename("demo", "1.0"),
                                 wheel, name="demo")
    assert code == 201, text
    sha = hashlib.sha256(wheel).hexdigest()
    filename = wheel_filename("demo", "1.0")
    path = f"/api/v4/projects/{project.id}/packages/pypi/files/{sha}/{filename}"
    port = registry.port.getHost().port

    answer = await deferToThread(_raw_get, port, path, {"Range": "bytes=" + ",".join(["0-"] * 200)})
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert len(answer) < len(wheel) + 2000

    answer = await deferToThread(_raw_get, port, path, {"Range": "bytes=0-9,5-19,20-29"})
    assert answer.startswith(b"HTTP/1.1 206 "), answer[:200]
    assert b"Content-Range: bytes 0-29/" in answer and answer.endswith(wheel[:30])

    many = ",".join(f"{i * 100}-{i * 100}" for i in range(MAX_RANGES + 5))
    answer = await deferToThread(_raw_get, port, path, {"Range": f"bytes={many}"})
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(wheel)


def test_metric_labels_stay_bounded_whatever_the_methods() -> None:
    metrics = Metrics()
    for i in range(2000):
        metrics.observe_request(b"/-/health", b"X%04d" % i, 405, 0.001, 10)
    metrics.observe_request(b"/-/health", b"GET", 200, 0.001, 3)
    metrics.observe_request(b"/x", b"BREW", 999, 0.001, 3)
    text = metrics.render().decode()
    methods = set(re.findall(r'method="([^"]*)"', text))
    statuses = set(re.findall(r'status="([^"]*)"', text))
    assert methods == {"other", "GET"}
    assert statuses == {"405", "200", "other"}
    assert len(text) < 20_000


@pytest_twisted.ensureDeferred
async def test_random_methods_do_not_grow_the_metrics_page(registry: Any) -> None:
    port = registry.port.getHost().port

    def send(method: str) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"{method} /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      .encode())
            while s.recv(65536):
                pass

    for i in range(50):
        await deferToThread(send, f"M{i:03d}X")
    resp = await treq.get(registry.url + "/-/metrics")
    text = await resp.text()
    assert "M000X" not in text and 'method="other"' in text
