"""Access tokens (project, deploy and personal): only their hashes are stored.

Storage layer. See schema/0006 for what each kind reaches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pypireg.domain.tokens import SCOPE_NAMES, Kind, Scope, generate_token, hash_token
from pypireg.storage.database import Database

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
) -> tuple[TokenRecord, str]:
    """Create a token; return its record and the secret, which is never stored.

    Deploy tokens without a user name get GitLab's `gitlab+deploy-token-<id>`.
    The expiry is *expires_at*, else *expires_in_days* from now, else none.
    """
    secret = generate_token()
    row = await db.fetch_one(
        "WITH next AS (SELECT nextval(pg_get_serial_sequence('tokens', 'id')) AS id)"
        " INSERT INTO tokens (id, project_id, scope, token_hash, hint, description,"
        " expires_at, kind, user_id, username)"
        " SELECT next.id, %s, %s, %s, %s, %s,"
        "  coalesce(%s::timestamptz, CASE WHEN %s::int IS NULL THEN NULL"
        "   ELSE now() + make_interval(days => %s::int) END),"
        "  %s, %s,"
        "  CASE WHEN %s = 'deploy' THEN coalesce(%s, 'gitlab+deploy-token-' || next.id)"
        "  ELSE NULL END"
        f" FROM next RETURNING {_COLUMNS}",
        (project_id, scope, hash_token(secret), secret[:12], description,
         expires_at, expires_in_days, expires_in_days, kind, user_id, kind, username),
    )
    assert row is not None
    return _token(row), secret


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


async def revoke_token(db: Database, token_id: int) -> bool:
    row = await db.fetch_one(
        "UPDATE tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (token_id,),
    )
    return row is not None


async def touch_tokens(db: Database, token_ids: Iterable[int]) -> None:
    """Record use of many tokens in one statement (see http.auth's batching)."""
    ids = sorted(set(token_ids))
    if ids:
        await db.execute("UPDATE tokens SET last_used_at = now() WHERE id = ANY(%s)", (ids,))
