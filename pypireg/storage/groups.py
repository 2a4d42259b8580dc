"""Groups and the projects under them.

Storage layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2

from pypireg.domain.audit import Actor, Event
from pypireg.storage.audit import audited, fetch_one
from pypireg.storage.database import Cursor, Database, id_or_path, path_prefix_pattern
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


async def _one_group(cur: Cursor, query: str, params: tuple[Any, ...]) -> Group:
    row = await fetch_one(cur, query, params)
    assert row is not None
    return _group(row)


async def create_group(db: Database, path: str, *, public: bool = False,
                       actor: Actor | None = None) -> Group:
    try:
        return await audited(db, actor, lambda cur: _one_group(
            cur, f"INSERT INTO groups (path, public) VALUES (%s, %s) RETURNING {_COLUMNS}",
            (path, public)), lambda g: Event("group.create", "group", g.id, g.path,
                                             group_id=g.id, details={"public": g.public}))
    except psycopg2.IntegrityError:
        raise GroupExists(path) from None


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


async def update_group(db: Database, group_id: int, *, public: bool,
                       actor: Actor | None = None) -> Group:
    async def change(cur: Cursor) -> tuple[bool, Group]:
        before = await fetch_one(cur, "SELECT public FROM groups WHERE id = %s FOR UPDATE",
                                 (group_id,))
        assert before is not None
        return before[0], await _one_group(
            cur, f"UPDATE groups SET public = %s WHERE id = %s RETURNING {_COLUMNS}",
            (public, group_id))

    def event(result: tuple[bool, Group]) -> Event | None:
        was, g = result
        return None if was == g.public else Event(
            "group.update", "group", g.id, g.path, group_id=g.id,
            details={"changes": {"public": {"from": was, "to": g.public}}})

    return (await audited(db, actor, change, event))[1]


async def projects_in_group(db: Database, group: Group) -> list[Project]:
    """Projects under the group's path, subgroups included."""
    prefix = path_prefix_pattern(group.path)
    rows = await db.fetch_all(
        f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE lower(path) LIKE %s ORDER BY id",
        (prefix,),
    )
    return [Project(*r) for r in rows]
