"""OIDC ID tokens (JWTs): shape, signature and registered claims.

Domain layer, no I/O; the exchange (pypireg/oidc/exchange.py) calls these in
the README's order:

1. `read_unverified`: the header and claims, before anything is trusted, to
   find the issuer (`iss`) and the key (`kid`);
2. `find_key` and `verify_signature`: the issuer's key, asymmetric
   algorithms only (never `none`, never HMAC, whatever the header says),
   with PyJWT;
3. `check_claims`: `iss`, `aud` (exactly the audience), `exp`, `iat`, `nbf`
   with 30 s of leeway, a maximum lifetime, a `jti`, against the caller's
   clock.

Refusals are `TrustedPublishingError("invalid-token")` saying which check
failed; none quotes the token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import InvalidKeyError, PyJWKError, PyJWTError

from pypireg.domain.trusted_publishing import (
    ALLOWED_ALGORITHMS,
    LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    TrustedPublishingError,
)


def _invalid(description: str) -> TrustedPublishingError:
    return TrustedPublishingError("invalid-token", description)


@dataclass(frozen=True)
class Unverified:
    """A token's header and claims, read before its signature is checked."""

    algorithm: str
    key_id: str | None
    issuer: str


def read_unverified(token: str) -> Unverified:
    """The algorithm, key id and issuer of *token*, checking only its shape."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid(f"The token is longer than {MAX_TOKEN_LENGTH} characters.")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except PyJWTError:
        raise _invalid("The token is not a well-formed JWT (header.claims.signature, "
                       "base64url-encoded JSON).") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:
        raise _invalid(f"Signature algorithm {str(algorithm)[:20]!r} is not accepted; only "
                       f"asymmetric ones are ({', '.join(sorted(ALLOWED_ALGORITHMS))}).")
    key_id = header.get("kid")
    if key_id is not None and not isinstance(key_id, str):
        raise _invalid("The token's kid (key id) must be a string.")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise _invalid("The token has no iss (issuer) claim.")
    return Unverified(algorithm, key_id, issuer)


def find_key(jwks: Mapping[str, Any], unverified: Unverified) -> Mapping[str, Any] | None:
    """The JWK of *jwks* that signed the token (by kid), or None if the issuer has none."""
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)
            and k.get("use", "sig") == "sig"]
    if unverified.key_id is None:
        # Without a kid only an issuer with one signing key is unambiguous.
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.get("kid") == unverified.key_id), None)


def verify_signature(token: str, key: Mapping[str, Any], unverified: Unverified
                     ) -> dict[str, Any]:
    """The claims of *token* once its signature checks out with *key* (a JWK)."""
    if key.get("alg") not in (None, unverified.algorithm):
        raise _invalid(f"The token says {unverified.algorithm}, but its key "
                       f"{unverified.key_id!r} is for {key.get('alg')}.")
    try:
        # The raw public key, so the header's algorithm (already limited to
        # asymmetric ones) is what verifies, and a key of the wrong type fails.
        public_key = jwt.PyJWK(dict(key), algorithm=unverified.algorithm).key
        claims: dict[str, Any] = jwt.decode(
            token, public_key, algorithms=[unverified.algorithm],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "verify_aud": False, "verify_iss": False, "verify_sub": False,
                     "verify_jti": False})
    except (InvalidKeyError, PyJWKError):
        raise _invalid(f"The issuer's key {unverified.key_id!r} cannot verify "
                       f"{unverified.algorithm} signatures.") from None
    except PyJWTError:
        raise _invalid("Bad signature: the token was not signed by the issuer's key.") from None
    return claims


def check_claims(claims: Mapping[str, Any], *, issuer: str, audience: str, now: float,
                 max_lifetime: float) -> str:
    """Check the registered claims; return the `jti`.

    `exp`, `iat` and `nbf` get `LEEWAY_SECONDS` either way, for clock skew
    between the CI and the registry.
    """
    if claims.get("iss") != issuer:
        raise _invalid(f"Wrong issuer: the token is from {str(claims.get('iss'))[:200]!r}, "
                       f"expected {issuer!r}.")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and aud == [audience])):
        raise _invalid(f"Wrong audience {json.dumps(aud)[:200]}: request the ID token for "
                       f"the audience {audience!r} (GET /_/oidc/audience).")
    exp, iat, nbf = (claims.get(k) for k in ("exp", "iat", "nbf"))
    for name, value in (("exp", exp), ("iat", iat)):
        if not _number(value):
            raise _invalid(f"The token has no numeric {name} claim.")
    assert isinstance(exp, int | float) and isinstance(iat, int | float)
    if now >= exp + LEEWAY_SECONDS:
        raise _invalid(f"The token expired {int(now - exp)} seconds ago; request a new one.")
    if iat > now + LEEWAY_SECONDS:
        raise _invalid("The token was issued in the future (iat); check the clocks.")
    if nbf is not None:
        if not _number(nbf):
            raise _invalid("The token's nbf claim is not a number.")
        assert isinstance(nbf, int | float)
        if nbf > now + LEEWAY_SECONDS:
            raise _invalid(f"The token is not valid yet (nbf is {int(nbf - now)} seconds "
                           "from now).")
    if exp - iat > max_lifetime:
        raise _invalid(f"The token's lifetime ({int(exp - iat)} s from iat to exp) is longer "
                       f"than this registry accepts ({int(max_lifetime)} s).")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise _invalid("The token has no jti (token id) claim, so its reuse cannot be "
                       "refused.")
    return jti


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
