"""Shared fixtures: a real PostgreSQL, a fresh database per test, the in-process registry.

The server is the embedded PostgreSQL (started once per session in a temp
folder) unless PYPIREG_TEST_DSN names another one. Each test that asks for
a database gets its own, cloned from a template (tests/support/databases.py).
Helpers live in tests/support; this module only holds fixtures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from pypireg.storage.database import Database
from pypireg.storage.embedded import EmbeddedPostgres
from tests.support import reactor
from tests.support.databases import FreshDatabases, admin_statement, blank_server_database
from tests.support.http import Registry, start_registry
from tests.support.s3 import aws_environment, create_bucket, moto_server, new_bucket_name, s3_table


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A DSN for the server the tests' databases live on (its own database is left alone)."""
    dsn = os.environ.get("PYPIREG_TEST_DSN")
    if dsn:
        yield dsn
        return
    folder = Path(tempfile.mkdtemp(prefix="pypireg-test-pg-"))
    embedded = EmbeddedPostgres(reactor, folder / "postgres")
    dsn = pytest_twisted.blockon(Deferred.fromCoroutine(embedded.start()))
    # A throwaway cluster: what a crash would lose does not matter, and
    # each CREATE DATABASE and commit no longer waits for the disk.
    admin_statement(dsn, "ALTER SYSTEM SET fsync = off")
    admin_statement(dsn, "SELECT pg_reload_conf()")
    try:
        yield dsn
    finally:
        pytest_twisted.blockon(Deferred.fromCoroutine(embedded.stop()))
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def databases(pg_dsn: str) -> Iterator[FreshDatabases]:
    factory = FreshDatabases(pg_dsn)
    try:
        pytest_twisted.blockon(Deferred.fromCoroutine(factory.start()))
        yield factory
    finally:
        factory.close()  # drops the template and the clones, even if start() failed


@pytest.fixture
def clean_dsn(databases: FreshDatabases) -> Iterator[str]:
    """A fresh database with no tables (for migrations and the real daemon)."""
    with databases.fresh("empty") as dsn:
        yield dsn


@pytest.fixture
def daemon_dsn() -> Iterator[str | None]:
    """For the real daemon: a fresh empty database on PYPIREG_TEST_DSN's server,
    or None (the daemon runs the embedded PostgreSQL in its folder, the README's default)."""
    with blank_server_database("daemon") as dsn:
        yield dsn


@pytest.fixture
def migrated_dsn(databases: FreshDatabases) -> Iterator[str]:
    """A fresh database with every migration applied."""
    with databases.fresh("migrated") as dsn:
        yield dsn


@pytest_twisted.async_yield_fixture()
async def db(migrated_dsn: str) -> Any:
    database = Database(reactor, migrated_dsn, pool_size=3)
    await database.start()
    yield database
    database.close()


@pytest_twisted.async_yield_fixture()
async def registry(db: Database, tmp_path: Path) -> Any:
    """The whole site on a real TCP port (`registry.http`), and in memory (`registry.stub`)."""
    reg = await start_registry(db, tmp_path)
    yield reg
    await reg.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, with test AWS credentials in the environment."""
    with aws_environment(), moto_server() as endpoint:
        yield endpoint


def _new_bucket(endpoint: str, **extra: Any) -> dict[str, Any]:
    from pypireg.config import parse_config

    table = s3_table(endpoint, new_bucket_name(), **extra)
    config = parse_config({"storage": {"backend": "s3", "s3": table}}).storage.s3
    assert config is not None
    pytest_twisted.blockon(Deferred.fromCoroutine(create_bucket(reactor, config)))
    return {"backend": "s3", "s3": table}


@pytest.fixture
def s3_storage(s3_endpoint: str) -> dict[str, Any]:
    """`[storage]` keys for a fresh, empty bucket on the test S3 endpoint."""
    return _new_bucket(s3_endpoint)


@pytest.fixture(params=["filesystem", "s3"])
def storage_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`[storage]` keys for each backend in turn: nothing (a folder), or a fresh bucket."""
    if request.param == "filesystem":
        return {}
    return _new_bucket(request.getfixturevalue("s3_endpoint"))


@pytest_twisted.async_yield_fixture()
async def stored(db: Database, tmp_path: Path, storage_backend: dict[str, Any]) -> Any:
    """The whole site on a real TCP port, over each blob backend in turn."""
    reg = await start_registry(db, tmp_path, max_size=64 * 1024 * 1024, storage=storage_backend)
    yield reg
    await reg.stop()


@pytest_twisted.async_yield_fixture()
async def web(db: Database, tmp_path: Path) -> Any:
    """The whole site with no socket at all: requests only through `web.stub`."""
    reg: Registry = await start_registry(db, tmp_path, listen=False)
    yield reg
    await reg.stop()
