"""Listening sockets opened by one process and served by others (`server.workers`).

Composition layer, beside service.py. With workers the parent opens every
endpoint of `server.listen` and `server.metrics_listen` itself, exactly as
a single process would (the same endpoint strings, the same one-line
errors), but stops reading from them at once: it never accepts a
connection. Each worker inherits the sockets (spawnProcess's childFDs) and
adopts them into its own reactor; the kernel hands every new connection to
whichever worker accepts first. While a worker restarts, connections wait
in the socket's backlog instead of being refused.

TLS (`ssl:`) is not part of the socket: the worker wraps its factory with
the context the same endpoint string gives (certificate files read again
in the worker).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import task, tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from pypireg.startup import StartupError, os_reason

_log = Logger()
LISTEN = "server.listen"
METRICS_LISTEN = "server.metrics_listen"
# How often a drain looks for connections that finished their request.
DRAIN_POLL_SECONDS = 0.1


def endpoint_reason(description: str, error: Exception) -> str:
    """Why Twisted could not make an endpoint of *description*, in words."""
    if description.startswith("systemd:") and isinstance(error, IndexError | KeyError):
        return ("systemd passed no such socket (LISTEN_FDS, LISTEN_FDNAMES); is the service "
                "started through its .socket unit?")
    if isinstance(error, OSError):
        return os_reason(error)
    return str(error) or type(error).__name__


def listen_failed(description: str, setting: str, error: Exception) -> StartupError:
    """*error*, raised while listening on *description*, as the one line a failed start gives."""
    if isinstance(error, CannotListenError):
        return StartupError(f"cannot listen on {description}", setting,
                            os_reason(error.socketError))
    assert isinstance(error, OSError)  # a unix: socket's folder, say
    return StartupError(f"cannot listen on {description}", setting, os_reason(error))


def parse_endpoint(reactor: Any, description: str, setting: str) -> Any:
    """The server endpoint of *description*, or StartupError naming *setting*."""
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        # Whatever the endpoint parser raises is the string's fault (an
        # unknown type, a bad port, a missing key file, no systemd socket).
        raise StartupError(f"cannot use the endpoint {description}", setting,
                           endpoint_reason(description, e)) from e


@dataclass(frozen=True)
class InheritedListener:
    """A listening socket a worker finds at *fd*, opened by its parent for *description*.

    Attributes:
        fd: Its file descriptor in the worker.
        family: AF_INET, AF_INET6 or AF_UNIX.
        description: The endpoint string (for TLS and for the log).
        setting: The config key it comes from: server.listen or server.metrics_listen.
        tls: Wrap connections in TLS, as the `ssl:` endpoint would.
    """

    fd: int
    family: int
    description: str
    setting: str
    tls: bool


def listeners_to_json(listeners: list[InheritedListener]) -> str:
    return json.dumps([asdict(listener) for listener in listeners])


def listeners_from_json(text: str) -> list[InheritedListener]:
    return [InheritedListener(**item) for item in json.loads(text)]


@dataclass(frozen=True)
class OpenedSocket:
    """A socket the parent listens on without reading it; *port* keeps it open."""

    port: Any
    family: int
    description: str
    setting: str
    tls: bool

    @property
    def fd(self) -> int:
        return int(self.port.fileno())

    def close(self) -> Deferred[None]:
        """Close the parent's copy (a unix: socket's file goes with it)."""
        return self.port.stopListening()  # type: ignore[no-any-return]


async def open_for_workers(reactor: Any, description: str, setting: str) -> OpenedSocket:
    """Listen on *description* in this process, for workers to accept on.

    Raises:
        StartupError: The string is no endpoint, listening failed, or the
            endpoint is no stream socket a worker can adopt.
    """
    endpoint = parse_endpoint(reactor, description, setting)
    # Never used: no connection is accepted here.
    unused = Factory.forProtocol(Protocol)
    unused.noisy = False
    try:
        port = await endpoint.listen(unused)
    except (CannotListenError, OSError) as e:
        raise listen_failed(description, setting, e) from e
    if not isinstance(port, tcp.Port):
        await port.stopListening()
        raise StartupError(f"cannot hand {description} to workers", setting,
                           "with server.workers above 1 the endpoints must be tcp:, tcp6:, "
                           "ssl:, unix: or systemd: sockets")
    # The workers accept; the parent only keeps the socket open.
    port.stopReading()
    return OpenedSocket(port, port.socket.family, description, setting,
                        isinstance(endpoint, SSL4ServerEndpoint))


class _AdoptedUnixPort(unix.Port):
    """A unix: socket adopted from the parent: closing it leaves the socket's file alone.

    Twisted's unix.Port removes its path when it stops listening, which is
    right for the process that made it (the parent) but would pull the file
    from under the other workers whenever one stops.
    """

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)


def _tls_context(reactor: Any, listener: InheritedListener) -> Any:
    """The TLS context the `ssl:` endpoint string of *listener* makes."""
    endpoint = parse_endpoint(reactor, listener.description, listener.setting)
    # The endpoint keeps its context private; parsing the string again (not
    # reimplementing its many keys) is what guarantees the same TLS options.
    return endpoint._sslContextFactory


def adopt(reactor: Any, listener: InheritedListener, factory: Any) -> IListeningPort:
    """Serve *factory* on the inherited socket of *listener* (adoptStreamPort or its like)."""
    if listener.tls:
        factory = TLSMemoryBIOFactory(_tls_context(reactor, listener), False, factory)
    if listener.family == socket.AF_UNIX:
        port = _AdoptedUnixPort._fromListeningDescriptor(  # type: ignore[no-untyped-call]
            reactor, listener.fd, factory)
        port.startListening()
        return port  # type: ignore[no-any-return]
    return reactor.adoptStreamPort(  # type: ignore[no-any-return]
        listener.fd, listener.family, factory)


class InheritedListeners(Service):
    """A worker's listeners; stopping drains: no new connections, running requests finish.

    *drainable* are the sites whose connections are waited for (each with
    `close_idle()`, as RegistrySite has); connections still open after
    *drain_seconds* are cut.
    """

    def __init__(self, reactor: Any, served: list[tuple[InheritedListener, Any]],
                 drainable: list[Any], drain_seconds: float) -> None:
        self._reactor = reactor
        self._served = served
        self._drainable = drainable
        self._drain_seconds = drain_seconds
        self._ports: list[IListeningPort] = []

    def _factories(self) -> list[Any]:
        return list({id(factory): factory for _listener, factory in self._served}.values())

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        # Started once more than by their ports, and stopped after the
        # drain: a Site that stops closes its access log, and the requests
        # that finish while draining would go unlogged.
        for factory in self._factories():
            factory.doStart()
        for listener, factory in self._served:
            self._ports.append(adopt(self._reactor, listener, factory))
            what = "serving /-/metrics" if listener.setting == METRICS_LISTEN else "listening"
            _log.info("pypireg {what} on {endpoint}", what=what, endpoint=listener.description)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        for port in self._ports:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        self._ports.clear()
        deadline = self._reactor.seconds() + self._drain_seconds
        while self._open_connections() and self._reactor.seconds() < deadline:
            await task.deferLater(self._reactor, DRAIN_POLL_SECONDS, lambda: None)
        left = self._open_connections()
        if left:
            _log.warn("cutting {count} connections still open after {seconds} seconds of "
                      "draining", count=left, seconds=self._drain_seconds)
            for site in self._drainable:
                for channel in list(site.channels):
                    if channel.transport is not None:
                        channel.transport.abortConnection()
        for factory in self._factories():
            factory.doStop()

    def _open_connections(self) -> int:
        close_idle: list[Callable[[], int]] = [site.close_idle for site in self._drainable]
        return sum(close() for close in close_idle)
