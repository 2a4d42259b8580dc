"""Projects: the unit of access and of package namespaces.

Storage layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2

from pypireg.domain.audit import Actor, Event, changes
from pypireg.storage.audit import audited, fetch_one
from pypireg.storage.database import Cursor, Database, id_or_path

_COLUMNS = "id, path, public, packages_enabled, reject_duplicates, created_at, keep_duplicates"


class ProjectExists(Exception):
    """A project with that path exists already."""


@dataclass(frozen=True)
class Project:
    id: int
    path: str
    public: bool
    packages_enabled: bool
    reject_duplicates: bool
    created_at: datetime
    # How many files of each file name to keep, newest first (GitLab's
    # "duplicated assets to keep"); None keeps every re-upload.
    keep_duplicates: int | None = None


def _project(row: tuple[Any, ...]) -> Project:
    return Project(*row)


def settings(p: Project) -> dict[str, Any]:
    """A project's settings as its audit events record them."""
    return {"public": p.public, "packages_enabled": p.packages_enabled,
            "reject_duplicates": p.reject_duplicates, "keep_duplicates": p.keep_duplicates}


async def create_project(db: Database, path: str, *, public: bool = False,
                         actor: Actor | None = None) -> Project:
    async def change(cur: Cursor) -> Project:
        row = await fetch_one(
            cur, f"INSERT INTO projects (path, public) VALUES (%s, %s) RETURNING {_COLUMNS}",
            (path, public))
        assert row is not None
        return _project(row)

    try:
        return await audited(db, actor, change, lambda p: Event(
            "project.create", "project", p.id, p.path, project_id=p.id, details=settings(p)))
    except psycopg2.IntegrityError:
        raise ProjectExists(path) from None


async def get_project(db: Database, ref: str) -> Project | None:
    """Find a project by numeric id or by path (compared case-insensitively)."""
    condition = id_or_path(ref)
    if condition is None:
        return None
    row = await db.fetch_one(f"SELECT {_COLUMNS} FROM projects WHERE {condition[0]}",
                             condition[1])
    return _project(row) if row else None


async def list_projects(db: Database) -> list[Project]:
    rows = await db.fetch_all(f"SELECT {_COLUMNS} FROM projects ORDER BY id")
    return [_project(r) for r in rows]


async def update_project(
    db: Database,
    project_id: int,
    *,
    public: bool | None = None,
    packages_enabled: bool | None = None,
    reject_duplicates: bool | None = None,
    keep_duplicates: int | None = None,
    keep_all_duplicates: bool = False,
    actor: Actor | None = None,
) -> Project:
    """Change the settings given (None leaves one as it is), in one statement.

    *keep_duplicates* sets the duplicate cleanup policy to that many files
    per file name; *keep_all_duplicates* turns it off (None in the column is
    "keep all", so it cannot double as "unchanged").
    """
    if keep_all_duplicates and keep_duplicates is not None:
        raise ValueError("keep_duplicates and keep_all_duplicates contradict each other")
    query = (
        "UPDATE projects SET public = coalesce(%s, public),"
        " packages_enabled = coalesce(%s, packages_enabled),"
        " reject_duplicates = coalesce(%s, reject_duplicates),"
        " keep_duplicates = CASE WHEN %s THEN NULL ELSE coalesce(%s, keep_duplicates) END"
        f" WHERE id = %s RETURNING {_COLUMNS}")
    params = (public, packages_enabled, reject_duplicates, keep_all_duplicates,
              keep_duplicates, project_id)

    async def change(cur: Cursor) -> tuple[Project, Project]:
        before = await fetch_one(cur, f"SELECT {_COLUMNS} FROM projects WHERE id = %s"
                                 " FOR UPDATE", (project_id,))
        after = await fetch_one(cur, query, params)
        assert before is not None and after is not None
        return _project(before), _project(after)

    def event(result: tuple[Project, Project]) -> Event | None:
        before, after = result
        changed = changes(settings(before), settings(after))
        return Event("project.update", "project", after.id, after.path, project_id=after.id,
                     details={"changes": changed}) if changed else None

    return (await audited(db, actor, change, event))[1]
