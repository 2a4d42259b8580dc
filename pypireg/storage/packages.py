"""Packages and their files.

Storage layer. A package is a normalised name inside a project; each upload
adds a file row. Re-uploading a file name adds another row (GitLab keeps
duplicates), and readers see the most recent row per file name. A project's
duplicate cleanup policy (`keep_duplicates`) prunes the older rows as each
upload is recorded; duplicates.py applies it to what is already stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2

from pypireg.domain.audit import Actor, Event
from pypireg.domain.errors import Conflict, FileExists
from pypireg.storage.audit import audited, fetch_all, with_event
from pypireg.storage.database import Database

# The SQLSTATE schema/0009 raises for a rejected duplicate file.
_DUPLICATE_FILE = "PR001"
_UPSTREAM_NAME = "PR002"
_FOREIGN_NAMESPACE = "PR003"
_FILE_COLUMNS = (
    "f.id, f.package_id, p.name, p.display_name, f.version, f.filename, f.packagetype,"
    " f.python_version, f.size, f.sha256, f.md5, f.blake2_256, f.requires_python, f.summary,"
    " f.metadata_version, f.uploaded_at, f.uploaded_by_token_id, f.metadata_sha256, f.yanked,"
    " f.yanked_reason"
)


@dataclass(frozen=True)
class PackageFile:
    id: int
    package_id: int
    name: str
    display_name: str
    version: str
    filename: str
    packagetype: str
    python_version: str
    size: int
    sha256: str
    md5: str | None
    blake2_256: str | None
    requires_python: str | None
    summary: str | None
    metadata_version: str | None
    uploaded_at: datetime
    uploaded_by_token_id: int | None
    metadata_sha256: str | None
    yanked: bool
    yanked_reason: str | None


@dataclass(frozen=True)
class NewFile:
    """What an accepted upload records."""

    project_id: int
    name: str
    display_name: str
    version: str
    filename: str
    packagetype: str
    python_version: str
    size: int
    sha256: str
    md5: str | None
    blake2_256: str | None
    requires_python: str | None
    summary: str | None
    metadata_version: str | None
    uploaded_by_token_id: int | None
    metadata_sha256: str | None
    description: str | None = None
    description_content_type: str | None = None


@dataclass(frozen=True)
class PackageSummary:
    name: str
    display_name: str


def _file(row: tuple[Any, ...]) -> PackageFile:
    return PackageFile(*row)


async def record_file(db: Database, new: NewFile, *, reject_duplicates: bool,
                      actor: Actor | None = None) -> PackageFile:
    """Insert the file row (and the package and release rows on first upload), atomically.

    One statement, schema/0016's function (0009's comments say why). A
    version equal under PEP 440 to an existing release's (1.0.0 and 1.0)
    joins that release under its spelling, returned in the file's version.
    A name whose origin is an upstream, or that lies in another owner's
    namespace, is refused with Conflict (409); a duplicate file name, where
    *reject_duplicates*, with FileExists (400). If the project keeps only N
    duplicates, the older rows of this file name beyond N go in the same
    transaction. *actor*'s `package_file.upload` event is in that
    transaction too.
    """
    values = (new.project_id, new.name, new.display_name, reject_duplicates, new.version,
              new.filename, new.packagetype, new.python_version, new.size, new.sha256,
              new.md5, new.blake2_256, new.requires_python, new.summary, new.metadata_version,
              new.uploaded_by_token_id, new.metadata_sha256, new.description,
              new.description_content_type)
    params = {f"p{i}": v for i, v in enumerate(values)}
    call = ("SELECT * FROM pypireg_record_file("
            + ", ".join(f"%(p{i})s" for i in range(len(values))) + ")")
    # The release's spelling (a PEP 440 equal version joins an existing
    # release) and the row's id are known only from the call's row.
    event = Event("package_file.upload", "package_file", None, new.filename,
                  project_id=new.project_id, details={
                      "name": new.name, "filename": new.filename,
                      "packagetype": new.packagetype, "sha256": new.sha256, "size": new.size})
    query, params = with_event(call, params, actor, event, target_id="c.o_file_id",
                               details="jsonb_build_object('version', c.o_version)")
    try:
        # One statement, so one transaction: the row and its event, or neither.
        row = await db.fetch_one(query, params)
    except psycopg2.Error as e:
        # The functions raise the detail (an upstream's or namespace's name) as their message.
        detail = (e.diag.message_primary or "") if e.diag else ""
        if e.pgcode == _UPSTREAM_NAME:
            raise Conflict(
                f"{new.name} comes from the upstream {detail!r} in this project, so it cannot "
                "be uploaded here (that is how dependency confusion starts). An admin can "
                f"make it local: pypireg name claim PROJECT {new.name}") from None
        if e.pgcode == _FOREIGN_NAMESPACE:
            raise Conflict(
                f"{new.name} is in the namespace {detail!r}, which is granted to another "
                "project or group (PEP 752); upload it there, or choose another name."
            ) from None
        if e.pgcode == _DUPLICATE_FILE:
            raise FileExists(new.filename) from None
        raise
    assert row is not None
    file_id, package_id, display_name, uploaded_at, version = row
    return PackageFile(
        id=file_id, package_id=package_id, name=new.name, display_name=display_name,
        version=version, filename=new.filename, packagetype=new.packagetype,
        python_version=new.python_version, size=new.size, sha256=new.sha256, md5=new.md5,
        blake2_256=new.blake2_256, requires_python=new.requires_python, summary=new.summary,
        metadata_version=new.metadata_version, uploaded_at=uploaded_at,
        uploaded_by_token_id=new.uploaded_by_token_id, metadata_sha256=new.metadata_sha256,
        yanked=False, yanked_reason=None,
    )


def _ids(projects: int | Sequence[int]) -> list[int]:
    """One project, or several (a group's index reads across its projects)."""
    return [projects] if isinstance(projects, int) else list(projects)


async def list_packages(db: Database, projects: int | Sequence[int]) -> list[PackageSummary]:
    """Packages with at least one file, once each by normalised name."""
    rows = await db.fetch_all(
        "SELECT p.name, min(p.display_name) FROM packages p WHERE p.project_id = ANY(%s)"
        " AND EXISTS (SELECT 1 FROM package_files f WHERE f.package_id = p.id)"
        " GROUP BY p.name ORDER BY p.name",
        (_ids(projects),),
    )
    return [PackageSummary(*r) for r in rows]


async def list_files(db: Database, projects: int | Sequence[int], name: str
                     ) -> list[PackageFile]:
    """The files of package *name* (normalised): the newest row per file name."""
    rows = await db.fetch_all(
        f"SELECT DISTINCT ON (f.filename) {_FILE_COLUMNS}"
        " FROM package_files f JOIN packages p ON p.id = f.package_id"
        " WHERE p.project_id = ANY(%s) AND p.name = %s"
        " ORDER BY f.filename, f.id DESC",
        (_ids(projects), name),
    )
    return [_file(r) for r in rows]


async def find_file(db: Database, projects: int | Sequence[int], sha256: str, filename: str
                    ) -> PackageFile | None:
    """The newest row of *filename* with this content in the project(s), if any."""
    row = await db.fetch_one(
        f"SELECT {_FILE_COLUMNS} FROM package_files f JOIN packages p ON p.id = f.package_id"
        " WHERE p.project_id = ANY(%s) AND f.sha256 = %s AND f.filename = %s"
        " ORDER BY f.id DESC LIMIT 1",
        (_ids(projects), sha256, filename),
    )
    return _file(row) if row else None


async def files_named(db: Database, project_id: int, filename: str) -> list[PackageFile]:
    """Every row (duplicates included) of *filename* in the project."""
    rows = await db.fetch_all(
        f"SELECT {_FILE_COLUMNS} FROM package_files f JOIN packages p ON p.id = f.package_id"
        " WHERE p.project_id = %s AND f.filename = %s ORDER BY f.id",
        (project_id, filename),
    )
    return [_file(r) for r in rows]


async def all_files(db: Database, project_id: int) -> list[PackageFile]:
    """The newest row of every file name in the project."""
    rows = await db.fetch_all(
        f"SELECT DISTINCT ON (f.filename) {_FILE_COLUMNS}"
        " FROM package_files f JOIN packages p ON p.id = f.package_id"
        " WHERE p.project_id = %s ORDER BY f.filename, f.id DESC",
        (project_id,),
    )
    return [_file(r) for r in rows]


async def set_yanked(db: Database, project_id: int, name: str, version: str, *, yanked: bool,
                     reason: str | None = None, actor: Actor | None = None) -> int:
    """Yank (or unyank) every file of one release; return how many files changed.

    *version* names the release as PEP 440 compares (1.0.0 is release 1.0).
    A release with no files changes nothing and records nothing.
    """
    reason = reason if yanked else None

    def event(rows: list[tuple[Any, ...]]) -> Event | None:
        if not rows:
            return None
        files = sorted(r[1] for r in rows)
        return Event("release.yank" if yanked else "release.unyank", "release",
                     rows[0][2], f"{name} {version}", project_id=project_id, details={
                         "name": name, "version": version, "files": files, "reason": reason})

    rows = await audited(db, actor, lambda cur: fetch_all(
        cur, "UPDATE package_files f SET yanked = %s, yanked_reason = %s FROM packages p"
        " WHERE p.id = f.package_id AND p.project_id = %s AND p.name = %s"
        " AND pypireg_release_key(f.version) = pypireg_release_key(%s)"
        " RETURNING f.id, f.filename,"
        " (SELECT v.id FROM package_versions v WHERE v.package_id = p.id"
        "  AND v.version = f.version)",
        (yanked, reason, project_id, name, version)), event)
    return len(rows)


async def files_without_metadata(db: Database, after_id: int = 0, limit: int = 500
                                 ) -> list[PackageFile]:
    """Files with no core metadata recorded, by id (for the backfill)."""
    rows = await db.fetch_all(
        f"SELECT {_FILE_COLUMNS} FROM package_files f JOIN packages p ON p.id = f.package_id"
        " WHERE f.metadata_sha256 IS NULL AND f.id > %s ORDER BY f.id LIMIT %s",
        (after_id, limit),
    )
    return [_file(r) for r in rows]


async def set_metadata_sha256(db: Database, sha256: str, metadata_sha256: str) -> None:
    await db.execute(
        "UPDATE package_files SET metadata_sha256 = %s WHERE sha256 = %s", (metadata_sha256, sha256)
    )


@dataclass(frozen=True)
class FileBlobs:
    """A file row and the blobs it names: what fsck checks against the blob store."""

    id: int
    project_id: int
    filename: str
    sha256: str
    size: int
    metadata_sha256: str | None


async def all_file_blobs(db: Database) -> list[FileBlobs]:
    """Every file row of every project (duplicates included), by id."""
    rows = await db.fetch_all(
        "SELECT f.id, p.project_id, f.filename, f.sha256, f.size, f.metadata_sha256"
        " FROM package_files f JOIN packages p ON p.id = f.package_id ORDER BY f.id"
    )
    return [FileBlobs(*r) for r in rows]


async def delete_files(db: Database, file_ids: Sequence[int], *, actor: Actor | None = None
                       ) -> None:
    """Delete these file rows (fsck's repair of rows whose blob is lost); one event a project."""

    def events(rows: list[tuple[Any, ...]]) -> list[Event]:
        by_project: dict[int, list[str]] = {}
        for project_id, filename in rows:
            by_project.setdefault(project_id, []).append(filename)
        return [Event("package_file.repair", "package_file", None,
                      f"{len(names)} file{'' if len(names) == 1 else 's'}",
                      project_id=project_id, details={"files": sorted(names)})
                for project_id, names in sorted(by_project.items())]

    await audited(db, actor, lambda cur: fetch_all(
        cur, "DELETE FROM package_files f USING packages p WHERE f.id = ANY(%s)"
        " AND p.id = f.package_id RETURNING p.project_id, f.filename", (list(file_ids),)),
        events)


async def clear_metadata_sha256(db: Database, file_ids: Sequence[int]) -> None:
    """Forget the core metadata of these file rows; the backfill can extract it again."""
    await db.execute("UPDATE package_files SET metadata_sha256 = NULL WHERE id = ANY(%s)",
                     (list(file_ids),))
