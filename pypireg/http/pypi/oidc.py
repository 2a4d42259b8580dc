"""Trusted publishing's routes at the host root, where unmodified uv and twine look.

HTTP layer; the exchange itself is pypireg/oidc/exchange.py. The shapes are
the public index's, so a client written for it works here:

    GET  /_/oidc/audience     {"audience": "pypireg"}
    POST /_/oidc/mint-token   {"token": "<JWT>"}  →  {"success": true, "token": …, "expires": …}
    POST /_/oidc/burn-token   {"token": "<minted token>"}  →  202 (whether or not it existed)

Refusals are `{"message": …, "errors": [{"code": …, "description": …}]}`
with the status of the check that failed (422 for the token, 429 past
the failed-login limit, 502/503 when the issuer cannot give its keys).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from pypireg.domain.trusted_publishing import MAX_TOKEN_LENGTH, TrustedPublishingError
from pypireg.http.credentials import client_address
from pypireg.http.responses import api_json
from pypireg.oidc.exchange import TokenExchange


def _token_of(request: IRequest) -> str:
    body = request.content.read() if request.content is not None else b""
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise TrustedPublishingError(
            "invalid-payload", 'The body must be JSON such as {"token": "<the ID token>"}.')
    return token


def _refused(request: IRequest, error: TrustedPublishingError) -> bytes:
    request.setResponseCode(error.status)
    for name, value in error.headers.items():
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    return api_json(request, error.document())


class OidcRoutes:
    def __init__(self, exchange: TokenExchange) -> None:
        self._exchange = exchange

    async def audience(self, request: IRequest) -> bytes:
        if not self._exchange.enabled:
            return _refused(request, TrustedPublishingError(
                "not-enabled", "Trusted publishing is not enabled on this registry.",
                status=404))
        return api_json(request, {"audience": self._exchange.audience})

    async def mint_token(self, request: IRequest) -> bytes:
        try:
            minted = await self._exchange.mint(_token_of(request), client_address(request))
        except TrustedPublishingError as e:
            return _refused(request, e)
        return api_json(request, {"success": True, "token": minted.token,
                                  "expires": minted.expires})

    async def burn_token(self, request: IRequest) -> bytes:
        try:
            await self._exchange.burn(_token_of(request), client_address(request))
        except TrustedPublishingError as e:
            return _refused(request, e)
        request.setResponseCode(202)
        return api_json(request, {"success": True})
