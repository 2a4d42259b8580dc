"""Rendering the simple repository API (version 1.4) as HTML and JSON.

HTTP layer, pure functions from rows to bytes. Covers PEP 503 (links,
hashes, data-requires-python), PEP 629 (repository version), PEP 691
(JSON), PEP 700 (versions, size, upload-time), PEP 658/714 (core
metadata) and PEP 592 (yanking). Links are relative unless
`server.base_url` is set, so the same pages work behind any host name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from packaging.version import Version

from pypireg.domain.simple_pages import UpstreamFile
from pypireg.domain.versions import version_key
from pypireg.http.negotiation import JSON_V1
from pypireg.storage.packages import PackageFile, PackageSummary

API_VERSION = "1.4"
_HEAD = (
    "<!DOCTYPE html>\n<html>\n<head>\n"
    f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
    "{extra}<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
)
_TAIL = "</body>\n</html>\n"


@dataclass(frozen=True)
class ListedFile:
    """One file as an index page lists it, whether stored here or cached from an upstream."""

    filename: str
    sha256: str
    version: str
    requires_python: str | None
    # The sha256 of its PEP 658 core metadata file, if it has one.
    metadata_sha256: str | None
    yanked: bool
    yanked_reason: str | None
    size: int | None
    # PEP 700, ISO 8601 in UTC.
    upload_time: str | None

    @classmethod
    def of(cls, f: PackageFile) -> ListedFile:
        return cls(f.filename, f.sha256, f.version, f.requires_python, f.metadata_sha256,
                   f.yanked, f.yanked_reason, f.size, upload_time(f.uploaded_at))

    @classmethod
    def of_upstream(cls, f: UpstreamFile) -> ListedFile:
        """A cached upstream file: its fields as the upstream gave them, our URL."""
        assert f.sha256 is not None, "files without a sha256 are never listed"
        metadata = f.core_metadata.get("sha256") if isinstance(f.core_metadata, dict) else None
        return cls(f.filename, f.sha256, f.version, f.requires_python, metadata, f.yanked,
                   f.yanked_reason, f.size, f.upload_time)


def _file_key(f: ListedFile) -> tuple[tuple[int, Version | str], str]:
    return (version_key(f.version), f.filename)


def upload_time(moment: datetime) -> str:
    """PEP 700: ISO 8601 in UTC with a Z suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def project_list(packages: Sequence[PackageSummary], media: str, prefix: str = "") -> bytes:
    """The packages of a project; *prefix* is the absolute simple/ URL or ''."""
    if media == JSON_V1:
        return _json({"meta": {"api-version": API_VERSION},
                      "projects": [{"name": p.name} for p in packages]})
    parts = [_HEAD.format(title="Simple index", extra="")]
    for p in packages:
        href = f"{prefix}{quote(p.name)}/"
        parts.append(f'<a href="{escape(href)}">{escape(p.name)}</a><br>\n')
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


def project_detail(name: str, files: Sequence[ListedFile], media: str,
                   files_prefix: str = "../../files/",
                   namespace: tuple[str, str] | None = None,
                   status: tuple[str, str | None] = ("active", None)) -> bytes:
    """One package's files; *name* is normalised, *files_prefix* leads to files/.

    *namespace* is (namespace, owner) when the package lies in a PEP 752
    namespace granted to the project serving it: each file then carries
    PEP 752's `namespace` and `owner` keys (HTML attributes, which the PEP
    allows, are left out: installers read the JSON).

    *status* is PEP 792's project status and its reason (an upstream's,
    passed on for proxied names).
    """
    state, reason = status
    status_json: dict[str, str] = {"status": state}
    if reason:
        status_json["reason"] = reason
    ordered = sorted(files, key=_file_key)
    if media == JSON_V1:
        versions = sorted({f.version for f in ordered}, key=version_key)
        return _json({
            "meta": {"api-version": API_VERSION},
            "name": name,
            "project-status": status_json,
            "versions": versions,
            "files": [_json_file(f, files_prefix, namespace) for f in ordered],
        })
    extra = f'<meta name="pypi:project-status" content="{escape(state)}">\n'
    if reason:
        extra += f'<meta name="pypi:project-status-reason" content="{escape(reason)}">\n'
    parts = [_HEAD.format(title=f"Links for {escape(name)}", extra=extra)]
    for f in ordered:
        href = f"{files_prefix}{f.sha256}/{quote(f.filename)}#sha256={f.sha256}"
        attrs = f'href="{escape(href)}"'
        if f.requires_python:
            attrs += f' data-requires-python="{escape(f.requires_python)}"'
        if f.metadata_sha256:
            value = f"sha256={f.metadata_sha256}"
            attrs += f' data-core-metadata="{value}" data-dist-info-metadata="{value}"'
        if f.yanked:
            attrs += f' data-yanked="{escape(f.yanked_reason or "")}"'
        parts.append(f"<a {attrs}>{escape(f.filename)}</a><br>\n")
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


def _json_file(f: ListedFile, files_prefix: str, namespace: tuple[str, str] | None
               ) -> dict[str, Any]:
    metadata: dict[str, str] | bool = (
        {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
    )
    yanked: str | bool = (f.yanked_reason or True) if f.yanked else False
    return {
        "filename": f.filename,
        "url": f"{files_prefix}{f.sha256}/{quote(f.filename)}",
        "hashes": {"sha256": f.sha256},
        "requires-python": f.requires_python,
        "core-metadata": metadata,
        "dist-info-metadata": metadata,
        "yanked": yanked,
        "size": f.size,
        "upload-time": f.upload_time,
        **({"namespace": namespace[0], "owner": namespace[1]} if namespace else {}),
    }


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
