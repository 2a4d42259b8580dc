"""The simple repository API pages, HTML or JSON by content negotiation.

HTTP layer.
"""

from __future__ import annotations

import hashlib

from twisted.web.iweb import IRequest

from pypireg.domain.errors import NotAcceptable, NotFound
from pypireg.domain.names import is_valid_name, normalize_name
from pypireg.http.metrics import Metrics
from pypireg.http.negotiation import HTML_V1, JSON_V1, choose_format, content_type_header
from pypireg.http.page_cache import PAGE_CACHE_TTL, CachedIndexPage, PackageCaches
from pypireg.http.pypi.simple_index import ListedFile, project_detail, project_list
from pypireg.http.responses import not_modified, redirect
from pypireg.http.scopes import ReadScope, RequestAccess
from pypireg.proxy.index import ProxiedIndex
from pypireg.storage import name_origins as origin_store
from pypireg.storage import packages as package_store
from pypireg.storage.database import Database


class SimpleRoutes:
    """The simple index of a project or a group (PEP 503 HTML, PEP 691 JSON)."""

    def __init__(self, db: Database, access: RequestAccess, caches: PackageCaches,
                 metrics: Metrics, proxy: ProxiedIndex | None = None) -> None:
        self._db = db
        self._access = access
        self._caches = caches
        self._metrics = metrics
        self._proxy = proxy

    async def simple_root(self, request: IRequest, project: str) -> bytes:
        return await self._render_root(request, await self._access.project_scope(request, project))

    async def simple_package(self, request: IRequest, project: str, name: str) -> bytes:
        scope = await self._access.project_scope(request, project)
        return await self._render_package(request, scope, name)

    async def group_simple_root(self, request: IRequest, group: str) -> bytes:
        return await self._render_root(request, await self._access.group_scope(request, group))

    async def group_simple_package(self, request: IRequest, group: str, name: str) -> bytes:
        scope = await self._access.group_scope(request, group)
        return await self._render_package(request, scope, name)

    async def _render_root(self, request: IRequest, scope: ReadScope) -> bytes:
        media = self._negotiate(request)
        key = ("", tuple(scope.project_ids), media, scope.prefix)
        page = self._cached_page(key)
        if page is None:
            packages = await package_store.list_packages(self._db, scope.project_ids)
            prefix = f"{scope.prefix}/simple/" if self._access.base_url else ""
            page = self._cache_page(key, project_list(packages, media, prefix))
        return self._index_response(request, scope, media, page)

    async def _render_package(self, request: IRequest, scope: ReadScope, name: str) -> bytes:
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        normalized = normalize_name(name)
        if normalized != name:
            return redirect(request, f"{scope.prefix}/simple/{normalized}/")
        media = self._negotiate(request)
        key = (normalized, tuple(scope.project_ids), media, scope.prefix)
        page = self._cached_page(key)
        if page is None:
            files_prefix = f"{scope.prefix}/files/" if self._access.base_url else "../../files/"
            files = await package_store.list_files(self._db, scope.project_ids, normalized)
            if not files:
                return await self._render_upstream(request, scope, name, media, key,
                                                   files_prefix)
            # PEP 752: only where one project's files are listed is the tie certain.
            namespace = None
            if len(scope.project_ids) == 1:
                namespace = await origin_store.owned_namespace(self._db, normalized,
                                                               scope.project_ids[0])
            listed = [ListedFile.of(f) for f in files]
            page = self._cache_page(key, project_detail(normalized, listed, media, files_prefix,
                                                        namespace))
        elif page[2] is not None:
            request.setHeader(b"X-Pypireg-Source", page[2])
        return self._index_response(request, scope, media, page)

    async def _render_upstream(self, request: IRequest, scope: ReadScope, name: str,
                               media: str, key: tuple[object, ...], files_prefix: str
                               ) -> bytes:
        """A name no project of the index has: what the upstream proxy lists, if anything."""
        normalized = normalize_name(name)
        listing = None
        if self._proxy is not None:
            listing = await self._proxy.listing(scope.index, normalized)
        if listing is None:
            raise NotFound(f"No package named {name!r} here.")
        source = f"upstream {listing.upstream.name}".encode()
        request.setHeader(b"X-Pypireg-Source", source)
        body = project_detail(normalized, [ListedFile.of_upstream(f) for f in listing.files],
                              media, files_prefix, status=listing.status)
        if listing.stale is not None:
            # Served from the cache because the upstream failed: say so, and
            # keep it out of the page cache so the next request asks again.
            request.setHeader(b"X-Pypireg-Stale", _header_text(
                f"upstream {listing.upstream.name} failed: {listing.stale}"))
            page = _page(body, source)
        else:
            page = self._cache_page(key, body, source,
                                    ttl=min(PAGE_CACHE_TTL, listing.upstream.ttl))
            if self._caches.live:
                # The page's files, for the downloads that follow it: the file
                # route would otherwise work out this same listing again.
                index = tuple(scope.project_ids)
                for f in listing.files:
                    self._caches.upstream_files.put(
                        (index, f.sha256, f.filename), (listing.upstream, f, normalized),
                        listing.upstream.ttl)
        return self._index_response(request, scope, media, page)

    def _cached_page(self, key: tuple[object, ...]) -> CachedIndexPage | None:
        if not self._caches.live:
            return None
        page = self._caches.pages.get(key)
        if page is not None:
            self._metrics.cache_hits.labels("index").inc()
        return page

    def _cache_page(self, key: tuple[object, ...], body: bytes, source: bytes | None = None,
                    ttl: float | None = None) -> CachedIndexPage:
        page = _page(body, source)
        if self._caches.live:
            self._caches.pages.put(key, page, ttl)
        return page

    def _negotiate(self, request: IRequest) -> str:
        format_param = request.args.get(b"format", [b""])[0].decode("latin-1")
        accept = request.getHeader(b"accept")
        media = choose_format(accept.decode("latin-1") if accept else None, format_param)
        if media is None:
            raise NotAcceptable(
                f"None of the accepted types is offered; ask for {JSON_V1}, {HTML_V1} or "
                "text/html."
            )
        return media

    def _index_response(self, request: IRequest, scope: ReadScope, media: str,
                        page: CachedIndexPage) -> bytes:
        body, etag, _ = page
        visibility = b"public" if scope.public else b"private"
        request.setHeader(b"Content-Type", content_type_header(media))
        request.setHeader(b"Vary", b"Accept, Authorization")
        request.setHeader(b"Cache-Control", visibility + b", max-age=0, must-revalidate")
        return b"" if not_modified(request, etag) else body


def _page(body: bytes, source: bytes | None) -> CachedIndexPage:
    return (body, f'"{hashlib.sha256(body).hexdigest()}"'.encode(), source)


def _header_text(text: str) -> bytes:
    """*text* as a header value: printable ASCII, one line, bounded."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:300].encode("ascii")
