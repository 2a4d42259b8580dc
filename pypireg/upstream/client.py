"""The HTTP client that asks one upstream PEP 503/691 index for project pages and files.

Upstream layer: I/O on the reactor, no storage and no HTTP serving. Each
request is a GET through a pooled `twisted.web.client.Agent`:

- credentials (`UpstreamConfig.authorization`) and configured headers go
  only to the origin (scheme, host, port) of `UpstreamConfig.url`; a
  redirect elsewhere gets neither;
- redirects are followed here, at most `MAX_REDIRECTS`, so that rule holds
  on every hop (Twisted's RedirectAgent would forward every header);
- hosts other than the index's own (and its `file_hosts`) are connected to
  at public addresses only (addresses.py);
- connecting plus the response headers get `UpstreamConfig.timeout`
  seconds, and the body gets the same as an idle timeout between chunks;
- bodies are read as a stream and capped while they arrive, never on the
  word of Content-Length.

Whatever goes wrong ends in `UpstreamUnavailable` with a short reason
(never a credential, never a raw Twisted exception); the caller's own
cancellation stays a `CancelledError`.

The Agent is used directly, not through treq: treq's request wraps every
call in a CookieAgent (a cookie jar shared by all requests, which an index
has no use for) and a ContentDecoderAgent that asks for gzip everywhere and
inflates without a bound per chunk. Pages ask for gzip here and inflate
within the page cap; files ask for identity, since their digests are of
the stored bytes. Tests can still pass any IAgent, e.g. treq.testing's
RequestTraversalAgent.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse

from pypireg import __version__
from pypireg.config import ConfigError, UpstreamConfig
from pypireg.domain import simple_pages
from pypireg.domain.simple_pages import (
    ACCEPT,
    PageFormat,
    ProjectPage,
    UpstreamPageError,
    page_format,
    parse_html_page,
    parse_json_page,
)
from pypireg.upstream.addresses import PublicAddresses, ScreenedEndpoints, normal_host

_log = Logger()

USER_AGENT = f"pypireg/{__version__}"
# RFC 9110 15.4: the redirects a GET may follow. Five is what pip's and
# most browsers' limits are comfortably above; an index needs one or two.
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# What is read of a body we do not use (a redirect's, an error page's) so
# the connection can go back to the pool; past this it is dropped instead.
MAX_DISCARDED_BYTES = 64 * 1024
# ETag and Last-Modified are sent back on the next request and stored with
# the cached page: anything longer, or not printable ASCII, is not kept.
MAX_VALIDATOR_LENGTH = 1024
# Pages up to this size are parsed on the reactor (a few milliseconds);
# larger ones, up to MAX_PAGE_BYTES, in a worker thread, so a 50 MB page of
# a big project does not stall every other request for a second or two.
MAX_INLINE_PARSE_BYTES = 256 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_VALIDATOR_RE = re.compile(r"^[\x20-\x7e]+\Z")
_PEM_CERTIFICATE_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)
# Everything RFC 3986 lets a URL hold as is, and "%" so existing escapes
# stay; the rest (spaces, non-ASCII) is percent-encoded before sending.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~-._"

Origin = tuple[str, str, int]


@dataclass(frozen=True)
class Fetched:
    """A 200 with a page we could parse."""

    page: ProjectPage
    etag: str | None
    last_modified: str | None
    served_format: PageFormat


@dataclass(frozen=True)
class NotModified:
    """A 304 to our conditional request: the cached page is still the upstream's."""


@dataclass(frozen=True)
class Missing:
    """The upstream says the name does not exist (404 or 410)."""


