"""Rendered index pages and file rows, kept until a package change is committed.

HTTP layer, in memory. Entries are dropped on every committed change to the
package tables, by any process (storage/changes.py), and nothing is cached
while change notifications are not arriving.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from pypireg.cache import Cache
from pypireg.config import UpstreamConfig
from pypireg.domain.simple_pages import UpstreamFile
from pypireg.storage.changes import ChangeListener
from pypireg.storage.packages import PackageFile

PAGE_CACHE_ENTRIES = 2_000
FILE_ROW_ENTRIES = 50_000
PAGE_CACHE_TTL = 60.0  # a safety net; changes drop entries at once
_PACKAGE_TABLES = frozenset({"package_files", "packages", "package_versions", "projects",
                             "groups", "name_origins", "namespaces", "upstream_pages",
                             "upstream_blocks", "*"})
# An index page: its body, its ETag, and where it came from (an upstream's
# name for proxied pages, for the X-Pypireg-Source header; None if local).
CachedIndexPage = tuple[bytes, bytes, bytes | None]


class PackageCaches:
    def __init__(self, clock: IReactorTime, changes: ChangeListener | None) -> None:
        self._changes = changes
        self.pages: Cache[tuple[Any, ...], CachedIndexPage] = Cache(
            clock, PAGE_CACHE_ENTRIES, PAGE_CACHE_TTL)
        self.file_rows: Cache[tuple[Any, ...], PackageFile] = Cache(
            clock, FILE_ROW_ENTRIES, PAGE_CACHE_TTL)
        # Upstream files an index lists, by (project ids, sha256, filename),
        # with the package's name: a warm download of a proxied file then
        # asks the database nothing.
        self.upstream_files: Cache[tuple[Any, ...], tuple[UpstreamConfig, UpstreamFile, str]] = (
            Cache(clock, FILE_ROW_ENTRIES, PAGE_CACHE_TTL))
        if changes is not None:
            changes.subscribe(self._changed)

    def _changed(self, table: str) -> None:
        if table in _PACKAGE_TABLES:
            self.pages.clear()
            self.file_rows.clear()
            self.upstream_files.clear()

    @property
    def live(self) -> bool:
        """Whether caching is safe now (change notifications are arriving)."""
        return self._changes is not None and self._changes.live

    def wrote_packages(self) -> None:
        """After this process committed a package change: drop caches at once."""
        if self._changes is not None:
            self._changes.notify_local("package_files")
