"""Registering trusted publishers: the checks the CLI and the HTTP API share.

Between the callers and storage: a publisher names one of the configured
issuers, and its fields must fit that issuer's kind
(domain/trusted_publishing.py `publisher_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pypireg.config import TrustedPublishingConfig
from pypireg.domain.audit import Actor
from pypireg.domain.trusted_publishing import IssuerKind, Publisher, publisher_spec
from pypireg.storage import trusted_publishing as store
from pypireg.storage.database import Database


async def register_publisher(db: Database, config: TrustedPublishingConfig, project_id: int,
                             issuer_url: str, form: IssuerKind, *,
                             repository: str | None = None,
                             workflow: str | None = None, environment: str | None = None,
                             owner_id: str | None = None,
                             claims: Mapping[str, str] | None = None,
                             actor: Actor | None = None) -> Publisher:
    """Add a publisher to the project; ValueError says what is wrong with it.

    *form* is the kind the caller's options were for (`--github`, `--gitlab`,
    `--claim`): it must be the issuer's.
    """
    issuer = next((i for i in config.issuers if i.url == issuer_url), None)
    if issuer is None:
        known = ", ".join(i.url for i in config.issuers) or "none"
        raise ValueError(f"the issuer {issuer_url!r} is not configured in "
                         f"[[trusted_publishing.issuers]] (configured: {known})")
    if form != issuer.kind:
        option = "--claim NAME=VALUE" if issuer.kind == "generic" else f"--{issuer.kind}"
        raise ValueError(f"{issuer.url} is a {issuer.kind} issuer: give {option}")
    spec = publisher_spec(issuer.kind, repository=repository, workflow=workflow,
                          environment=environment, owner_id=owner_id, claims=claims)
    return await store.add_publisher(
        db, project_id, issuer.url, spec.kind, repository=spec.repository,
        workflow=spec.workflow, environment=spec.environment, owner_id=spec.owner_id,
        claims=spec.claims, actor=actor)


def publisher_document(publisher: Publisher) -> dict[str, Any]:
    """A publisher as the API and `pypireg --json trusted-publisher list` show it."""
    return {"id": publisher.id, "project_id": publisher.project_id, "issuer": publisher.issuer,
            "kind": publisher.kind, "repository": publisher.repository,
            "workflow": publisher.workflow, "environment": publisher.environment,
            "owner_id": publisher.owner_id, "claims": dict(publisher.claims)}
