"""A small in-memory cache with a size bound and a time to live.

Domain layer, no I/O; the clock is injected. What may be cached, and when it
is dropped, is decided by the callers (see storage/changes.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Cache(Generic[K, V]):
    """Least-recently-used, at most *max_entries*, each for at most *ttl* seconds."""

    def __init__(self, clock: IReactorTime, max_entries: int, ttl: float) -> None:
        self._clock = clock
        self._max = max_entries
        self._ttl = ttl
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock.seconds():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Keep *value* for the cache's ttl, or for *ttl* seconds if that is shorter."""
        lifetime = self._ttl if ttl is None else min(ttl, self._ttl)
        self._entries[key] = (self._clock.seconds() + lifetime, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
