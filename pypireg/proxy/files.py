"""Upstream files fetched through: streamed to the client and into the blob store at once.

Proxy layer. The first download of an upstream file opens it upstream and
sends each chunk on to the client while a temp blob takes the same bytes
(constant memory: nothing is buffered beyond the chunk in hand). The last
chunk is held back until the whole file's sha256 matches what the upstream
page advertised: only then is the download completed, and then the blob
committed and its row recorded (a cache entry need not keep the client
waiting for its fsync). A mismatch is logged as an integrity event, is not
kept, and the client's connection is aborted short of the Content-Length,
so no client can take it for a good download.

Backpressure runs both ways: a slow client or a slow disk pauses reading
from the upstream (either one is enough), and reading resumes when both
have caught up.

Core metadata files (PEP 658) are small: fetched whole, checked against
their advertised hash, then stored and served like the files themselves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pypireg.batching import PendingCounts
from pypireg.config import UpstreamConfig
from pypireg.domain.errors import BadGateway, GatewayTimeout, NotFound
from pypireg.domain.simple_pages import UpstreamFile
from pypireg.domain.versions import version_key
from pypireg.single_flight import SingleFlight
from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.blobs import BlobStore, TempBlob
from pypireg.storage.database import Database
from pypireg.storage.gc import remove_evicted
from pypireg.upstream.client import UpstreamBody, UpstreamUnavailable

_log = Logger()
# Files without an advertised sha256 fetched and hashed per page request.
HASHED_PER_REQUEST = 10
# How many cached files' sha256s a daemon remembers.
KNOWN_FILES = 100_000
# A core metadata file is a few KiB; anything far larger is not one.
MAX_METADATA_BYTES = 8 * 1024 * 1024
# A file without a sha256 that could not be hashed is not fetched again for
# this long: after its bytes failed the md5 its page gives (they will again,
# and each page request would fetch it), or after the upstream failed.
REFUSED_SECONDS = 3600.0
FAILED_SECONDS = 10.0
# How many such files a daemon remembers.
REFUSED_FILES = 10_000


class FileSource(Protocol):
    """What this module needs of an upstream client (pypireg/upstream/client.py)."""

    @property
    def config(self) -> UpstreamConfig: ...

    async def open_file(self, url: str, *, max_bytes: int) -> UpstreamBody: ...


class FileSink(Protocol):
    """Where a fetched file goes: the client's response (http/pypi/files.py)."""

    def begin(self, length: int | None, producer: IPushProducer) -> None:
        """Send the headers; *producer* is paused while the client is slow."""

    def write(self, data: bytes) -> None:
        """Send *data*; ignored once the client is gone."""

    def finish(self) -> None:
        """The download is complete and good."""

    def abort(self) -> None:
        """The download is not good: drop the connection short of its length."""


@dataclass(frozen=True)
class MetadataFile:
    """A core metadata file to serve: from the blob store, or from memory while it is kept."""

    sha256: str
    data: bytes | None = None


# Counted by the caller's metrics: (event, upstream) and bytes fetched.
Observer = Callable[[str, str], None]
BytesObserver = Callable[[str, int], None]


