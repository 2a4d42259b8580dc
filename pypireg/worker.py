"""`python -m pypireg.worker`: one of the processes `server.workers` runs (see supervisor.py).

Composition layer. The parent spawns it with the listening sockets from
fd 4 on (their list, as JSON, in `--listeners`), the config file's path,
the embedded PostgreSQL's DSN when there is one, and its number. It runs
the whole registry (RegistryService with a WorkerRole) in its own reactor
until SIGTERM (then it drains) or until the parent goes away (fd 0, a pipe
from the parent, reads end-of-file: the parent was killed, so nobody would
restart or stop this worker).

Its log events go to the parent as JSON lines on fd 3, each with its text
already formatted (a traceback included) and its plain fields (strings and
numbers), so the parent logs them without needing the objects they mention.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from twisted.internet import abstract, fdesc
from twisted.logger import ILogObserver, Logger, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from pypireg.config import ConfigError, load_config
from pypireg.listeners import listeners_from_json
from pypireg.service import RegistryService, WorkerRole
from pypireg.supervisor import LOG_FD

_log = Logger()
# Fields of an event that only mean something inside this process.
_LOCAL_FIELDS = ("log_failure", "log_logger", "log_source", "log_trace", "log_io")
_PLAIN = (str, int, float, bool)


@implementer(ILogObserver)
class EventPipe:
    """A log observer writing each event as one JSON line for the parent's LogRelay.

    With *schedule* (a callLater(0, …)), the lines an iteration of the
    reactor logs go out in one write when it ends: under load that is one
    write here and one wake-up of the parent for many access lines, not
    one each. Without, each line is written at once.
    """

    def __init__(self, stream: IO[str],
                 schedule: Callable[[Callable[[], None]], object] | None = None) -> None:
        self._stream = stream
        self._schedule = schedule
        self._pending = False

    def __call__(self, event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if isinstance(failure, Failure):
            text = f"{text}\n{failure.getTraceback()}".rstrip("\n")
        # Plain values only: an access log line per request comes this way,
        # and json.dumps of these costs a fraction of eventAsJSON's walk.
        record = {k: v for k, v in event.items()
                  if k not in _LOCAL_FIELDS and (v is None or type(v) in _PLAIN)}
        level = event.get("log_level")
        record["log_level"] = level.name if level is not None else None
        record["log_format"] = "{pypireg_text}"
        record["pypireg_text"] = text
        try:
            self._stream.write(json.dumps(record) + "\n")
        except OSError:
            return  # the parent is gone; the lifeline stops this worker
        if self._schedule is None:
            self.flush()
        elif not self._pending:
            self._pending = True
            self._schedule(self.flush)

    def flush(self) -> None:
        self._pending = False
        try:
            self._stream.flush()
        except OSError:
            pass


class Lifeline(abstract.FileDescriptor):
    """The parent's end of fd 0: its closing (the parent died) calls *lost*."""

    def __init__(self, reactor: Any, lost: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._lost = lost
        fdesc.setNonBlocking(0)

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        return fdesc.readFromFD(0, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self._lost()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pypireg.worker",
                                     description="A pypireg worker; its parent starts it.")
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--listeners", required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--dsn")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    from twisted.internet import reactor

    pipe = EventPipe(os.fdopen(LOG_FD, "w", encoding="utf-8"),
                     lambda flush: reactor.callLater(0, flush))
    globalLogBeginner.beginLoggingTo([pipe], redirectStandardIO=False)
    # Whatever is still buffered goes out before the process ends (also
    # before a failed start's os._exit, whose trigger comes later).
    reactor.addSystemEventTrigger("after", "shutdown", pipe.flush)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        # The file changed since the parent read it.
        _log.critical("pypireg worker {worker} could not start: {reason}", worker=args.worker,
                      reason=str(e))
        pipe.flush()
        sys.exit(1)
    if args.dsn is not None:
        config = dataclasses.replace(
            config, database=dataclasses.replace(config.database, dsn=args.dsn))
    service = RegistryService(reactor, config,
                              WorkerRole(args.worker, listeners_from_json(args.listeners)))

    def parent_gone() -> None:
        if reactor.running:
            _log.warn("the parent process is gone; worker {worker} stops", worker=args.worker)
            reactor.stop()

    Lifeline(reactor, parent_gone).startReading()  # type: ignore[no-untyped-call]
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger(
        "before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
