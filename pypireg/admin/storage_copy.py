"""`pypireg storage copy --to s3|filesystem`: move an installation's blobs to the other backend.

Composition of the two blob stores and the list of referenced blobs (gc.py).
Every blob a row references (package files, their core metadata, cached
upstream files) is copied from the configured backend to the other one,
hashed on the way and checked against its address; a blob the target
already has is skipped, so an interrupted copy is resumed by running it
again. The daemon may keep running meanwhile (new uploads land in the
configured backend; a second run copies them). Then set `[storage] backend`
and restart. Nothing is deleted from the source.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import TqdmProgress, render, size
from pypireg.storage.blob_backend import BlobBackend
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.gc import referenced_blobs


def add_parsers(sub: Subparsers) -> None:
    storage = add_group(sub, "storage", "the blob store: copy an installation's blobs to the"
                                        " other backend")
    copy = add_command(storage, "copy", _copy,
                       help="copy every referenced blob to the other backend (resumable)")
    copy.add_argument("--to", required=True, choices=("s3", "filesystem"),
                      help="the backend to copy to: [storage.s3]'s bucket, or [storage] path")
    copy.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class CopySummary:
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)


async def _copy(ctx: CommandContext, args: argparse.Namespace) -> str:
    storage = ctx.config.storage
    if args.to == storage.backend:
        raise CommandError(f"the registry's blobs are already in the {args.to} backend"
                           " ([storage] backend); --to names the other one")
    target: BlobBackend
    if args.to == "s3":
        if storage.s3 is None:
            raise CommandError('--to s3 needs a [storage.s3] table (bucket = "…") in the'
                               " config file")
        from pypireg.storage.s3_blobs import S3BlobStore

        target = S3BlobStore(ctx.blobs.reactor, storage.s3, storage.path)
    else:
        target = BlobStore(ctx.blobs.reactor, storage.path)
    target.prepare()
    progress = TqdmProgress(args.quiet)
    try:
        summary = await copy_blobs(ctx.db, ctx.blobs, target, progress)
    finally:
        progress.close()
        await target.close()
    text = (f"copied {summary.copied} blobs ({size(summary.copied_bytes)}) to {args.to};"
            f" {summary.present} were there already")
    problems = ([f"MISSING in the source: {s}" for s in summary.missing]
                + [f"CORRUPT in the source (not copied): {s}" for s in summary.corrupt])
    if problems:
        raise CommandError("\n".join([text, *problems,
                                      "run `pypireg fsck` on the source backend"]))
    done = text + (f'. Now set [storage] backend = "{args.to}" and restart pypireg.')
    return render(ctx.as_json, {"copied": summary.copied, "copied_bytes": summary.copied_bytes,
                                "present": summary.present}, done)


async def copy_blobs(db: Database, source: BlobBackend, target: BlobBackend,
                     progress: TqdmProgress | None = None) -> CopySummary:
    """Copy every referenced blob *target* lacks from *source*, checking each one's hash."""
    summary = CopySummary()
    wanted = sorted(await referenced_blobs(db))
    if progress is not None:
        progress.start(len(wanted))
    for sha256 in wanted:
        if progress is not None:
            progress.advance(sha256[:12])
        if await target.exists(sha256):
            summary.present += 1
            continue
        found = await source.source(sha256)
        if found is None:
            summary.missing.append(sha256)
            continue
        temp = await target.copy_in(found)
        try:
            assert temp.digests is not None
            if temp.digests.sha256 != sha256:
                summary.corrupt.append(sha256)
                continue
            await target.commit(temp)
        finally:
            await temp.discard()
        summary.copied += 1
        summary.copied_bytes += temp.digests.size
    return summary
