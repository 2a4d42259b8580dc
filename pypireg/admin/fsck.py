"""`pypireg fsck`: check that rows and blob files agree, and repair what can be.

Composition of storage queries and blob-file checks; hashing runs in the
thread pool. Checks:

- every file row's blob exists and hashes to its sha256 (and has its size);
- every core-metadata blob a row names exists and hashes right;
- upload temp files left by dead processes;
- blobs no row references (reported; removed by `pypireg gc`).

`--repair` removes the stale temp files, and the rows whose blob is missing
or corrupt (so that the index stops offering files that cannot be served;
they are listed, and a corrupt blob is moved to `quarantine/`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.domain.audit import Actor
from pypireg.storage import packages as package_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.gc import referenced_blobs

_CHUNK = 1024 * 1024


def add_parsers(sub: Subparsers) -> None:
    check = add_command(sub, "fsck", _fsck,
                        help="check that every file row has its intact blob")
    check.add_argument("--repair", action="store_true",
                       help="remove stale temp files and rows whose blob is missing or corrupt")
    check.add_argument("--no-verify", action="store_true",
                       help="only check that blobs exist, without re-hashing them")


async def _fsck(ctx: CommandContext, args: argparse.Namespace) -> str:
    report = await fsck(ctx.db, ctx.blobs, repair=args.repair, verify_hashes=not args.no_verify,
                        actor=ctx.actor)
    text = "\n".join(report.lines())
    if not report.ok:
        # The whole report, on stderr, and exit status 1: problems are failures.
        raise CommandError(text)
    return text


@dataclass
class FsckReport:
    checked_files: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    missing_metadata: list[str] = field(default_factory=list)
    stale_temp_files: int = 0
    unreferenced_blobs: int = 0
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        problems = self.missing or self.corrupt or self.missing_metadata or self.stale_temp_files
        return not problems

    def lines(self) -> list[str]:
        out = [f"checked {self.checked_files} file rows"]
        out += [f"MISSING blob for {x}" for x in self.missing]
        out += [f"CORRUPT blob for {x}" for x in self.corrupt]
        out += [f"MISSING core metadata for {x}" for x in self.missing_metadata]
        if self.stale_temp_files:
            out.append(f"{self.stale_temp_files} temp files left by crashed uploads")
        if self.unreferenced_blobs:
            out.append(f"{self.unreferenced_blobs} unreferenced blobs (pypireg gc removes them)")
        out += [f"repaired: {x}" for x in self.repaired]
        out.append("OK" if self.ok else "PROBLEMS FOUND")
        return out


def _hash_file(path: Path) -> tuple[str, int] | None:
    try:
        with path.open("rb") as f:
            digest = hashlib.sha256()
            size = 0
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest(), size


async def fsck(db: Database, blobs: BlobStore, *, repair: bool = False,
               verify_hashes: bool = True, actor: Actor | None = None) -> FsckReport:
    report = FsckReport()
    rows = await package_store.all_file_blobs(db)
    verified: dict[str, str] = {}
    bad_rows: list[int] = []
    bad_metadata_rows: list[int] = []
    for row in rows:
        report.checked_files += 1
        label = f"{row.filename} (file {row.id}, project {row.project_id}, sha256 {row.sha256})"
        state = await _check_blob(blobs, row.sha256, row.size, verified, verify_hashes)
        if state != "ok":
            (report.missing if state == "missing" else report.corrupt).append(label)
            bad_rows.append(row.id)
        if row.metadata_sha256 and await _check_blob(
                blobs, row.metadata_sha256, None, verified, verify_hashes) != "ok":
            report.missing_metadata.append(label)
            bad_metadata_rows.append(row.id)
    report.stale_temp_files = len(await blobs.in_thread(blobs.stale_temp_files))
    referenced = await referenced_blobs(db)
    report.unreferenced_blobs = await blobs.in_thread(_count_unreferenced, blobs, referenced)

    if repair:
        if report.stale_temp_files:
            removed = await blobs.remove_stale_temp_files()
            report.repaired.append(f"removed {removed} stale temp files")
            report.stale_temp_files -= removed
        if bad_rows:
            await package_store.delete_files(db, bad_rows, actor=actor)
            report.repaired.append(f"removed {len(bad_rows)} rows whose blob is missing or "
                                   "corrupt")
            for sha256 in {r.sha256 for r in rows if r.id in bad_rows}:
                await blobs.in_thread(_quarantine, blobs, sha256)
            report.missing.clear()
            report.corrupt.clear()
        if bad_metadata_rows:
            await package_store.clear_metadata_sha256(db, bad_metadata_rows)
            report.repaired.append(f"dropped the core metadata of {len(bad_metadata_rows)} rows"
                                   " (pypireg backfill-metadata extracts it again)")
            report.missing_metadata.clear()
    return report


async def _check_blob(blobs: BlobStore, sha256: str, size: int | None,
                      verified: dict[str, str], verify: bool) -> str:
    """"ok", "missing" or "corrupt" (content or size differ); cached per blob."""
    if sha256 not in verified:
        path = blobs.path_for(sha256)
        if verify:
            result = await blobs.in_thread(_hash_file, path)
            if result is None:
                verified[sha256] = "missing"
            else:
                digest, actual_size = result
                good = digest == sha256 and (size is None or size == actual_size)
                verified[sha256] = "ok" if good else "corrupt"
        else:
            verified[sha256] = "ok" if await blobs.in_thread(path.is_file) else "missing"
    return verified[sha256]


def _count_unreferenced(blobs: BlobStore, referenced: set[str]) -> int:
    count = 0
    for _dirpath, _dirs, files in os.walk(blobs.blob_dir):
        count += sum(1 for name in files if name not in referenced)
    return count


def _quarantine(blobs: BlobStore, sha256: str) -> None:
    path = blobs.path_for(sha256)
    if path.exists():
        target = blobs.root / "quarantine"
        target.mkdir(exist_ok=True)
        os.replace(path, target / sha256)
