"""Groups and the projects under them.

Storage layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2

from pypireg.storage.database import Database, id_or_path
from pypireg.storage.projects import _COLUMNS as _PROJECT_COLUMNS
from pypireg.storage.projects import Project

_COLUMNS = "id, path, public, created_at"


class GroupExists(Exception):
    """A group with that path exists already."""


@dataclass(frozen=True)
class Group:
    id: int
    path: str
    public: bool
    created_at: datetime


def _group(row: tuple[Any, ...]) -> Group:
    return Group(*row)


async def create_group(db: Database, path: str, *, public: bool = False) -> Group:
    try:
        row = await db.fetch_one(
            f"INSERT INTO groups (path, public) VALUES (%s, %s) RETURNING {_COLUMNS}",
            (path, public),
        )
    except psycopg2.IntegrityError:
        raise GroupExists(path) from None
    assert row is not None
    return _group(row)


async def get_group(db: Database, ref: str) -> Group | None:
    """Find a group by numeric id or by path (case-insensitively)."""
    condition = id_or_path(ref)
    if condition is None:
        return None
    row = await db.fetch_one(f"SELECT {_COLUMNS} FROM groups WHERE {condition[0]}",
                             condition[1])
    return _group(row) if row else None


async def list_groups(db: Database) -> list[Group]:
    return [_group(r) for r in await db.fetch_all(f"SELECT {_COLUMNS} FROM groups ORDER BY id")]


async def update_group(db: Database, group_id: int, *, public: bool) -> Group:
    row = await db.fetch_one(
        f"UPDATE groups SET public = %s WHERE id = %s RETURNING {_COLUMNS}", (public, group_id))
    assert row is not None
    return _group(row)


async def projects_in_group(db: Database, group: Group) -> list[Project]:
    """Projects under the group's path, subgroups included."""
    # LIKE treats "_" and "%" as wildcards; paths may contain "_".
    escaped = group.path.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    prefix = escaped + "/%"
    rows = await db.fetch_all(
        f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE lower(path) LIKE %s ORDER BY id",
        (prefix,),
    )
    return [Project(*r) for r in rows]
