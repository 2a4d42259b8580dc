"""The upstream proxy through the whole site: one index, private names first.

The upstream is a second in-process registry on a real port (a JSON
upstream, PEP 691): its public project `pub` holds the "public" packages.
The registry under test proxies it for the private project `acme`.
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

from pypireg.storage import name_origins as origin_store
from pypireg.storage import projects as project_store
from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.database import Database
from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import Registry, basic, project_with_tokens, start_registry, upload
from tests.support.waiting import eventually

JSON = {b"Accept": [b"application/vnd.pypi.simple.v1+json"]}


class Setup:
    def __init__(self, upstream: Registry, proxy: Registry, upstream_token: str,
                 read: str, write: str) -> None:
        self.upstream = upstream
        self.proxy = proxy
        self.upstream_token = upstream_token
        self.read = read
        self.write = write

    async def stop_upstream(self) -> None:
        """The upstream goes away: no new connections, and the proxy's pooled ones close."""
        await self.upstream.stop()
        await self.proxy.proxy.close()

    def index(self, project: str = "acme") -> str:
        return f"{self.proxy.api(project)}/simple"

    async def publish(self, name: str, version: str) -> bytes:
        """Upload a wheel to the upstream's public project; its bytes."""
        content = wheel_bytes(name, version)
        code, text, _ = await upload(self.upstream, "pub", self.upstream_token,
                                     wheel_filename(name, version), content, name=name,
                                     version=version)
        assert code == 201, text
        return content

    async def page(self, name: str, token: str | None = None, project: str = "acme"
                   ) -> tuple[int, Any, Any]:
        headers = dict(JSON)
        if token is not False:
            headers.update(basic(token or self.read))
        resp = await treq.get(f"{self.index(project)}/{name}/", headers=headers)
        body = await resp.content()
        return resp.code, (json.loads(body) if resp.code == 200 else body.decode()), resp

    async def download(self, url: str, token: str | None = None) -> tuple[int, bytes]:
        resp = await treq.get(url, headers=basic(token or self.read))
        return resp.code, await resp.content()


@pytest_twisted.async_yield_fixture()
async def setup(db: Database, tmp_path: Path) -> AsyncIterator[Setup]:
    upstream = await start_registry(db, tmp_path / "up")
    await project_store.create_project(db, "pub", public=True)
    from pypireg.storage import tokens as token_store

    pub = await project_store.get_project(db, "pub")
    assert pub is not None
    _, upstream_token = await token_store.create_token(db, pub.id, "write")
    url = f"{upstream.api('pub')}/simple/"
    proxy = await start_registry(db, tmp_path / "proxy", upstreams=[
        {"name": "public", "url": url, "timeout": "2s"}])
    _, write, read = await project_with_tokens(proxy, "acme")
    yield Setup(upstream, proxy, upstream_token, read, write)
    await proxy.stop()
    await upstream.stop()


def _absolute(setup: Setup, name: str, url: str) -> str:
    from urllib.parse import urljoin

    return urljoin(f"{setup.index()}/{name}/", url)


@pytest_twisted.ensureDeferred
async def test_a_dependency_only_upstream_installs_through_the_one_index(setup: Setup) -> None:
    content = await setup.publish("six", "1.16.0")
    code, page, resp = await setup.page("six")
    assert code == 200, page
    assert resp.headers.getRawHeaders(b"X-Pypireg-Source") == [b"upstream public"]
    [entry] = page["files"]
    sha256 = hashlib.sha256(content).hexdigest()
    assert entry["hashes"] == {"sha256": sha256}
    assert entry["filename"] == wheel_filename("six", "1.16.0")
    # The URL is ours, never the upstream's: no client is sent upstream.
    assert entry["url"] == f"../../files/{sha256}/{entry['filename']}"
    assert entry["core-metadata"] and entry["upload-time"] and entry["size"] == len(content)
    assert page["versions"] == ["1.16.0"]

    code, body = await setup.download(_absolute(setup, "six", entry["url"]))
    assert code == 200 and body == content
    # Kept once the client has its answer (the blob's fsync, then the row).
    cached = await eventually(lambda: cache_store.get_file(setup.proxy.db, sha256))
    assert cached.upstream == "public" and cached.size == len(content)

    # PEP 658: the core metadata file too, checked against its advertised hash.
    code, metadata = await setup.download(_absolute(setup, "six", entry["url"]) + ".metadata")
    assert code == 200 and b"Name: six" in metadata
    metadata_sha256 = entry["core-metadata"]["sha256"]
    assert hashlib.sha256(metadata).hexdigest() == metadata_sha256
    # Served before it is kept; kept (blob, then row) right after.
    await setup.proxy.proxy.files.settled()
    assert await cache_store.get_file(setup.proxy.db, metadata_sha256) is not None

    # Once cached, the files no longer need the upstream.
    await setup.stop_upstream()
    code, body = await setup.download(_absolute(setup, "six", entry["url"]))
    assert code == 200 and body == content
    code, again = await setup.download(_absolute(setup, "six", entry["url"]) + ".metadata")
    assert code == 200 and again == metadata


