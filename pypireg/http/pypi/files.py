"""Distribution files and their core metadata files (PEP 658/714).

HTTP layer. Bodies are sent by file_body (sendfile on plain TCP,
twisted.web.static otherwise and for Range); URLs carry the sha256, so
responses are immutable and their ETag is the hash.

Downloads are the hottest route: the root resource (http/app.py) calls
`download` and `group_download` itself, without Klein's routing. A warm
download asks the database nothing, and counting it (file_body.BlobBody
says which answers count) only adds to a dict, which a periodic job writes
in batches (batching.py; service.py flushes it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypireg.batching import PendingCounts
from pypireg.domain.errors import NotFound, RegistryError
from pypireg.domain.filenames import is_safe_basename, is_sha256, parse_filename
from pypireg.domain.names import normalize_name
from pypireg.http.fetched_body import FetchedBody
from pypireg.http.file_body import BlobBody
from pypireg.http.page_cache import PackageCaches
from pypireg.http.responses import not_modified
from pypireg.http.scopes import ReadScope, RequestAccess
from pypireg.proxy.files import UpstreamFiles
from pypireg.proxy.index import ProxiedIndex
from pypireg.storage import packages as package_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database

_log = Logger()
_METADATA_TYPE = b"text/plain; charset=utf-8"
_DIST_TYPE = b"application/octet-stream"


@functools.lru_cache(maxsize=4096)
def _blob_path(blobs: BlobStore, sha256: str) -> str:
    # Blobs are content-addressed, so a hash's path never changes; building
    # it with pathlib was a third of the route's own time per download.
    return str(blobs.path_for(sha256))


class FileRoutes:
    def __init__(self, db: Database, access: RequestAccess, blobs: BlobStore,
                 caches: PackageCaches, proxy: ProxiedIndex | None = None,
                 fetched: UpstreamFiles | None = None,
                 downloads: PendingCounts[int] | None = None) -> None:
        self._db = db
        self._access = access
        self._blobs = blobs
        self._caches = caches
        self._proxy = proxy
        self._fetched = fetched
        # Downloads per file row id, since the last flush.
        self._downloads = downloads

    async def download(self, request: IRequest, project: str, sha256: str, filename: str
                       ) -> Any:
        scope = await self._access.project_scope(request, project)
        return await self._serve_file(request, scope, sha256, filename)

    async def group_download(self, request: IRequest, group: str, sha256: str, filename: str
                             ) -> Any:
        scope = await self._access.group_scope(request, group)
        return await self._serve_file(request, scope, sha256, filename)

    async def _serve_file(self, request: IRequest, scope: ReadScope, sha256: str, filename: str
                          ) -> Any:
        # PEP 658/714: the core metadata lives at "<file URL>.metadata".
        want_metadata = filename.endswith(".metadata")
        dist_filename = filename.removesuffix(".metadata")
        if not is_sha256(sha256) or not is_safe_basename(dist_filename):
            raise NotFound("No such file.")
        key = (tuple(scope.project_ids), sha256, dist_filename)
        live = self._caches.live
        row = self._caches.file_rows.get(key) if live else None
        if row is None and live and self._caches.upstream_files.get(key) is not None:
            # A proxied file served since the last change: not a local one.
            return await self._serve_upstream(request, scope, sha256, dist_filename,
                                              want_metadata)
        if row is None:
            row = await package_store.find_file(self._db, scope.project_ids, sha256,
                                                dist_filename)
            if row is not None and self._caches.live:
                self._caches.file_rows.put(key, row)
        if row is None and self._proxy is not None and self._fetched is not None:
            return await self._serve_upstream(request, scope, sha256, dist_filename,
                                              want_metadata)
        if row is None or (want_metadata and row.metadata_sha256 is None):
            raise NotFound("No such file.")
        blob_sha256 = row.metadata_sha256 if want_metadata else sha256
        assert blob_sha256 is not None
        visibility = b"public" if scope.public else b"private"
        request.setHeader(b"Cache-Control", visibility + b", max-age=31536000, immutable")
        if not_modified(request, f'"{blob_sha256}"'.encode()):
            return b""
        if not want_metadata:
            request.setHeader(
                b"Content-Disposition", f'attachment; filename="{row.filename}"'.encode()
            )
        if want_metadata:
            return BlobBody(_blob_path(self._blobs, blob_sha256), _METADATA_TYPE)
        counted = (None if self._downloads is None
                   else functools.partial(self._downloads.add, row.id, 1))
        return BlobBody(_blob_path(self._blobs, blob_sha256), _DIST_TYPE, counted)

    async def _serve_upstream(self, request: IRequest, scope: ReadScope, sha256: str,
                              filename: str, want_metadata: bool) -> Any:
        """A file the index lists from an upstream: from the cache, else fetched through."""
        assert self._proxy is not None and self._fetched is not None
        key = (tuple(scope.project_ids), sha256, filename)
        found = self._caches.upstream_files.get(key) if self._caches.live else None
        if found is None:
            try:
                parsed = parse_filename(filename)
            except RegistryError:
                raise NotFound("No such file.") from None
            name = normalize_name(parsed.name)
            listed_here = await self._proxy.find_file(scope.index, name, sha256, filename)
            if listed_here is None:
                if (not want_metadata and await self._proxy.kept_file(
                        scope.index, name, sha256, filename, str(parsed.version))
                        and await self._fetched.stored(sha256)):
                    # Gone upstream, kept here for installs pinned to it.
                    return self._download(request, scope, sha256, filename)
                raise NotFound("No such file.")
            found = (*listed_here, name)
            if self._caches.live:
                self._caches.upstream_files.put(key, found, found[0].ttl)
        upstream, listed, name = found
        visibility = b"public" if scope.public else b"private"
        if want_metadata:
            metadata = await self._fetched.metadata(upstream, name, listed)
            if metadata.data is None:
                return self._immutable(request, visibility, metadata.sha256, _METADATA_TYPE)
            # Fetched just now and still being stored: served from memory.
            request.setHeader(b"Cache-Control", visibility + b", max-age=31536000, immutable")
            if not_modified(request, f'"{metadata.sha256}"'.encode()):
                return b""
            request.setHeader(b"Content-Type", _METADATA_TYPE)
            return metadata.data
        if await self._fetched.stored(sha256):
            return self._download(request, scope, sha256, filename)
        if request.method == b"HEAD":
            # What a GET would send, without fetching the file for nothing.
            request.setHeader(b"Content-Type", _DIST_TYPE)
            if listed.size is not None:
                request.setHeader(b"Content-Length", str(listed.size).encode())
            return b""
        transfer = await self._fetched.fetch(upstream, name, listed).open()
        request.setHeader(b"Cache-Control", visibility + b", max-age=31536000, immutable")
        request.setHeader(b"ETag", f'"{sha256}"'.encode())
        request.setHeader(b"Content-Disposition", f'attachment; filename="{filename}"'.encode())
        return FetchedBody(transfer, _DIST_TYPE)

    def _download(self, request: IRequest, scope: ReadScope, sha256: str, filename: str
                  ) -> Any:
        """A cached upstream file, counted on the cache's row (shared by every index)."""
        assert self._fetched is not None
        request.setHeader(b"Content-Disposition", f'attachment; filename="{filename}"'.encode())
        visibility = b"public" if scope.public else b"private"
        return self._immutable(request, visibility, sha256, _DIST_TYPE,
                               functools.partial(self._fetched.downloaded, sha256))

    def _immutable(self, request: IRequest, visibility: bytes, blob_sha256: str,
                   content_type: bytes, counted: Callable[[], None] | None = None) -> Any:
        request.setHeader(b"Cache-Control", visibility + b", max-age=31536000, immutable")
        if not_modified(request, f'"{blob_sha256}"'.encode()):
            return b""
        return BlobBody(_blob_path(self._blobs, blob_sha256), content_type, counted)
