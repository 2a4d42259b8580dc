"""GitLab's package management API: list, show and delete packages and files.

HTTP layer. In GitLab's model a "package" is one release (name and
version), with a stable numeric id; see storage.package_api. Listings are
paginated as GitLab paginates (page/per_page, X-* headers and an RFC 8288
Link header). Reads need read access, deletes a write token (GitLab asks
for a maintainer; our write token stands for one). Deleting removes rows at
once; the blobs go with the next garbage collection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from packaging.version import InvalidVersion, Version
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypireg.domain.errors import BadRequest, NotFound
from pypireg.domain.names import normalize_name
from pypireg.http.page_cache import PackageCaches
from pypireg.http.responses import api_json, gitlab_time
from pypireg.http.scopes import RequestAccess
from pypireg.storage import releases as release_store
from pypireg.storage import trusted_publishing as publishing_store
from pypireg.storage.database import Database
from pypireg.storage.releases import FILE_ORDERS, RELEASE_ORDERS, Page, Release, ReleaseFile
from pypireg.storage.trusted_publishing import Pipeline

_log = Logger()

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
# page and per_page: anything an OFFSET can hold comfortably.
_MAX_NUMBER = 2**31 - 1
_SORTS = ("asc", "desc")


def _arg(request: IRequest, key: str) -> str | None:
    values = request.args.get(key.encode("ascii"))
    if not values:
        return None
    try:
        return str(values[-1].decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(f"{key} must be UTF-8 text.") from None


def _choice(request: IRequest, key: str, allowed: Sequence[str], default: str) -> str:
    value = _arg(request, key)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise BadRequest(f"{key} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _positive_int(request: IRequest, key: str, default: int) -> int:
    value = _arg(request, key)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= _MAX_NUMBER:
        raise BadRequest(f"{key} must be an integer from 1 to {_MAX_NUMBER}; got {value!r}.")
    return int(value)


def _pagination(request: IRequest) -> tuple[int, int]:
    """(page, per_page) from the query; per_page above 100 counts as 100, as in GitLab."""
    page = _positive_int(request, "page", 1)
    return page, min(_positive_int(request, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)


def _prev_page(page: int, total_pages: int) -> int | None:
    # As GitLab (Kaminari): a page past the end has neither prev nor next.
    return page - 1 if 1 < page <= total_pages else None


def _next_page(page: int, total_pages: int) -> int | None:
    return page + 1 if page < total_pages else None


def _page_links(page_url: str, query: list[tuple[bytes, bytes]], page: int, per_page: int,
                total_pages: int) -> str:
    """The RFC 8288 Link header GitLab sends: prev, next (when they exist), first, last."""

    def url(number: int) -> str:
        pairs = [*query, (b"page", str(number).encode()), (b"per_page", str(per_page).encode())]
        return f"{page_url}?{urlencode(pairs)}"

    links = []
    if _prev_page(page, total_pages):
        links.append(f'<{url(page - 1)}>; rel="prev"')
    if _next_page(page, total_pages):
        links.append(f'<{url(page + 1)}>; rel="next"')
    links.append(f'<{url(1)}>; rel="first"')
    links.append(f'<{url(total_pages)}>; rel="last"')
    return ", ".join(links)


class PackagesApiRoutes:
    def __init__(self, db: Database, access: RequestAccess, caches: PackageCaches) -> None:
        self._db = db
        self._access = access
        self._caches = caches

    async def gitlab_packages(self, request: IRequest, project: str) -> bytes:
        """The project's packages; filters package_type, package_name, package_version."""
        grant = await self._access.read(request, project)
        order_by = _choice(request, "order_by", RELEASE_ORDERS, "created_at")
        descending = _choice(request, "sort", _SORTS, "asc") == "desc"
        page, per_page = _pagination(request)
        package_type = _arg(request, "package_type")
        name = _arg(request, "package_name")
        version = _arg(request, "package_version")
        result: Page[Release] = Page([], 0)
        if package_type in (None, "", "pypi"):
            result = await release_store.list_releases(
                self._db, grant.project.id,
                name_contains=normalize_name(name) if name else None,
                version=_normal_version(version) if version else None,
                order_by=order_by, descending=descending,
                limit=per_page, offset=(page - 1) * per_page)
        self._gitlab_paginate(request, result.total, page, per_page)
        pipelines = await publishing_store.release_pipelines(
            self._db, [r.id for r in result.items])
        return api_json(request, [_package(project, r, pipelines.get(r.id, []))
                                  for r in result.items])

    async def gitlab_package(self, request: IRequest, project: str, package_id: int) -> bytes:
        grant = await self._access.read(request, project)
        release = await release_store.get_release(self._db, grant.project.id, package_id)
        if release is None:
            raise NotFound(f"No package {package_id} in this project.")
        pipelines = await publishing_store.release_pipelines(self._db, [release.id])
        return api_json(request, _package(project, release, pipelines.get(release.id, [])))

    async def gitlab_package_files(self, request: IRequest, project: str, package_id: int
                                   ) -> bytes:
        """One package's file rows, duplicate uploads included (as GitLab lists them)."""
        grant = await self._access.read(request, project)
        order_by = _choice(request, "order_by", FILE_ORDERS, "id")
        descending = _choice(request, "sort", _SORTS, "asc") == "desc"
        page, per_page = _pagination(request)
        result = await release_store.list_release_files(
            self._db, grant.project.id, package_id, order_by=order_by, descending=descending,
            limit=per_page, offset=(page - 1) * per_page)
        if result is None:
            raise NotFound(f"No package {package_id} in this project.")
        self._gitlab_paginate(request, result.total, page, per_page)
        pipelines = await publishing_store.file_pipelines(self._db, [f.id for f in result.items])
        return api_json(request, [_package_file(f, pipelines.get(f.id)) for f in result.items])

    async def gitlab_delete_package(self, request: IRequest, project: str, package_id: int
                                    ) -> bytes:
        grant = await self._access.maintain(request, project)
        deleted = await release_store.delete_release(self._db, grant.project.id, package_id)
        self._caches.wrote_packages()
        if deleted is None:
            raise NotFound(f"No package {package_id} in this project.")
        _log.info("deleted package {package_id} ({files}) from project {project}",
                  package_id=package_id, files=", ".join(deleted.files),
                  project=grant.project.path)
        request.setResponseCode(204)
        return b""

    async def gitlab_delete_package_file(self, request: IRequest, project: str,
                                         package_id: int, file_id: int) -> bytes:
        grant = await self._access.maintain(request, project)
        deleted = await release_store.delete_release_file(self._db, grant.project.id, package_id,
                                                      file_id)
        self._caches.wrote_packages()
        if deleted is None:
            raise NotFound(f"No file {file_id} in package {package_id} of this project.")
        _log.info("deleted file {file_id} ({filename}) of package {package_id} from project"
                  " {project}", file_id=file_id, filename=deleted.files[0],
                  package_id=package_id, project=grant.project.path)
        request.setResponseCode(204)
        return b""

    def _gitlab_paginate(self, request: IRequest, total: int, page: int, per_page: int
                         ) -> None:
        """GitLab's offset pagination headers, with absolute links."""
        # An empty listing still has one (empty) page, the target of "first" and "last".
        total_pages = max(1, math.ceil(total / per_page))
        prev_page, next_page = _prev_page(page, total_pages), _next_page(page, total_pages)
        request.setHeader(b"X-Total", str(total).encode())
        request.setHeader(b"X-Total-Pages", str(total_pages).encode())
        request.setHeader(b"X-Page", str(page).encode())
        request.setHeader(b"X-Per-Page", str(per_page).encode())
        request.setHeader(b"X-Page-Type", b"offset")
        request.setHeader(b"X-Next-Page", str(next_page).encode() if next_page else b"")
        request.setHeader(b"X-Prev-Page", str(prev_page).encode() if prev_page else b"")
        query = [(key, value) for key, values in request.args.items()
                 if key not in (b"page", b"per_page") for value in values]
        page_url = self._gitlab_origin(request) + request.path.decode("latin-1")
        request.setHeader(b"Link", _page_links(page_url, query, page, per_page,
                                               total_pages).encode("latin-1"))

    def _gitlab_origin(self, request: IRequest) -> str:
        """scheme://host of the links: base_url if set, else as the client asked."""
        if self._access.base_url:
            return self._access.base_url.rstrip("/")
        scheme = "https" if request.isSecure() else "http"
        host = request.getHeader(b"host")
        if host:
            return f"{scheme}://{host.decode('latin-1')}"
        address = request.getHost()
        return f"{scheme}://{address.host}:{address.port}"


