"""A blob in object storage as a response body: streamed through, or a redirect.

HTTP layer. With `[storage.s3] downloads = "proxy"` the object is GET from
S3 and relayed as it arrives, with backpressure both ways: the S3
connection is the request's streaming producer (paused while the client's
socket is full), and a client that goes away stops it. HEAD asks S3 for
the size only. Range: resolved against the object's size as file_body
does (ranges.py); one range is asked of S3 as it is (206), a set of
several is answered with the whole file (RFC 9110 §14.2 allows it; S3
serves one range per request). Last-Modified and If-Modified-Since as for
a local file.

With `downloads = "redirect"` a GET (a ranged one too: the client sends
its Range to the presigned URL, whose signature covers only Host) is
answered 302 to a presigned GET URL that lives `presign_ttl` seconds and
sets the same Content-Type and Content-Disposition; the 302 itself is
`no-store` (the URL expires). HEAD is still answered here, from the
object's size.

Counting (file_body.BlobBody's rule): a GET answered from its first byte,
or redirected without a Range or with one from byte 0, counts once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.client import ResponseDone
from twisted.web.iweb import IRequest, IResponse

from pypireg.http.ranges import starts_at_first_byte, tame_range
from pypireg.storage.s3 import S3Error
from pypireg.storage.s3_blobs import S3BlobStore

_log = Logger()


class ObjectBody(resource.Resource):
    """The body of one blob kept in object storage."""

    isLeaf = True

    def __init__(self, store: S3BlobStore, sha256: str, content_type: bytes,
                 counted: Callable[[], None] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._store = store
        self._sha256 = sha256
        self._content_type = content_type
        self._counted = counted

    def render(self, request: IRequest) -> int:
        d = Deferred.fromCoroutine(self._serve(cast(http.Request, request)))
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    async def _serve(self, request: http.Request) -> None:
        key = self._store.key_for(self._sha256)
        client = self._store.client
        ranges = request.getHeader(b"range")
        if request.method != b"HEAD" and self._store.downloads == "redirect":
            # Range too: the client sends it to the presigned URL (only Host is signed).
            return await self._redirect(request)
        if request.method == b"HEAD" or ranges is not None:
            info = await client.stat(key)
            if info is None:
                return self._missing(request)
            if request.method == b"HEAD":
                self._headers(request)
                if request.setLastModified(info.last_modified.timestamp()) is http.CACHED:
                    request.finish()
                    return None
                request.setHeader(b"Content-Length", b"%d" % info.size)
                request.finish()
                return None
            assert ranges is not None
            tamed = tame_range(ranges, info.size)
            spans = None if tamed is None else _spans(tamed, info.size)
            if spans is not None and len(spans) == 1:
                return await self._relay(request, key, spans[0])
            if spans == []:
                request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
                request.setHeader(b"Content-Range", b"bytes */%d" % info.size)
                request.setHeader(b"Content-Length", b"0")
                request.finish()
                return None
        return await self._relay(request, key, None)

    async def _redirect(self, request: http.Request) -> None:
        disposition = request.responseHeaders.getRawHeaders(b"content-disposition") or []
        filename = None
        if disposition:
            filename = disposition[0].decode("latin-1").partition('filename="')[2].rstrip('"')
        url = await self._store.presigned_url(self._sha256, filename or None,
                                              self._content_type.decode("latin-1"))
        request.setResponseCode(http.FOUND)
        request.setHeader(b"Location", url.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        request.responseHeaders.removeHeader(b"content-disposition")
        request.setHeader(b"Content-Length", b"0")
        ranges = request.getHeader(b"range")
        if self._counted is not None and (ranges is None or starts_at_first_byte(
                ranges.replace(b" ", b""))):
            self._counted()
        request.finish()

    async def _relay(self, request: http.Request, key: str, span: tuple[int, int] | None
                     ) -> None:
        first, last = span if span is not None else (None, None)
        response = await self._store.client.get(key, first=first, last=last, missing_ok=True)
        if response is None:
            return self._missing(request)
        modified = _header(response, b"last-modified")
        stamp = http.stringToDatetime(modified.encode("latin-1")) if modified else None
        length = response.length
        if not isinstance(length, int):
            # S3 always says; without a length a truncated body would look whole.
            response.deliverBody(_Discard())
            raise S3Error("GetObject", "an answer without Content-Length")
        self._headers(request)
        if stamp is not None and request.setLastModified(stamp) is http.CACHED:
            response.deliverBody(_Discard())
            request.finish()
            return None
        request.setHeader(b"Content-Length", b"%d" % length)
        if response.code == http.PARTIAL_CONTENT:
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"Content-Range", _header(response, b"content-range").encode())
        if self._counted is not None and (span is None or span[0] == 0):
            self._counted()
        relay = _Relay(request, length)
        response.deliverBody(relay)
        await relay.done
        return None

    def _headers(self, request: http.Request) -> None:
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"Content-Type", self._content_type)

    def _missing(self, request: http.Request) -> None:
        _log.error("blob {sha256} is missing from the bucket", sha256=self._sha256)
        _plain(request, http.NOT_FOUND, b"No such file.\n")

    def _failed(self, failure: Failure, request: IRequest) -> None:
        req = cast(http.Request, request)
        if req.finished or req._disconnected:
            return
        if req.startedWriting:
            # Headers are out: the body cannot be completed honestly.
            req.channel.transport.abortConnection()  # type: ignore[union-attr]
            return
        if failure.check(S3Error):
            error = cast(S3Error, failure.value)
            req.setHeader(b"Retry-After", b"5")
            _plain(req, http.SERVICE_UNAVAILABLE, error.reason.encode() + b"\n")
            return
        _log.failure("serving blob {sha256} from object storage", failure,
                     sha256=self._sha256)
        _plain(req, http.INTERNAL_SERVER_ERROR, b"Internal error.\n")


def _plain(request: http.Request, code: int, body: bytes) -> None:
    request.setResponseCode(code)
    request.responseHeaders.removeHeader(b"content-disposition")
    request.responseHeaders.removeHeader(b"cache-control")
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()


def _spans(tamed: bytes, size: int) -> list[tuple[int, int]]:
    """The byte spans of a Range header `tame_range` returned; [] if none can be served.

    Tamed ones are `bytes=a-b,c-d` within the size; an unsatisfiable set
    comes back as it was sent, and has no span that starts inside the body.
    """
    spans = []
    for spec in tamed.removeprefix(b"bytes=").split(b","):
        start, dash, end = spec.partition(b"-")
        if not (dash and start.isdigit() and end.isdigit()):
            return []
        first, last = int(start), int(end)
        if not first <= last or first >= size:
            return []
        spans.append((first, min(last, size - 1)))
    return spans


def _header(response: IResponse, name: bytes) -> str:
    values: list[bytes] = response.headers.getRawHeaders(name) or [b""]
    return values[0].decode("latin-1")


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


class _Relay(Protocol):
    """Relays an S3 body to the request; the S3 connection is the request's producer."""

    def __init__(self, request: http.Request, length: int) -> None:
        self._request: http.Request | None = request
        self._remaining = length
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        request = self._request
        assert request is not None and self.transport is not None
        producer = cast(IPushProducer, self.transport)
        if request._disconnected:
            # The client left while S3 answered: nobody to relay to.
            self._request = None
            producer.stopProducing()
            return
        request.registerProducer(producer, True)
        request.notifyFinish().addErrback(self._client_gone)

    def _client_gone(self, _: Failure) -> None:
        self._request = None
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._request is not None:
            self._remaining -= len(data)
            self._request.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        request, self._request = self._request, None
        if request is not None:
            request.unregisterProducer()
            if reason.check(ResponseDone) and self._remaining == 0:
                request.finish()
            else:
                # A truncated body must not look complete.
                _log.warn("object storage broke off a download: {why}",
                          why=reason.getErrorMessage())
                request.channel.transport.abortConnection()  # type: ignore[union-attr]
        if not self.done.called:
            self.done.callback(None)
