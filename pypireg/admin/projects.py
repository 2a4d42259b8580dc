"""`pypireg project create|list|update`: the registry's projects.

Composition layer: argparse in, storage calls, text or JSON out. Which
upstreams an index includes is index_upstreams.py's.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pypireg.admin import index_upstreams
from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import record_table, render, table, visibility
from pypireg.domain.names import is_valid_project_path
from pypireg.storage import projects as project_store
from pypireg.storage.projects import Project, ProjectExists


def add_parsers(sub: Subparsers) -> None:
    project = add_group(sub, "project", "manage projects")
    create = add_command(project, "create", _create, help="create a project; prints its id")
    create.add_argument("name", help="project path, e.g. acme or acme/tools")
    create.add_argument("--public", action="store_true", help="readable without a token")
    add_command(project, "list", _list, help="list projects")
    change = add_command(project, "update", _update, help="change a project's settings")
    change.add_argument("name", help="project path or id")
    change.add_argument("--public", dest="public", action="store_true", default=None)
    change.add_argument("--private", dest="public", action="store_false")
    change.add_argument("--packages-enabled", dest="packages_enabled", action="store_true",
                        default=None)
    change.add_argument("--packages-disabled", dest="packages_enabled", action="store_false")
    change.add_argument("--reject-duplicates", dest="reject_duplicates", action="store_true",
                        default=None, help="refuse re-uploads of an existing file name")
    change.add_argument("--allow-duplicates", dest="reject_duplicates", action="store_false")
    index_upstreams.add_options(change)


_T = TypeVar("_T")


async def create_at_path(kind: str, path: str, create: Callable[[], Awaitable[_T]],
                         exists: type[Exception]) -> _T:
    """Check *path*, then *create* the project or group (*kind*) there.

    Groups share the project path rules, so both are refused the same way.

    Raises:
        CommandError: *path* is not a valid project path, or *create* raised
            *exists*.
    """
    if not is_valid_project_path(path):
        raise CommandError(
            f"invalid {kind} path {path!r}: use segments of letters, digits, "
            "'.', '_' and '-' separated by '/'")
    try:
        return await create()
    except exists:
        raise CommandError(f"{kind} {path!r} exists already") from None


def _row(p: Project, upstreams: list[str] | None) -> dict[str, Any]:
    # upstreams: None is every configured upstream, [] none (as stored).
    return {"id": p.id, "path": p.path, "public": p.public,
            "packages_enabled": p.packages_enabled, "reject_duplicates": p.reject_duplicates,
            "upstreams": upstreams}


async def _create(ctx: CommandContext, args: argparse.Namespace) -> str:
    p = await create_at_path(
        "project", args.name,
        lambda: project_store.create_project(ctx.db, args.name, public=args.public),
        ProjectExists)
    # A new project includes every configured upstream (its list is NULL).
    return render(ctx.as_json, _row(p, None), str(p.id))


async def _list(ctx: CommandContext, args: argparse.Namespace) -> str:
    projects = await project_store.list_projects(ctx.db)
    # A project created since list_projects has no entry, and the default.
    upstreams = await index_upstreams.by_id(ctx.db, "project")
    text = table(
        [(p.id, p.path, visibility(p.public),
          "enabled" if p.packages_enabled else "disabled",
          "reject" if p.reject_duplicates else "allow",
          index_upstreams.describe(upstreams.get(p.id))) for p in projects],
        ["ID", "PATH", "VISIBILITY", "PACKAGES", "DUPLICATES", "UPSTREAMS"])
    return render(ctx.as_json, [_row(p, upstreams.get(p.id)) for p in projects], text)


async def _update(ctx: CommandContext, args: argparse.Namespace) -> str:
    # Checked first, so that a bad name changes nothing.
    choice = index_upstreams.chosen(ctx.config, args)
    p = await ctx.project(args.name)
    p = await project_store.update_project(
        ctx.db, p.id, public=args.public, packages_enabled=args.packages_enabled,
        reject_duplicates=args.reject_duplicates)
    row = _row(p, await index_upstreams.apply(ctx.db, choice, project_id=p.id))
    return render(ctx.as_json, row, record_table(
        {**row, "upstreams": index_upstreams.describe(row["upstreams"])}))
