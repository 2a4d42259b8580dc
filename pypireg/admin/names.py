"""`pypireg name …` and `pypireg namespace …`: who may use a package name.

Composition layer. `name reserve` makes a name local to a project before
any upload (it is then never served from an upstream); `name claim` turns
a name first served from an upstream into a local one, so it can be
uploaded (an admin's decision: the proxy will no longer serve it);
`namespace grant` gives one project or group a PEP 752 prefix.
"""

from __future__ import annotations

import argparse
from typing import Any

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import iso, render, table
from pypireg.domain.names import is_valid_name, normalize_name
from pypireg.storage import groups as group_store
from pypireg.storage import name_origins as origin_store
from pypireg.storage.name_origins import ForeignNamespace, NameOrigin, Namespace, NamespaceTaken


def add_parsers(sub: Subparsers) -> None:
    name = add_group(sub, "name", "fix where a project's package names come from")
    for verb, handler, text in (
            ("reserve", _reserve, "make a name local to a project before any upload"),
            ("claim", _claim, "make a name first served from an upstream local, so it can "
                              "be uploaded")):
        command = add_command(name, verb, handler, help=text)
        command.add_argument("project", help="project path or id")
        command.add_argument("name", help="package name")
    add_command(name, "list", _list_names, help="a project's names and their origins"
                ).add_argument("project", help="project path or id")

    namespace = add_group(sub, "namespace", "PEP 752 namespace grants")
    grant = add_command(namespace, "grant", _grant,
                        help="give PREFIX and PREFIX-* to one project or group")
    owner = grant.add_mutually_exclusive_group(required=True)
    owner.add_argument("--project", help="project path or id")
    owner.add_argument("--group", help="group path or id")
    grant.add_argument("prefix", help="the namespace, e.g. acme")
    add_command(namespace, "list", _list_namespaces, help="list namespace grants")
    add_command(namespace, "revoke", _revoke, help="remove a namespace grant"
                ).add_argument("prefix")


def package_name(text: str) -> str:
    """*text* checked as a package name and normalised (PEP 503).

    Raises:
        CommandError: It is not a valid name; the message says what is.
    """
    if not is_valid_name(text):
        raise CommandError(f"invalid package name {text!r}: ASCII letters, digits, '.', '_' "
                           "and '-', starting and ending with a letter or digit")
    return normalize_name(text)


def _origin_row(o: NameOrigin) -> dict[str, Any]:
    return {"name": o.name, "origin": o.origin, "upstream": o.upstream, "reason": o.reason,
            "decided_at": iso(o.decided_at)}


def _describe(o: NameOrigin) -> str:
    source = f"upstream {o.upstream}" if o.origin == "upstream" else "local"
    return f"{o.name}: {source} ({o.reason})"


async def _reserve(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    name = package_name(args.name)
    try:
        found = await origin_store.reserve_name(ctx.db, project.id, name, actor=ctx.actor)
    except ForeignNamespace as e:
        raise CommandError(f"{name} is in the namespace {e.namespace!r}, granted to another "
                           "owner") from None
    if found.origin == "upstream":
        raise CommandError(f"{name} already comes from the upstream {found.upstream!r} in "
                           f"{project.path}; use `pypireg name claim` to make it local")
    return render(ctx.as_json, _origin_row(found), _describe(found))


async def _claim(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    found = await origin_store.claim_name(ctx.db, project.id, package_name(args.name),
                                         actor=ctx.actor)
    return render(ctx.as_json, _origin_row(found), _describe(found))


async def _list_names(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    origins = await origin_store.list_origins(ctx.db, project.id)
    return render(ctx.as_json, [_origin_row(o) for o in origins], table(
        [(o.name, o.origin, o.upstream, o.reason) for o in origins],
        ["NAME", "ORIGIN", "UPSTREAM", "REASON"]))


def _namespace_row(n: Namespace) -> dict[str, Any]:
    return {"prefix": n.prefix, "display": n.display, "owner": n.owner,
            "owner_kind": "project" if n.project_id is not None else "group",
            "granted_at": iso(n.granted_at)}


async def _grant(ctx: CommandContext, args: argparse.Namespace) -> str:
    prefix = package_name(args.prefix)
    if args.project is not None:
        project = await ctx.project(args.project)
        owner: dict[str, int] = {"project_id": project.id}
    else:
        group = await group_store.get_group(ctx.db, args.group)
        if group is None:
            raise CommandError(f"no group {args.group!r}; see `pypireg group list`")
        owner = {"group_id": group.id}
    try:
        granted = await origin_store.grant_namespace(ctx.db, prefix, args.prefix, **owner,
                                                     actor=ctx.actor)
    except NamespaceTaken:
        raise CommandError(f"the namespace {prefix!r} is granted already; see "
                           "`pypireg namespace list`") from None
    return render(ctx.as_json, _namespace_row(granted),
                  f"Granted {granted.prefix} and {granted.prefix}-* to {granted.owner}.")


async def _list_namespaces(ctx: CommandContext, args: argparse.Namespace) -> str:
    grants = await origin_store.list_namespaces(ctx.db)
    return render(ctx.as_json, [_namespace_row(n) for n in grants], table(
        [(n.prefix, n.owner, "project" if n.project_id is not None else "group")
         for n in grants], ["PREFIX", "OWNER", "KIND"]))


async def _revoke(ctx: CommandContext, args: argparse.Namespace) -> str:
    prefix = package_name(args.prefix)
    if not await origin_store.revoke_namespace(ctx.db, prefix, actor=ctx.actor):
        raise CommandError(f"no namespace {prefix!r}; see `pypireg namespace list`")
    return f"Revoked the namespace {prefix}."
