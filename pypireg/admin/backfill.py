"""Extract PEP 658 core metadata for files stored before it was extracted.

Composition of storage and archive reading, used by `pypireg
backfill-metadata`; archive reading runs in the thread pool.
"""

from __future__ import annotations

import argparse
import functools

from twisted.logger import Logger

from pypireg.admin.context import CommandContext, Subparsers, add_command
from pypireg.domain.errors import BadUpload
from pypireg.storage import packages as package_store
from pypireg.storage.blob_backend import BlobBackend
from pypireg.storage.database import Database

_log = Logger()


def add_parsers(sub: Subparsers) -> None:
    add_command(sub, "backfill-metadata", _backfill,
                help="extract PEP 658 core metadata for files uploaded without it")


async def _backfill(ctx: CommandContext, args: argparse.Namespace) -> str:
    done, skipped = await backfill_metadata(ctx.db, ctx.blobs)
    return f"Extracted core metadata for {done} files; {skipped} have none to serve."


async def backfill_metadata(db: Database, blobs: BlobBackend) -> tuple[int, int]:
    """Return (files given metadata, files that have none to serve)."""
    # Imported here, not at the top: every `pypireg` command imports this
    # module to build its parser, and the archive readers (pkginfo, packaging,
    # zip and tar checks) would cost each one ~40 ms.
    from pypireg.domain.filenames import parse_filename
    from pypireg.domain.metadata import CoreMetadata
    from pypireg.ingest.archives import read_core_metadata

    done = skipped = 0
    after = 0
    while True:
        batch = await package_store.files_without_metadata(db, after_id=after)
        if not batch:
            return done, skipped
        for f in batch:
            after = f.id
            try:
                dist = parse_filename(f.filename)
                meta: CoreMetadata = await blobs.read_with(
                    f.sha256, functools.partial(read_core_metadata, dist=dist))
            except (BadUpload, OSError) as e:
                _log.warn("no core metadata for {filename}: {error}", filename=f.filename,
                          error=str(e))
                skipped += 1
                continue
            if dist.packagetype != "bdist_wheel" and not meta.is_reliable_sdist_metadata:
                skipped += 1
                continue
            metadata_sha256 = await blobs.store_bytes(meta.raw)
            await package_store.set_metadata_sha256(db, f.sha256, metadata_sha256)
            done += 1
