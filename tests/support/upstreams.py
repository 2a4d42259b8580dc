"""A local upstream index: a twisted.web Site on 127.0.0.1 whose answers are set per path.

For tests of the upstream client and the proxy; it never touches the
network. Each path answers with one behaviour:

- `Page`: a body with its Content-Type, optional ETag / Last-Modified, and
  a 304 to a matching If-None-Match or If-Modified-Since;
- `Status`: a bare status code; `Redirect`: a Location;
- `Streamed`: a long body written only as fast as the client reads it (a
  push producer), recording pauses, bytes sent and a lost connection;
- misbehaving: `NeverAnswers` (holds the request, silent), `Truncated`
  (announces a length, sends part, closes), `Stalls` (sends part, then
  nothing, connection open).

Paths no behaviour claims are served from a folder mounted with `static()`
(a PEP 503 tree, as a plain web server serves one), else 404. Every request
is recorded with its headers. Slowness is always "never": a test that
wants a timeout pairs a silent behaviour with a small client timeout, so
no test depends on how long a sleep takes.

    upstream = await start_upstream()
    upstream.project("demo-pkg", {"demo_pkg-1.0.tar.gz": b"..."}, etag='"v1"')
    client = UpstreamClient(reactor, upstream.config(timeout=0.2))
    ...
    await upstream.stop()
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.static import File
from zope.interface import implementer

from pypireg.config import UpstreamConfig
from tests.support import reactor

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"


@dataclass(frozen=True)
class Seen:
    """One request the upstream received; header names are lower case.

    *connection* numbers the connections in the order they sent their first
    request, so a test can tell a reused (pooled) connection from a new one.
    """

    method: str
    path: str
    headers: Mapping[str, Sequence[str]]
    connection: int

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class Behaviour(Protocol):
    """How one path answers (twisted.web's render: bytes, or NOT_DONE_YET)."""

    def render(self, request: Request) -> bytes | int: ...


B = TypeVar("B", bound=Behaviour)


class Page:
    """A page (or any body) with validators; a matching conditional request gets a 304."""

    def __init__(self, body: bytes, content_type: str = JSON_V1, *, etag: str | None = None,
                 last_modified: str | None = None, headers: Mapping[str, str] | None = None
                 ) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = etag
        self.last_modified = last_modified
        self.headers = dict(headers or {})
        self.not_modified = 0  # 304s sent

    def render(self, request: Request) -> bytes | int:
        if self.etag is not None:
            request.setHeader(b"etag", self.etag.encode())
        if self.last_modified is not None:
            request.setHeader(b"last-modified", self.last_modified.encode())
        if self._unchanged(request):
            self.not_modified += 1
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", self.content_type.encode())
        for name, value in self.headers.items():
            request.setHeader(name.encode(), value.encode())
        return self.body

    def _unchanged(self, request: Request) -> bool:
        # RFC 9110 13.1.3: If-None-Match, when present, decides alone.
        if_none_match = _text(request.getHeader(b"if-none-match"))
        if if_none_match is not None:
            tags = [t.strip() for t in if_none_match.split(",")]
            return self.etag is not None and ("*" in tags or self.etag in tags)
        if_modified_since = _text(request.getHeader(b"if-modified-since"))
        return self.last_modified is not None and if_modified_since == self.last_modified


class Status:
    """A status code with a small body."""

    def __init__(self, code: int, body: bytes = b"", headers: Mapping[str, str] | None = None
                 ) -> None:
        self.code = code
        self.body = body
        self.headers = dict(headers or {})

    def render(self, request: Request) -> bytes | int:
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"text/plain")
        for name, value in self.headers.items():
            request.setHeader(name.encode(), value.encode())
        return self.body


class Redirect(Status):
    def __init__(self, location: str, code: int = 302) -> None:
        super().__init__(code, b"moved", {"Location": location})