def _normal_version(version: str) -> str:
    """Versions are stored normalised (1.0.0-RC1 is 1.0.0rc1); unparseable ones match none."""
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _pipeline(pipeline: Pipeline) -> dict[str, Any]:
    """A trusted publisher's job, in the shape of GitLab's pipeline object."""
    run_id: int | str | None = pipeline.run_id
    if isinstance(run_id, str) and run_id.isascii() and run_id.isdigit():
        run_id = int(run_id)
    return {"id": run_id, "status": "success", "ref": pipeline.ref, "sha": pipeline.sha,
            "web_url": pipeline.web_url, "created_at": gitlab_time(pipeline.uploaded_at),
            "updated_at": gitlab_time(pipeline.uploaded_at), "source": pipeline.kind,
            "published_by": pipeline.published_by}


def _package(project: str, release: Release, pipelines: Sequence[Pipeline] = ()
             ) -> dict[str, Any]:
    """GitLab's package; as GitLab, `pipeline` (the latest) only when there is one."""
    web_path = (f"/api/v4/projects/{quote(project, safe='')}/packages/pypi/simple/"
                f"{release.name}/")
    extra = {"pipeline": _pipeline(pipelines[0])} if pipelines else {}
    return {
        "id": release.id,
        "name": release.display_name,
        "version": release.version,
        "package_type": "pypi",
        "status": "default",
        "created_at": gitlab_time(release.created_at),
        "_links": {"web_path": web_path},
        **extra,
        "pipelines": [_pipeline(p) for p in pipelines],
        "tags": [],
    }


def _package_file(f: ReleaseFile, pipeline: Pipeline | None = None) -> dict[str, Any]:
    return {
        "id": f.id,
        "package_id": f.release_id,
        "created_at": gitlab_time(f.uploaded_at),
        "file_name": f.filename,
        "size": f.size,
        "file_md5": f.md5,
        "file_sha1": None,
        "file_sha256": f.sha256,
        "pipelines": [_pipeline(pipeline)] if pipeline is not None else [],
    }
