"""Where each package name of a project comes from, and PEP 752 namespace grants.

Storage layer. A name's origin is fixed when it first arrives (schema/0012
says why): the first upload records it as local inside the upload's own
statement (packages.record_file), the upstream proxy records upstream
names, and an admin may reserve or claim a name for local use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg2

from pypireg.domain.audit import Actor, Event
from pypireg.storage.audit import audited, fetch_all, fetch_one
from pypireg.storage.database import Cursor, Database

Origin = Literal["local", "upstream"]
_ORIGIN_COLUMNS = "project_id, name, origin, upstream, reason, decided_at"
_NAMESPACE_COLUMNS = "n.id, n.prefix, n.display, n.project_id, n.group_id, n.granted_at"


@dataclass(frozen=True)
class NameOrigin:
    project_id: int
    name: str
    origin: Origin
    upstream: str | None
    reason: str
    decided_at: datetime


@dataclass(frozen=True)
class Namespace:
    id: int
    prefix: str
    display: str
    project_id: int | None
    group_id: int | None
    granted_at: datetime
    # The owner's path, for messages and PEP 752's `owner`.
    owner: str


class NamespaceTaken(Exception):
    """Another owner holds that prefix already."""


class ForeignNamespace(Exception):
    """The name lies in a namespace granted to another owner."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.namespace = namespace


def _origin(row: tuple[Any, ...]) -> NameOrigin:
    return NameOrigin(*row)


async def get_origin(db: Database, project_id: int, name: str) -> NameOrigin | None:
    row = await db.fetch_one(
        f"SELECT {_ORIGIN_COLUMNS} FROM name_origins WHERE project_id = %s AND name = %s",
        (project_id, name))
    return _origin(row) if row else None


async def list_origins(db: Database, project_id: int) -> list[NameOrigin]:
    rows = await db.fetch_all(
        f"SELECT {_ORIGIN_COLUMNS} FROM name_origins WHERE project_id = %s"
        ' ORDER BY name COLLATE "C"', (project_id,))
    return [_origin(r) for r in rows]


def _name_event(action: str, project_id: int, name: str, details: dict[str, Any]
                ) -> Event:
    return Event(action, "name", None, name, project_id=project_id, details=details)


async def reserve_name(db: Database, project_id: int, name: str, *,
                       actor: Actor | None = None) -> NameOrigin:
    """Make *name* local to the project without an upload; its current origin if it has one.

    Raises ForeignNamespace if the name lies in another owner's namespace.
    Only a reservation that changed something is recorded.
    """
    namespace = await foreign_namespace(db, project_id, name)
    if namespace is not None:
        raise ForeignNamespace(namespace)
    await audited(db, actor, lambda cur: fetch_all(
        cur, "INSERT INTO name_origins (project_id, name, origin, reason)"
        " VALUES (%s, %s, 'local', 'reserved') ON CONFLICT DO NOTHING RETURNING name",
        (project_id, name)), lambda rows: [
            _name_event("name.reserve", project_id, name, {"origin": "local"}) for _ in rows])
    found = await get_origin(db, project_id, name)
    assert found is not None
    return found


async def claim_name(db: Database, project_id: int, name: str, *,
                     actor: Actor | None = None) -> NameOrigin:
    """Make *name* local to the project whatever its origin was (an admin's decision)."""

    async def change(cur: Cursor) -> tuple[tuple[Any, ...] | None, NameOrigin]:
        before = await fetch_one(
            cur, "SELECT origin, upstream FROM name_origins WHERE project_id = %s AND name = %s"
            " FOR UPDATE", (project_id, name))
        row = await fetch_one(
            cur, "INSERT INTO name_origins (project_id, name, origin, reason)"
            " VALUES (%s, %s, 'local', 'claimed')"
            " ON CONFLICT (project_id, name) DO UPDATE SET origin = 'local', upstream = NULL,"
            " reason = 'claimed', decided_at = now()"
            f" RETURNING {_ORIGIN_COLUMNS}", (project_id, name))
        assert row is not None
        return before, _origin(row)

    def event(result: tuple[tuple[Any, ...] | None, NameOrigin]) -> Event:
        before = result[0] or (None, None)
        return _name_event("name.claim", project_id, name, {
            "changes": {"origin": {"from": before[0], "to": "local"}},
            "upstream": before[1]})

    return (await audited(db, actor, change, event))[1]


