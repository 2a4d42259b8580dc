"""No refused, failed or abandoned upload leaves a temp file in `storage/tmp`.

Route tier: the in-process registry over real TCP, so that a closed
connection is one the reactor really saw. One case per way an upload can
end without a 201, in the order an upload meets them: refused with the
headers alone, refused or failed while its body streams to disk, or failed
once the body is whole (the rules, the database, the disk). Each checks the
answer, that nothing is left in `tmp/` once in-flight removals settle, and
whether a temp file was opened at all: a case meant to fail after bytes
reached the disk that never opened one would pass without testing
anything.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pypireg.domain.errors import ServiceUnavailable
from pypireg.http.pypi.upload import UploadRoutes
from pypireg.storage import blobs as blob_module
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.blobs import TempBlob
from tests.distributions import metadata_text, upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import basic, project_with_tokens, start_registry, upload
from tests.support.raw import head
from tests.support.waiting import until

WHEEL = wheel_filename("demo-pkg", "1.0")
BOUNDARY_END = b"--pypiregboundary--\r\n"


class _Connection(Protocol):
    """A raw client connection: what it sent back, and when it closed."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    @property
    def status(self) -> int | None:
        line = self.received.split(b"\r\n", 1)[0]
        return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None


@dataclass
class Upload:
    """One case's registry, its project and tokens, and the temp files opened."""

    registry: Any
    project: Any
    write: str
    read: str
    opened: list[TempBlob]
    monkeypatch: pytest.MonkeyPatch

    async def post(self, content: bytes = b"", **kw: Any) -> tuple[int | None, str]:
        """The usual upload through treq; *content* defaults to a valid wheel."""
        token = kw.pop("token", self.write)
        code, text, _ = await upload(self.registry, kw.pop("project", self.project.id), token,
                                     kw.pop("filename", WHEEL),
                                     content or wheel_bytes("demo-pkg", "1.0"), **kw)
        return code, text

    async def connect(self) -> _Connection:
        connection = _Connection()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.registry.port.getHost().port)
        await connectProtocol(endpoint, connection)
        return connection

    async def half_sent(self, chunked: bool = False) -> tuple[_Connection, bytes]:
        """A connection that sent the headers and half of a large body, now on disk."""
        ctype, body = big_form()
        connection = await self.connect()
        connection.send(head(self.project.id, self.write, ctype, None if chunked else len(body)))
        half = body[: len(body) // 2]
        connection.send(b"%x\r\n%s\r\n" % (len(half), half) if chunked else half)
        await until(lambda: self.opened and self.registry.temp_files())
        return connection, body

    async def answer(self, connection: _Connection) -> tuple[int | None, str]:
        """The answer on *connection*, once it is whole or the connection closed."""
        await until(lambda: b"\r\n\r\n" in connection.received or connection.closed.called)
        if not connection.closed.called:
            # A refusal lingers, reading what the client still sends: a client
            # that has its answer hangs up.
            await until(lambda: connection.received.endswith(b"\n"))
            assert connection.transport is not None
            connection.transport.abortConnection()
        await connection.closed
        return connection.status, connection.received.decode("latin-1")


def big_form() -> tuple[bytes, bytes]:
    """An upload form whose body spans many reads (300 KiB)."""
    wheel = wheel_bytes("demo-pkg", "1.0", payload=os.urandom(300 * 1024))
    return upload_form("demo-pkg", "1.0", WHEEL, wheel)


# Refused with the headers alone: no temp file is ever opened.

async def no_token(u: Upload) -> tuple[int | None, str]:
    return await u.post(token=None)


async def invalid_token(u: Upload) -> tuple[int | None, str]:
    return await u.post(token="pypireg_" + "x" * 43)


async def read_token(u: Upload) -> tuple[int | None, str]:
    return await u.post(token=u.read)


async def another_projects_token(u: Upload) -> tuple[int | None, str]:
    other = await project_store.create_project(u.registry.db, "other")
    _, token = await token_store.create_token(u.registry.db, other.id, "write")
    return await u.post(token=token)


async def no_such_project(u: Upload) -> tuple[int | None, str]:
    return await u.post(project=999999)


async def packages_disabled(u: Upload) -> tuple[int | None, str]:
    await project_store.update_project(u.registry.db, u.project.id, packages_enabled=False)
    return await u.post()


async def content_length_too_large(u: Upload) -> tuple[int | None, str]:
    connection = await u.connect()
    connection.send(head(u.project.id, u.write, b"multipart/form-data; boundary=b",
                         100 * 1024 * 1024))
    return await u.answer(connection)


async def not_a_form(u: Upload) -> tuple[int | None, str]:
    resp = await treq.post(u.registry.api(u.project.id), data=b"{}", headers={
        **basic(u.write), b"Content-Type": [b"application/json"]})
    return resp.code, await resp.text()


async def posted_to_the_index(u: Upload) -> tuple[int | None, str]:
    ctype, body = big_form()
    resp = await treq.post(u.registry.api(u.project.id) + "/simple/", data=body,
                           headers={**basic(u.write), b"Content-Type": [ctype]})
    return resp.code, await resp.text()


async def database_down_at_the_token_check(u: Upload) -> tuple[int | None, str]:
    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ServiceUnavailable()

    u.registry.site.upload_context.authorizer.authorize = unavailable
    return await u.post()


# Refused, failed or abandoned while the body streams to disk.

async def file_too_large(u: Upload) -> tuple[int | None, str]:
    # Content-Length within the limit plus the form's overhead: streamed, then cut off.
    return await u.post(wheel_bytes("demo-pkg", "1.0", payload=os.urandom(2 * 1024 * 1024)))


async def chunked_body_too_large(u: Upload) -> tuple[int | None, str]:
    # No Content-Length to refuse early: cut off once the file passes the limit.
    connection, _ = await u.half_sent(chunked=True)
    chunk = os.urandom(256 * 1024)
    for _ in range(u.registry.config.uploads.max_size // len(chunk) + 1):
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    return await u.answer(connection)


async def second_file_part(u: Upload) -> tuple[int | None, str]:
    ctype, body = big_form()
    extra = (b'--pypiregboundary\r\nContent-Disposition: form-data; name="content"; '
             b'filename="x.whl"\r\n\r\nxx\r\n')
    body = body[: -len(BOUNDARY_END)] + extra + BOUNDARY_END
    resp = await treq.post(u.registry.api(u.project.id), data=body,
                           headers={**basic(u.write), b"Content-Type": [ctype]})
    return resp.code, await resp.text()


async def truncated_form(u: Upload) -> tuple[int | None, str]:
    ctype, body = big_form()
    body = body[: -len(BOUNDARY_END)]
    resp = await treq.post(u.registry.api(u.project.id), data=body,
                           headers={**basic(u.write), b"Content-Type": [ctype]})
    return resp.code, await resp.text()


async def broken_chunked_framing(u: Upload) -> tuple[int | None, str]:
    connection, _ = await u.half_sent(chunked=True)
    connection.send(b"not a chunk size\r\n")
    return await u.answer(connection)


async def client_gone_mid_body(u: Upload) -> tuple[int | None, str]:
    connection, _ = await u.half_sent()
    assert connection.transport is not None
    connection.transport.abortConnection()
    return await u.answer(connection)


async def client_silent_mid_body(u: Upload) -> tuple[int | None, str]:
    # The site's idle timeout (server.timeout) on a clock the test turns;
    # set before connecting, as each connection takes it when it is made.
    clock = Clock()
    u.registry.site.reactor = clock
    connection, _ = await u.half_sent()
    await until(lambda: clock.getDelayedCalls())
    clock.advance(u.registry.config.server.timeout)
    return await u.answer(connection)


async def client_gone_after_the_last_byte(u: Upload) -> tuple[int | None, str]:
    connection, body = await u.half_sent()
    connection.send(body[len(body) // 2:])
    assert connection.transport is not None
    connection.transport.abortConnection()
    return await u.answer(connection)


async def disk_full_while_streaming(u: Upload) -> tuple[int | None, str]:
    write_sync = TempBlob._write_sync

    def full_after_the_first_write(self: TempBlob, chunks: list[bytes]) -> None:
        if self.path.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        write_sync(self, chunks)

    u.monkeypatch.setattr(TempBlob, "_write_sync", full_after_the_first_write)
    # Big enough for several writes.
    return await u.post(wheel_bytes("demo-pkg", "1.0", payload=os.urandom(300 * 1024)))


# Failed once the body is whole: the rules, the database, the disk.

async def bad_file_name(u: Upload) -> tuple[int | None, str]:
    return await u.post(filename="demo_pkg-1.0.exe")


async def refused_at_the_url_with_a_trailing_slash(u: Upload) -> tuple[int | None, str]:
    ctype, body = upload_form("demo-pkg", "1.0", "demo_pkg-1.0.exe", b"not a wheel")
    resp = await treq.post(u.registry.api(u.project.id) + "/", data=body,
                           headers={**basic(u.write), b"Content-Type": [ctype]})
    return resp.code, await resp.text()


async def metadata_disagrees(u: Upload) -> tuple[int | None, str]:
    return await u.post(wheel_bytes("demo-pkg", "1.0", metadata=metadata_text("other", "1.0")))


async def not_a_wheel(u: Upload) -> tuple[int | None, str]:
    return await u.post(b"this is not a zip file")


async def wrong_digest(u: Upload) -> tuple[int | None, str]:
    return await u.post(sha256="0" * 64)


async def duplicate(u: Upload) -> tuple[int | None, str]:
    assert (await u.post())[0] == 201
    u.opened.clear()
    await project_store.update_project(u.registry.db, u.project.id, reject_duplicates=True)
    return await u.post(wheel_bytes("demo-pkg", "1.0", payload=b"VALUE = 2\n"))


async def database_down_at_the_commit(u: Upload) -> tuple[int | None, str]:
    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ServiceUnavailable()

    u.monkeypatch.setattr("pypireg.ingest.accept.package_store.record_file", unavailable)
    return await u.post()


async def disk_full_at_the_commit(u: Upload) -> tuple[int | None, str]:
    def full(moves: list[Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    u.monkeypatch.setattr(blob_module, "_durable_moves", full)
    return await u.post()


async def disk_full_writing_the_metadata_file(u: Upload) -> tuple[int | None, str]:
    write_all = blob_module._writev_all

    def full_for_metadata(fd: int, chunks: list[bytes]) -> None:
        # The wheel's core metadata file, written next to it at the commit.
        if chunks and bytes(chunks[0][:17]) == b"Metadata-Version:":
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(fd, chunks)

    u.monkeypatch.setattr(blob_module, "_writev_all", full_for_metadata)
    return await u.post()


@dataclass(frozen=True)
class Case:
    act: Callable[[Upload], Awaitable[tuple[int | None, str]]]
    code: int | None  # None: the connection closes without an answer
    says: str
    streamed: bool  # whether bytes reached a temp file before the refusal


CASES = [
    Case(no_token, 401, "Authentication required", False),
    Case(invalid_token, 401, "", False),
    Case(read_token, 403, "read scope", False),
    Case(another_projects_token, 404, "", False),
    Case(no_such_project, 404, "", False),
    Case(packages_disabled, 403, "disabled", False),
    Case(content_length_too_large, 413, "uploads.max_size", False),
    Case(not_a_form, 400, "multipart/form-data", False),
    Case(posted_to_the_index, 405, "upload to http://", False),
    Case(database_down_at_the_token_check, 503, "database", False),
    Case(file_too_large, 413, "uploads.max_size", True),
    Case(chunked_body_too_large, 413, "uploads.max_size", True),
    Case(second_file_part, 400, "more than one 'content' file", True),
    Case(truncated_form, 400, "Malformed multipart/form-data", True),
    Case(broken_chunked_framing, 400, "Malformed HTTP", True),
    Case(client_gone_mid_body, None, "", True),
    Case(client_silent_mid_body, None, "", True),
    Case(client_gone_after_the_last_byte, None, "", True),
    Case(disk_full_while_streaming, 507, "disk is full", True),
    Case(bad_file_name, 400, "only wheels", True),
    Case(refused_at_the_url_with_a_trailing_slash, 400, "only wheels", True),
    Case(metadata_disagrees, 400, "metadata in", True),
    Case(not_a_wheel, 400, "not a valid wheel", True),
    Case(wrong_digest, 400, "sha256_digest sent does not match", True),
    Case(duplicate, 400, "File already exists", True),
    Case(database_down_at_the_commit, 503, "database", True),
    Case(disk_full_at_the_commit, 507, "disk is full", True),
    Case(disk_full_writing_the_metadata_file, 507, "disk is full", True),
]


@pytest.fixture
def watched(registry: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TempBlob]]:
    """Every temp file the registry's uploads open."""
    opened: list[TempBlob] = []
    blobs = registry.site.upload_context.blobs
    open_temp = blobs.open_temp

    def recording(*args: Any, **kwargs: Any) -> TempBlob:
        temp: TempBlob = open_temp(*args, **kwargs)
        opened.append(temp)
        return temp

    monkeypatch.setattr(blobs, "open_temp", recording)
    yield opened


@pytest.mark.parametrize("case", CASES, ids=[c.act.__name__ for c in CASES])
@pytest_twisted.ensureDeferred
async def test_no_temp_file_outlives_a_failed_upload(
        registry: Any, watched: list[TempBlob], monkeypatch: pytest.MonkeyPatch,
        case: Case) -> None:
    project, write, read = await project_with_tokens(registry)
    attempt = Upload(registry, project, write, read, watched, monkeypatch)
    code, text = await case.act(attempt)
    assert code == case.code, text
    assert case.says in text, text
    assert bool(watched) == case.streamed, watched
    assert await registry.settled_temp_files() == []


@pytest_twisted.ensureDeferred
async def test_no_temp_file_outlives_an_upload_answered_by_an_error_outside_the_route(
        db: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug in the upload route before it takes the file over (500): the site
    # itself removes the file once the request is answered.
    async def broken(self: UploadRoutes, request: Any, project: str) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(UploadRoutes, "upload", broken)
    registry = await start_registry(db, tmp_path)
    try:
        project, write, _ = await project_with_tokens(registry)
        code, text, _ = await upload(registry, project.id, write, WHEEL,
                                     wheel_bytes("demo-pkg", "1.0"))
        assert code == 500, text
        assert await registry.settled_temp_files() == []
    finally:
        await registry.stop()
