"""Waiting for work the test cannot drive itself, by reactor turns, not wall-clock time.

Worker-thread results (file writes and removals in BlobStore, readme rendering)
and database answers arrive through the reactor: a condition on them is
checked once per turn. The bound is a number of turns, so a slow machine
takes longer but a test never passes or fails because of a sleep's length.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred

from tests.support import reactor

# A turn is one reactor iteration (a poll for I/O with no wait), some 5 µs
# here: a worker-thread job or a database round trip takes thousands. The
# bound (seconds on this machine, longer on a slower one, whose jobs take
# longer too) only turns a condition that never comes true into a failure.
MAX_TURNS = 2_000_000


def next_turn() -> Deferred[None]:
    """Fires on the reactor's next iteration (after it has polled for I/O)."""
    d: Deferred[None] = Deferred()
    reactor.callLater(0, d.callback, None)
    return d


async def until(predicate: Callable[[], Any], turns: int = MAX_TURNS,
                what: Callable[[], Any] | None = None) -> None:
    """Return once *predicate()* is true; fail after *turns* reactor turns."""
    for _ in range(turns):
        if predicate():
            return
        await next_turn()
    assert predicate(), what() if what is not None else f"not true after {turns} turns"


async def eventually(check: Callable[[], Awaitable[Any]], turns: int = MAX_TURNS // 1000
                     ) -> Any:
    """*check()*'s first truthy answer, asked once a reactor turn (a database row, say)."""
    for _ in range(turns):
        answer = await check()
        if answer:
            return answer
        await next_turn()
    raise AssertionError(f"not true after {turns} tries")
