"""Fresh PostgreSQL databases for tests, cloned from templates on one server.

Once per session a template database is created from `template0` and
migrated; each test gets `CREATE DATABASE <unique> TEMPLATE <template>`, a
copy of the migrated schema (or of `template0` for tests that want a blank
database: migrations, the real daemon). Copies are prepared one ahead and
dropped after their test in a worker thread, so a test mostly waits for
neither. Names carry the process id: sessions sharing a server (CI's, or
two worktrees on one machine) never touch each other's databases.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import psycopg2
from psycopg2.extensions import make_dsn

from pypireg.storage.database import Database
from pypireg.storage.migrations import migrate
from tests.support import reactor

EMPTY = "template0"


def with_database(dsn: str, name: str) -> str:
    """*dsn* (a URI or key=value string) with its database swapped for *name*."""
    return make_dsn(dsn, dbname=name)


def admin_statement(dsn: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


class FreshDatabases:
    """Databases on the server *admin_dsn* names; the template is made by `start`.

    *admin_dsn*'s own database (CI's `test`, the embedded `postgres`) is
    only connected to, to create and drop the others.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._prefix = f"pypireg_test_{os.getpid()}"
        self.template = f"{self._prefix}_template"
        self._counter = itertools.count(1)
        # One worker: creations and drops run in order, off the reactor thread.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        self._spare: Future[str] | None = None
        self._drops: list[Future[None]] = []

    async def start(self) -> None:
        """Create and migrate the template, and start preparing the first copy."""
        self._run(f'DROP DATABASE IF EXISTS "{self.template}"')
        self._run(f'CREATE DATABASE "{self.template}" TEMPLATE {EMPTY}')
        db = Database(reactor, self.dsn_for(self.template), pool_size=1)
        await db.start()
        try:
            await migrate(db)
        finally:
            db.close()
        self._spare = self._worker.submit(self._create, self.template)

    def dsn_for(self, name: str) -> str:
        return with_database(self.admin_dsn, name)

    def migrated(self) -> str:
        """The name of a fresh database with every migration applied."""
        assert self._spare is not None, "start() first"
        name = self._spare.result()
        self._spare = self._worker.submit(self._create, self.template)
        return name

    def empty(self) -> str:
        """The name of a fresh database with no tables at all."""
        return self._worker.submit(self._create, EMPTY).result()

    def drop(self, name: str) -> None:
        """Drop *name* in the background; `close` waits for it and reports failures."""
        self._drops.append(self._worker.submit(self._drop, name))

    @contextmanager
    def fresh(self, kind: str = "migrated") -> Iterator[str]:
        """A fresh database's DSN for the block, dropped after it."""
        name = self.migrated() if kind == "migrated" else self.empty()
        try:
            yield self.dsn_for(name)
        finally:
            self.drop(name)

    def close(self) -> None:
        if self._spare is not None:
            self.drop(self._spare.result())
        self._drops.append(self._worker.submit(self._drop, self.template))
        self._worker.shutdown(wait=True)
        for dropped in self._drops:
            dropped.result()

    def _create(self, template: str) -> str:
        name = f"{self._prefix}_{next(self._counter)}"
        self._run(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def _drop(self, name: str) -> None:
        # FORCE (PostgreSQL 13+) ends connections a test left open.
        self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, statement: str) -> None:
        admin_statement(self.admin_dsn, statement)


@contextmanager
def blank_server_database(prefix: str) -> Iterator[str | None]:
    """A fresh empty database on PYPIREG_TEST_DSN's server, or None without it.

    For the real daemon outside pytest's fixtures (module-scoped fixtures,
    context managers): None means "let the daemon run its embedded PostgreSQL".
    """
    dsn = os.environ.get("PYPIREG_TEST_DSN")
    if not dsn:
        yield None
        return
    label = prefix.strip("-").replace("-", "_")
    name = f"pypireg_test_{os.getpid()}_{label}_{next(_blank_counter)}"
    admin_statement(dsn, f'CREATE DATABASE "{name}" TEMPLATE {EMPTY}')
    try:
        yield with_database(dsn, name)
    finally:
        admin_statement(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_blank_counter = itertools.count(1)
