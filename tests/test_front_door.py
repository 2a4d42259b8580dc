"""The front door: framing, Host and request targets, as a hostile client sends them.

Raw bytes through the real site (`site.buildProtocol()` + StringTransport)
over the test database, so we see exactly what is answered and whether the
connection is closed before a smuggled second request could be read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from pypireg.config import parse_config
from pypireg.http.front_door import framing_problem, host_problem, split_absolute_form, valid_host
from pypireg.http.responses import redirect
from pypireg.service import build_site
from pypireg.storage import projects as project_store
from tests.support import reactor

SMUGGLED = b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n"
STATUS_LINE = re.compile(rb"(?:\A|\r\n)HTTP/1\.1 \d{3} ")


class Connection:
    def __init__(self, site: Any) -> None:
        self.transport = StringTransport(lenient=True)
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)

    async def send(self, data: bytes, answers: int = 1) -> bytes:
        """Send *data*; wait (bounded) until *answers* status lines or a close."""
        self.protocol.dataReceived(data)
        for _ in range(500):
            out = bytes(self.transport.value())
            if answered(out) >= answers or self.transport.disconnecting:
                break
            await deferLater(reactor, 0.01, lambda: None)
        return bytes(self.transport.value())

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


@pytest_twisted.async_yield_fixture()
async def site(db: Any, tmp_path: Path) -> Any:
    config = parse_config({"storage": {"path": str(tmp_path / "data")}})
    built, _ = await build_site(reactor, config, db)
    yield built


def answered(output: bytes) -> int:
    """How many responses *output* holds (status lines at the start or after CRLF)."""
    return len(STATUS_LINE.findall(output))


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def refused_and_closed(conn: Connection, answer: bytes) -> None:
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answered(answer) == 1, answer  # the smuggled request is never read
    assert b"Connection: close" in answer and b"Cache-Control: no-store" in answer
    assert conn.closed


# --- framing (RFC 9112 §6.1) ---

FRAMINGS = {
    "identity with a length": [b"Transfer-Encoding: identity", b"Content-Length: 5"],
    "identity alone": [b"Transfer-Encoding: identity"],
    "identity, chunked": [b"Transfer-Encoding: identity, chunked", b"Content-Length: 5"],
    "chunked, identity": [b"Transfer-Encoding: chunked, identity", b"Content-Length: 5"],
    "two headers, identity first": [b"Transfer-Encoding: identity",
                                    b"Transfer-Encoding: chunked"],
    "two headers, chunked first": [b"Transfer-Encoding: chunked",
                                   b"Transfer-Encoding: identity"],
    "chunked twice": [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
    "gzip then chunked": [b"Transfer-Encoding: gzip, chunked"],
    "empty coding": [b"Transfer-Encoding: "],
    "chunked and a length": [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
    "a length and chunked": [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
    "two different lengths": [b"Content-Length: 5", b"Content-Length: 6"],
    "a signed length": [b"Content-Length: +5"],
}


@pytest.mark.parametrize("headers", list(FRAMINGS.values()), ids=list(FRAMINGS))
@pytest.mark.parametrize("target", [b"/-/health", b"/api/v4/projects/1/packages/pypi"])
@pytest_twisted.ensureDeferred
async def test_ambiguous_framing_is_refused_and_the_connection_closed(
        site: Any, headers: list[bytes], target: bytes) -> None:
    conn = Connection(site)
    request = b"\r\n".join([b"POST " + target + b" HTTP/1.1", b"Host: x", *headers])
    answer = await conn.send(request + b"\r\n\r\nhello" + SMUGGLED)
    refused_and_closed(conn, answer)


@pytest_twisted.ensureDeferred
async def test_plain_chunked_and_pipelined_requests_still_work(site: Any) -> None:
    conn = Connection(site)
    chunked = (b"POST /-/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    answer = await conn.send(chunked + SMUGGLED, answers=2)
    assert answer.startswith(b"HTTP/1.1 405 "), answer
    assert answered(answer) == 2 and b"\r\nHTTP/1.1 200 " in answer and not conn.closed


@pytest_twisted.ensureDeferred
async def test_twisteds_own_refusals_are_written_by_our_error_writer(site: Any) -> None:
    for request in (b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"):
        conn = Connection(site)
        answer = await conn.send(request + SMUGGLED)
        refused_and_closed(conn, answer)
        assert answer.endswith(b"Malformed HTTP request line or headers.\n")


@pytest_twisted.ensureDeferred
async def test_header_too_long_is_431_in_our_format(site: Any) -> None:
    conn = Connection(site)
    answer = await conn.send(b"GET /-/health HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request line or header too long")
    assert b"Cache-Control: no-store" in answer and conn.closed


def test_framing_rules() -> None:
    assert framing_problem([], 1) is None
    assert framing_problem([b"chunked"], 0) is None
    assert framing_problem([b"chunked"], 1) is not None
    for bad in ([b"identity"], [b"chunked", b"chunked"], [b"gzip"], [b""],
                [b"chunked", b"gzip"]):
        assert framing_problem(bad, 0) is not None, bad


# --- Host (RFC 9112 §3.2) ---

BAD_HOSTS = [
    b"evil-dots..example", b"a" * 70 + b".example", b"a//evil.example", b"a/b", b"a b",
    b"user@evil.example", b'x>; rel="next"', b"", b"[::1", b"[nonsense]:80", b"host:99999",
    b"host:", b"host:8x", b"-leading.example", b"trailing-.example", b"caf\xc3\xa9.example",
    b"a\\b", b"." * 3, b"x" * 300,
]


@pytest.mark.parametrize("host", BAD_HOSTS)
@pytest_twisted.ensureDeferred
async def test_malformed_hosts_are_400_never_500(site: Any, host: bytes) -> None:
    for target in (b"/-/health", b"/api/v4/projects/1/packages/pypi/simple",
                   b"/api/v4/projects/1/packages"):
        conn = Connection(site)
        answer = await conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: " + host
                                 + b"\r\n\r\n" + SMUGGLED)
        refused_and_closed(conn, answer)
        assert b"Host header" in answer


@pytest.mark.parametrize("host", [b"localhost", b"127.0.0.1:8080", b"[::1]:8080",
                                  b"pypi.example.com", b"my_registry:8080", b"HOST.Example."])
@pytest_twisted.ensureDeferred
async def test_ordinary_hosts_pass(site: Any, host: bytes) -> None:
    conn = Connection(site)
    answer = await conn.send(b"GET /-/health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status(answer) == 200, answer


@pytest_twisted.ensureDeferred
async def test_missing_or_repeated_host(site: Any) -> None:
    conn = Connection(site)
    refused_and_closed(conn, await conn.send(b"GET /-/health HTTP/1.1\r\n\r\n" + SMUGGLED))
    conn = Connection(site)
    answer = await conn.send(b"GET /-/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    refused_and_closed(conn, answer)
    # HTTP/1.0 may leave Host out.
    conn = Connection(site)
    assert status(await conn.send(b"GET /-/health HTTP/1.0\r\n\r\n")) == 200


@pytest_twisted.ensureDeferred
async def test_an_upload_with_a_bad_host_is_refused_before_its_body(site: Any,
                                                                   tmp_path: Path) -> None:
    conn = Connection(site)
    answer = await conn.send(
        b"POST /api/v4/projects/1/packages/pypi HTTP/1.1\r\nHost: a//b\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n"
        b"Expect: 100-continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Malformed Host header"), answer
    assert b"100 Continue" not in answer
    assert not [p for p in (tmp_path / "data").rglob("*.part")]


def test_host_rules() -> None:
    assert host_problem([b"a"], b"HTTP/1.1") is None
    assert host_problem([], b"HTTP/1.0") is None
    assert host_problem([], b"HTTP/1.1") is not None
    assert host_problem([b"a", b"a"], b"HTTP/1.1") is not None
    assert valid_host("[2001:db8::1]") and not valid_host("[2001:db8::1]x")
    assert not valid_host("host:0") and valid_host("host:65535")


# --- absolute-form targets (RFC 9112 §3.2.2) and redirects ---

@pytest_twisted.ensureDeferred
async def test_absolute_form_targets_are_served(site: Any) -> None:
    conn = Connection(site)
    answer = await conn.send(b"GET http://127.0.0.1:8080/-/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(answer) == 200, answer
    assert answer.endswith(b"ok\n0\r\n\r\n") or b"ok\n" in answer


@pytest_twisted.ensureDeferred
async def test_the_targets_authority_replaces_the_host_header(site: Any, db: Any) -> None:
    await project_store.create_project(db, "acme", public=True)
    conn = Connection(site)
    answer = await conn.send(b"GET http://good.example/api/v4/projects/acme/packages HTTP/1.1"
                             b"\r\nHost: other.example\r\n\r\n")
    assert status(answer) == 200, answer
    assert b"<http://good.example/api/v4/projects/acme/packages?" in answer
    assert b"other.example" not in answer
    # A target whose authority is not a host is refused like a bad Host.
    conn = Connection(site)
    refused_and_closed(conn, await conn.send(
        b"GET http://a b/-/health HTTP/1.1\r\nHost: x\r\n\r\n"))


@pytest_twisted.ensureDeferred
async def test_trailing_slash_redirects_stay_on_our_origin(site: Any, db: Any) -> None:
    await project_store.create_project(db, "acme", public=True)
    for target in (b"/api/v4/projects/acme/packages/pypi/simple",
                   b"http://x//evil.example/api/v4/projects/acme/packages/pypi/simple"):
        conn = Connection(site)
        answer = await conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head = answer.split(b"\r\n\r\n", 1)[0]
        if status(answer) in (401, 404):
            # "//evil.example/..." is no route of ours, or the path of a project
            # the caller may not read (GitLab's /<path>): fine, nothing redirects.
            assert b"\r\nLocation:" not in head, answer
            continue
        assert status(answer) == 301, answer
        location = next(h for h in head.split(b"\r\n") if h.startswith(b"Location: "))
        assert location.startswith(b"Location: /") and not location.startswith(b"Location: //")
        assert b"Cache-Control: no-store" in head


def test_redirect_locations_never_leave_the_origin() -> None:
    class Request:
        def __init__(self) -> None:
            self.headers: dict[bytes, bytes] = {}

        def setResponseCode(self, code: int) -> None:
            self.code = code

        def setHeader(self, key: bytes, value: bytes) -> None:
            self.headers[key] = value

    for location in ("//evil.example/x", "/\\evil.example/x", "\\\\evil.example/x",
                     "///evil.example/x"):
        request = Request()
        redirect(request, location)  # type: ignore[arg-type]
        assert request.headers[b"Location"] == b"/evil.example/x"
        assert request.headers[b"Cache-Control"] == b"no-store"
    request = Request()
    redirect(request, "https://pypi.example.com/simple/")  # type: ignore[arg-type]
    assert request.headers[b"Location"] == b"https://pypi.example.com/simple/"


def test_absolute_form_parsing() -> None:
    assert split_absolute_form(b"http://h:1/a?b") == (b"h:1", b"/a?b")
    assert split_absolute_form(b"HTTPS://h") == (b"h", b"/")
    assert split_absolute_form(b"http://u@h/x") == (b"", b"/x")
    assert split_absolute_form(b"/a") is None
    assert split_absolute_form(b"ftp://h/a") is None
