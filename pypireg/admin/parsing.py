"""The admin command's argparse layer: one parser class for every level of subcommands.

Composition layer. Two things argparse does not do by itself:

- Options that read naturally anywhere. `--config` and `--json` are
  accepted before the subcommand and after it (`pypireg --json project
  list`, `pypireg project list --json`). Every subparser carries them with
  `SUPPRESS` as default: argparse copies a subparser's whole namespace over
  its parent's, so a plain default (`False`) given by the subparser would
  undo a `--json` the user put before the subcommand.
- Errors that name what the user typed. Every message starts with the
  subcommand path (`pypireg project: invalid choice 'lst' (choose from
  create, list, update)`), never with the internal name argparse stores
  the choice under, and is one line; the exit status stays argparse's 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

# What `add_subparsers()` returns: private, and not subscriptable at run time
# (hence the string), so it is named once, here.
Subparsers: TypeAlias = "argparse._SubParsersAction[CommandParser]"

USAGE_ERROR = 2


def add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """Give *parser* the options every level accepts.

    Only the top level sets the defaults; below it an option is stored only
    when given, so it never overrides the same option given further left.
    """
    config_default: Any = None if top_level else argparse.SUPPRESS
    json_default: Any = False if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--config", "-c", type=Path, default=config_default, metavar="FILE",
        help="the daemon's TOML config file (default: $PYPIREG_CONFIG, else ./pypireg.toml, "
             "else ./pypireg-data)")
    parser.add_argument("--json", action="store_true", default=json_default,
                        help="print JSON instead of tables")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors name the subcommand path and fit on one line."""

    _subcommands: Subparsers | None = None

    def add_subcommands(self) -> Subparsers:
        """The subcommands of this level (a leaf is then required below it)."""
        # Not required=True: argparse would then report the missing word by its
        # dest ("the following arguments are required: command"); the check in
        # parse_known_args lists the choices instead. dest=SUPPRESS: the chosen
        # name is of no use (each leaf names its handler), and a dest could
        # collide with an option of the same name (`--group`).
        sub = self.add_subparsers(dest=argparse.SUPPRESS, parser_class=CommandParser)
        self._subcommands = sub
        return sub

    def parse_known_args(self, args: Iterable[str] | None = None,
                         namespace: Any = None) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if self._subcommands is not None:
            # Every leaf sets `handler`; its absence means the user stopped at
            # this level. Subparsers parse first, so the innermost level
            # reports it.
            if getattr(parsed, "handler", None) is None:
                self.error(f"choose a subcommand ({', '.join(self._subcommands.choices)})")
        elif extras:
            # Here, not at the top level, so the message names this leaf.
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse would say "argument <dest>: invalid choice: ..."; for a
        # subcommand the dest means nothing to the user, so the subcommand
        # path alone names it, and options are named as typed.
        if action.choices is None or value in action.choices:
            return
        choices = ", ".join(map(str, action.choices))
        if isinstance(action, argparse._SubParsersAction):
            self.error(f"invalid choice {value!r} (choose from {choices})")
        name = "/".join(action.option_strings) or action.metavar or action.dest
        self.error(f"{name}: invalid choice {value!r} (choose from {choices})")

    def error(self, message: str) -> NoReturn:
        """Print `<subcommand path>: <message>` on one line to stderr and exit 2."""
        self.exit(USAGE_ERROR, f"{self.prog}: {' '.join(message.split())}\n")
