"""The upstream proxy's state in PostgreSQL (storage/upstream_cache.py)."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from pypireg.storage import groups as group_store
from pypireg.storage import projects as project_store
from pypireg.storage import upstream_cache as cache
from pypireg.storage.gc import referenced_blobs


@pytest_twisted.ensureDeferred
async def test_one_fetch_at_a_time_per_name(db: Any) -> None:
    assert await cache.take_fetch_lease(db, "public", "six", 30)
    assert not await cache.take_fetch_lease(db, "public", "six", 30)
    assert await cache.take_fetch_lease(db, "other", "six", 30)  # per upstream
    pending = await cache.get_page(db, "public", "six")
    assert pending is not None and pending.state == "pending" and pending.page is None

    await cache.store_fetched(db, "public", "six", {"files": []}, etag='"e1"',
                              last_modified=None, last_serial=7)
    found = await cache.get_page(db, "public", "six")
    assert found is not None and found.state == "found" and found.page == {"files": []}
    assert (found.etag, found.last_serial, found.fetching_until) == ('"e1"', 7, None)

    # The lease is free again, and one that a dead daemon left expires.
    assert await cache.take_fetch_lease(db, "public", "six", 0)
    assert await cache.take_fetch_lease(db, "public", "six", 30)


@pytest_twisted.ensureDeferred
async def test_revalidation_errors_and_404s(db: Any) -> None:
    await cache.take_fetch_lease(db, "public", "six", 30)
    await cache.store_fetched(db, "public", "six", {"files": [1]}, etag='"e1"',
                              last_modified="Tue, 01 Dec 2026 00:00:00 GMT", last_serial=None)
    before = await cache.get_page(db, "public", "six")
    await cache.take_fetch_lease(db, "public", "six", 30)
    await cache.store_error(db, "public", "six", "timed out")
    failed = await cache.get_page(db, "public", "six")
    assert failed is not None and failed.error == "timed out" and failed.page == {"files": [1]}
    assert failed.fetching_until is None

    await cache.take_fetch_lease(db, "public", "six", 30)
    await cache.store_not_modified(db, "public", "six")
    fresh = await cache.get_page(db, "public", "six")
    assert fresh is not None and before is not None and fresh.checked_at > before.checked_at
    assert fresh.error is None and fresh.page == {"files": [1]}

    await cache.forget_page(db, "public", "six")
    forgotten = await cache.get_page(db, "public", "six")
    assert forgotten is not None and forgotten.etag is None

    await cache.take_fetch_lease(db, "public", "six", 30)
    await cache.store_missing(db, "public", "six")
    missing = await cache.get_page(db, "public", "six")
    assert missing is not None and (missing.state, missing.page) == ("missing", None)


@pytest_twisted.ensureDeferred
async def test_cached_files_are_kept_by_gc_and_purged_by_name(db: Any) -> None:
    await cache.record_file(db, "a" * 64, upstream="public", name="six",
                            filename="six-1.16.0-py2.py3-none-any.whl", size=11,
                            metadata_sha256="b" * 64)
    assert {"a" * 64, "b" * 64} <= await referenced_blobs(db)
    stored = await cache.get_file(db, "a" * 64)
    assert stored is not None and stored.size == 11
    await cache.touch_files(db, [("a" * 64, 0)])
    assert [f.filename for f in await cache.cached_files(db, "six")] == [
        "six-1.16.0-py2.py3-none-any.whl"]
    assert await cache.purge(db, "six") == 1
    assert await cache.get_file(db, "a" * 64) is None


@pytest_twisted.ensureDeferred
async def test_blocks_and_index_upstreams(db: Any) -> None:
    project = await project_store.create_project(db, "acme")
    group = await group_store.create_group(db, "corp")
    assert await cache.add_block(db, project.id, "evil", "1.0", "malware")
    assert not await cache.add_block(db, project.id, "evil", "1.0.0", "same release")
    assert await cache.add_block(db, project.id, "evil", None, "the whole name")
    assert [(b.version, b.reason) for b in await cache.blocks(db, project.id, "evil")] == [
        ("1.0", "malware"), (None, "the whole name")]
    assert await cache.remove_block(db, project.id, "evil", "1.0.0")
    assert await cache.remove_block(db, project.id, "evil", None)
    assert await cache.blocks(db, project.id, "evil") == []

    assert await cache.index_upstreams(db, project_id=project.id) is None
    await cache.set_index_upstreams(db, [], project_id=project.id)
    assert await cache.index_upstreams(db, project_id=project.id) == []
    await cache.set_index_upstreams(db, ["other", "public"], group_id=group.id)
    assert await cache.index_upstreams(db, group_id=group.id) == ["other", "public"]


@pytest_twisted.ensureDeferred
async def test_cache_writes_skip_the_wal_flush_and_only_they_do(db: Any) -> None:
    # Copies may lose their last writes in a crash (a refetch); the setting
    # lasts for the one statement's transaction, not the pooled connection.
    for _ in range(10):
        row = await db.fetch_one(cache._COPY + "SHOW synchronous_commit")
        assert row == ("off",)
        assert await db.fetch_one("SHOW synchronous_commit") == ("on",)
    # A write with the prefix returns its own rows, as without it.
    assert await cache.take_fetch_lease(db, "public", "six", 30)
    assert not await cache.take_fetch_lease(db, "public", "six", 30)
