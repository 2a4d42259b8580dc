"""The upstream HTTP client (pypireg/upstream/client.py) against a local index over real TCP.

Every upstream here is tests/support/upstreams.py on 127.0.0.1; timeouts
are a silent server and a 0.2 s client timeout, never a sleep. Where the
client should have closed or reused a connection, the server's side of it
is checked too, so a test cannot pass on a connection that merely dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.protocol import Factory

from pypireg.config import UpstreamConfig
from pypireg.domain import simple_pages
from pypireg.domain.simple_pages import ACCEPT
from pypireg.upstream.client import (
    MAX_INLINE_PARSE_BYTES,
    USER_AGENT,
    Fetched,
    Missing,
    NotModified,
    UpstreamBody,
    UpstreamClient,
    UpstreamUnavailable,
)
from tests.support import reactor
from tests.support.upstreams import (
    HTML_V1,
    JSON_V1,
    Link,
    LocalUpstream,
    NeverAnswers,
    Page,
    Redirect,
    Stalls,
    Status,
    Streamed,
    Truncated,
    html_page,
    json_page,
    start_upstream,
)
from tests.support.waiting import next_turn, until

PAGE = "/simple/demo-pkg/"
SDIST = "demo_pkg-1.0.tar.gz"
SHA = "a" * 64
LAST_MODIFIED = "Tue, 01 Dec 2026 00:00:00 GMT"
TIMEOUT = 0.2
# Only turns a hang into a failure; nothing passes by waiting for it.
GUARD = 10.0
MiB = 1024 * 1024
# Far more than loopback's socket buffers hold, so a reader that stops
# reading makes the server's transport push back.
BIG_CHUNK = bytes(range(256)) * 256  # 64 KiB
BIG_COUNT = 768  # 48 MiB

Clients = Callable[[UpstreamConfig], UpstreamClient]


@pytest_twisted.async_yield_fixture()
async def upstream() -> AsyncIterator[LocalUpstream]:
    up = await start_upstream()
    yield up
    await up.stop()


@pytest_twisted.async_yield_fixture()
async def other() -> AsyncIterator[LocalUpstream]:
    """A second upstream: another origin (same host, another port)."""
    up = await start_upstream()
    yield up
    await up.stop()


@pytest_twisted.async_yield_fixture()
async def clients() -> AsyncIterator[Clients]:
    """Makes UpstreamClients and closes their pools at the end."""
    made: list[UpstreamClient] = []

    def make(config: UpstreamConfig) -> UpstreamClient:
        made.append(UpstreamClient(reactor, config))
        return made[-1]

    yield make
    for client in made:
        await client.close()


async def unavailable(awaitable: Any) -> UpstreamUnavailable:
    """The UpstreamUnavailable *awaitable* fails with (and fail the test if it does not).

    A client that hangs instead fails too, after GUARD seconds.
    """
    waiting = ensureDeferred(awaitable)
    waiting.addTimeout(GUARD, reactor)
    with pytest.raises(UpstreamUnavailable) as caught:
        await waiting
    return caught.value


def demo_page(**top: Any) -> bytes:
    return json_page("demo-pkg", [Link(SDIST, f"../../files/{SDIST}", SHA)], **top)


# -- pages ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_json_page_is_parsed_with_its_validators(upstream: LocalUpstream,
                                                         clients: Clients) -> None:
    files = {SDIST: b"sdist bytes", "demo_pkg-1.0-py3-none-any.whl": b"wheel bytes"}
    upstream.project("demo-pkg", files, etag='"v1"', last_modified=LAST_MODIFIED)
    result = await clients(upstream.config()).fetch_page("demo-pkg")

    assert isinstance(result, Fetched)
    assert (result.served_format, result.etag, result.last_modified) == (
        "json", '"v1"', LAST_MODIFIED)
    assert result.page.name == "demo-pkg" and result.page.versions == ("1.0",)
    assert [(f.filename, f.url, f.sha256) for f in result.page.files] == [
        (name, f"{upstream.url}/files/{name}", hashlib.sha256(content).hexdigest())
        for name, content in files.items()]
    [seen] = upstream.requests_to(PAGE)
    assert (seen.method, seen.header("accept"), seen.header("user-agent")) == (
        "GET", ACCEPT, USER_AGENT)
    assert USER_AGENT.startswith("pypireg/")
    assert seen.header("if-none-match") is None and seen.header("if-modified-since") is None
    assert seen.header("authorization") is None


@pytest_twisted.ensureDeferred
async def test_an_html_page_from_a_static_tree(upstream: LocalUpstream, clients: Clients,
                                               tmp_path: Path) -> None:
    """A plain web server over a PEP 503 folder: text/html, Last-Modified, 304s."""
    folder = tmp_path / "tree" / "simple" / "demo-pkg"
    folder.mkdir(parents=True)
    (folder / "index.html").write_bytes(
        html_page("demo-pkg", [Link(SDIST, f"../../packages/{SDIST}", SHA)]))
    upstream.static(tmp_path / "tree")
    client = clients(upstream.config())

    result = await client.fetch_page("demo-pkg")
    assert isinstance(result, Fetched) and result.served_format == "html"
    assert [(f.filename, f.url, f.sha256) for f in result.page.files] == [
        (SDIST, f"{upstream.url}/packages/{SDIST}", SHA)]
    assert result.last_modified is not None

    again = await client.fetch_page("demo-pkg", last_modified=result.last_modified)
    assert again == NotModified()
    assert upstream.requests_to(PAGE)[1].header("if-modified-since") == result.last_modified


@pytest_twisted.ensureDeferred
async def test_a_conditional_request_gets_not_modified(upstream: LocalUpstream,
                                                       clients: Clients) -> None:
    page = upstream.serve(PAGE, Page(demo_page(), etag='"v1"'))
    client = clients(upstream.config())

    assert await client.fetch_page("demo-pkg", etag='"v1"',
                                   last_modified=LAST_MODIFIED) == NotModified()
    changed = await client.fetch_page("demo-pkg", etag='"v0"')
    assert isinstance(changed, Fetched) and changed.etag == '"v1"'

    first, second = upstream.requests_to(PAGE)
    assert first.header("if-none-match") == '"v1"'
    assert first.header("if-modified-since") == LAST_MODIFIED
    assert second.header("if-none-match") == '"v0"'
    assert page.not_modified == 1
    # The 304 left the connection reusable: both went over one.
    assert first.connection == second.connection


@pytest_twisted.ensureDeferred
async def test_a_304_to_an_unconditional_request_is_an_error(upstream: LocalUpstream,
                                                             clients: Clients) -> None:
    upstream.serve(PAGE, Status(304))
    error = await unavailable(clients(upstream.config()).fetch_page("demo-pkg"))
    assert error.reason == "upstream answered 304 to a request without validators"


@pytest_twisted.ensureDeferred
async def test_404_and_410_are_missing(upstream: LocalUpstream, clients: Clients) -> None:
    upstream.serve("/simple/gone/", Status(410, b"deleted"))
    upstream.serve(PAGE, Status(404, b"not here" * 100))
    client = clients(upstream.config())
    assert await client.fetch_page("demo-pkg") == Missing()
    assert await client.fetch_page("gone") == Missing()
    # Their bodies were read, so the connection went back to the pool.
    assert [s.connection for s in upstream.seen] == [0, 0]


@pytest.mark.parametrize(("code", "reason"), [
    (500, "upstream answered 500"),
    (503, "upstream answered 503"),
    (429, "upstream answered 429"),
    (418, "upstream answered 418"),
    (401, "upstream refused our credentials (401)"),
    (403, "upstream refused our credentials (403)"),
])
@pytest_twisted.ensureDeferred
async def test_error_statuses(upstream: LocalUpstream, clients: Clients, code: int,
                              reason: str) -> None:
    upstream.serve(PAGE, Status(code, b"oops"))
    error = await unavailable(clients(upstream.config(token="s3cret")).fetch_page("demo-pkg"))
    assert (error.reason, error.timed_out) == (reason, False)
    assert "s3cret" not in str(error)
    assert upstream.hits(PAGE) == 1


@pytest_twisted.ensureDeferred
async def test_no_answer_times_out(upstream: LocalUpstream, clients: Clients) -> None:
    held = upstream.serve(PAGE, NeverAnswers())
    client = clients(upstream.config(timeout=TIMEOUT))
    started = time.monotonic()
    error = await unavailable(client.fetch_page("demo-pkg"))
    elapsed = time.monotonic() - started
    assert error.timed_out and error.reason == "no answer within 0.2 s"
    assert TIMEOUT <= elapsed < TIMEOUT + 1.5
    await until(lambda: held.lost == 1)  # the client closed its connection


@pytest_twisted.ensureDeferred
async def test_a_page_that_stalls_midway_times_out(upstream: LocalUpstream,
                                                   clients: Clients) -> None:
    stalled = upstream.serve(PAGE, Stalls(demo_page(), sent=20))
    error = await unavailable(clients(upstream.config(timeout=TIMEOUT)).fetch_page("demo-pkg"))
    assert error.timed_out and error.reason == "no data for 0.2 s while reading the page"
    await until(lambda: stalled.lost == 1)


@pytest_twisted.ensureDeferred
async def test_cancelling_a_fetch_closes_the_connection(upstream: LocalUpstream,
                                                        clients: Clients) -> None:
    """The caller's cancellation reaches its own coroutine as CancelledError, not as an
    UpstreamUnavailable it would record as the upstream's fault."""
    held = upstream.serve(PAGE, NeverAnswers())
    client = clients(upstream.config())
    raised: list[type[BaseException]] = []

    async def caller() -> None:
        try:
            await client.fetch_page("demo-pkg")
        except BaseException as e:
            raised.append(type(e))
            raise

    fetching = Deferred.fromCoroutine(caller())
    await until(lambda: upstream.hits(PAGE) == 1)
    fetching.cancel()
    with pytest.raises(CancelledError):
        await fetching
    assert raised == [CancelledError]
    await until(lambda: held.lost == 1)


