"""`pypireg user …`, `pypireg member …` and `pypireg deploy-token …`.

Composition layer: users (owners of personal tokens), their project
memberships, and project deploy tokens. Project tokens (`pypireg token …`)
are in tokens.py, which also prints every token these commands create.
"""

from __future__ import annotations

import argparse

from pypireg.admin.context import (
    CommandContext,
    CommandError,
    Handler,
    Subparsers,
    add_command,
    add_group,
)
from pypireg.admin.output import render, table
from pypireg.admin.tokens import add_token_options, expiry_days, token_created, token_listing
from pypireg.domain.tokens import SCOPE_NAMES, Scope
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.users import ROLES, User, UserExists

# The command line names scopes as GitLab does (read_api, write_package_registry…).
_SCOPE_FROM_NAME: dict[str, Scope] = {
    name: scope for kind in SCOPE_NAMES.values() for scope, name in kind.items()
}


def add_parsers(sub: Subparsers) -> None:
    _add_user_parsers(sub)
    _add_member_parsers(sub)
    deploy = add_group(sub, "deploy-token", "project deploy tokens")
    create = add_command(deploy, "create", _create_deploy_token,
                         help="create a deploy token; printed once, last")
    create.add_argument("--project", required=True, help="project path or id")
    create.add_argument("--scope", required=True,
                        choices=["read_package_registry", "write_package_registry"])
    create.add_argument("--username", default=None,
                        help="the user name clients must send (default gitlab+deploy-token-ID)")
    add_token_options(create)


def _add_user_parsers(sub: Subparsers) -> None:
    user = add_group(sub, "user", "manage users (owners of personal tokens)")
    add_command(user, "create", _create_user, help="create a user; prints its id"
                ).add_argument("username")
    add_command(user, "list", _list_users, help="list users")
    for verb, blocked in (("block", True), ("unblock", False)):
        add_command(user, verb, _set_blocked(blocked),
                    help=f"{verb} a user: its tokens stop (or resume) working"
                    ).add_argument("username")
    token = add_group(user, "token", "personal access tokens")
    create = add_command(token, "create", _create_personal_token,
                         help="create a personal token; printed once, last")
    create.add_argument("username")
    create.add_argument("--scope", required=True, choices=["read_api", "api"])
    add_token_options(create)
    add_command(token, "list", _list_personal_tokens, help="list a user's personal tokens"
                ).add_argument("username")


def _add_member_parsers(sub: Subparsers) -> None:
    member = add_group(sub, "member", "project memberships")
    add = add_command(member, "add", _add_member, help="add a member, or change its role")
    add.add_argument("project", help="project path or id")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=list(ROLES),
                     help="reporter reads, developer uploads, maintainer also yanks/deletes")
    remove = add_command(member, "remove", _remove_member, help="remove a member")
    remove.add_argument("project")
    remove.add_argument("username")
    add_command(member, "list", _list_members, help="list a project's members"
                ).add_argument("project")


async def _user(ctx: CommandContext, name: str) -> User:
    found = await user_store.get_user(ctx.db, name)
    if found is None:
        raise CommandError(f"no user {name!r}; see `pypireg user list`")
    return found


async def _create_user(ctx: CommandContext, args: argparse.Namespace) -> str:
    try:
        created = await user_store.create_user(ctx.db, args.username, actor=ctx.actor)
    except UserExists:
        raise CommandError(f"user {args.username!r} exists already") from None
    return str(created.id)


async def _list_users(ctx: CommandContext, args: argparse.Namespace) -> str:
    users = await user_store.list_users(ctx.db)
    return render(
        ctx.as_json, [{"id": u.id, "username": u.username, "blocked": u.blocked} for u in users],
        table([(u.id, u.username, "blocked" if u.blocked else "active") for u in users],
              ["ID", "USER NAME", "STATE"]))


def _set_blocked(blocked: bool) -> Handler:
    async def handler(ctx: CommandContext, args: argparse.Namespace) -> str:
        target = await _user(ctx, args.username)
        await user_store.set_blocked(ctx.db, target.id, blocked, actor=ctx.actor)
        return f"{'Blocked' if blocked else 'Unblocked'} user {target.username}."

    return handler


async def _create_personal_token(ctx: CommandContext, args: argparse.Namespace) -> str:
    target = await _user(ctx, args.username)
    record, secret = await token_store.create_token(
        ctx.db, None, _SCOPE_FROM_NAME[args.scope], expires_in_days=expiry_days(args),
        description=args.description, kind="personal", user_id=target.id, actor=ctx.actor)
    return token_created(ctx, record, secret, f"user {target.username}")


async def _list_personal_tokens(ctx: CommandContext, args: argparse.Namespace) -> str:
    target = await _user(ctx, args.username)
    return token_listing(ctx, await token_store.list_user_tokens(ctx.db, target.id))


async def _add_member(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    target = await _user(ctx, args.username)
    await user_store.add_member(ctx.db, project.id, target.id, args.role, actor=ctx.actor)
    return f"{target.username} is {args.role} of {project.path}."


async def _remove_member(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    target = await _user(ctx, args.username)
    if not await user_store.remove_member(ctx.db, project.id, target.id,
                                           actor=ctx.actor):
        raise CommandError(f"{target.username} is not a member of {project.path}")
    return f"Removed {target.username} from {project.path}."


async def _list_members(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    members = await user_store.list_members(ctx.db, project.id)
    return render(
        ctx.as_json,
        [{"user_id": u.id, "username": u.username, "role": role} for u, role in members],
        table([(u.id, u.username, role) for u, role in members], ["ID", "USER NAME", "ROLE"]))


async def _create_deploy_token(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    record, secret = await token_store.create_token(
        ctx.db, project.id, _SCOPE_FROM_NAME[args.scope], expires_in_days=expiry_days(args),
        description=args.description, kind="deploy", username=args.username, actor=ctx.actor)
    return token_created(ctx, record, secret, f"project {project.path} (id {project.id})")
