"""The upstream proxy against upstreams that misbehave, and against each other.

Every upstream is a LocalUpstream (tests/support/upstreams.py) on
127.0.0.1; the registry under test proxies it for the private project
`acme`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.web.server import NOT_DONE_YET, Request

from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.database import Database
from tests.distributions import wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import Registry, basic, project_with_tokens, start_registry
from tests.support.upstreams import (
    HTML_V1,
    JSON_V1,
    Link,
    LocalUpstream,
    NeverAnswers,
    Page,
    Redirect,
    Status,
    Streamed,
    Truncated,
    html_page,
    json_page,
    start_upstream,
)
from tests.support.waiting import eventually, until

ACCEPT_JSON = {b"Accept": [JSON_V1.encode()]}


class Proxy:
    def __init__(self, upstream: LocalUpstream, registry: Registry, read: str) -> None:
        self.upstream = upstream
        self.registry = registry
        self.read = read

    def page_url(self, name: str) -> str:
        return f"{self.registry.api('acme')}/simple/{name}/"

    async def page(self, name: str) -> tuple[int, Any, Any]:
        resp = await treq.get(self.page_url(name), headers={**ACCEPT_JSON, **basic(self.read)})
        body = await resp.content()
        return resp.code, (json.loads(body) if resp.code == 200 else body.decode()), resp

    def file_url(self, name: str, entry: dict[str, Any]) -> str:
        from urllib.parse import urljoin

        return urljoin(self.page_url(name), entry["url"])


async def _proxy(db: Database, tmp_path: Path, **upstream: Any) -> Proxy:
    local = await start_upstream()
    registry = await start_registry(db, tmp_path / "proxy", upstreams=[
        {"name": "local", "url": local.index, "timeout": "0.3s", **upstream}])
    _, _, read = await project_with_tokens(registry, "acme")
    return Proxy(local, registry, read)


@pytest_twisted.async_yield_fixture()
async def proxy(db: Database, tmp_path: Path) -> AsyncIterator[Proxy]:
    p = await _proxy(db, tmp_path)
    yield p
    await p.registry.stop()
    await p.upstream.stop()


def _events(registry: Registry, event: str) -> float:
    metrics = registry.site.metrics
    value = metrics.registry.get_sample_value(
        "pypireg_upstream_events_total", {"upstream": "local", "event": event})
    return value or 0.0


@pytest_twisted.ensureDeferred
async def test_a_static_html_tree_serves_as_an_upstream(proxy: Proxy, tmp_path: Path) -> None:
    # A pypiserver-like upstream: plain files, PEP 503 HTML, hashes in fragments.
    content = wheel_bytes("six", "1.16.0")
    filename = wheel_filename("six", "1.16.0")
    tree = tmp_path / "tree"
    (tree / "simple" / "six").mkdir(parents=True)
    (tree / "packages").mkdir()
    (tree / "packages" / filename).write_bytes(content)
    sha256 = hashlib.sha256(content).hexdigest()
    (tree / "simple" / "six" / "index.html").write_bytes(
        html_page("six", [Link(filename, f"../../packages/{filename}", sha256)]))
    proxy.upstream.static(tree)

    code, page, _ = await proxy.page("six")
    assert code == 200, page
    [entry] = page["files"]
    assert entry["hashes"] == {"sha256": sha256}
    resp = await treq.get(proxy.file_url("six", entry), headers=basic(proxy.read))
    assert resp.code == 200 and await resp.content() == content
    await eventually(lambda: cache_store.get_file(proxy.registry.db, sha256))


@pytest_twisted.ensureDeferred
async def test_wrong_bytes_are_never_cached_nor_completed(proxy: Proxy) -> None:
    good = wheel_bytes("evil", "1.0")
    filename = wheel_filename("evil", "1.0")
    proxy.upstream.project("evil", {filename: good})
    # The upstream then sends other bytes than its page's hash says.
    tampered = good[:-10] + b"0123456789"
    proxy.upstream.serve(f"/files/{filename}", Page(tampered, "application/octet-stream"))
    code, page, _ = await proxy.page("evil")
    assert code == 200
    url = proxy.file_url("evil", page["files"][0])

    received = bytearray()
    try:
        # A new connection: on a pooled one the client retries a GET that
        # got no response, which would count the failure twice.
        resp = await treq.get(url, headers=basic(proxy.read), persistent=False)
        await treq.collect(resp, received.extend)
    except Exception:
        failed = True
    else:
        failed = False
    assert failed, "a download of the wrong bytes completed"
    assert bytes(received) != tampered
    sha256 = hashlib.sha256(good).hexdigest()
    assert await cache_store.get_file(proxy.registry.db, sha256) is None
    assert not proxy.registry.stored_files()
    assert await proxy.registry.settled_temp_files() == []
    assert proxy.upstream.hits(f"/files/{filename}") == 1, proxy.upstream.seen
    assert _events(proxy.registry, "integrity") == 1


@pytest_twisted.ensureDeferred
async def test_a_connection_dropped_mid_file_is_not_cached_and_a_retry_works(
        proxy: Proxy) -> None:
    content = wheel_bytes("flaky", "1.0") + b"\0" * 200_000
    filename = wheel_filename("flaky", "1.0")
    proxy.upstream.project("flaky", {filename: content})
    _, page, _ = await proxy.page("flaky")
    url = proxy.file_url("flaky", page["files"][0])
    proxy.upstream.serve(f"/files/{filename}",
                         Truncated(content, 100_000, "application/octet-stream"))
    try:
        resp = await treq.get(url, headers=basic(proxy.read))
        body = await resp.content()
    except Exception:
        body = None
    assert body != content
    sha256 = hashlib.sha256(content).hexdigest()
    assert await cache_store.get_file(proxy.registry.db, sha256) is None

    proxy.upstream.serve(f"/files/{filename}", Page(content, "application/octet-stream"))
    resp = await treq.get(url, headers=basic(proxy.read))
    assert resp.code == 200 and await resp.content() == content
    await eventually(lambda: cache_store.get_file(proxy.registry.db, sha256))


@pytest_twisted.ensureDeferred
async def test_a_slow_upstream_is_a_504_and_a_failing_one_a_502(proxy: Proxy) -> None:
    proxy.upstream.serve("/simple/slow/", NeverAnswers())
    code, text, _ = await proxy.page("slow")
    assert code == 504, text
    proxy.upstream.serve("/simple/broken/", Status(500))
    code, text, _ = await proxy.page("broken")
    assert code == 502, text
    assert "500" in text
    assert _events(proxy.registry, "error") == 2


@pytest_twisted.ensureDeferred
async def test_a_cached_page_is_served_stale_while_the_upstream_fails(proxy: Proxy) -> None:
    proxy.upstream.project("six", {wheel_filename("six", "1.16.0"): wheel_bytes("six", "1.16.0")})
    assert (await proxy.page("six"))[0] == 200
    proxy.upstream.serve("/simple/six/", Status(503))
    await cache_store.forget_page(proxy.registry.db, "local", "six")
    proxy.registry.proxy.index.pages.forget_all()
    code, page, resp = await proxy.page("six")
    assert code == 200 and len(page["files"]) == 1
    assert resp.headers.getRawHeaders(b"X-Pypireg-Stale") == [
        b"upstream local failed: upstream answered 503"]
    assert _events(proxy.registry, "stale") == 1


@pytest_twisted.ensureDeferred
async def test_revalidation_is_conditional(db: Database, tmp_path: Path) -> None:
    p = await _proxy(db, tmp_path, ttl="0s")
    try:
        p.upstream.project("six", {wheel_filename("six", "1.16.0"): wheel_bytes("six", "1.16.0")},
                           etag='"v1"')
        assert (await p.page("six"))[0] == 200
        assert (await p.page("six"))[0] == 200
        second = p.upstream.requests_to("/simple/six/")[-1]
        assert second.header("if-none-match") == '"v1"'
        assert _events(p.registry, "revalidated") >= 1
    finally:
        await p.registry.stop()
        await p.upstream.stop()


class _Gated:
    """A page held until `release()`: the window in which other requests must wait."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        self.requests.append(request)
        return NOT_DONE_YET

    def release(self) -> None:
        for request in self.requests:
            request.setHeader(b"content-type", JSON_V1.encode())
            request.write(self.body)
            request.finish()


