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

The backend does the sweeping (blobs.py for folders, with the rename to
`trash/` above; s3_blobs.py for buckets); this module decides what is
referenced.
"""

from __future__ import annotations

from twisted.logger import Logger

from pypireg.storage.blob_backend import BlobBackend, GcResult
from pypireg.storage.database import Database

_log = Logger()
DEFAULT_GRACE_SECONDS = 3600.0
# An evicted upstream file's blob goes at once, unless a fetch of the same
# file wrote it this recently (it is being kept again).
EVICTION_GRACE_SECONDS = 60.0


async def referenced_blobs(db: Database) -> set[str]:
    rows = await db.fetch_all(
        "SELECT sha256 FROM package_files UNION SELECT metadata_sha256 FROM package_files"
        " WHERE metadata_sha256 IS NOT NULL"
        # Files cached from upstreams, and their core metadata.
        " UNION SELECT sha256 FROM upstream_files UNION SELECT metadata_sha256"
        " FROM upstream_files WHERE metadata_sha256 IS NOT NULL"
    )
    return {r[0] for r in rows}


async def collect_garbage(db: Database, blobs: BlobBackend, *,
                          grace_seconds: float = DEFAULT_GRACE_SECONDS,
                          dry_run: bool = False) -> GcResult:
    referenced = await referenced_blobs(db)
    result = await blobs.sweep(referenced, grace_seconds, dry_run)
    if result.removed:
        _log.info("garbage collection removed {count} unreferenced blobs ({size} bytes)",
                  count=result.removed, size=result.removed_bytes)
    return result


async def remove_evicted(db: Database, blobs: BlobBackend, sha256s: list[str], *,
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
    return await blobs.remove_unreferenced([s for s in sha256s if s not in referenced],
                                           grace_seconds)
