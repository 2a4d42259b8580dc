"""Garbage collection of blob files that no row references.

Storage layer. Deleting a package only deletes rows; blobs go here, later,
so that a delete can never race an upload of the same bytes:

- every upload renames (or, for metadata files, touches) its blob just
  before committing its row, so a blob that a new row may reference has a
  fresh mtime, and blobs younger than the grace period are kept;
- a candidate is first renamed into `trash/`, then its identity (inode and
  mtime) is compared with what was judged unreferenced: if an upload
  replaced or touched it meanwhile, it is put back (the content is the same,
  it is addressed by its hash).

Blocking file work runs in the thread pool.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database

_log = Logger()
DEFAULT_GRACE_SECONDS = 3600.0
# An evicted upstream file's blob goes at once, unless a fetch of the same
# file wrote it this recently (it is being kept again).
EVICTION_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class GcResult:
    removed: int
    removed_bytes: int
    kept_young: int
    referenced: int


async def referenced_blobs(db: Database) -> set[str]:
    rows = await db.fetch_all(
        "SELECT sha256 FROM package_files UNION SELECT metadata_sha256 FROM package_files"
        " WHERE metadata_sha256 IS NOT NULL"
        # Files cached from upstreams, and their core metadata.
        " UNION SELECT sha256 FROM upstream_files UNION SELECT metadata_sha256"
        " FROM upstream_files WHERE metadata_sha256 IS NOT NULL"
    )
    return {r[0] for r in rows}


async def collect_garbage(db: Database, blobs: BlobStore, *,
                          grace_seconds: float = DEFAULT_GRACE_SECONDS,
                          dry_run: bool = False) -> GcResult:
    referenced = await referenced_blobs(db)
    result: GcResult = await blobs.in_thread(
        _sweep, blobs.blob_dir, blobs.root / "trash", referenced, grace_seconds, dry_run)
    if result.removed:
        _log.info("garbage collection removed {count} unreferenced blobs ({size} bytes)",
                  count=result.removed, size=result.removed_bytes)
    return result


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


async def remove_evicted(db: Database, blobs: BlobStore, sha256s: list[str], *,
                         grace_seconds: float = EVICTION_GRACE_SECONDS) -> int:
    """Remove the blobs of evicted cache rows that nothing references any more; bytes freed.

    The same bytes may be a local upload too (content addressing): those stay.
    """
    if not sha256s:
        return 0
    rows = await db.fetch_all(
        "SELECT sha256 FROM package_files WHERE sha256 = ANY(%(s)s)"
        " UNION SELECT metadata_sha256 FROM package_files WHERE metadata_sha256 = ANY(%(s)s)"
        " UNION SELECT sha256 FROM upstream_files WHERE sha256 = ANY(%(s)s)",
        {"s": sha256s})
    referenced = {r[0] for r in rows}
    paths = [blobs.path_for(s) for s in sha256s if s not in referenced]
    freed: int = await blobs.in_thread(_remove_all, paths, blobs.root / "trash",
                                       grace_seconds)
    return freed


def _remove_all(paths: list[Path], trash: Path, grace: float) -> int:
    cutoff = time.time() - grace
    trash.mkdir(exist_ok=True)
    return sum(max(_remove(path, trash, cutoff, False) or 0, 0) for path in paths)


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