class _Held:
    """Requests kept unanswered; `lost` counts the connections that went away meanwhile."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lost = 0

    def hold(self, request: Request) -> int:
        self.requests.append(request)
        request.notifyFinish().addErrback(self._lost)
        return NOT_DONE_YET

    def _lost(self, _: Failure) -> None:
        self.lost += 1


class NeverAnswers(_Held):
    """Reads the request and never sends a byte back."""

    def render(self, request: Request) -> bytes | int:
        return self.hold(request)


class Truncated(_Held):
    """Announces `len(body)` bytes, sends the first *sent*, and closes the connection."""

    def __init__(self, body: bytes, sent: int, content_type: str = JSON_V1) -> None:
        super().__init__()
        self.body = body
        self.sent = sent
        self.content_type = content_type

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"content-type", self.content_type.encode())
        request.setHeader(b"content-length", str(len(self.body)).encode())
        request.write(self.body[:self.sent])
        held = self.hold(request)
        # loseConnection (unlike abortConnection) sends what was written first.
        assert request.transport is not None
        request.transport.loseConnection()
        return held


class Stalls(Truncated):
    """Like Truncated, but the connection stays open and silent."""

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"content-type", self.content_type.encode())
        request.setHeader(b"content-length", str(len(self.body)).encode())
        request.write(self.body[:self.sent])
        return self.hold(request)


class Streamed:
    """*chunk* written *count* times, one chunk per reactor turn while the client reads.

    With *length*, a Content-Length announces the whole; without, the body
    is chunked. `pauses` counts the times the server's transport pushed
    back (its buffers full because the client stopped reading), `sent` the
    bytes written, `lost` whether the connection went before the end.
    """

    def __init__(self, chunk: bytes, count: int, *, content_type: str = "application/octet-stream",
                 length: bool = True) -> None:
        self.chunk = chunk
        self.count = count
        self.content_type = content_type
        self.length = length
        self.sent = 0
        self.pauses = 0
        self.paused = False
        self.lost = False
        self.finished = False

    @property
    def total(self) -> int:
        return len(self.chunk) * self.count

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for _ in range(self.count):
            digest.update(self.chunk)
        return digest.hexdigest()

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"content-type", self.content_type.encode())
        if self.length:
            request.setHeader(b"content-length", str(self.total).encode())
        request.notifyFinish().addErrback(self._lost)
        writer = _Writer(self, request)
        request.registerProducer(writer, True)
        writer.resumeProducing()
        return NOT_DONE_YET

    def _lost(self, _: Failure) -> None:
        self.lost = True


@implementer(IPushProducer)
class _Writer:
    def __init__(self, streamed: Streamed, request: Request) -> None:
        self._streamed = streamed
        self._request = request
        self._left = streamed.count
        self._paused = False
        self._stopped = False
        self._call: IDelayedCall | None = None

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = self._streamed.paused = True
            self._streamed.pauses += 1

    def resumeProducing(self) -> None:
        self._paused = self._streamed.paused = False
        if self._call is None and not self._stopped:
            self._call = reactor.callLater(0, self._write)

    def stopProducing(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _write(self) -> None:
        self._call = None
        if self._paused or self._stopped:
            return
        if self._left == 0:
            self._request.unregisterProducer()
            self._request.finish()
            self._streamed.finished = True
            return
        self._left -= 1
        self._request.write(self._streamed.chunk)
        self._streamed.sent += len(self._streamed.chunk)
        # The write may have paused us; resumeProducing schedules the next.
        if not self._paused and self._call is None:
            self._call = reactor.callLater(0, self._write)


@dataclass(frozen=True)
class Link:
    """A file a page lists; *url* is written as given (relative or absolute)."""

    filename: str
    url: str
    sha256: str | None = None


def json_page(name: str, links: Sequence[Link], **top: Any) -> bytes:
    """A PEP 691 project page; *top* adds or replaces top-level keys."""
    files = [{"filename": link.filename, "url": link.url,
              "hashes": {"sha256": link.sha256} if link.sha256 else {}} for link in links]
    document = {"meta": {"api-version": "1.1"}, "name": name, "files": files, **top}
    return json.dumps(document).encode()


def html_page(name: str, links: Sequence[Link]) -> bytes:
    """A PEP 503 project page, hashes in the URL fragment."""
    anchors = "".join(
        f'<a href="{escape(link.url + (f"#sha256={link.sha256}" if link.sha256 else ""))}">'
        f"{escape(link.filename)}</a><br>\n" for link in links)
    return (f"<!DOCTYPE html><html><head><title>Links for {escape(name)}</title></head>"
            f"<body><h1>Links for {escape(name)}</h1>\n{anchors}</body></html>").encode()


class LocalUpstream:
    """The running upstream: `url` is its origin, `index` its simple/ URL."""

    def __init__(self, scheme: str) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.seen: list[Seen] = []
        self.folder: Path | None = None
        self._scheme = scheme
        self._site = Site(_Root(self))
        # The connections that sent a request (numbered, see Seen), to drop at stop().
        self._channels: dict[Any, int] = {}
        self._port: Any = None

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._port.getHost().port}"

    @property
    def index(self) -> str:
        return f"{self.url}/simple/"

    def config(self, name: str = "local", **changes: Any) -> UpstreamConfig:
        """An UpstreamConfig for this index; *changes* set its other fields."""
        return UpstreamConfig(name=name, url=self.index, **changes)

    def serve(self, path: str, behaviour: B) -> B:
        """Answer requests for *path* (no query) with *behaviour*; returns it."""
        self.routes[path] = behaviour
        return behaviour

    def static(self, folder: Path) -> None:
        """Serve the paths no behaviour claims from *folder* (twisted.web.static.File)."""
        self.folder = folder

    def project(self, name: str, files: Mapping[str, bytes], *, html: bool = False,
                etag: str | None = None, last_modified: str | None = None) -> Page:
        """Serve *name*'s page at /simple/<name>/ and its files at /files/<filename>.

        The page links the files relatively, with their sha256.
        """
        links = []
        for filename, content in files.items():
            self.serve(f"/files/{filename}", Page(content, "application/octet-stream"))
            links.append(Link(filename, f"../../files/{filename}",
                              hashlib.sha256(content).hexdigest()))
        body = html_page(name, links) if html else json_page(name, links)
        return self.serve(f"/simple/{name}/", Page(body, HTML_V1 if html else JSON_V1,
                                                   etag=etag, last_modified=last_modified))

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    def hits(self, path: str) -> int:
        return len(self.requests_to(path))

    async def stop(self) -> None:
        """Stop listening and drop the connections still open (held requests, pools)."""
        for channel in self._channels:
            if channel.transport is not None and channel.transport.connected:
                channel.transport.abortConnection()
        await self._port.stopListening()


async def start_upstream(tls: Any = None) -> LocalUpstream:
    """A LocalUpstream on an ephemeral port; over TLS with *tls* (server context options)."""
    upstream = LocalUpstream("https" if tls is not None else "http")
    if tls is not None:
        upstream._port = reactor.listenSSL(0, upstream._site, tls, interface="127.0.0.1")
    else:
        upstream._port = reactor.listenTCP(0, upstream._site, interface="127.0.0.1")
    return upstream


class _Root(Resource):
    isLeaf = True

    def __init__(self, upstream: LocalUpstream) -> None:
        Resource.__init__(self)
        self._upstream = upstream

    def render(self, request: Request) -> bytes | int:
        channels = self._upstream._channels
        connection = channels.setdefault(request.channel, len(channels))
        path = request.path.decode("latin-1")
        headers = {name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        self._upstream.seen.append(Seen(request.method.decode("latin-1"), path, headers,
                                        connection))
        behaviour = self._upstream.routes.get(path)
        if behaviour is not None:
            return behaviour.render(request)
        if self._upstream.folder is not None:
            # The root is a leaf, so the whole path is still in postpath for
            # File to walk, as if it were the root itself.
            child = getChildForRequest(File(str(self._upstream.folder)), request)
            result: bytes | int = child.render(request)
            return result
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain")
        return b"no such path"


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
