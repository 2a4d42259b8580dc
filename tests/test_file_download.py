"""Downloads over real TCP: the sendfile body, its fallbacks, and the connection after it."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import twisted.test as twisted_tests
from twisted.internet import protocol, ssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.web import server
from twisted.web.client import ResponseNeverReceived
from twisted.web.test.requesthelper import DummyRequest

from pypireg.http import file_body
from pypireg.http.file_body import BlobBody
from pypireg.storage.blobs import BlobStore
from tests.distributions import wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import Registry, basic, project_with_tokens, start_registry, upload
from tests.support.waiting import until

BIG = 12 * 1024 * 1024  # more than loopback buffers hold, so sendfile meets EAGAIN


@pytest_twisted.async_yield_fixture()
async def big_registry(db: Any, tmp_path: Path) -> Any:
    """The registry fixture, with room for a multi-MiB upload."""
    reg = await start_registry(db, tmp_path, max_size=32 * 1024 * 1024)
    yield reg
    await reg.port.stopListening()


@pytest.fixture
def sendfile_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each os.sendfile call moved, to prove the sendfile path ran."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(file_body.os, "sendfile", counting)
    return calls


@pytest.fixture
def blob_closes(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """[fd, times closed] for every file the sendfile path opened."""
    opened: list[list[int]] = []
    real_open, real_close = os.open, os.close

    def recording_open(path: str, flags: int, *args: Any) -> int:
        fd = real_open(path, flags, *args)
        if sys._getframe(1).f_globals["__name__"] == file_body.__name__:
            opened.append([fd, 0])
        return fd

    def recording_close(fd: int) -> None:
        for entry in reversed(opened):
            if entry[0] == fd:
                entry[1] += 1
                break
        real_close(fd)

    monkeypatch.setattr(file_body.os, "open", recording_open)
    monkeypatch.setattr(file_body.os, "close", recording_close)
    return opened


@pytest.fixture
def logged_errors() -> Iterator[list[Any]]:
    """Errors and failures logged while the test runs."""
    events: list[Any] = []

    def observe(event: Any) -> None:
        if "log_failure" in event or event.get("log_level", LogLevel.info) >= LogLevel.error:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


class _Stored:
    def __init__(self, reg: Registry, project: Any, read: str, wheel: bytes) -> None:
        self.registry = reg
        self.wheel = wheel
        self.sha = hashlib.sha256(wheel).hexdigest()
        self.filename = wheel_filename("big-pkg", "1.0")
        self.path = f"/api/v4/projects/{project.id}/packages/pypi/files/{self.sha}/{self.filename}"
        self.read = read
        self.auth = basic(read)[b"Authorization"][0]
        self.blob = BlobStore(reactor, reg.storage).path_for(self.sha)

    @property
    def url(self) -> str:
        return self.registry.url + self.path

    def request(self, method: str = "GET", path: str | None = None) -> tuple[str, bytes]:
        return method, (f"{method} {path or self.path} HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: {self.auth.decode()}\r\n\r\n").encode()


async def _store_big(reg: Registry) -> _Stored:
    project, write, read = await project_with_tokens(reg)
    # Random bytes do not compress: the wheel is about BIG bytes.
    payload = random.Random(1).randbytes(BIG)
    wheel = wheel_bytes("big-pkg", "1.0", payload=payload)
    code, text, _ = await upload(reg, project.id, write, wheel_filename("big-pkg", "1.0"),
                                 wheel, name="big-pkg")
    assert code == 201, text
    return _Stored(reg, project, read, wheel)


Response = tuple[bytes, dict[bytes, bytes], bytes]  # status line, headers, body


class _RawClient(protocol.Protocol):
    """Sends raw requests and splits the responses as they arrive."""

    def __init__(self) -> None:
        self.received = 0
        self.stray = 0
        self.lost: Deferred[None] = Deferred()
        self._methods: list[str] = []
        self._responses: list[Response] = []
        self._pending = bytearray()
        self._current: tuple[bytes, dict[bytes, bytes], list[bytes], int] | None = None
        self._answered: Deferred[list[Response]] | None = None
        self._on_bytes: tuple[int, Deferred[None]] | None = None

    def send(self, *requests: tuple[str, bytes]) -> Deferred[list[Response]]:
        """Write the requests at once (pipelined); fires with their responses."""
        assert self.transport is not None and self._answered is None
        self._methods = [method for method, _ in requests]
        self._answered = Deferred()
        self.transport.write(b"".join(raw for _, raw in requests))
        return self._answered.addTimeout(20, reactor)

    def until_received(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._on_bytes = (count, d)
        return d.addTimeout(20, reactor)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._pending += data
        while self._methods:
            if self._current is None:
                end = self._pending.find(b"\r\n\r\n")
                if end < 0:
                    break
                status, *lines = bytes(self._pending[:end]).split(b"\r\n")
                del self._pending[:end + 4]
                headers = {k.lower(): v for k, _, v in (ln.partition(b": ") for ln in lines)}
                length = int(headers.get(b"content-length", b"0"))
                if self._methods[0] == "HEAD" or status.split()[1] in (b"204", b"304"):
                    length = 0
                self._current = (status, headers, [], length)
            status, headers, chunks, left = self._current
            chunks.append(bytes(self._pending[:left]))
            del self._pending[:left]
            left -= len(chunks[-1])
            if left:
                self._current = (status, headers, chunks, left)
                break
            self._responses.append((status, headers, b"".join(chunks)))
            self._methods.pop(0)
            self._current = None
        if not self._methods:
            self.stray += len(self._pending)  # a response nobody asked for, or a longer body
            self._pending.clear()
        self._check()

    def _check(self) -> None:
        if self._answered is not None and not self._methods:
            answered, self._answered = self._answered, None
            done, self._responses = self._responses, []
            answered.callback(done)
        if self._on_bytes is not None and self.received >= self._on_bytes[0]:
            d, self._on_bytes = self._on_bytes[1], None
            d.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        if self._answered is not None:
            self._answered.errback(reason)
        self.lost.callback(None)


async def _connect(reg: Registry | Any, rcvbuf: int | None = None) -> _RawClient:
    """A raw client connected to a Registry or a listening port."""
    port = (reg.port if isinstance(reg, Registry) else reg).getHost().port
    if rcvbuf is None:
        return await protocol.ClientCreator(reactor, _RawClient).connectTCP(  # type: ignore[no-any-return]
            "127.0.0.1", port)
    # A small receive buffer, set before the handshake, keeps the server's
    # sendfile blocked until the client reads. A blocking connect returns
    # at once on loopback: the kernel completes it before any accept().
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    client = _RawClient()
    factory = protocol.Factory.forProtocol(lambda: client)
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
    sock.close()  # the reactor has its own duplicate
    return client


def _open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


async def _until_closed(path: Path) -> None:
    await until(lambda: _open_fds_to(path) == 0, what=lambda: f"{path} is still open")


@pytest_twisted.ensureDeferred
async def test_body_is_sent_by_sendfile_intact(big_registry: Any, sendfile_bytes: list[int],
                                               logged_errors: list[Any]) -> None:
    stored = await _store_big(big_registry)
    # A raw client: treq's content decoding drops Content-Length.
    client = await _connect(big_registry)
    [(status, headers, body)] = await client.send(stored.request())
    assert status == b"HTTP/1.1 200 OK"
    assert hashlib.sha256(body).hexdigest() == stored.sha
    assert headers[b"content-length"] == str(len(stored.wheel)).encode()
    assert headers[b"content-type"] == b"application/octet-stream"
    assert headers[b"accept-ranges"] == b"bytes"
    assert headers[b"etag"] == f'"{stored.sha}"'.encode()
    assert headers[b"last-modified"].endswith(b" GMT")
    assert headers[b"content-disposition"] == (
        f'attachment; filename="{stored.filename}"'.encode())
    assert headers[b"cache-control"] == b"private, max-age=31536000, immutable"
    assert b"content-encoding" not in headers
    assert client.stray == 0
    assert sum(sendfile_bytes) == len(stored.wheel)
    assert len(sendfile_bytes) > 1  # it waited for the socket at least once
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.lost
    await _until_closed(stored.blob)

    # The same through an HTTP client library.
    resp = await treq.get(stored.url, headers=basic(stored.read))
    assert resp.code == 200
    assert hashlib.sha256(await resp.content()).hexdigest() == stored.sha
    await _until_closed(stored.blob)
    assert logged_errors == []


@pytest_twisted.ensureDeferred
async def test_head_range_and_conditional(big_registry: Any, sendfile_bytes: list[int]) -> None:
    stored = await _store_big(big_registry)
    auth = basic(stored.read)
    resp = await treq.head(stored.url, headers=auth)
    assert resp.code == 200
    assert resp.headers.getRawHeaders(b"content-length") == [str(len(stored.wheel)).encode()]
    assert await resp.content() == b""

    resp = await treq.get(stored.url, headers={**auth, b"Range": [b"bytes=1000-1999"]})
    assert resp.code == 206
    assert resp.headers.getRawHeaders(b"content-range") == [
        f"bytes 1000-1999/{len(stored.wheel)}".encode()]
    assert await resp.content() == stored.wheel[1000:2000]

    resp = await treq.get(stored.url, headers={**auth, b"Range": [b"bytes=-10"]})
    assert resp.code == 206
    assert await resp.content() == stored.wheel[-10:]

    resp = await treq.get(stored.url, headers={**auth, b"If-None-Match": [f'"{stored.sha}"']})
    assert resp.code == 304
    assert await resp.content() == b""

    first = await treq.get(stored.url, headers=auth)
    await first.content()
    modified = first.headers.getRawHeaders(b"last-modified")[0]
    resp = await treq.get(stored.url, headers={**auth, b"If-Modified-Since": [modified]})
    assert resp.code == 304
    assert await resp.content() == b""
    # HEAD, Range and 304 moved no byte by sendfile; the one full GET did.
    assert sum(sendfile_bytes) == len(stored.wheel)
    await _until_closed(stored.blob)


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_on_one_connection(big_registry: Any, sendfile_bytes: list[int],
                                                    blob_closes: list[list[int]]) -> None:
    stored = await _store_big(big_registry)
    metadata_path = stored.path + ".metadata"
    client = await _connect(big_registry)
    responses = await client.send(stored.request("GET"), stored.request("HEAD"),
                                  stored.request("GET", metadata_path), stored.request("GET"))
    assert [r[0] for r in responses] == [b"HTTP/1.1 200 OK"] * 4
    assert hashlib.sha256(responses[0][2]).hexdigest() == stored.sha
    assert responses[1][1][b"content-length"] == str(len(stored.wheel)).encode()
    assert responses[2][1][b"content-type"] == b"text/plain; charset=utf-8"
    assert b"Name: big-pkg" in responses[2][2]
    assert hashlib.sha256(responses[3][2]).hexdigest() == stored.sha

    # Keep-alive: one more request after the pipeline has drained.
    [(status, _, body)] = await client.send(stored.request())
    assert status == b"HTTP/1.1 200 OK" and hashlib.sha256(body).hexdigest() == stored.sha
    assert sum(sendfile_bytes) == 3 * len(stored.wheel) + len(responses[2][2])
    assert client.stray == 0
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.lost
    await _until_closed(stored.blob)
    assert [closes for _, closes in blob_closes] == [1] * 5  # GET, HEAD, GET, GET, GET


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_body(big_registry: Any, sendfile_bytes: list[int],
                                       blob_closes: list[list[int]],
                                       logged_errors: list[Any]) -> None:
    stored = await _store_big(big_registry)
    client = await _connect(big_registry, rcvbuf=16 * 1024)
    answer = client.send(stored.request())
    await client.until_received(64 * 1024)
    client.transport.pauseProducing()  # type: ignore[union-attr]
    # Let the server fill the socket and wait for writability.
    await deferLater(reactor, 0.05, lambda: None)
    assert _open_fds_to(stored.blob) == 1, "the body was already complete"
    assert sum(sendfile_bytes) < len(stored.wheel)
    client.transport.abortConnection()  # type: ignore[union-attr]
    with pytest.raises(ConnectionAborted):
        await answer
    await client.lost
    await _until_closed(stored.blob)

    # The daemon is healthy: the same file, whole, on a new connection.
    resp = await treq.get(stored.url, headers=basic(stored.read))
    assert hashlib.sha256(await resp.content()).hexdigest() == stored.sha
    await _until_closed(stored.blob)
    assert [closes for _, closes in blob_closes] == [1, 1]
    assert logged_errors == []


def _site_for(path: Path) -> Any:
    return server.Site(BlobBody(str(path), b"application/octet-stream"))


@pytest_twisted.ensureDeferred
async def test_empty_file_over_tcp(tmp_path: Path, sendfile_bytes: list[int]) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    port = reactor.listenTCP(0, _site_for(empty), interface="127.0.0.1")
    try:
        client = await _connect(port)
        get = ("GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = ("HEAD", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = await client.send(get, head, get)
        assert [r[0] for r in responses] == [b"HTTP/1.1 200 OK"] * 3
        assert [r[1][b"content-length"] for r in responses] == [b"0"] * 3
        assert [r[2] for r in responses] == [b""] * 3
        assert client.stray == 0
        assert sendfile_bytes == []
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.lost
        await _until_closed(empty)
    finally:
        await port.stopListening()


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_tls_takes_the_static_path(tmp_path: Path, sendfile_bytes: list[int]) -> None:
    """Over TLS the bytes must go through the TLS layer, never sendfile."""
    blob = tmp_path / "blob"
    data = random.Random(2).randbytes(2 * 1024 * 1024)
    blob.write_bytes(data)
    pem = FilePath(twisted_tests.__file__).sibling("server.pem").getContent()
    server_tls = ssl.PrivateCertificate.loadPEM(pem).options()
    port = reactor.listenSSL(0, _site_for(blob), server_tls, interface="127.0.0.1")
    try:
        client = await protocol.ClientCreator(reactor, _RawClient).connectSSL(
            "127.0.0.1", port.getHost().port, ssl.CertificateOptions(verify=False))
        get = ("GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, _, body)] = await client.send(get)
        assert status == b"HTTP/1.1 200 OK" and body == data
        assert sendfile_bytes == []
        client.transport.loseConnection()
        await client.lost
        await _until_closed(blob)
    finally:
        await port.stopListening()


def test_fallback_without_a_socket(tmp_path: Path) -> None:
    """A transport that is no TCP connection gets the static.File producer."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"0123456789")
    request = DummyRequest([b""])
    result = BlobBody(str(blob), b"text/plain; charset=utf-8").render(request)
    assert result == server.NOT_DONE_YET
    assert b"".join(request.written) == b"0123456789"
    assert request.finished
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; charset=utf-8"]