async def record_upstream_origin(db: Database, project_id: int, name: str, upstream: str
                                 ) -> NameOrigin:
    """The first time *name* is served from *upstream*: fix that origin (unless one exists)."""
    # One round trip: the outer SELECT sees the table as it was before the
    # INSERT, so it is the row just made, else the one that was there...
    row = await db.fetch_one(
        "WITH made AS (INSERT INTO name_origins (project_id, name, origin, upstream, reason)"
        "  VALUES (%(p)s, %(n)s, 'upstream', %(u)s, 'proxied') ON CONFLICT DO NOTHING"
        f"  RETURNING {_ORIGIN_COLUMNS})"
        f" SELECT {_ORIGIN_COLUMNS} FROM made UNION ALL"
        f" SELECT {_ORIGIN_COLUMNS} FROM name_origins WHERE project_id = %(p)s AND name = %(n)s",
        {"p": project_id, "n": name, "u": upstream})
    if row is None:
        # ...unless another transaction made it meanwhile: the INSERT waited
        # for its commit, which the statement's snapshot predates.
        found = await get_origin(db, project_id, name)
        assert found is not None
        return found
    return _origin(row)


async def foreign_namespace(db: Database, project_id: int, name: str) -> str | None:
    """The namespace granted to another owner that contains *name*, if any."""
    row = await db.fetch_one("SELECT pypireg_foreign_namespace(%s, %s)", (project_id, name))
    return row[0] if row else None


_NAMESPACE_SELECT = (
    f"SELECT {_NAMESPACE_COLUMNS}, coalesce(p.path, g.path) FROM namespaces n"
    " LEFT JOIN projects p ON p.id = n.project_id LEFT JOIN groups g ON g.id = n.group_id"
)


def _namespace_event(action: str, n: Namespace) -> Event:
    return Event(action, "namespace", n.id, n.display, project_id=n.project_id,
                 group_id=n.group_id, details={"prefix": n.prefix, "owner": n.owner})


async def grant_namespace(db: Database, prefix: str, display: str, *,
                          project_id: int | None = None, group_id: int | None = None,
                          actor: Actor | None = None) -> Namespace:
    """Grant the (normalised) *prefix* to one project or one group."""
    assert (project_id is None) != (group_id is None)

    async def change(cur: Cursor) -> Namespace:
        row = await fetch_one(
            cur, "INSERT INTO namespaces (prefix, display, project_id, group_id)"
            " VALUES (%s, %s, %s, %s) RETURNING id", (prefix, display, project_id, group_id))
        assert row is not None
        found = await fetch_one(cur, _NAMESPACE_SELECT + " WHERE n.id = %s", (row[0],))
        assert found is not None
        return Namespace(*found)

    try:
        return await audited(db, actor, change,
                             lambda n: _namespace_event("namespace.grant", n))
    except psycopg2.IntegrityError:
        raise NamespaceTaken(prefix) from None


async def list_namespaces(db: Database) -> list[Namespace]:
    rows = await db.fetch_all(_NAMESPACE_SELECT + ' ORDER BY n.prefix COLLATE "C"')
    return [Namespace(*r) for r in rows]


async def revoke_namespace(db: Database, prefix: str, *, actor: Actor | None = None) -> bool:
    async def change(cur: Cursor) -> Namespace | None:
        found = await fetch_one(cur, _NAMESPACE_SELECT + " WHERE n.prefix = %s FOR UPDATE OF n",
                                (prefix,))
        await cur.execute("DELETE FROM namespaces WHERE prefix = %s", (prefix,))
        return Namespace(*found) if found else None

    revoked = await audited(db, actor, change,
                            lambda n: _namespace_event("namespace.revoke", n) if n else None)
    return revoked is not None


async def namespace_of(db: Database, name: str) -> Namespace | None:
    """The most specific namespace containing *name* (PEP 752: a child grant wins)."""
    row = await db.fetch_one(
        _NAMESPACE_SELECT + " WHERE %s = n.prefix OR starts_with(%s, n.prefix || '-')"
        " ORDER BY length(n.prefix) DESC LIMIT 1", (name, name))
    return Namespace(*row) if row else None


async def owned_namespace(db: Database, name: str, project_id: int) -> tuple[str, str] | None:
    """(namespace, owner) when *name* lies in a namespace granted to the project or its group."""
    row = await db.fetch_one(
        "SELECT n.prefix, coalesce(p.path, g.path) FROM namespaces n"
        " LEFT JOIN projects p ON p.id = n.project_id LEFT JOIN groups g ON g.id = n.group_id"
        " JOIN projects me ON me.id = %s"
        " WHERE (%s = n.prefix OR starts_with(%s, n.prefix || '-'))"
        " AND (n.project_id = me.id OR starts_with(lower(me.path), lower(g.path) || '/'))"
        " ORDER BY length(n.prefix) DESC LIMIT 1", (project_id, name, name))
    return (row[0], row[1]) if row else None
