"""The token exchange: a CI job's OIDC ID token in, a 15-minute upload token out.

Between HTTP and storage: `TokenExchange.mint` runs the checks of
domain/trusted_publishing.py in the README's order (issuer, key,
signature, registered claims, publisher, `jti` once across every daemon)
and mints a `trusted` token of the one project whose publisher the job
is. Refusals count as failed logins in the Authorizer's FailureLimiter
(past its limit, 429), except those that are the issuer's fault. Nothing
of a token is ever logged: only the publisher and the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypireg.access import FailureLimiter
from pypireg.config import TrustedPublishingConfig
from pypireg.domain.audit import Actor
from pypireg.domain.errors import TooManyRequests
from pypireg.domain.id_tokens import check_claims, read_unverified, verify_signature
from pypireg.domain.trusted_publishing import (
    LEEWAY_SECONDS,
    MINTED_TOKEN_SECONDS,
    TrustedPublishingError,
    choose_publisher,
    job_facts,
    published_by,
)
from pypireg.oidc.keys import IssuerKeys
from pypireg.storage import trusted_publishing as store
from pypireg.storage.database import Database

_log = Logger()
# A used jti is kept a little past the last moment its token could pass.
_JTI_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class Minted:
    token: str
    expires: int
    project_id: int


class TokenExchange:
    def __init__(self, db: Database, clock: IReactorTime, config: TrustedPublishingConfig,
                 keys: IssuerKeys, failures: FailureLimiter) -> None:
        self._db = db
        self._clock = clock
        self._config = config
        self._keys = keys
        self._failures = failures
        self._issuers = {issuer.url: issuer for issuer in config.issuers}

    @property
    def enabled(self) -> bool:
        return bool(self._issuers)

    @property
    def audience(self) -> str:
        return self._config.audience

    async def mint(self, token: str, client: str) -> Minted:
        """Exchange *token*; failures are counted against *client* (its address)."""
        try:
            return await self._mint(token, client)
        except TrustedPublishingError as e:
            if e.code not in ("issuer-unavailable", "not-enabled"):
                try:
                    self._failures.record_failure(client)
                except TooManyRequests as limited:
                    raise TrustedPublishingError("rate-limited", limited.reason, status=429,
                                                 headers=limited.headers) from None
            raise

    async def _mint(self, token: str, client: str) -> Minted:
        if not self.enabled:
            raise TrustedPublishingError(
                "not-enabled", "Trusted publishing is not enabled on this registry (no "
                "[[trusted_publishing.issuers]] configured).", status=404)
        unverified = read_unverified(token)
        issuer = self._issuers.get(unverified.issuer)
        if issuer is None:
            raise TrustedPublishingError(
                "invalid-token", f"Unknown issuer {unverified.issuer[:200]!r}; this registry "
                f"takes ID tokens from {', '.join(sorted(self._issuers))}.")
        key = await self._keys.key_for(issuer, unverified)
        claims = verify_signature(token, key, unverified)
        now = self._clock.seconds()
        jti = check_claims(claims, issuer=issuer.url, audience=self._config.audience, now=now,
                           max_lifetime=self._config.max_token_lifetime)
        publisher = choose_publisher(await store.publishers_of_issuer(self._db, issuer.url),
                                     claims)
        if not await store.use_token_id(self._db, issuer.url, jti,
                                        float(claims["exp"]) + LEEWAY_SECONDS
                                        + _JTI_MARGIN_SECONDS):
            raise TrustedPublishingError(
                "invalid-reuse-token", "This ID token was already used (its jti); request a "
                "new one.")
        owner_id = claims.get("repository_owner_id")
        if publisher.kind == "github" and publisher.owner_id is None and isinstance(
                owner_id, str):
            await store.pin_owner_id(self._db, publisher.id, owner_id)
        facts = job_facts(publisher.kind, issuer.url, claims)
        description = published_by(publisher.kind, facts)
        expires = int(now) + MINTED_TOKEN_SECONDS
        record, secret = await store.mint_token(
            self._db, publisher, facts, facts.claims(), expires_at=expires,
            description=description,
            actor=Actor("publisher", name=f"{publisher.id}: {description}", client=client))
        _log.info("minted upload token {token_id} of project {project_id} for trusted "
                  "publisher {publisher_id}: {published_by}", token_id=record.id,
                  project_id=publisher.project_id, publisher_id=publisher.id,
                  published_by=description)
        return Minted(secret, expires, publisher.project_id)

    async def burn(self, secret: str, client: str) -> None:
        """Revoke a minted token at once (uv does after its upload); unknown ones are ignored."""
        await store.burn_token(self._db, secret, client=client)
