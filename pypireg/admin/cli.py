"""The `pypireg` admin command: projects and tokens.

It reads the daemon's config (`--config`), so it talks to the same
database; with no DSN it reuses the embedded PostgreSQL the daemon runs, or
starts it for the duration of the command. Errors print one line to stderr
and exit non-zero. A new token is printed once, alone on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from pypireg.admin import access_commands as cli_access
from pypireg.admin.backfill import backfill_metadata
from pypireg.admin.backup import BackupError, backup, restore
from pypireg.admin.fsck import fsck
from pypireg.admin.transfer import ImportSummary, export_project, import_folder
from pypireg.config import ConfigError, load_config
from pypireg.domain.errors import RegistryError
from pypireg.domain.names import is_valid_project_path, normalize_name, parse_version
from pypireg.service import open_database
from pypireg.storage import groups as group_store
from pypireg.storage import packages as package_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.gc import DEFAULT_GRACE_SECONDS, collect_garbage
from pypireg.storage.groups import Group, GroupExists
from pypireg.storage.projects import Project, ProjectExists


class CommandError(Exception):
    """A user error: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pypireg", description="Administer a pypireg registry.")
    parser.add_argument("--config", "-c", type=Path, help="the daemon's TOML config file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="group", required=True)

    project = sub.add_parser("project", help="manage projects").add_subparsers(
        dest="command", required=True)
    create = project.add_parser("create", help="create a project; prints its id")
    create.add_argument("name", help="project path, e.g. acme or acme/tools")
    create.add_argument("--public", action="store_true", help="readable without a token")
    project.add_parser("list", help="list projects")
    update = project.add_parser("update", help="change a project's settings")
    update.add_argument("name", help="project path or id")
    update.add_argument("--public", dest="public", action="store_true", default=None)
    update.add_argument("--private", dest="public", action="store_false")
    update.add_argument("--packages-enabled", dest="packages_enabled", action="store_true",
                        default=None)
    update.add_argument("--packages-disabled", dest="packages_enabled", action="store_false")
    update.add_argument("--reject-duplicates", dest="reject_duplicates", action="store_true",
                        default=None, help="refuse re-uploads of an existing file name")
    update.add_argument("--allow-duplicates", dest="reject_duplicates", action="store_false")

    group = sub.add_parser("group", help="manage groups (read-only aggregate indexes)"
                           ).add_subparsers(dest="command", required=True)
    gcreate = group.add_parser("create", help="create a group; prints its id")
    gcreate.add_argument("name", help="group path, e.g. acme; projects under acme/ belong to it")
    gcreate.add_argument("--public", action="store_true",
                         help="its index is readable without a token (public projects only)")
    group.add_parser("list", help="list groups")
    gupdate = group.add_parser("update", help="change a group's visibility")
    gupdate.add_argument("name", help="group path or id")
    gupdate.add_argument("--public", dest="public", action="store_true", default=None)
    gupdate.add_argument("--private", dest="public", action="store_false")

    token = sub.add_parser("token", help="manage access tokens").add_subparsers(
        dest="command", required=True)
    tcreate = token.add_parser("create", help="create a token; prints it once, last")
    tcreate.add_argument("--project", required=True, help="project path or id")
    tcreate.add_argument("--scope", required=True, choices=["read", "write"])
    tcreate.add_argument("--expires-in", type=int, metavar="DAYS", help="expire after DAYS days")
    tcreate.add_argument("--description", default="", help="what the token is for")
    tlist = token.add_parser("list", help="list a project's tokens")
    tlist.add_argument("--project", required=True, help="project path or id")
    trevoke = token.add_parser("revoke", help="revoke a token by id")
    trevoke.add_argument("token_id", type=int)

    cli_access.add_parsers(sub)

    for verb, text in (("yank", "mark a release yanked (PEP 592)"),
                       ("unyank", "undo a yank")):
        yank = sub.add_parser(verb, help=text)
        yank.add_argument("project", help="project path or id")
        yank.add_argument("name", help="package name")
        yank.add_argument("version", help="release version")
        if verb == "yank":
            yank.add_argument("--reason", default=None, help="shown to installers")
    sub.add_parser("backfill-metadata",
                   help="extract PEP 658 core metadata for files uploaded without it")
    imp = sub.add_parser("import", help="import a folder of distributions (pypiserver, devpi "
                         "export) into a project, validating each as an upload")
    imp.add_argument("folder", type=Path)
    imp.add_argument("--project", required=True, help="project path or id")
    exp = sub.add_parser("export", help="write a project's files and a manifest to a folder")
    exp.add_argument("folder", type=Path)
    exp.add_argument("--project", required=True, help="project path or id")
    back = sub.add_parser("backup", help="pg_dump the database and copy the blobs to a folder")
    back.add_argument("folder", type=Path)
    rest = sub.add_parser("restore", help="load a backup folder (replaces the database)")
    rest.add_argument("folder", type=Path)
    check = sub.add_parser("fsck", help="check that every file row has its intact blob")
    check.add_argument("--repair", action="store_true",
                       help="remove stale temp files and rows whose blob is missing or corrupt")
    check.add_argument("--no-verify", action="store_true",
                       help="only check that blobs exist, without re-hashing them")
    gc = sub.add_parser("gc", help="delete blob files no row references")
    gc.add_argument("--grace-hours", type=float, default=DEFAULT_GRACE_SECONDS / 3600,
                    help="keep unreferenced blobs younger than this (default 1)")
    gc.add_argument("--dry-run", action="store_true", help="only count what would go")
    return parser


async def _project(db: Database, ref: str) -> Project:
    project = await project_store.get_project(db, ref)
    if project is None:
        raise CommandError(f"no project {ref!r}; see `pypireg project list`")
    return project


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [list(map(str, headers))] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _project_row(p: Project) -> dict[str, Any]:
    return {"id": p.id, "path": p.path, "public": p.public,
            "packages_enabled": p.packages_enabled, "reject_duplicates": p.reject_duplicates}


async def run_command(db: Database, args: argparse.Namespace, blobs: BlobStore | None = None
                      ) -> str:
    """Run one command; return what to print."""
    as_json: bool = args.json
    if args.group == "project":
        if args.command == "create":
            if not is_valid_project_path(args.name):
                raise CommandError(
                    f"invalid project path {args.name!r}: use segments of letters, digits, "
                    "'.', '_' and '-' separated by '/'")
            try:
                p = await project_store.create_project(db, args.name, public=args.public)
            except ProjectExists:
                raise CommandError(f"project {args.name!r} exists already") from None
            return json.dumps(_project_row(p)) if as_json else str(p.id)
        if args.command == "list":
            projects = await project_store.list_projects(db)
            if as_json:
                return json.dumps([_project_row(p) for p in projects])
            return _table(
                [(p.id, p.path, "public" if p.public else "private",
                  "enabled" if p.packages_enabled else "disabled",
                  "reject" if p.reject_duplicates else "allow") for p in projects],
                ["ID", "PATH", "VISIBILITY", "PACKAGES", "DUPLICATES"])
        if args.command == "update":
            p = await _project(db, args.name)
            p = await project_store.update_project(
                db, p.id, public=args.public, packages_enabled=args.packages_enabled,
                reject_duplicates=args.reject_duplicates)
            row = _project_row(p)
            return json.dumps(row) if as_json else _table([list(row.values())], list(row))
    if args.group == "group":
        return await _group_command(db, args)
    if args.group == "token":
        if args.command == "create":
            p = await _project(db, args.project)
            if args.expires_in is not None and args.expires_in <= 0:
                raise CommandError("--expires-in must be a positive number of days")
            record, secret = await token_store.create_token(
                db, p.id, args.scope, expires_in_days=args.expires_in,
                description=args.description)
            return cli_access.token_created(record, secret, f"project {p.path} (id {p.id})",
                                            as_json)
        if args.command == "list":
            p = await _project(db, args.project)
            rows = cli_access.token_rows(await token_store.list_tokens(db, p.id))
            if as_json:
                return json.dumps(rows)
            return _table([list(r.values()) for r in rows], cli_access.TOKEN_HEADERS)
        if args.command == "revoke":
            if not await token_store.revoke_token(db, args.token_id):
                raise CommandError(f"no active token with id {args.token_id}")
            return f"Revoked token {args.token_id}."
    if args.group in ("user", "member", "deploy-token"):
        return await cli_access.run(db, args, lambda ref: _project(db, ref), _table,
                                    CommandError)
    if args.group in ("yank", "unyank"):
        p = await _project(db, args.project)
        name = normalize_name(args.name)
        try:
            version = str(parse_version(args.version))
        except RegistryError as e:
            raise CommandError(e.reason) from None
        changed = await package_store.set_yanked(
            db, p.id, name, version, yanked=args.group == "yank",
            reason=getattr(args, "reason", None))
        if not changed:
            raise CommandError(f"no files of {name} {version} in project {p.path}")
        return f"{'Yanked' if args.group == 'yank' else 'Unyanked'} {name} {version} " \
               f"({changed} files)."
    if args.group == "backfill-metadata":
        if blobs is None:  # pragma: no cover - main() always passes it
            raise CommandError("no storage configured")
        done, skipped = await backfill_metadata(db, blobs)
        return f"Extracted core metadata for {done} files; {skipped} have none to serve."
    if args.group in ("import", "export"):
        if blobs is None:  # pragma: no cover - main() always passes it
            raise CommandError("no storage configured")
        p = await _project(db, args.project)
        if args.group == "export":
            count = await export_project(db, blobs, p, args.folder)
            return f"Exported {count} files of {p.path} to {args.folder}."
        if not args.folder.is_dir():
            raise CommandError(f"{args.folder} is not a folder")
        bar = _TqdmProgress(quiet=as_json)
        try:
            summary = await import_folder(db, blobs, p, args.folder, bar)
        finally:
            bar.close()
        return _import_report(summary, as_json)
    if args.group in ("backup", "restore"):
        if blobs is None:  # pragma: no cover - main() always passes it
            raise CommandError("no storage configured")
        operation = backup if args.group == "backup" else restore
        try:
            return await operation(blobs.reactor, db.dsn, blobs, args.folder)
        except BackupError as e:
            raise CommandError(str(e)) from None
    if args.group == "fsck":
        if blobs is None:  # pragma: no cover - main() always passes it
            raise CommandError("no storage configured")
        report = await fsck(db, blobs, repair=args.repair, verify_hashes=not args.no_verify)
        text = "\n".join(report.lines())
        if not report.ok:
            raise CommandError(text)
        return text
    if args.group == "gc":
        if blobs is None:  # pragma: no cover - main() always passes it
            raise CommandError("no storage configured")
        if args.grace_hours < 0:
            raise CommandError("--grace-hours must not be negative")
        r = await collect_garbage(db, blobs, grace_seconds=args.grace_hours * 3600,
                                  dry_run=args.dry_run)
        if as_json:
            return json.dumps({"removed": r.removed, "removed_bytes": r.removed_bytes,
                               "kept_young": r.kept_young, "referenced": r.referenced,
                               "dry_run": args.dry_run})
        verb = "Would remove" if args.dry_run else "Removed"
        return (f"{verb} {r.removed} unreferenced blobs ({r.removed_bytes} bytes); kept "
                f"{r.referenced} referenced and {r.kept_young} younger than the grace period.")
    raise CommandError("unknown command")  # pragma: no cover - argparse rejects it first


async def _group_command(db: Database, args: argparse.Namespace) -> str:
    if args.command == "create":
        if not is_valid_project_path(args.name):
            raise CommandError(
                f"invalid group path {args.name!r}: use segments of letters, digits, "
                "'.', '_' and '-' separated by '/'")
        try:
            g = await group_store.create_group(db, args.name, public=args.public)
        except GroupExists:
            raise CommandError(f"group {args.name!r} exists already") from None
        return json.dumps(_group_row(g)) if args.json else str(g.id)
    if args.command == "list":
        groups = await group_store.list_groups(db)
        if args.json:
            return json.dumps([_group_row(g) for g in groups])
        return _table([(g.id, g.path, "public" if g.public else "private") for g in groups],
                      ["ID", "PATH", "VISIBILITY"])
    found = await group_store.get_group(db, args.name)
    if found is None:
        raise CommandError(f"no group {args.name!r}; see `pypireg group list`")
    g = found
    if args.public is not None:
        g = await group_store.update_group(db, g.id, public=args.public)
    return json.dumps(_group_row(g)) if args.json else _table(
        [(g.id, g.path, "public" if g.public else "private")], ["ID", "PATH", "VISIBILITY"])


def _group_row(g: Group) -> dict[str, Any]:
    return {"id": g.id, "path": g.path, "public": g.public}


class _TqdmProgress:
    """A progress bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._bar: Any = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="file", file=sys.stderr,
                         disable=True if self._quiet else None)

    def advance(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(name[:40], refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _import_report(summary: ImportSummary, as_json: bool) -> str:
    if as_json:
        return json.dumps({"imported": summary.imported, "skipped": summary.skipped,
                           "refused": [{"file": f, "reason": r} for f, r in summary.refused],
                           "ignored": summary.ignored})
    lines = [f"refused {f}: {r}" for f, r in summary.refused]
    lines.append(f"Imported {len(summary.imported)}, skipped {len(summary.skipped)} already "
                 f"present, refused {len(summary.refused)}; ignored {summary.ignored} other "
                 "files.")
    return "\n".join(lines)




async def _main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    db, embedded = await open_database(reactor, config)
    blobs = BlobStore(reactor, config.storage.path)
    blobs.prepare()
    try:
        output = await run_command(db, args, blobs)
    finally:
        db.close()
        if embedded is not None:
            await embedded.stop()
    print(output)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run(reactor: Any) -> Deferred[None]:
        def failed(failure: Any) -> None:
            if failure.check(CommandError):
                message = str(failure.value)
            else:
                message = failure.getErrorMessage().strip() or failure.type.__name__
            print(f"pypireg: {message}", file=sys.stderr)
            raise SystemExit(1)

        return Deferred.fromCoroutine(_main(reactor, args)).addErrback(failed)

    react(run)


if __name__ == "__main__":  # pragma: no cover
    main()
