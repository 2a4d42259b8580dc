"""`pypireg gc`: delete blob files that no row references.

Composition layer over storage/gc.py, which the daemon also runs hourly;
this is the same collection on demand, with a dry run.
"""

from __future__ import annotations

import argparse

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.admin.output import render
from pypireg.storage.gc import DEFAULT_GRACE_SECONDS, collect_garbage


def add_parsers(sub: Subparsers) -> None:
    gc = add_command(sub, "gc", _gc, help="delete blob files no row references")
    gc.add_argument("--grace-hours", type=float, default=DEFAULT_GRACE_SECONDS / 3600,
                    help="keep unreferenced blobs younger than this (default 1)")
    gc.add_argument("--dry-run", action="store_true", help="only count what would go")


async def _gc(ctx: CommandContext, args: argparse.Namespace) -> str:
    if args.grace_hours < 0:
        raise CommandError("--grace-hours must not be negative")
    r = await collect_garbage(ctx.db, ctx.blobs, grace_seconds=args.grace_hours * 3600,
                              dry_run=args.dry_run)
    verb = "Would remove" if args.dry_run else "Removed"
    return render(
        ctx.as_json,
        {"removed": r.removed, "removed_bytes": r.removed_bytes, "kept_young": r.kept_young,
         "referenced": r.referenced, "dry_run": args.dry_run},
        f"{verb} {r.removed} unreferenced blobs ({r.removed_bytes} bytes); kept "
        f"{r.referenced} referenced and {r.kept_young} younger than the grace period.")
