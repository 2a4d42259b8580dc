"""Releases (`package_versions` rows) and their files, for the packages API and pages.

Storage layer. GitLab calls one (name, version) pair a "package"; here that
is a release, a `package_versions` row whose id is the API's package id.
The web pages read per-release summaries, files with their uploaders and
READMEs; like the simple index, they see the newest row per file name (a
re-upload replaces the file it repeats), and in a group one package name
in several projects is listed once per project.
Upload creates the row (packages.record_file); deletes here remove rows
only, and the blob garbage collector (gc.py) removes the files later.

Deletes lock the package row first, as uploads do, so a delete and an
upload of the same package run one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from packaging.version import Version

from pypireg.domain.audit import Actor, Event
from pypireg.domain.versions import version_key
from pypireg.storage.audit import insert_events
from pypireg.storage.database import Cursor, Database
from pypireg.storage.database import Page as Page  # where the packages API finds it

RELEASE_ORDERS = ("created_at", "name", "version", "type")
FILE_ORDERS = ("id", "file_name", "created_at")

_RELEASE_COLUMNS = "v.id, v.package_id, p.name, p.display_name, v.version, v.created_at"
_FILE_COLUMNS = ("f.id, v.id, f.filename, f.size, f.md5, f.sha256, f.uploaded_at,"
                 " coalesce(d.download_count, 0), d.last_downloaded_at")
# Only releases that have a file are listed (every row has one unless a
# writer outside this module left it empty).
_HAS_FILES = ("EXISTS (SELECT 1 FROM package_files f"
              " WHERE f.package_id = v.package_id AND f.version = v.version)")
# Every order ends on the id, so pages never overlap or skip rows. Names
# compare byte-wise (they are ASCII), whatever the database's collation.
_RELEASE_ORDER_SQL = {
    "created_at": ("v.created_at", "v.id"),
    "name": ('p.name COLLATE "C"', "v.id"),
    "type": ("v.id",),  # every package is a pypi package
}
_FILE_ORDER_SQL = {
    "id": ("f.id",),
    "file_name": ('f.filename COLLATE "C"', "f.id"),
    "created_at": ("f.uploaded_at", "f.id"),
}


@dataclass(frozen=True)
class Release:
    """One version of one package: a "package" in GitLab's API."""

    id: int
    package_id: int
    name: str
    display_name: str
    version: str
    created_at: datetime
    # Summed over its file rows, duplicates included (schema/0017); read
    # for a page of releases only (with_downloads).
    download_count: int = 0
    last_downloaded_at: datetime | None = None


@dataclass(frozen=True)
class ReleaseFile:
    id: int
    release_id: int
    filename: str
    size: int
    md5: str
    sha256: str
    uploaded_at: datetime
    download_count: int
    last_downloaded_at: datetime | None


def _release(row: tuple[Any, ...]) -> Release:
    return Release(*row)


def _order_by(columns: tuple[str, ...], descending: bool) -> str:
    direction = " DESC" if descending else ""
    return ", ".join(c + direction for c in columns)


def _release_key(release: Release) -> tuple[tuple[int, Version | str], str, int]:
    return (version_key(release.version), release.name, release.id)


