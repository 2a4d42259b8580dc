"""The digests of a stored file's bytes.

Domain layer, no I/O: storage computes them as the bytes arrive, the upload
rules (upload_rules.check_digests) compare them with what the client sent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    # Only when asked for (the client sent that digest); see TempBlob.
    md5: str | None
    blake2_256: str | None
