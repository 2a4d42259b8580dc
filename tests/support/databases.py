"""Fresh PostgreSQL databases for tests, cloned from templates on one server.

Once per session a template database is created from `template0` and
migrated. Each test that wants a migrated database gets a clone of it
(`CREATE DATABASE ... TEMPLATE`); tests that want a blank one (migrations,
the real daemon) get a clone of `template0`, dropped afterwards.

Migrated clones are kept in a small pool rather than dropped: on a server
with fsync on (CI's), each CREATE DATABASE copies the template's 7 MB
through the WAL and each DROP DATABASE forces a checkpoint, some 300 ms per
test together, five times what re-running the migrations cost. A clone given
back is reset in a worker thread while the next test runs: its connections
are ended, then, if its schema still matches the template's (a fingerprint
of tables, columns, indexes, functions, triggers and applied migrations),
every table but schema_migrations is emptied and every sequence restarted;
a test that changed the schema gets its clone dropped and replaced by a new
one.
The template holds no rows but schema_migrations', so a reset clone is what
a new clone would be.

Names carry the process id: sessions sharing a server (CI's, or two
worktrees on one machine) never touch each other's databases.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

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


_FINGERPRINT = """
SELECT md5(concat_ws('|',
  (SELECT string_agg(c.relname || ':' || c.relkind::text || ':' || coalesce(a.attname, '') || ':'
                     || coalesce(format_type(a.atttypid, a.atttypmod), ''),
                     ',' ORDER BY c.relname, a.attnum)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname = current_schema()),
  (SELECT string_agg(p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
                     || md5(p.prosrc), ',' ORDER BY p.proname)
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = current_schema()),
  (SELECT string_agg(t.tgname || ':' || t.tgrelid::regclass::text, ',' ORDER BY t.tgname)
     FROM pg_trigger t WHERE NOT t.tgisinternal),
  (SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations)))
"""


def _query(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def _emptying_statement(dsn: str) -> str:
    """Statements that empty every table but schema_migrations and restart the sequences.

    DELETE in foreign-key order, not TRUNCATE: TRUNCATE gives each table
    new files, which with fsync on costs some 150 ms; these tables are tiny.
    """
    tables = {row[0] for row in _query(
        dsn, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
             " AND tablename <> 'schema_migrations'")}
    references = _query(
        dsn, "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
             " WHERE contype = 'f' AND conrelid <> confrelid")
    order: list[str] = []
    while len(order) < len(tables):
        # A table goes once every table referencing it has gone.
        ready = sorted(t for t in tables - set(order)
                       if not any(parent == t and child not in order
                                  for child, parent in references))
        assert ready, f"foreign-key cycle among {sorted(tables - set(order))}"
        order += ready
    sequences = [row[0] for row in _query(
        dsn, "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences"
             " WHERE schemaname = current_schema()")]
    statements = [f'DELETE FROM "{t}"' for t in order]
    statements += [f"ALTER SEQUENCE {s} RESTART" for s in sequences]
    return "; ".join(statements)


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
        # One worker: creations, resets and drops run in order, off the reactor thread.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        self._ready: list[Future[str]] = []  # migrated clones, being made or reset
        self._pending: list[Future[Any]] = []  # drops, to wait for and check at the end
        self._fingerprint = ""
        self._empty_tables = ""
        self.created = 0
        self.reset = 0

    async def start(self) -> None:
        """Create and migrate the template, and start preparing the first clone."""
        self._run(f'DROP DATABASE IF EXISTS "{self.template}"')
        self._run(f'CREATE DATABASE "{self.template}" TEMPLATE {EMPTY}')
        db = Database(reactor, self.dsn_for(self.template), pool_size=1)
        await db.start()
        try:
            await migrate(db)
        finally:
            db.close()
        template = self.dsn_for(self.template)
        self._fingerprint = _query(template, _FINGERPRINT)[0][0]
        self._empty_tables = _emptying_statement(template)
        self._ready.append(self._worker.submit(self._create, self.template))

    def dsn_for(self, name: str) -> str:
        return with_database(self.admin_dsn, name)

    def migrated(self) -> str:
        """The name of a fresh database with every migration applied (give it back)."""
        if not self._ready:
            self._ready.append(self._worker.submit(self._create, self.template))
        name = self._ready.pop(0).result()
        if not self._ready:
            # A second clone, so that one is always ready while the other resets.
            self._ready.append(self._worker.submit(self._create, self.template))
        return name

    def give_back(self, name: str) -> None:
        """Reset a migrated clone in the background, for the next test."""
        self._ready.append(self._worker.submit(self._reset, name))

    def empty(self) -> str:
        """The name of a fresh database with no tables at all (drop it after)."""
        return self._worker.submit(self._create, EMPTY).result()

    def drop(self, name: str) -> None:
        """Drop *name* in the background; `close` waits for it and reports failures."""
        self._pending.append(self._worker.submit(self._drop, name))

    @contextmanager
    def fresh(self, kind: str = "migrated") -> Iterator[str]:
        """A fresh database's DSN for the block; given back or dropped after it."""
        if kind == "migrated":
            name = self.migrated()
            try:
                yield self.dsn_for(name)
            finally:
                self.give_back(name)
        else:
            name = self.empty()
            try:
                yield self.dsn_for(name)
            finally:
                self.drop(name)

    def close(self) -> None:
        for ready in self._ready:
            self._pending.append(self._worker.submit(self._drop, ready.result()))
        self._pending.append(self._worker.submit(self._drop, self.template))
        self._worker.shutdown(wait=True)
        for pending in self._pending:
            pending.result()

    def _create(self, template: str) -> str:
        name = f"{self._prefix}_{next(self._counter)}"
        self._run(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.created += 1
        return name

    def _reset(self, name: str) -> str:
        # Connections a test left open would hold locks or see the next test's rows.
        self._run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                  f" WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        dsn = self.dsn_for(name)
        if _query(dsn, _FINGERPRINT)[0][0] != self._fingerprint:
            self._drop(name)  # the test changed the schema: start over from the template
            return self._create(self.template)
        _query(dsn, self._empty_tables)
        self.reset += 1
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