@pytest_twisted.ensureDeferred
async def test_the_private_name_wins_whatever_the_upstream_publishes(setup: Setup) -> None:
    mine = wheel_bytes("demo-pkg", "1.0")
    code, text, _ = await upload(setup.proxy, "acme", setup.write,
                                 wheel_filename("demo-pkg", "1.0"), mine)
    assert code == 201, text
    await setup.publish("demo-pkg", "99.0")  # dependency confusion, attempted
    code, page, resp = await setup.page("demo-pkg")
    assert code == 200
    assert [f["filename"] for f in page["files"]] == [wheel_filename("demo-pkg", "1.0")]
    assert resp.headers.getRawHeaders(b"X-Pypireg-Source") is None


@pytest_twisted.ensureDeferred
async def test_a_name_once_uploaded_is_never_proxied_even_with_its_files_gone(
        setup: Setup) -> None:
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    await origin_store.reserve_name(setup.proxy.db, acme.id, "internal-tool")
    await setup.publish("internal-tool", "5.0")
    code, text, _ = await setup.page("internal-tool")
    assert code == 404, text


@pytest_twisted.ensureDeferred
async def test_a_proxied_name_is_locked_to_its_upstream(setup: Setup) -> None:
    await setup.publish("six", "1.16.0")
    assert (await setup.page("six"))[0] == 200
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    origin = await origin_store.get_origin(setup.proxy.db, acme.id, "six")
    assert origin is not None and (origin.origin, origin.upstream) == ("upstream", "public")
    code, text, _ = await upload(setup.proxy, "acme", setup.write,
                                 wheel_filename("six", "2.0"), wheel_bytes("six", "2.0"),
                                 name="six", version="2.0")
    assert code == 409, text
    assert "upstream" in text


@pytest_twisted.ensureDeferred
async def test_names_in_a_namespace_are_never_proxied(setup: Setup) -> None:
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    await setup.publish("acme-secret", "1.0")
    await origin_store.grant_namespace(setup.proxy.db, "acme", "acme", project_id=acme.id)
    code, _, _ = await setup.page("acme-secret")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_access_rules_do_not_change_for_upstream_names(setup: Setup) -> None:
    await setup.publish("six", "1.16.0")
    resp = await treq.get(f"{setup.index()}/six/", headers=JSON)
    assert resp.code == 401
    assert resp.headers.getRawHeaders(b"WWW-Authenticate")
    await resp.content()


@pytest_twisted.ensureDeferred
async def test_a_name_that_exists_nowhere_is_404(setup: Setup) -> None:
    code, text, _ = await setup.page("no-such-package")
    assert code == 404, text
    row = await cache_store.get_page(setup.proxy.db, "public", "no-such-package")
    assert row is not None and row.state == "missing"


@pytest_twisted.ensureDeferred
async def test_an_upstream_down_for_a_new_name_is_a_502(setup: Setup) -> None:
    await setup.stop_upstream()
    code, text, _ = await setup.page("six")
    assert code == 502, text
    assert "public" in text and "retry" in text


@pytest_twisted.ensureDeferred
async def test_stale_if_error(setup: Setup) -> None:
    await setup.publish("six", "1.16.0")
    assert (await setup.page("six"))[0] == 200
    await setup.stop_upstream()
    # Past its ttl (forgotten), the page is revalidated: the upstream is down.
    await cache_store.forget_page(setup.proxy.db, "public", "six")
    setup.proxy.proxy.index.pages.forget_all()
    code, page, resp = await setup.page("six")
    assert code == 200 and len(page["files"]) == 1
    [stale] = resp.headers.getRawHeaders(b"X-Pypireg-Stale")
    assert stale.startswith(b"upstream public failed")


