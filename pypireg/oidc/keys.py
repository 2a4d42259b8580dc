"""The OIDC issuers' signing keys: discovery, JWKS fetch, and a cache every daemon shares.

Between HTTP and storage: `IssuerKeys.key_for` finds the key that signed a
token. Keys live in this process's memory and in PostgreSQL
(`oidc_issuer_keys`), so a key any daemon fetched serves them all. An
unknown `kid` (a rotation, or a forgery) first looks at the database, then
refetches `{iss}/.well-known/openid-configuration` and its `jwks_uri`, at
most once a minute per issuer and daemon (the clock is injected), so
forged kids cannot make the registry hammer an issuer. Concurrent lookups
of one issuer share one fetch.

Fetches go through treq (an injectable `HTTPClient`; by default a pooled
Agent that verifies TLS against the system's trust store), with the
issuer's timeout over the whole request and a cap on the answer's size.
What fails ends in `TrustedPublishingError("issuer-unavailable")`: 503 when
the issuer cannot be reached in time, 502 when it answered uselessly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from pypireg import __version__
from pypireg.config import IssuerConfig
from pypireg.domain.id_tokens import Unverified, find_key
from pypireg.domain.trusted_publishing import TrustedPublishingError
from pypireg.storage import trusted_publishing as store
from pypireg.storage.database import Database

_log = Logger()
REFETCH_SECONDS = 60.0
MAX_DOCUMENT_BYTES = 512 * 1024
_HEADERS = Headers({b"Accept": [b"application/json"],
                    b"User-Agent": [f"pypireg/{__version__}".encode()]})


class _Unavailable(Exception):
    def __init__(self, reason: str, *, unreachable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


class _TooLarge(Exception):
    pass


def default_client(reactor: Any) -> HTTPClient:
    """treq over an Agent (TLS verified by Twisted's browser-like policy).

    Not persistent: an issuer is asked at most once a minute, and nothing is
    left open to close at shutdown.
    """
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


class IssuerKeys:
    """Finds an issuer's signing keys: memory, then the database, then the issuer."""

    def __init__(self, db: Database, clock: IReactorTime, client: HTTPClient,
                 refetch_seconds: float = REFETCH_SECONDS) -> None:
        self._db = db
        self._clock = clock
        self._client = client
        self._refetch_seconds = refetch_seconds
        self._jwks: dict[str, dict[str, Any]] = {}
        self._last_fetch: dict[str, float] = {}
        self._fetching: dict[str, Deferred[None]] = {}
        self._waiters: dict[str, list[Deferred[dict[str, Any]]]] = {}

    async def key_for(self, issuer: IssuerConfig, token: Unverified) -> Mapping[str, Any]:
        """The JWK that signed *token*; refuses an unknown kid once the keys are fresh."""
        jwks = self._jwks.get(issuer.url)
        key = find_key(jwks, token) if jwks is not None else None
        if key is not None:
            return key
        stored = await store.issuer_keys(self._db, issuer.url)
        if stored is not None:
            self._jwks[issuer.url] = stored
            key = find_key(stored, token)
            if key is not None:
                return key
        # A fetch for another lookup may have finished meanwhile.
        fresh = self._jwks.get(issuer.url)
        key = find_key(fresh, token) if fresh is not None else None
        if key is not None:
            return key
        if issuer.url not in self._fetching:
            since = self._clock.seconds() - self._last_fetch.get(issuer.url, -1e18)
            if since < self._refetch_seconds:
                if stored is None:
                    retry = max(1, int(self._refetch_seconds - since))
                    raise TrustedPublishingError(
                        "issuer-unavailable", f"The keys of {issuer.url} could not be fetched "
                        f"a moment ago; retry in {retry} seconds.", status=503,
                        headers={"Retry-After": str(retry)})
                raise TrustedPublishingError(
                    "invalid-token", f"Unknown signing key {token.key_id!r}: the issuer "
                    f"{issuer.url} has no such key (its keys were fetched {int(since)} seconds "
                    "ago).")
        jwks = await self._fetch_shared(issuer)
        key = find_key(jwks, token)
        if key is None:
            raise TrustedPublishingError(
                "invalid-token", f"Unknown signing key {token.key_id!r}: the issuer "
                f"{issuer.url} does not publish it.")
        return key

    async def _fetch_shared(self, issuer: IssuerConfig) -> dict[str, Any]:
        """Fetch the issuer's keys, or wait for the fetch already running."""
        if issuer.url not in self._fetching:
            self._last_fetch[issuer.url] = self._clock.seconds()
            self._fetching[issuer.url] = Deferred.fromCoroutine(
                self._refresh(issuer)).addBoth(self._fetched, issuer.url)
        # Each waiter has its own Deferred: a result is handed on once per chain.
        mine: Deferred[dict[str, Any]] = Deferred()
        self._waiters.setdefault(issuer.url, []).append(mine)
        return await mine

    def _fetched(self, result: dict[str, Any] | Failure, url: str) -> None:
        self._fetching.pop(url, None)
        for waiter in self._waiters.pop(url, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _refresh(self, issuer: IssuerConfig) -> dict[str, Any]:
        try:
            jwks = await self._discover(issuer)
        except _Unavailable as e:
            _log.warn("could not fetch the keys of OIDC issuer {issuer}: {reason}",
                      issuer=issuer.url, reason=e.reason)
            raise TrustedPublishingError(
                "issuer-unavailable", f"The issuer {issuer.url} is unavailable ({e.reason}); "
                "retry in a minute.", status=503 if e.unreachable else 502,
                headers={"Retry-After": str(int(self._refetch_seconds))}) from None
        await store.store_issuer_keys(self._db, issuer.url, jwks)
        self._jwks[issuer.url] = jwks
        _log.info("fetched {count} signing keys of OIDC issuer {issuer}",
                  count=len(jwks["keys"]), issuer=issuer.url)
        return jwks

    async def _discover(self, issuer: IssuerConfig) -> dict[str, Any]:
        discovery_url = issuer.url.rstrip("/") + "/.well-known/openid-configuration"
        discovery = await self._get_json(discovery_url, issuer.timeout)
        if discovery.get("issuer") != issuer.url:
            raise _Unavailable(f"its discovery document names the issuer "
                               f"{str(discovery.get('issuer'))[:200]!r}", unreachable=False)
        jwks_uri = discovery.get("jwks_uri")
        allowed = ("https://", "http://") if issuer.plain_http else ("https://",)
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(allowed):
            raise _Unavailable("its discovery document has no https jwks_uri",
                               unreachable=False)
        jwks = await self._get_json(jwks_uri, issuer.timeout)
        if not isinstance(jwks.get("keys"), list):
            raise _Unavailable("its JWKS document has no keys list", unreachable=False)
        return jwks

    async def _get_json(self, url: str, timeout: float) -> dict[str, Any]:
        request = Deferred.fromCoroutine(self._get(url))
        request.addTimeout(timeout, self._clock)
        try:
            body = await request
        except (DeferredTimeoutError, CancelledError):
            raise _Unavailable(f"no answer from {url} within {timeout:g} s",
                               unreachable=True) from None
        try:
            document = json.loads(body)
        except ValueError:
            raise _Unavailable(f"{url} did not answer JSON", unreachable=False) from None
        if not isinstance(document, dict):
            raise _Unavailable(f"{url} did not answer a JSON object", unreachable=False)
        return document

    async def _get(self, url: str) -> bytes:
        try:
            response = await self._client.get(url, headers=_HEADERS)
        except (CancelledError, DeferredTimeoutError):
            raise
        except Exception as e:
            raise _Unavailable(f"cannot reach {url}: {type(e).__name__}",
                               unreachable=True) from None
        if response.code != 200:
            await _discard(response)
            raise _Unavailable(f"{url} answered {response.code}", unreachable=False)
        chunks: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_DOCUMENT_BYTES:
                raise _TooLarge()
            chunks.append(data)

        try:
            await treq.collect(response, collect)
        except _TooLarge:
            raise _Unavailable(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes",
                               unreachable=False) from None
        except (CancelledError, DeferredTimeoutError):
            raise
        except Exception as e:
            raise _Unavailable(f"the answer of {url} was cut short: {type(e).__name__}",
                               unreachable=True) from None
        return b"".join(chunks)


async def _discard(response: Any) -> None:
    # The error is about the status; reading the rest only frees the connection.
    with contextlib.suppress(Exception):
        await treq.collect(response, lambda _: None)
