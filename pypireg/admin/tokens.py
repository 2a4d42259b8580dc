"""`pypireg token create|list|revoke`: project tokens; and how any token prints.

Composition layer. The helpers below the handlers are shared with
users.py (personal and deploy tokens): every new token is printed once,
alone on the last line, and listings never show a secret.
"""

from __future__ import annotations

import argparse
from typing import Any

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import iso, render, table
from pypireg.storage import tokens as token_store
from pypireg.storage.tokens import TokenRecord

TOKEN_HEADERS = ["ID", "KIND", "SCOPE", "USER NAME", "TOKEN", "DESCRIPTION", "CREATED",
                 "EXPIRES", "REVOKED", "LAST USED"]


def add_parsers(sub: Subparsers) -> None:
    token = add_group(sub, "token", "manage access tokens")
    create = add_command(token, "create", _create, help="create a token; prints it once, last")
    create.add_argument("--project", required=True, help="project path or id")
    create.add_argument("--scope", required=True, choices=["read", "write"])
    add_token_options(create)
    listing = add_command(token, "list", _list, help="list a project's tokens")
    listing.add_argument("--project", required=True, help="project path or id")
    revoke = add_command(token, "revoke", _revoke, help="revoke a token by id")
    revoke.add_argument("token_id", type=int)


async def _create(ctx: CommandContext, args: argparse.Namespace) -> str:
    p = await ctx.project(args.project)
    record, secret = await token_store.create_token(
        ctx.db, p.id, args.scope, expires_in_days=expiry_days(args),
        description=args.description, actor=ctx.actor)
    return token_created(ctx, record, secret, f"project {p.path} (id {p.id})")


async def _list(ctx: CommandContext, args: argparse.Namespace) -> str:
    p = await ctx.project(args.project)
    return token_listing(ctx, await token_store.list_tokens(ctx.db, p.id))


async def _revoke(ctx: CommandContext, args: argparse.Namespace) -> str:
    if not await token_store.revoke_token(ctx.db, args.token_id, actor=ctx.actor):
        raise CommandError(f"no active token with id {args.token_id}")
    return f"Revoked token {args.token_id}."


def add_token_options(parser: argparse.ArgumentParser) -> None:
    """The options every `… create` of a token takes: expiry and description."""
    parser.add_argument("--expires-in", type=int, metavar="DAYS", help="expire after DAYS days")
    parser.add_argument("--description", default="", help="what the token is for")


def expiry_days(args: argparse.Namespace) -> int | None:
    """`--expires-in`, checked.

    Raises:
        CommandError: It is zero or negative.
    """
    days: int | None = args.expires_in
    if days is not None and days <= 0:
        raise CommandError("--expires-in must be a positive number of days")
    return days


def token_created(ctx: CommandContext, record: TokenRecord, secret: str, owner: str) -> str:
    """Report a new token of *owner*; its secret goes alone on the last line."""
    expiry = iso(record.expires_at) or "never"
    user = f", user name {record.username}" if record.username else ""
    text = (f"Created {record.kind} token {record.id} ({record.scope_name}) for {owner}{user}, "
            f"expires: {expiry}.\nStore it now; it is not shown again:\n{secret}")
    return render(ctx.as_json, {
        "id": record.id, "kind": record.kind, "scope": record.scope_name,
        "project_id": record.project_id, "user_id": record.user_id,
        "username": record.username, "expires_at": iso(record.expires_at), "token": secret,
    }, text)


def token_listing(ctx: CommandContext, tokens: list[TokenRecord]) -> str:
    """A table (or JSON) of *tokens*: the secret's hint, never the secret."""
    rows = [_token_row(t) for t in tokens]
    return render(ctx.as_json, rows, table([list(r.values()) for r in rows], TOKEN_HEADERS))


def _token_row(t: TokenRecord) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "scope": t.scope_name, "username": t.username,
            "hint": t.hint + "…", "description": t.description,
            "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
            "revoked_at": iso(t.revoked_at), "last_used_at": iso(t.last_used_at)}
