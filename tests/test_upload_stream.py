"""The upload request as a state machine: raw bytes through the real site.

`site.buildProtocol()` + `StringTransport`, a real database: we control
exactly which bytes have arrived when, and look at the transport's
producer state and at what was written back.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support.raw import Client, files_in, head, upload_site


@pytest_twisted.ensureDeferred
async def test_transport_paused_during_token_check_then_streamed(db: Any, tmp_path: Path
                                                                 ) -> None:
    site, project, token = await upload_site(db, tmp_path)
    wheel = wheel_bytes("demo-pkg", "1.0")
    ctype, body = upload_form("demo-pkg", "1.0", wheel_filename("demo-pkg", "1.0"), wheel)
    client = Client(site)
    # Headers plus the first bytes of the body arrive together.
    client.send(head(project, token, ctype, len(body)) + body[:100])
    assert client.transport.producerState == "paused"
    await client.wait_for(lambda: client.transport.producerState == "producing")
    client.send(body[100:])
    await client.wait_for(lambda: b"\r\n\r\n" in client.response)
    assert client.response.startswith(b"HTTP/1.1 201 Created"), client.response
    sha = hashlib.sha256(wheel).hexdigest()
    stored = {p.name: p for p in files_in(tmp_path, "blobs")}
    assert sha in stored and len(stored) == 2  # the wheel and its METADATA
    assert stored[sha].read_bytes() == wheel
    assert files_in(tmp_path, "tmp") == []


@pytest.mark.parametrize("target", [
    "/api/v4/projects/{id}/packages/pypi/",
    "/api/v4/projects/acme/packages/pypi/",
    "/api/v4/projects/{id}/packages/pypi/?from=pypirc",
], ids=["id", "path", "query"])
@pytest_twisted.ensureDeferred
async def test_the_upload_url_with_a_trailing_slash_streams_like_without(
        db: Any, tmp_path: Path, target: str) -> None:
    # As the plain URL: matched with the headers in, the token checked with
    # the transport paused, "100 Continue" only then, the body streamed.
    site, project, token = await upload_site(db, tmp_path)
    wheel = wheel_bytes("demo-pkg", "1.0")
    ctype, body = upload_form("demo-pkg", "1.0", wheel_filename("demo-pkg", "1.0"), wheel)
    client = Client(site)
    client.send(head(project, token, ctype, len(body), b"Expect: 100-continue",
                     target=target.format(id=project)))
    assert client.transport.producerState == "paused"
    assert client.response == b""
    await client.wait_for(lambda: b"100 Continue" in client.response)
    client.send(body)
    await client.wait_for(lambda: b"HTTP/1.1 201 " in client.response)
    assert client.response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created")
    assert hashlib.sha256(wheel).hexdigest() in {p.name for p in files_in(tmp_path, "blobs")}
    assert files_in(tmp_path, "tmp") == []


@pytest.mark.parametrize("suffix", ["/simple", "/simple/", "/simple/demo-pkg/", "/simple/x?y=1"])
@pytest_twisted.ensureDeferred
async def test_a_post_to_the_index_is_refused_before_the_body_naming_the_upload_url(
        db: Any, tmp_path: Path, suffix: str) -> None:
    site, project, token = await upload_site(db, tmp_path)
    client = Client(site)
    client.send(head(project, token, b"multipart/form-data; boundary=b", 50 * 1024 * 1024,
                     b"Expect: 100-continue",
                     target=f"/api/v4/projects/acme%2Fx/packages/pypi{suffix}"))
    # Answered with the headers alone, no token check: nothing to wait for.
    status, _, rest = client.response.partition(b"\r\n")
    url = b"http://test/api/v4/projects/acme%2Fx/packages/pypi"
    assert status == b"HTTP/1.1 405 This is the project's index URL (for pip and uv), not " \
                     b"its upload URL: upload to " + url, client.response
    assert b"\r\nAllow: GET, HEAD\r\n" in rest
    assert rest.endswith(b"\r\n\r\n" + status[len(b"HTTP/1.1 405 "):] + b"\n")  # the body
    assert b"100 Continue" not in client.response
    client.send(b"x" * 65536)  # the body the client sends anyway is discarded
    assert client.response.count(b"HTTP/1.1") == 1
    assert files_in(tmp_path, "tmp") == []


@pytest_twisted.ensureDeferred
async def test_the_upload_url_named_in_a_refusal_comes_from_base_url(db: Any, tmp_path: Path
                                                                   ) -> None:
    site, project, token = await upload_site(db, tmp_path,
                                             base_url="https://registry.example/pypireg")
    client = Client(site)
    client.send(head(project, token, b"multipart/form-data; boundary=b", 10,
                     target=f"/api/v4/projects/{project}/packages/pypi/simple/"))
    assert client.response.startswith(b"HTTP/1.1 405 "), client.response
    assert (f"upload to https://registry.example/pypireg/api/v4/projects/{project}"
            "/packages/pypi\r\n").encode() in client.response


@pytest_twisted.ensureDeferred
async def test_epilogue_crlf_in_a_later_read_is_accepted(db: Any, tmp_path: Path) -> None:
    # twine ends the body with "--boundary--\r\n"; the CRLF may come alone.
    site, project, token = await upload_site(db, tmp_path)
    wheel = wheel_bytes("demo-pkg", "1.0")
    ctype, body = upload_form("demo-pkg", "1.0", wheel_filename("demo-pkg", "1.0"), wheel)
    assert body.endswith(b"--\r\n")
    client = Client(site)
    client.send(head(project, token, ctype, len(body)))
    await client.wait_for(lambda: client.transport.producerState == "producing")
    client.send(body[:-2])
    # Everything but the CRLF is in: the site waits for it, without answering.
    await client.wait_for(lambda: client.transport.producerState == "producing")
    assert client.response == b""
    client.send(body[-2:])
    await client.wait_for(lambda: b"\r\n\r\n" in client.response)
    assert client.response.startswith(b"HTTP/1.1 201 "), client.response


@pytest_twisted.ensureDeferred
async def test_wrong_token_answered_before_body(db: Any, tmp_path: Path) -> None:
    site, project, _ = await upload_site(db, tmp_path)
    client = Client(site)
    client.send(head(project, "pypireg_" + "x" * 43, b"multipart/form-data; boundary=b",
                     500_000, b"Expect: 100-continue"))
    await client.wait_for(lambda: b"\r\n\r\n" in client.response)
    assert client.response.startswith(b"HTTP/1.1 401 ")
    assert b'WWW-Authenticate: Basic realm="pypireg"' in client.response
    assert b"100 Continue" not in client.response
    # Lingering close: nothing more is answered, whatever the client sends.
    client.send(b"x" * 65536)
    assert client.response.count(b"HTTP/1.1") == 1
    assert files_in(tmp_path, "tmp") == []


@pytest_twisted.ensureDeferred
async def test_continue_sent_only_after_token_check(db: Any, tmp_path: Path) -> None:
    site, project, token = await upload_site(db, tmp_path)
    client = Client(site)
    client.send(head(project, token, b"multipart/form-data; boundary=b", 1000,
                     b"Expect: 100-continue"))
    assert client.response == b""
    await client.wait_for(lambda: b"100 Continue" in client.response)
    assert client.response == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_content_length_over_limit_refused_at_once(db: Any, tmp_path: Path) -> None:
    site, project, token = await upload_site(db, tmp_path)
    client = Client(site)
    client.send(head(project, token, b"multipart/form-data; boundary=b", 100 * 1024 * 1024))
    # No database round trip needed: the answer is synchronous.
    assert client.response.startswith(b"HTTP/1.1 413 "), client.response
    assert b"uploads.max_size" in client.response


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_limit_cut_off(db: Any, tmp_path: Path) -> None:
    site, project, token = await upload_site(db, tmp_path, max_size=64 * 1024)
    wheel = wheel_bytes("demo-pkg", "1.0", payload=os.urandom(256 * 1024))
    ctype, body = upload_form("demo-pkg", "1.0", wheel_filename("demo-pkg", "1.0"), wheel)
    client = Client(site)
    client.send(head(project, token, ctype, None))
    await client.wait_for(lambda: client.transport.producerState == "producing")
    for i in range(0, len(body), 16384):
        chunk = body[i:i + 16384]
        client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if client.response:
            break
    await client.wait_for(lambda: b"\r\n\r\n" in client.response)
    assert client.response.startswith(b"HTTP/1.1 413 "), client.response
    await client.wait_for(lambda: files_in(tmp_path, "tmp") == [])
    assert files_in(tmp_path, "blobs") == []


async def _half_sent_upload(db: Any, tmp_path: Path) -> tuple[Client, bytes]:
    """A client that sent half of a 300 KiB upload, its temp file begun; the rest."""
    site, project, token = await upload_site(db, tmp_path)
    wheel = wheel_bytes("demo-pkg", "1.0", payload=os.urandom(300 * 1024))
    ctype, body = upload_form("demo-pkg", "1.0", wheel_filename("demo-pkg", "1.0"), wheel)
    client = Client(site)
    client.send(head(project, token, ctype, len(body)))
    await client.wait_for(lambda: client.transport.producerState == "producing")
    client.send(body[: len(body) // 2])
    await client.wait_for(lambda: files_in(tmp_path, "tmp") != [])
    return client, body[len(body) // 2:]


@pytest_twisted.ensureDeferred
async def test_disconnect_mid_upload_leaves_nothing(db: Any, tmp_path: Path) -> None:
    client, _ = await _half_sent_upload(db, tmp_path)
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    client.protocol.connectionLost(Failure(ConnectionLost()))
    await client.wait_for(lambda: files_in(tmp_path, "tmp") == [])
    assert files_in(tmp_path, "blobs") == []
    assert (await db.fetch_all("SELECT count(*) FROM package_files"))[0][0] == 0


@pytest_twisted.ensureDeferred
async def test_a_bug_in_the_form_reader_is_500_and_drops_the_temp_file_at_once(
        db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypireg.http.multipart import FormReader

    client, rest = await _half_sent_upload(db, tmp_path)

    def broken(self: FormReader, data: bytes) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(FormReader, "feed", broken)
    client.send(rest)
    assert client.response.startswith(b"HTTP/1.1 500 "), client.response
    # Not only once the connection closes, which a StringTransport never does.
    await client.wait_for(lambda: files_in(tmp_path, "tmp") == [])


@pytest_twisted.ensureDeferred
async def test_truncated_multipart_is_400(db: Any, tmp_path: Path) -> None:
    site, project, token = await upload_site(db, tmp_path)
    wheel = wheel_bytes("demo-pkg", "1.0")
    ctype, body = upload_form("demo-pkg", "1.0", wheel_filename("demo-pkg", "1.0"), wheel)
    truncated = body[: -len(b"--pypiregboundary--\r\n")]
    client = Client(site)
    client.send(head(project, token, ctype, len(truncated)) + truncated)
    await client.wait_for(lambda: b"\r\n\r\n" in client.response)
    assert client.response.startswith(b"HTTP/1.1 400 "), client.response
    await client.wait_for(lambda: files_in(tmp_path, "tmp") == [])
    assert files_in(tmp_path, "blobs") == []


@pytest_twisted.ensureDeferred
async def test_any_chunking_stores_the_same_bytes(db: Any, tmp_path: Path) -> None:
    # The parser itself is fuzzed with hypothesis in test_multipart.py; this
    # drives the whole site with seeded random chunkings.
    rng = random.Random(1234)
    site, project, token = await upload_site(db, tmp_path)
    for round_ in range(12):
        wheel = wheel_bytes("demo-pkg", f"1.{round_}", payload=os.urandom(rng.randint(1, 20000)))
        ctype, body = upload_form("demo-pkg", f"1.{round_}",
                                  wheel_filename("demo-pkg", f"1.{round_}"), wheel)
        data = head(project, token, ctype, len(body)) + body
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        client = Client(site)
        offset = 0
        for cut in cuts:
            client.send(data[offset:cut])
            offset = cut
            await client.wait_for(lambda c=client: c.transport.producerState == "producing")
        client.send(data[offset:])
        await client.wait_for(lambda c=client: b"\r\n\r\n" in c.response)
        assert client.response.startswith(b"HTTP/1.1 201 "), client.response
        blob = tmp_path / "data" / "blobs"
        sha = hashlib.sha256(wheel).hexdigest()
        assert (blob / sha[:2] / sha[2:4] / sha).read_bytes() == wheel
    assert files_in(tmp_path, "tmp") == []


@pytest_twisted.ensureDeferred
async def test_slow_headers_are_cut_off(db: Any, tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    from pypireg.http import site as site_module

    site, _, _ = await upload_site(db, tmp_path)
    clock = Clock()
    site.clock = clock
    # Slowloris: a request line, then headers that never end.
    client = Client(site)
    client.send(b"GET /api/v4/projects/1/packages/pypi/simple/ HTTP/1.1\r\nHost: x\r\n")
    clock.advance(site_module.HEADER_TIMEOUT - 1)
    client.send(b"X-Drip: 1\r\n")
    assert client.response == b""
    clock.advance(1)
    assert client.response.startswith(b"HTTP/1.1 408 "), client.response
    # A connection that never sends a request line is dropped.
    silent = Client(site)
    clock.advance(site_module.HEADER_TIMEOUT)
    assert silent.transport.disconnecting and silent.response == b""


@pytest_twisted.ensureDeferred
async def test_failed_auth_is_rate_limited_but_valid_tokens_pass(registry: Any) -> None:
    import treq

    from pypireg.access import FAILURES_PER_WINDOW
    from tests.support.http import basic, project_with_tokens

    project, _, read = await project_with_tokens(registry)
    url = registry.api(project.id) + "/simple/"
    bad = basic("pypireg_" + "z" * 43)
    for _ in range(FAILURES_PER_WINDOW):
        resp = await treq.get(url, headers=bad)
        assert resp.code == 401
        await resp.content()
    resp = await treq.get(url, headers=bad)
    assert resp.code == 429
    assert int(resp.headers.getRawHeaders(b"retry-after")[0]) > 0
    await resp.content()
    resp = await treq.get(url, headers=basic(read))  # same address, valid token
    assert resp.code == 200
    await resp.content()