class UpstreamUnavailable(Exception):
    """The upstream could not answer usefully. `reason` is a short human text without secrets."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


class UpstreamClient:
    """Asks one configured upstream index for project pages and files."""

    def __init__(self, reactor: Any, config: UpstreamConfig, *,
                 pool: HTTPConnectionPool | None = None, agent: IAgent | None = None) -> None:
        """Build the client; with no *agent*, a pooled Agent that verifies TLS.

        Args:
            reactor: the reactor (timeouts, connections, the parse thread pool).
            config: the upstream; `ca_file`, if set, is the only trust root.
            pool: the connection pool to use (and to close in `close()`);
                a persistent one of our own by default.
            agent: any IAgent instead of the default one (tests: a custom or
                in-memory agent); *pool* is then only closed, not used.

        Raises:
            ConfigError: `ca_file` holds no readable PEM certificate.
        """
        self._reactor = reactor
        self._config = config
        self._origin = _origin(config.url)
        self._screen: PublicAddresses | None = None
        if agent is None:
            if pool is None:
                pool = HTTPConnectionPool(reactor, persistent=True)
                # pip and uv download several files at once from one host;
                # Twisted's default of 2 cached connections per host would
                # close and reopen connections all the time.
                pool.maxPersistentPerHost = 8
            index_host = normal_host(urlsplit(config.url).hostname or "")
            self._screen = PublicAddresses(reactor, frozenset({index_host, *config.file_hosts}))
            agent = Agent.usingEndpointFactory(
                reactor, ScreenedEndpoints(reactor, _tls_policy(config), self._screen), pool=pool)
        self._pool = pool
        self._agent = agent

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def config(self) -> UpstreamConfig:
        return self._config

    async def fetch_page(self, name: str, *, etag: str | None = None,
                         last_modified: str | None = None) -> Fetched | NotModified | Missing:
        """GET `<url><name>/`, conditionally if validators are given, and parse it.

        Args:
            name: the project, already PEP 503-normalised and valid.
            etag: the ETag of the cached page, sent as If-None-Match.
            last_modified: its Last-Modified, sent as If-Modified-Since.

        Raises:
            UpstreamUnavailable: no usable answer (see the module docstring).
        """
        url = f"{self._config.url}{name}/"
        extra = [("Accept", ACCEPT), ("Accept-Encoding", "gzip")]
        if etag is not None:
            extra.append(("If-None-Match", etag))
        if last_modified is not None:
            extra.append(("If-Modified-Since", last_modified))
        response, final_url = await self._get(url, extra)
        code = response.code
        if code == 200:
            return await self._read_page(response, final_url, name)
        await self._discard(response)
        if code == 304:
            if etag is None and last_modified is None:
                raise UpstreamUnavailable("upstream answered 304 to a request without validators")
            return NotModified()
        if code in (404, 410):
            return Missing()
        raise _status_error(code)

    async def open_file(self, url: str, *, max_bytes: int) -> UpstreamBody:
        """GET a distribution or `.metadata` file; return once its headers are in.

        The caller must then `deliver()` or `cancel()` the body: until then
        the connection is paused, and after the upstream timeout a body
        nobody claimed is cancelled.

        Args:
            url: absolute http(s), as an `UpstreamFile` gives it.
            max_bytes: the most the body may hold.

        Raises:
            UpstreamUnavailable: not a 200, a Content-Length over
                *max_bytes*, or no answer.
        """
        response, _ = await self._get(url, [("Accept-Encoding", "identity")])
        if response.code != 200:
            await self._discard(response)
            if response.code in (404, 410):
                raise UpstreamUnavailable(f"upstream has no such file ({response.code})")
            raise _status_error(response.code)
        if response.length is not UNKNOWN_LENGTH and response.length > max_bytes:
            _abort(response)
            raise UpstreamUnavailable(
                f"the file is {response.length} bytes, more than the {max_bytes} allowed")
        return UpstreamBody(self._reactor, response, max_bytes=max_bytes,
                            timeout=self._config.timeout, upstream=self.name)

    def close(self) -> Deferred[None]:
        """Close the pool's cached connections (requests in flight finish on their own)."""
        if self._pool is None:
            return succeed(None)
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed

    # -- requests -------------------------------------------------------------

    async def _get(self, url: str, extra: list[tuple[str, str]]) -> tuple[IResponse, str]:
        """GET *url*, following redirects; (the last response, its URL)."""
        for hop in range(MAX_REDIRECTS + 1):
            response = await self._request(url, self._headers_for(url, extra))
            if response.code not in REDIRECT_CODES:
                return response, url
            locations = response.headers.getRawHeaders(b"location") or []
            await self._discard(response)
            if not locations:
                raise UpstreamUnavailable(f"upstream answered {response.code} without a Location")
            if hop == MAX_REDIRECTS:
                break
            target = urljoin(url, locations[0].decode("latin-1").strip())
            if urlsplit(target).scheme.lower() not in _DEFAULT_PORTS:
                raise UpstreamUnavailable("upstream redirected to a URL that is not http(s)")
            _log.debug("{upstream}: {url} redirects ({code}) to {target}", upstream=self.name,
                       url=_loggable(url), code=response.code, target=_loggable(target))
            url = target
        raise UpstreamUnavailable(f"upstream redirected more than {MAX_REDIRECTS} times")

    async def _request(self, url: str, headers: Headers) -> IResponse:
        """One GET; the timeout covers connecting and the response headers."""
        timeout = self._config.timeout
        try:
            wire = _wire_url(url)
            requested = self._agent.request(b"GET", wire, headers, None)
            # addTimeout cancels the request, which closes the connection
            # attempt or the connection.
            requested.addTimeout(timeout, self._reactor, onTimeoutCancel=_timed_out)
            return await requested
        except (CancelledError, UpstreamUnavailable):
            raise
        except Exception as e:
            if _cancelled(e):
                raise CancelledError() from None  # by our caller: not the upstream's doing
            refused = self._screen.refused(urlsplit(url).hostname or "") if self._screen else None
            if refused:
                raise UpstreamUnavailable(
                    f"{urlsplit(url).hostname} is not the index's host and resolves only to"
                    f" non-public addresses ({', '.join(refused[:3])}); list it in the upstream's"
                    " file_hosts to fetch from it") from None
            raise _unavailable(e, timeout, upstream=self.name) from None

    def _headers_for(self, url: str, extra: list[tuple[str, str]]) -> Headers:
        headers = Headers()
        headers.setRawHeaders("User-Agent", [USER_AGENT])
        for name, value in extra:
            headers.addRawHeader(name, value)
        origin = _origin(url)
        if origin is not None and origin == self._origin:
            # Only the configured origin is trusted with what may be secrets
            # (an API key in a header, the credentials). A configured header
            # replaces ours of the same name (a User-Agent, say).
            for name, value in self._config.headers:
                headers.setRawHeaders(name, [value])
            authorization = self._config.authorization
            if authorization is not None:
                headers.setRawHeaders("Authorization", [authorization])
        return headers

    # -- bodies ---------------------------------------------------------------

    async def _read_page(self, response: IResponse, url: str, name: str) -> Fetched:
        content_type = _header(response, b"content-type")
        served_format = page_format(content_type)
        if served_format is None:
            _abort(response)
            shown = ascii(content_type[:100]) if content_type else "none"
            raise UpstreamUnavailable(
                f"upstream answered with Content-Type {shown}, not a simple-index page")
        limit = simple_pages.MAX_PAGE_BYTES
        if response.length is not UNKNOWN_LENGTH and response.length > limit:
            _abort(response)
            raise UpstreamUnavailable(f"the page is larger than {limit} bytes")
        encoding = (_header(response, b"content-encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            _abort(response)
            raise UpstreamUnavailable(
                f"upstream answered with Content-Encoding {encoding[:40]!a}")
        buffer = _PageBuffer(limit, gzip=encoding != "identity")
        reader = _BodyReader(self._reactor, timeout=self._config.timeout, limit=limit,
                             length=_length(response), on_chunk=buffer.add, what="the page")
        response.deliverBody(reader)
        await reader.done
        body = buffer.body()
        parse = parse_json_page if served_format == "json" else parse_html_page
        try:
            if len(body) <= MAX_INLINE_PARSE_BYTES:
                page = parse(body, url, name=name)
            else:
                page = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                               parse, body, url, name=name)
        except UpstreamPageError as e:
            raise UpstreamUnavailable(str(e)) from None
        if page.skipped:
            _log.info("{upstream}: the page of {name} has {skipped} unusable entries, "
                      "e.g. {examples}", upstream=self.name, name=name, skipped=page.skipped,
                      examples="; ".join(page.skipped_examples))
        return Fetched(page=page, etag=_validator(response, b"etag"),
                       last_modified=_validator(response, b"last-modified"),
                       served_format=served_format)

    async def _discard(self, response: IResponse) -> None:
        """Read and drop a small body, so the connection can be reused.

        A failure here is not the request's: the status already said what
        the upstream meant, and a failed reader has closed the connection.
        """
        reader = _BodyReader(self._reactor, timeout=self._config.timeout,
                             limit=MAX_DISCARDED_BYTES, length=_length(response),
                             on_chunk=lambda _: None, what="an unused body")
        response.deliverBody(reader)
        try:
            await reader.done
        except UpstreamUnavailable:
            pass


class UpstreamBody:
    """The body of a 200 to `open_file`, not read yet.

    Attributes:
        length: the Content-Length, if the upstream gave one.
    """

    def __init__(self, reactor: Any, response: IResponse, *, max_bytes: int, timeout: float,
                 upstream: str) -> None:
        self.length = _length(response)
        self._response = response
        self._upstream = upstream
        self._reader = _BodyReader(
            reactor, timeout=timeout, limit=max_bytes, length=self.length,
            on_chunk=lambda _: None, what="the file",
            cancel_error=lambda: UpstreamUnavailable("the download was cancelled"))
        self._delivering = False
        self._cancelled_early = False
        self._paused = False
        # Until deliver() the connection sits paused; a body that is never
        # claimed (a bug, or a caller that failed in between) must not hold
        # it forever.
        self._unclaimed: IDelayedCall | None = reactor.callLater(timeout, self._abandoned)

    def deliver(self, on_chunk: Callable[[bytes], None]) -> Deferred[None]:
        """Start streaming the body to *on_chunk*, called in the reactor thread.

        A chunk or two already read from the socket may still arrive after
        `pause()`. An exception from *on_chunk* aborts the download and
        fails the Deferred with that exception.

        Returns:
            A Deferred that fires with None once the whole body arrived (and
            matched its Content-Length), or fails with UpstreamUnavailable:
            the connection lost midway, `timeout` seconds without data while
            not paused, more than `max_bytes`, or cancelled (by `cancel()`
            or by cancelling the Deferred).

        Raises:
            RuntimeError: deliver() was called before.
        """
        if self._delivering:
            raise RuntimeError("this body is being delivered already")
        self._delivering = True
        self._disarm_unclaimed()
        if self._cancelled_early:
            return fail(UpstreamUnavailable("the download was cancelled"))
        self._reader.on_chunk = on_chunk
        self._response.deliverBody(self._reader)
        # Response.deliverBody resumes the transport once the protocol is in,
        # so a pause asked for before this point is applied now.
        if self._paused:
            self._reader.pause()
        return self._reader.done

    def pause(self) -> None:
        """Stop reading from the socket (backpressure); the idle timeout stops too."""
        self._paused = True
        if self._delivering:
            self._reader.pause()

    def resume(self) -> None:
        self._paused = False
        if self._delivering:
            self._reader.resume()

    def cancel(self) -> None:
        """Abort the connection; `deliver`'s Deferred fails with UpstreamUnavailable."""
        self._disarm_unclaimed()
        if self._delivering:
            self._reader.abort(UpstreamUnavailable("the download was cancelled"))
            return
        if not self._cancelled_early:
            self._cancelled_early = True
            # The body must be taken by some protocol to close the connection;
            # nobody waits on its Deferred.
            self._reader.done.addErrback(lambda _: None)
            self._response.deliverBody(self._reader)
            self._reader.abort(UpstreamUnavailable("the download was cancelled"))

    def _abandoned(self) -> None:
        self._unclaimed = None
        _log.warn("{upstream}: a file body was neither delivered nor cancelled; "
                  "closing its connection", upstream=self._upstream)
        self.cancel()

    def _disarm_unclaimed(self) -> None:
        if self._unclaimed is not None and self._unclaimed.active():
            self._unclaimed.cancel()
        self._unclaimed = None


class _BodyReader(Protocol):
    """Reads one response body: a byte cap, an idle timeout, pause/resume, abort.

    `done` fires once: None at the end of the body, or the first failure
    (which also closes the connection). Data still in flight after a
    failure is ignored.
    """

    def __init__(self, reactor: Any, *, timeout: float, limit: int, length: int | None,
                 on_chunk: Callable[[bytes], None], what: str,
                 cancel_error: Callable[[], Exception] = CancelledError) -> None:
        self.on_chunk = on_chunk
        self.received = 0
        self.done: Deferred[None] = Deferred(self._cancelled)
        self._reactor = reactor
        self._timeout = timeout
        self._limit = limit
        self._length = length
        self._what = what
        self._cancel_error = cancel_error
        self._producer: IPushProducer | None = None
        self._timer: IDelayedCall | None = None
        self._paused = False

    def connectionMade(self) -> None:
        # The body's transport is Twisted's TransportProxyProducer: the push
        # producer of the connection, as far as this response goes.
        self._producer = cast(IPushProducer, self.transport)
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.received += len(data)
        if self.received > self._limit:
            self.abort(UpstreamUnavailable(f"{self._what} is larger than {self._limit} bytes"))
            return
        if self._timer is not None:
            self._timer.reset(self._timeout)
        try:
            self.on_chunk(data)
        except Exception as e:
            # Raised into Twisted's parser it would only read as a lost
            # connection; the consumer's own error (a full disk, a page too
            # large once inflated) is the one to report.
            self.abort(e)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self.done.called:
            return
        # PotentialDataLoss: a body delimited by the connection closing (no
        # Content-Length, not chunked), which is complete as far as HTTP can tell.
        if reason.check(ResponseDone) or (reason.check(PotentialDataLoss)
                                          and self._length is None):
            if self._length is None or self.received == self._length:
                self.done.callback(None)
                return
        self.done.errback(self._lost(reason))

    def pause(self) -> None:
        self._paused = True
        self._disarm()
        if self._producer is not None:
            self._producer.pauseProducing()

    def resume(self) -> None:
        self._paused = False
        if self._producer is not None and not self.done.called:
            self._producer.resumeProducing()
            self._arm()

    def abort(self, error: Exception) -> None:
        """Close the connection and fail `done` with *error* (once)."""
        if self.done.called:
            return
        self._disarm()
        if self._producer is not None:
            # stopProducing on a response body's transport closes the
            # connection, so it is never returned to the pool half read.
            self._producer.stopProducing()
        self.done.errback(error)

    def _lost(self, reason: Failure) -> UpstreamUnavailable:
        tls = _tls_problem([reason])
        if tls is not None:
            return UpstreamUnavailable(tls)
        if self._what == "the file":
            of = f" of {self._length}" if self._length is not None else ""
            return UpstreamUnavailable(
                f"connection lost after {self.received}{of} bytes of the file")
        return UpstreamUnavailable(f"connection lost before {self._what} was complete")

    def _cancelled(self, _: Deferred[None]) -> None:
        self.abort(self._cancel_error())

    def _idle(self) -> None:
        self._timer = None
        self.abort(UpstreamUnavailable(
            f"no data for {self._timeout:g} s while reading {self._what}", timed_out=True))

    def _arm(self) -> None:
        if self._timer is None and not self._paused and not self.done.called:
            self._timer = self._reactor.callLater(self._timeout, self._idle)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _PageBuffer:
    """A page body in memory, inflated from gzip if need be, within *limit* bytes."""

    def __init__(self, limit: int, *, gzip: bool) -> None:
        self._limit = limit
        self._size = 0
        self._chunks: list[bytes] = []
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzip else None

    def add(self, data: bytes) -> None:
        if self._inflater is not None:
            try:
                # max_length bounds what one chunk may inflate to: a few kB
                # of gzip can stand for gigabytes.
                data = self._inflater.decompress(data, self._limit - self._size + 1)
            except zlib.error:
                raise UpstreamUnavailable("the gzip-compressed page is corrupt") from None
        self._size += len(data)
        if self._size > self._limit:
            raise UpstreamUnavailable(f"the page is larger than {self._limit} bytes")
        self._chunks.append(data)

    def body(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof:
            raise UpstreamUnavailable("the gzip-compressed page is truncated")
        return b"".join(self._chunks)


# -- helpers ------------------------------------------------------------------


def _tls_policy(config: UpstreamConfig) -> BrowserLikePolicyForHTTPS:
    """Verification as browsers do it, against `ca_file`'s certificates or the system's.

    Reads the file: this runs while the service is built, before the
    reactor serves anything.
    """
    if config.ca_file is None:
        return BrowserLikePolicyForHTTPS()
    try:
        pem = config.ca_file.read_bytes()
        certificates = [Certificate.loadPEM(block)
                        for block in _PEM_CERTIFICATE_RE.findall(pem)]
    except (OSError, crypto.Error, ValueError) as e:
        raise ConfigError(f"upstream {config.name!r}: ca_file {config.ca_file} cannot be read "
                          f"as PEM certificates ({type(e).__name__})") from None
    if not certificates:
        raise ConfigError(f"upstream {config.name!r}: ca_file {config.ca_file} holds no PEM "
                          "certificate")
    return BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(certificates))


def _origin(url: str) -> Origin | None:
    """RFC 6454 origin: (scheme, host, port), or None for a URL without one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _wire_url(url: str) -> bytes:
    """*url* as request bytes: http(s), an ASCII host, no fragment, the rest escaped."""
    parts = urlsplit(url)
    if _origin(url) is None or not (parts.hostname or "").isascii():
        raise UpstreamUnavailable("not an http(s) URL with an ASCII host name")
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    return quote(bare, safe=_URL_SAFE).encode("ascii")


def _loggable(url: str) -> str:
    """*url* without its query, which may hold a signature (pre-signed storage URLs)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _validator(response: IResponse, name: bytes) -> str | None:
    value = _header(response, name)
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_VALIDATOR_LENGTH or not _VALIDATOR_RE.match(value):
        return None
    return value


def _length(response: IResponse) -> int | None:
    return None if response.length is UNKNOWN_LENGTH else int(response.length)


def _abort(response: IResponse) -> None:
    """Close the connection of a response whose body we will not read."""
    response.deliverBody(_Drop())


class _Drop(Protocol):
    """Takes a body and closes its connection at once; what was read is ignored."""

    def connectionMade(self) -> None:
        # Response.deliverBody resumes the transport right after this; a
        # connection that is closing stays closed.
        cast(IPushProducer, self.transport).stopProducing()


def _timed_out(result: IResponse | Failure, timeout: float) -> IResponse | Failure:
    """What a request cancelled by its timeout failed with: always TimeoutError.

    addTimeout's default converts only a bare CancelledError; Twisted's HTTP
    client reports a cancellation while waiting for the response as
    ResponseNeverReceived([CancelledError]).
    """
    if isinstance(result, Failure):
        return Failure(DeferredTimeoutError(f"no answer within {timeout:g} s"))
    return result


def _cancelled(error: Exception) -> bool:
    """A failed request that was really cancelled (see _timed_out)."""
    reasons: list[Failure] = getattr(error, "reasons", None) or []
    return isinstance(error, ResponseFailed) and any(r.check(CancelledError) for r in reasons)


def _status_error(code: int) -> UpstreamUnavailable:
    if code in (401, 403):
        return UpstreamUnavailable(f"upstream refused our credentials ({code})")
    return UpstreamUnavailable(f"upstream answered {code}")


def _unavailable(error: Exception, timeout: float, *, upstream: str) -> UpstreamUnavailable:
    """The short reason for a failed request; unknown errors are logged in full."""
    if isinstance(error, DeferredTimeoutError | internet_error.TimeoutError):
        return UpstreamUnavailable(f"no answer within {timeout:g} s", timed_out=True)
    if isinstance(error, internet_error.ConnectionRefusedError):
        return UpstreamUnavailable("connection refused")
    if isinstance(error, internet_error.DNSLookupError):
        return UpstreamUnavailable("the upstream's host name does not resolve")
    if isinstance(error, internet_error.ConnectError):
        return UpstreamUnavailable("cannot connect to the upstream")
    if isinstance(error, ResponseFailed | RequestTransmissionFailed):
        tls = _tls_problem(error.reasons)
        if tls is not None:
            return UpstreamUnavailable(tls)
        if isinstance(error, ResponseNeverReceived):
            return UpstreamUnavailable("connection lost before the upstream answered")
        if isinstance(error, RequestTransmissionFailed):
            return UpstreamUnavailable("connection lost while sending the request")
        return UpstreamUnavailable("connection lost before the answer was complete")
    _log.failure("{upstream}: unexpected error in a request", Failure(error), upstream=upstream)
    return UpstreamUnavailable(f"request failed ({type(error).__name__})")


def _tls_problem(reasons: list[Failure]) -> str | None:
    for reason in reasons:
        if reason.check(VerificationError):
            return "TLS verification failed: the certificate is not for this host"
        if reason.check(SSL.Error):
            if "certificate verify failed" in str(reason.value):
                return "TLS verification failed"
            return "TLS handshake failed"
    return None
