"""Long descriptions (READMEs) for the package page: rendered once, out of process, bounded.

HTTP layer. Rendering a large README with readme-renderer takes seconds of
CPU and hundreds of MiB; done in a thread of the daemon, it held the GIL
(index requests stalled behind it) and left its peak heap behind, and it
was done again on every view. Here each README is rendered

- once: the HTML is kept in PostgreSQL (storage/descriptions.py) under
  `description_key`, the sha256 of what decides it (the renderer version,
  the content type and the text), so the files of a release and releases
  with an unchanged README share it; concurrent first views in this process
  wait for one render (`_in_flight`);
- in a child process (readme_worker.py), at most `concurrent` at a time,
  each within a wall-clock budget (then SIGKILL), an address-space cap and
  a cap on the HTML it may write; sources over `max_source` bytes are not
  rendered at all.

Whatever goes wrong (too large, too slow, a crash, garbage on stdout), the
page shows the README as escaped plain text, logs one warning, and keeps
that too, so a README that defeats the renderer costs one attempt, not one
per view.

    html(description) ──cached?──▶ stored HTML
          │ no
          ├─ same key in flight? ──▶ wait for that render
          ▼
    _render_once ─ too large ──────────────▶ plain, truncated ─┐
          │ semaphore (concurrent)                             │
          ▼                                                    ▼
    worker process ─ ok ──▶ HTML ─────────────────────▶ put_rendered ──▶ every waiter
          └─ timeout / crash / too much output ──▶ plain ─┘
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import pypireg
from pypireg.http.web.pages import plain_description
from pypireg.single_flight import SingleFlight
from pypireg.storage import descriptions as description_store
from pypireg.storage.database import Database
from pypireg.storage.descriptions import How, RenderedDescription
from pypireg.storage.releases import Description

_log = Logger()
# Part of every key: change it when the renderer's output changes (a new
# readme-renderer, other limits) and every README is rendered again.
RENDERER_VERSION = 1
# The end of the worker's stderr kept for the log (its traceback's last lines).
_STDERR_KEPT = 2048


@dataclass(frozen=True)
class ReadmeLimits:
    """What one README may cost.

    On an idle 2-core machine docutils takes about 2 s for 200 KB of
    ordinary reStructuredText, 10 s for 800 KB and 18 s for 1 MiB (its time
    grows faster than the text), peaking near 330 MiB of address space. The
    budget lets READMEs of a few hundred KB render; since each is rendered
    once, it bounds what an uploader can make us spend per distinct README,
    not per view.
    """

    max_source: int = 1 << 20  # bytes of UTF-8; larger ones are shown as plain text
    max_html: int = 8 << 20  # bytes of output; more and the worker is killed
    seconds: float = 15.0  # wall-clock budget of one render; then SIGKILL
    memory: int = 512 << 20  # the worker's address space (RLIMIT_AS)
    concurrent: int = 2  # worker processes at once
    # Renders waiting for a worker, beyond which a first view gets plain
    # text at once (not kept): a flood of new READMEs queues only so long.
    waiting: int = 32


def description_key(description: Description) -> str:
    """The cache key of a description: hex sha256 of version, content type and text."""
    content_type = description.content_type or ""  # no type and '' render alike
    digest = hashlib.sha256(
        f"pypireg-readme:{RENDERER_VERSION}:{len(content_type)}:{content_type}:".encode())
    digest.update(description.text.encode("utf-8"))
    return digest.hexdigest()


def worker_command(limits: ReadmeLimits) -> list[str]:
    """The worker's command line.

    `-P`: no current directory on sys.path, so the worker imports what the
    daemon runs (PYTHONPATH, below) whatever the daemon's working directory.
    Its CPU cap is a second past the budget: it only matters if the daemon
    is gone and cannot kill it.
    """
    return [sys.executable, "-P", "-m", "pypireg.http.web.readme_worker",
            "--memory", str(limits.memory), "--cpu", str(math.ceil(limits.seconds) + 1)]


def worker_environment() -> dict[str, str]:
    """A small environment: the worker reads untrusted text, and needs no secrets."""
    code = str(Path(pypireg.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": os.pathsep.join([code, inherited] if inherited else [code]),
    }


class _RenderFailed(Exception):
    def __init__(self, how: How, reason: str) -> None:
        super().__init__(reason)
        self.how = how
        self.reason = reason


class _Worker(ProcessProtocol):
    """One worker process: feeds it the request, collects bounded output."""

    def __init__(self, request: bytes, max_output: int) -> None:
        self._request = request
        self._max_output = max_output
        self._output: list[bytes] = []
        self._size = 0
        self._stderr = bytearray()
        # Why we killed it, if we did: (how, reason).
        self.problem: tuple[How, str] | None = None
        # Fires once the process is reaped and its pipes are closed; then
        # end is ProcessDone or ProcessTerminated.
        self.ended: Deferred[None] = Deferred()
        self.end: BaseException | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if self.problem is not None:
            return
        self._size += len(data)
        if self._size > self._max_output:
            self._output.clear()
            self.kill("too_large", f"its HTML is over {self._max_output} bytes")
            return
        self._output.append(data)

    def errReceived(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-_STDERR_KEPT]

    def kill(self, how: How, reason: str) -> None:
        if self.problem is None:
            self.problem = (how, reason)
        assert self.transport is not None
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        self.end = reason.value
        self.ended.callback(None)

    @property
    def output(self) -> bytes:
        return b"".join(self._output)

    @property
    def last_error_line(self) -> str:
        lines = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:200] if lines else "no message"


class ReadmeRenderer:
    """The package page's README HTML: cached, else rendered once in a bounded worker.

    *reactor* spawns the workers, *clock* (the reactor unless given) times
    them; *worker* replaces the worker's command line (tests run one that
    sleeps or crashes).
    """

    def __init__(self, reactor: IReactorProcess, db: Database,
                 limits: ReadmeLimits, *, clock: IReactorTime | None = None,
                 worker: Sequence[str] | None = None) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else IReactorTime(reactor)
        self._db = db
        self._limits = limits
        self._command = list(worker) if worker is not None else worker_command(limits)
        self._environment = worker_environment()
        self._workers = DeferredSemaphore(limits.concurrent)
        # Renders under way (running or waiting for a worker) by key, with
        # the views waiting for each: a new view of the same README joins.
        self._in_flight: SingleFlight[str, str] = SingleFlight()

    async def html(self, description: Description, name: str, version: str) -> str:
        """The HTML of *description* for the page (*name* and *version* are for the log)."""
        key = description_key(description)
        if key not in self._in_flight:
            cached = await description_store.get_rendered(self._db, key)
            if cached is not None:
                return cached.html
        if key not in self._in_flight and (
                len(self._in_flight) >= self._limits.concurrent + self._limits.waiting):
            _log.warn("README renderer busy: the description of {name} {version} is"
                      " shown as plain text for now", name=name, version=version)
            return plain_description(description.text, self._limits.max_source)
        return await self._in_flight.run(
            key, lambda: self._render_once(key, description, name, version))

    async def _render_once(self, key: str, description: Description, name: str,
                           version: str) -> str:
        try:
            rendered = await self._render(description, name, version)
        except Exception:
            _log.failure("rendering the description of {name} {version} went wrong",
                         name=name, version=version)
            raise
        try:
            # Before the views get it: a view arriving now finds it stored.
            await description_store.put_rendered(self._db, key, rendered)
        except Exception:
            # The page can still show it; the next view renders it again.
            _log.failure("could not keep the rendered description of {name} {version}",
                         name=name, version=version)
        return rendered.html

    async def _render(self, description: Description, name: str, version: str
                      ) -> RenderedDescription:
        text = description.text
        size = len(text.encode("utf-8"))
        limit = self._limits.max_source
        try:
            if size > limit:
                raise _RenderFailed("too_large", f"it is {size} bytes, over the limit of {limit}")
            return await self._workers.run(
                lambda: Deferred.fromCoroutine(self._run_worker(description)))
        except _RenderFailed as e:
            _log.warn("the description of {name} {version} is shown as plain text:"
                      " {reason} ({how})", name=name, version=version, reason=e.reason,
                      how=e.how)
            return RenderedDescription(plain_description(text, limit), e.how)

    async def _run_worker(self, description: Description) -> RenderedDescription:
        request = json.dumps({"text": description.text,
                              "content_type": description.content_type},
                             ensure_ascii=False).encode("utf-8")
        worker = _Worker(request, self._limits.max_html)
        try:
            self._reactor.spawnProcess(worker, self._command[0], self._command,
                                       env=self._environment, path="/")
        except OSError as e:
            raise _RenderFailed("failed", f"the worker did not start: {e}") from e
        seconds = self._limits.seconds
        timer = self._clock.callLater(seconds, worker.kill, "timeout",
                                      f"it took longer than {seconds:g} s")
        try:
            await worker.ended
        finally:
            if timer.active():
                timer.cancel()
        ended = worker.end
        if worker.problem is not None:
            raise _RenderFailed(*worker.problem)
        if isinstance(ended, ProcessTerminated):
            status = (f"killed by signal {ended.signal}" if ended.signal is not None
                      else f"exited with status {ended.exitCode}")
            raise _RenderFailed("failed", f"the worker {status}: {worker.last_error_line}")
        if not isinstance(ended, ProcessDone):
            raise _RenderFailed("failed", f"the worker ended: {ended}")
        return _parse_output(worker.output)


def _parse_output(output: bytes) -> RenderedDescription:
    """The worker's answer: `{"html": ..., "how": "rendered" | "plain"}`."""
    try:
        answer = json.loads(output)
    except ValueError as e:
        raise _RenderFailed("failed", f"the worker's output is not JSON: {e}") from e
    if not isinstance(answer, dict):
        raise _RenderFailed("failed", "the worker's output is not an object")
    html, how = answer.get("html"), answer.get("how")
    if not isinstance(html, str) or how not in ("rendered", "plain"):
        raise _RenderFailed("failed", "the worker's output lacks html or how")
    return RenderedDescription(html, how)