class UpstreamFiles:
    """Upstream files in the blob store: which are there, and fetching the others."""

    def __init__(self, db: Database, blobs: BlobStore, sources: Mapping[str, FileSource],
                 *, clock: IReactorTime, max_file_size: int, observe: Observer | None = None,
                 observe_bytes: BytesObserver | None = None) -> None:
        self._db = db
        self._clock = clock
        self._blobs = blobs
        self._sources = sources
        self._max_file_size = max_file_size
        self._observe: Observer = observe or (lambda event, upstream: None)
        self._observe_bytes: BytesObserver = observe_bytes or (lambda upstream, n: None)
        # sha256 → downloads counted since the last flush; 0: touched only
        # (a HEAD, a metadata fetch), which still marks it recently used.
        self._touched: PendingCounts[str] = PendingCounts(
            lambda touched: cache_store.touch_files(db, touched), "downloads of upstream files")
        # Files without an advertised sha256 being hashed, by URL, with
        # the requests waiting for the same answer.
        self._hashing: SingleFlight[str, str | None] = SingleFlight()
        # Those not to fetch again before a time (clock seconds), by URL.
        self._refused: dict[str, float] = {}
        # Files known to be cached (insertion-ordered, bounded): a warm
        # download checks only that the blob is still there.
        self._known: dict[str, None] = {}
        # Core metadata files fetched and served, on their way to the blob
        # store, by sha256; and the fetches in progress.
        self._keeping_metadata: dict[str, bytes] = {}
        self._fetching_metadata: SingleFlight[str, bytes] = SingleFlight()
        self._background: set[Deferred[None]] = set()

    async def stored(self, sha256: str) -> bool:
        """Whether the blob of *sha256* is cached (and so served like a local file)."""
        # A stat, in the reactor thread as the file body's own open and fstat
        # are; no blob, no need to ask the database (a first fetch).
        if not os.path.isfile(self._blobs.path_for(sha256)):
            # Never fetched, or evicted (by this daemon or another).
            self._known.pop(sha256, None)
            return False
        if sha256 not in self._known:
            if await cache_store.get_file(self._db, sha256) is None:
                return False
            self.remember(sha256)
        self._touched.add(sha256, 0)
        return True

    def downloaded(self, sha256: str) -> None:
        """A cached file was sent to a client (a counted download; see FileRoutes)."""
        self._touched.add(sha256)

    def remember(self, sha256: str) -> None:
        """*sha256* is cached (its row recorded): a download need not ask the database."""
        self._known[sha256] = None
        if len(self._known) > KNOWN_FILES:
            del self._known[next(iter(self._known))]

    async def flush_downloads(self) -> None:
        """Record the downloads since the last flush (counts, and the last download time).

        A failed flush is logged and kept for the next one (batching.py).
        """
        await self._touched.flush()

    async def evict(self, max_bytes: int) -> int:
        """Keep at most *max_bytes* of upstream files, the least recently downloaded go.

        Returns the bytes freed.
        """
        await self.flush_downloads()
        evicted = await cache_store.evict(self._db, max_bytes)
        if not evicted:
            return 0
        for f in evicted:
            self._observe("evicted", f.upstream)
        freed = await remove_evicted(self._db, self._blobs, [f.sha256 for f in evicted])
        _log.info("evicted {count} upstream files ({size} bytes freed) to stay within"
                  " proxy.max_cache_size", count=len(evicted), size=freed)
        return freed

    async def hashes_for(self, upstream: UpstreamConfig, name: str,
                         files: Sequence[UpstreamFile]) -> dict[str, str]:
        """sha256s for files whose page gives none, by URL: known ones, else fetched and hashed.

        Each such file is fetched whole once, kept in the blob store, and
        listed from then on. At most HASHED_PER_REQUEST, newest first, are
        fetched per call; the rest are left off until a later request.
        """
        known = await cache_store.known_hashes(self._db, upstream.name, [f.url for f in files])
        now = self._clock.seconds()
        missing = sorted((f for f in files
                          if f.url not in known and self._refused.get(f.url, 0.0) <= now),
                         key=lambda f: version_key(f.version), reverse=True)
        fetches = [Deferred.fromCoroutine(self._hash_once(upstream, name, f))
                   for f in missing[:HASHED_PER_REQUEST]]
        for f, sha256 in zip(missing, await gatherResults(fetches), strict=False):
            if sha256 is not None:
                known[f.url] = sha256
        return known

    async def _hash_once(self, upstream: UpstreamConfig, name: str, f: UpstreamFile
                         ) -> str | None:
        return await self._hashing.run(f.url, lambda: self._hash_logged(upstream, name, f))

    async def _hash_logged(self, upstream: UpstreamConfig, name: str, f: UpstreamFile
                           ) -> str | None:
        try:
            sha256 = await self._hash(upstream, name, f)
        except Exception:
            _log.failure("hashing {url} from upstream {upstream} failed", url=f.url,
                         upstream=upstream.name)
            sha256 = None
        if sha256 is None:
            self._refuse(f.url, FAILED_SECONDS)
        return sha256

    def _refuse(self, url: str, seconds: float) -> None:
        now = self._clock.seconds()
        if len(self._refused) >= REFUSED_FILES:
            self._refused = {u: t for u, t in self._refused.items() if t > now}
            if len(self._refused) >= REFUSED_FILES:
                del self._refused[next(iter(self._refused))]
        self._refused[url] = max(self._refused.get(url, 0.0), now + seconds)

    async def _hash(self, upstream: UpstreamConfig, name: str, f: UpstreamFile) -> str | None:
        source = self._sources[upstream.name]
        limit = f.size if f.size is not None else self._max_file_size
        try:
            body = await source.open_file(f.url, max_bytes=limit)
        except UpstreamUnavailable as e:
            self._observe("error", upstream.name)
            _log.warn("could not fetch {filename} from upstream {upstream} to hash it:"
                      " {reason}", filename=f.filename, upstream=upstream.name, reason=e.reason)
            return None
        gate = _Gate(body)
        temp = self._blobs.open_temp(_Side(gate, "disk"), md5=True, blake2=False)
        try:
            await body.deliver(temp.write)
            digests = await temp.finish()
        except UpstreamUnavailable as e:
            await temp.discard()
            self._observe("error", upstream.name)
            _log.warn("upstream {upstream} failed sending {filename}: {reason}",
                      upstream=upstream.name, filename=f.filename, reason=e.reason)
            return None
        except BaseException:
            await temp.discard()
            raise
        self._observe_bytes(upstream.name, digests.size)
        # What the page does give (md5, say) must hold.
        advertised = f.hashes.get("md5")
        if advertised is not None and advertised != digests.md5:
            await temp.discard()
            self.integrity_failure(upstream, f.filename, f"md5 {advertised}",
                                   f"md5 {digests.md5}")
            self._refuse(f.url, REFUSED_SECONDS)
            return None
        await self._blobs.in_thread(self._blobs.commit_sync, temp)
        await cache_store.record_file(self._db, digests.sha256, upstream=upstream.name,
                                      name=name, filename=f.filename, size=digests.size)
        await cache_store.record_hash(self._db, upstream.name, f.url, digests.sha256,
                                      digests.size)
        self._observe("fetched", upstream.name)
        return digests.sha256

    def fetch(self, upstream: UpstreamConfig, name: str, f: UpstreamFile) -> FetchThrough:
        source = self._sources[upstream.name]
        return FetchThrough(self, source, name, f)

    async def metadata(self, upstream: UpstreamConfig, name: str, f: UpstreamFile
                       ) -> MetadataFile:
        """*f*'s core metadata file: stored here, or fetched (and kept, after it is served).

        Raises:
            NotFound: the page advertises no metadata hash for *f*.
            BadGateway, GatewayTimeout: the upstream failed, or sent other bytes.
        """
        expected = _metadata_sha256(f)
        if expected is None:
            raise NotFound("No such file.")
        if expected not in self._keeping_metadata and await self.stored(expected):
            return MetadataFile(expected)
        keeping = self._keeping_metadata.get(expected)
        if keeping is not None:
            return MetadataFile(expected, keeping)
        data = await self._fetching_metadata.run(
            expected, lambda: self._fetch_metadata(upstream, name, f, expected))
        return MetadataFile(expected, data)

    async def _fetch_metadata(self, upstream: UpstreamConfig, name: str, f: UpstreamFile,
                              expected: str) -> bytes:
        source = self._sources[upstream.name]
        url = f.url + ".metadata"
        try:
            body = await source.open_file(url, max_bytes=MAX_METADATA_BYTES)
            chunks: list[bytes] = []
            await body.deliver(chunks.append)
        except UpstreamUnavailable as e:
            self._observe("error", upstream.name)
            raise _unavailable(upstream, f"{f.filename}.metadata", e) from None
        data = b"".join(chunks)
        self._observe_bytes(upstream.name, len(data))
        actual = await self._blobs.in_thread(lambda: hashlib.sha256(data).hexdigest())
        if actual != expected:
            self.integrity_failure(upstream, f"{f.filename}.metadata", expected, actual)
            raise BadGateway(f"The upstream index {upstream.name!r} sent a core metadata file"
                             f" for {f.filename!r} that does not match the hash its page"
                             " gives; it was not served. Tell the upstream's operators.")
        # Served now, made durable and recorded after (a resolver need not
        # wait for an fsync); requests meanwhile get these bytes.
        self._keeping_metadata[expected] = data
        self._keep(self._keep_metadata(upstream, name, f, expected, data))
        return data

    async def _keep_metadata(self, upstream: UpstreamConfig, name: str, f: UpstreamFile,
                             sha256: str, data: bytes) -> None:
        try:
            await self._blobs.store_bytes(data)
            await cache_store.record_file(self._db, sha256, upstream=upstream.name, name=name,
                                          filename=f"{f.filename}.metadata", size=len(data))
            self.remember(sha256)
            self._observe("fetched", upstream.name)
        except Exception:
            _log.failure("could not keep {filename}.metadata from upstream {upstream}",
                         filename=f.filename, upstream=upstream.name)
        finally:
            self._keeping_metadata.pop(sha256, None)

    def _keep(self, work: Coroutine[Any, Any, None]) -> None:
        """Run *work* in the background; settled() waits for it."""
        d = Deferred.fromCoroutine(work)
        self._background.add(d)
        d.addBoth(lambda _: self._background.discard(d))

    async def settled(self) -> None:
        """Wait for background work (files being kept) to end: for shutdown and tests."""
        while self._background:
            await gatherResults(list(self._background), consumeErrors=True)

    def integrity_failure(self, upstream: UpstreamConfig, filename: str, expected: str,
                          actual: str) -> None:
        self._observe("integrity", upstream.name)
        _log.error("integrity: upstream {upstream} sent {filename} with sha256 {actual},"
                   " but its page advertised {expected}; not cached, download aborted",
                   upstream=upstream.name, filename=filename, actual=actual,
                   expected=expected)

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    @property
    def db(self) -> Database:
        return self._db

    @property
    def max_file_size(self) -> int:
        return self._max_file_size

    def observe(self, event: str, upstream: str) -> None:
        self._observe(event, upstream)

    def observe_bytes(self, upstream: str, count: int) -> None:
        self._observe_bytes(upstream, count)