@pytest_twisted.ensureDeferred
async def test_connection_refused(clients: Clients) -> None:
    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    closed = port.getHost().port
    await port.stopListening()
    config = UpstreamConfig(name="closed", url=f"http://127.0.0.1:{closed}/simple/")
    error = await unavailable(clients(config).fetch_page("demo-pkg"))
    assert (error.reason, error.timed_out) == ("connection refused", False)


@pytest_twisted.ensureDeferred
async def test_a_connection_dropped_mid_page(upstream: LocalUpstream, clients: Clients) -> None:
    body = demo_page()
    upstream.serve(PAGE, Truncated(body, sent=len(body) // 2))
    error = await unavailable(clients(upstream.config()).fetch_page("demo-pkg"))
    assert (error.reason, error.timed_out) == (
        "connection lost before the page was complete", False)
    assert upstream.hits(PAGE) == 1


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_a_page_over_the_cap_is_aborted(upstream: LocalUpstream, clients: Clients,
                                              monkeypatch: pytest.MonkeyPatch,
                                              length: bool) -> None:
    monkeypatch.setattr(simple_pages, "MAX_PAGE_BYTES", 256 * 1024)
    streamed = upstream.serve(PAGE, Streamed(BIG_CHUNK, BIG_COUNT, content_type=JSON_V1,
                                             length=length))
    error = await unavailable(clients(upstream.config()).fetch_page("demo-pkg"))
    assert error.reason == "the page is larger than 262144 bytes"
    await until(lambda: streamed.lost)
    assert streamed.sent < streamed.total


@pytest_twisted.ensureDeferred
async def test_a_gzip_page_is_inflated_within_the_cap(upstream: LocalUpstream,
                                                      clients: Clients,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.serve(PAGE, Page(gzip.compress(demo_page()),
                              headers={"Content-Encoding": "gzip"}))
    client = clients(upstream.config())
    result = await client.fetch_page("demo-pkg")
    assert isinstance(result, Fetched) and [f.filename for f in result.page.files] == [SDIST]
    assert upstream.requests_to(PAGE)[0].header("accept-encoding") == "gzip"

    # 8 MiB of spaces in about 8 kB: a bomb against a 256 KiB cap.
    monkeypatch.setattr(simple_pages, "MAX_PAGE_BYTES", 256 * 1024)
    bomb = demo_page()[:-1] + b" " * 8 * MiB + b"}"
    upstream.serve(PAGE, Page(gzip.compress(bomb), headers={"Content-Encoding": "gzip"}))
    error = await unavailable(client.fetch_page("demo-pkg"))
    assert error.reason == "the page is larger than 262144 bytes"

    upstream.serve(PAGE, Page(gzip.compress(demo_page())[:-10],
                              headers={"Content-Encoding": "gzip"}))
    error = await unavailable(client.fetch_page("demo-pkg"))
    assert error.reason == "the gzip-compressed page is truncated"

    upstream.serve(PAGE, Page(demo_page(), headers={"Content-Encoding": "br"}))
    error = await unavailable(client.fetch_page("demo-pkg"))
    assert error.reason == "upstream answered with Content-Encoding 'br'"


@pytest_twisted.ensureDeferred
async def test_a_large_page_is_parsed(upstream: LocalUpstream, clients: Clients) -> None:
    """Past MAX_INLINE_PARSE_BYTES the parser runs in a worker thread."""
    links = [Link(f"demo_pkg-1.0.{i}.tar.gz", f"../../files/demo_pkg-1.0.{i}.tar.gz", SHA)
             for i in range(3000)]
    body = json_page("demo-pkg", links)
    assert len(body) > MAX_INLINE_PARSE_BYTES
    upstream.serve(PAGE, Page(body))
    result = await clients(upstream.config()).fetch_page("demo-pkg")
    assert isinstance(result, Fetched) and len(result.page.files) == 3000
    assert result.page.files[-1].url == f"{upstream.url}/files/demo_pkg-1.0.2999.tar.gz"


@pytest.mark.parametrize(("behaviour", "reason"), [
    (Page(b"{}", "text/plain"), "upstream answered with Content-Type 'text/plain', "
                                "not a simple-index page"),
    (Page(b"<html></html>", ""), "upstream answered with Content-Type none, "
                                 "not a simple-index page"),
    (Page(b"not json"), "the page is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (Page(json_page("other-pkg", [])), "the page is for 'other-pkg', not 'demo-pkg'"),
], ids=["text-plain", "no-content-type", "bad-json", "another-project"])
@pytest_twisted.ensureDeferred
async def test_pages_that_cannot_be_used(upstream: LocalUpstream, clients: Clients,
                                         behaviour: Page, reason: str) -> None:
    upstream.serve(PAGE, behaviour)
    error = await unavailable(clients(upstream.config()).fetch_page("demo-pkg"))
    assert (error.reason, error.timed_out) == (reason, False)


# -- redirects and credentials --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_redirect_is_followed_and_links_resolve_against_the_final_url(
        upstream: LocalUpstream, clients: Clients) -> None:
    upstream.serve(PAGE, Redirect("/deep/mirror/demo-pkg/", 301))
    upstream.serve("/deep/mirror/demo-pkg/", Page(
        html_page("demo-pkg", [Link(SDIST, f"../files/{SDIST}", SHA)]), HTML_V1))
    client = clients(upstream.config(token="s3cret", headers=(("X-Team", "infra"),)))
    result = await client.fetch_page("demo-pkg")

    assert isinstance(result, Fetched)
    assert [f.url for f in result.page.files] == [f"{upstream.url}/deep/mirror/files/{SDIST}"]
    # Same origin: every hop carries the credentials and configured headers.
    hops = upstream.requests_to(PAGE) + upstream.requests_to("/deep/mirror/demo-pkg/")
    assert [(s.header("authorization"), s.header("x-team")) for s in hops] == [
        ("Bearer s3cret", "infra")] * 2


@pytest_twisted.ensureDeferred
async def test_a_redirect_to_another_origin_drops_credentials(
        upstream: LocalUpstream, other: LocalUpstream, clients: Clients) -> None:
    upstream.serve(PAGE, Redirect(f"{other.index}demo-pkg/", 302))
    other.project("demo-pkg", {SDIST: b"sdist"})
    client = clients(upstream.config(username="alice", password="pw",
                                     headers=(("X-Api-Key", "k3y"),)))
    result = await client.fetch_page("demo-pkg")

    assert isinstance(result, Fetched) and [f.url for f in result.page.files] == [
        f"{other.url}/files/{SDIST}"]
    [origin] = upstream.requests_to(PAGE)
    assert origin.header("authorization") == "Basic YWxpY2U6cHc="
    assert origin.header("x-api-key") == "k3y"
    [elsewhere] = other.requests_to(PAGE)
    assert elsewhere.header("authorization") is None and elsewhere.header("x-api-key") is None
    assert (elsewhere.header("accept"), elsewhere.header("user-agent")) == (ACCEPT, USER_AGENT)


@pytest_twisted.ensureDeferred
async def test_redirects_that_are_refused(upstream: LocalUpstream, clients: Clients) -> None:
    client = clients(upstream.config())
    upstream.serve(PAGE, Redirect(PAGE, 307))
    error = await unavailable(client.fetch_page("demo-pkg"))
    assert error.reason == "upstream redirected more than 5 times"
    assert upstream.hits(PAGE) == 6  # the request and five redirects followed

    upstream.serve("/simple/ftp/", Redirect("ftp://127.0.0.1/simple/ftp/", 302))
    error = await unavailable(client.fetch_page("ftp"))
    assert error.reason == "upstream redirected to a URL that is not http(s)"

    upstream.serve("/simple/nowhere/", Status(302))
    error = await unavailable(client.fetch_page("nowhere"))
    assert error.reason == "upstream answered 302 without a Location"


# -- files ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_file_streams_with_backpressure(upstream: LocalUpstream,
                                                clients: Clients) -> None:
    streamed = upstream.serve("/files/big.whl", Streamed(BIG_CHUNK, BIG_COUNT))
    body = await clients(upstream.config()).open_file(f"{upstream.url}/files/big.whl",
                                                      max_bytes=streamed.total)
    assert body.length == streamed.total
    digest = hashlib.sha256()
    received: list[int] = []

    def on_chunk(data: bytes) -> None:
        digest.update(data)
        received.append(len(data))
        if len(received) == 1:
            body.pause()

    done = body.deliver(on_chunk)
    # We stopped reading, so the server's buffers fill and its transport pushes back.
    await until(lambda: streamed.paused, turns=200_000)
    so_far = sum(received)
    for _ in range(500):
        await next_turn()
    assert sum(received) == so_far < streamed.total and not done.called

    body.resume()
    await done
    assert sum(received) == streamed.total and digest.hexdigest() == streamed.sha256
    assert streamed.finished and streamed.pauses >= 1
    [seen] = upstream.requests_to("/files/big.whl")
    assert seen.header("accept-encoding") == "identity"


@pytest_twisted.ensureDeferred
async def test_a_file_over_max_bytes_is_refused(upstream: LocalUpstream,
                                                clients: Clients) -> None:
    announced = upstream.serve("/files/a.whl", Streamed(BIG_CHUNK, BIG_COUNT))
    client = clients(upstream.config())
    error = await unavailable(client.open_file(f"{upstream.url}/files/a.whl", max_bytes=MiB))
    assert error.reason == f"the file is {announced.total} bytes, more than the {MiB} allowed"
    await until(lambda: announced.lost)
    assert announced.sent < announced.total

    # Without a Content-Length, the count while reading stops it.
    chunked = upstream.serve("/files/b.whl", Streamed(BIG_CHUNK, BIG_COUNT, length=False))
    body = await client.open_file(f"{upstream.url}/files/b.whl", max_bytes=MiB)
    assert body.length is None
    received: list[bytes] = []
    error = await unavailable(body.deliver(received.append))
    assert error.reason == f"the file is larger than {MiB} bytes"
    assert sum(map(len, received)) <= MiB
    await until(lambda: chunked.lost)
    assert chunked.sent < chunked.total


@pytest_twisted.ensureDeferred
async def test_a_truncated_file_fails(upstream: LocalUpstream, clients: Clients) -> None:
    upstream.serve("/files/a.whl", Truncated(b"x" * 100_000, sent=40_000,
                                             content_type="application/octet-stream"))
    body = await clients(upstream.config()).open_file(f"{upstream.url}/files/a.whl",
                                                      max_bytes=MiB)
    received: list[bytes] = []
    error = await unavailable(body.deliver(received.append))
    assert (error.reason, error.timed_out) == (
        "connection lost after 40000 of 100000 bytes of the file", False)
    assert sum(map(len, received)) == 40_000


@pytest_twisted.ensureDeferred
async def test_a_file_that_stalls_times_out(upstream: LocalUpstream, clients: Clients) -> None:
    stalled = upstream.serve("/files/a.whl", Stalls(b"x" * 100_000, sent=1000,
                                                    content_type="application/octet-stream"))
    body = await clients(upstream.config(timeout=TIMEOUT)).open_file(
        f"{upstream.url}/files/a.whl", max_bytes=MiB)
    started = time.monotonic()
    error = await unavailable(body.deliver(lambda _: None))
    assert error.timed_out and error.reason == "no data for 0.2 s while reading the file"
    assert time.monotonic() - started >= TIMEOUT
    await until(lambda: stalled.lost == 1)


@pytest.mark.parametrize("how", ["cancel", "deferred"])
@pytest_twisted.ensureDeferred
async def test_a_download_can_be_cancelled(upstream: LocalUpstream, clients: Clients,
                                           how: str) -> None:
    streamed = upstream.serve("/files/a.whl", Streamed(BIG_CHUNK, BIG_COUNT))
    body = await clients(upstream.config()).open_file(f"{upstream.url}/files/a.whl",
                                                      max_bytes=streamed.total)
    received: list[int] = []
    done = body.deliver(lambda data: received.append(len(data)))
    await until(lambda: sum(received) > MiB)
    if how == "cancel":
        body.cancel()
    else:
        done.cancel()
    error = await unavailable(done)
    assert error.reason == "the download was cancelled"
    await until(lambda: streamed.lost)
    assert streamed.sent < streamed.total


@pytest_twisted.ensureDeferred
async def test_a_body_nobody_delivers_is_closed(upstream: LocalUpstream,
                                                clients: Clients) -> None:
    streamed = upstream.serve("/files/a.whl", Streamed(BIG_CHUNK, BIG_COUNT))
    body = await clients(upstream.config(timeout=TIMEOUT)).open_file(
        f"{upstream.url}/files/a.whl", max_bytes=streamed.total)
    await until(lambda: streamed.lost)
    error = await unavailable(body.deliver(lambda _: None))
    assert error.reason == "the download was cancelled"


@pytest_twisted.ensureDeferred
async def test_file_errors_and_credentials(upstream: LocalUpstream, other: LocalUpstream,
                                           clients: Clients) -> None:
    client = clients(upstream.config(token="s3cret", headers=(("X-Team", "infra"),)))
    error = await unavailable(client.open_file(f"{upstream.url}/files/none.whl", max_bytes=10))
    assert error.reason == "upstream has no such file (404)"
    upstream.serve("/files/e.whl", Status(500))
    error = await unavailable(client.open_file(f"{upstream.url}/files/e.whl", max_bytes=10))
    assert error.reason == "upstream answered 500"

    # A file on the index's origin gets the credentials, one elsewhere does not.
    upstream.serve("/files/a.whl", Page(b"ours", "application/octet-stream"))
    other.serve("/files/a.whl", Page(b"theirs", "application/octet-stream"))
    contents = []
    for url in (f"{upstream.url}/files/a.whl", f"{other.url}/files/a.whl"):
        body: UpstreamBody = await client.open_file(url, max_bytes=10)
        chunks: list[bytes] = []
        await body.deliver(chunks.append)
        contents.append(b"".join(chunks))
    assert contents == [b"ours", b"theirs"]
    [ours] = upstream.requests_to("/files/a.whl")
    [theirs] = other.requests_to("/files/a.whl")
    assert (ours.header("authorization"), ours.header("x-team")) == ("Bearer s3cret", "infra")
    assert (theirs.header("authorization"), theirs.header("x-team")) == (None, None)


# -- TLS ------------------------------------------------------------------------


def certificates(folder: Path) -> tuple[Any, Path]:
    """Server TLS options for 127.0.0.1 and the PEM file of the CA that signed them."""
    now = datetime.now(UTC)

    def builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + timedelta(days=1))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypireg test CA")])
    ca = (builder(ca_name, ca_name, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                    ca_name, key)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    server = ssl.PrivateCertificate.loadPEM(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()) + leaf.public_bytes(pem))
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    return server.options(), ca_file


@pytest_twisted.ensureDeferred
async def test_tls_is_verified_against_ca_file(clients: Clients, tmp_path: Path) -> None:
    options, ca_file = certificates(tmp_path)
    secure = await start_upstream(tls=options)
    try:
        secure.project("demo-pkg", {SDIST: b"sdist"})
        result = await clients(secure.config(ca_file=ca_file)).fetch_page("demo-pkg")
        assert isinstance(result, Fetched) and result.page.files[0].url.startswith("https://")

        # The system's trust store does not know our CA.
        error = await unavailable(clients(secure.config()).fetch_page("demo-pkg"))
        assert (error.reason, error.timed_out) == ("TLS verification failed", False)
    finally:
        await secure.stop()
