"""Counts kept in memory by a hot path and written to the database in batches.

Between the HTTP layer and storage, like access.py. Recording something on
every request (a token's use, a file's download) must not cost the request
a database round trip: the request only adds to a dict here, and a periodic
job (service.py) calls `flush`, which hands everything pending to one
storage function, one statement for the whole batch. That statement must be
additive (`count = count + n`), so that several daemons on one database,
each with its own batch, add up.

A flush that fails (the database is away) keeps its counts for the next
one, up to *limit* distinct keys: a database that never comes back must not
make the daemon's memory grow without end. What a kill -9 loses is what was
pending: at most one interval's counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from twisted.logger import Logger

_log = Logger()
# Distinct keys kept across failed flushes (files, tokens): some MiB at most.
DEFAULT_LIMIT = 100_000

# Row ids and hashes: keys that sort.
K = TypeVar("K", int, str)
# Writes (key, count) pairs, sorted by key (rows locked in the same order by
# every daemon cannot deadlock); a count may be 0 (touched, not counted).
Writer = Callable[[list[tuple[K, int]]], Awaitable[None]]


class PendingCounts(Generic[K]):
    """Counts per key since the last successful flush (module docstring)."""

    def __init__(self, write: Writer[K], what: str, limit: int = DEFAULT_LIMIT) -> None:
        self._write: Writer[K] = write
        self._what = what
        self._limit = limit
        self._pending: dict[K, int] = {}

    def add(self, key: K, count: int = 1) -> None:
        """Count *count* more for *key* (0 only marks it, for a `last_…_at` column)."""
        pending = self._pending
        pending[key] = pending.get(key, 0) + count

    def pending(self) -> dict[K, int]:
        """What the next flush writes (a copy)."""
        return dict(self._pending)

    async def flush(self) -> None:
        """Write everything pending in one call; on failure keep it and log.

        Never raises (a periodic job's failure would stop its timer): the
        failure is logged here, once.
        """
        batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            await self._write(sorted(batch.items()))
        except Exception:
            kept = self._keep(batch)
            _log.failure("could not record {what} ({count} pending; {kept} kept for the"
                         " next try)", what=self._what, count=len(batch), kept=kept)

    def _keep(self, batch: dict[K, int]) -> int:
        """Merge a failed batch back into what arrived meanwhile; return the keys kept."""
        merged = batch
        for key, count in self._pending.items():
            merged[key] = merged.get(key, 0) + count
        if len(merged) > self._limit:
            dropped = len(merged) - self._limit
            for key in list(merged)[:dropped]:
                del merged[key]
            _log.warn("dropped the pending {what} of {dropped} keys: more than {limit}"
                      " are waiting for the database", what=self._what, dropped=dropped,
                      limit=self._limit)
        self._pending = merged
        return len(merged)
