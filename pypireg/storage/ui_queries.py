"""What the Packages web pages show: per-release summaries, files with uploaders, READMEs.

Storage layer. Like the simple index, readers see the newest row per file
name (a re-upload replaces the file it repeats); in a group, one package
name in several projects is listed once per project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pypireg.storage.database import Database

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
        "  ELSE t.description END, t.kind"
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