async def list_releases(db: Database, project_id: int, *, name_contains: str | None = None,
                        version: str | None = None, order_by: str = "created_at",
                        descending: bool = False, limit: int = 20, offset: int = 0
                        ) -> Page[Release]:
    """A page of the project's releases.

    *name_contains* is matched against the normalised name (pass it
    normalised); *version* matches the release it equals under PEP 440
    (pass it normalised: 1.0.0 finds release 1.0).
    """
    if order_by not in RELEASE_ORDERS:
        raise ValueError(f"unknown order {order_by!r}")
    where = ["p.project_id = %s", _HAS_FILES]
    params: list[Any] = [project_id]
    if name_contains:
        where.append("strpos(p.name, %s) > 0")
        params.append(name_contains)
    if version is not None:
        where.append("pypireg_release_key(v.version) = pypireg_release_key(%s)")
        params.append(version)
    matching = (f"FROM package_versions v JOIN packages p ON p.id = v.package_id"
                f" WHERE {' AND '.join(where)}")

    if order_by == "version":
        # PostgreSQL cannot order PEP 440 versions (1.10 > 1.9 > 1.9rc1), so
        # this order is applied here, over every matching release.
        rows = await db.fetch_all(f"SELECT {_RELEASE_COLUMNS} {matching}", params)
        ordered = sorted((_release(r) for r in rows), key=_release_key, reverse=descending)
        return Page(await _with_downloads(db, ordered[offset:offset + limit]), len(ordered))

    order = _order_by(_RELEASE_ORDER_SQL[order_by], descending)

    async def body(cur: Cursor) -> Page[Release]:
        await cur.execute(f"SELECT count(*) {matching}", params)
        counted = cur.fetchone()
        assert counted is not None
        await cur.execute(f"SELECT {_RELEASE_COLUMNS} {matching} ORDER BY {order}"
                          " LIMIT %s OFFSET %s", [*params, limit, offset])
        return Page([_release(r) for r in cur.fetchall()], counted[0])

    page = await db.run_interaction(body)
    return Page(await _with_downloads(db, page.items), page.total)


async def _with_downloads(db: Database, releases: list[Release]) -> list[Release]:
    """*releases* with their download counts: one query for a page of them.

    Not a column of the listing's query: ordered by version, that reads
    every release of the project, and summing each one's downloads there
    made it seven times slower on 10,000 releases.
    """
    if not releases:
        return releases
    rows = await db.fetch_all(
        "SELECT v.id, sum(d.download_count)::bigint, max(d.last_downloaded_at)"
        " FROM package_versions v"
        " JOIN package_files f ON f.package_id = v.package_id AND f.version = v.version"
        " JOIN file_downloads d ON d.file_id = f.id WHERE v.id = ANY(%s) GROUP BY v.id",
        ([r.id for r in releases],))
    found = {int(r[0]): (int(r[1]), r[2]) for r in rows}
    return [replace(r, download_count=found[r.id][0], last_downloaded_at=found[r.id][1])
            if r.id in found else r for r in releases]


async def get_release(db: Database, project_id: int, release_id: int) -> Release | None:
    row = await db.fetch_one(
        f"SELECT {_RELEASE_COLUMNS} FROM package_versions v JOIN packages p"
        " ON p.id = v.package_id WHERE v.id = %s AND p.project_id = %s",
        (release_id, project_id),
    )
    return (await _with_downloads(db, [_release(row)]))[0] if row else None


async def list_release_files(db: Database, project_id: int, release_id: int, *,
                             order_by: str = "id", descending: bool = False, limit: int = 20,
                             offset: int = 0) -> Page[ReleaseFile] | None:
    """A page of one release's file rows (duplicate uploads included), None if no release."""
    if order_by not in FILE_ORDERS:
        raise ValueError(f"unknown order {order_by!r}")
    order = _order_by(_FILE_ORDER_SQL[order_by], descending)
    matching = ("FROM package_versions v JOIN packages p ON p.id = v.package_id"
                " JOIN package_files f ON f.package_id = v.package_id AND f.version = v.version"
                " LEFT JOIN file_downloads d ON d.file_id = f.id"
                " WHERE v.id = %s AND p.project_id = %s")

    async def body(cur: Cursor) -> Page[ReleaseFile] | None:
        await cur.execute(
            "SELECT 1 FROM package_versions v JOIN packages p ON p.id = v.package_id"
            " WHERE v.id = %s AND p.project_id = %s", (release_id, project_id))
        if cur.fetchone() is None:
            return None
        await cur.execute(f"SELECT count(*) {matching}", (release_id, project_id))
        counted = cur.fetchone()
        assert counted is not None
        await cur.execute(f"SELECT {_FILE_COLUMNS} {matching} ORDER BY {order}"
                          " LIMIT %s OFFSET %s", (release_id, project_id, limit, offset))
        return Page([ReleaseFile(*r) for r in cur.fetchall()], counted[0])

    return await db.run_interaction(body)


async def _drop_if_empty(cur: Cursor, package_id: int) -> bool:
    """Delete the package row if none of its files remain; True if it was deleted."""
    await cur.execute(
        "DELETE FROM packages p WHERE p.id = %s"
        " AND NOT EXISTS (SELECT 1 FROM package_files f WHERE f.package_id = p.id)"
        " RETURNING p.id",
        (package_id,),
    )
    return cur.fetchone() is not None


