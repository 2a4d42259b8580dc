"""`server.workers` above 1: the parent process, which serves nothing itself.

Composition layer. The parent is the twistd process (so `twistd -n pypireg`
and the systemd unit stay as they are). In order, it:

1. starts the embedded PostgreSQL (without `database.dsn`) and applies the
   migrations, once;
2. opens every listener of `server.listen` and `server.metrics_listen`
   (listeners.py), without accepting on them;
3. spawns N workers (`python -m pypireg.worker`, worker.py), each a full
   registry with its own reactor on the inherited sockets;
4. restarts a worker that dies (`Workers`, with `RestartPolicy`'s back-off)
   and exits 1 with one line when one keeps dying at once;
5. on SIGTERM closes its copies of the sockets, has every worker drain
   (stop accepting, finish what runs, exit), then stops PostgreSQL.

Every worker's log events come back through a pipe (fd 3) and are logged
here, marked with the worker's number (`LogRelay`), so they go wherever the
parent's log goes (stdout, twistd.log, `logging.json_file`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from pypireg.config import Config
from pypireg.listeners import (
    LISTEN,
    METRICS_LISTEN,
    InheritedListener,
    OpenedSocket,
    listeners_to_json,
    open_for_workers,
)
from pypireg.service import WORKER_READY_KEY, RegistryService
from pypireg.startup import open_database
from pypireg.storage.embedded import EmbeddedPostgres

_log = Logger()
# The worker's file descriptors: 0 is a pipe from the parent (its end
# closing tells the worker the parent is gone), 1 and 2 its stdout and
# stderr, 3 its log events; the listening sockets follow from 4.
LOG_FD = 3
FIRST_LISTENER_FD = 4
# A worker that stops after draining gets this long beyond server.timeout
# before it is killed.
STOP_MARGIN_SECONDS = 10.0


@dataclass
class RestartPolicy:
    """When a dead worker comes back, and when the parent gives up.

    A death is quick if the worker never became ready or lived less than
    *quick_seconds*: those come back after a growing delay (*first_delay*,
    doubled each time, at most *max_delay*), and *give_up_after* of them in
    a row end the parent. A worker that served a while and died comes back
    at once, and the count starts again.
    """

    quick_seconds: float = 10.0
    first_delay: float = 0.25
    max_delay: float = 8.0
    give_up_after: int = 5
    quick_deaths: int = 0

    def next_delay(self, lived: float, was_ready: bool) -> float | None:
        """Seconds to wait before restarting a worker that died; None: give up."""
        if was_ready and lived >= self.quick_seconds:
            self.quick_deaths = 0
            return 0.0
        self.quick_deaths += 1
        if self.quick_deaths >= self.give_up_after:
            return None
        return float(min(self.first_delay * 2 ** (self.quick_deaths - 1), self.max_delay))


class LogRelay:
    """A worker's log events (JSON lines, as worker.py writes them), logged here.

    Each event keeps its level, namespace, time and fields, gains
    `pypireg_worker` (its number) and a system ("pypireg.service#info worker
    2") that the text log prints in brackets. Lines that are no event are
    logged as text.
    """

    def __init__(self, number: int, publish: Callable[[dict[str, Any]], None],
                 on_ready: Callable[[], None]) -> None:
        self._number = number
        self._publish = publish
        self._on_ready = on_ready
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.decode("utf-8", "replace"))

    def _line(self, text: str) -> None:
        if not text.strip():
            return
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.text(text, LogLevel.info)
            return
        if event.pop(WORKER_READY_KEY, False):
            self._on_ready()
        level_name = str(event.get("log_level"))
        try:
            event["log_level"] = LogLevel.levelWithName(level_name)
        except InvalidLogLevelError:
            event["log_level"], level_name = LogLevel.info, "-"
        event["log_system"] = f"{event.get('log_namespace', '-')}#{level_name} " \
                              f"worker {self._number}"
        event["pypireg_worker"] = self._number
        self._publish(event)

    def text(self, line: str, level: LogLevel) -> None:
        """A line the worker wrote outside its log (stdout, stderr), logged as it is."""
        _log.emit(level, "{line}", line=line, pypireg_worker=self._number,
                  log_system=f"worker {self._number}")


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, number: int, ended: Callable[[Failure], None],
                 ready: Callable[[], None]) -> None:
        self.relay = LogRelay(number, globalLogPublisher, ready)
        self._ended = ended
        self._text = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803
        fd = childFD
        if fd == LOG_FD:
            self.relay.feed(data)
            return
        self._text[fd] = self._text.get(fd, b"") + data
        *lines, self._text[fd] = self._text[fd].split(b"\n")
        level = LogLevel.warn if fd == 2 else LogLevel.info
        for line in lines:
            if line.strip():
                self.relay.text(line.decode("utf-8", "replace"), level)

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason)


def _exit_reason(reason: Failure) -> str:
    if reason.check(ProcessDone):
        return "exit status 0"
    signal = getattr(reason.value, "signal", None)
    if signal:
        return f"killed by signal {signal}"
    return f"exit status {getattr(reason.value, 'exitCode', '?')}"


@dataclass
class _Slot:
    number: int
    process: Any = None
    started: float = 0.0
    ready: bool = False
    respawn: IDelayedCall | None = None
    ended: Deferred[None] | None = None
    policy: RestartPolicy = dataclasses.field(default_factory=RestartPolicy)


# spawn(number, protocol) starts worker *number* with *protocol*; returns its process.
Spawn = Callable[[int, ProcessProtocol], Any]


class Workers:
    """N worker processes kept running: spawned, restarted with a back-off, stopped.

    *spawn* starts one (reactor.spawnProcess in the daemon, a fake in tests);
    *give_up* is called once, with one line, when a worker keeps dying at
    once; *all_ready* once every worker reported ready for the first time.
    """

    def __init__(self, clock: Any, count: int, spawn: Spawn, give_up: Callable[[str], None],
                 all_ready: Callable[[], None] = lambda: None,
                 policy: Callable[[], RestartPolicy] = RestartPolicy) -> None:
        self._clock = clock
        self._spawn_process = spawn
        self._give_up = give_up
        self._all_ready: Callable[[], None] | None = all_ready
        self._slots = [_Slot(n, policy=policy()) for n in range(1, count + 1)]
        self._stopping = False

    def start(self) -> None:
        for slot in self._slots:
            self._spawn(slot)

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids, in worker order."""
        return [slot.process.pid for slot in self._slots if slot.process is not None]

    def _spawn(self, slot: _Slot) -> None:
        slot.respawn = None
        slot.ready = False
        slot.started = self._clock.seconds()
        protocol = _WorkerProtocol(slot.number, lambda reason: self._ended(slot, reason),
                                   lambda: self._ready(slot))
        slot.process = self._spawn_process(slot.number, protocol)
        _log.info("started worker {worker} (pid {pid})", worker=slot.number,
                  pid=getattr(slot.process, "pid", None))

    def _ready(self, slot: _Slot) -> None:
        slot.ready = True
        if self._all_ready is not None and all(s.ready for s in self._slots):
            all_ready, self._all_ready = self._all_ready, None
            all_ready()

    def _ended(self, slot: _Slot, reason: Failure) -> None:
        slot.process = None
        how = _exit_reason(reason)
        if self._stopping:
            _log.info("worker {worker} stopped ({how})", worker=slot.number, how=how)
            if slot.ended is not None:
                slot.ended.callback(None)
            return
        lived = self._clock.seconds() - slot.started
        delay = slot.policy.next_delay(lived, slot.ready)
        if delay is None:
            self._give_up(f"worker {slot.number} ended {slot.policy.give_up_after} times in a "
                          f"row within {slot.policy.quick_seconds:g} seconds of its start "
                          f"(last: {how}); its log lines above say why")
            return
        _log.warn("worker {worker} ended ({how}); restarting it in {delay} seconds",
                  worker=slot.number, how=how, delay=delay)
        slot.respawn = self._clock.callLater(delay, self._spawn, slot)

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker and wait for them; SIGKILL those left after *timeout*."""
        self._stopping = True
        waits = []
        for slot in self._slots:
            if slot.respawn is not None and slot.respawn.active():
                slot.respawn.cancel()
            if slot.process is not None:
                slot.ended = Deferred()
                waits.append(slot.ended)
                self._signal(slot, "TERM")
        if not waits:
            return
        kill = self._clock.callLater(timeout, self._kill_left)
        for wait in waits:
            await wait
        if kill.active():
            kill.cancel()

    def _kill_left(self) -> None:
        for slot in self._slots:
            if slot.process is not None:
                _log.warn("worker {worker} did not stop in time; killing it", worker=slot.number)
                self._signal(slot, "KILL")

    @staticmethod
    def _signal(slot: _Slot, signal: str) -> None:
        try:
            slot.process.signalProcess(signal)
        except ProcessExitedAlready:
            pass


class WorkersParent(RegistryService):
    """The twistd process with `server.workers` above 1 (see the module docstring).

    A failed start is handled as RegistryService's (one line, exit 1); so is
    a worker that keeps dying at once.
    """

    def __init__(self, reactor: Any, config: Config, config_path: Path | None) -> None:
        super().__init__(reactor, config)
        self._config_path = config_path
        self._sockets: list[OpenedSocket] = []
        self._workers: Workers | None = None
        self._parent_embedded: EmbeddedPostgres | None = None
        self._giving_up = False

    async def _start(self) -> None:
        config = self.config
        self._start_json_log()
        # Only to start PostgreSQL and migrate: the workers open their own pools.
        opened = await open_database(self._reactor, config, pool_size=1)
        opened.db.close()
        self._parent_embedded = opened.embedded
        dsn = opened.embedded.dsn() if opened.embedded is not None else None
        for setting, descriptions in ((LISTEN, config.server.listen),
                                      (METRICS_LISTEN, config.server.metrics_listen)):
            for description in descriptions:
                self._sockets.append(
                    await open_for_workers(self._reactor, description, setting))
                _log.info("pypireg opened {endpoint} for its workers", endpoint=description)
        listeners = [InheritedListener(FIRST_LISTENER_FD + i, s.family, s.description,
                                       s.setting, s.tls) for i, s in enumerate(self._sockets)]
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r", LOG_FD: "r"}
        child_fds.update({listener.fd: s.fd for listener, s in zip(listeners, self._sockets,
                                                                   strict=True)})
        args = [sys.executable, "-m", "pypireg.worker", "--listeners",
                listeners_to_json(listeners)]
        if self._config_path is not None:
            args += ["--config", str(self._config_path)]
        if dsn is not None:
            # The embedded server's socket (no secret in it); a configured
            # DSN, which may carry a password, is read from the config file.
            args += ["--dsn", dsn]

        def spawn(number: int, protocol: ProcessProtocol) -> Any:
            return self._reactor.spawnProcess(
                protocol, sys.executable, [*args, "--worker", str(number)],
                env=dict(os.environ), childFDs=child_fds)

        count = config.server.workers
        self._workers = Workers(self._reactor, count, spawn, self._give_up,
                                lambda: _log.info("pypireg ready ({count} workers, storage "
                                                  "{path})", count=count,
                                                  path=str(config.storage.path)))
        self._workers.start()

    def _give_up(self, reason: str) -> None:
        if self._giving_up:  # another worker gave up too: one line, one exit
            return
        self._giving_up = True
        _log.critical("pypireg stops: {reason}", reason=reason)
        # As a failed start: exit 1 once shutdown (the other workers,
        # PostgreSQL) ran, for systemd's Restart=on-failure.
        self._reactor.callWhenRunning(self._exit_after_shutdown)

    async def _stop(self) -> None:
        await MultiService.stopService(self)
        # New connections are refused as soon as the workers let go of the
        # sockets too; the backlog of unaccepted ones is reset then.
        for opened in self._sockets:
            await opened.close()
        self._sockets.clear()
        if self._workers is not None:
            await self._workers.stop(self.config.server.timeout + STOP_MARGIN_SECONDS)
        if self._parent_embedded is not None:
            await self._parent_embedded.stop()
        if self._json_observer is not None:
            globalLogPublisher.removeObserver(self._json_observer)
