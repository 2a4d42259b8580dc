"""Core metadata as read from a distribution (PKG-INFO or METADATA).

Domain layer, no I/O: ingest/archives.py reads it, the upload rules check
it against the form.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoreMetadata:
    metadata_version: str | None
    name: str | None
    version: str | None
    summary: str | None
    requires_python: str | None
    raw: bytes
    description: str | None = None
    description_content_type: str | None = None

    @property
    def is_reliable_sdist_metadata(self) -> bool:
        """PKG-INFO may be served as core metadata only from Metadata-Version 2.2 on."""
        try:
            major, minor = (int(x) for x in (self.metadata_version or "0.0").split(".")[:2])
        except ValueError:
            return False
        return (major, minor) >= (2, 2)
