"""Access tokens (project, deploy and personal): only their hashes are stored.

Storage layer. See schema/0006 for what each kind reaches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pypireg.domain.audit import Actor, Event
from pypireg.domain.tokens import SCOPE_NAMES, Kind, Scope, generate_token, hash_token
from pypireg.storage.audit import audited, fetch_one
from pypireg.storage.database import Cursor, Database

_COLUMNS = ("id, project_id, scope, hint, description, created_at, expires_at, revoked_at,"
            " last_used_at, kind, user_id, username")


@dataclass(frozen=True)
class TokenRecord:
    id: int
    project_id: int | None
    scope: Scope
    hint: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    kind: Kind = "project"
    user_id: int | None = None
    username: str | None = None

    @property
    def scope_name(self) -> str:
        return SCOPE_NAMES[self.kind][self.scope]


def _token(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(*row)


# For the other stores that insert tokens (trusted_publishing.py's minted ones).
TOKEN_COLUMNS = _COLUMNS
token_from_row = _token


async def create_token(
    db: Database,
    project_id: int | None,
    scope: Scope,
    *,
    expires_in_days: int | None = None,
    expires_at: datetime | None = None,
    description: str = "",
    kind: Kind = "project",
    user_id: int | None = None,
    username: str | None = None,
    actor: Actor | None = None,
) -> tuple[TokenRecord, str]:
    """Create a token; return its record and the secret, which is never stored.

    Deploy tokens without a user name get GitLab's `gitlab+deploy-token-<id>`.
    The expiry is *expires_at*, else *expires_in_days* from now, else none.
    *actor*'s audit event names the token by id, never by its secret.
    """
    secret = generate_token()
    query = (
        "WITH next AS (SELECT nextval(pg_get_serial_sequence('tokens', 'id')) AS id)"
        " INSERT INTO tokens (id, project_id, scope, token_hash, hint, description,"
        " expires_at, kind, user_id, username)"
        " SELECT next.id, %s, %s, %s, %s, %s,"
        "  coalesce(%s::timestamptz, CASE WHEN %s::int IS NULL THEN NULL"
        "   ELSE now() + make_interval(days => %s::int) END),"
        "  %s, %s,"
        "  CASE WHEN %s = 'deploy' THEN coalesce(%s, 'gitlab+deploy-token-' || next.id)"
        "  ELSE NULL END"
        f" FROM next RETURNING {_COLUMNS}")
    params = (project_id, scope, hash_token(secret), secret[:12], description,
              expires_at, expires_in_days, expires_in_days, kind, user_id, kind, username)

    async def change(cur: Cursor) -> tuple[TokenRecord, str | None]:
        created = await _with_owner(cur, await fetch_one(cur, query, params))
        assert created is not None
        return created

    record, _ = await audited(db, actor, change,
                              lambda created: token_event("token.create", *created))
    return record, secret


async def _with_owner(cur: Cursor, row: tuple[Any, ...] | None
                      ) -> tuple[TokenRecord, str | None] | None:
    """The token of *row* and, for a personal token, its user's name (for the event)."""
    if row is None:
        return None
    token = _token(row)
    owner = await fetch_one(cur, "SELECT username FROM users WHERE id = %s", (token.user_id,)
                            ) if token.user_id is not None else None
    return token, owner[0] if owner else None


def token_event(action: str, token: TokenRecord, owner: str | None) -> Event:
    """The audit event of creating or revoking *token*: what `token list` shows of it.

    *owner* is a personal token's user name; a deploy token's is its own.
    """
    return Event(action, "token", token.id, f"{token.kind} token {token.id}",
                 project_id=token.project_id, details={
                     "kind": token.kind, "scope": token.scope_name,
                     "description": token.description, "user_id": token.user_id,
                     "username": owner or token.username, "expires_at": token.expires_at})


async def find_live_token(db: Database, secret: str) -> TokenRecord | None:
    """The token with this secret, unless it is unknown, revoked or expired."""
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM tokens WHERE token_hash = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        (hash_token(secret),),
    )
    return _token(row) if row else None


async def list_tokens(db: Database, project_id: int) -> list[TokenRecord]:
    """A project's project and deploy tokens."""
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM tokens WHERE project_id = %s ORDER BY id", (project_id,)
    )
    return [_token(r) for r in rows]


async def list_user_tokens(db: Database, user_id: int) -> list[TokenRecord]:
    """A user's personal tokens."""
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM tokens WHERE user_id = %s ORDER BY id", (user_id,)
    )
    return [_token(r) for r in rows]


async def revoke_token(db: Database, token_id: int, *, actor: Actor | None = None) -> bool:
    """Revoke a live token; False if there is none with that id (nothing is recorded)."""

    async def change(cur: Cursor) -> tuple[TokenRecord, str | None] | None:
        return await _with_owner(cur, await fetch_one(
            cur, "UPDATE tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
            f" RETURNING {_COLUMNS}", (token_id,)))

    revoked = await audited(db, actor, change,
                            lambda found: token_event("token.revoke", *found) if found else None)
    return revoked is not None


async def touch_tokens(db: Database, token_ids: Iterable[int]) -> None:
    """Record use of many tokens in one statement (see http.auth's batching)."""
    ids = sorted(set(token_ids))
    if ids:
        await db.execute("UPDATE tokens SET last_used_at = now() WHERE id = ANY(%s)", (ids,))
