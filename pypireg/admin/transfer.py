"""`pypireg import` and `pypireg export`: moving distributions in and out.

Composition of ingest and storage. Import walks a folder (a pypiserver
package directory, flat or nested, or a devpi export: dist files anywhere
below it) and sends every distribution through the same `ingest` as an
upload, so each is validated exactly as an upload is. Re-running is
idempotent: a file already in the project with the same name and bytes is
skipped. Export writes the newest file of each name plus `manifest.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command
from pypireg.admin.output import TqdmProgress, render
from pypireg.domain.audit import Actor
from pypireg.domain.errors import RegistryError
from pypireg.storage import packages as package_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.projects import Project

DIST_SUFFIXES = (".whl", ".tar.gz", ".zip")


def add_parsers(sub: Subparsers) -> None:
    imp = add_command(sub, "import", _import,
                      help="import a folder of distributions (pypiserver, devpi export) into a "
                      "project, validating each as an upload")
    imp.add_argument("folder", type=Path)
    imp.add_argument("--project", required=True, help="project path or id")
    exp = add_command(sub, "export", _export,
                      help="write a project's files and a manifest to a folder")
    exp.add_argument("folder", type=Path)
    exp.add_argument("--project", required=True, help="project path or id")


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0


def find_distributions(folder: Path) -> tuple[list[Path], int]:
    """Distribution files below *folder*, sorted, and how many other files were seen."""
    found, ignored = [], 0
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        for name in sorted(files):
            if name.lower().endswith(DIST_SUFFIXES):
                found.append(Path(dirpath) / name)
            else:
                ignored += 1
    return found, ignored


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, name: str) -> None:
        pass


async def import_folder(db: Database, blobs: BlobStore, project: Project, folder: Path,
                        progress: Progress | None = None, actor: Actor | None = None
                        ) -> ImportSummary:
    """Ingest every distribution under *folder*; each stored file is *actor*'s upload event."""
    # Imported here, not at the top: every `pypireg` command imports this
    # module to build its parser, and the upload rules and archive checks
    # (packaging, pkginfo, zip and tar readers) would cost each one ~50 ms.
    from pypireg.domain.filenames import parse_filename
    from pypireg.ingest.accept import ingest

    progress = progress or NoProgress()
    summary = ImportSummary()
    paths, summary.ignored = await blobs.in_thread(find_distributions, folder)
    progress.start(len(paths))
    for path in paths:
        progress.advance(path.name)
        label = str(path.relative_to(folder))
        try:
            dist = parse_filename(path.name)
        except RegistryError as e:
            summary.refused.append((label, e.reason))
            continue
        existing = await package_store.files_named(db, project.id, path.name)
        if existing:
            sha256 = await blobs.in_thread(_sha256_of, path)
            if any(f.sha256 == sha256 for f in existing):
                summary.skipped.append(label)
            else:
                summary.refused.append((label, "a different file with this name is already "
                                               "in the project"))
            continue
        blob = await blobs.copy_in(path)
        fields: dict[str, list[str]] = {"name": [dist.name], "version": [str(dist.version)],
                                        "filetype": [dist.packagetype]}
        try:
            await ingest(db, blobs, project, fields, path.name, blob, None, actor=actor)
            summary.imported.append(label)
        except RegistryError as e:
            summary.refused.append((label, e.reason))
        finally:
            await blob.discard()
    return summary


async def export_project(db: Database, blobs: BlobStore, project: Project, folder: Path
                         ) -> int:
    """Write the project's files (newest per name) and manifest.json; return the count."""
    files = await package_store.all_files(db, project.id)
    manifest = [
        {"filename": f.filename, "name": f.name, "version": f.version, "sha256": f.sha256,
         "size": f.size, "requires_python": f.requires_python, "yanked": f.yanked,
         "yanked_reason": f.yanked_reason, "uploaded_at": f.uploaded_at.isoformat()}
        for f in files
    ]

    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = folder / f.filename
            if not (target.exists() and target.stat().st_size == f.size):
                shutil.copyfile(blobs.path_for(f.sha256), target)
        (folder / "manifest.json").write_text(
            json.dumps({"project": project.path, "files": manifest}, indent=2) + "\n")

    await blobs.in_thread(write)
    return len(files)


async def _import(ctx: CommandContext, args: argparse.Namespace) -> str:
    p = await ctx.project(args.project)
    if not args.folder.is_dir():
        raise CommandError(f"{args.folder} is not a folder")
    bar = TqdmProgress(quiet=ctx.as_json)
    try:
        summary = await import_folder(ctx.db, ctx.blobs, p, args.folder, bar, ctx.actor)
    finally:
        bar.close()
    lines = [f"refused {f}: {r}" for f, r in summary.refused]
    lines.append(f"Imported {len(summary.imported)}, skipped {len(summary.skipped)} already "
                 f"present, refused {len(summary.refused)}; ignored {summary.ignored} other "
                 "files.")
    return render(ctx.as_json, {
        "imported": summary.imported, "skipped": summary.skipped,
        "refused": [{"file": f, "reason": r} for f, r in summary.refused],
        "ignored": summary.ignored,
    }, "\n".join(lines))


async def _export(ctx: CommandContext, args: argparse.Namespace) -> str:
    p = await ctx.project(args.project)
    count = await export_project(ctx.db, ctx.blobs, p, args.folder)
    return f"Exported {count} files of {p.path} to {args.folder}."
