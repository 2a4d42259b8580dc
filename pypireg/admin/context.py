"""What every admin subcommand handler is given, and how it is registered.

Composition layer. `cli.main` loads the config, opens the database and the
blob store once and builds one `CommandContext`; argparse picks the handler (each leaf
subparser names its own with `set_defaults(handler=…)`), so there is no
dispatch code anywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pypireg.config import Config
from pypireg.storage import projects as project_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.projects import Project

# What `add_subparsers()` returns: private, and not subscriptable at run time
# (hence the string), so it is named once, here.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(Exception):
    """A user error: printed as one line, exit status 1."""


@dataclass(frozen=True)
class CommandContext:
    """The open registry a command works on, and how it should answer.

    Attributes:
        db: The registry's database, migrated.
        blobs: The blob store, prepared.
        as_json: Print JSON instead of tables (`--json`).
        config: The daemon's config (`--config`), so that commands check
            names such as upstreams against what the daemon serves.
    """

    db: Database
    blobs: BlobStore
    as_json: bool
    config: Config

    async def project(self, ref: str) -> Project:
        """The project with path or id *ref*.

        Raises:
            CommandError: There is none; the message points at `project list`.
        """
        project = await project_store.get_project(self.db, ref)
        if project is None:
            raise CommandError(f"no project {ref!r}; see `pypireg project list`")
        return project


Handler: TypeAlias = Callable[[CommandContext, argparse.Namespace], Awaitable[str]]
"""Runs one subcommand and returns what to print; raises CommandError."""


def add_command(sub: Subparsers, name: str, handler: Handler, **kwargs: Any
                ) -> argparse.ArgumentParser:
    """Add the leaf subcommand *name* to *sub*, run by *handler*; return its parser."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler)
    return parser


def add_group(sub: Subparsers, name: str, text: str, dest: str = "command") -> Subparsers:
    """Add the subcommand group *name* (`pypireg project …`), helped by *text*.

    Returns its subparsers, for the leaf commands.
    """
    # *dest* only names the missing word in argparse's usage error.
    return sub.add_parser(name, help=text).add_subparsers(dest=dest, required=True)
