"""Content-addressed blob files, and the streaming writer that fills them.

Storage layer: the filesystem backend of blob_backend.BlobBackend (the
default; s3_blobs.py is the other). An upload is written to `tmp/` (same filesystem as
`blobs/`), hashed on the way; on commit it is fsynced, renamed to
`blobs/<aa>/<bb>/<sha256>` and the directory fsynced. Only after that does
the caller commit the row that makes it visible. Blobs are never deleted on
a failed commit: another upload of the same bytes may own the same path.

File work runs in the reactor's thread pool, except the hashing and
writing of upload bodies: that is most of an upload's CPU, so it has a
small pool of its own at a lower priority (`_upload_pool`), which leaves
the reactor thread to compete with as few CPU-bound threads as there are
spare cores. The writer keeps at most one write in flight and asks its
producer (the client's transport) to pause while too much data waits, so
memory stays bounded whatever the upload size and however slow the disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from pypireg.domain.digests import Digests
from pypireg.domain.errors import InsufficientStorage, UploadAbandoned
from pypireg.domain.filenames import is_sha256
from pypireg.storage.blob_backend import GcResult, Openable, PendingBlob
from pypireg.storage.processes import process_alive

_log = Logger()
R = TypeVar("R")
_HASH_CHUNK = 1024 * 1024
_TEMP_RE = re.compile(r"^upload-(\d+)-[0-9a-f]{16}\.part\Z")
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1 * 1024 * 1024
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
# An upload's data is flushed to disk (fdatasync, in the file-work pool)
# every this many bytes while it streams in, so that the fsync after the
# last byte, which the client waits for, has little left to do. On ext4 a
# mere writeback hint (sync_file_range) left most of that wait in place.
SYNC_EVERY = 8 * 1024 * 1024


class BlobStore:
    """Blobs as files under *root*: `blobs/<aa>/<bb>/<sha256>`, uploads in `tmp/`."""

    def __init__(self, reactor: Any, root: Path) -> None:
        self._reactor = reactor
        self.root = root.absolute()
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        # Blobs are content-addressed, so a hash's path never changes; building
        # it with pathlib was a third of the download route's own time.
        self._paths: dict[str, str] = {}

    @property
    def reactor(self) -> Any:
        return self._reactor

    @property
    def _pool(self) -> ThreadPool:
        return self._reactor.getThreadPool()  # type: ignore[no-any-return]

    def in_thread(self, fn: Any, *args: Any) -> Deferred[Any]:
        """Run blocking file work in the reactor's (bounded) thread pool."""
        return deferToThreadPool(self._reactor, self._pool, _background, fn, *args)

    def in_upload_thread(self, fn: Any, *args: Any) -> Deferred[Any]:
        """Run CPU-bound upload work (hash and write a body chunk) in its own pool."""
        return deferToThreadPool(self._reactor, _upload_pool(self._reactor), _upload_background,
                                 fn, *args)

    def prepare(self) -> None:
        """Create the folders. Blocking, but only called at start-up."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    async def remove_stale_temp_files(self) -> int:
        """Delete temp files left by crashed processes; return how many went."""
        return await self.in_thread(self._remove_stale_sync)  # type: ignore[no-any-return]

    def stale_temp_files(self) -> list[Path]:
        """Temp files of processes that are gone (blocking: call in a thread)."""
        stale = []
        for entry in os.scandir(self.tmp_dir):
            match = _TEMP_RE.match(entry.name)
            if match is None:
                continue
            pid = int(match[1])
            # Another live daemon on the same storage keeps its in-flight files.
            if pid != os.getpid() and process_alive(pid):
                continue
            stale.append(Path(entry.path))
        return stale

    def _remove_stale_sync(self) -> int:
        removed = 0
        for path in self.stale_temp_files():
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
        if removed:
            _log.info("removed {count} temp files left by an earlier crash", count=removed)
        return removed

    async def count_stale_temp_files(self) -> int:
        return len(await self.in_thread(self.stale_temp_files))

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.blob_dir / sha256[:2] / sha256[2:4] / sha256

    def local_path(self, sha256: str) -> str:
        path = self._paths.get(sha256)
        if path is None:
            path = str(self.path_for(sha256))
            if len(self._paths) >= 4096:
                self._paths.clear()
            self._paths[sha256] = path
        return path

    def open_temp(self, producer: IPushProducer | None, *, md5: bool = True,
                  blake2: bool = True) -> TempBlob:
        """A temp file for an upload; sha256 is always computed, md5/blake2 if asked.

        The file itself is created by the first write, in the worker: a
        thread round trip of its own was a tenth of a small upload's time.
        """
        return TempBlob(self, self._temp_path(), producer, md5=md5, blake2=blake2)

    def _temp_path(self) -> Path:
        return self.tmp_dir / f"upload-{os.getpid()}-{secrets.token_hex(8)}.part"

    async def complete_digests(self, temp: PendingBlob, *, md5: bool, blake2: bool
                               ) -> Digests:
        """The digests of a finished temp file, computing any asked for that are missing.

        Needed only when a client sends a digest field after the file part.
        """
        assert isinstance(temp, TempBlob)
        digests = temp.digests
        assert digests is not None
        if (md5 and digests.md5 is None) or (blake2 and digests.blake2_256 is None):
            extra_md5, extra_blake2 = await self.in_thread(hash_file, temp.path)
            digests = Digests(digests.size, digests.sha256, digests.md5 or extra_md5,
                              digests.blake2_256 or extra_blake2)
            temp.digests = digests
        return digests

    async def copy_in(self, source: Openable) -> TempBlob:
        """A finished temp blob with a copy of *source* (for imports), hashed on the way."""
        temp = self.open_temp(None)
        try:
            await self.in_thread(temp.fill_from_sync, source)
        except BaseException:
            await temp.discard()
            raise
        return temp

    async def commit(self, temp: PendingBlob) -> None:
        await self.in_thread(self.commit_sync, temp)

    async def commit_checked(self, temp: PendingBlob,
                             check: Callable[[Openable], tuple[R, bytes | None]]
                             ) -> tuple[R, str | None]:
        # One worker call for the check and the commit: a thread round trip
        # each was a measurable part of a small upload's time.
        assert isinstance(temp, TempBlob)
        return await self.in_thread(self._check_and_commit_sync,  # type: ignore[no-any-return]
                                    temp, check)

    def _check_and_commit_sync(self, temp: TempBlob,
                               check: Callable[[Openable], tuple[R, bytes | None]]
                               ) -> tuple[R, str | None]:
        result, extra = check(temp.path)
        return result, self.commit_sync(temp, with_bytes=extra)

    def commit_sync(self, temp: PendingBlob, *, with_bytes: bytes | None = None) -> str | None:
        """Move a finished temp file to its content address, durably (blocking: a worker).

        *with_bytes* (an upload's metadata file) is stored in the same batch
        of fsyncs; its sha256 is returned. One worker call and one batch
        instead of one of each per file: for a small upload each was a
        thread round trip and a journal commit of its own.
        """
        assert isinstance(temp, TempBlob)
        digests = temp.digests
        assert digests is not None, "commit_sync() before finish()"
        try:
            sha256, extra = (self._stage_bytes(with_bytes) if with_bytes is not None
                             else (None, None))
        except OSError as e:
            # As for the file itself: a full disk is 507, not an internal error.
            _raise_if_disk_full(e)
            raise
        try:
            temp.sync_and_move_sync(self.path_for(digests.sha256), [extra] if extra else [])
        finally:
            if extra is not None:
                extra.abandon()
        return sha256

    async def store_bytes(self, data: bytes) -> str:
        """Store a small blob (a metadata file) durably; return its sha256."""
        return await self.in_thread(self._store_bytes_sync, data)  # type: ignore[no-any-return]

    def _store_bytes_sync(self, data: bytes) -> str:
        sha256, move = self._stage_bytes(data)
        if move is not None:
            try:
                _durable_moves([move])
            finally:
                move.abandon()
        return sha256

    def _stage_bytes(self, data: bytes) -> tuple[str, _Move | None]:
        """Write *data* to a temp file for its blob; no move if the blob exists."""
        sha256 = hashlib.sha256(data).hexdigest()
        final = self.path_for(sha256)
        if final.is_file():
            # Fresh mtime: the garbage collector spares young blobs (gc.py).
            try:
                os.utime(final)
                return sha256, None
            except FileNotFoundError:
                pass
        move = _Move(self._temp_path(), final)
        try:
            move.file = _open_exclusive(move.temp)
            _writev_all(move.file.fileno(), [data])
        except BaseException:
            move.abandon()
            raise
        return sha256, move

    async def exists(self, sha256: str) -> bool:
        return await self.in_thread(self.path_for(sha256).is_file)  # type: ignore[no-any-return]

    async def source(self, sha256: str) -> Path | None:
        path = self.path_for(sha256)
        return path if await self.in_thread(path.is_file) else None

    async def read_with(self, sha256: str, read: Callable[[Openable], R]) -> R:
        return await self.in_thread(read, self.path_for(sha256))  # type: ignore[no-any-return]

    async def check(self, sha256: str, size: int | None, *, verify_hash: bool) -> str:
        path = self.path_for(sha256)
        if not verify_hash:
            return "ok" if await self.in_thread(path.is_file) else "missing"
        result = await self.in_thread(sha256_file, path)
        if result is None:
            return "missing"
        digest, actual_size = result
        return "ok" if digest == sha256 and (size is None or size == actual_size) else "corrupt"

    async def count_unreferenced(self, referenced: set[str]) -> int:
        return await self.in_thread(self._count_unreferenced_sync,  # type: ignore[no-any-return]
                                    referenced)

    def _count_unreferenced_sync(self, referenced: set[str]) -> int:
        count = 0
        for _dirpath, _dirs, files in os.walk(self.blob_dir):
            count += sum(1 for name in files if name not in referenced)
        return count

    async def quarantine(self, sha256: str) -> None:
        await self.in_thread(self._quarantine_sync, sha256)

    def _quarantine_sync(self, sha256: str) -> None:
        path = self.path_for(sha256)
        if path.exists():
            target = self.root / "quarantine"
            target.mkdir(exist_ok=True)
            os.replace(path, target / sha256)

    async def sweep(self, referenced: set[str], grace_seconds: float, dry_run: bool
                    ) -> GcResult:
        """See gc.py: a candidate goes to `trash/` first, and back if an upload touched it."""
        return await self.in_thread(  # type: ignore[no-any-return]
            _sweep, self.blob_dir, self.root / "trash", referenced, grace_seconds, dry_run)

    async def remove_unreferenced(self, sha256s: Sequence[str], grace_seconds: float) -> int:
        paths = [self.path_for(s) for s in sha256s]
        return await self.in_thread(  # type: ignore[no-any-return]
            _remove_all, paths, self.root / "trash", grace_seconds)

    async def writable(self) -> bool:
        return await self.in_thread(_writable, self.tmp_dir)  # type: ignore[no-any-return]

    async def close(self) -> None:
        pass


def _writable(folder: Path) -> bool:
    probe = folder / f"ready-probe-{secrets.token_hex(8)}"
    try:
        with probe.open("wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError:
        return False
    return True


def sha256_file(path: Openable) -> tuple[str, int] | None:
    """The sha256 and size of a stored file; None if there is none (blocking: a worker)."""
    try:
        with path.open("rb") as f:
            digest = hashlib.sha256()
            size = 0
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest(), size


def _sweep(blob_dir: Path, trash: Path, referenced: set[str], grace: float,
           dry_run: bool) -> GcResult:
    removed = removed_bytes = young = kept = 0
    cutoff = time.time() - grace
    trash.mkdir(exist_ok=True)
    for dirpath, _dirs, files in os.walk(blob_dir):
        for name in files:
            if name in referenced:
                kept += 1
                continue
            outcome = _remove(Path(dirpath) / name, trash, cutoff, dry_run)
            if outcome is None:
                young += 1
            elif outcome >= 0:
                removed += 1
                removed_bytes += outcome
    return GcResult(removed, removed_bytes, young, kept)


def _remove_all(paths: list[Path], trash: Path, grace: float) -> int:
    cutoff = time.time() - grace
    trash.mkdir(exist_ok=True)
    return sum(max(_remove(path, trash, cutoff, False) or 0, 0) for path in paths)


_worker = threading.local()
# Worker threads run at a lower CPU priority than the reactor thread, so
# file work yields the CPU to index requests (Linux: per thread). Upload
# hashing is bulk work that can always wait a time slice: lower still.
WORKER_NICENESS = 5
UPLOAD_WORKER_NICENESS = 10
_upload_pools: dict[int, ThreadPool] = {}


def _background(fn: Any, *args: Any) -> Any:
    _lower_priority(WORKER_NICENESS)
    return fn(*args)


def _upload_background(fn: Any, *args: Any) -> Any:
    _lower_priority(UPLOAD_WORKER_NICENESS)
    return fn(*args)


def _lower_priority(niceness: int) -> None:
    if getattr(_worker, "niceness", 0) >= niceness:
        return
    _worker.niceness = niceness
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (OSError, AttributeError):
        pass  # not permitted or not supported: run at normal priority


def upload_threads() -> int:
    """Threads for upload hashing: the cores this process may use, minus the reactor's."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores - 1, 8))


def _upload_pool(reactor: Any) -> ThreadPool:
    # One per reactor, started on first use and stopped with the reactor,
    # like the reactor's own pool.
    pool = _upload_pools.get(id(reactor))
    if pool is None:
        pool = ThreadPool(minthreads=0, maxthreads=upload_threads(), name="pypireg-upload")
        _upload_pools[id(reactor)] = pool
        pool.start()

        def stop() -> None:
            _upload_pools.pop(id(reactor), None)
            pool.stop()

        reactor.addSystemEventTrigger("during", "shutdown", stop)
    return pool


def _open_exclusive(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    return os.fdopen(fd, "wb", buffering=0)


class Hashes:
    """The digests of bytes as they stream: sha256 always, md5 and blake2 only if asked.

    Hashing is most of an upload's CPU: only what will be checked. Fed in a
    worker thread (hashlib releases the GIL on buffers over 2 KiB).
    """

    def __init__(self, *, md5: bool, blake2: bool) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5() if md5 else None  # noqa: S324 - a checksum, not security
        self._blake2 = hashlib.blake2b(digest_size=32) if blake2 else None

    def update(self, data: bytes) -> None:
        self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._blake2 is not None:
            self._blake2.update(data)

    def digests(self, size: int) -> Digests:
        return Digests(size, self._sha256.hexdigest(),
                       self._md5.hexdigest() if self._md5 is not None else None,
                       self._blake2.hexdigest() if self._blake2 is not None else None)


def hash_file(path: Openable) -> tuple[str, str]:
    """The md5 and blake2b-256 of a stored file (blocking: a worker)."""
    md5 = hashlib.md5()  # noqa: S324 - a checksum clients send, not security
    blake2 = hashlib.blake2b(digest_size=32)
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            md5.update(chunk)
            blake2.update(chunk)
    return md5.hexdigest(), blake2.hexdigest()


def _writev_all(fd: int, chunks: list[bytes]) -> None:
    """Write *chunks* in order with as few system calls as the kernel allows."""
    views = [memoryview(c) for c in chunks if c]
    first = 0
    while first < len(views):
        # writev may be partial: skip what went out, trim the chunk it stopped in.
        n = os.writev(fd, views[first:first + _IOV_MAX])
        while n >= len(views[first]):
            n -= len(views[first])
            first += 1
            if first == len(views):
                return
        views[first] = views[first][n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Move:
    """A written temp file and the blob path it becomes."""

    temp: Path
    final: Path
    file: IO[bytes] | None = None

    def abandon(self) -> None:
        """Close and remove the temp file unless it was moved."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.temp.unlink(missing_ok=True)


def _durable_moves(moves: list[_Move]) -> None:
    """fsync every file, rename each into place, then fsync the directories.

    Step by step for all files rather than file by file: a journalling
    filesystem commits everything pending at the first fsync, so the later
    ones in the batch have less left to write.
    """
    for move in moves:
        assert move.file is not None
        os.fsync(move.file.fileno())
    directories: dict[Path, None] = {}
    for move in moves:
        assert move.file is not None
        move.file.close()
        move.file = None
        for parent in (move.final.parent.parent, move.final.parent):
            if not parent.exists():
                parent.mkdir(exist_ok=True)
                directories[parent.parent] = None
        os.replace(move.temp, move.final)
        directories[move.final.parent] = None
    for directory in directories:
        _fsync_dir(directory)


def _raise_if_disk_full(error: OSError) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise InsufficientStorage(
            "The registry's disk is full; the upload was not stored. Retry later."
        ) from error


class TempBlob:
    """One upload's temp file, fed from the reactor thread, written in a worker."""

    def __init__(self, store: BlobStore, path: Path, producer: IPushProducer | None, *,
                 md5: bool = True, blake2: bool = True) -> None:
        self._store = store
        self.path = path
        self._file: IO[bytes] | None = None
        self._producer = producer
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._busy = False
        self._synced = 0
        self._syncing = False
        self._paused = False
        self._error: Failure | None = None
        self._idle: list[Deferred[None]] = []
        self._hashes = Hashes(md5=md5, blake2=blake2)
        self.size = 0
        self.digests: Digests | None = None
        self.committed = False
        self.discarded = False
        self._removed = False
        self._lock = threading.Lock()

    @property
    def buffered(self) -> int:
        """Bytes accepted but not yet written (for tests and metrics)."""
        return self._pending_bytes

    def write(self, data: bytes) -> None:
        """Queue *data*; never blocks. Errors surface in finish()."""
        if self._error is not None or self.discarded or not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if not self._busy:
            self._start_write()
        if self._pending_bytes >= HIGH_WATER and not self._paused and self._producer:
            self._paused = True
            self._producer.pauseProducing()

    def _start_write(self) -> None:
        # The chunks go to the worker as they are: joining megabytes here
        # would be a copy made in the reactor thread.
        chunks, self._pending = self._pending, []
        self._pending_bytes = 0
        self._busy = True
        d = self._store.in_upload_thread(self._write_sync, chunks)
        d.addCallbacks(self._written, self._failed)

    def _write_sync(self, chunks: list[bytes]) -> None:
        if self._file is None:
            self._file = _open_exclusive(self.path)
        _writev_all(self._file.fileno(), chunks)
        # hashlib releases the GIL on buffers over 2 KiB, so hashing here
        # keeps the reactor thread free.
        for data in chunks:
            self._hashes.update(data)

    def _written(self, _: object) -> None:
        self._busy = False
        self._maybe_sync()
        if self._pending and not self.discarded:
            self._start_write()
        if self._paused and self._pending_bytes <= LOW_WATER and self._producer:
            self._paused = False
            self._producer.resumeProducing()
        self._wake_if_idle()

    def _failed(self, failure: Failure) -> None:
        self._error = failure
        self._pending.clear()
        self._pending_bytes = 0
        self._written(None)

    def _maybe_sync(self) -> None:
        # Called between writes: all accepted bytes but those pending are on disk.
        on_disk = self.size - self._pending_bytes
        if (self._syncing or self._error is not None or self.discarded or self._file is None
                or on_disk - self._synced < SYNC_EVERY):
            return
        self._syncing = True
        upto = on_disk
        d = self._store.in_thread(os.fdatasync, self._file.fileno())

        def synced(result: object) -> None:
            self._syncing = False
            if isinstance(result, Failure):
                # As a failed write: drop what waits, let the body run out;
                # finish() reports the error.
                self._error = self._error or result
                self._pending.clear()
                self._pending_bytes = 0
                if self._paused and self._producer:
                    self._paused = False
                    self._producer.resumeProducing()
            else:
                self._synced = upto
            self._wake_if_idle()

        d.addBoth(synced)

    def _wake_if_idle(self) -> None:
        if not self._busy and not self._syncing:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _until_idle(self) -> None:
        """Until no write or flush of this file is in flight."""
        while self._busy or self._syncing:
            d: Deferred[None] = Deferred()
            self._idle.append(d)
            await d

    async def finish(self) -> Digests:
        """Wait for queued writes; return the digests. commit_sync makes the file durable."""
        await self._until_idle()
        if self._error is not None:
            try:
                self._error.raiseException()
            except OSError as e:
                _raise_if_disk_full(e)
                raise
        self.digests = self._digests()
        return self.digests

    def fill_from_sync(self, source: Openable) -> None:
        """Copy *source* in and hash it (blocking: run in a thread)."""
        with source.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                self._write_sync([chunk])
                self.size += len(chunk)
        self.digests = self._digests()

    def sync_and_move_sync(self, final: Path, others: list[_Move]) -> None:
        """Durably rename to *final*, with *others* in the same batch (blocking: a worker).

        Under the lock that discard's removal takes: the client going away
        while its finished upload is committed cannot pull the file from
        under the rename.
        """
        with self._lock:
            if self._removed:
                raise UploadAbandoned(
                    "The connection closed before the upload was stored; nothing was stored."
                )
            if self._file is None:  # nothing was written: an empty file
                self._file = _open_exclusive(self.path)
            move = _Move(self.path, final, self._file)
            self._file = None
            try:
                _durable_moves([move, *others])
            except OSError as e:
                move.abandon()
                _raise_if_disk_full(e)
                raise
            self.committed = True

    def _digests(self) -> Digests:
        return self._hashes.digests(self.size)

    async def discard(self) -> None:
        """Remove the temp file unless it was committed. Safe to call twice."""
        if self.committed or self.discarded:
            return
        self.discarded = True
        self._pending.clear()
        self._pending_bytes = 0
        await self._until_idle()
        await self._store.in_thread(self._remove_sync)

    def _remove_sync(self) -> None:
        with self._lock:
            if self.committed:
                return
            self._removed = True
            if self._file is not None:
                self._file.close()
                self._file = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _remove(path: Path, trash: Path, cutoff: float, dry_run: bool) -> int | None:
    """Remove one unreferenced blob: its size; None if young (kept); -1 if already gone."""
    try:
        before = path.stat()
    except FileNotFoundError:
        return -1
    if before.st_mtime > cutoff:
        return None
    if dry_run:
        return before.st_size
    parked = trash / path.name
    try:
        os.rename(path, parked)
    except FileNotFoundError:
        return -1
    after = parked.stat()
    if (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns):
        # An upload wrote or touched it between the check and the move.
        os.rename(parked, path)
        return None
    parked.unlink()
    return before.st_size
