"""The admin command's access part: users, memberships and their tokens.

`pypireg user …`, `pypireg member …` and `pypireg deploy-token …`; project
tokens (`pypireg token …`) live in cli.py. Every new token is printed once,
alone on the last line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pypireg.domain.tokens import SCOPE_NAMES, Kind, Scope
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.database import Database
from pypireg.storage.tokens import TokenRecord
from pypireg.storage.users import ROLES, User, UserExists

_SCOPE_FROM_NAME: dict[str, Scope] = {
    name: scope for kind in SCOPE_NAMES.values() for scope, name in kind.items()
}


def add_parsers(sub: Any) -> None:
    user = sub.add_parser("user", help="manage users (owners of personal tokens)"
                          ).add_subparsers(dest="command", required=True)
    ucreate = user.add_parser("create", help="create a user; prints its id")
    ucreate.add_argument("username")
    user.add_parser("list", help="list users")
    for verb in ("block", "unblock"):
        ublock = user.add_parser(verb, help=f"{verb} a user: its tokens stop (or resume) working")
        ublock.add_argument("username")
    utoken = user.add_parser("token", help="personal access tokens"
                             ).add_subparsers(dest="subcommand", required=True)
    utcreate = utoken.add_parser("create", help="create a personal token; printed once, last")
    utcreate.add_argument("username")
    utcreate.add_argument("--scope", required=True, choices=["read_api", "api"])
    _token_options(utcreate)
    utlist = utoken.add_parser("list", help="list a user's personal tokens")
    utlist.add_argument("username")

    member = sub.add_parser("member", help="project memberships"
                            ).add_subparsers(dest="command", required=True)
    madd = member.add_parser("add", help="add a member, or change its role")
    madd.add_argument("project", help="project path or id")
    madd.add_argument("username")
    madd.add_argument("--role", required=True, choices=list(ROLES),
                      help="reporter reads, developer uploads, maintainer also yanks/deletes")
    mremove = member.add_parser("remove", help="remove a member")
    mremove.add_argument("project")
    mremove.add_argument("username")
    mlist = member.add_parser("list", help="list a project's members")
    mlist.add_argument("project")

    deploy = sub.add_parser("deploy-token", help="project deploy tokens"
                            ).add_subparsers(dest="command", required=True)
    dcreate = deploy.add_parser("create", help="create a deploy token; printed once, last")
    dcreate.add_argument("--project", required=True, help="project path or id")
    dcreate.add_argument("--scope", required=True,
                         choices=["read_package_registry", "write_package_registry"])
    dcreate.add_argument("--username", default=None,
                         help="the user name clients must send (default gitlab+deploy-token-ID)")
    _token_options(dcreate)


def _token_options(parser: Any) -> None:
    parser.add_argument("--expires-in", type=int, metavar="DAYS", help="expire after DAYS days")
    parser.add_argument("--description", default="", help="what the token is for")


def token_created(record: TokenRecord, secret: str, owner: str, as_json: bool) -> str:
    if as_json:
        return json.dumps({"id": record.id, "kind": record.kind, "scope": record.scope_name,
                           "project_id": record.project_id, "user_id": record.user_id,
                           "username": record.username, "expires_at": iso(record.expires_at),
                           "token": secret})
    expiry = iso(record.expires_at) or "never"
    user = f", user name {record.username}" if record.username else ""
    return (f"Created {record.kind} token {record.id} ({record.scope_name}) for {owner}{user}, "
            f"expires: {expiry}.\nStore it now; it is not shown again:\n{secret}")


def token_rows(tokens: list[TokenRecord]) -> list[dict[str, Any]]:
    return [{"id": t.id, "kind": t.kind, "scope": t.scope_name, "username": t.username,
             "hint": t.hint + "…", "description": t.description,
             "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
             "revoked_at": iso(t.revoked_at), "last_used_at": iso(t.last_used_at)}
            for t in tokens]


TOKEN_HEADERS = ["ID", "KIND", "SCOPE", "USER NAME", "TOKEN", "DESCRIPTION", "CREATED",
                 "EXPIRES", "REVOKED", "LAST USED"]


def iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


async def run(db: Database, args: argparse.Namespace, project_of: Any, table: Any,
              error: type[Exception]) -> str:
    """Run a user/member/deploy-token command; *project_of* resolves a project."""
    as_json: bool = args.json

    async def user_of(name: str) -> User:
        found = await user_store.get_user(db, name)
        if found is None:
            raise error(f"no user {name!r}; see `pypireg user list`")
        return found

    def expiry_days() -> int | None:
        if args.expires_in is not None and args.expires_in <= 0:
            raise error("--expires-in must be a positive number of days")
        days: int | None = args.expires_in
        return days

    if args.group == "user":
        if args.command == "create":
            try:
                created = await user_store.create_user(db, args.username)
            except UserExists:
                raise error(f"user {args.username!r} exists already") from None
            return str(created.id)
        if args.command == "list":
            users = await user_store.list_users(db)
            rows = [{"id": u.id, "username": u.username, "blocked": u.blocked} for u in users]
            return json.dumps(rows) if as_json else table(
                [(u.id, u.username, "blocked" if u.blocked else "active") for u in users],
                ["ID", "USER NAME", "STATE"])
        if args.command in ("block", "unblock"):
            target = await user_of(args.username)
            await user_store.set_blocked(db, target.id, args.command == "block")
            return f"{args.command.capitalize()}ed user {target.username}."
        target = await user_of(args.username)
        if args.subcommand == "create":
            record, secret = await token_store.create_token(
                db, None, _SCOPE_FROM_NAME[args.scope], expires_in_days=expiry_days(),
                description=args.description, kind="personal", user_id=target.id)
            return token_created(record, secret, f"user {target.username}", as_json)
        rows = token_rows(await token_store.list_user_tokens(db, target.id))
        return json.dumps(rows) if as_json else table([list(r.values()) for r in rows],
                                                       TOKEN_HEADERS)
    if args.group == "member":
        project = await project_of(args.project)
        if args.command == "list":
            members = await user_store.list_members(db, project.id)
            if as_json:
                return json.dumps([{"user_id": u.id, "username": u.username, "role": role}
                                   for u, role in members])
            text: str = table([(u.id, u.username, role) for u, role in members],
                              ["ID", "USER NAME", "ROLE"])
            return text
        target = await user_of(args.username)
        if args.command == "add":
            await user_store.add_member(db, project.id, target.id, args.role)
            return f"{target.username} is {args.role} of {project.path}."
        if not await user_store.remove_member(db, project.id, target.id):
            raise error(f"{target.username} is not a member of {project.path}")
        return f"Removed {target.username} from {project.path}."
    # deploy-token create
    project = await project_of(args.project)
    kind: Kind = "deploy"
    record, secret = await token_store.create_token(
        db, project.id, _SCOPE_FROM_NAME[args.scope], expires_in_days=expiry_days(),
        description=args.description, kind=kind, username=args.username)
    return token_created(record, secret, f"project {project.path} (id {project.id})", as_json)
