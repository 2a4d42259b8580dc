"""GitLab's package management API: list, show and delete packages and files.

HTTP layer. In GitLab's model a "package" is one release (name and
version), with a stable numeric id; see storage.package_api. Listings are
paginated as GitLab paginates (page/per_page, X-* headers and an RFC 8288
Link header). Reads need read access, deletes a write token (GitLab asks
for a maintainer; our write token stands for one). Deleting removes rows at
once; the blobs go with the next garbage collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypireg.domain.errors import NotFound
from pypireg.domain.names import normalize_name
from pypireg.http.gitlab.pagination import choice, paginate, pagination, query_arg
from pypireg.http.page_cache import PackageCaches
from pypireg.http.responses import api_json, gitlab_time
from pypireg.http.scopes import RequestAccess, request_actor
from pypireg.storage import releases as release_store
from pypireg.storage import trusted_publishing as publishing_store
from pypireg.storage.database import Database
from pypireg.storage.releases import FILE_ORDERS, RELEASE_ORDERS, Page, Release, ReleaseFile
from pypireg.storage.trusted_publishing import Pipeline

_log = Logger()

_SORTS = ("asc", "desc")


class PackagesApiRoutes:
    def __init__(self, db: Database, access: RequestAccess, caches: PackageCaches) -> None:
        self._db = db
        self._access = access
        self._caches = caches

    async def gitlab_packages(self, request: IRequest, project: str) -> bytes:
        """The project's packages; filters package_type, package_name, package_version."""
        grant = await self._access.read(request, project)
        order_by = choice(request, "order_by", RELEASE_ORDERS, "created_at")
        descending = choice(request, "sort", _SORTS, "asc") == "desc"
        page, per_page = pagination(request)
        package_type = query_arg(request, "package_type")
        name = query_arg(request, "package_name")
        version = query_arg(request, "package_version")
        result: Page[Release] = Page([], 0)
        if package_type in (None, "", "pypi"):
            result = await release_store.list_releases(
                self._db, grant.project.id,
                name_contains=normalize_name(name) if name else None,
                version=_normal_version(version) if version else None,
                order_by=order_by, descending=descending,
                limit=per_page, offset=(page - 1) * per_page)
        paginate(request, self._access.base_url, result.total, page, per_page)
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
        order_by = choice(request, "order_by", FILE_ORDERS, "id")
        descending = choice(request, "sort", _SORTS, "asc") == "desc"
        page, per_page = pagination(request)
        result = await release_store.list_release_files(
            self._db, grant.project.id, package_id, order_by=order_by, descending=descending,
            limit=per_page, offset=(page - 1) * per_page)
        if result is None:
            raise NotFound(f"No package {package_id} in this project.")
        paginate(request, self._access.base_url, result.total, page, per_page)
        pipelines = await publishing_store.file_pipelines(self._db, [f.id for f in result.items])
        return api_json(request, [_package_file(f, pipelines.get(f.id)) for f in result.items])

    async def gitlab_delete_package(self, request: IRequest, project: str, package_id: int
                                    ) -> bytes:
        grant = await self._access.maintain(request, project)
        deleted = await release_store.delete_release(
            self._db, grant.project.id, package_id, actor=request_actor(request, grant.token))
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
        deleted = await release_store.delete_release_file(
            self._db, grant.project.id, package_id, file_id,
            actor=request_actor(request, grant.token))
        self._caches.wrote_packages()
        if deleted is None:
            raise NotFound(f"No file {file_id} in package {package_id} of this project.")
        _log.info("deleted file {file_id} ({filename}) of package {package_id} from project"
                  " {project}", file_id=file_id, filename=deleted.files[0],
                  package_id=package_id, project=grant.project.path)
        request.setResponseCode(204)
        return b""


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
        "last_downloaded_at": _time_or_none(release.last_downloaded_at),
        # Not GitLab's: the downloads of the release's files (duplicates included).
        "download_count": release.download_count,
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
        # Not GitLab's: this file row's downloads, and the last one.
        "download_count": f.download_count,
        "last_downloaded_at": _time_or_none(f.last_downloaded_at),
        "pipelines": [_pipeline(pipeline)] if pipeline is not None else [],
    }


def _time_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else gitlab_time(moment)
