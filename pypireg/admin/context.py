"""What every admin subcommand handler is given, and how it is registered.

Composition layer. `cli.main` loads the config, opens the database and the
blob store once and builds one `CommandContext`; argparse picks the handler (each leaf
subparser names its own with `set_defaults(handler=…)`), so there is no
dispatch code anywhere.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from pypireg.admin.parsing import CommandParser, Subparsers, add_common_options
from pypireg.config import Config
from pypireg.domain.audit import Actor
from pypireg.storage import projects as project_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.projects import Project

if TYPE_CHECKING:
    # Only named in annotations: installation.py imports this module.
    from pypireg.admin.installation import Installation
    from pypireg.startup import OpenDatabase

__all__ = ["CommandContext", "CommandError", "Handler", "Subparsers", "add_command",
           "add_group"]


class CommandError(Exception):
    """A user error: printed as one line, exit status `exit_code`."""

    exit_code = 1


@dataclass(frozen=True)
class CommandContext:
    """The open registry a command works on, and how it should answer.

    Attributes:
        db: The registry's database, migrated.
        blobs: The blob store, prepared.
        as_json: Print JSON instead of tables (`--json`).
        config: The daemon's config (`--config`), so that commands check
            names such as upstreams against what the daemon serves.
        installation: Where the config came from (None in-process).
        opened: What opening the database did, such as creating the
            embedded cluster (None in-process); `pypireg init` reports it.
    """

    db: Database
    blobs: BlobStore
    as_json: bool
    config: Config
    installation: Installation | None = None
    opened: OpenDatabase | None = None

    @property
    def actor(self) -> Actor:
        """Who the audit events of this command name: the admin command and its OS user."""
        return admin_actor()

    async def project(self, ref: str) -> Project:
        """The project with path or id *ref*.

        Raises:
            CommandError: There is none; the message points at `project list`.
        """
        project = await project_store.get_project(self.db, ref)
        if project is None:
            raise CommandError(f"no project {ref!r}; see `pypireg project list`")
        return project


def admin_actor() -> Actor:
    """The admin command as an audit actor, named by the OS user running it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = None
    return Actor.admin(user)


Handler: TypeAlias = Callable[[CommandContext, argparse.Namespace], Awaitable[str]]
"""Runs one subcommand and returns what to print; raises CommandError."""


def add_command(sub: Subparsers, name: str, handler: Handler, **kwargs: Any
                ) -> CommandParser:
    """Add the leaf subcommand *name* to *sub*, run by *handler*; return its parser.

    The leaf accepts `--config` and `--json` too, as every level does.
    """
    parser = sub.add_parser(name, **kwargs)
    add_common_options(parser, top_level=False)
    parser.set_defaults(handler=handler)
    return parser


def add_group(sub: Subparsers, name: str, text: str) -> Subparsers:
    """Add the subcommand group *name* (`pypireg project …`), helped by *text*.

    Returns its subparsers, for the leaf commands. Its errors name it by the
    words typed (`pypireg user token: ...`).
    """
    parser = sub.add_parser(name, help=text)
    add_common_options(parser, top_level=False)
    return parser.add_subcommands()
