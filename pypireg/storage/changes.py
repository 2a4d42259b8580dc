"""Listening for committed changes (schema/0007's NOTIFY triggers).

Storage layer. One dedicated connection runs `LISTEN pypireg_change`; each
notification names the table that changed, and subscribers drop what they
cached from it. While the connection is down nothing can be trusted to be
fresh: `live` is False (callers then bypass their caches) and subscribers
are told to drop everything ("*") when it goes down and again when it is
back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from txpostgres import reconnection, txpostgres

_log = Logger()
CHANNEL = "pypireg_change"
EVERYTHING = "*"
Subscriber = Callable[[str], None]


class ChangeListener:
    def __init__(self, reactor: Any, dsn: str) -> None:
        self._reactor = reactor
        self._dsn = dsn
        self._subscribers: list[Subscriber] = []
        self._connection: Any = None
        self.live = False

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def notify_local(self, table: str) -> None:
        """Tell subscribers about a change this process just committed.

        The NOTIFY arrives a moment later; this closes the gap in which this
        daemon could still serve what it cached before its own write.
        """
        self._emit(table)

    async def start(self) -> None:
        listener = self

        class _Detector(reconnection.DeadConnectionDetector):  # type: ignore[misc]
            def startReconnecting(self, failure: Any) -> Any:
                listener._lost()
                return super().startReconnecting(failure)

        # Any failure on this idle connection means it is gone.
        detector = _Detector(deathChecker=lambda _failure: True, reactor=self._reactor)
        detector.addRecoveryHandler(self._recovered)
        connection = txpostgres.Connection(self._reactor, detector=detector)
        connection.addNotifyObserver(self._notified)
        self._connection = connection
        await connection.connect(self._dsn)
        await connection.runOperation(f"LISTEN {CHANNEL}")
        self.live = True

    def stop(self) -> None:
        self.live = False
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.detector = None
            connection.close()

    def _notified(self, notify: Any) -> None:
        if notify.channel == CHANNEL:
            self._emit(notify.payload)

    def _lost(self) -> None:
        if self.live:
            _log.warn("lost the change notifications; caches are bypassed until they return")
        self.live = False
        self._emit(EVERYTHING)

    def _recovered(self) -> Deferred[None]:
        d: Deferred[None] = self._connection.runOperation(f"LISTEN {CHANNEL}")

        def listening(_: object) -> None:
            self._emit(EVERYTHING)
            self.live = True
            _log.info("change notifications are back; caches are in use again")

        return d.addCallback(listening)

    def _emit(self, table: str) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(table)
            except Exception:
                _log.failure("a change subscriber failed on {table}", table=table)
