"""`pypireg init [--config FILE | DIR]`: create an installation, and say what was made.

Composition layer. The one command allowed to create an installation (the
daemon is the other creator): the data folder, the embedded PostgreSQL
cluster when no DSN is configured, and the schema. The installation is the
one the other commands would find (see installation.py): `--config`, else
the folder DIR (its `pypireg.toml`, else its `pypireg-data/`), else
PYPIREG_CONFIG, else the current directory. cli.py opens (and so creates)
it before this handler runs, because the leaf says
`creates_installation=True`; the handler only reports. Run again on an
existing installation it changes nothing but pending migrations, and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pypireg.admin.context import CommandContext, Subparsers, add_command
from pypireg.admin.output import render
from pypireg.storage.migrations import schema_version


def add_parsers(sub: Subparsers) -> None:
    init = add_command(sub, "init", _init,
                       help="create an installation (data folder, database, schema)",
                       description="Create the installation the other commands and the daemon "
                                   "use: --config FILE's, or DIR's (its pypireg.toml, else "
                                   "DIR/pypireg-data), else $PYPIREG_CONFIG's, else the "
                                   "current directory's.")
    init.add_argument("installation_folder", nargs="?", type=Path, metavar="DIR",
                      help="create DIR/pypireg-data (or use DIR/pypireg.toml)")
    init.set_defaults(creates_installation=True)


async def _init(ctx: CommandContext, args: argparse.Namespace) -> str:
    # cli.py made these when it opened the installation for this leaf.
    assert ctx.installation is not None and ctx.opened is not None
    installation, opened = ctx.installation, ctx.opened
    embedded = opened.embedded
    version = await schema_version(ctx.db)
    made = {
        "config": str(installation.config_path) if installation.config_path else None,
        "data_folder": str(installation.data_folder),
        "data_folder_created": not installation.data_folder_existed,
        "database": "embedded" if embedded is not None else "dsn",
        "cluster": str(embedded.pgdata) if embedded is not None else None,
        "cluster_created": embedded is not None and embedded.created,
        "server_user": embedded.server_user if embedded is not None else None,
        "migrations_applied": opened.applied,
        "schema_version": version,
    }
    return render(ctx.as_json, made, _describe(made))


def _describe(made: dict[str, Any]) -> str:
    if not (made["data_folder_created"] or made["cluster_created"] or made["migrations_applied"]):
        return (f"{made['data_folder']} is a pypireg installation already (schema version "
                f"{made['schema_version']}); nothing to do.")
    folder = "created" if made["data_folder_created"] else "existed"
    if made["database"] == "embedded":
        runs_as = f", runs as {made['server_user']}" if made["server_user"] else ""
        state = "created" if made["cluster_created"] else "existed"
        database = f"embedded PostgreSQL in {made['cluster']} ({state}{runs_as})"
    else:
        database = "the database [database] dsn names"
    applied = made["migrations_applied"]
    schema = (f"schema version {made['schema_version']}"
              + (f" ({len(applied)} migrations applied)" if applied else ""))
    if made["config"] is not None:
        start = f"twistd -n pypireg --config {made['config']}"
    else:
        start = f"cd {Path(made['data_folder']).parent} && twistd -n pypireg"
    return "\n".join([
        "Initialised a pypireg installation:",
        f"  data folder  {made['data_folder']} ({folder})",
        f"  database     {database}, {schema}",
        f"Start the daemon with: {start}",
    ])
