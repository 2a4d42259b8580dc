"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import shutil
from typing import Any

import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import basic, project_with_tokens, upload


async def get(url: str, client: Any = treq) -> tuple[int, str]:
    resp = await client.get(url)
    return resp.code, (await resp.content()).decode()


@pytest_twisted.ensureDeferred
async def test_health_and_readiness(web: Any) -> None:
    # In memory: these answers need no socket.
    assert await get(web.url + "/-/health", web.stub) == (200, "ok\n")
    assert await get(web.url + "/-/ready", web.stub) == (200, "ready\n")
    shutil.rmtree(web.storage / "tmp")
    code, text = await get(web.url + "/-/ready", web.stub)
    assert code == 503 and "storage not writable" in text
    (web.storage / "tmp").mkdir()
    assert (await get(web.url + "/-/ready", web.stub))[0] == 200
    web.db.close()
    code, text = await get(web.url + "/-/ready", web.stub)
    assert code == 503 and "database unreachable" in text
    assert (await get(web.url + "/-/health", web.stub))[0] == 200


@pytest_twisted.ensureDeferred
async def test_metrics_count_requests_bytes_and_uploads(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    wheel = wheel_bytes("demo-pkg", "1.0")
    assert (await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                         wheel))[0] == 201
    resp = await treq.get(registry.api(project.id) + "/simple/demo-pkg/", headers=basic(read))
    etag = resp.headers.getRawHeaders(b"etag")[0]
    await resp.content()
    resp = await treq.get(registry.api(project.id) + "/simple/demo-pkg/",
                          headers={**basic(read), b"If-None-Match": [etag]})
    assert resp.code == 304
    await resp.content()
    code, text = await get(registry.url + "/-/metrics")
    assert code == 200
    lines = text.splitlines()
    assert 'pypireg_http_requests_total{method="POST",route="upload",status="201"} 1.0' in lines
    assert ('pypireg_http_requests_total{method="GET",route="simple_package",status="200"} 1.0'
            in lines)
    assert f"pypireg_uploaded_bytes_total {float(len(wheel))}" in lines
    assert "pypireg_uploads_in_flight 0.0" in lines
    assert "pypireg_not_modified_total 1.0" in lines
    assert any(line.startswith("pypireg_db_pool_connections ") for line in lines)
    assert any(line.startswith('pypireg_http_request_duration_seconds_bucket{le="0.005",'
                               'route="upload"}') for line in lines)


@pytest_twisted.ensureDeferred
async def test_forwarded_headers_only_from_trusted_proxies(db: Any, tmp_path: Any) -> None:

    from pypireg.access import FAILURES_PER_WINDOW
    from pypireg.config import parse_config
    from pypireg.service import build_site
    from tests.support import reactor

    for trusted, expect_separate in ((["127.0.0.0/8"], True), ([], False)):
        config = parse_config({"storage": {"path": str(tmp_path / "data")},
                               "server": {"trusted_proxies": trusted}})
        site, _ = await build_site(reactor, config, db)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/api/v4/projects/1/packages/pypi/simple/"
        try:
            bad = basic("pypireg_" + "q" * 43)
            for _ in range(FAILURES_PER_WINDOW + 1):
                resp = await treq.get(url, headers={**bad, b"X-Forwarded-For": [b"1.2.3.4"]})
                await resp.content()
            assert resp.code == 429
            resp = await treq.get(url, headers={**bad, b"X-Forwarded-For": [b"5.6.7.8"]})
            await resp.content()
            # Behind a trusted proxy each client has its own budget; otherwise
            # the header is ignored and it is all one client, the proxy.
            assert resp.code == (401 if expect_separate else 429)
        finally:
            await port.stopListening()


METRICS_TOKEN = "m3tr1cs-" + "f" * 40


async def site_with(db: Any, tmp_path: Any, **server: Any) -> Any:
    """The registry's site in memory, with these [server] keys."""
    from pypireg.config import parse_config
    from pypireg.service import build_site
    from tests.support import reactor
    from tests.support.http import Registry

    config = parse_config({"storage": {"path": str(tmp_path / "data")}, "server": server})
    site, authorizer = await build_site(reactor, config, db)
    return Registry(db, config, site, authorizer)


def bearer(token: str, scheme: str = "Bearer") -> dict[bytes, list[bytes]]:
    return {b"Authorization": [f"{scheme} {token}".encode()]}


