"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import shutil
from typing import Any

import pytest_twisted
import treq

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
