"""Trusted publishing's tables: publishers, issuers' keys, used ID tokens, minted tokens.

Storage layer; schema/0019 says what each table holds. Everything a daemon
decides an exchange with lives here, so every daemon decides the same:
the issuers' keys are cached for all of them, and an ID token's `jti` is
recorded once for all of them (a replay on another daemon is refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pypireg.domain.audit import Actor, Event
from pypireg.domain.tokens import generate_token, hash_token
from pypireg.domain.trusted_publishing import IssuerKind, JobFacts, Publisher
from pypireg.storage.audit import audited, fetch_one, insert_events
from pypireg.storage.database import Cursor, Database
from pypireg.storage.tokens import TOKEN_COLUMNS, TokenRecord, token_event, token_from_row

_PUBLISHER_COLUMNS = ("id, project_id, issuer, kind, repository, workflow, environment,"
                      " owner_id, claims")
_PUBLISHER_COLUMNS_T = ("t.id, t.project_id, t.issuer, t.kind, t.repository, t.workflow,"
                        " t.environment, t.owner_id, t.claims")


def _publisher(row: tuple[Any, ...]) -> Publisher:
    (id_, project_id, issuer, kind, repository, workflow, environment, owner_id,
     claims) = row
    return Publisher(id_, project_id, issuer, kind, repository, workflow, environment,
                     owner_id, dict(claims or {}))


async def add_publisher(db: Database, project_id: int, issuer: str, kind: IssuerKind, *,
                        repository: str | None = None, workflow: str | None = None,
                        environment: str | None = None, owner_id: str | None = None,
                        claims: Mapping[str, str] | None = None, actor: Actor | None = None
                        ) -> Publisher:
    async def change(cur: Cursor) -> Publisher:
        row = await fetch_one(
            cur,
            "INSERT INTO trusted_publishers (project_id, issuer, kind, repository, workflow,"
            " environment, owner_id, claims) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
            f" RETURNING {_PUBLISHER_COLUMNS}",
            (project_id, issuer, kind, repository, workflow, environment, owner_id,
             json.dumps(dict(claims or {}))),
        )
        assert row is not None
        return _publisher(row)

    return await audited(db, actor, change,
                         lambda p: _publisher_event("trusted_publisher.add", p))


def _publisher_event(action: str, p: Publisher) -> Event:
    return Event(action, "trusted_publisher", p.id, f"{p.kind} publisher {p.id}",
                 project_id=p.project_id, details={
                     "issuer": p.issuer, "kind": p.kind, "repository": p.repository,
                     "workflow": p.workflow, "environment": p.environment,
                     "owner_id": p.owner_id, "claims": dict(p.claims)})


async def list_publishers(db: Database, project_id: int) -> list[Publisher]:
    rows = await db.fetch_all(
        f"SELECT {_PUBLISHER_COLUMNS} FROM trusted_publishers WHERE project_id = %s"
        " ORDER BY id", (project_id,))
    return [_publisher(r) for r in rows]


async def publishers_of_issuer(db: Database, issuer: str) -> list[Publisher]:
    """Every publisher of *issuer*, in every project whose packages are enabled."""
    rows = await db.fetch_all(
        f"SELECT {_PUBLISHER_COLUMNS_T}"
        " FROM trusted_publishers t JOIN projects p ON p.id = t.project_id"
        " WHERE t.issuer = %s AND p.packages_enabled ORDER BY t.id", (issuer,))
    return [_publisher(r) for r in rows]


async def get_publisher(db: Database, publisher_id: int) -> Publisher | None:
    row = await db.fetch_one(
        f"SELECT {_PUBLISHER_COLUMNS} FROM trusted_publishers WHERE id = %s", (publisher_id,))
    return _publisher(row) if row else None


async def remove_publisher(db: Database, publisher_id: int, *, actor: Actor | None = None
                           ) -> bool:
    """Remove a publisher; the tokens it minted stay until they expire (15 minutes)."""
    async def change(cur: Cursor) -> Publisher | None:
        row = await fetch_one(
            cur, f"DELETE FROM trusted_publishers WHERE id = %s RETURNING {_PUBLISHER_COLUMNS}",
            (publisher_id,))
        return _publisher(row) if row else None

    removed = await audited(db, actor, change, lambda p: None if p is None
                            else _publisher_event("trusted_publisher.remove", p))
    return removed is not None


async def pin_owner_id(db: Database, publisher_id: int, owner_id: str) -> None:
    """Record a GitHub publisher's repository_owner_id at its first use."""
    await db.execute(
        "UPDATE trusted_publishers SET owner_id = %s WHERE id = %s AND owner_id IS NULL",
        (owner_id, publisher_id))


async def issuer_keys(db: Database, issuer: str) -> dict[str, Any] | None:
    """The issuer's cached JWKS document, if any daemon fetched it."""
    row = await db.fetch_one("SELECT jwks FROM oidc_issuer_keys WHERE issuer = %s", (issuer,))
    return dict(row[0]) if row else None


async def store_issuer_keys(db: Database, issuer: str, jwks: Mapping[str, Any]) -> None:
    await db.execute(
        "INSERT INTO oidc_issuer_keys (issuer, jwks) VALUES (%s, %s::jsonb)"
        " ON CONFLICT (issuer) DO UPDATE SET jwks = EXCLUDED.jwks, fetched_at = now()",
        (issuer, json.dumps(dict(jwks))))


