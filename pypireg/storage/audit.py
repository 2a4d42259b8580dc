"""Audit events: written in the transaction of the change they record, read back by filters.

Storage layer. Every storage function that changes something an operator
audits takes an `actor` (domain/audit.py) and runs its change through
`audited`: the change and its events are one transaction, so a change
never commits without its event and a change that rolls back leaves none.
`actor=None` records nothing; only tests' set-up passes it (the admin
command and the HTTP routes always pass one; tests/test_audit.py checks
every call in pypireg/ does).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pypireg.domain.audit import Actor, Event
from pypireg.storage.database import Cursor, Database, Page, path_prefix_pattern

T = TypeVar("T")

_EVENT_COLUMNS = ("project_id, project_path, group_id, group_path, action, actor_kind,"
                  " actor_token_id, actor_token_kind, actor_user_id, actor_name, client_address,"
                  " target_type, target_id, target_details, details")


def _event_values(prefix: str = "", *, target_id: str | None = None, details: str | None = None
                  ) -> str:
    """An event's values from parameters named *prefix* + key (see _params).

    *target_id* (an SQL expression) stands in for the parameter; *details*
    (a jsonb expression) is added to the parameter's details.
    """
    def p(key: str) -> str:
        return f"%({prefix}{key})s"

    return (f"{p('project_id')}, (SELECT path FROM projects WHERE id = {p('project_id')}),"
            f" {p('group_id')}, (SELECT path FROM groups WHERE id = {p('group_id')}),"
            f" {p('action')}, {p('actor_kind')}, {p('token_id')}, {p('token_kind')},"
            f" {p('user_id')},"
            f" coalesce({p('name')}, (SELECT username FROM users WHERE id = {p('user_id')})),"
            f" {p('client')}, {p('target_type')}, {target_id or p('target_id')},"
            f" {p('target_details')}, {p('details')}::jsonb"
            + (f" || {details}" if details else ""))


_INSERT = f"INSERT INTO audit_events ({_EVENT_COLUMNS}) VALUES ({_event_values()})"
_COLUMNS = ("id, created_at, project_id, project_path, group_id, group_path, action,"
            " actor_kind, actor_token_id, actor_token_kind, actor_user_id, actor_name,"
            " client_address, target_type, target_id, target_details, details")


@dataclass(frozen=True)
class AuditRecord:
    """One stored event."""

    id: int
    created_at: datetime
    project_id: int | None
    project_path: str | None
    group_id: int | None
    group_path: str | None
    action: str
    actor: Actor
    target_type: str
    target_id: int | None
    target_details: str
    details: dict[str, Any]


def _record(row: tuple[Any, ...]) -> AuditRecord:
    (id_, created_at, project_id, project_path, group_id, group_path, action, kind, token_id,
     token_kind, user_id, name, client, target_type, target_id, target_details, details) = row
    return AuditRecord(id_, created_at, project_id, project_path, group_id, group_path, action,
                       Actor(kind, token_id, token_kind, user_id, name, client), target_type,
                       target_id, target_details, details)


def _params(actor: Actor, event: Event) -> dict[str, Any]:
    return {
        "project_id": event.project_id, "group_id": event.group_id,
        "action": event.action, "actor_kind": actor.kind, "token_id": actor.token_id,
        "token_kind": actor.token_kind, "user_id": actor.user_id, "name": actor.name,
        "client": actor.client, "target_type": event.target_type,
        "target_id": event.target_id, "target_details": event.target_details,
        "details": json.dumps(dict(event.details), default=str),
    }


async def insert_events(cur: Cursor, actor: Actor, events: Sequence[Event]) -> None:
    """Write *events* by *actor* in the transaction *cur* is in."""
    for event in events:
        await cur.execute(_INSERT, _params(actor, event))


def with_event(change: str, params: dict[str, Any], actor: Actor | None, event: Event, *,
               target_id: str, details: str) -> tuple[str, dict[str, Any]]:
    """*change* (a query of one row) and *event*'s insert as one statement.

    For the upload path: one round trip where a transaction takes four.
    The change's row is `c` in the SQL expressions *target_id* (the event's
    target id) and *details* (a jsonb added to the event's details), for
    what only the change knows. The outer SELECT returns the change's row.
    Parameter names starting with `audit_` are this function's.
    """
    if actor is None:
        return change, params
    values = {f"audit_{k}": v for k, v in _params(actor, event).items()}
    insert = (f"INSERT INTO audit_events ({_EVENT_COLUMNS}) SELECT"
              f" {_event_values('audit_', target_id=target_id, details=details)} FROM c")
    return f"WITH c AS ({change}), e AS ({insert}) SELECT * FROM c", {**params, **values}


def _as_list(events: Event | Sequence[Event] | None) -> Sequence[Event]:
    if events is None:
        return ()
    return (events,) if isinstance(events, Event) else events


async def audited(db: Database, actor: Actor | None, change: Callable[[Cursor], Awaitable[T]],
                  events: Callable[[T], Event | Sequence[Event] | None]) -> T:
    """Run *change* and write the *events* of its result, in one transaction.

    *events* may return none (nothing changed: a revoke of a revoked token).
    With no *actor* nothing is written (tests' set-up).
    """

    async def body(cur: Cursor) -> T:
        result = await change(cur)
        if actor is not None:
            await insert_events(cur, actor, _as_list(events(result)))
        return result

    return await db.run_interaction(body)


async def fetch_one(cur: Cursor, query: str, params: Sequence[Any] | dict[str, Any] = ()
                    ) -> tuple[Any, ...] | None:
    """One row of *query* in a transaction (the cursor's fetch_one)."""
    await cur.execute(query, params)
    return cur.fetchone()


async def fetch_all(cur: Cursor, query: str, params: Sequence[Any] | dict[str, Any] = ()
                    ) -> list[tuple[Any, ...]]:
    await cur.execute(query, params)
    return cur.fetchall()


@dataclass(frozen=True)
class EventFilter:
    """Which events to list; every field given narrows it.

    *project_id* also finds the events of a deleted project by
    *project_path* when both are given; *group_path* finds the group's
    own events and those of the projects under it.
    """

    project_id: int | None = None
    project_path: str | None = None
    group_id: int | None = None
    group_path: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _where(f: EventFilter) -> tuple[str, dict[str, Any]]:
    where = ["TRUE"]
    params: dict[str, Any] = {"project_id": f.project_id, "project_path": f.project_path,
                              "group_id": f.group_id, "since": f.since, "until": f.until}
    if f.project_id is not None:
        where.append("project_id = %(project_id)s")
    elif f.project_path is not None:
        where.append("lower(project_path) = lower(%(project_path)s)")
    if f.group_path is not None:
        params["group_pattern"] = path_prefix_pattern(f.group_path)
        where.append("(group_id = %(group_id)s OR lower(group_path) = lower(%(group_path)s)"
                     " OR lower(project_path) LIKE %(group_pattern)s)")
        params["group_path"] = f.group_path
    if f.since is not None:
        where.append("created_at >= %(since)s")
    if f.until is not None:
        where.append("created_at <= %(until)s")
    return " AND ".join(where), params


async def list_events(db: Database, f: EventFilter, *, limit: int = 100, offset: int = 0
                      ) -> Page[AuditRecord]:
    """A page of the matching events, newest first, and how many match in all."""
    condition, params = _where(f)

    async def body(cur: Cursor) -> Page[AuditRecord]:
        counted = await fetch_one(cur, f"SELECT count(*) FROM audit_events WHERE {condition}",
                                  params)
        assert counted is not None
        rows = await fetch_all(
            cur, f"SELECT {_COLUMNS} FROM audit_events WHERE {condition}"
            " ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            {**params, "limit": limit, "offset": offset})
        return Page([_record(r) for r in rows], counted[0])

    return await db.run_interaction(body)


async def get_event(db: Database, project_id: int, event_id: int) -> AuditRecord | None:
    """One event of the project, by id."""
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM audit_events WHERE id = %s AND project_id = %s",
        (event_id, project_id))
    return _record(row) if row else None