@dataclass(frozen=True)
class Deleted:
    """What a delete removed."""

    files: list[str]
    package_removed: bool


async def _lock_release(cur: Cursor, project_id: int, release_id: int
                        ) -> tuple[int, str, str] | None:
    """Lock the release's package row; return (package_id, name, version), None if no release."""
    await cur.execute(
        "SELECT v.package_id, p.name, v.version FROM package_versions v JOIN packages p"
        " ON p.id = v.package_id WHERE v.id = %s AND p.project_id = %s FOR UPDATE OF p",
        (release_id, project_id),
    )
    row = cur.fetchone()
    return (row[0], row[1], row[2]) if row else None


def _delete_details(name: str, version: str, deleted: Deleted) -> dict[str, Any]:
    return {"name": name, "version": version, "files": deleted.files,
            "package_removed": deleted.package_removed}


async def delete_release(db: Database, project_id: int, release_id: int, *,
                         actor: Actor | None = None) -> Deleted | None:
    """Delete a release's file rows and its row (and the package's if it is left empty).

    Returns None if the project has no such release. *actor*'s event is
    written in the delete's transaction.
    """

    async def body(cur: Cursor) -> Deleted | None:
        locked = await _lock_release(cur, project_id, release_id)
        if locked is None:
            return None
        package_id, name, version = locked
        # Another delete may have removed it while we waited for the lock.
        await cur.execute("DELETE FROM package_versions WHERE id = %s RETURNING id",
                          (release_id,))
        if cur.fetchone() is None:
            return None
        await cur.execute(
            "DELETE FROM package_files WHERE package_id = %s AND version = %s"
            " RETURNING filename",
            (package_id, version),
        )
        files = sorted(r[0] for r in cur.fetchall())
        deleted = Deleted(files, await _drop_if_empty(cur, package_id))
        if actor is not None:
            await insert_events(cur, actor, [Event(
                "release.delete", "release", release_id, f"{name} {version}",
                project_id=project_id, details=_delete_details(name, version, deleted))])
        return deleted

    return await db.run_interaction(body)


async def delete_release_file(db: Database, project_id: int, release_id: int, file_id: int,
                              *, actor: Actor | None = None) -> Deleted | None:
    """Delete one file row of a release; the release's row goes with its last file.

    Returns None if the project has no such file in that release. *actor*'s
    event is written in the delete's transaction.
    """

    async def body(cur: Cursor) -> Deleted | None:
        locked = await _lock_release(cur, project_id, release_id)
        if locked is None:
            return None
        package_id, name, version = locked
        await cur.execute(
            "DELETE FROM package_files WHERE id = %s AND package_id = %s AND version = %s"
            " RETURNING filename, sha256",
            (file_id, package_id, version),
        )
        row = cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "DELETE FROM package_versions v WHERE v.id = %s AND NOT " + _HAS_FILES,
            (release_id,),
        )
        deleted = Deleted([row[0]], await _drop_if_empty(cur, package_id))
        if actor is not None:
            await insert_events(cur, actor, [Event(
                "package_file.delete", "package_file", file_id, row[0], project_id=project_id,
                details={**_delete_details(name, version, deleted), "sha256": row[1],
                         "release_id": release_id})])
        return deleted

    return await db.run_interaction(body)


# The newest row per (package, file name), the rows readers see.
_VISIBLE_FILES = (
    "SELECT DISTINCT ON (f.package_id, f.filename) f.*"
    " FROM package_files f JOIN packages p ON p.id = f.package_id"
    " WHERE p.project_id = ANY(%(projects)s) {condition}"
    " ORDER BY f.package_id, f.filename, f.id DESC"
)


@dataclass(frozen=True)
class ReleaseSummary:
    """One version of one package in one project, summed over its files."""

    project_id: int
    project_path: str
    name: str
    display_name: str
    version: str
    yanked: bool  # every file of the release is yanked
    file_count: int
    last_upload: datetime


