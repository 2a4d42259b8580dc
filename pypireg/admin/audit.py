"""`pypireg audit`: the audit events, newest first, filtered by project, group and time.

Composition layer. The events are written by storage with every change
(storage/audit.py); this lists them as a table or, with `--json`, as
records with every field. A project or group that no longer exists is
still found by its path, which its events keep.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.admin.output import iso, render, table
from pypireg.domain.audit import parse_since
from pypireg.storage import audit as audit_store
from pypireg.storage import groups as group_store
from pypireg.storage import projects as project_store
from pypireg.storage.audit import AuditRecord, EventFilter

DEFAULT_LIMIT = 50
_HEADERS = ["ID", "TIME", "PROJECT", "ACTION", "ACTOR", "CLIENT", "TARGET"]


def add_parsers(sub: Subparsers) -> None:
    audit = add_command(sub, "audit", _audit,
                        help="list audit events (uploads, deletes, tokens, settings), newest "
                             "first")
    audit.add_argument("--project", help="only this project's events (path or id)")
    audit.add_argument("--group", help="only this group's events and its projects' (path or id)")
    audit.add_argument("--since", metavar="WHEN",
                       help="only events since WHEN: a duration back from now (7d, 12h, 30m), "
                            "a date (2026-12-01) or an ISO time")
    audit.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                       help=f"at most N events (default {DEFAULT_LIMIT})")


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 100000")
    return int(text)


async def _filter(ctx: CommandContext, args: argparse.Namespace) -> EventFilter:
    """The filter the options ask for; raises CommandError for a place with no events."""
    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since, datetime.now(UTC))
        except ValueError as e:
            raise CommandError(f"--since: {e}") from None
    project_id = project_path = group_id = group_path = None
    if args.project is not None:
        project = await project_store.get_project(ctx.db, args.project)
        if project is not None:
            project_id, project_path = project.id, project.path
        else:
            project_path = await _gone(ctx, "project", args.project,
                                       EventFilter(project_path=args.project))
    if args.group is not None:
        group = await group_store.get_group(ctx.db, args.group)
        if group is not None:
            group_id, group_path = group.id, group.path
        else:
            group_path = await _gone(ctx, "group", args.group, EventFilter(group_path=args.group))
    return EventFilter(project_id, project_path, group_id, group_path, since)


async def _gone(ctx: CommandContext, kind: str, path: str, by_path: EventFilter) -> str:
    """*path*, a project or group that no longer exists but has events; else CommandError."""
    if not (await audit_store.list_events(ctx.db, by_path, limit=1)).total:
        # Neither a place that exists nor one that did: most likely a typo.
        raise CommandError(f"no {kind} {path!r}, and no events of one by that path; "
                           f"see `pypireg {kind} list`")
    return path


async def _audit(ctx: CommandContext, args: argparse.Namespace) -> str:
    page = await audit_store.list_events(ctx.db, await _filter(ctx, args), limit=args.limit)
    rows = [(e.id, iso(e.created_at), e.project_path or e.group_path, e.action,
             e.actor.description, e.actor.client, _target(e)) for e in page.items]
    text = table(rows, _HEADERS)
    if page.total > len(page.items):
        text += (f"\nShowing the newest {len(page.items)} of {page.total} events; "
                 "pass --limit or --since for others.")
    return render(ctx.as_json, [_document(e) for e in page.items], text)


def _target(e: AuditRecord) -> str:
    return f"{e.target_type} {e.target_details}".strip()


def _document(e: AuditRecord) -> dict[str, Any]:
    a = e.actor
    return {"id": e.id, "created_at": iso(e.created_at), "action": e.action,
            "project_id": e.project_id, "project_path": e.project_path,
            "group_id": e.group_id, "group_path": e.group_path,
            "actor": {"kind": a.kind, "token_id": a.token_id, "token_kind": a.token_kind,
                      "user_id": a.user_id, "name": a.name},
            "client_address": a.client, "target_type": e.target_type,
            "target_id": e.target_id, "target_details": e.target_details,
            "details": e.details}
