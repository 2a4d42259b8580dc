"""Storage usage: the bytes of each project's package files.

Storage layer. As GitLab's `packages_size`, every stored file row counts,
re-uploads (duplicates) included, so the figure drops when the duplicate
cleanup policy removes them. It is what the project holds, not what the
disk holds: identical bytes uploaded twice share one blob (content
addressing), core metadata files are not counted, and neither is the
upstream cache, which every project shares (`pypireg upstream status`).
"""

from __future__ import annotations

from pypireg.storage.database import Database


async def packages_size(db: Database, project_id: int) -> int:
    """The bytes of the project's package files (0 with none)."""
    row = await db.fetch_one(
        "SELECT coalesce(sum(f.size), 0) FROM package_files f"
        " JOIN packages p ON p.id = f.package_id WHERE p.project_id = %s",
        (project_id,))
    assert row is not None
    return int(row[0])


async def packages_sizes(db: Database) -> dict[int, int]:
    """The bytes of every project's package files, by project id (absent: none)."""
    rows = await db.fetch_all(
        "SELECT p.project_id, sum(f.size) FROM package_files f"
        " JOIN packages p ON p.id = f.package_id GROUP BY p.project_id")
    return {project_id: int(size) for project_id, size in rows}
