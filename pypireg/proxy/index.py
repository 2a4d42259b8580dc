"""What an index lists for a name it does not have: the proxy's rules, in one place.

Proxy layer. An index (one project, or a group's readable projects) serves
a name from an upstream only when all of these hold, in this order:

1. no project of the index has the name locally (uploaded once, even if
   its files were deleted since; reserved; claimed) — the origin lock;
2. the name lies in no PEP 752 namespace: a granted namespace is private
   wherever it is served, so upstream names inside it are never proxied;
3. the index includes upstreams at all (its own list, else every
   configured one, in config order);
4. an admin did not block the whole name.

Files the upstream page lists without a sha256 are fetched and hashed
first (proxy/files.py `hashes_for`), since file URLs and blobs here are
keyed by it.

Then the upstream that first served the name to a project of the index
serves it (if the index still includes it), else the first upstream in
the list that has it (proxy/pages.py). The first serve to a project
records that origin, so a later local upload of the name gets 409. What
is listed is what proxy/listing.py `visible` lets through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from pypireg.config import UpstreamConfig
from pypireg.domain.simple_pages import UpstreamFile
from pypireg.proxy.files import UpstreamFiles
from pypireg.proxy.listing import release_key, visible
from pypireg.proxy.pages import UpstreamPages
from pypireg.storage import name_origins as origin_store
from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.database import Database


@dataclass(frozen=True)
class IndexRef:
    """An index: one project, or a group with the projects of it the caller may read."""

    project_ids: tuple[int, ...]
    group_id: int | None = None

    @property
    def project_id(self) -> int | None:
        """The project, for a project's own index."""
        return self.project_ids[0] if self.group_id is None and self.project_ids else None


@dataclass(frozen=True)
class UpstreamListing:
    """A name an index serves from an upstream, with the files it lists."""

    upstream: UpstreamConfig
    files: list[UpstreamFile]
    # PEP 792's status on the upstream ("active" when it gives none) and its reason.
    status: tuple[str, str | None]
    # Why the page may be out of date (the upstream failed), or None.
    stale: str | None


class ProxiedIndex:
    def __init__(self, db: Database, pages: UpstreamPages, files: UpstreamFiles) -> None:
        self._db = db
        self._pages = pages
        self._files = files

    @property
    def pages(self) -> UpstreamPages:
        return self._pages

    @property
    def enabled(self) -> bool:
        return bool(self._pages.configured)

    async def listing(self, index: IndexRef, name: str) -> UpstreamListing | None:
        """What *index* lists for *name* (normalised) from an upstream; None: nothing.

        Call it only for names the index has no local files of.

        Raises:
            BadGateway, GatewayTimeout: see UpstreamPages.resolve.
        """
        if not self.enabled or not index.project_ids:
            return None
        rules = await cache_store.name_rules(self._db, index.project_ids, name,
                                             project_id=index.project_id,
                                             group_id=index.group_id)
        if rules.local or rules.namespaced or rules.name_blocked:
            return None
        upstreams = (self._pages.configured if rules.index_upstreams is None
                     else list(rules.index_upstreams))
        if rules.upstream is not None and rules.upstream in upstreams:
            upstreams = [rules.upstream]
        resolved = await self._pages.resolve(name, upstreams)
        if resolved is None:
            return None
        if index.project_id is not None and rules.upstream is None:
            await origin_store.record_upstream_origin(self._db, index.project_id, name,
                                                      resolved.upstream.name)
        files = visible(resolved.page, now=time.time(), min_age=resolved.upstream.min_age,
                        blocked_versions=rules.blocked_versions, with_sha256=False)
        unhashed = [f for f in files if f.sha256 is None]
        if unhashed:
            found = await self._files.hashes_for(resolved.upstream, name, unhashed)
            files = [f if f.sha256 is not None
                     else replace(f, hashes={**f.hashes, "sha256": found[f.url]})
                     for f in files if f.sha256 is not None or f.url in found]
        page = resolved.page
        status = (page.project_status or "active", page.project_status_reason)
        return UpstreamListing(resolved.upstream, files, status, resolved.stale)

    async def upstreams_of(self, index: IndexRef) -> list[str]:
        """The upstreams *index* includes, in order."""
        if index.group_id is not None:
            chosen = await cache_store.index_upstreams(self._db, group_id=index.group_id)
        else:
            assert index.project_id is not None
            chosen = await cache_store.index_upstreams(self._db, project_id=index.project_id)
        return self._pages.configured if chosen is None else list(chosen)

    async def find_file(self, index: IndexRef, name: str, sha256: str, filename: str
                        ) -> tuple[UpstreamConfig, UpstreamFile] | None:
        """The upstream file *index* lists under this hash and name, if it lists one."""
        listing = await self.listing(index, name)
        if listing is None:
            return None
        for f in listing.files:
            if f.sha256 == sha256 and f.filename == filename:
                return listing.upstream, f
        return None

    async def kept_file(self, index: IndexRef, name: str, sha256: str, filename: str,
                        version: str) -> bool:
        """Whether *index* still serves a cached file its upstream no longer lists.

        Installs pinned by URL and hash (lock files) keep working after an
        upstream drops a release or the whole name, as long as the name
        would still come from that upstream here and no block hides it.
        """
        cached = await cache_store.get_file(self._db, sha256)
        if cached is None or cached.name != name or cached.filename != filename:
            return False
        rules = await cache_store.name_rules(self._db, index.project_ids, name)
        if (rules.local or rules.namespaced or rules.name_blocked
                or release_key(version) in rules.blocked_versions):
            return False
        return cached.upstream in await self.upstreams_of(index)