@pytest_twisted.ensureDeferred
async def test_two_daemons_on_one_database_fetch_a_page_once(db: Database,
                                                              tmp_path: Path) -> None:
    local = await start_upstream()
    # A long timeout: the test is about sharing one fetch, not about slowness.
    config = [{"name": "local", "url": local.index, "timeout": "60s"}]
    first = await start_registry(db, tmp_path / "a", upstreams=config)
    second = await start_registry(db, tmp_path / "b", upstreams=config)
    _, _, read = await project_with_tokens(first, "acme")
    content = wheel_bytes("six", "1.16.0")
    filename = wheel_filename("six", "1.16.0")
    gated = local.serve("/simple/six/", _Gated(json_page("six", [
        Link(filename, f"../../files/{filename}", hashlib.sha256(content).hexdigest())])))
    try:
        answers = [treq.get(f"{reg.api('acme')}/simple/six/",
                            headers={**ACCEPT_JSON, **basic(read)})
                   for reg in (first, second, first, second)]
        await until(lambda: len(gated.requests) >= 1)
        gated.release()
        for d in answers:
            resp = await d
            assert resp.code == 200
            assert len(json.loads(await resp.content())["files"]) == 1
        assert local.hits("/simple/six/") == 1
    finally:
        await first.stop()
        await second.stop()
        await local.stop()


