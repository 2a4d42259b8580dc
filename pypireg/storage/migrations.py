"""Versioned schema migrations, applied at start-up.

Storage layer. Files are `schema/NNNN_name.sql`, applied in order, each once.
All pending files run in one transaction behind a transaction-scoped
advisory lock, so daemons starting together apply them exactly once and a
failed migration leaves the schema as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from twisted.logger import Logger

from pypireg.storage.database import Cursor, Database

_log = Logger()
# An arbitrary constant shared by every pypireg process: "pypi" in ASCII.
MIGRATION_LOCK_ID = 0x70797069
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql\Z")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("pypireg.storage").joinpath("schema").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


async def migrate(db: Database) -> list[int]:
    """Apply pending migrations; return the versions applied now."""
    migrations = load_migrations()

    async def body(cur: Cursor) -> list[int]:
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        await cur.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in cur.fetchall()}
        done = []
        for m in migrations:
            if m.version in applied:
                continue
            await cur.execute(m.sql)
            await cur.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name)
            )
            done.append(m.version)
        return done

    done = await db.run_interaction(body)
    for version in done:
        _log.info("applied schema migration {version}", version=version)
    return done


async def schema_version(db: Database) -> int:
    """The newest migration applied to *db* (0 for none)."""
    row = await db.fetch_one("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(row[0]) if row is not None else 0
