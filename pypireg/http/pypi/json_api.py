"""PyPI's JSON API (`/pypi/<name>/json`), which poetry and many tools read.

HTTP layer. The documents have the shape of the public index's /pypi/<name>/json API:
`info` about the latest release (or the one asked for), `releases` (project
document only, as on PyPI), `urls` (the files of that release),
`last_serial` and `vulnerabilities`. Metadata the registry does not keep
(description, requires_dist, classifiers...) is null or empty, which
clients read as "unknown". File URLs are those of the simple index; links
are paths unless `server.base_url` is set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version
from twisted.web.iweb import IRequest

from pypireg.domain import versions
from pypireg.domain.errors import NotFound
from pypireg.domain.names import is_valid_name, normalize_name
from pypireg.domain.versions import version_key
from pypireg.http.pypi.simple_index import upload_time
from pypireg.http.responses import not_modified, redirect
from pypireg.http.scopes import RequestAccess
from pypireg.storage import packages as package_store
from pypireg.storage.database import Database
from pypireg.storage.packages import PackageFile


def _release_yanked(files: Sequence[PackageFile]) -> bool:
    """A release is yanked when all its files are (PEP 592 yanks whole releases)."""
    return all(f.yanked for f in files)


def latest_version(releases: dict[str, list[PackageFile]]) -> str:
    """PyPI's choice of the release `info` describes (see versions.latest_version)."""
    return versions.latest_version({v: _release_yanked(f) for v, f in releases.items()})


def find_version(releases: dict[str, list[PackageFile]], version: str) -> str | None:
    """The stored version equal to *version* (1.0 matches 1.0.0, as PEP 440 says)."""
    if version in releases:
        return version
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    return next((v for v in sorted(releases, key=version_key)
                 if version_key(v) == (1, wanted)), None)


def _file_document(f: PackageFile, prefix: str) -> dict[str, Any]:
    return {
        "comment_text": "",
        "digests": {"blake2b_256": f.blake2_256, "md5": f.md5, "sha256": f.sha256},
        "downloads": -1,
        "filename": f.filename,
        "has_sig": False,
        "md5_digest": f.md5,
        "packagetype": f.packagetype,
        "python_version": f.python_version,
        "requires_python": f.requires_python,
        "size": f.size,
        "upload_time": f.uploaded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": upload_time(f.uploaded_at),
        "url": f"{prefix}/files/{f.sha256}/{quote(f.filename)}",
        "yanked": f.yanked,
        "yanked_reason": f.yanked_reason,
    }


def _info(name: str, version: str, files: Sequence[PackageFile], prefix: str
          ) -> dict[str, Any]:
    # Files of one release normally agree; where they do not (a wheel with
    # Requires-Python, an old sdist without), the newest that says something wins.
    newest = sorted(files, key=lambda f: f.id, reverse=True)
    requires_python = next((f.requires_python for f in newest if f.requires_python), None)
    summary = next((f.summary for f in newest if f.summary), None)
    package_url = f"{prefix}/simple/{name}/"
    return {
        "author": None,
        "author_email": None,
        "bugtrack_url": None,
        "classifiers": [],
        "description": "",
        "description_content_type": None,
        "docs_url": None,
        "download_url": None,
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "home_page": None,
        "keywords": None,
        "license": None,
        "maintainer": None,
        "maintainer_email": None,
        "name": newest[0].display_name,
        "package_url": package_url,
        "platform": None,
        "project_url": package_url,
        "project_urls": None,
        "release_url": f"{prefix}/pypi/{name}/{quote(version)}/json",
        # Unknown, not "no dependencies": poetry then reads the files.
        "requires_dist": None,
        "requires_python": requires_python,
        "summary": summary,
        "version": version,
        "yanked": _release_yanked(files),
        "yanked_reason": next((f.yanked_reason for f in files if f.yanked_reason), None),
    }


def pypi_json_document(name: str, files: Sequence[PackageFile], prefix: str,
                       version: str | None = None) -> dict[str, Any]:
    """The document for package *name* (normalised), or for one of its releases.

    *files* are the package's files (newest row per file name); *prefix*
    is the project's `.../packages/pypi` URL. Raises NotFound for an
    unknown *version*.
    """
    releases: dict[str, list[PackageFile]] = {}
    for f in sorted(files, key=lambda f: (version_key(f.version), f.filename)):
        releases.setdefault(f.version, []).append(f)
    selected = latest_version(releases) if version is None else find_version(releases, version)
    if selected is None:
        raise NotFound(f"No release {version} of {name} here.")
    document: dict[str, Any] = {"info": _info(name, selected, releases[selected], prefix)}
    if version is None:
        document["releases"] = {
            v: [_file_document(f, prefix) for f in release] for v, release in releases.items()
        }
    document["urls"] = [_file_document(f, prefix) for f in releases[selected]]
    document["last_serial"] = max(f.id for f in files)
    document["vulnerabilities"] = []
    return document


class JsonApiRoutes:
    """PyPI's JSON API for one project's packages."""

    def __init__(self, db: Database, access: RequestAccess) -> None:
        self._db = db
        self._access = access

    async def pypi_json_project(self, request: IRequest, project: str, name: str) -> bytes:
        return await self._pypi_json(request, project, name, None)

    async def pypi_json_release(self, request: IRequest, project: str, name: str, version: str
                                ) -> bytes:
        return await self._pypi_json(request, project, name, version)

    async def _pypi_json(self, request: IRequest, project: str, name: str, version: str | None
                         ) -> bytes:
        grant = await self._access.read(request, project)
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        prefix = self._access.api_prefix(project)
        normalized = normalize_name(name)
        if normalized != name:
            tail = "json" if version is None else f"{quote(version, safe='')}/json"
            return redirect(request, f"{prefix}/pypi/{normalized}/{tail}")
        files = await package_store.list_files(self._db, grant.project.id, normalized)
        if not files:
            raise NotFound(f"No package named {name!r} in this project.")
        body = json.dumps(pypi_json_document(normalized, files, prefix, version)).encode()
        visibility = b"public" if grant.project.public else b"private"
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Vary", b"Authorization")
        request.setHeader(b"Cache-Control", visibility + b", max-age=0, must-revalidate")
        etag = f'"{hashlib.sha256(body).hexdigest()}"'.encode()
        return b"" if not_modified(request, etag) else body
