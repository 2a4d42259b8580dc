"""Rate limiting of failed authentication, per client address.

HTTP layer, in memory, driven by an injectable clock. Only failures count
and only failures are refused (429 instead of 401), so a client with a
valid token is never slowed down, even behind the same address as one
guessing tokens. Tokens have 256 bits of randomness, so this is about
noise and load, not about guessing succeeding.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IReactorTime

from pypireg.domain.errors import TooManyRequests

FAILURES_PER_WINDOW = 20
WINDOW_SECONDS = 60.0
_MAX_TRACKED = 100_000


class FailureLimiter:
    def __init__(self, clock: IReactorTime, limit: int = FAILURES_PER_WINDOW,
                 window: float = WINDOW_SECONDS) -> None:
        self._clock = clock
        self.limit = limit
        self._window = window
        # client → (start of its current window, failures in it)
        self._windows: dict[str, tuple[float, int]] = {}

    def record_failure(self, client: str) -> None:
        """Count a failed attempt; raise TooManyRequests once over the limit."""
        now = self._clock.seconds()
        start, count = self._windows.get(client, (now, 0))
        if now - start >= self._window:
            start, count = now, 0
        count += 1
        if len(self._windows) >= _MAX_TRACKED and client not in self._windows:
            self._prune(now)
        self._windows[client] = (start, count)
        if count > self.limit:
            retry_after = max(1, math.ceil(start + self._window - now))
            raise TooManyRequests(
                f"Too many failed authentication attempts from {client}; retry in "
                f"{retry_after} seconds.", retry_after)

    def _prune(self, now: float) -> None:
        self._windows = {c: w for c, w in self._windows.items() if now - w[0] < self._window}
