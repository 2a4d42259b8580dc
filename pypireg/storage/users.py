"""Users and their project memberships (GitLab's roles).

Storage layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg2

from pypireg.storage.database import Database, id_or_path

Role = Literal["reporter", "developer", "maintainer"]
ROLES: tuple[Role, ...] = ("reporter", "developer", "maintainer")
_COLUMNS = "id, username, blocked, created_at"


class UserExists(Exception):
    """A user with that name exists already."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    blocked: bool
    created_at: datetime


def _user(row: tuple[Any, ...]) -> User:
    return User(*row)


async def create_user(db: Database, username: str) -> User:
    try:
        row = await db.fetch_one(
            f"INSERT INTO users (username) VALUES (%s) RETURNING {_COLUMNS}", (username,))
    except psycopg2.IntegrityError:
        raise UserExists(username) from None
    assert row is not None
    return _user(row)


async def get_user(db: Database, ref: str) -> User | None:
    """By numeric id or by user name (case-insensitively)."""
    condition = id_or_path(ref, "username")
    if condition is None:
        return None
    row = await db.fetch_one(f"SELECT {_COLUMNS} FROM users WHERE {condition[0]}",
                             condition[1])
    return _user(row) if row else None


async def list_users(db: Database) -> list[User]:
    return [_user(r) for r in await db.fetch_all(f"SELECT {_COLUMNS} FROM users ORDER BY id")]


async def set_blocked(db: Database, user_id: int, blocked: bool) -> None:
    await db.execute("UPDATE users SET blocked = %s WHERE id = %s", (blocked, user_id))


async def add_member(db: Database, project_id: int, user_id: int, role: Role) -> None:
    """Add a member, or change the role of one."""
    await db.execute(
        "INSERT INTO members (project_id, user_id, role) VALUES (%s, %s, %s)"
        " ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        (project_id, user_id, role),
    )


async def remove_member(db: Database, project_id: int, user_id: int) -> bool:
    rows = await db.fetch_all(
        "DELETE FROM members WHERE project_id = %s AND user_id = %s RETURNING user_id",
        (project_id, user_id))
    return bool(rows)


async def list_members(db: Database, project_id: int) -> list[tuple[User, Role]]:
    rows = await db.fetch_all(
        "SELECT u.id, u.username, u.blocked, u.created_at, m.role FROM members m"
        " JOIN users u ON u.id = m.user_id WHERE m.project_id = %s ORDER BY u.username",
        (project_id,))
    return [(_user(r[:4]), r[4]) for r in rows]


async def roles_of(db: Database, user_id: int, project_ids: Sequence[int]) -> dict[int, Role]:
    """The user's role in each of these projects where it is an unblocked member."""
    rows = await db.fetch_all(
        "SELECT m.project_id, m.role FROM members m JOIN users u ON u.id = m.user_id"
        " WHERE m.user_id = %s AND m.project_id = ANY(%s) AND NOT u.blocked",
        (user_id, list(project_ids)))
    return {r[0]: r[1] for r in rows}


async def is_blocked(db: Database, user_id: int) -> bool:
    row = await db.fetch_one("SELECT blocked FROM users WHERE id = %s", (user_id,))
    return row is None or bool(row[0])