async def use_token_id(db: Database, issuer: str, jti: str, keep_until: float) -> bool:
    """Record an ID token's use; False if any daemon recorded it before (a replay).

    Rows past their time go first: a token that old is refused as expired.
    """
    await db.execute("DELETE FROM oidc_used_tokens WHERE expires_at < now()")
    row = await db.fetch_one(
        "INSERT INTO oidc_used_tokens (issuer, jti, expires_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING jti",
        (issuer, jti, datetime.fromtimestamp(keep_until, UTC)))
    return row is not None


async def mint_token(db: Database, publisher: Publisher, facts: JobFacts,
                     claims: Mapping[str, Any], *, expires_at: float, description: str,
                     actor: Actor | None = None) -> tuple[TokenRecord, str]:
    """A write token of the publisher's project, with the row saying what minted it.

    One transaction with its audit event, so there is never a minted token
    without its record.
    """
    secret = generate_token()

    async def change(cur: Cursor) -> TokenRecord:
        row = await fetch_one(
            cur,
            "WITH t AS (INSERT INTO tokens (project_id, scope, token_hash, hint, description,"
            " expires_at, kind) VALUES (%s, 'write', %s, %s, %s, %s, 'trusted')"
            f" RETURNING {TOKEN_COLUMNS}),"
            " m AS (INSERT INTO minted_tokens (token_id, publisher_id, issuer, kind, repository,"
            " workflow, ref, sha, run_id, web_url, claims)"
            " SELECT t.id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb FROM t)"
            " SELECT * FROM t",
            (publisher.project_id, hash_token(secret), secret[:12], description,
             datetime.fromtimestamp(expires_at, UTC),
             publisher.id, publisher.issuer, publisher.kind, facts.repository, facts.workflow,
             facts.ref, facts.sha, facts.run_id, facts.web_url, json.dumps(dict(claims))),
        )
        assert row is not None
        return token_from_row(row)

    def event(token: TokenRecord) -> Event:
        base = token_event("token.create", token, None)
        return replace(base, details={**base.details, "publisher_id": publisher.id,
                                      "repository": facts.repository,
                                      "workflow": facts.workflow, "ref": facts.ref,
                                      "run_id": facts.run_id})

    return await audited(db, actor, change, event), secret


async def burn_token(db: Database, secret: str, *, client: str | None = None) -> bool:
    """Revoke a minted token by its secret (other kinds are left alone).

    Its audit event names the token itself as the actor, from *client*.
    """
    async def body(cur: Cursor) -> bool:
        row = await fetch_one(
            cur, "UPDATE tokens SET revoked_at = now() WHERE token_hash = %s"
            f" AND kind = 'trusted' AND revoked_at IS NULL RETURNING {TOKEN_COLUMNS}",
            (hash_token(secret),))
        if row is None:
            return False
        token = token_from_row(row)
        await insert_events(cur, Actor("token", token.id, token.kind, client=client),
                            [token_event("token.revoke", token, None)])
        return True

    return await db.run_interaction(body)


@dataclass(frozen=True)
class Pipeline:
    """The CI job that uploaded a file with a minted token, as GitLab shows a pipeline."""

    run_id: str | None
    ref: str | None
    sha: str | None
    web_url: str | None
    published_by: str
    kind: str
    issuer: str
    uploaded_at: datetime


_PIPELINE_COLUMNS = ("m.run_id, m.ref, m.sha, m.web_url, t.description, m.kind, m.issuer,"
                     " f.uploaded_at")


async def release_pipelines(db: Database, release_ids: Sequence[int]
                            ) -> dict[int, list[Pipeline]]:
    """The pipelines that uploaded each release's files, newest first (absent: none)."""
    rows = await db.fetch_all(
        f"SELECT v.id, {_PIPELINE_COLUMNS}"
        " FROM package_versions v"
        " JOIN package_files f ON f.package_id = v.package_id AND f.version = v.version"
        " JOIN minted_tokens m ON m.token_id = f.uploaded_by_token_id"
        " JOIN tokens t ON t.id = m.token_id"
        " WHERE v.id = ANY(%s) ORDER BY f.uploaded_at DESC, f.id DESC",
        (list(release_ids),))
    result: dict[int, list[Pipeline]] = {}
    for row in rows:
        pipelines = result.setdefault(int(row[0]), [])
        pipeline = Pipeline(*row[1:])
        if all(p.run_id != pipeline.run_id or p.issuer != pipeline.issuer for p in pipelines):
            pipelines.append(pipeline)
    return result


async def file_pipelines(db: Database, file_ids: Sequence[int]) -> dict[int, Pipeline]:
    """The pipeline that uploaded each file (absent: not uploaded with a minted token)."""
    rows = await db.fetch_all(
        f"SELECT f.id, {_PIPELINE_COLUMNS}"
        " FROM package_files f JOIN minted_tokens m ON m.token_id = f.uploaded_by_token_id"
        " JOIN tokens t ON t.id = m.token_id WHERE f.id = ANY(%s)",
        (list(file_ids),))
    return {int(r[0]): Pipeline(*r[1:]) for r in rows}
