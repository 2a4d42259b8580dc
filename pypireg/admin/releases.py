"""`pypireg yank` and `pypireg unyank`: PEP 592 yanking of a release.

Composition layer: the release is named as users type it (any spelling of
the package name, any equivalent version) and normalised before the lookup.
"""

from __future__ import annotations

import argparse

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.domain.errors import RegistryError
from pypireg.domain.names import normalize_name, parse_version
from pypireg.storage import packages as package_store


def add_parsers(sub: Subparsers) -> None:
    yank = add_command(sub, "yank", _yank, help="mark a release yanked (PEP 592)")
    _release_arguments(yank)
    yank.add_argument("--reason", default=None, help="shown to installers")
    _release_arguments(add_command(sub, "unyank", _unyank, help="undo a yank"))


def _release_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", help="project path or id")
    parser.add_argument("name", help="package name")
    parser.add_argument("version", help="release version")


async def _yank(ctx: CommandContext, args: argparse.Namespace) -> str:
    return await _set_yanked(ctx, args, yanked=True, reason=args.reason)


async def _unyank(ctx: CommandContext, args: argparse.Namespace) -> str:
    return await _set_yanked(ctx, args, yanked=False, reason=None)


async def _set_yanked(ctx: CommandContext, args: argparse.Namespace, *, yanked: bool,
                      reason: str | None) -> str:
    p = await ctx.project(args.project)
    name = normalize_name(args.name)
    try:
        version = str(parse_version(args.version))
    except RegistryError as e:
        raise CommandError(e.reason) from None
    changed = await package_store.set_yanked(ctx.db, p.id, name, version, yanked=yanked,
                                             reason=reason, actor=ctx.actor)
    if not changed:
        raise CommandError(f"no files of {name} {version} in project {p.path}")
    return f"{'Yanked' if yanked else 'Unyanked'} {name} {version} ({changed} files)."
