"""Storage layer against the real database: migrations, projects, tokens."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import Clock

from pypireg.access import Authorizer
from pypireg.domain.errors import Forbidden, NotFound, Unauthorized
from pypireg.domain.tokens import PREFIX, hash_token
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.database import Database
from pypireg.storage.migrations import load_migrations, migrate
from tests.support import reactor
from tests.support.waiting import until


def test_migrations_are_numbered_and_packaged() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert "CREATE TABLE projects" in migrations[0].sql


@pytest_twisted.ensureDeferred
async def test_migrate_is_idempotent_and_safe_concurrently(clean_dsn: str) -> None:
    pools = [Database(reactor, clean_dsn, pool_size=1) for _ in range(3)]
    for pool in pools:
        await pool.start()
    try:
        results = await DeferredList(
            [Deferred.fromCoroutine(migrate(pool)) for pool in pools],
            fireOnOneErrback=True, consumeErrors=True,
        )
        applied = [r for _ok, r in results]
        # Exactly one daemon applied each migration; the others saw it done.
        assert sorted(applied, key=len) == [[], [], [m.version for m in load_migrations()]]
        assert await migrate(pools[0]) == []
    finally:
        for pool in pools:
            pool.close()


@pytest_twisted.ensureDeferred
async def test_projects_by_id_and_case_insensitive_path(db: Database) -> None:
    created = await project_store.create_project(db, "Acme/Tools", public=True)
    assert (await project_store.get_project(db, str(created.id))) == created
    assert (await project_store.get_project(db, "acme/tools")) == created
    assert await project_store.get_project(db, "9" * 30) is None
    with pytest.raises(project_store.ProjectExists):
        await project_store.create_project(db, "ACME/tools")
    updated = await project_store.update_project(db, created.id, packages_enabled=False)
    assert updated.public and not updated.packages_enabled


@pytest_twisted.ensureDeferred
async def test_tokens_are_stored_only_as_hashes(db: Database) -> None:
    project = await project_store.create_project(db, "acme")
    record, secret = await token_store.create_token(db, project.id, "write", description="ci")
    assert secret.startswith(PREFIX) and len(secret) >= 40
    rows = await db.fetch_all("SELECT token_hash, hint FROM tokens")
    assert bytes(rows[0][0]) == hash_token(secret)
    assert rows[0][1] == secret[:12]  # a hint for listings, never the secret
    assert (await token_store.find_live_token(db, secret)) == record
    assert await token_store.revoke_token(db, record.id)
    assert await token_store.find_live_token(db, secret) is None
    assert not await token_store.revoke_token(db, record.id)


@pytest_twisted.ensureDeferred
async def test_last_used_is_batched(db: Database) -> None:
    clock = Clock()
    authorizer = Authorizer(db, clock)
    authorizer.start()
    project = await project_store.create_project(db, "acme")
    record, secret = await token_store.create_token(db, project.id, "read")
    for _ in range(5):
        await authorizer.authorize("acme", secret, "read")
    # No write per request: nothing recorded until the flush.
    assert (await token_store.list_tokens(db, project.id))[0].last_used_at is None
    await authorizer.stop()
    assert (await token_store.list_tokens(db, project.id))[0].last_used_at is not None
    assert record.id == (await token_store.list_tokens(db, project.id))[0].id


@pytest_twisted.ensureDeferred
async def test_authorize_outcomes(db: Database) -> None:
    authorizer = Authorizer(db, Clock())
    private = await project_store.create_project(db, "private")
    public = await project_store.create_project(db, "public", public=True)
    _, read = await token_store.create_token(db, private.id, "read")
    _, write = await token_store.create_token(db, private.id, "write")
    _, other = await token_store.create_token(db, public.id, "write")

    async def outcome(ref: str, secret: str | None, access: Any) -> str:
        try:
            await authorizer.authorize(ref, secret, access)
        except Unauthorized:
            return "401"
        except Forbidden:
            return "403"
        except NotFound:
            return "404"
        return "ok"

    assert await outcome("private", None, "read") == "401"
    assert await outcome("nonexistent", None, "read") == "401"
    assert await outcome("private", read, "read") == "ok"
    assert await outcome("private", read, "write") == "403"
    assert await outcome("private", write, "write") == "ok"
    assert await outcome("private", other, "read") == "404"
    assert await outcome("nonexistent", other, "read") == "404"
    assert await outcome("public", None, "read") == "ok"
    assert await outcome("public", None, "write") == "401"
    assert await outcome("public", read, "read") == "ok"
    assert await outcome("public", read, "write") == "403"
    assert await outcome("private", "garbage", "read") == "401"


@pytest_twisted.ensureDeferred
async def test_a_cancelled_query_is_a_plain_cancel_and_the_pool_stays_usable(db: Any) -> None:
    # As Klein cancels a handler whose client went away, mid-query.
    waiting = Deferred.fromCoroutine(db.fetch_one("SELECT 1 FROM pg_sleep(0.2)"))
    waiting.cancel()
    with pytest.raises(CancelledError):
        await waiting
    interaction = Deferred.fromCoroutine(db.run_interaction(_slow_interaction))
    interaction.cancel()
    with pytest.raises(CancelledError):
        await interaction
    assert await db.fetch_one("SELECT 2") == (2,)
    # The cancelled queries ran on to their end and gave their connections back.
    await until(lambda: db.in_use() == 0)


async def _slow_interaction(cursor: Any) -> None:
    await cursor.execute("SELECT pg_sleep(0.1)")
