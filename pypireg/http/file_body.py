"""A stored file as a response body: `os.sendfile` from the blob to the socket.

HTTP layer. twisted.web.static reads each chunk into a bytes object, joins
it into the transport's buffer and sends it in 128 KiB slices: three copies
of every byte in Python. On a plain TCP (or UNIX) connection this module
lets the kernel copy the file to the socket instead. TLS, HTTP/2, test
transports and Range requests go through twisted.web.static as before,
with Range sets tamed first (ranges.py).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http, resource, server, static
from twisted.web.iweb import IRequest
from zope.interface import implementer

from pypireg.http.ranges import starts_at_first_byte, tame_range

_log = Logger()
# Reads of 1 MiB rather than Twisted's 64 KiB for the static.File path: a
# quarter of a millisecond from the page cache, and a sixteenth of the
# per-chunk overhead.
READ_SIZE = 1024 * 1024
# At most this much per reactor turn, then let other connections run: a
# fast client would otherwise keep one download's loop going for a whole
# large file (and an uncached file is read from disk within the call).
SENDFILE_TURN = 2 * 1024 * 1024
_HAVE_SENDFILE = hasattr(os, "sendfile")  # not on Windows


class BlobBody(resource.Resource):
    """The body of one stored file, with Content-Length, Last-Modified and Range.

    *counted*, if given, is called once the answer is known to be the file
    from its first byte (a 200, or a 206 whose ranges start at byte 0) to a
    GET: a download, as the registry counts them. Not for HEAD, a 304, a
    416 or a later range. It is called as the body starts, so a transfer
    the client abandons still counts: a request, as the public index counts.
    """

    isLeaf = True

    def __init__(self, path: str, content_type: bytes,
                 counted: Callable[[], None] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._path = path
        self._content_type = content_type
        self._counted = counted

    def render(self, request: IRequest) -> bytes | int:
        transport = _sendfile_transport(request)
        if transport is None or request.getHeader(b"range") is not None:
            return self._render_static(request)
        try:
            # Opening and fstat of a page-cached file, in the reactor thread,
            # as static.File does; a bare fd skips io.open's own syscalls.
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            return self._render_static(request)  # its 404 or 403 page
        try:
            stat = os.fstat(fd)
            request.setHeader(b"Accept-Ranges", b"bytes")
            if request.getHeader(b"if-modified-since") is None:
                request.setHeader(b"Last-Modified", _http_date(math.ceil(stat.st_mtime)))
            elif request.setLastModified(stat.st_mtime) is http.CACHED:
                os.close(fd)
                return b""
            request.setHeader(b"Content-Type", self._content_type)
            request.setHeader(b"Content-Length", b"%d" % stat.st_size)
            if request.method == b"HEAD" or stat.st_size == 0:
                os.close(fd)
                return b""
        except BaseException:
            os.close(fd)
            raise
        if self._counted is not None and request.method == b"GET":
            self._counted()
        body = SendfileBody(cast(http.Request, request), transport, fd, stat.st_size, self._path)
        body.start()
        return server.NOT_DONE_YET

    def _render_static(self, request: IRequest) -> bytes | int:
        ranges = request.getHeader(b"range")
        if ranges is not None:
            try:
                size = os.stat(self._path).st_size
            except OSError:
                size = None  # static.File answers it
            tamed = tame_range(ranges, size) if size is not None else ranges
            if tamed is None:
                request.requestHeaders.removeHeader(b"range")
            elif tamed != ranges:
                request.requestHeaders.setRawHeaders(b"range", [tamed])
        blob = _BlobFile(self._path, defaultType="application/octet-stream")
        blob.type = self._content_type.decode("latin-1")
        blob.encoding = None
        body: bytes | int = blob.render(request)  # type: ignore[no-untyped-call]
        if self._counted is not None and request.method == b"GET":
            code = cast(http.Request, request).code
            if code == http.OK or (code == http.PARTIAL_CONTENT and starts_at_first_byte(
                    request.getHeader(b"range") or b"")):
                self._counted()
        return body


class _BlobFile(static.File):
    def makeProducer(self, request: IRequest, fileForReading: Any) -> Any:  # noqa: N803
        producer = super().makeProducer(request, fileForReading)  # type: ignore[no-untyped-call]
        producer.bufferSize = READ_SIZE
        return producer


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> bytes:
    # Blobs are written once, so their few mtimes repeat: format each once.
    date: bytes = http.datetimeToString(seconds)
    return date


def _sendfile_transport(request: IRequest) -> tcp.Connection | None:
    """The request's socket transport, if a body may bypass it; else None."""
    if not _HAVE_SENDFILE:
        return None
    channel = getattr(request, "channel", None)
    if not isinstance(request, http.Request) or not isinstance(channel, http.HTTPChannel):
        return None  # HTTP/2, or a test's fake request or channel
    transport = channel.transport
    # A TLS wrapper forwards attribute lookups to the TCP connection below
    # it, so test the type, not the attributes. Old-style startTLS marks
    # the connection itself.
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None
    # We borrow the transport's wake-up of its streaming producer, which
    # must therefore be this channel.
    if transport.producer is not channel or not transport.streamingProducer:
        return None
    return transport


