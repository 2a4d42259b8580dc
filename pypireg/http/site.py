"""Site → channel → request: the request owns the body policy.

HTTP layer. Twisted's default request spools the whole body and then parses
multipart forms in memory. `RegistryRequest` switches that off and, for the
upload route, hands each body chunk to an UploadReceiver as it arrives; other
routes get a small bounded body. Refusals that happen before the body is
read are written straight to the transport, followed by a lingering close
(half-close, discard briefly, then drop) so clients that are still sending
see the answer instead of a connection reset.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource
from zope.interface import implementer

from pypireg.domain.errors import (
    BadRequest,
    HeaderTooLarge,
    NotTheUploadUrl,
    RegistryError,
    RequestTimeout,
    TooLarge,
)
from pypireg.http.credentials import client_address, request_credentials
from pypireg.http.errors import error_bytes, render_error
from pypireg.http.front_door import codings, framing_problem, host_problem, split_absolute_form
from pypireg.http.metrics import Metrics
from pypireg.http.responses import origin, pypi_url
from pypireg.http.upload_stream import ReceivedUpload, UploadContext, UploadReceiver

_log = Logger()
# The legacy upload API endpoint (twine posts to the repository URL), with
# or without a trailing slash. Matched as the route table matches it
# (app.py), on routed_path(): werkzeug's path converter for the project
# ("[^/].*?": an id, or a path, encoded or with plain slashes), no query.
# A body is only streamed for a URL whose route takes it over.
_UPLOAD_PATH = re.compile(rb"/api/v4/projects/([^/].*?)/packages/pypi/?\Z")
# A project's index, which a POST there mistakes for the upload URL.
_INDEX_PATH = re.compile(rb"/api/v4/projects/([^/].*?)/packages/pypi/simple(?:/.*)?\Z")
MAX_SMALL_BODY = 64 * 1024
LINGER_SECONDS = 5.0
# A request's line and headers must arrive within this time (slowloris);
# bodies are covered by the idle timeout (server.timeout).
HEADER_TIMEOUT = 30.0
# recv() size while an upload body streams in, instead of Twisted's 64 KiB:
# each read costs the reactor a pass through the HTTP channel and the form
# parser, so fewer, larger reads leave it more time for other requests.
UPLOAD_READ_SIZE = 256 * 1024


def routed_path(target: bytes) -> bytes:
    """An origin-form request target as the route table sees it.

    Twisted splits the path off the query and percent-decodes each segment
    (Request.postpath); Klein joins the segments and adds a leading slash
    unless the result has one.
    """
    path = target.split(b"?", 1)[0]
    joined = b"/".join(unquote_to_bytes(segment) for segment in path[1:].split(b"/"))
    return joined if joined.startswith(b"/") else b"/" + joined


def upload_project(target: bytes) -> str | None:
    """The project reference in *target* if it is the upload URL, else None."""
    return _project_in(_UPLOAD_PATH, target)


def index_project(target: bytes) -> str | None:
    """The project reference in *target* if it is in a project's index, else None."""
    return _project_in(_INDEX_PATH, target)


def _project_in(pattern: re.Pattern[bytes], target: bytes) -> str | None:
    match = pattern.match(routed_path(target))
    if match is None:
        return None
    try:
        return match[1].decode("utf-8")
    except UnicodeDecodeError:
        return None  # no route takes it either: Klein refuses a path that is not UTF-8


