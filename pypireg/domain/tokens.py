"""Access tokens: kinds and scopes, generation and hashing.

Domain layer, no I/O. A token is 32 random bytes (256 bits) behind a fixed
prefix so that secret scanners can recognise leaked ones; only its SHA-256
is stored. A fast hash is right here: the secret has full entropy, so there
is nothing for a slow hash to protect.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Literal

Scope = Literal["read", "write"]
# "trusted": minted for a CI job by a trusted publisher (domain/trusted_publishing.py).
Kind = Literal["project", "deploy", "personal", "trusted"]
# The GitLab names of each kind's scopes.
SCOPE_NAMES: dict[Kind, dict[Scope, str]] = {
    "project": {"read": "read", "write": "write"},
    "deploy": {"read": "read_package_registry", "write": "write_package_registry"},
    "personal": {"read": "read_api", "write": "api"},
    # Minted tokens are always write scope, and only upload.
    "trusted": {"read": "read", "write": "upload"},
}
PREFIX = "pypireg_"
_RANDOM_BYTES = 32


def generate_token() -> str:
    raw = secrets.token_bytes(_RANDOM_BYTES)
    return PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def looks_like_token(candidate: str) -> bool:
    """Cheap shape check that spares the database obviously wrong passwords."""
    return candidate.startswith(PREFIX) and 40 <= len(candidate) <= 100 and candidate.isascii()
