"""`pypireg group create|list|update`: groups, read-only indexes over a path.

Composition layer: argparse in, storage calls, text or JSON out. Which
upstreams an index includes is index_upstreams.py's.
"""

from __future__ import annotations

import argparse
from typing import Any

from pypireg.admin import index_upstreams
from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import render, table, visibility
from pypireg.admin.projects import create_at_path
from pypireg.storage import groups as group_store
from pypireg.storage.groups import Group, GroupExists

_HEADERS = ["ID", "PATH", "VISIBILITY", "UPSTREAMS"]


def add_parsers(sub: Subparsers) -> None:
    group = add_group(sub, "group", "manage groups (read-only aggregate indexes)")
    create = add_command(group, "create", _create, help="create a group; prints its id")
    create.add_argument("name",
                        help="group path, e.g. acme; projects under acme/ belong to it")
    create.add_argument("--public", action="store_true",
                        help="its index is readable without a token (public projects only)")
    add_command(group, "list", _list, help="list groups")
    change = add_command(group, "update", _update,
                         help="change a group's visibility or the upstreams its index includes")
    change.add_argument("name", help="group path or id")
    change.add_argument("--public", dest="public", action="store_true", default=None)
    change.add_argument("--private", dest="public", action="store_false")
    index_upstreams.add_options(change)


def _row(g: Group, upstreams: list[str] | None) -> dict[str, Any]:
    # upstreams: None is every configured upstream, [] none (as stored).
    return {"id": g.id, "path": g.path, "public": g.public, "upstreams": upstreams}


def _cells(g: Group, upstreams: list[str] | None) -> tuple[int, str, str, str]:
    return g.id, g.path, visibility(g.public), index_upstreams.describe(upstreams)


async def _create(ctx: CommandContext, args: argparse.Namespace) -> str:
    g = await create_at_path(
        "group", args.name, lambda: group_store.create_group(ctx.db, args.name, public=args.public,
                                                  actor=ctx.actor),
        GroupExists)
    # A new group includes every configured upstream (its list is NULL).
    return render(ctx.as_json, _row(g, None), str(g.id))


async def _list(ctx: CommandContext, args: argparse.Namespace) -> str:
    groups = await group_store.list_groups(ctx.db)
    # A group created since list_groups has no entry, and the default.
    upstreams = await index_upstreams.by_id(ctx.db, "group")
    return render(ctx.as_json, [_row(g, upstreams.get(g.id)) for g in groups],
                  table([_cells(g, upstreams.get(g.id)) for g in groups], _HEADERS))


async def _update(ctx: CommandContext, args: argparse.Namespace) -> str:
    # Checked first, so that a bad name changes nothing.
    choice = index_upstreams.chosen(ctx.config, args)
    g = await group_store.get_group(ctx.db, args.name)
    if g is None:
        raise CommandError(f"no group {args.name!r}; see `pypireg group list`")
    if args.public is not None:
        g = await group_store.update_group(ctx.db, g.id, public=args.public, actor=ctx.actor)
    upstreams = await index_upstreams.apply(ctx.db, choice, ctx.actor, group_id=g.id)
    return render(ctx.as_json, _row(g, upstreams), table([_cells(g, upstreams)], _HEADERS))
