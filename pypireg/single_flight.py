"""One call per key at a time, its answer shared by everyone who asked meanwhile.

No I/O of its own. Each caller waits on a Deferred of its own: Klein
cancels a request's Deferred when its client goes away, and that must not
cancel the call the other callers are waiting for (a page fetch, a README
render, a file being hashed).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._waiters: dict[K, list[Deferred[V]]] = {}

    def __len__(self) -> int:
        """How many calls are under way."""
        return len(self._waiters)

    def __contains__(self, key: K) -> bool:
        return key in self._waiters

    def waiting(self) -> int:
        """How many callers wait, over every call (cancelled ones included)."""
        return sum(len(w) for w in self._waiters.values())

    async def run(self, key: K, call: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """*call()*'s answer; if a call for *key* is under way, that one's instead.

        The answer reaches the callers once *call* has returned, so whatever
        it stored on the way is there for the next caller.
        """
        waiter: Deferred[V] = Deferred()
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.append(waiter)
        else:
            # The waiter goes in first: a call that never waits answers at once.
            self._waiters[key] = [waiter]
            Deferred.fromCoroutine(call()).addBoth(self._settle, key)
        return await waiter

    def _settle(self, result: V | Failure, key: K) -> None:
        for waiter in self._waiters.pop(key):
            if waiter.called:  # cancelled: that caller went away
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
