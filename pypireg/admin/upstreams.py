"""`pypireg upstream …`: blocked upstream releases, the shared cache, and its status.

Composition layer. `block` and `unblock` hide an upstream release (or every
release of a name) in one project's index; local uploads are never hidden.
`refresh` makes the next request revalidate a name's cached pages, `purge`
forgets a name's cached pages and files. Pages and files are cached per
upstream and name, not per project, so refresh and purge act for every
project that includes the upstream. `status` is upstream_status.py's.
"""

from __future__ import annotations

import argparse
from typing import Any

from pypireg.admin import index_upstreams, upstream_status
from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.names import package_name
from pypireg.admin.output import render
from pypireg.config import UpstreamConfig
from pypireg.domain.errors import RegistryError
from pypireg.domain.names import parse_version
from pypireg.storage import upstream_cache as cache
from pypireg.storage.projects import Project


def add_parsers(sub: Subparsers) -> None:
    upstream = add_group(sub, "upstream",
                         "upstream indexes: blocked releases, the shared cache, status")
    block = add_command(upstream, "block", _block,
                        help="hide an upstream release, or every release of a name, in a "
                             "project's index (local uploads are never hidden)")
    _project_and_name(block)
    block.add_argument("version", nargs="?",
                       help="the release to hide (PEP 440); every release when left out")
    block.add_argument("--reason", required=True,
                       help="why it is hidden, kept with the block (see `upstream status`)")
    unblock = add_command(upstream, "unblock", _unblock, help="remove a block")
    _project_and_name(unblock)
    unblock.add_argument("version", nargs="?", help="the blocked release; none for a block "
                                                    "of every release")
    _project_and_name(add_command(
        upstream, "refresh", _refresh,
        help="make the next request for NAME revalidate its cached pages from every upstream "
             "PROJECT includes (the cache is shared: every project sees the new page)"))
    _project_and_name(add_command(
        upstream, "purge", _purge,
        help="forget NAME's cached pages and files; the cache is shared by every project, so "
             "this purges it for all (the garbage collector deletes the blobs later)"))
    upstream_status.add_parser(upstream)


def _project_and_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", help="project path or id")
    parser.add_argument("name", help="package name")


def _version(text: str | None) -> str | None:
    """A VERSION argument, normalised as stored versions are; None for a whole-name block."""
    if text is None:
        return None
    try:
        return str(parse_version(text))
    except RegistryError as e:
        raise CommandError(e.reason) from None


def _release(name: str, version: str | None) -> str:
    return f"every release of {name}" if version is None else f"{name} {version}"


def _block_row(project: Project, name: str, version: str | None) -> dict[str, Any]:
    return {"project": project.path, "name": name, "version": version}


async def _block(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    name, version = package_name(args.name), _version(args.version)
    reason = args.reason.strip()
    if not reason:
        raise CommandError('--reason must say why the release is hidden, e.g. '
                           '--reason "malicious release"')
    added = await cache.add_block(ctx.db, project.id, name, version, reason, actor=ctx.actor)
    what = _release(name, version)
    if added:
        text = f"Hid {what} from the upstreams in {project.path}: {reason}"
    else:
        # The block there is kept as it is, with its own reason.
        text = (f"{project.path} hides {what} already; `pypireg upstream status "
                f"{project.path}` shows why.")
    return render(ctx.as_json, {**_block_row(project, name, version), "reason": reason,
                                "added": added}, text)


async def _unblock(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    name, version = package_name(args.name), _version(args.version)
    if not await cache.remove_block(ctx.db, project.id, name, version, actor=ctx.actor):
        raise CommandError(f"no block of {_release(name, version)} in {project.path}; "
                           f"`pypireg upstream status {project.path}` lists its blocks")
    return render(ctx.as_json, _block_row(project, name, version),
                  f"Unblocked {_release(name, version)} in {project.path}.")


async def _included(ctx: CommandContext, project: Project) -> list[UpstreamConfig]:
    """The configured upstreams *project*'s index includes.

    Raises:
        CommandError: It includes none (or none is configured).
    """
    if not ctx.config.upstreams:
        raise CommandError("no upstreams are configured; give the daemon's config with "
                           "--config")
    stored = await cache.index_upstreams(ctx.db, project_id=project.id)
    included = index_upstreams.in_use(ctx.config, stored)
    if not included:
        raise CommandError(f"{project.path} includes no upstream; `pypireg project update "
                           f"{project.path} --default-upstreams` includes them all")
    return included


async def _refresh(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    name = package_name(args.name)
    reset: list[str] = []
    not_cached: list[str] = []
    for upstream in await _included(ctx, project):
        changed = await cache.forget_page(ctx.db, upstream.name, name)
        (reset if changed else not_cached).append(upstream.name)
    if reset:
        text = (f"Reset the cached page of {name} from {', '.join(reset)}: the next request "
                "for it asks the upstream again, for every project.")
    else:
        text = f"{name} is not cached from {', '.join(not_cached)}; nothing to reset."
    return render(ctx.as_json, {"project": project.path, "name": name, "reset": reset,
                                "not_cached": not_cached}, text)


async def _purge(ctx: CommandContext, args: argparse.Namespace) -> str:
    # The project is only checked: the cache it purges is every project's.
    project = await ctx.project(args.project)
    name = package_name(args.name)
    files = await cache.purge(ctx.db, name, actor=ctx.actor)
    return render(
        ctx.as_json, {"project": project.path, "name": name, "files": files},
        f"Purged {name} from the upstream cache, which every project shares: its pages and "
        f"{files} cached file{'' if files == 1 else 's'} are forgotten for all of them. The "
        "garbage collector (hourly in the daemon, or `pypireg gc`) deletes the blobs later.")