@pytest_twisted.ensureDeferred
async def test_blocked_versions_are_hidden_and_not_downloadable(setup: Setup) -> None:
    await setup.publish("six", "1.16.0")
    content = await setup.publish("six", "1.17.0")
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    await cache_store.add_block(setup.proxy.db, acme.id, "six", "1.17", "malicious")
    code, page, _ = await setup.page("six")
    assert code == 200
    assert page["versions"] == ["1.16.0"]
    sha256 = hashlib.sha256(content).hexdigest()
    url = _absolute(setup, "six", f"../../files/{sha256}/{wheel_filename('six', '1.17.0')}")
    assert (await setup.download(url))[0] == 404
    await cache_store.add_block(setup.proxy.db, acme.id, "six", None, "all of it")
    assert (await setup.page("six"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_an_upstream_404_removes_the_name_and_keeps_its_cached_files(
        setup: Setup) -> None:
    content = await setup.publish("six", "1.16.0")
    code, page, _ = await setup.page("six")
    url = _absolute(setup, "six", page["files"][0]["url"])
    assert (await setup.download(url))[0] == 200
    await eventually(lambda: cache_store.get_file(setup.proxy.db,
                                                  hashlib.sha256(content).hexdigest()))
    # The upstream loses the name.
    pub = await project_store.get_project(setup.proxy.db, "pub")
    assert pub is not None
    await setup.proxy.db.execute("DELETE FROM packages WHERE project_id = %s", (pub.id,))
    await cache_store.forget_page(setup.proxy.db, "public", "six")
    setup.proxy.proxy.index.pages.forget_all()
    code, _, _ = await setup.page("six")
    assert code == 404
    row = await cache_store.get_page(setup.proxy.db, "public", "six")
    assert row is not None and row.state == "missing"
    assert await cache_store.get_file(setup.proxy.db, hashlib.sha256(content).hexdigest())
    # An install pinned to the file (a lock file's URL and hash) still works…
    assert await setup.download(url) == (200, content)
    # …unless an admin blocks it.
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    await cache_store.add_block(setup.proxy.db, acme.id, "six", "1.16.0", "compromised")
    assert (await setup.download(url))[0] == 404


@pytest_twisted.ensureDeferred
async def test_an_index_without_upstreams_proxies_nothing(setup: Setup) -> None:
    await setup.publish("six", "1.16.0")
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    await cache_store.set_index_upstreams(setup.proxy.db, [], project_id=acme.id)
    assert (await setup.page("six"))[0] == 404
    await cache_store.set_index_upstreams(setup.proxy.db, ["public"], project_id=acme.id)
    assert (await setup.page("six"))[0] == 200



@pytest_twisted.ensureDeferred
async def test_eviction_never_removes_the_blob_of_a_local_upload(setup: Setup) -> None:
    # Here the upstream shares the database, so its uploads are local files
    # with the same bytes (content addressing): their blobs must stay.
    content = await setup.publish("six", "1.16.0")
    _, page, _ = await setup.page("six")
    assert (await setup.download(_absolute(setup, "six", page["files"][0]["url"])))[0] == 200
    sha256 = hashlib.sha256(content).hexdigest()
    await eventually(lambda: cache_store.get_file(setup.proxy.db, sha256))
    blob = setup.proxy.proxy.files.blobs.path_for(sha256)
    old = time.time() - 3600
    os.utime(blob, (old, old))
    assert await setup.proxy.proxy.files.evict(0) == 0
    assert await cache_store.get_file(setup.proxy.db, sha256) is None
    assert blob.exists()


@pytest_twisted.ensureDeferred
async def test_the_package_pages_show_where_a_proxied_name_comes_from(setup: Setup) -> None:
    await setup.publish("six", "1.16.0")
    await setup.publish("six", "1.17.0")
    assert (await setup.page("six"))[0] == 200
    acme = await project_store.get_project(setup.proxy.db, "acme")
    assert acme is not None
    await cache_store.add_block(setup.proxy.db, acme.id, "six", "1.17.0", "malicious")
    resp = await treq.get(f"{setup.proxy.url}/acme/-/packages/six", headers=basic(setup.read))
    page = (await resp.content()).decode()
    assert resp.code == 200, page
    assert "From upstream <strong>public</strong>" in page
    assert "1.16.0" in page and '1.17.0 <span class="badge">Blocked</span>' in page
    resp = await treq.get(f"{setup.proxy.url}/acme/-/packages", headers=basic(setup.read))
    listing = (await resp.content()).decode()
    assert resp.code == 200 and "From upstreams" in listing and ">six</a>" in listing
    # A name never served here has no page.
    resp = await treq.get(f"{setup.proxy.url}/acme/-/packages/dep-x", headers=basic(setup.read))
    assert resp.code == 404
    await resp.content()


@pytest_twisted.ensureDeferred
async def test_a_group_index_proxies_with_its_own_upstream_list(setup: Setup) -> None:
    from pypireg.storage import groups as group_store

    db = setup.proxy.db
    group = await group_store.create_group(db, "team", public=True)
    await project_store.create_project(db, "team/app", public=True)
    await setup.publish("six", "1.16.0")
    url = f"{setup.proxy.url}/api/v4/groups/team/-/packages/pypi/simple/six/"
    resp = await treq.get(url, headers=JSON)
    assert resp.code == 200
    assert [f["filename"] for f in json.loads(await resp.content())["files"]] == [
        wheel_filename("six", "1.16.0")]
    await cache_store.set_index_upstreams(db, [], group_id=group.id)
    setup.proxy.proxy.index.pages.forget_all()
    resp = await treq.get(url, headers=JSON)
    assert resp.code == 404
    await resp.content()
