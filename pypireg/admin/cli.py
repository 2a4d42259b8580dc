"""The `pypireg` admin command: assembles the subcommands and runs one.

Composition layer. It reads the daemon's config (`--config`), so it talks to
the same database and knows the same upstreams; with no DSN it reuses the
embedded PostgreSQL the daemon runs, or starts it for the duration of the
command. Each module below registers its own subcommands, every leaf naming
its handler, so running a command is one call. Errors print one line to
stderr and exit non-zero. A new token is printed once, alone on the last
line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from pypireg.admin import (
    backfill,
    backup,
    fsck,
    groups,
    maintenance,
    names,
    projects,
    releases,
    tokens,
    transfer,
    upstreams,
    users,
)
from pypireg.admin.context import CommandContext, CommandError, Handler
from pypireg.admin.parsing import CommandParser, add_common_options
from pypireg.config import Config, ConfigError, load_config
from pypireg.startup import StartupError, open_database
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database

__all__ = ["CommandError", "build_parser", "main", "run_command"]

# In this order in `pypireg --help`.
_MODULES = (projects, groups, tokens, users, releases, names, upstreams, backfill, transfer,
            backup, fsck, maintenance)


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


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    try:
        # One connection: a command runs one statement at a time.
        opened = await open_database(reactor, config, pool_size=1)
    except StartupError as e:
        raise CommandError(str(e)) from None
    try:
        blobs = BlobStore(reactor, config.storage.path)
        blobs.prepare()
        output = await _run(CommandContext(opened.db, blobs, args.json, config), args)
    finally:
        await opened.close()
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
