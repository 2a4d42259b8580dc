"""Shared fixtures: a real PostgreSQL, a fresh schema per test, helpers.

The database is the embedded PostgreSQL (started once per session in a
temp folder) unless PYPIREG_TEST_DSN names another one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred

from pypireg.storage.database import Database
from pypireg.storage.embedded import EmbeddedPostgres
from pypireg.storage.migrations import migrate

reactor: Any = _reactor


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    dsn = os.environ.get("PYPIREG_TEST_DSN")
    if dsn:
        yield dsn
        return
    folder = Path(tempfile.mkdtemp(prefix="pypireg-test-pg-"))
    embedded = EmbeddedPostgres(reactor, folder / "postgres")
    dsn = pytest_twisted.blockon(Deferred.fromCoroutine(embedded.start()))
    try:
        yield dsn
    finally:
        pytest_twisted.blockon(Deferred.fromCoroutine(embedded.stop()))
        shutil.rmtree(folder, ignore_errors=True)


def reset_schema(dsn: str) -> None:
    """Drop every table in the current schema (a blank database for each test)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            tables = [r[0] for r in cur.fetchall()]
            if tables:
                cur.execute("DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
            # Our SQL functions too: a later migration may have redefined one.
            cur.execute(
                "SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n"
                " ON n.oid = p.pronamespace WHERE n.nspname = current_schema()"
                " AND p.proname LIKE 'pypireg%%'")
            for (function,) in cur.fetchall():
                cur.execute(f"DROP FUNCTION IF EXISTS {function} CASCADE")
    finally:
        conn.close()


@pytest.fixture
def clean_dsn(pg_dsn: str) -> str:
    reset_schema(pg_dsn)
    return pg_dsn


@pytest_twisted.async_yield_fixture()
async def db(clean_dsn: str) -> Any:
    database = Database(reactor, clean_dsn, pool_size=3)
    await database.start()
    await migrate(database)
    yield database
    database.close()


class Registry:
    """An in-process registry on a real TCP port, over the test database."""

    def __init__(self, db: Database, config: Any, port: Any, authorizer: Any) -> None:
        self.db = db
        self.config = config
        self.port = port
        self.authorizer = authorizer
        self.url = f"http://127.0.0.1:{port.getHost().port}"

    def api(self, project: str | int) -> str:
        return f"{self.url}/api/v4/projects/{project}/packages/pypi"

    @property
    def storage(self) -> Path:
        return Path(self.config.storage.path)

    def stored_files(self) -> list[Path]:
        return sorted(p for p in (self.storage / "blobs").rglob("*") if p.is_file())

    def temp_files(self) -> list[Path]:
        return sorted((self.storage / "tmp").iterdir())

    async def settled_temp_files(self, timeout: float = 5.0) -> list[Path]:
        """Temp files once in-flight removals (done in worker threads) are over."""
        from twisted.internet.task import deferLater

        waited = 0.0
        while self.temp_files() and waited < timeout:
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
        return self.temp_files()


async def start_registry(db: Database, tmp_path: Path, max_size: int = 1024 * 1024
                         ) -> Registry:
    """The whole HTTP site on a real TCP port; stop it with `registry.port.stopListening()`."""
    from pypireg.config import parse_config
    from pypireg.service import build_site

    config = parse_config(
        {"storage": {"path": str(tmp_path / "data")}, "uploads": {"max_size": max_size}}
    )
    site, authorizer = await build_site(reactor, config, db)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return Registry(db, config, port, authorizer)


@pytest_twisted.async_yield_fixture()
async def registry(db: Database, tmp_path: Path) -> Any:
    reg = await start_registry(db, tmp_path)
    yield reg
    await reg.port.stopListening()
