"""The shared Klein app and the state every route module uses.

HTTP layer. Routes live in one module per concern (upload_route,
index_routes, file_routes, yank_routes, error_funnel) and all register on
the one `routes` Klein app; `routes.RegistryApp` combines them. Klein binds
the app to the RegistryApp instance, so `self` in every route is that
instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.web.iweb import IRequest

from pypireg.access import Authorizer, Grant
from pypireg.cache import Cache
from pypireg.http.credentials import client_address, request_credentials
from pypireg.http.metrics import Metrics
from pypireg.storage.blobs import BlobStore
from pypireg.storage.changes import ChangeListener
from pypireg.storage.database import Database
from pypireg.storage.packages import PackageFile

routes = Klein()
# Twisted has already percent-decoded each segment, so an encoded project
# path ("group%2Fproject") arrives with its slashes: match them.
PYPI = "/api/v4/projects/<path:project>/packages/pypi"
GROUP_PYPI = "/api/v4/groups/<path:group>/-/packages/pypi"
PAGE_CACHE_ENTRIES = 2_000
PAGE_CACHE_TTL = 60.0  # a safety net; changes drop entries at once
_PACKAGE_TABLES = frozenset({"package_files", "packages", "package_versions", "projects",
                             "groups", "*"})


@dataclass(frozen=True)
class ReadScope:
    """What a read request may see: one project, or a group's readable projects."""

    project_ids: list[int]
    public: bool
    # The ".../packages/pypi" URL prefix: absolute from base_url, else a path.
    prefix: str


class RouteContext:
    app = routes

    def __init__(self, reactor: Any, db: Database, authorizer: Authorizer, blobs: BlobStore,
                 metrics: Metrics, base_url: str | None = None,
                 changes: ChangeListener | None = None) -> None:
        self._reactor = reactor
        self._db = db
        self._authz = authorizer
        self._blobs = blobs
        self._metrics = metrics
        self._base_url = base_url
        self._changes = changes
        # Rendered index pages and file rows, dropped on every committed
        # change to packages (any process; storage/changes.py).
        self._pages: Cache[tuple[Any, ...], tuple[bytes, bytes]] = Cache(
            reactor, PAGE_CACHE_ENTRIES, PAGE_CACHE_TTL)
        self._file_rows: Cache[tuple[Any, ...], PackageFile] = Cache(
            reactor, 50_000, PAGE_CACHE_TTL)
        if changes is not None:
            changes.subscribe(self._packages_changed)

    def _packages_changed(self, table: str) -> None:
        if table in _PACKAGE_TABLES:
            self._pages.clear()
            self._file_rows.clear()

    @property
    def _caching(self) -> bool:
        return self._changes is not None and self._changes.live

    def _wrote_packages(self) -> None:
        """After this process committed a package change: drop caches at once."""
        if self._changes is not None:
            self._changes.notify_local("package_files")

    def resource(self) -> Any:
        return self.app.resource()

    async def _read_access(self, request: IRequest, project: str) -> Grant:
        secret = request_credentials(request.requestHeaders)
        return await self._authz.authorize(project, secret, "read", client_address(request))

    async def _maintain_access(self, request: IRequest, project: str) -> Grant:
        """Yanks and deletes (uploads are checked by the streaming request)."""
        secret = request_credentials(request.requestHeaders)
        return await self._authz.authorize(project, secret, "maintain",
                                           client_address(request))

    async def _project_scope(self, request: IRequest, project: str) -> ReadScope:
        grant = await self._read_access(request, project)
        return ReadScope([grant.project.id], grant.project.public, self._api_prefix(project))

    async def _group_scope(self, request: IRequest, group: str) -> ReadScope:
        grant = await self._authz.authorize_group(
            group, request_credentials(request.requestHeaders), client_address(request))
        prefix = f"{self._base_url or ''}/api/v4/groups/{quote(group, safe='')}/-/packages/pypi"
        return ReadScope([p.id for p in grant.projects], grant.group.public, prefix)

    def _api_prefix(self, project: str) -> str:
        """Absolute URL of the project's pypi API when base_url is set, else a path."""
        return f"{self._base_url or ''}/api/v4/projects/{quote(project, safe='')}/packages/pypi"
