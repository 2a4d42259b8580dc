"""Which upstreams a project's or group's index includes: the options, the checks, the display.

Composition layer, shared by `project update`, `group update` and
`pypireg upstream …`. The database keeps one list per index: NULL means
every configured upstream in config order (so a new `[[upstreams]]` entry
reaches every index that never chose), an empty list none. Names are checked
against the config when an admin sets them; an index may still name an
upstream that was later removed from the config, which is then skipped
(`pypireg upstream status` points it out).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pypireg.admin.context import CommandError
from pypireg.config import Config, UpstreamConfig
from pypireg.domain.audit import Actor
from pypireg.storage import upstream_cache as cache
from pypireg.storage.database import Database


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add `--upstreams NAMES`, `--no-upstreams` and `--default-upstreams` (one at most)."""
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--upstreams", metavar="NAMES",
                        help="include only these configured upstreams, comma-separated, "
                             "asked in this order (e.g. public,other)")
    choice.add_argument("--no-upstreams", action="store_true",
                        help="include no upstream: only the index's own packages")
    choice.add_argument("--default-upstreams", action="store_true",
                        help="include every configured upstream, in config order (the "
                             "default)")


@dataclass(frozen=True)
class UpstreamChoice:
    """What the options asked for.

    Attributes:
        upstreams: The upstream names in the order the index asks them, or
            None for every configured upstream.
    """

    upstreams: tuple[str, ...] | None


def chosen(config: Config, args: argparse.Namespace) -> UpstreamChoice | None:
    """The choice the options of `add_options` made, checked against *config*.

    Returns:
        None when none of the options was given (leave the index as it is).

    Raises:
        CommandError: `--upstreams` names an unconfigured upstream, one twice,
            or an empty name.
    """
    if args.default_upstreams:
        return UpstreamChoice(None)
    if args.no_upstreams:
        return UpstreamChoice(())
    if args.upstreams is None:
        return None
    return UpstreamChoice(_names(config, args.upstreams))


def _names(config: Config, text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise CommandError("--upstreams takes upstream names separated by commas, e.g. "
                           "--upstreams public,other; use --no-upstreams for none")
    for name in names:
        configured(config, name)
    for i, name in enumerate(names):
        if name in names[:i]:
            raise CommandError(f"--upstreams names {name!r} twice; give each upstream once, "
                               "in the order the index should ask them")
    return tuple(names)


def configured(config: Config, name: str) -> UpstreamConfig:
    """The upstream *name* of *config*.

    Raises:
        CommandError: There is none; the message lists those there are.
    """
    for upstream in config.upstreams:
        if upstream.name == name:
            return upstream
    if not config.upstreams:
        # Most often the command was run without the daemon's config file.
        raise CommandError(f"unknown upstream {name!r}: no upstreams are configured; give "
                           "the daemon's config with --config, or add [[upstreams]] to it")
    names = ", ".join(u.name for u in config.upstreams)
    raise CommandError(f"unknown upstream {name!r}; the configured upstreams are: {names}")


def describe(upstreams: Sequence[str] | None) -> str:
    """The UPSTREAMS column: "default", "none", or the names in order."""
    if upstreams is None:
        return "default"
    return ",".join(upstreams) if upstreams else "none"


def in_use(config: Config, upstreams: Sequence[str] | None) -> list[UpstreamConfig]:
    """The configured upstreams an index whose list is *upstreams* asks, in its order."""
    if upstreams is None:
        return list(config.upstreams)
    by_name = {u.name: u for u in config.upstreams}
    return [by_name[name] for name in upstreams if name in by_name]


async def apply(db: Database, choice: UpstreamChoice | None, actor: Actor, *,
                project_id: int | None = None, group_id: int | None = None
                ) -> list[str] | None:
    """Store *choice* (if any) for one project or group; return its list as it now is."""
    if choice is not None:
        await cache.set_index_upstreams(db, choice.upstreams, project_id=project_id,
                                        group_id=group_id, actor=actor)
    return await cache.index_upstreams(db, project_id=project_id, group_id=group_id)


async def by_id(db: Database, kind: Literal["project", "group"]) -> dict[int, list[str] | None]:
    """Each project's (or group's) list, by id, for the `list` commands."""
    return {i.id: i.upstreams for i in await cache.all_index_upstreams(db) if i.kind == kind}