@implementer(IPushProducer)
class SendfileBody:
    """Send a file to a request's socket with `os.sendfile`, woken by writability.

    Registered on the request as a streaming producer. When the socket's
    buffer is full, the producer asks the transport to wake the channel (and
    through it this producer) once its own buffer is empty and the socket is
    writable again: `FileDescriptor.doWrite` resumes a paused streaming
    producer at exactly that moment. The same wake-up runs before the first
    byte, so the headers queued in the transport go out first.
    """

    def __init__(self, request: http.Request, transport: tcp.Connection, fd: int, size: int,
                 path: str) -> None:
        self._request: http.Request | None = request
        self._channel: http.HTTPChannel = request.channel
        self._transport = transport
        self._fd: int | None = fd  # ours to close, once
        self._size = size
        self._path = path
        self._offset = 0
        self._paused = False

    def start(self) -> None:
        request = self._request
        assert request is not None
        request.registerProducer(self, True)
        request.write(b"")  # the status line and headers, into the transport
        self._wait_for_drain()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._send()

    def stopProducing(self) -> None:
        """The connection is gone: drop the file, never touch the request again."""
        self._close()
        self._request = None

    def _send(self) -> None:
        request, file_fd = self._request, self._fd
        if request is None or file_fd is None or self._paused:
            return
        socket_fd = self._transport.socket.fileno()
        turn_end = self._offset + SENDFILE_TURN
        while self._offset < self._size:
            if self._offset >= turn_end:
                self._wait_for_drain()  # the socket is writable: back at once
                return
            count = min(self._size, turn_end) - self._offset
            try:
                sent = os.sendfile(socket_fd, file_fd, self._offset, count)
            except BlockingIOError:
                self._wait_for_drain()
                return
            except InterruptedError:
                continue
            except OSError as e:
                # The peer reset or closed: the body cannot be completed.
                _log.debug("download ended early: {error}", error=e)
                self._abort()
                return
            if sent == 0:
                # The blob is shorter than its fstat said; a truncated body
                # must not look complete.
                _log.error("stored file {path} ended at byte {offset} of {size}",
                           path=self._path, offset=self._offset, size=self._size)
                self._abort()
                return
            self._offset += sent
            request.sentLength += sent
        self._finish(request)

    def _wait_for_drain(self) -> None:
        transport = self._transport
        if transport.producer is not self._channel or transport.disconnecting:
            # The channel is closing the connection (a timeout): it will not
            # wake us, and the body can no longer be completed.
            self._abort()
            return
        # What the transport does itself when its buffer fills: mark its
        # producer (the channel) paused and watch for writability. The
        # channel passes the pause to us, and doWrite resumes it once the
        # buffer is empty and the socket takes data again.
        transport.producerPaused = True
        self._channel.pauseProducing()
        transport.startWriting()

    def _finish(self, request: http.Request) -> None:
        self._close()
        self._request = None
        # finish() may start the next pipelined request on this connection,
        # so nothing of ours may run after it.
        request.unregisterProducer()
        request.finish()

    def _abort(self) -> None:
        self._close()
        # stopProducing (from connectionLost) does the rest.
        self._transport.abortConnection()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