class FetchThrough:
    """One upstream file on its way to a client and to the blob store (module docstring)."""

    def __init__(self, files: UpstreamFiles, source: FileSource, name: str,
                 f: UpstreamFile) -> None:
        self._files = files
        self._source = source
        self._name = name
        self._file = f
        self._expected = f.sha256
        assert self._expected is not None, "files without a sha256 are never listed"

    async def open(self) -> Transfer:
        """Ask the upstream for the file (before any response header is sent).

        Raises:
            BadGateway, GatewayTimeout: the upstream refused, failed or is
                about to send a size other than its page advertised.
        """
        upstream = self._source.config
        f = self._file
        limit = f.size if f.size is not None else self._files.max_file_size
        try:
            body = await self._source.open_file(f.url, max_bytes=limit)
        except UpstreamUnavailable as e:
            self._files.observe("error", upstream.name)
            raise _unavailable(upstream, f.filename, e) from None
        if f.size is not None and body.length is not None and body.length != f.size:
            body.cancel()
            self._files.integrity_failure(upstream, f.filename, f"{f.size} bytes",
                                          f"{body.length} bytes")
            raise BadGateway(f"The upstream index {upstream.name!r} is sending"
                             f" {f.filename!r} with another size than its page gives;"
                             " it was not served.")
        return Transfer(self._files, upstream, self._name, f, body)


