"""`pypireg gc` and `pypireg cleanup`: the daemon's hourly housekeeping, on demand.

Composition layer. `gc` deletes blob files that no row references
(storage/gc.py); `cleanup` applies the projects' duplicate cleanup policies
(storage/duplicates.py) and lists what it removed. The daemon runs both
every hour; these run them now, each with a dry run.
"""

from __future__ import annotations

import argparse

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.admin.output import iso, render, size, table
from pypireg.storage import duplicates
from pypireg.storage.duplicates import SurplusFile
from pypireg.storage.gc import DEFAULT_GRACE_SECONDS, collect_garbage


def add_parsers(sub: Subparsers) -> None:
    gc = add_command(sub, "gc", _gc, help="delete blob files no row references")
    gc.add_argument("--grace-hours", type=float, default=DEFAULT_GRACE_SECONDS / 3600,
                    help="keep unreferenced blobs younger than this (default 1)")
    gc.add_argument("--dry-run", action="store_true", help="only count what would go")
    cleanup = add_command(sub, "cleanup", _cleanup,
                          help="apply the projects' duplicate cleanup policies now")
    cleanup.add_argument("--project", help="only this project (path or id)")
    cleanup.add_argument("--dry-run", action="store_true",
                         help="only list what would be removed")


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


async def _cleanup(ctx: CommandContext, args: argparse.Namespace) -> str:
    project_id = None
    note = ""
    if args.project is not None:
        project = await ctx.project(args.project)
        project_id = project.id
        if project.keep_duplicates is None:
            note = (f" Project {project.path} keeps every duplicate; set a policy with "
                    f"`pypireg project update {project.path} --keep-duplicates N`.")
    if args.dry_run:
        files = await duplicates.surplus_duplicates(ctx.db, project_id)
    else:
        files = await duplicates.remove_surplus_duplicates(ctx.db, project_id, actor=ctx.actor)
    total = sum(f.size for f in files)
    verb = "Would remove" if args.dry_run else "Removed"
    summary = f"{verb} {len(files)} older duplicate files ({size(total)})."
    if files and not args.dry_run:
        summary += " Their blobs go with the next garbage collection (`pypireg gc`)."
    text = summary + note
    if files:
        text = table([_line(f) for f in files],
                     ["PROJECT", "FILE", "ID", "UPLOADED", "SIZE", "SHA256"]) + "\n" + text
    return render(
        ctx.as_json,
        {"removed": [_record(f) for f in files], "removed_bytes": total,
         "dry_run": args.dry_run},
        text)


def _line(f: SurplusFile) -> tuple[object, ...]:
    return (f.project_path, f.filename, f.id, iso(f.uploaded_at), size(f.size), f.sha256[:12])


def _record(f: SurplusFile) -> dict[str, object]:
    return {"id": f.id, "project_id": f.project_id, "project": f.project_path,
            "filename": f.filename, "version": f.version, "size": f.size,
            "sha256": f.sha256, "uploaded_at": iso(f.uploaded_at)}
