"""The `pypireg` admin command: assembles the subcommands and runs one.

Composition layer. It works on the installation the daemon uses, found
from `--config`, PYPIREG_CONFIG or the current directory (installation.py),
and never creates one, except `pypireg init`. It reads that config, so it
talks to the same database and knows the same upstreams; with no DSN it
reuses the embedded PostgreSQL the daemon runs, or starts it for the
duration of the command. Each module below registers its own subcommands,
every leaf naming its handler, so running a command is one call. Errors
print one line to stderr: usage errors and a missing installation exit 2,
other errors 1. A new token is printed once, alone on the last line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from pypireg.admin import (
    audit,
    backfill,
    backup,
    fsck,
    groups,
    initialise,
    maintenance,
    names,
    projects,
    releases,
    tokens,
    transfer,
    trusted_publishers,
    upstreams,
    users,
)
from pypireg.admin.context import CommandContext, CommandError, Handler
from pypireg.admin.installation import Installation, find_installation
from pypireg.admin.parsing import CommandParser, add_common_options
from pypireg.config import Config
from pypireg.startup import StartupError, data_folder_error, open_database
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database

__all__ = ["CommandError", "build_parser", "main", "run_command"]

# In this order in `pypireg --help`.
_MODULES = (initialise, projects, groups, tokens, users, releases, names, upstreams, backfill,
            transfer, backup, fsck, maintenance, audit, trusted_publishers)


def build_parser() -> CommandParser:
    """The whole command line: `--config` and `--json` at every level, one leaf per handler."""
    parser = CommandParser(prog="pypireg", description="Administer a pypireg registry.")
    add_common_options(parser, top_level=True)
    sub = parser.add_subcommands()
    for module in _MODULES:
        module.add_parsers(sub)
    return parser


async def run_command(db: Database, args: argparse.Namespace, blobs: BlobStore | None = None,
                      config: Config | None = None) -> str:
    """Run the command *args* parsed to, on *db* and *blobs*; return what to print.

    In-process callers (tests) that give no *config* get the defaults (no
    upstreams); those that give no *blobs* get the store of *config*, not
    prepared: the commands that do not touch blobs never notice it.

    Raises:
        CommandError: A user error, to print as one line.
    """
    if config is None:
        config = Config()
    if blobs is None:
        from twisted.internet import reactor

        blobs = BlobStore(reactor, config.storage.path)
    return await _run(CommandContext(db, blobs, args.json, config), args)


async def _run(ctx: CommandContext, args: argparse.Namespace) -> str:
    # Every leaf parser sets `handler`, and argparse insists on a leaf.
    handler: Handler = args.handler
    return await handler(ctx, args)


async def _main(reactor: Any, args: argparse.Namespace, installation: Installation) -> None:
    config = installation.config
    try:
        # One connection: a command runs one statement at a time.
        opened = await open_database(reactor, config, pool_size=1)
    except StartupError as e:
        raise CommandError(str(e)) from None
    try:
        blobs = BlobStore(reactor, config.storage.path)
        try:
            blobs.prepare()
        except OSError as e:
            raise CommandError(str(data_folder_error(config, e))) from None
        ctx = CommandContext(opened.db, blobs, args.json, config, installation, opened)
        output = await _run(ctx, args)
    finally:
        await opened.close()
    print(output)


def _exit(error: CommandError) -> NoReturn:
    print(f"pypireg: {error}", file=sys.stderr)
    raise SystemExit(error.exit_code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line *argv* (default: the process's) and exit."""
    args = build_parser().parse_args(argv)
    # `pypireg init` sets these (initialise.py); every other command needs an
    # installation that exists already.
    creating = getattr(args, "creates_installation", False)
    try:
        installation = find_installation(
            args.config, os.environ, Path.cwd(),
            folder=getattr(args, "installation_folder", None), creating=creating)
        if not creating:
            installation.require_existing()
    except CommandError as e:
        _exit(e)

    def run(reactor: Any) -> Deferred[None]:
        def failed(failure: Any) -> None:
            if failure.check(CommandError):
                _exit(failure.value)
            message = failure.getErrorMessage().strip() or failure.type.__name__
            _exit(CommandError(message))

        return Deferred.fromCoroutine(_main(reactor, args, installation)).addErrback(failed)

    react(run)


if __name__ == "__main__":  # pragma: no cover
    main()
