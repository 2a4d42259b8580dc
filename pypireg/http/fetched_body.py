"""The body of an upstream file being fetched through (proxy/files.py decides what is good).

HTTP layer: a FileSink over the request. Headers go out when the transfer
begins; an aborted transfer drops the connection short of Content-Length
(or without chunked encoding's last chunk), which every client reports as
an incomplete download rather than a good one.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from pypireg.proxy.files import Transfer

_log = Logger()


class FetchedBody(resource.Resource):
    isLeaf = True

    def __init__(self, transfer: Transfer, content_type: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._transfer = transfer
        self._content_type = content_type

    def render(self, request: IRequest) -> int:
        sink = _RequestSink(request, self._content_type)
        d = Deferred.fromCoroutine(self._transfer.run(sink))
        d.addErrback(sink.failed)
        return server.NOT_DONE_YET


class _RequestSink:
    def __init__(self, request: IRequest, content_type: bytes) -> None:
        self._request: Any = cast(Any, request)
        self._content_type = content_type
        self._gone = False
        self._done = False
        self._request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: Failure) -> None:
        self._gone = True

    def begin(self, length: int | None, producer: IPushProducer) -> None:
        request = self._request
        request.setHeader(b"Content-Type", self._content_type)
        if length is not None:
            request.setHeader(b"Content-Length", b"%d" % length)
        if not self._gone:
            request.registerProducer(producer, True)

    def write(self, data: bytes) -> None:
        if not self._gone and not self._done:
            self._request.write(data)

    def finish(self) -> None:
        if self._gone or self._done:
            return
        self._done = True
        self._request.unregisterProducer()
        self._request.finish()

    def abort(self) -> None:
        if self._gone or self._done:
            return
        self._done = True
        self._request.unregisterProducer()
        self._request.channel.transport.abortConnection()

    def failed(self, failure: Failure) -> None:
        _log.failure("fetching {uri} through failed", failure,
                     uri=self._request.uri.decode("latin-1"))
        self.abort()
