"""Download counts of stored files (schema/0017's `file_downloads`).

Storage layer. The daemon counts downloads in memory (batching.py) and
writes them here in one statement per flush; reads sum them per file row,
release and package (releases.py joins the same table for the pages and
the packages API). Counts of proxied files live on `upstream_files`
(upstream_cache.py), which the same flush writes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pypireg.storage.database import Database


async def record_downloads(db: Database, counted: Sequence[tuple[int, int]]) -> None:
    """Add (file row id, downloads) pairs to the counts, in one statement.

    Additive, so the batches of several daemons add up; rows deleted since
    (a delete, the duplicate cleanup) are skipped, their downloads with them.
    """
    if not counted:
        return
    await db.execute(
        "INSERT INTO file_downloads AS d (file_id, download_count, last_downloaded_at)"
        " SELECT t.id, t.n, now() FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, n)"
        " JOIN package_files f ON f.id = t.id"
        " ON CONFLICT (file_id) DO UPDATE"
        " SET download_count = d.download_count + EXCLUDED.download_count,"
        " last_downloaded_at = EXCLUDED.last_downloaded_at",
        ([k for k, _ in counted], [n for _, n in counted]))


async def file_counts(db: Database, file_ids: Sequence[int]) -> dict[int, int]:
    """The download counts of these file rows (absent: never downloaded)."""
    rows = await db.fetch_all(
        "SELECT file_id, download_count FROM file_downloads WHERE file_id = ANY(%s)",
        (list(file_ids),))
    return {int(r[0]): int(r[1]) for r in rows}
