"""What the rest of pypireg may ask of a blob store, whichever backend it is.

Storage layer. Blobs are content-addressed (by sha256) and immutable. Two
backends implement this: a local folder (blobs.py, `BlobStore`, the
default) and S3-compatible object storage (s3_blobs.py). Callers hold a
`BlobBackend` and never look at folders or buckets themselves.

An upload is a `PendingBlob`: bytes are written into it as they arrive
(never blocking the reactor; the backend pauses the producer when too much
waits), `finish()` gives its digests, `commit()` makes it durable at its
content address, and only after that may the caller commit the row that
makes it visible. `discard()` is always safe to call afterwards.

`local_path` is how downloads stay as fast as they were on the filesystem
backend (sendfile from the path, no thread round trip): it is the blob's
path there, and None for a backend whose blobs are not local files; the
HTTP layer then asks for a `RemoteBlob` to stream or redirect to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer

from pypireg.domain.digests import Digests

R = TypeVar("R")


class Openable(Protocol):
    """Something whose bytes can be opened for reading: a Path, or a remote object."""

    def open(self, mode: Literal["rb"]) -> BinaryIO: ...


class PendingBlob(Protocol):
    """One blob being written (an upload, a fetch from an upstream, an import)."""

    size: int
    digests: Digests | None
    committed: bool
    discarded: bool

    @property
    def buffered(self) -> int:
        """Bytes accepted but not yet written."""
        ...

    def write(self, data: bytes) -> None:
        """Queue *data*; never blocks. Errors surface in finish()."""
        ...

    async def finish(self) -> Digests:
        """Wait for queued writes; return the digests."""
        ...

    async def discard(self) -> None:
        """Drop the blob unless it was committed. Safe to call twice."""
        ...


@dataclass(frozen=True)
class GcResult:
    removed: int
    removed_bytes: int
    kept_young: int
    referenced: int
    # Multipart uploads aborted and temp objects removed (object storage only).
    aborted_uploads: int = 0


class BlobBackend(Protocol):
    """A content-addressed blob store."""

    @property
    def reactor(self) -> Any: ...

    def in_thread(self, fn: Any, *args: Any) -> Deferred[Any]:
        """Run blocking work in the reactor's (bounded) thread pool."""
        ...

    def prepare(self) -> None:
        """Get ready to store blobs (blocking, but only called at start-up)."""
        ...

    async def remove_stale_temp_files(self) -> int:
        """Remove what crashed processes left half-written; return how many went."""
        ...

    async def count_stale_temp_files(self) -> int:
        """How many half-written blobs crashed processes left."""
        ...

    def local_path(self, sha256: str) -> str | None:
        """The blob's local file path, if this backend keeps blobs as local files."""
        ...

    def open_temp(self, producer: IPushProducer | None, *, md5: bool = True,
                  blake2: bool = True) -> PendingBlob:
        """A new blob to write into; sha256 is always computed, md5/blake2 if asked."""
        ...

    async def complete_digests(self, temp: PendingBlob, *, md5: bool, blake2: bool
                               ) -> Digests:
        """*temp*'s digests, computing any asked for that were not computed on the way."""
        ...

    async def copy_in(self, source: Openable) -> PendingBlob:
        """A finished blob with a copy of *source* (a local file, another store's blob)."""
        ...

    async def commit(self, temp: PendingBlob) -> None:
        """Make a finished blob durable at its content address."""
        ...

    async def commit_checked(self, temp: PendingBlob,
                             check: Callable[[Openable], tuple[R, bytes | None]]
                             ) -> tuple[R, str | None]:
        """Run *check* (blocking, in a thread) over *temp*'s bytes, then commit it.

        *check* raises to refuse the blob, or returns a result and, possibly,
        a small blob to store with it (a distribution's core metadata),
        whose sha256 is returned.
        """
        ...

    async def store_bytes(self, data: bytes) -> str:
        """Store a small blob durably; return its sha256."""
        ...

    async def exists(self, sha256: str) -> bool: ...

    async def source(self, sha256: str) -> Openable | None:
        """A stored blob's bytes to open in a worker thread; None if there is no such blob."""
        ...

    async def read_with(self, sha256: str, read: Callable[[Openable], R]) -> R:
        """Run *read* (blocking, in a thread) over a stored blob's bytes."""
        ...

    async def check(self, sha256: str, size: int | None, *, verify_hash: bool) -> str:
        """"ok", "missing" or "corrupt" (content, or size if given, differ)."""
        ...

    async def count_unreferenced(self, referenced: set[str]) -> int:
        """How many stored blobs *referenced* does not name."""
        ...

    async def quarantine(self, sha256: str) -> None:
        """Move a corrupt blob out of the way (kept for a human to look at)."""
        ...

    async def sweep(self, referenced: set[str], grace_seconds: float, dry_run: bool
                    ) -> GcResult:
        """Remove blobs *referenced* does not name, older than the grace period."""
        ...

    async def remove_unreferenced(self, sha256s: Sequence[str], grace_seconds: float) -> int:
        """Remove these blobs (nothing references them) unless younger; bytes freed."""
        ...

    async def writable(self) -> bool:
        """Whether a new blob could be stored now (the readiness check)."""
        ...

    async def close(self) -> None:
        """Close connections (object storage); the store is not used after."""
        ...
