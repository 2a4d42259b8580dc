"""The first steps of the daemon and of the admin command, and the one line a failed start gives.

Composition layer, shared by service.py (the daemon) and admin/cli.py (the
command). It imports no HTTP code: the command loads this module on every
run, and every import is time an operator waits for.

Each expected way for a start to fail becomes a StartupError whose message
is one line: what failed, the setting that decides it, and why
(`cannot listen on tcp:8080:interface=127.0.0.1 (server.listen): address
already in use`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pypireg.config import Config
from pypireg.storage.database import CannotConnect, Database
from pypireg.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError
from pypireg.storage.migrations import migrate


class StartupError(Exception):
    """A start that cannot go on, for a reason the operator can fix.

    Attributes:
        setting: The dotted config key that decides it ("server.listen").
    """

    def __init__(self, what: str, setting: str, why: str) -> None:
        super().__init__(f"{what} ({setting}): {why}")
        self.setting = setting


def os_reason(error: OSError) -> str:
    """An OSError as a reason: "permission denied: /srv/pypireg/blobs"."""
    text = error.strerror or str(error) or type(error).__name__
    reason = text[:1].lower() + text[1:]
    return f"{reason}: {error.filename}" if error.filename else reason


def data_folder_error(config: Config, error: OSError) -> StartupError:
    """*error*, met while preparing the data folder, as a StartupError naming storage.path."""
    return StartupError(f"cannot use the data folder {config.storage.path}", "storage.path",
                        os_reason(error))


@dataclass(frozen=True)
class OpenDatabase:
    """The registry's database, connected and migrated.

    Attributes:
        db: The pool.
        embedded: The embedded PostgreSQL behind it, or None with a DSN.
        applied: The schema migrations applied by this opening.
    """

    db: Database
    embedded: EmbeddedPostgres | None
    applied: list[int]

    async def close(self) -> None:
        """Close the pool; stop the embedded server unless another process still uses it."""
        self.db.close()
        if self.embedded is not None:
            await self.embedded.stop()


async def open_database(reactor: Any, config: Config, *, pool_size: int | None = None,
                        migrate_schema: bool = True) -> OpenDatabase:
    """Connect to the configured database, or start the embedded one; migrate it.

    The embedded cluster is created if it does not exist yet: only the daemon
    and `pypireg init` come here without checking first.

    Args:
        reactor: The reactor to connect and spawn with.
        config: The installation's config.
        pool_size: Connections to open (default: `database.pool_size`).
        migrate_schema: Apply pending migrations; a worker process (whose
            parent migrated before spawning it) passes False.

    Raises:
        StartupError: The data folder, the embedded PostgreSQL or the
            database cannot be used.
    """
    embedded = None
    dsn = config.database.dsn
    setting, server = "database.dsn", "the database"
    if dsn is None:
        embedded = EmbeddedPostgres(reactor, config.pgdata)
        setting, server = "storage.path", f"the embedded PostgreSQL in {embedded.pgdata}"
        try:
            dsn = await embedded.start()
        except EmbeddedPostgresError as e:
            raise StartupError(f"{server} did not start", setting, str(e)) from e
        except OSError as e:
            raise data_folder_error(config, e) from e
    db = Database(reactor, dsn, config.database.pool_size if pool_size is None else pool_size)
    try:
        await db.start()
        applied = await migrate(db) if migrate_schema else []
    except BaseException as e:
        db.close()
        if embedded is not None:
            await embedded.stop()
        if isinstance(e, CannotConnect):
            raise StartupError(f"cannot connect to {server}", setting, str(e)) from e
        raise
    return OpenDatabase(db, embedded, applied)
