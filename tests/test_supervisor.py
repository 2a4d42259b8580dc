"""Unit tests for supervisor.py and worker.py: restarts on a Clock, the log relay, and
which periodic jobs a worker runs (service.py)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from pypireg.listeners import DRAIN_POLL_SECONDS, InheritedListeners
from pypireg.service import WORKER_READY_KEY, WorkerRole, background_jobs
from pypireg.supervisor import LogRelay, RestartPolicy, Workers
from pypireg.worker import EventPipe


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class Spawner:
    """spawnProcess for Workers: records each start; the test ends and readies them."""

    def __init__(self) -> None:
        self.started: list[tuple[int, Any, FakeProcess]] = []

    def __call__(self, number: int, protocol: ProcessProtocol) -> FakeProcess:
        process = FakeProcess(1000 + len(self.started))
        self.started.append((number, protocol, process))
        return process

    def latest(self, number: int) -> tuple[Any, FakeProcess]:
        protocol, process = [(p, proc) for n, p, proc in self.started if n == number][-1]
        return protocol, process

    def ready(self, number: int) -> None:
        self.latest(number)[0].relay.feed(_event_line(**{WORKER_READY_KEY: True}))

    def end(self, number: int, reason: Failure | None = None) -> None:
        self.latest(number)[0].processEnded(
            reason or Failure(ProcessTerminated(exitCode=1)))

    def count(self, number: int) -> int:
        return sum(1 for n, _p, _proc in self.started if n == number)


def _event_line(**fields: Any) -> bytes:
    stream = io.StringIO()
    EventPipe(stream)({"log_format": "hello {who}", "who": "there", "log_level": LogLevel.info,
                       "log_namespace": "pypireg.test", "log_time": 1.0, **fields})
    return stream.getvalue().encode()


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def workers(count: int = 2) -> tuple[Clock, Spawner, list[str], list[str], Workers]:
    clock, spawner, gave_up, ready = Clock(), Spawner(), [], []
    supervisor = Workers(clock, count, spawner, gave_up.append, lambda: ready.append("all"))
    supervisor.start()
    return clock, spawner, gave_up, ready, supervisor


def test_policy_backs_off_on_quick_deaths_and_forgives_a_worker_that_served() -> None:
    policy = RestartPolicy(quick_seconds=10, first_delay=0.25, max_delay=1.0, give_up_after=5)
    assert [policy.next_delay(1.0, was_ready=True) for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    assert policy.next_delay(1.0, was_ready=True) is None
    policy = RestartPolicy(give_up_after=3)
    assert policy.next_delay(100.0, was_ready=False) == 0.25  # never ready: quick
    assert policy.next_delay(100.0, was_ready=True) == 0.0  # served a while: at once
    assert policy.next_delay(0.0, was_ready=False) == 0.25  # the count started again


def test_all_ready_once_every_worker_reported() -> None:
    _clock, spawner, _gave_up, ready, supervisor = workers()
    assert [n for n, _p, _proc in spawner.started] == [1, 2]
    spawner.ready(1)
    assert ready == []
    spawner.ready(2)
    spawner.ready(2)
    assert ready == ["all"]
    assert supervisor.pids == [1000, 1001]


def test_a_worker_that_dies_comes_back_after_its_delay() -> None:
    clock, spawner, gave_up, _ready, _supervisor = workers()
    spawner.ready(1)
    clock.advance(60)
    spawner.end(1)  # served a minute: back at once
    clock.advance(0)
    assert spawner.count(1) == 2
    spawner.end(1)  # never ready: after the first delay, not before
    clock.advance(0.2)
    assert spawner.count(1) == 2
    clock.advance(0.05)
    assert spawner.count(1) == 3
    assert spawner.count(2) == 1 and gave_up == []


def test_a_worker_that_keeps_dying_at_once_ends_the_parent(logged: list[dict[str, Any]]
                                                           ) -> None:
    clock, spawner, gave_up, _ready, _supervisor = workers()
    for delay in (0.25, 0.5, 1.0, 2.0):
        spawner.end(2)
        clock.advance(delay)
    assert spawner.count(2) == 5 and gave_up == []
    spawner.end(2, Failure(ProcessTerminated(exitCode=1)))
    clock.advance(100)
    assert spawner.count(2) == 5
    assert gave_up == ["worker 2 ended 5 times in a row within 10 seconds of its start (last: "
                       "exit status 1); its log lines above say why"]


def test_stop_terms_every_worker_and_kills_those_left() -> None:
    clock, spawner, _gave_up, _ready, supervisor = workers()
    spawner.end(1)  # a restart is pending: stopping cancels it
    stopped = Deferred.fromCoroutine(supervisor.stop(timeout=30))
    _p2, second = spawner.latest(2)
    assert second.signals == ["TERM"]
    clock.advance(29)
    assert second.signals == ["TERM"] and not stopped.called
    clock.advance(1)
    assert second.signals == ["TERM", "KILL"]
    spawner.end(2, Failure(ProcessTerminated(signal=9)))
    assert stopped.called
    clock.advance(100)
    assert spawner.count(1) == 1


def test_stop_waits_for_a_drain_that_ends_in_time() -> None:
    clock, spawner, _gave_up, _ready, supervisor = workers(1)
    stopped = Deferred.fromCoroutine(supervisor.stop(timeout=30))
    spawner.end(1, Failure(ProcessDone(0)))
    assert stopped.called
    clock.advance(60)
    assert spawner.latest(1)[1].signals == ["TERM"]


def test_relay_logs_worker_events_with_the_worker_number(logged: list[dict[str, Any]]) -> None:
    ready: list[int] = []
    relay = LogRelay(2, globalLogPublisher, lambda: ready.append(2))
    line = _event_line()
    relay.feed(line[:10])  # a line in pieces is one event
    relay.feed(line[10:] + b"not an event\n")
    events = [e for e in logged if e.get("pypireg_worker") == 2]
    assert events[0]["log_system"] == "pypireg.test#info worker 2"
    assert events[0]["log_namespace"] == "pypireg.test"
    assert events[0]["who"] == "there"
    assert events[1]["line"] == "not an event"
    assert ready == []


def test_event_pipe_sends_the_text_with_its_traceback(logged: list[dict[str, Any]]) -> None:
    stream = io.StringIO()
    pipe = EventPipe(stream)
    log = Logger(namespace="pypireg.test", observer=pipe)
    try:
        raise ValueError("broken")
    except ValueError:
        log.failure("the job {job} failed", job="gc")
    LogRelay(1, globalLogPublisher, lambda: None).feed(stream.getvalue().encode())
    text = formatEvent(next(e for e in logged if e.get("pypireg_worker") == 1))
    assert text.startswith("the job gc failed\n")
    assert "ValueError: broken" in text



@pytest.mark.parametrize("proxy", [False, True])
def test_only_worker_1_runs_the_jobs_that_must_run_once(proxy: bool) -> None:
    # Built, not started: nothing here touches the database or the disk.
    parts: Any = SimpleNamespace(files=SimpleNamespace(evict=lambda size: None)) \
        if proxy else None

    async def flush() -> None:
        pass

    def jobs(worker: WorkerRole | None) -> list[str]:
        once = worker is None or worker.runs_housekeeping
        return [job.name for job in background_jobs(Clock(), None, None, None, parts, flush,
                                                     1, once=once)]

    everything = ["duplicate cleanup", "garbage collection", "recording downloads"] + (
        ["cache eviction"] if proxy else [])
    assert jobs(None) == everything  # one process: all of them
    assert jobs(WorkerRole(1, [])) == everything
    # Each worker writes its own download counts.
    assert jobs(WorkerRole(2, [])) == ["recording downloads"]


class DrainingSite:
    """A site for InheritedListeners' drain: *busy* connections, each finishing on request."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.aborted = 0
        self.starts = 0
        transport = SimpleNamespace(abortConnection=self._abort)
        self.channels = [SimpleNamespace(transport=transport)]

    def _abort(self) -> None:
        self.aborted += 1

    def close_idle(self) -> int:
        return self.busy

    def doStart(self) -> None:
        self.starts += 1

    def doStop(self) -> None:
        self.starts -= 1


def drain(site: DrainingSite, seconds: float) -> tuple[Clock, Deferred[None]]:
    clock = Clock()
    # Not started (no socket to adopt); started, it would have started the site.
    listeners = InheritedListeners(clock, [(None, site)], [site], seconds)
    site.doStart()
    return clock, listeners.stopService()


def test_a_drain_ends_when_the_last_request_finished() -> None:
    site = DrainingSite(busy=2)
    clock, stopped = drain(site, 30)
    clock.advance(5)
    assert not stopped.called and site.starts == 1  # still logging the requests
    site.busy = 0
    clock.advance(DRAIN_POLL_SECONDS)
    assert stopped.called and site.aborted == 0 and site.starts == 0


def test_a_drain_cuts_what_is_left_after_its_time() -> None:
    site = DrainingSite(busy=1)
    clock, stopped = drain(site, 30)
    clock.advance(29.9)
    assert not stopped.called
    clock.advance(0.2)
    assert stopped.called and site.aborted == 1 and site.starts == 0
