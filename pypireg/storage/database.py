"""The PostgreSQL connection pool, wrapped once for typed, async use.

Storage layer. txpostgres is untyped and Deferred-based; this module is the
only place that touches it. Connection failures become ServiceUnavailable
(503 with Retry-After) and each connection reconnects by itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import psycopg2
from psycopg2.extensions import parse_dsn
from twisted.internet.defer import Deferred, FirstError
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, txpostgres

from pypireg.domain.errors import ServiceUnavailable

_log = Logger()
T = TypeVar("T")

# Errors that mean "the database is not there", as opposed to a bug in a query.
_UNAVAILABLE = (
    reconnection.ConnectionDead,
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    txpostgres.RollbackFailed,
)


class CannotConnect(Exception):
    """The pool's first connections failed; the message is libpq's reason, on one line.

    A password the DSN carries never appears in it.
    """


# Where a DSN keeps its password, as written: a URI's user info
# ("postgresql://user:secret@host"), or a keyword ("password=secret").
_URI_PASSWORD = re.compile(r"://[^/?#@:]*:([^/?#@]*)@")
_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def _connect_failure_reason(error: BaseException, dsn: str) -> str:
    """libpq's complaint about *dsn*, on one line and without the DSN's password.

    libpq quotes a malformed DSN back, so the password is also looked for as
    written, not only as parsed.
    """
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    reason = "; ".join(lines) or type(error).__name__
    secrets = [m.group(1).strip("'") for m in (_URI_PASSWORD.search(dsn),
                                                _KEYWORD_PASSWORD.search(dsn)) if m]
    try:
        secrets.append(parse_dsn(dsn).get("password") or "")
    except psycopg2.Error:
        pass  # malformed: only the password as written can be looked for
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return reason


class Cursor(Protocol):
    """What our transaction bodies may do with a txpostgres cursor."""

    def execute(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None,
                ) -> Deferred[Any]: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    @property
    def rowcount(self) -> int: ...


class Database:
    """A fixed-size pool of reconnecting PostgreSQL connections."""

    def __init__(self, reactor: IReactorCore, dsn: str, pool_size: int = 5) -> None:
        self._reactor = reactor
        self.dsn = dsn
        self._pool: Any = None
        self._pool_size = pool_size

    async def start(self) -> None:
        reactor = self._reactor

        class _Connection(txpostgres.Connection):  # type: ignore[misc]
            def __init__(self, _reactor: Any = None, cooperator: Any = None) -> None:
                super().__init__(
                    reactor, cooperator,
                    detector=reconnection.DeadConnectionDetector(reactor=reactor),
                )

            def doRead(self) -> Any:
                try:
                    return super().doRead()
                except psycopg2.OperationalError as e:
                    # The server ended an idle connection (restart, shutdown).
                    # txpostgres raises it into the reactor, which would log
                    # a traceback; returned instead, it reaches connectionLost,
                    # where the detector starts reconnecting, as it would anyway.
                    _log.warn("database connection lost: {error}", error=str(e).strip())
                    return e

        class _Pool(txpostgres.ConnectionPool):  # type: ignore[misc]
            connectionFactory = _Connection

        _Pool.reactor = reactor
        pool = _Pool(None, self.dsn, min=self._pool_size)
        try:
            await pool.start()
        except FirstError as e:
            # txpostgres connects the whole pool at once and reports the first
            # failure wrapped; the connections that made it are closed again.
            _close_connected(pool)
            cause = e.subFailure.value
            if not isinstance(cause, psycopg2.Error):
                raise
            raise CannotConnect(_connect_failure_reason(cause, self.dsn)) from cause
        except psycopg2.Error as e:
            _close_connected(pool)
            raise CannotConnect(_connect_failure_reason(e, self.dsn)) from e
        self._pool = pool

    @property
    def size(self) -> int:
        return self._pool_size

    def in_use(self) -> int:
        """Connections checked out right now (for metrics)."""
        if self._pool is None:
            return 0
        semaphore = self._pool._semaphore
        return int(semaphore.limit - semaphore.tokens)

    async def ping(self, timeout: float = 2.0) -> bool:
        """True if the database answers a trivial query within *timeout* seconds."""
        if self._pool is None:
            return False
        d = Deferred.fromCoroutine(self.fetch_one("SELECT 1"))
        d.addTimeout(timeout, self._reactor)  # type: ignore[arg-type]
        try:
            return await d == (1,)
        except Exception:
            return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def run_interaction(self, body: Callable[[Cursor], Awaitable[T]]) -> T:
        """Run *body* in one transaction: committed if it returns, rolled back if it raises."""

        # txpostgres wants a function returning a Deferred; a bare coroutine
        # function would be "called" and committed without running.
        def interaction(cursor: Cursor) -> Deferred[T]:
            return Deferred.fromCoroutine(_as_coroutine(body(cursor)))

        return await self._call(self._pool.runInteraction, interaction)  # type: ignore[no-any-return]

    async def fetch_all(self, query: str, params: Sequence[Any] | dict[str, Any] = ()
                        ) -> list[tuple[Any, ...]]:
        return await self._call(self._pool.runQuery, query, params)  # type: ignore[no-any-return]

    async def fetch_one(self, query: str, params: Sequence[Any] | dict[str, Any] = ()
                        ) -> tuple[Any, ...] | None:
        rows = await self.fetch_all(query, params)
        return rows[0] if rows else None

    async def unnamed_socket_directory(self) -> str | None:
        """Where the server's socket is, when the DSN names no host; else None.

        Without a host, libpq's compiled-in directory decides, and builds
        differ (/tmp, /var/run/postgresql): other programs should be told.
        """
        if parse_dsn(self.dsn).get("host"):
            return None
        row = await self.fetch_one("SELECT current_setting('unix_socket_directories')")
        first = (row[0] if row else "").split(",")[0].strip()
        return first or None

    async def execute(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> None:
        await self._call(self._pool.runOperation, query, params)

    async def _call(self, method: Callable[..., Deferred[Any]], *args: Any) -> Any:
        if self._pool is None:
            raise ServiceUnavailable()
        try:
            return await _uncancellable(method(*args))
        except _UNAVAILABLE as e:
            _log.warn("database unavailable: {error}", error=str(e).strip())
            raise ServiceUnavailable() from e


def _uncancellable(query: Deferred[T]) -> Deferred[T]:
    """*query*'s result, on a Deferred whose cancellation leaves the query running.

    Klein cancels a request's handler when its client goes away. Passed on
    to txpostgres, the cancel raises `_CancelInProgress` out of Twisted's
    cancel (the protocol must finish the query before the connection can
    be reused), which fails the handler with that instead of
    CancelledError. So the waiter is cancelled alone; the query finishes,
    its connection goes back to the pool and its result is dropped.
    """
    waiter: Deferred[T] = Deferred(lambda _: None)

    def relay(result: T | Failure) -> None:
        if waiter.called:  # cancelled: nobody waits for it any more
            return
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)

    query.addBoth(relay)
    return waiter


def _close_connected(pool: Any) -> None:
    # txpostgres's close() assumes connect() got as far as making the psycopg2
    # connection; one refused at once (a malformed DSN) has none.
    for connection in pool.connections:
        if connection._connection is not None:
            connection.close()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def id_or_path(ref: str, column: str = "path") -> tuple[str, tuple[Any, ...]] | None:
    """WHERE clause and params finding a row by numeric id or by *column*, as GitLab does.

    Names compare case-insensitively. None for an id too large to exist.
    """
    if ref.isdigit():
        return ("id = %s", (int(ref),)) if len(ref) <= 18 else None
    return (f"lower({column}) = lower(%s)", (ref,))


def path_prefix_pattern(path: str) -> str:
    """A LIKE pattern for the paths under *path* (`acme/%`), lower-cased and escaped.

    LIKE treats "_" and "%" as wildcards; paths may contain "_".
    """
    escaped = path.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, and how many items the whole listing has."""

    items: list[T]
    total: int