@pytest_twisted.ensureDeferred
async def test_metrics_token_is_required_when_configured(db: Any, tmp_path: Any) -> None:
    reg = await site_with(db, tmp_path, metrics_token=METRICS_TOKEN)
    url = reg.url + "/-/metrics"
    for headers in ({}, bearer("wrong"), bearer(METRICS_TOKEN + "x"), bearer(METRICS_TOKEN[:-1]),
                    bearer(""), basic(METRICS_TOKEN), {b"PRIVATE-TOKEN": [METRICS_TOKEN.encode()]}):
        resp = await reg.stub.get(url, headers=headers)
        body = await resp.text()
        assert resp.code == 401, headers
        assert resp.headers.getRawHeaders(b"www-authenticate") == [
            b'Bearer realm="pypireg metrics"']
        assert "pypireg_http_requests" not in body and METRICS_TOKEN not in body
    for scheme in ("Bearer", "bearer", "BEARER"):
        resp = await reg.stub.get(url, headers=bearer(METRICS_TOKEN, scheme))
        assert resp.code == 200
        assert "pypireg_http_requests_total" in await resp.text()
    # The other routes are untouched by it.
    resp = await reg.stub.get(reg.url + "/-/health")
    assert resp.code == 200


@pytest_twisted.ensureDeferred
async def test_failed_metrics_tokens_count_as_failed_logins(db: Any, tmp_path: Any) -> None:
    reg = await site_with(db, tmp_path, metrics_token=METRICS_TOKEN)
    reg.authorizer.failures.limit = 3
    for _ in range(3):
        assert (await reg.stub.get(reg.url + "/-/metrics", headers=bearer("guess"))).code == 401
    resp = await reg.stub.get(reg.url + "/-/metrics", headers=bearer("guess"))
    assert resp.code == 429 and resp.headers.getRawHeaders(b"retry-after")


@pytest_twisted.ensureDeferred
async def test_metrics_listen_serves_them_alone(db: Any, tmp_path: Any) -> None:
    import socket

    from pypireg.http.ops import MetricsPage, metrics_site
    from tests.support import reactor

    reg = await site_with(db, tmp_path, metrics_listen="tcp:0:interface=127.0.0.1")
    assert reg.config.server.metrics_listen == ("tcp:0:interface=127.0.0.1",)
    # The registry's own listeners no longer serve them: 404, as any unknown URL.
    resp = await reg.stub.get(reg.url + "/-/metrics")
    assert (resp.code, await resp.text()) == (404, "No such URL on this registry.\n")
    assert (await reg.stub.get(reg.url + "/-/health")).code == 200

    page = MetricsPage(reg.site.metrics, None, reg.authorizer.failures)
    port = reactor.listenTCP(0, metrics_site(page, 5.0), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        resp = await treq.get(base + "/-/metrics")
        text = await resp.text()
        assert resp.code == 200
        assert resp.headers.getRawHeaders(b"content-type") == [
            b"text/plain; version=0.0.4; charset=utf-8"]
        # The daemon's own metrics, whichever listener serves them.
        assert "pypireg_uploads_in_flight 0.0" in text.splitlines()
        reg.site.metrics.upstream_event("hit", "public")
        text = await (await treq.get(base + "/-/metrics")).text()
        assert 'pypireg_upstream_events_total{event="hit",upstream="public"} 1.0' in text
        resp = await treq.head(base + "/-/metrics")
        assert resp.code == 200 and await resp.content() == b""
        for path in ("/-/health", "/", "/api/v4/projects/1/packages/pypi/simple/",
                     "/-/metrics/x"):
            resp = await treq.get(base + path)
            assert (resp.code, await resp.text()) == (404, "No such URL on this listener.\n")
        resp = await treq.delete(base + "/-/metrics")
        assert resp.code == 405 and resp.headers.getRawHeaders(b"allow") == [b"GET, HEAD"]
        await resp.content()

        # A body is refused at its first byte, never stored.
        def post_with_body() -> bytes:
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as s:
                s.sendall(b"POST /-/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                          b"\r\n" + b"x" * 65536)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
                return answer

        answer = await deferToThread(post_with_body)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        assert answer.endswith(b"A metrics request has no body.\n")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_metrics_listener_wants_the_token_too(db: Any, tmp_path: Any) -> None:
    from pypireg.http.ops import MetricsPage, metrics_site
    from tests.support import reactor

    reg = await site_with(db, tmp_path, metrics_listen=["tcp:0:interface=127.0.0.1"],
                          metrics_token=METRICS_TOKEN)
    page = MetricsPage(reg.site.metrics, reg.config.server.metrics_token, reg.authorizer.failures)
    port = reactor.listenTCP(0, metrics_site(page, 5.0), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/-/metrics"
    try:
        resp = await treq.get(url)
        assert resp.code == 401
        assert resp.headers.getRawHeaders(b"www-authenticate") == [
            b'Bearer realm="pypireg metrics"']
        await resp.content()
        resp = await treq.get(url, headers=bearer(METRICS_TOKEN))
        assert resp.code == 200 and "pypireg_uploaded_bytes_total" in await resp.text()
    finally:
        await port.stopListening()
