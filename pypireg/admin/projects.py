"""`pypireg project create|list|update`: the registry's projects.

Composition layer: argparse in, storage calls, text or JSON out. Which
upstreams an index includes is index_upstreams.py's. The duplicate cleanup
policy set here is applied by each upload, the daemon's hourly job and
`pypireg cleanup` (maintenance.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pypireg.admin import index_upstreams
from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import record_table, render, size, table, visibility
from pypireg.domain.names import is_valid_project_path
from pypireg.storage import projects as project_store
from pypireg.storage import usage as usage_store
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
    keep = change.add_mutually_exclusive_group()
    keep.add_argument("--keep-duplicates", type=_keep_count, metavar="N",
                      help="keep only the N newest files of each file name; older re-uploads "
                           "are removed after each upload and hourly (or by `pypireg cleanup`)")
    keep.add_argument("--keep-all-duplicates", action="store_true",
                      help="keep every re-upload again (the default)")
    index_upstreams.add_options(change)


# The column is a PostgreSQL INTEGER.
_MAX_KEEP = 2**31 - 1


def _keep_count(text: str) -> int:
    """--keep-duplicates N: a whole number from 1 (argparse reports the error)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_KEEP:
        # At least one: the newest file of a name is the one the index serves.
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {_MAX_KEEP}")
    return int(text)


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
    # upstreams: None is every configured upstream, [] none (as stored);
    # keep_duplicates: None keeps every re-upload.
    return {"id": p.id, "path": p.path, "public": p.public,
            "packages_enabled": p.packages_enabled, "reject_duplicates": p.reject_duplicates,
            "keep_duplicates": p.keep_duplicates, "upstreams": upstreams}


def _keep(p: Project) -> str:
    """The KEEP column: how many files of each file name the project keeps."""
    return "all" if p.keep_duplicates is None else str(p.keep_duplicates)


async def _create(ctx: CommandContext, args: argparse.Namespace) -> str:
    p = await create_at_path(
        "project", args.name,
        lambda: project_store.create_project(ctx.db, args.name, public=args.public,
                                             actor=ctx.actor),
        ProjectExists)
    # A new project includes every configured upstream (its list is NULL).
    return render(ctx.as_json, _row(p, None), str(p.id))


async def _list(ctx: CommandContext, args: argparse.Namespace) -> str:
    projects = await project_store.list_projects(ctx.db)
    # A project created since list_projects has no entry, and the default.
    upstreams = await index_upstreams.by_id(ctx.db, "project")
    # As GitLab's packages_size: every stored file, duplicates included (storage/usage.py).
    sizes = await usage_store.packages_sizes(ctx.db)
    text = table(
        [(p.id, p.path, visibility(p.public),
          "enabled" if p.packages_enabled else "disabled",
          "reject" if p.reject_duplicates else "allow", _keep(p),
          size(sizes.get(p.id, 0)), index_upstreams.describe(upstreams.get(p.id)))
         for p in projects],
        ["ID", "PATH", "VISIBILITY", "PACKAGES", "DUPLICATES", "KEEP", "SIZE", "UPSTREAMS"])
    # The column's sum, so that the two always agree.
    total = sum(sizes.get(p.id, 0) for p in projects)
    text += f"\nTotal: {size(total)} in {len(projects)} project{'' if len(projects) == 1 else 's'}"
    return render(ctx.as_json,
                  [{**_row(p, upstreams.get(p.id)), "packages_size": sizes.get(p.id, 0)}
                   for p in projects], text)


async def _update(ctx: CommandContext, args: argparse.Namespace) -> str:
    # Checked first, so that a bad name changes nothing.
    choice = index_upstreams.chosen(ctx.config, args)
    p = await ctx.project(args.name)
    p = await project_store.update_project(
        ctx.db, p.id, public=args.public, packages_enabled=args.packages_enabled,
        reject_duplicates=args.reject_duplicates, keep_duplicates=args.keep_duplicates,
        keep_all_duplicates=args.keep_all_duplicates, actor=ctx.actor)
    # A second transaction, so a second event when both changed (the
    # upstream list is index_upstreams.py's, shared with groups).
    row = _row(p, await index_upstreams.apply(ctx.db, choice, ctx.actor, project_id=p.id))
    return render(ctx.as_json, row, record_table(
        {**row, "keep_duplicates": _keep(p),
         "upstreams": index_upstreams.describe(row["upstreams"])}))
