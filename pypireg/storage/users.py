"""Users and their project memberships (GitLab's roles).

Storage layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg2

from pypireg.domain.audit import Actor, Event
from pypireg.storage.audit import audited, fetch_all, fetch_one
from pypireg.storage.database import Cursor, Database, id_or_path

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


async def create_user(db: Database, username: str, *, actor: Actor | None = None) -> User:
    async def change(cur: Cursor) -> User:
        row = await fetch_one(
            cur, f"INSERT INTO users (username) VALUES (%s) RETURNING {_COLUMNS}", (username,))
        assert row is not None
        return _user(row)

    try:
        return await audited(db, actor, change,
                             lambda u: Event("user.create", "user", u.id, u.username))
    except psycopg2.IntegrityError:
        raise UserExists(username) from None


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


async def set_blocked(db: Database, user_id: int, blocked: bool, *,
                      actor: Actor | None = None) -> None:
    # Blocking a blocked user changes nothing, and records nothing.
    await audited(db, actor, lambda cur: fetch_all(
        cur, "UPDATE users SET blocked = %s WHERE id = %s AND blocked <> %s RETURNING username",
        (blocked, user_id, blocked)), lambda rows: [
            Event("user.block" if blocked else "user.unblock", "user", user_id, r[0])
            for r in rows])


def _member_event(action: str, project_id: int, user_id: int, username: str,
                  details: dict[str, Any]) -> Event:
    return Event(action, "member", user_id, username, project_id=project_id,
                 details={"user_id": user_id, "username": username, **details})


async def add_member(db: Database, project_id: int, user_id: int, role: Role, *,
                     actor: Actor | None = None) -> None:
    """Add a member, or change the role of one."""

    async def change(cur: Cursor) -> tuple[Any, ...]:
        # The old role (NULL: a new member), read under the row's lock.
        row = await fetch_one(
            cur, "SELECT u.username, m.role FROM users u LEFT JOIN members m"
            " ON m.user_id = u.id AND m.project_id = %s WHERE u.id = %s FOR UPDATE OF u",
            (project_id, user_id))
        assert row is not None
        await cur.execute(
            "INSERT INTO members (project_id, user_id, role) VALUES (%s, %s, %s)"
            " ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role",
            (project_id, user_id, role))
        return row

    def event(row: tuple[Any, ...]) -> Event | None:
        username, was = row
        if was is None:
            return _member_event("member.add", project_id, user_id, username, {"role": role})
        if was == role:
            return None
        return _member_event("member.update", project_id, user_id, username,
                             {"changes": {"role": {"from": was, "to": role}}})

    await audited(db, actor, change, event)


async def remove_member(db: Database, project_id: int, user_id: int, *,
                        actor: Actor | None = None) -> bool:
    rows = await audited(db, actor, lambda cur: fetch_all(
        cur, "DELETE FROM members m USING users u WHERE m.project_id = %s AND m.user_id = %s"
        " AND u.id = m.user_id RETURNING u.username, m.role", (project_id, user_id)),
        lambda rows: [_member_event("member.remove", project_id, user_id, r[0],
                                    {"role": r[1]}) for r in rows])
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