@pytest_twisted.ensureDeferred
async def test_the_download_dispatch_matches_klein(registry: Any) -> None:
    """The dispatcher in front of Klein answers as the Klein route would."""
    project, write, read = await project_with_tokens(registry, "team/sub")
    filename = wheel_filename("demo-pkg", "1.0+local")
    wheel = wheel_bytes("demo-pkg", "1.0+local")
    code, text, _ = await upload(registry, project.id, write, filename, wheel,
                                 version="1.0+local")
    assert code == 201, text
    sha = hashlib.sha256(wheel).hexdigest()
    encoded_name = filename.replace("+", "%2B")
    for ref in (str(project.id), "team%2Fsub"):
        url = f"{registry.api(ref)}/files/{sha}/{encoded_name}"
        resp = await treq.get(url, headers=basic(read))
        assert resp.code == 200 and await resp.content() == wheel
        resp = await treq.head(url, headers=basic(read))
        assert resp.code == 200 and await resp.content() == b""
        assert resp.headers.getRawHeaders(b"content-length") == [str(len(wheel)).encode()]
        resp = await treq.get(url + ".metadata", headers=basic(read))
        assert resp.code == 200 and b"Name: demo-pkg" in await resp.content()
    base = f"{registry.api(project.id)}/files/{sha}"
    cases = [
        ("GET", f"{base}/{filename}", {}, 401, "token"),
        ("GET", f"{base}/other-1.0-py3-none-any.whl", basic(read), 404, "No such file"),
        ("GET", f"{registry.api(project.id)}/files/nothex/{filename}", basic(read), 404,
         "No such file"),
        ("GET", f"{base}/%FF.whl", basic(read), 400, ""),
        ("POST", f"{base}/{filename}", basic(write), 405, "Method not allowed"),
        ("DELETE", f"{base}/{filename}", basic(write), 405, "Method not allowed"),
    ]
    for method, url, headers, code, says in cases:
        resp = await treq.request(method, url, headers=headers)
        assert (resp.code, says in (await resp.content()).decode()) == (code, True), (method, url)


@pytest_twisted.ensureDeferred
async def test_a_body_that_fails_to_start_is_logged_not_lost(
        big_registry: Any, logged_errors: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    stored = await _store_big(big_registry)

    def broken(self: BlobBody, request: Any) -> bytes:
        raise RuntimeError("the body could not start")

    monkeypatch.setattr(BlobBody, "render", broken)
    with pytest.raises(ResponseNeverReceived):  # the connection closes without an answer
        await treq.get(stored.url, headers=basic(stored.read))
    # One entry per attempt (the client retries a GET once).
    assert logged_errors and all(e.get("log_format") == "could not answer {method} {uri}"
                                 and isinstance(e["log_failure"].value, RuntimeError)
                                 for e in logged_errors)
