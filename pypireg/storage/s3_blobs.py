"""The S3 backend of blob_backend.BlobBackend: blobs as objects in one bucket.

Storage layer. Keys, under the configured prefix:

    blobs/<sha256>             a blob, once it is complete and durable
    tmp/<started>-<random>     a large upload on its way (a multipart upload,
                               then a finished object until it is copied)
    quarantine/<sha256>        a blob fsck found corrupt

An upload's body streams in as it does on the filesystem backend: chunks
are hashed and written to a local part file in the upload thread pool,
one write in flight, the producer paused while too much waits. The sha256
(the key) is known only at the end, so:

- a body smaller than `part_size` stays one local part file, and is PUT
  straight to `blobs/<sha256>` on commit (one request; no copy);
- a larger one becomes a multipart upload to a `tmp/` key: each part file,
  once full, is sent (at most `parts_in_flight` at once; while that many
  wait, the client's transport is paused) and deleted when S3 has it, so a
  big upload needs no more local disk than a few parts and constant memory.
  `finish()` completes the upload; commit copies `tmp/…` to
  `blobs/<sha256>` server-side (UploadPartCopy beyond 5 GiB) and deletes
  the temp object.

The caller commits the row only after commit() returned, that is after S3
confirmed the final object. A crash at any point leaves at worst a
multipart upload, a `tmp/` object or an unreferenced blob: gc aborts and
removes those once older than its grace period (a `tmp/` key carries its
start time, so that is judged by our clock, not the server's).

A final object is always written, even when the blob already exists: its
fresh Last-Modified keeps gc (which spares young objects) away from a blob
a new row is about to reference. gc checks Last-Modified again just before
each delete; a re-upload in the milliseconds between that check and the
delete is not caught (S3 has no conditional delete everywhere), and fsck
would then report the row's blob missing.

Archive inspection: a small upload's part file is still local and is read
there. A large one is read from its `tmp/` object by ranged GETs
(`RemoteObject`: a seekable file in the worker thread, each read a GET
through the reactor, buffered 2 MiB at a time): a wheel's checks read its
central directory and local headers, a few requests; an sdist is read once
through.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer

from pypireg.config import S3Config
from pypireg.domain.digests import Digests
from pypireg.domain.errors import UploadAbandoned
from pypireg.domain.filenames import is_sha256
from pypireg.storage.blob_backend import GcResult, Openable, PendingBlob
from pypireg.storage.blobs import (
    HIGH_WATER,
    LOW_WATER,
    BlobStore,
    Hashes,
    _open_exclusive,
    _writev_all,
    hash_file,
    sha256_file,
)
from pypireg.storage.s3 import S3Client, S3Error

_log = Logger()
R = TypeVar("R")
# Reads of a part file for its PUT, in the reactor thread as static.File's
# are (the file was just written: page cache).
_SEND_READ = 256 * 1024
_REMOTE_BUFFER = 2 * 1024 * 1024
# What start-up and fsck count as left by a crash (gc uses its own grace).
STALE_SECONDS = 24 * 3600.0


class S3BlobStore:
    """Blobs in a bucket; part files spooled in *spool* (the storage folder's tmp/)."""

    def __init__(self, reactor: Any, config: S3Config, spool: Path, *,
                 client: S3Client | None = None) -> None:
        self._reactor = reactor
        self.config = config
        self.client = client or S3Client(reactor, config)
        # The folder backend's machinery for local temp files: names with the
        # pid (stale ones of dead processes removed at start), the pools.
        self._spool = BlobStore(reactor, spool)

    @property
    def reactor(self) -> Any:
        return self._reactor

    @property
    def downloads(self) -> str:
        return self.config.downloads

    def key_for(self, sha256: str) -> str:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return f"{self.config.prefix}blobs/{sha256}"

    def temp_key(self) -> str:
        return f"{self.config.prefix}tmp/{int(time.time())}-{secrets.token_hex(8)}"

    def in_thread(self, fn: Any, *args: Any) -> Deferred[Any]:
        return self._spool.in_thread(fn, *args)

    def prepare(self) -> None:
        self._spool.tmp_dir.mkdir(parents=True, exist_ok=True)

    async def remove_stale_temp_files(self) -> int:
        """Local part files of dead processes, and uploads older than a day."""
        removed = await self._spool.remove_stale_temp_files()
        removed += await self._remove_stale_uploads(time.time() - STALE_SECONDS, dry_run=False)
        return removed

    async def count_stale_temp_files(self) -> int:
        local = len(await self._spool.in_thread(self._spool.stale_temp_files))
        return local + await self._remove_stale_uploads(time.time() - STALE_SECONDS,
                                                        dry_run=True)

    def local_path(self, sha256: str) -> str | None:
        return None

    def open_temp(self, producer: IPushProducer | None, *, md5: bool = True,
                  blake2: bool = True) -> S3Upload:
        return S3Upload(self, producer, md5=md5, blake2=blake2)

    async def complete_digests(self, temp: PendingBlob, *, md5: bool, blake2: bool
                               ) -> Digests:
        assert isinstance(temp, S3Upload) and temp.digests is not None
        digests = temp.digests
        if (md5 and digests.md5 is None) or (blake2 and digests.blake2_256 is None):
            extra_md5, extra_blake2 = await self.in_thread(hash_file, temp.source())
            digests = Digests(digests.size, digests.sha256, digests.md5 or extra_md5,
                              digests.blake2_256 or extra_blake2)
            temp.digests = digests
        return digests

    async def copy_in(self, source: Openable) -> S3Upload:
        temp = self.open_temp(None)
        try:
            await temp.fill_from(source)
        except BaseException:
            await temp.discard()
            raise
        return temp

    async def commit(self, temp: PendingBlob) -> None:
        assert isinstance(temp, S3Upload)
        await temp.commit()

    async def commit_checked(self, temp: PendingBlob,
                             check: Callable[[Openable], tuple[R, bytes | None]]
                             ) -> tuple[R, str | None]:
        assert isinstance(temp, S3Upload)
        result, extra = await self.in_thread(check, temp.source())
        sha256 = await self.store_bytes(extra) if extra is not None else None
        await temp.commit()
        return result, sha256

    async def store_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        await self.client.put(self.key_for(sha256), FileBodyProducer(io.BytesIO(data)))
        return sha256

    async def exists(self, sha256: str) -> bool:
        return await self.client.head(self.key_for(sha256)) is not None

    async def size_of(self, sha256: str) -> int | None:
        return await self.client.head(self.key_for(sha256))

    async def source(self, sha256: str) -> RemoteObject | None:
        key = self.key_for(sha256)
        size = await self.client.head(key)
        return None if size is None else RemoteObject(self._reactor, self.client, key, size)

    async def read_with(self, sha256: str, read: Callable[[Openable], R]) -> R:
        source = await self.source(sha256)
        if source is None:
            raise FileNotFoundError(f"no blob {sha256} in the bucket")
        result: R = await self.in_thread(read, source)
        return result

    async def check(self, sha256: str, size: int | None, *, verify_hash: bool) -> str:
        key = self.key_for(sha256)
        actual = await self.client.head(key)
        if actual is None:
            return "missing"
        if size is not None and size != actual:
            return "corrupt"
        if verify_hash:
            found = await self.in_thread(sha256_file, RemoteObject(self._reactor, self.client,
                                                                   key, actual))
            if found is None or found[0] != sha256:
                return "corrupt"
        return "ok"

    async def _blob_objects(self) -> dict[str, tuple[int, datetime.datetime]]:
        prefix = f"{self.config.prefix}blobs/"
        return {o.key[len(prefix):]: (o.size, o.last_modified)
                for o in await self.client.list_objects(prefix)}

    async def count_unreferenced(self, referenced: set[str]) -> int:
        return sum(1 for name in await self._blob_objects() if name not in referenced)

    async def quarantine(self, sha256: str) -> None:
        key = self.key_for(sha256)
        size = await self.client.head(key)
        if size is None:
            return
        await self.client.copy(key, f"{self.config.prefix}quarantine/{sha256}", size)
        await self.client.delete(key)

    async def sweep(self, referenced: set[str], grace_seconds: float, dry_run: bool
                    ) -> GcResult:
        cutoff = _utc(time.time() - grace_seconds)
        removed = removed_bytes = young = kept = 0
        for name, (size, modified) in (await self._blob_objects()).items():
            if name in referenced:
                kept += 1
                continue
            if modified > cutoff or not is_sha256(name):
                young += 1
                continue
            if not dry_run and not await self._delete_if_old(self.key_for(name), cutoff):
                young += 1
                continue
            removed += 1
            removed_bytes += size
        aborted = await self._remove_stale_uploads(time.time() - grace_seconds, dry_run)
        return GcResult(removed, removed_bytes, young, kept, aborted)

    async def _delete_if_old(self, key: str, cutoff: datetime.datetime) -> bool:
        """Delete *key* unless it was written since *cutoff* (an upload of the same bytes)."""
        info = await self.client.stat(key)
        if info is None or info.last_modified > cutoff:
            return False
        await self.client.delete(key)
        return True

    async def _remove_stale_uploads(self, started_before: float, dry_run: bool) -> int:
        """Abort multipart uploads and remove tmp/ objects started before that time."""
        prefix = f"{self.config.prefix}tmp/"
        count = 0
        for upload in await self.client.list_multipart(prefix):
            if _started(upload.key[len(prefix):], upload.initiated) < started_before:
                count += 1
                if not dry_run:
                    await self.client.abort_multipart(upload.key, upload.upload_id)
        for obj in await self.client.list_objects(prefix):
            if _started(obj.key[len(prefix):], obj.last_modified) < started_before:
                count += 1
                if not dry_run:
                    await self.client.delete(obj.key)
        if count and not dry_run:
            _log.info("aborted or removed {count} uploads left in the bucket by a crash",
                      count=count)
        return count

    async def remove_unreferenced(self, sha256s: Sequence[str], grace_seconds: float) -> int:
        cutoff = _utc(time.time() - grace_seconds)
        freed = 0
        for sha256 in sha256s:
            key = self.key_for(sha256)
            size = await self.client.head(key)
            if size is not None and await self._delete_if_old(key, cutoff):
                freed += size
        return freed

    async def writable(self) -> bool:
        key = f"{self.config.prefix}tmp/ready-probe-{secrets.token_hex(8)}"
        try:
            await self.client.put(key, FileBodyProducer(io.BytesIO(b"ok")))
            await self.client.delete(key)
        except S3Error:
            return False
        return True

    async def presigned_url(self, sha256: str, filename: str | None,
                            content_type: str) -> str:
        """A short-lived URL that GETs the blob, with the headers pypireg would send."""
        headers = [("response-content-type", content_type)]
        if filename is not None:
            headers.append(("response-content-disposition",
                            f'attachment; filename="{filename}"'))
        return await self.client.presigned_get(self.key_for(sha256), self.config.presign_ttl,
                                               response_headers=headers)

    async def close(self) -> None:
        await self.client.close()


class _Part:
    """One part's local file, filled then sent."""

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number
        self.file: IO[bytes] | None = None
        self.size = 0

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class S3Upload:
    """One blob on its way to the bucket; fed from the reactor thread.

    States: filling part 1 → (part 1 full: a multipart upload is created,
    parts go up while later ones fill) → finished (one local part, or a
    completed multipart upload at a tmp/ key) → committed or discarded.
    """

    def __init__(self, store: S3BlobStore, producer: IPushProducer | None, *,
                 md5: bool = True, blake2: bool = True) -> None:
        self._store = store
        self._client = store.client
        self._producer = producer
        self._part_size = store.config.part_size
        self._limit = store.config.parts_in_flight
        self._part: _Part | None = None
        self._number = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._busy = False
        self._queued: list[_Part] = []
        self._sending: dict[int, _Part] = {}
        self._etags: dict[int, str] = {}
        self._key = store.temp_key()
        self._upload_id: str | None = None
        self._creating = False
        self._completed = False
        self._error: Failure | None = None
        self._paused = False
        self._idle: list[Deferred[None]] = []
        self._hashes = Hashes(md5=md5, blake2=blake2)
        self.size = 0
        self.digests: Digests | None = None
        self.committed = False
        self.discarded = False
        # For tests and metrics: the most parts that were ever in flight at once.
        self.most_in_flight = 0

    @property
    def buffered(self) -> int:
        return self._pending_bytes

    @property
    def parts_waiting(self) -> int:
        """Full parts waiting for a place in flight (for tests and metrics)."""
        return len(self._queued)

    @property
    def multipart(self) -> bool:
        return self._upload_id is not None or self._creating

    # -- filling ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._error is not None or self.discarded or not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if not self._busy:
            self._start_write()
        self._throttle()

    def _throttle(self) -> None:
        if self._producer is None:
            return
        full = (self._pending_bytes >= HIGH_WATER or (len(self._queued) > 0
                and len(self._sending) >= self._limit))
        if full and not self._paused:
            self._paused = True
            self._producer.pauseProducing()
        elif self._paused and not full and self._pending_bytes <= LOW_WATER:
            self._paused = False
            self._producer.resumeProducing()

    def _start_write(self) -> None:
        chunks, self._pending = self._pending, []
        self._pending_bytes = 0
        self._busy = True
        if self._part is None:
            self._number += 1
            self._part = _Part(self._store._spool._temp_path(), self._number)
        d = self._store._spool.in_upload_thread(self._write_sync, self._part, chunks)
        d.addCallbacks(self._written, self._failed)

    def _write_sync(self, part: _Part, chunks: list[bytes]) -> None:
        if part.file is None:
            part.file = _open_exclusive(part.path)
        _writev_all(part.file.fileno(), chunks)
        for data in chunks:
            part.size += len(data)
            self._hashes.update(data)

    def _written(self, _: object) -> None:
        self._busy = False
        part = self._part
        if part is not None and part.size >= self._part_size and not self.discarded:
            # Full: parts are never split, so one is part_size plus at most a batch.
            self._part = None
            part.close()
            self._queued.append(part)
            self._pump()
        if self._pending and not self.discarded and self._error is None:
            self._start_write()
        self._throttle()
        self._wake_if_idle()

    def _failed(self, failure: Failure) -> None:
        self._fail(failure)
        self._written(None)

    def _fail(self, failure: Failure) -> None:
        if self._error is None:
            self._error = failure
        self._pending.clear()
        self._pending_bytes = 0
        # Let the body run out (and the refusal be sent): nothing more is stored.
        if self._paused and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()

    # -- sending ------------------------------------------------------------------

    def _pump(self) -> None:
        if self._error is not None or self.discarded:
            return
        if self._upload_id is None:
            if not self._creating and self._queued:
                self._creating = True
                d = Deferred.fromCoroutine(self._client.create_multipart(self._key))
                d.addCallbacks(self._created, self._create_failed)
            return
        while self._queued and len(self._sending) < self._limit:
            part = self._queued.pop(0)
            self._sending[part.number] = part
            self.most_in_flight = max(self.most_in_flight, len(self._sending))
            Deferred.fromCoroutine(self._send(part))

    def _created(self, upload_id: str) -> None:
        self._creating = False
        self._upload_id = upload_id
        if self.discarded:
            # Discarded while it was being created: discard() aborts it.
            self._wake_if_idle()
            return
        self._pump()
        self._wake_if_idle()

    async def _send(self, part: _Part) -> None:
        assert self._upload_id is not None
        failure = None
        try:
            with part.path.open("rb") as f:
                body = FileBodyProducer(f, readSize=_SEND_READ)
                etag = await self._client.upload_part(self._key, self._upload_id, part.number,
                                                      body)
            self._etags[part.number] = etag
        except Exception:
            failure = Failure()
        # Sent or not, its local copy goes (S3 has it, or the upload is over).
        try:
            await self._store.in_thread(part.remove)
        finally:
            del self._sending[part.number]
            if failure is not None:
                await self._drop_queued(failure)
            self._pump()
            self._throttle()
            self._wake_if_idle()

    def _create_failed(self, failure: Failure) -> Deferred[None]:
        self._creating = False
        return Deferred.fromCoroutine(self._drop_queued(failure))

    async def _drop_queued(self, failure: Failure) -> None:
        """A part could not go up: the upload fails; parts not yet sent go."""
        self._fail(failure)
        queued, self._queued = self._queued, []
        self._wake_if_idle()
        if queued:
            await self._store.in_thread(_remove_parts, queued)

    # -- waiting ------------------------------------------------------------------

    def _working(self) -> bool:
        """A write, the creation of the multipart upload, or a part is in flight or due."""
        return bool(self._busy or self._creating or self._sending or (
            self._queued and self._error is None and not self.discarded))

    def _wake_if_idle(self) -> None:
        if not self._working():
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _until_idle(self) -> None:
        while self._working():
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            await d

    def _raise_error(self) -> None:
        if self._error is not None:
            self._error.raiseException()

    async def finish(self) -> Digests:
        """Wait for writes (and, for a multipart upload, every part); return the digests."""
        await self._until_idle()
        self._raise_error()
        if self.multipart:
            part, self._part = self._part, None
            if part is not None:
                part.close()
                self._queued.append(part)
                self._pump()
            await self._until_idle()
            self._raise_error()
            assert self._upload_id is not None
            await self._client.complete_multipart(self._key, self._upload_id,
                                                  sorted(self._etags.items()))
            self._completed = True
        elif self._part is not None:
            self._part.close()
        self.digests = self._hashes.digests(self.size)
        return self.digests

    async def fill_from(self, source: Openable) -> None:
        """Copy *source* in (imports, storage copy): read in the worker, fed with backpressure."""
        with source.open("rb") as f:
            while chunk := await self._store.in_thread(f.read, self._part_size):
                self.write(chunk)
                await self._until_written()
        await self.finish()

    async def _until_written(self) -> None:
        while self._busy or (len(self._queued) > 0 and len(self._sending) >= self._limit):
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            await d
            if self._error is not None:
                return

    def source(self) -> Openable:
        """The finished bytes, to read in a worker thread: the local part, or the tmp/ object."""
        assert self.digests is not None
        if self._completed:
            return RemoteObject(self._store.reactor, self._client, self._key, self.size)
        return _LocalPart(self._part.path if self._part is not None else None)

    # -- committing ---------------------------------------------------------------

    async def commit(self) -> None:
        """Make the finished blob `blobs/<sha256>`; only then may its row be committed."""
        assert self.digests is not None, "commit() before finish()"
        if self.discarded:
            raise UploadAbandoned(
                "The connection closed before the upload was stored; nothing was stored.")
        final = self._store.key_for(self.digests.sha256)
        if self._completed:
            await self._client.copy(self._key, final, self.size)
            self.committed = True
            await self._client.delete(self._key)
            return
        part = self._part
        if part is None:
            await self._client.put(final, FileBodyProducer(io.BytesIO(b"")))
        else:
            with part.path.open("rb") as f:
                await self._client.put(final, FileBodyProducer(f, readSize=_SEND_READ))
        self.committed = True
        if part is not None:
            self._part = None
            await self._store.in_thread(part.remove)

    async def discard(self) -> None:
        """Abort and remove whatever was stored, unless committed. Safe to call twice."""
        if self.committed or self.discarded:
            return
        self.discarded = True
        self._pending.clear()
        self._pending_bytes = 0
        await self._until_idle()
        parts = [p for p in [self._part, *self._queued] if p is not None]
        self._part = None
        self._queued.clear()
        if parts:
            await self._store.in_thread(_remove_parts, parts)
        try:
            await self._abort()
        except S3Error:
            # Left for gc, which aborts and removes stale uploads.
            _log.failure("could not abort upload {key}", key=self._key)

    async def _abort(self) -> None:
        if self._completed:
            await self._client.delete(self._key)
        elif self._upload_id is not None:
            await self._client.abort_multipart(self._key, self._upload_id)


def _remove_parts(parts: list[_Part]) -> None:
    for part in parts:
        part.remove()


class _LocalPart:
    """A small upload's one local part (no file at all: empty)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def open(self, mode: Literal["rb"]) -> BinaryIO:
        if self._path is None:
            return io.BytesIO(b"")
        return self._path.open(mode)


class RemoteObject:
    """An object's bytes as a seekable file, for a worker thread: each read is a ranged GET."""

    def __init__(self, reactor: Any, client: S3Client, key: str, size: int) -> None:
        self._reactor = reactor
        self._client = client
        self._key = key
        self.size = size

    def open(self, mode: Literal["rb"]) -> BinaryIO:
        raw = _RangedReader(self)
        return io.BufferedReader(raw, buffer_size=_REMOTE_BUFFER)

    def read_range(self, first: int, last: int) -> bytes:
        """Bytes *first* to *last* inclusive (blocking: a worker thread only)."""
        def get() -> Deferred[bytes]:
            return Deferred.fromCoroutine(self._client.get_bytes(self._key, first, last))

        data: bytes = blockingCallFromThread(self._reactor, get)  # type: ignore[arg-type]
        return data


class _RangedReader(io.RawIOBase):
    def __init__(self, remote: RemoteObject) -> None:
        self._remote = remote
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._remote.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._remote.size - self._pos)
        if count <= 0:
            return 0
        data = self._remote.read_range(self._pos, self._pos + count - 1)
        if len(data) != count:
            raise OSError(f"the object store sent {len(data)} bytes for a range of {count}")
        view[:count] = data
        self._pos += count
        return count


def _started(name: str, fallback: datetime.datetime) -> float:
    """When a tmp/ upload started: from its key (`<unix time>-<random>`), else the server's."""
    stamp = name.split("-", 1)[0]
    if stamp.isdigit():
        return float(stamp)
    return fallback.timestamp()


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)

