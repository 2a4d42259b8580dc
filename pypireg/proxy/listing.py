"""Cached upstream pages: their stored form, and what of them an index lists.

Pure functions, no I/O. A page is kept in PostgreSQL as a JSON document
(storage/upstream_cache.py does not look inside); `to_document` and
`from_document` are its one format. `visible` applies what the registry
hides: releases younger than the upstream's `min_age` (a quarantine for
fresh releases, like a server-side exclude-newer), releases an admin
blocked, and files listed without a sha256 (our file URLs and blobs are
keyed by it) unless the caller hashes them first (proxy/index.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from packaging.utils import canonicalize_version

from pypireg.domain.simple_pages import ProjectPage, UpstreamFile

FORMAT = 1
_FILE_FIELDS = ("filename", "url", "hashes", "version", "requires_python", "yanked",
                "yanked_reason", "size", "upload_time", "core_metadata", "provenance")


def to_document(page: ProjectPage) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": page.name,
        "versions": list(page.versions),
        "last_serial": page.last_serial,
        "api_version": page.api_version,
        "project_status": page.project_status,
        "project_status_reason": page.project_status_reason,
        "files": [{key: getattr(f, key) for key in _FILE_FIELDS} for f in page.files],
    }


def from_document(document: Mapping[str, Any]) -> ProjectPage:
    files = tuple(UpstreamFile(**{key: entry.get(key) for key in _FILE_FIELDS
                                  if key in entry})
                  for entry in document.get("files", []))
    return ProjectPage(name=document["name"], files=files,
                       versions=tuple(document.get("versions", ())),
                       last_serial=document.get("last_serial"),
                       api_version=document.get("api_version"),
                       project_status=document.get("project_status"),
                       project_status_reason=document.get("project_status_reason"))


def release_key(version: str) -> str:
    """Versions equal under PEP 440 share a key (1.0 and 1.0.0), as releases here do."""
    return canonicalize_version(version, strip_trailing_zero=True)


def visible(page: ProjectPage, *, now: float, min_age: float,
            blocked_versions: Collection[str] = (), with_sha256: bool = True
            ) -> list[UpstreamFile]:
    """The files of *page* an index lists (see the module docstring).

    *blocked_versions* are release keys (release_key). With a min_age, a
    file whose upload time the upstream does not give is hidden too: it
    cannot be shown to be old enough. *with_sha256* False keeps the files
    without one (for the caller to hash first).
    """
    listed = []
    for f in page.files:
        if (f.sha256 is None and with_sha256) or release_key(f.version) in blocked_versions:
            continue
        if min_age > 0:
            uploaded = _timestamp(f.upload_time)
            if uploaded is None or uploaded > now - min_age:
                continue
        listed.append(f)
    return listed


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