@implementer(IPushProducer)
class _PauseCounter:
    """Pause a transport while any of several reasons wants it paused."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._count = 0

    def pauseProducing(self) -> None:
        self._count += 1
        if self._count == 1:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._count == 0:
            return
        self._count -= 1
        # A refused request's connection is closing: leave it alone.
        if self._count == 0 and not getattr(self._transport, "disconnecting", False):
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self._transport.stopProducing()


class RegistryRequest(server.Request):
    upload: UploadReceiver | None = None
    received_upload: ReceivedUpload | None = None
    upload_error: RegistryError | None = None
    _refused = False
    _linger: IDelayedCall | None = None
    _body_size = 0
    _counted_in_flight = False

    def __init__(self, channel: Any, queued: object = None) -> None:
        super().__init__(channel, parsePOSTFormSubmission=False)  # type: ignore[no-untyped-call]
        # Created when the request line arrived: the headers must follow soon.
        channel.pypireg_seen_request = True
        site = getattr(channel, "site", None)
        self._header_deadline: IDelayedCall | None = None
        self.started_at: float | None = None
        if isinstance(site, RegistrySite):
            self.started_at = site.clock.seconds()
            self._header_deadline = site.clock.callLater(HEADER_TIMEOUT, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self.refuse_early(RequestTimeout(
            f"The request headers did not arrive within {HEADER_TIMEOUT:g} seconds."))

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None and self._header_deadline.active():
            self._header_deadline.cancel()

    @property
    def registry_site(self) -> RegistrySite:
        site = self.channel.site  # type: ignore[attr-defined]
        assert isinstance(site, RegistrySite)
        return site

    def gotLength(self, length: int | None) -> None:
        # Headers are complete and no body byte was read yet. The request
        # line lives on the channel until requestReceived.
        self._cancel_header_deadline()
        command: bytes = getattr(self.channel, "_command", b"")
        path: bytes = getattr(self.channel, "_path", b"")
        absolute = split_absolute_form(path)
        if absolute is not None:
            # RFC 9112 §3.2.2: the target's authority replaces the Host header.
            authority, path = absolute
            self.requestHeaders.setRawHeaders(b"host", [authority])
            self.channel._path = path
        problem = host_problem(list(self.requestHeaders.getRawHeaders(b"host", [])),
                               getattr(self.channel, "_version", b""))
        if problem is not None:
            self.requestHeaders.removeHeader(b"expect")
            self.refuse_early(BadRequest(problem))
            return
        project_ref = upload_project(path) if command == b"POST" else None
        expects_continue = (self.requestHeaders.getRawHeaders(b"expect") or [b""])[0].lower()
        if project_ref is None:
            misdirected = index_project(path) if command == b"POST" else None
            if misdirected is not None:
                # Before the body: an upload is megabytes the client need not send
                # to learn that it has the wrong URL.
                self.requestHeaders.removeHeader(b"expect")
                upload_url = pypi_url(origin(self, self.registry_site.base_url), misdirected)
                self.refuse_early(NotTheUploadUrl(upload_url))
                return
            if length is not None and length > MAX_SMALL_BODY:
                self.requestHeaders.removeHeader(b"expect")
                self.refuse_early(TooLarge("Request body too large."))
                return
            super().gotLength(length)  # type: ignore[no-untyped-call]
            return
        # We answer "100 Continue" ourselves, after the token check, so a
        # refused client never sends its body.
        self.requestHeaders.removeHeader(b"expect")
        self.content = None
        ctx = self.registry_site.upload_context
        send_continue = None
        if expects_continue == b"100-continue" and getattr(self.channel, "_version", b"") == (
            b"HTTP/1.1"
        ):
            send_continue = self._send_continue
        self.upload = UploadReceiver(
            ctx,
            project_ref,
            content_length=length,
            content_type=self.requestHeaders.getRawHeaders(b"content-type", [None])[0],
            credentials=lambda: request_credentials(self.requestHeaders),
            client=client_address(self),
            producer=_PauseCounter(self.channel.transport),
            refuse=self.refuse_early,
            send_continue=send_continue,
        )
        self._in_flight(True)
        self._read_size(UPLOAD_READ_SIZE)
        self.upload.start()

    def getClientAddress(self) -> Any:
        """The peer, or the client it forwards for when the peer is a trusted proxy."""
        peer = super().getClientAddress()  # type: ignore[no-untyped-call]
        forwarded = self._forwarded_for(peer)
        return forwarded if forwarded is not None else peer

    def isSecure(self) -> bool:
        if self._from_trusted_proxy(super().getClientAddress()):  # type: ignore[no-untyped-call]
            proto = self.requestHeaders.getRawHeaders(b"x-forwarded-proto", [b""])[-1]
            if proto.strip().lower() in (b"https", b"http"):
                return proto.strip().lower() == b"https"
        return bool(super().isSecure())  # type: ignore[no-untyped-call]

    def _from_trusted_proxy(self, peer: Any) -> bool:
        site = getattr(self.channel, "site", None)
        networks = getattr(site, "trusted_proxies", ())
        return bool(networks) and _in_networks(getattr(peer, "host", None), networks)

    def _forwarded_for(self, peer: Any) -> Any:
        if not self._from_trusted_proxy(peer):
            return None
        header = b",".join(self.requestHeaders.getRawHeaders(b"x-forwarded-for", []))
        hops = [h.strip().decode("latin-1") for h in header.split(b",") if h.strip()]
        networks = self.registry_site.trusted_proxies
        # The nearest hop that is not one of our proxies is the client.
        for hop in reversed(hops):
            if not _in_networks(hop, networks):
                return _address(hop)
        return _address(hops[0]) if hops else None

    def _in_flight(self, receiving: bool) -> None:
        """Keep the uploads-in-flight gauge: +1 on start, -1 once when it ends.

        Also the one place an upload ends, however it ends: the transport's
        read size goes back to the default there.
        """
        if receiving != self._counted_in_flight:
            self._counted_in_flight = receiving
            gauge = self.registry_site.metrics.uploads_in_flight
            gauge.inc() if receiving else gauge.dec()
            if not receiving:
                self._read_size(None)

    def _read_size(self, size: int | None) -> None:
        """Set the transport's recv() size for this request; None restores the default."""
        transport = self.channel.transport
        if transport is None or not hasattr(transport, "bufferSize"):
            return
        if size is None:
            transport.__dict__.pop("bufferSize", None)
        else:
            transport.bufferSize = size

    def _send_continue(self) -> None:
        transport = self.channel.transport
        if transport is not None:
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def handleContentChunk(self, data: bytes) -> None:
        # Exceptions must not escape into the channel.
        try:
            if self._refused:
                return
            if self.upload is not None:
                self.upload.data_received(data)
                return
            self._body_size += len(data)
            if self._body_size > MAX_SMALL_BODY:
                self.refuse_early(TooLarge("Request body too large."))
                return
            super().handleContentChunk(data)  # type: ignore[no-untyped-call]
        except Exception:
            _log.failure("error while receiving a request body")
            self.refuse_early(RegistryError("Internal error while receiving the request."))

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            # The answer went out already; the client has sent its body.
            self._in_flight(False)
            self._close_refused()
            return
        if self.upload is None:
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]
            return
        self.method, self.uri = command, path
        self.clientproto = version
        self.path, _, query = path.partition(b"?")
        self.args = http.parse_qs(query, 1) if query else {}
        upload = self.upload

        def done(result: ReceivedUpload | Failure) -> None:
            self._in_flight(False)
            if isinstance(result, Failure):
                if isinstance(result.value, RegistryError):
                    self.upload_error = result.value
                else:
                    _log.failure("upload to {path} failed while finishing", result,
                                 path=path.decode("latin-1"))
                    self.upload_error = RegistryError(
                        "Internal error while storing the upload; it was not stored."
                    )
            else:
                self.received_upload = result
            self.process()

        Deferred.fromCoroutine(upload.finish()).addBoth(done)

    def process(self) -> None:
        # Klein would log a traceback for a path that is not UTF-8; it is
        # the client's mistake, so answer it here.
        try:
            self.path.decode("utf-8")
        except UnicodeDecodeError:
            body = render_error(self, BadRequest(
                "The URL path is not valid UTF-8: percent-encode it as UTF-8."))
            self.write(body)  # type: ignore[no-untyped-call]
            self.finish()
            return
        worker = self.registry_site.worker
        if worker is not None:
            self.setHeader(b"X-Pypireg-Worker", str(worker).encode())  # type: ignore[no-untyped-call]
        super().process()  # type: ignore[no-untyped-call]

    def finish(self) -> None:
        super().finish()  # type: ignore[no-untyped-call]
        # The upload route removes its temp file itself; this covers any
        # answer that did not come from it (an error before the route took the
        # file over, or a URL the site and the route table ever disagree on).
        self._release_upload()

    def connectionLost(self, reason: Failure) -> None:
        self._cancel_header_deadline()
        self._in_flight(False)
        self._release_upload()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _release_upload(self) -> None:
        """The request is over, however it ended: no temp file of it may stay behind.

        A no-op for a file the route committed, or already removed.
        """
        upload = self.upload
        if upload is None:
            return
        Deferred.fromCoroutine(upload.abort()).addErrback(
            lambda failure: _log.failure("could not remove an upload's temp file", failure))

    def refuse_early(self, error: RegistryError) -> None:
        """Answer now, before the body was read, and close the connection."""
        if self._refused:
            return
        self._refused = True
        transport: Any = getattr(getattr(self, "channel", None), "transport", None)
        if transport is None:
            return
        # The request line is still on the channel; the access log wants it.
        self.method = getattr(self.channel, "_command", self.method)
        self.uri = getattr(self.channel, "_path", self.uri)
        self.clientproto = getattr(self.channel, "_version", self.clientproto)
        answer = error_bytes(error)
        transport.write(answer)
        self.registry_site.log_refusal(self, error.code, len(answer))
        # Half-close and keep discarding what the client still sends, for a
        # short while, so the client reads our answer rather than a reset.
        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
            transport.resumeProducing()
        else:
            transport.loseConnection()
        self._linger = self.registry_site.clock.callLater(LINGER_SECONDS, self._close_refused)

    def _close_refused(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        # twisted.web drops the channel once the connection is gone.
        channel = getattr(self, "channel", None)
        transport = getattr(channel, "transport", None)
        if transport is not None:
            transport.loseConnection()


class RegistryChannel(http.HTTPChannel):
    """HTTPChannel that polices framing and answers its own refusals in our format.

    Twisted would drop an over-long line silently, answer a malformed
    request with a bare 400, and take `Transfer-Encoding: identity` next to
    Content-Length as a body length; see front_door.py for the rules.
    """

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        site = getattr(self, "site", None)
        if isinstance(site, RegistrySite):
            site.channels.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        site = getattr(self, "site", None)
        if isinstance(site, RegistrySite):
            site.channels.discard(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def headerReceived(self, line: bytes) -> bool:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        request = self.requests[-1] if self.requests else None
        if name in (b"transfer-encoding", b"content-length") and request is not None:
            seen: list[bytes] = request.__dict__.setdefault("pypireg_codings", [])
            if name == b"transfer-encoding":
                seen.extend(codings(value))
            else:
                request.pypireg_lengths = getattr(request, "pypireg_lengths", 0) + 1
            problem = framing_problem(seen, getattr(request, "pypireg_lengths", 0))
            if problem is not None:
                self._refuse(BadRequest(problem))
                return False
        return bool(super().headerReceived(line))  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(HeaderTooLarge(
            f"Request line or header too long (limit {self.MAX_LENGTH} bytes)."))

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's own refusals: a malformed request line or header, too
        # many or too large headers, a bad Content-Length.
        self._refuse(BadRequest("Malformed HTTP request line or headers."))

    def _refuse(self, error: RegistryError) -> None:
        """Answer *error* and close; nothing more is read from this connection."""
        transport = self.transport
        if transport is None or getattr(transport, "disconnecting", False):
            return
        answer = error_bytes(error)
        transport.write(answer)
        # Stops reading at once, so bytes after this request are never parsed.
        transport.loseConnection()
        site = getattr(self, "site", None)
        if isinstance(site, RegistrySite):
            site.metrics.observe_request(b"", b"", error.code, 0.0, len(answer))
        peer = transport.getPeer()
        _log.info("refused a request from {peer}: {code} {reason}",
                  peer=getattr(peer, "host", peer), code=error.code, reason=error.reason)


def _channel_factory(site: Any) -> Any:
    # The same wrapper Twisted's own factory uses (it negotiates HTTP/2 over
    # TLS), around our channel.
    channel = RegistryChannel()  # type: ignore[no-untyped-call]
    return http._GenericHTTPChannelProtocol(channel)


class RegistrySite(server.Site):
    """The site: builds RegistryRequests and holds what uploads need."""

    protocol = _channel_factory

    def __init__(self, resource: IResource, upload_context: UploadContext, clock: Any,
                 metrics: Metrics, timeout: float = 60.0,
                 trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = (),
                 base_url: str | None = None) -> None:
        """*base_url* is `server.base_url`, for the URLs early refusals name."""
        super().__init__(  # type: ignore[no-untyped-call]
            resource, requestFactory=RegistryRequest, timeout=timeout)
        self.upload_context = upload_context
        self.clock = clock
        self.metrics = metrics
        self.trusted_proxies = trusted_proxies
        self.base_url = base_url
        self._parsePOSTFormSubmission = False
        # The open connections, for a drain (close_idle).
        self.channels: set[RegistryChannel] = set()
        # A worker process's number (server.workers), sent as X-Pypireg-Worker.
        self.worker: int | None = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        # A connection must send its first request line in time as well.
        deadline = self.clock.callLater(HEADER_TIMEOUT, _drop_if_silent, protocol)
        protocol.pypireg_first_line_deadline = deadline
        return protocol

    def close_idle(self) -> int:
        """Close the connections between requests, and the others after theirs; how many stay.

        A drain calls it until none stay: a connection in the middle of a
        request is closed once its answer is sent (not kept alive).
        """
        for channel in list(self.channels):
            if channel.requests:
                channel.persistent = False
            elif channel.transport is not None:
                channel.transport.loseConnection()
        return len(self.channels)

    def log_refusal(self, request: RegistryRequest, code: int, size: int) -> None:
        request.code = code
        request.sentLength = size
        self.log(request)

    def log(self, request: Any) -> None:
        super().log(request)
        started = getattr(request, "started_at", None)
        elapsed = self.clock.seconds() - started if started is not None else 0.0
        self.metrics.observe_request(request.uri, request.method, request.code, elapsed,
                                     request.sentLength)


def _drop_if_silent(protocol: Any) -> None:
    channel = getattr(protocol, "_channel", protocol)
    if getattr(channel, "pypireg_seen_request", False):
        return
    transport = getattr(channel, "transport", None)
    if transport is not None and not getattr(transport, "disconnected", False):
        _log.info("dropping a connection that sent no request line in {seconds} seconds",
                  seconds=HEADER_TIMEOUT)
        transport.abortConnection()


def _in_networks(host: str | None, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    if not host:
        return False
    try:
        ip = ip_address(host)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _address(host: str) -> IPv4Address | IPv6Address | None:
    try:
        ip = ip_address(host)
    except ValueError:
        return None
    return (IPv4Address if ip.version == 4 else IPv6Address)("TCP", str(ip), 0)
