"""The duplicate cleanup policy, applied to the files already stored.

Storage layer. A project with `keep_duplicates` N keeps the N newest rows
(highest ids, the ones the index reads first) of each file name. Each
upload applies it to its own file name as it is recorded (schema/0016);
this module applies it to everything, for the daemon's hourly job and
`pypireg cleanup`: after the policy was set or lowered, and for rows an
older daemon recorded.

Only rows go. Their blobs are removed by the garbage collector (gc.py)
once nothing references them, as after a delete, so removing a duplicate
can never race an upload of the same bytes. The package_files trigger
(schema/0007) tells every daemon to drop its cached pages and file rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twisted.logger import Logger

from pypireg.domain.audit import Actor, Event
from pypireg.storage.audit import insert_events
from pypireg.storage.database import Cursor, Database

_log = Logger()

# The rows beyond their project's policy: ranked within their (package,
# file name) from the newest, as readers order them. Only projects with a
# policy are scanned; the (package_id, filename, id) index gives the order.
_SURPLUS = (
    "SELECT ranked.id, ranked.project_id, ranked.path, ranked.package_id, ranked.filename,"
    " ranked.version, ranked.size, ranked.sha256, ranked.uploaded_at"
    " FROM (SELECT f.id, pr.id AS project_id, pr.path, f.package_id, f.filename, f.version,"
    "  f.size, f.sha256, f.uploaded_at, pr.keep_duplicates,"
    "  row_number() OVER (PARTITION BY f.package_id, f.filename ORDER BY f.id DESC) AS newest"
    "  FROM package_files f JOIN packages p ON p.id = f.package_id"
    "  JOIN projects pr ON pr.id = p.project_id"
    "  WHERE pr.keep_duplicates IS NOT NULL AND ({projects})) ranked"
    " WHERE ranked.newest > ranked.keep_duplicates"
)
_ANY_PROJECT = "%(project_id)s::BIGINT IS NULL OR pr.id = %(project_id)s"


@dataclass(frozen=True)
class SurplusFile:
    """A file row the policy removes: an older copy of a file name."""

    id: int
    project_id: int
    project_path: str
    package_id: int
    filename: str
    version: str
    size: int
    sha256: str
    uploaded_at: datetime


def _surplus(row: tuple[Any, ...]) -> SurplusFile:
    return SurplusFile(*row)


def _by_place(files: list[SurplusFile]) -> list[SurplusFile]:
    return sorted(files, key=lambda f: (f.project_path, f.filename, f.id))


async def surplus_duplicates(db: Database, project_id: int | None = None
                             ) -> list[SurplusFile]:
    """What the policy would remove now, in one project or all; nothing changes.

    Sorted by project path, file name and id.
    """
    rows = await db.fetch_all(_SURPLUS.format(projects=_ANY_PROJECT),
                              {"project_id": project_id})
    return _by_place([_surplus(r) for r in rows])


def _cleanup_events(removed: list[SurplusFile]) -> list[Event]:
    """One event per project, naming each file row removed."""
    by_project: dict[int, list[SurplusFile]] = {}
    for f in _by_place(removed):
        by_project.setdefault(f.project_id, []).append(f)
    return [Event("package_file.cleanup", "package_file", None,
                  f"{len(files)} older file{'' if len(files) == 1 else 's'}",
                  project_id=project_id, details={"files": [
                      {"id": f.id, "filename": f.filename, "version": f.version,
                       "sha256": f.sha256, "size": f.size} for f in files]})
            for project_id, files in sorted(by_project.items())]


async def remove_surplus_duplicates(db: Database, project_id: int | None = None, *,
                                    actor: Actor | None = None) -> list[SurplusFile]:
    """Apply the policy now, in one project or all; return the rows removed.

    One transaction. The package rows with surplus are locked first, in id
    order (two cleanups never deadlock), as uploads and deletes lock them:
    the rows are then ranked again, in a statement that sees every upload
    and delete of those packages committed before the locks were granted,
    and none can commit until this one does. Without it, a maintainer
    deleting the newest file while this ranked it could leave the file
    name with no file at all. Packages that gained surplus since the first
    look are left to their own upload's pruning or the next run. *actor*'s
    events (one per project) are written in the same transaction.
    """

    async def body(cur: Cursor) -> list[SurplusFile]:
        await cur.execute(
            f"SELECT DISTINCT s.package_id FROM ({_SURPLUS.format(projects=_ANY_PROJECT)}) s",
            {"project_id": project_id})
        package_ids = sorted(r[0] for r in cur.fetchall())
        if not package_ids:
            return []
        await cur.execute("SELECT id FROM packages WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                          (package_ids,))
        condition = f"({_ANY_PROJECT}) AND p.id = ANY(%(package_ids)s)"
        await cur.execute(
            f"DELETE FROM package_files f USING ({_SURPLUS.format(projects=condition)}) s"
            " WHERE f.id = s.id RETURNING s.id, s.project_id, s.path, s.package_id,"
            " s.filename, s.version, s.size, s.sha256, s.uploaded_at",
            {"project_id": project_id, "package_ids": package_ids})
        # Every file name keeps at least its newest row (keep_duplicates is
        # at least 1) and a file name is one release's, so no release or
        # package is left empty here.
        removed = [_surplus(r) for r in cur.fetchall()]
        if actor is not None:
            await insert_events(cur, actor, _cleanup_events(removed))
        return removed

    removed = _by_place(await db.run_interaction(body))
    if removed:
        _log.info("duplicate cleanup removed {count} older files ({size} bytes) from"
                  " {projects} projects", count=len(removed), size=sum(f.size for f in removed),
                  projects=len({f.project_id for f in removed}))
    return removed