@dataclass(frozen=True)
class FileDetail:
    """A file as the package page shows it."""

    id: int
    display_name: str
    version: str
    filename: str
    packagetype: str
    size: int
    sha256: str
    requires_python: str | None
    summary: str | None
    uploaded_at: datetime
    yanked: bool
    yanked_reason: str | None
    uploader_token_id: int | None
    # Who uploaded: a personal token's user, a deploy token's user name, a
    # project token's description ('' if it has none); None if it is gone.
    uploader: str | None
    uploader_kind: str | None
    # Downloads of this file name in the package: every row of it, so the
    # downloads of a copy a re-upload replaced still count (schema/0017).
    downloads: int


@dataclass(frozen=True)
class Description:
    """A release's long description and its Description-Content-Type."""

    text: str
    content_type: str | None


async def release_summaries(db: Database, projects: Sequence[int], name_contains: str = ""
                            ) -> list[ReleaseSummary]:
    """Every release of the projects' packages, by project path, name and version.

    *name_contains* (a normalised name fragment) keeps only packages whose
    normalised name contains it.
    """
    condition = "AND strpos(p.name, %(part)s) > 0" if name_contains else ""
    rows = await db.fetch_all(
        f"WITH visible AS ({_VISIBLE_FILES.format(condition=condition)})"
        " SELECT pr.id, pr.path, p.name, min(p.display_name), v.version, bool_and(v.yanked),"
        " count(*), max(v.uploaded_at)"
        " FROM visible v JOIN packages p ON p.id = v.package_id"
        " JOIN projects pr ON pr.id = p.project_id"
        " GROUP BY pr.id, pr.path, p.name, v.version"
        ' ORDER BY pr.path COLLATE "C", p.name COLLATE "C", v.version',
        {"projects": list(projects), "part": name_contains},
    )
    return [ReleaseSummary(*r) for r in rows]


async def package_files(db: Database, project_id: int, name: str) -> list[FileDetail]:
    """The files of package *name* (normalised) in one project, with their uploaders."""
    rows = await db.fetch_all(
        f"WITH visible AS ({_VISIBLE_FILES.format(condition='AND p.name = %(name)s')})"
        " SELECT v.id, p.display_name, v.version, v.filename, v.packagetype, v.size, v.sha256,"
        " v.requires_python, v.summary, v.uploaded_at, v.yanked, v.yanked_reason,"
        " v.uploaded_by_token_id,"
        " CASE t.kind WHEN 'personal' THEN u.username WHEN 'deploy' THEN t.username"
        "  ELSE t.description END, t.kind,"
        " (SELECT coalesce(sum(d.download_count), 0)::bigint FROM package_files f"
        "  JOIN file_downloads d ON d.file_id = f.id"
        "  WHERE f.package_id = v.package_id AND f.filename = v.filename)"
        " FROM visible v JOIN packages p ON p.id = v.package_id"
        " LEFT JOIN tokens t ON t.id = v.uploaded_by_token_id"
        " LEFT JOIN users u ON u.id = t.user_id"
        ' ORDER BY v.version, v.filename COLLATE "C"',
        {"projects": [project_id], "name": name},
    )
    return [FileDetail(*r) for r in rows]


async def release_description(db: Database, project_id: int, name: str, version: str
                              ) -> Description | None:
    """The long description of one release: that of its newest file that has one."""
    row: tuple[Any, ...] | None = await db.fetch_one(
        "SELECT f.description, f.description_content_type"
        " FROM package_files f JOIN packages p ON p.id = f.package_id"
        " WHERE p.project_id = %s AND p.name = %s AND f.version = %s"
        " AND f.description IS NOT NULL AND f.description <> ''"
        " ORDER BY f.id DESC LIMIT 1",
        (project_id, name, version),
    )
    return Description(row[0], row[1]) if row else None


async def package_counts(db: Database, projects: Sequence[int]) -> dict[int, int]:
    """How many packages with at least one file each project has (absent: none)."""
    rows = await db.fetch_all(
        "SELECT p.project_id, count(*) FROM packages p"
        " WHERE p.project_id = ANY(%s)"
        " AND EXISTS (SELECT 1 FROM package_files f WHERE f.package_id = p.id)"
        " GROUP BY p.project_id",
        (list(projects),),
    )
    return {int(r[0]): int(r[1]) for r in rows}