class _Gate:
    """Reading from the upstream is paused while any side wants it paused."""

    def __init__(self, body: UpstreamBody) -> None:
        self._body = body
        self._paused_by: set[str] = set()

    def pause(self, side: str) -> None:
        if not self._paused_by:
            self._body.pause()
        self._paused_by.add(side)

    def resume(self, side: str) -> None:
        if side not in self._paused_by:
            return
        self._paused_by.discard(side)
        if not self._paused_by:
            self._body.resume()


@implementer(IPushProducer)
class _Side:
    def __init__(self, gate: _Gate, side: str) -> None:
        self._gate = gate
        self._side = side

    def pauseProducing(self) -> None:
        self._gate.pause(self._side)

    def resumeProducing(self) -> None:
        self._gate.resume(self._side)

    def stopProducing(self) -> None:
        # The client went away: the download goes on into the cache, so
        # the next client gets the file whole.
        self._gate.resume(self._side)


class Transfer:
    def __init__(self, files: UpstreamFiles, upstream: UpstreamConfig, name: str,
                 f: UpstreamFile, body: UpstreamBody) -> None:
        self._files = files
        self._upstream = upstream
        self._name = name
        self._file = f
        self._body = body
        self._gate = _Gate(body)
        self._held: bytes | None = None
        self._sink: FileSink | None = None
        self._temp: TempBlob | None = None
        self._received = 0

    @property
    def length(self) -> int | None:
        return self._body.length if self._body.length is not None else self._file.size

    async def run(self, sink: FileSink) -> None:
        """Stream the file to *sink* and the blob store; keep it only if it is good."""
        self._sink = sink
        temp = self._temp = self._files.blobs.open_temp(_Side(self._gate, "disk"),
                                                        md5=False, blake2=False)
        sink.begin(self.length, _Side(self._gate, "client"))
        upstream, f = self._upstream, self._file
        try:
            await self._body.deliver(self._chunk)
        except UpstreamUnavailable as e:
            self._files.observe("error", upstream.name)
            _log.warn("upstream {upstream} failed sending {filename}: {reason}",
                      upstream=upstream.name, filename=f.filename, reason=e.reason)
            await temp.discard()
            sink.abort()
            return
        except BaseException:
            await temp.discard()
            sink.abort()
            raise
        self._files.observe_bytes(upstream.name, self._received)
        try:
            digests = await temp.finish()
        except BaseException:
            await temp.discard()
            sink.abort()
            raise
        if digests.sha256 != f.sha256:
            await temp.discard()
            assert f.sha256 is not None
            self._files.integrity_failure(upstream, f.filename, f.sha256, digests.sha256)
            sink.abort()
            return
        # The bytes are good: the client has them now. Keeping them (fsync,
        # rename, then the row) follows, off its clock: the row still comes
        # only once the blob is durable, and a crash before that loses a
        # cache entry the next download fetches again, never a file.
        if self._held is not None:
            sink.write(self._held)
            self._held = None
        sink.finish()
        try:
            await self._files.blobs.in_thread(self._files.blobs.commit_sync, temp)
            # Its first download counts with its row: there is none to count on before.
            await cache_store.record_file(self._files.db, digests.sha256,
                                          upstream=upstream.name, name=self._name,
                                          filename=f.filename, size=digests.size,
                                          downloaded=True)
            self._files.remember(digests.sha256)
            self._files.observe("fetched", upstream.name)
        except Exception:
            _log.failure("could not keep {filename} from upstream {upstream}",
                         filename=f.filename, upstream=upstream.name)
            await temp.discard()

    def _chunk(self, data: bytes) -> None:
        assert self._temp is not None and self._sink is not None
        self._received += len(data)
        self._temp.write(data)
        if self._held is not None:
            self._sink.write(self._held)
        self._held = data


def _metadata_sha256(f: UpstreamFile) -> str | None:
    if isinstance(f.core_metadata, dict):
        return f.core_metadata.get("sha256")
    return None


def _unavailable(upstream: UpstreamConfig, filename: str, error: UpstreamUnavailable
                 ) -> BadGateway | GatewayTimeout:
    message = (f"The upstream index {upstream.name!r} could not send {filename!r}"
               f" ({error.reason}); retry later.")
    return GatewayTimeout(message) if error.timed_out else BadGateway(message)
