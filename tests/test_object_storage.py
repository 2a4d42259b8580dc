"""Blob storage on both backends (a folder, an S3 bucket on moto), and S3's own behaviour.

The `stored` registry runs once per backend: uploads, downloads (GET, HEAD,
Range), delete + gc, fsck and crash leftovers are checked through the
backend interface, so the same assertions hold for both. The S3-only tests
drive `S3BlobStore` and the daemon's site against the moto server over real
HTTP: multipart uploads with a bounded number of parts in flight, a failed
part, redirect downloads, stale multipart uploads.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred, fail
from twisted.web.client import Agent, FileBodyProducer

from pypireg.admin.fsck import fsck
from pypireg.config import MIB, parse_config
from pypireg.domain.errors import RegistryError
from pypireg.storage.gc import collect_garbage
from pypireg.storage.s3 import S3Client, S3Error
from pypireg.storage.s3_blobs import S3BlobStore
from tests.distributions import wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import project_with_tokens, start_registry, upload
from tests.support.waiting import next_turn


def _file_url(reg: Any, project: Any, data: bytes, filename: str) -> str:
    return f"{reg.api(project.id)}/files/{hashlib.sha256(data).hexdigest()}/{filename}"


async def _blob_names(reg: Any) -> set[str]:
    """The sha256 of every stored blob, whichever the backend."""
    blobs = reg.blobs
    if isinstance(blobs, S3BlobStore):
        prefix = f"{blobs.config.prefix}blobs/"
        return {o.key[len(prefix):] for o in await blobs.client.list_objects(prefix)}
    return {p.name for p in reg.stored_files()}


async def _age_blobs(reg: Any, seconds: float) -> None:
    """Make every blob look *seconds* old (for gc's grace period)."""
    if isinstance(reg.blobs, S3BlobStore):
        return  # S3 cannot backdate an object: the S3 tests pass grace_seconds=0
    old = time.time() - seconds
    for path in reg.stored_files():
        os.utime(path, (old, old))


async def _uploaded(reg: Any, name: str = "demo-pkg", payload: bytes = b"VALUE = 1\n"
                    ) -> tuple[Any, str, str, bytes, str]:
    project, write, read = await project_with_tokens(reg, name, public=True)
    data = wheel_bytes(name, "1.0", payload=payload)
    filename = wheel_filename(name, "1.0")
    code, text, _ = await upload(reg, project.id, write, filename, data, name=name)
    assert code == 201, text
    return project, write, read, data, filename


@pytest_twisted.ensureDeferred
async def test_upload_then_download_get_head_and_range(stored: Any) -> None:
    project, _, _, data, filename = await _uploaded(stored)
    url = _file_url(stored, project, data, filename)
    assert hashlib.sha256(data).hexdigest() in await _blob_names(stored)

    response = await treq.get(url)
    assert response.code == 200
    assert await response.content() == data
    assert response.headers.getRawHeaders(b"content-type") == [b"application/octet-stream"]

    head = await treq.head(url)
    assert head.code == 200
    assert head.headers.getRawHeaders(b"content-length") == [str(len(data)).encode()]

    ranged = await treq.get(url, headers={b"Range": [b"bytes=10-99"]})
    assert ranged.code == 206
    assert await ranged.content() == data[10:100]
    assert ranged.headers.getRawHeaders(b"content-range") == [
        f"bytes 10-99/{len(data)}".encode()]

    beyond = await treq.get(url, headers={b"Range": [f"bytes={len(data) + 5}-".encode()]})
    assert beyond.code == 416
    await beyond.content()

    metadata = await treq.get(url + ".metadata")
    assert metadata.code == 200
    assert b"Name: demo-pkg" in await metadata.content()


@pytest_twisted.ensureDeferred
async def test_deleted_files_blobs_go_with_gc(stored: Any) -> None:
    _, _, _, data, filename = await _uploaded(stored)
    sha256 = hashlib.sha256(data).hexdigest()
    await stored.db.execute("DELETE FROM package_files WHERE filename = %s", (filename,))

    # Young blobs stay: an upload may be about to commit a row for them.
    kept = await collect_garbage(stored.db, stored.blobs)
    assert kept.removed == 0 and sha256 in await _blob_names(stored)

    await _age_blobs(stored, 7200)
    result = await collect_garbage(stored.db, stored.blobs, grace_seconds=0)
    assert result.removed == 2  # the wheel and its METADATA file
    assert await _blob_names(stored) == set()


@pytest_twisted.ensureDeferred
async def test_fsck_finds_missing_and_corrupt_blobs(stored: Any) -> None:
    _, _, _, good, _ = await _uploaded(stored, "good-pkg")
    _, _, _, gone, _ = await _uploaded(stored, "gone-pkg")
    _, _, _, rotten, _ = await _uploaded(stored, "rotten-pkg")
    assert (await fsck(stored.db, stored.blobs)).ok

    gone_sha, rotten_sha = (hashlib.sha256(d).hexdigest() for d in (gone, rotten))
    blobs = stored.blobs
    if isinstance(blobs, S3BlobStore):
        await blobs.client.delete(blobs.key_for(gone_sha))
        await blobs.client.put(blobs.key_for(rotten_sha),
                               FileBodyProducer(io.BytesIO(b"bit rot" * 100)))
    else:
        blobs.path_for(gone_sha).unlink()
        blobs.path_for(rotten_sha).write_bytes(b"bit rot" * 100)

    report = await fsck(stored.db, blobs)
    assert not report.ok
    assert [x.split(" ")[0] for x in report.missing] == [wheel_filename("gone-pkg", "1.0")]
    assert [x.split(" ")[0] for x in report.corrupt] == [wheel_filename("rotten-pkg", "1.0")]

    repaired = await fsck(stored.db, blobs, repair=True)
    assert repaired.repaired
    assert (await fsck(stored.db, blobs)).ok
    assert hashlib.sha256(good).hexdigest() in await _blob_names(stored)


@pytest_twisted.ensureDeferred
async def test_a_blob_stored_without_its_row_is_an_orphan_gc_removes(stored: Any) -> None:
    # As after a crash between the object and the row: the blob is durable,
    # no row names it.
    temp = stored.blobs.open_temp(None)
    temp.write(b"orphaned bytes" * 1000)
    digests = await temp.finish()
    await stored.blobs.commit(temp)
    assert digests.sha256 in await _blob_names(stored)
    assert (await fsck(stored.db, stored.blobs)).unreferenced_blobs == 1

    await _age_blobs(stored, 7200)
    result = await collect_garbage(stored.db, stored.blobs, grace_seconds=0)
    assert result.removed == 1
    assert await _blob_names(stored) == set()


@pytest_twisted.ensureDeferred
async def test_a_discarded_upload_leaves_nothing(stored: Any) -> None:
    temp = stored.blobs.open_temp(None)
    temp.write(os.urandom(100_000))
    await temp.finish()
    await temp.discard()
    assert await _blob_names(stored) == set()
    assert await stored.blobs.count_stale_temp_files() == 0


# -- S3 only ---------------------------------------------------------------------


class _Producer:
    """The client's transport, as an upload sees it: records pauses."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class _FailingAgent:
    """An Agent that fails the *nth* UploadPart request (the network dropping)."""

    def __init__(self, nth: int) -> None:
        self._agent = Agent(reactor)
        self._nth = nth
        self._parts = 0

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None
                ) -> Deferred[Any]:
        if b"partNumber=" in uri:
            self._parts += 1
            if self._parts == self._nth:
                return fail(ConnectionResetError("connection reset by peer"))
        return self._agent.request(method, uri, headers, body)


def _store(tmp_path: Path, s3_storage: dict[str, Any], agent: Any = None, **extra: Any
           ) -> S3BlobStore:
    table = {**s3_storage["s3"], **extra}
    config = parse_config({"storage": {"backend": "s3", "s3": table}}).storage.s3
    assert config is not None
    store = S3BlobStore(reactor, config, tmp_path / "data",
                        client=S3Client(reactor, config, agent=agent))
    store.prepare()
    return store


class _GatedAgent:
    """An Agent that holds every UploadPart answer until the test releases it.

    With the S3 endpoint in this process, a part would otherwise be sent
    before the next one fills, and "several in flight" would never happen.
    """

    def __init__(self) -> None:
        self._agent = Agent(reactor)
        self.held: list[tuple[Deferred[Any], Deferred[Any]]] = []
        self.most_held = 0

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None
                ) -> Deferred[Any]:
        d = self._agent.request(method, uri, headers, body)
        if b"partNumber=" not in uri:
            return d
        gate: Deferred[Any] = Deferred()
        self.held.append((d, gate))
        self.most_held = max(self.most_held, len(self.held))
        return gate

    def release(self) -> None:
        answer, gate = self.held.pop(0)
        answer.chainDeferred(gate)


async def _feed(temp: Any, producer: _Producer, data: bytes, spool: Path,
                gate: _GatedAgent | None = None) -> int:
    """Write *data* as a client would (held back while paused); the most part files seen.

    While a full part waits for a place in flight, the oldest part held is
    let through (a pause for a slow disk passes by itself).
    """
    most = 0
    view = memoryview(data)
    for start in range(0, len(data), 256 * 1024):
        while producer.paused:
            most = max(most, len(list(spool.iterdir())))
            if gate is not None and gate.held and temp.parts_waiting:
                gate.release()
            await next_turn()
        temp.write(bytes(view[start:start + 256 * 1024]))
    return most


async def _drain(temp: Any, gate: _GatedAgent) -> Any:
    """finish(), letting held parts through until it returns."""
    d = Deferred.fromCoroutine(temp.finish())
    while not d.called:
        if gate.held:
            gate.release()
        await next_turn()
    return await d


@pytest_twisted.ensureDeferred
async def test_a_large_upload_goes_up_in_parts_with_a_bounded_number_in_flight(
        tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    gate = _GatedAgent()
    store = _store(tmp_path, s3_storage, gate, part_size="5MiB", parts_in_flight=2)
    data = os.urandom(31 * MIB)
    producer = _Producer()
    temp = store.open_temp(producer)  # type: ignore[arg-type]
    most_files = await _feed(temp, producer, data, store._spool.tmp_dir, gate)
    digests = await _drain(temp, gate)
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert temp.multipart
    # Several in flight at once, never more than allowed; the client was held back.
    assert temp.most_in_flight == 2
    assert gate.most_held == 2
    assert producer.pauses > 0
    # On local disk: the parts in flight, one queued and the one filling, at most.
    assert most_files <= 4
    await store.commit(temp)
    assert await store.client.head(store.key_for(digests.sha256)) == len(data)
    # The temp object went once copied; the parts' local files went as they were sent.
    assert [o.key for o in await store.client.list_objects("reg/tmp/")] == []
    assert list(store._spool.tmp_dir.iterdir()) == []
    got = await store.client.get_bytes(store.key_for(digests.sha256), 0, len(data) - 1)
    assert got == data
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_small_upload_is_one_put_straight_to_its_key(
        tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    store = _store(tmp_path, s3_storage)
    temp = store.open_temp(None)
    temp.write(b"small")
    digests = await temp.finish()
    assert not temp.multipart
    assert await store.client.list_multipart("reg/") == []
    await store.commit(temp)
    assert [o.key for o in await store.client.list_objects("reg/")] == [
        f"reg/blobs/{digests.sha256}"]
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_part_fails_the_upload_and_aborts_it(
        tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    store = _store(tmp_path, s3_storage, _FailingAgent(nth=2), part_size="5MiB",
                   parts_in_flight=2)
    producer = _Producer()
    temp = store.open_temp(producer)  # type: ignore[arg-type]
    await _feed(temp, producer, os.urandom(23 * MIB), store._spool.tmp_dir)
    with pytest.raises(S3Error) as info:
        await temp.finish()
    assert info.value.code == 503 and "object storage" in info.value.reason
    assert not producer.paused  # the rest of the body may drain
    await temp.discard()
    assert await store.client.list_multipart("reg/") == []
    assert await store.client.list_objects("reg/") == []
    assert list(store._spool.tmp_dir.iterdir()) == []
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_part_during_an_upload_leaves_no_row(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    reg = await start_registry(db, tmp_path, max_size=64 * MIB, storage={
        "backend": "s3", "s3": {**s3_storage["s3"], "part_size": "5MiB"}})
    config = reg.blobs.config
    reg.blobs.client = S3Client(reactor, config, agent=_FailingAgent(nth=2))
    try:
        project, write, _ = await project_with_tokens(reg)
        data = wheel_bytes("big-pkg", "1.0", payload=os.urandom(16 * MIB))
        code, text, _ = await upload(reg, project.id, write, wheel_filename("big-pkg", "1.0"),
                                     data, name="big-pkg")
        assert code == 503, text
        assert "object storage" in text
        assert await db.fetch_all("SELECT id FROM package_files") == []
        assert await reg.blobs.client.list_multipart("reg/") == []
    finally:
        await reg.stop()


@pytest_twisted.ensureDeferred
async def test_a_multipart_wheel_is_inspected_by_ranged_reads_and_served(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    reg = await start_registry(db, tmp_path, max_size=64 * MIB, storage={
        "backend": "s3", "s3": {**s3_storage["s3"], "part_size": "5MiB"}})
    try:
        project, _, _, data, filename = await _uploaded(reg, "big-pkg",
                                                        payload=os.urandom(12 * MIB))
        rows = await db.fetch_all("SELECT metadata_sha256 FROM package_files")
        assert rows[0][0] is not None  # METADATA was read out of the remote object
        response = await treq.get(_file_url(reg, project, data, filename))
        assert await response.content() == data
    finally:
        await reg.stop()


@pytest_twisted.ensureDeferred
async def test_redirect_mode_answers_302_to_a_presigned_url_that_works(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    reg = await start_registry(db, tmp_path, storage={
        "backend": "s3", "s3": {**s3_storage["s3"], "downloads": "redirect"}})
    try:
        project, _, _, data, filename = await _uploaded(reg)
        url = _file_url(reg, project, data, filename)
        response = await treq.get(url, allow_redirects=False)
        assert response.code == 302
        assert response.headers.getRawHeaders(b"cache-control") == [b"no-store"]
        location = response.headers.getRawHeaders(b"location")[0].decode()
        assert "X-Amz-Signature=" in location and "X-Amz-Expires=300" in location
        await response.content()
        # The index keeps pypireg's own URL; the presigned one works without credentials.
        direct = await treq.get(location)
        assert direct.code == 200
        assert await direct.content() == data
        assert direct.headers.getRawHeaders(b"content-disposition") == [
            f'attachment; filename="{filename}"'.encode()]
        # A Range goes along to the presigned URL.
        ranged = await treq.get(url, headers={b"Range": [b"bytes=3-9"]}, allow_redirects=False)
        assert ranged.code == 302
        target = ranged.headers.getRawHeaders(b"location")[0]
        await ranged.content()
        part = await treq.get(target.decode(), headers={b"Range": [b"bytes=3-9"]})
        assert part.code == 206 and await part.content() == data[3:10]
        head = await treq.head(url, allow_redirects=False)
        assert head.code == 200
        assert head.headers.getRawHeaders(b"content-length") == [str(len(data)).encode()]
        # The redirect counted as a download; the later range did not.
        assert list(reg.downloads.files.pending().values()) == [1]
    finally:
        await reg.stop()


@pytest_twisted.ensureDeferred
async def test_gc_aborts_stale_multipart_uploads_and_removes_stale_temp_objects(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    store = _store(tmp_path, s3_storage)
    client = store.client
    # Left by a crashed daemon two hours ago, and one in progress now.
    stale = f"reg/tmp/{int(time.time()) - 7200}-deadbeef"
    fresh = store.temp_key()
    stale_id = await client.create_multipart(stale)
    await client.create_multipart(fresh)
    await client.put(f"reg/tmp/{int(time.time()) - 7200}-cafe",
                     FileBodyProducer(io.BytesIO(b"completed, never copied")))

    result = await collect_garbage(db, store)
    assert result.aborted_uploads == 2
    left = await client.list_multipart("reg/")
    assert [u.key for u in left] == [fresh]
    assert stale_id not in {u.upload_id for u in left}
    assert await client.list_objects("reg/tmp/") == []
    await store.close()


@pytest_twisted.ensureDeferred
async def test_no_credentials_is_a_clear_error_and_nothing_is_logged(
        tmp_path: Path, s3_storage: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = _store(tmp_path, s3_storage)
    with pytest.raises(Exception, match="AWS_ACCESS_KEY_ID") as info:
        await store.exists("0" * 64)
    assert not isinstance(info.value, RegistryError) or info.value.code == 503
    await store.close()


@pytest_twisted.ensureDeferred
async def test_upstream_files_are_cached_in_the_same_backend(
        db: Any, tmp_path: Path, storage_backend: dict[str, Any]) -> None:
    from pypireg.storage import projects as project_store
    from pypireg.storage import tokens as token_store
    from pypireg.storage import upstream_cache as cache_store
    from tests.support.http import basic
    from tests.support.waiting import eventually

    upstream = await start_registry(db, tmp_path / "up")
    pub = await project_store.create_project(db, "pub", public=True)
    _, upstream_token = await token_store.create_token(db, pub.id, "write")
    proxy = await start_registry(db, tmp_path / "proxy", storage=storage_backend, upstreams=[
        {"name": "public", "url": f"{upstream.api('pub')}/simple/", "timeout": "2s"}])
    try:
        _, _, read = await project_with_tokens(proxy, "acme")
        content = wheel_bytes("six", "1.16.0")
        code, text, _ = await upload(upstream, "pub", upstream_token,
                                     wheel_filename("six", "1.16.0"), content, name="six",
                                     version="1.16.0")
        assert code == 201, text
        sha256 = hashlib.sha256(content).hexdigest()
        url = f"{proxy.api('acme')}/files/{sha256}/{wheel_filename('six', '1.16.0')}"
        page = await treq.get(f"{proxy.api('acme')}/simple/six/", headers=basic(read))
        assert page.code == 200 and sha256 in (await page.content()).decode()

        first = await treq.get(url, headers=basic(read))
        assert first.code == 200 and await first.content() == content
        await eventually(lambda: cache_store.get_file(db, sha256))
        assert sha256 in await _blob_names(proxy)

        # Cached: served from the backend once the upstream is gone.
        await upstream.stop()
        await proxy.proxy.close()
        again = await treq.get(url, headers=basic(read))
        assert again.code == 200 and await again.content() == content
    finally:
        await proxy.stop()
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_downloads_count_as_on_a_local_file(stored: Any) -> None:
    project, _, _, data, filename = await _uploaded(stored)
    url = _file_url(stored, project, data, filename)
    for headers in ({}, {b"Range": [b"bytes=0-99"]}):
        response = await treq.get(url, headers=headers)
        await response.content()
    for headers in ({b"Range": [b"bytes=10-99"]}, {}):
        response = await (treq.get(url, headers=headers) if headers else treq.head(url))
        await response.content()
    # The whole file, and a range from byte 0; not a later range, not a HEAD.
    assert list(stored.downloads.files.pending().values()) == [2]