class _SlowReader(Protocol):
    """Sends one GET and reads nothing until `read()`."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = bytearray()
        self.closed = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def read(self) -> None:
        assert self.transport is not None
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received.extend(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True


@pytest_twisted.ensureDeferred
async def test_a_slow_client_pauses_the_upstream_and_memory_stays_bounded(
        proxy: Proxy) -> None:
    streamed = proxy.upstream.serve("/files/big-1.0-py3-none-any.whl",
                                    Streamed(b"x" * 65536, 320))  # 20 MiB
    proxy.upstream.serve("/simple/big/", Page(json_page("big", [
        Link("big-1.0-py3-none-any.whl", "../../files/big-1.0-py3-none-any.whl",
             streamed.sha256)])))
    code, page, _ = await proxy.page("big")
    assert code == 200
    from urllib.parse import urlsplit

    url = urlsplit(proxy.file_url("big", page["files"][0]))
    auth = basic(proxy.read)[b"Authorization"][0]
    reader = _SlowReader(b"GET " + url.path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Authorization: " + auth + b"\r\nConnection: close\r\n\r\n")
    factory = ClientFactory.forProtocol(lambda: reader)
    reactor.connectTCP("127.0.0.1", url.port, factory)
    # The client reads nothing: the upstream is paused long before the end.
    await until(lambda: streamed.paused and streamed.sent > 0)
    assert streamed.sent < streamed.total // 2
    reader.read()
    await until(lambda: reader.closed)
    head, _, body = bytes(reader.received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == streamed.total and hashlib.sha256(body).hexdigest() == streamed.sha256
    await eventually(lambda: cache_store.get_file(proxy.registry.db, streamed.sha256))


@pytest_twisted.ensureDeferred
async def test_a_metadata_file_that_does_not_match_is_refused(proxy: Proxy) -> None:
    content = wheel_bytes("meta", "1.0")
    filename = wheel_filename("meta", "1.0")
    proxy.upstream.serve(f"/files/{filename}", Page(content, "application/octet-stream"))
    proxy.upstream.serve(f"/files/{filename}.metadata", Page(b"Name: other\n", "text/plain"))
    body = json.loads(json_page("meta", [Link(filename, f"../../files/{filename}",
                                              hashlib.sha256(content).hexdigest())]))
    body["files"][0]["core-metadata"] = {"sha256": hashlib.sha256(b"Name: meta\n").hexdigest()}
    proxy.upstream.serve("/simple/meta/", Page(json.dumps(body).encode()))
    code, page, _ = await proxy.page("meta")
    assert code == 200 and page["files"][0]["core-metadata"]
    resp = await treq.get(proxy.file_url("meta", page["files"][0]) + ".metadata",
                          headers=basic(proxy.read))
    assert resp.code == 502
    assert b"does not match" in await resp.content()
    assert _events(proxy.registry, "integrity") == 1


@pytest_twisted.ensureDeferred
async def test_min_age_hides_fresh_releases(db: Database, tmp_path: Path) -> None:
    p = await _proxy(db, tmp_path, min_age="1d")
    try:
        old, new = wheel_filename("six", "1.0"), wheel_filename("six", "2.0")
        body = json.loads(json_page("six", [Link(old, f"../../files/{old}", "a" * 64),
                                           Link(new, f"../../files/{new}", "b" * 64)]))
        body["files"][0]["upload-time"] = "2020-01-01T00:00:00.000000Z"
        body["files"][1]["upload-time"] = "2999-01-01T00:00:00.000000Z"
        p.upstream.serve("/simple/six/", Page(json.dumps(body).encode()))
        code, page, _ = await p.page("six")
        assert code == 200
        assert [f["filename"] for f in page["files"]] == [old]
    finally:
        await p.registry.stop()
        await p.upstream.stop()


@pytest_twisted.ensureDeferred
async def test_an_html_page_keeps_yanks_and_requires_python(proxy: Proxy) -> None:
    filename = wheel_filename("six", "1.0")
    html = (f'<a href="../../files/{filename}#sha256={"c" * 64}" data-requires-python="&gt;=3.8"'
            f' data-yanked="broken">{filename}</a>').encode()
    proxy.upstream.serve("/simple/six/", Page(html, HTML_V1))
    code, page, _ = await proxy.page("six")
    assert code == 200
    [entry] = page["files"]
    assert entry["requires-python"] == ">=3.8" and entry["yanked"] == "broken"


@pytest_twisted.ensureDeferred
async def test_eviction_keeps_the_most_recently_downloaded_within_the_limit(
        proxy: Proxy) -> None:
    db = proxy.registry.db
    files = {wheel_filename("six", v): wheel_bytes("six", v) for v in ("1.0", "1.1", "1.2")}
    proxy.upstream.project("six", files)
    code, page, _ = await proxy.page("six")
    assert code == 200
    for entry in page["files"]:
        resp = await treq.get(proxy.file_url("six", entry), headers=basic(proxy.read))
        assert resp.code == 200
        await resp.content()
    contents = list(files.values())
    sha = [hashlib.sha256(c).hexdigest() for c in contents]
    for digest in sha:
        await eventually(lambda digest=digest: cache_store.get_file(db, digest))
    blob = proxy.registry.proxy.files.blobs.path_for
    old = time.time() - 3600
    # Downloaded longest ago: 1.0, then 1.1, then 1.2; all fetched an hour ago.
    for age, digest in zip((3, 2, 1), sha, strict=True):
        await db.execute("UPDATE upstream_files SET last_download_at = now() - %s * interval"
                         " '1 hour' WHERE sha256 = %s", (age, digest))
        os.utime(blob(digest), (old, old))

    freed = await proxy.registry.proxy.files.evict(len(contents[1]) + len(contents[2]))
    assert freed == len(contents[0])
    assert await cache_store.get_file(db, sha[0]) is None
    assert not blob(sha[0]).exists()
    assert all(blob(d).exists() for d in sha[1:])
    assert _events(proxy.registry, "evicted") == 1
    # Evicted is not lost: the next download fetches it again.
    entry = next(f for f in page["files"] if f["hashes"]["sha256"] == sha[0])
    resp = await treq.get(proxy.file_url("six", entry), headers=basic(proxy.read))
    assert resp.code == 200 and await resp.content() == contents[0]
    await eventually(lambda: cache_store.get_file(db, sha[0]))


@pytest_twisted.ensureDeferred
async def test_an_offline_upstream_serves_only_what_is_cached(db: Database,
                                                               tmp_path: Path) -> None:
    local = await start_upstream()
    online = await start_registry(db, tmp_path / "on", upstreams=[
        {"name": "local", "url": local.index}])
    offline = await start_registry(db, tmp_path / "off", upstreams=[
        {"name": "local", "url": local.index, "offline": True}])
    _, _, read = await project_with_tokens(online, "acme")
    local.project("six", {wheel_filename("six", "1.0"): wheel_bytes("six", "1.0")})
    local.project("cached-later", {wheel_filename("cached-later", "1.0"):
                                   wheel_bytes("cached-later", "1.0")})
    headers = {**ACCEPT_JSON, **basic(read)}
    try:
        resp = await treq.get(f"{online.api('acme')}/simple/six/", headers=headers)
        assert resp.code == 200
        await resp.content()
        before = len(local.seen)
        resp = await treq.get(f"{offline.api('acme')}/simple/six/", headers=headers)
        assert resp.code == 200
        assert len(json.loads(await resp.content())["files"]) == 1
        resp = await treq.get(f"{offline.api('acme')}/simple/cached-later/", headers=headers)
        assert resp.code == 404
        await resp.content()
        assert len(local.seen) == before  # never asked
    finally:
        await online.stop()
        await offline.stop()
        await local.stop()


@pytest_twisted.ensureDeferred
async def test_the_upstream_project_status_is_passed_on(proxy: Proxy) -> None:
    filename = wheel_filename("old", "1.0")
    proxy.upstream.serve("/simple/old/", Page(json_page(
        "old", [Link(filename, f"../../files/{filename}", "d" * 64)],
        meta={"api-version": "1.4"},
        **{"project-status": {"status": "archived", "reason": "use new instead"}})))
    code, page, _ = await proxy.page("old")
    assert code == 200
    assert page["project-status"] == {"status": "archived", "reason": "use new instead"}
    resp = await treq.get(proxy.page_url("old"), headers=basic(proxy.read))
    html = (await resp.content()).decode()
    assert '<meta name="pypi:project-status" content="archived">' in html


@pytest_twisted.ensureDeferred
async def test_with_live_caches_warm_answers_skip_the_upstream_and_blocks_apply(
        db: Database, tmp_path: Path) -> None:
    from pypireg.storage import projects as project_store
    from pypireg.storage.changes import ChangeListener

    changes = ChangeListener(reactor, db.dsn)
    await changes.start()
    seen: list[str] = []
    changes.subscribe(seen.append)
    local = await start_upstream()
    registry = await start_registry(db, tmp_path / "proxy", changes=changes, upstreams=[
        {"name": "local", "url": local.index}])
    p = Proxy(local, registry, (await project_with_tokens(registry, "acme"))[2])
    try:
        await until(lambda: changes.live)
        content = wheel_bytes("six", "1.0")
        local.project("six", {wheel_filename("six", "1.0"): content,
                              wheel_filename("six", "2.0"): wheel_bytes("six", "2.0")})
        code, page, _ = await p.page("six")
        assert code == 200 and len(page["files"]) == 2
        entry = next(f for f in page["files"] if f["filename"] == wheel_filename("six", "1.0"))
        for attempt in range(3):
            if attempt == 1:  # kept once the first client had its answer
                await eventually(lambda: cache_store.get_file(
                    db, hashlib.sha256(content).hexdigest()))
            resp = await treq.get(p.file_url("six", entry), headers=basic(p.read))
            assert resp.code == 200 and await resp.content() == content
            assert (await p.page("six"))[0] == 200
        assert local.hits("/simple/six/") == 1
        assert local.hits(f"/files/{wheel_filename('six', '1.0')}") == 1
        # Neither the stored page nor the recorded origin dropped every cache…
        assert "upstream_pages" not in seen and "name_origins" not in seen, seen
        # …but a refresh does (the next request asks the upstream again).
        await cache_store.forget_page(db, "local", "six")
        await until(lambda: "upstream_pages" in seen)
        assert (await p.page("six"))[0] == 200
        assert local.hits("/simple/six/") == 2

        acme = await project_store.get_project(db, "acme")
        assert acme is not None
        await cache_store.add_block(db, acme.id, "six", "2.0", "bad")
        for _ in range(100):  # the change notification drops the cached page
            code, page, _ = await p.page("six")
            if len(page["files"]) == 1:
                break
        assert [f["filename"] for f in page["files"]] == [wheel_filename("six", "1.0")]
    finally:
        await registry.stop()
        await local.stop()
        changes.stop()


@pytest_twisted.ensureDeferred
async def test_files_listed_without_a_sha256_are_hashed_before_they_are_listed(
        proxy: Proxy) -> None:
    good = wheel_bytes("nohash", "1.0")
    liar = wheel_bytes("nohash", "2.0")
    old, new = wheel_filename("nohash", "1.0"), wheel_filename("nohash", "2.0")
    proxy.upstream.serve(f"/files/{old}", Page(good, "application/octet-stream"))
    proxy.upstream.serve(f"/files/{new}", Page(liar, "application/octet-stream"))
    html = (f'<a href="../../files/{old}">{old}</a>'
            # An md5 the bytes do not have: the file is left off.
            f'<a href="../../files/{new}#md5={"0" * 32}">{new}</a>').encode()
    proxy.upstream.serve("/simple/nohash/", Page(html, HTML_V1))
    code, page, _ = await proxy.page("nohash")
    assert code == 200
    [entry] = page["files"]
    sha256 = hashlib.sha256(good).hexdigest()
    assert entry["filename"] == old and entry["hashes"] == {"sha256": sha256}
    assert _events(proxy.registry, "integrity") == 1
    # It was fetched once, to hash it; the download comes from the cache.
    resp = await treq.get(proxy.file_url("nohash", entry), headers=basic(proxy.read))
    assert resp.code == 200 and await resp.content() == good
    assert proxy.upstream.hits(f"/files/{old}") == 1
    # The next page asks for its hash, not for the file.
    proxy.registry.proxy.index.pages.forget_all()
    code, page, _ = await proxy.page("nohash")
    assert [f["hashes"]["sha256"] for f in page["files"]] == [sha256]
    assert proxy.upstream.hits(f"/files/{old}") == 1
    # The file that failed its md5 is not fetched again on every page request.
    assert proxy.upstream.hits(f"/files/{new}") == 1
    assert _events(proxy.registry, "integrity") == 1


@pytest_twisted.ensureDeferred
async def test_a_client_going_away_does_not_fail_the_others_waiting_for_the_same_page(
        proxy: Proxy) -> None:
    content = wheel_bytes("six", "1.0")
    filename = wheel_filename("six", "1.0")
    gated = proxy.upstream.serve("/simple/six/", _Gated(json_page("six", [
        Link(filename, f"../../files/{filename}", hashlib.sha256(content).hexdigest())])))
    headers = {**ACCEPT_JSON, **basic(proxy.read)}
    first = treq.get(proxy.page_url("six"), headers=headers, persistent=False)
    await until(lambda: len(gated.requests) == 1)
    second = treq.get(proxy.page_url("six"), headers=headers, persistent=False)
    await until(lambda: proxy.registry.proxy.index.pages.waiting() == 2)
    first.cancel()  # the first client goes away while the page is being fetched
    gated.release()
    resp = await second
    assert resp.code == 200
    assert len(json.loads(await resp.content())["files"]) == 1
    assert proxy.upstream.hits("/simple/six/") == 1


@pytest_twisted.ensureDeferred
async def test_a_metadata_file_is_served_before_it_is_stored(proxy: Proxy) -> None:
    content = wheel_bytes("meta", "1.0")
    filename = wheel_filename("meta", "1.0")
    metadata = b"Metadata-Version: 2.1\nName: meta\nVersion: 1.0\n"
    proxy.upstream.serve(f"/files/{filename}.metadata", Page(metadata, "text/plain"))
    body = json.loads(json_page("meta", [Link(filename, f"../../files/{filename}",
                                              hashlib.sha256(content).hexdigest())]))
    metadata_sha256 = hashlib.sha256(metadata).hexdigest()
    body["files"][0]["core-metadata"] = {"sha256": metadata_sha256}
    proxy.upstream.serve("/simple/meta/", Page(json.dumps(body).encode()))
    code, page, _ = await proxy.page("meta")
    assert code == 200
    url = proxy.file_url("meta", page["files"][0]) + ".metadata"
    # The blob store is slow: its fsync has not returned yet.
    fetched = proxy.registry.proxy.files
    disk_done: Deferred[None] = Deferred()
    real_store = fetched.blobs.store_bytes

    async def slow_store(data: bytes) -> str:
        await disk_done
        return await real_store(data)

    fetched.blobs.store_bytes = slow_store
    try:
        for _ in range(2):  # the second from memory, the upstream asked once
            resp = await treq.get(url, headers=basic(proxy.read))
            assert resp.code == 200 and await resp.content() == metadata
            assert resp.headers.getRawHeaders(b"ETag") == [f'"{metadata_sha256}"'.encode()]
        assert [s.path for s in proxy.upstream.seen].count(f"/files/{filename}.metadata") == 1
        assert await cache_store.get_file(proxy.registry.db, metadata_sha256) is None
        disk_done.callback(None)
        await fetched.settled()
    finally:
        fetched.blobs.store_bytes = real_store
    assert await cache_store.get_file(proxy.registry.db, metadata_sha256) is not None
    resp = await treq.get(url, headers=basic(proxy.read))
    assert resp.code == 200 and await resp.content() == metadata
    assert [s.path for s in proxy.upstream.seen].count(f"/files/{filename}.metadata") == 1


def _listed_elsewhere(proxy: Proxy, host: str) -> tuple[str, bytes]:
    """A page for `six` whose file lives on *host* (the upstream's port); the filename."""
    from urllib.parse import urlsplit

    content = wheel_bytes("six", "1.0")
    filename = wheel_filename("six", "1.0")
    proxy.upstream.serve(f"/files/{filename}", Page(content, "application/octet-stream"))
    url = f"http://{host}:{urlsplit(proxy.upstream.url).port}/files/{filename}"
    proxy.upstream.serve("/simple/six/", Page(json_page("six", [
        Link(filename, url, hashlib.sha256(content).hexdigest())])))
    return filename, content


@pytest_twisted.ensureDeferred
async def test_files_on_another_host_are_fetched_from_public_addresses_only(
        proxy: Proxy) -> None:
    # The index is 127.0.0.1; its page sends the file to "localhost", another
    # host, which resolves to loopback only: no connection is made.
    filename, _ = _listed_elsewhere(proxy, "localhost")
    code, page, _ = await proxy.page("six")
    assert code == 200
    resp = await treq.get(proxy.file_url("six", page["files"][0]), headers=basic(proxy.read))
    assert resp.code == 502
    text = await resp.text()
    assert "localhost is not the index's host and resolves only to non-public" in text
    assert "file_hosts" in text
    assert proxy.upstream.hits(f"/files/{filename}") == 0
    # A redirect from the index's own host to such a host is refused the same way.
    content = wheel_bytes("seven", "1.0")
    moved = wheel_filename("seven", "1.0")
    proxy.upstream.serve(f"/files/{moved}", Redirect(
        f"http://localhost:{proxy.upstream.url.rsplit(':', 1)[1]}/elsewhere/{moved}"))
    proxy.upstream.serve("/simple/seven/", Page(json_page("seven", [
        Link(moved, f"../../files/{moved}", hashlib.sha256(content).hexdigest())])))
    code, page, _ = await proxy.page("seven")
    resp = await treq.get(proxy.file_url("seven", page["files"][0]), headers=basic(proxy.read))
    assert resp.code == 502 and "file_hosts" in await resp.text()
    assert proxy.upstream.hits(f"/files/{moved}") == 1
    assert proxy.upstream.hits(f"/elsewhere/{moved}") == 0


@pytest_twisted.ensureDeferred
async def test_file_hosts_lets_an_upstream_name_its_file_servers(db: Database,
                                                                 tmp_path: Path) -> None:
    p = await _proxy(db, tmp_path, file_hosts=["localhost"])
    try:
        filename, content = _listed_elsewhere(p, "localhost")
        _, page, _ = await p.page("six")
        resp = await treq.get(p.file_url("six", page["files"][0]), headers=basic(p.read))
        assert resp.code == 200 and await resp.content() == content
        assert p.upstream.hits(f"/files/{filename}") == 1
    finally:
        await p.registry.stop()
        await p.upstream.stop()


def test_which_addresses_are_public() -> None:
    from pypireg.upstream.addresses import is_public

    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                    "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1%eth0", "fc00::1",
                    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1", "not an address"):
        assert not is_public(address), address
    for address in ("93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"):
        assert is_public(address), address
