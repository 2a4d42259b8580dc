"""The daemon's service tree: database → migrations → storage → listeners.

Composition only: every part gets its dependencies through its
constructor. Stopping runs in reverse: listeners first (in-flight requests
finish), then the token-use flush, the pool and the embedded PostgreSQL.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from typing import IO, Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger, globalLogPublisher, jsonFileLogObserver
from twisted.python.failure import Failure

from pypireg.access import Authorizer
from pypireg.config import Config
from pypireg.http.app import RegistryResource, RouteGroups
from pypireg.http.errors import ErrorFunnel
from pypireg.http.gitlab.deploy_tokens import DeployTokensRoutes
from pypireg.http.gitlab.packages_api import PackagesApiRoutes
from pypireg.http.metrics import Metrics
from pypireg.http.ops import MetricsPage, OpsRoutes, metrics_site
from pypireg.http.page_cache import PackageCaches
from pypireg.http.pypi.files import FileRoutes
from pypireg.http.pypi.json_api import JsonApiRoutes
from pypireg.http.pypi.simple import SimpleRoutes
from pypireg.http.pypi.upload import UploadRoutes
from pypireg.http.pypi.yank import YankRoutes
from pypireg.http.scopes import RequestAccess
from pypireg.http.site import RegistrySite
from pypireg.http.upload_stream import UploadContext
from pypireg.http.web.readme import ReadmeLimits, ReadmeRenderer
from pypireg.http.web.routes import PageRoutes
from pypireg.proxy.files import UpstreamFiles
from pypireg.proxy.index import ProxiedIndex
from pypireg.proxy.pages import UpstreamPages
from pypireg.storage.blobs import BlobStore
from pypireg.storage.changes import ChangeListener
from pypireg.storage.database import Database
from pypireg.storage.embedded import EmbeddedPostgres
from pypireg.storage.gc import collect_garbage
from pypireg.storage.migrations import migrate
from pypireg.upstream.client import UpstreamClient

_log = Logger()
# Unreferenced blobs (from deletes) are removed this often; see storage/gc.py.
GC_INTERVAL_SECONDS = 3600.0
# Downloads of cached upstream files are recorded (for eviction) this often.
DOWNLOADS_FLUSH_SECONDS = 60.0
# Cached upstream files past proxy.max_cache_size are evicted this often.
EVICTION_INTERVAL_SECONDS = 300.0


async def open_database(reactor: Any, config: Config) -> tuple[Database, EmbeddedPostgres | None]:
    """Connect to the configured database, or start the embedded one; migrate it."""
    embedded = None
    dsn = config.database.dsn
    if dsn is None:
        embedded = EmbeddedPostgres(reactor, config.pgdata)
        dsn = await embedded.start()
    db = Database(reactor, dsn, config.database.pool_size)
    try:
        await db.start()
        await migrate(db)
    except BaseException:
        db.close()
        if embedded is not None:
            await embedded.stop()
        raise
    return db, embedded


@dataclass(frozen=True)
class ProxyParts:
    """The upstream proxy of one daemon (present only with upstreams configured)."""

    clients: list[UpstreamClient]
    index: ProxiedIndex
    files: UpstreamFiles

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def build_proxy(reactor: Any, config: Config, db: Database, blobs: BlobStore,
                metrics: Metrics, changes: ChangeListener | None) -> ProxyParts | None:
    if not config.upstreams:
        return None
    clients = [UpstreamClient(reactor, upstream) for upstream in config.upstreams]
    pages = UpstreamPages(reactor, db, clients, metrics.upstream_event)
    if changes is not None:
        # A page fetched, refreshed or purged by any daemon or the CLI.
        changes.subscribe(lambda table: pages.forget_all()
                          if table in ("upstream_pages", "*") else None)
    files = UpstreamFiles(db, blobs, {c.name: c for c in clients},
                          max_file_size=config.proxy.max_cache_size,
                          observe=metrics.upstream_event,
                          observe_bytes=metrics.upstream_fetched)
    return ProxyParts(clients, ProxiedIndex(db, pages, files), files)


async def build_site(reactor: Any, config: Config, db: Database,
                     changes: ChangeListener | None = None, *,
                     metrics: Metrics | None = None, blobs: BlobStore | None = None,
                     proxy: ProxyParts | None = None) -> tuple[RegistrySite, Authorizer]:
    """The HTTP site over *db*, with its storage ready; the caller starts the authorizer.

    With a started ChangeListener the site caches token checks, index pages
    and file lookups (dropped on every committed change); without, it does
    not cache. The upstream proxy is the caller's (*proxy*, built with the
    same *metrics* and *blobs*): it has connections to close.
    """
    if blobs is None:
        blobs = BlobStore(reactor, config.storage.path)
    blobs.prepare()
    await blobs.remove_stale_temp_files()
    authorizer = Authorizer(db, reactor, changes)
    if metrics is None:
        metrics = Metrics()
    metrics.track_pool(db.in_use, lambda: db.size)
    access = RequestAccess(authorizer, config.server.base_url)
    caches = PackageCaches(reactor, changes)
    proxied = proxy.index if proxy is not None else None
    routes = RouteGroups(
        uploads=UploadRoutes(db, blobs, metrics, caches),
        simple=SimpleRoutes(db, access, caches, metrics, proxied),
        files=FileRoutes(db, access, blobs, caches, proxied,
                         proxy.files if proxy is not None else None),
        yank=YankRoutes(db, access, caches),
        json_api=JsonApiRoutes(db, access),
        packages_api=PackagesApiRoutes(db, access, caches),
        deploy_tokens=DeployTokensRoutes(db, access),
        pages=PageRoutes(db, access, ReadmeRenderer(reactor, db, ReadmeLimits())),
        # With metrics listeners of their own, /-/metrics is not on this site.
        ops=OpsRoutes(db, blobs, None if config.server.metrics_listen else MetricsPage(
            metrics, config.server.metrics_token, authorizer.failures)),
    )
    site = RegistrySite(
        RegistryResource(routes, ErrorFunnel(config.server.base_url)),
        UploadContext(authorizer, blobs, config.uploads.max_size),
        clock=reactor,
        metrics=metrics,
        timeout=config.server.timeout,
        trusted_proxies=config.server.trusted_proxies,
    )
    return site, authorizer


def _exit_failed() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class RegistryService(MultiService):
    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self.config = config
        self.db: Database | None = None
        self.site: RegistrySite | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._authorizer: Authorizer | None = None
        self._changes: ChangeListener | None = None
        self._json_observer: Any = None
        self._proxy: ProxyParts | None = None

    def startService(self) -> None:
        # Children (the listeners) are added once the database is ready.
        self.running = True
        self._start_json_log()
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(self._start_failed)

    async def _start(self) -> None:
        config = self.config
        self.db, self._embedded = await open_database(self._reactor, config)
        self._changes = ChangeListener(self._reactor, self.db.dsn)
        await self._changes.start()
        blobs = BlobStore(self._reactor, config.storage.path)
        metrics = Metrics()
        self._proxy = build_proxy(self._reactor, config, self.db, blobs, metrics,
                                  self._changes)
        self.site, self._authorizer = await build_site(
            self._reactor, config, self.db, self._changes, metrics=metrics, blobs=blobs,
            proxy=self._proxy)
        self._authorizer.start()
        db = self.db

        def collect_blobs() -> Deferred[Any]:
            d = Deferred.fromCoroutine(collect_garbage(db, blobs))
            return d.addErrback(lambda f: _log.failure("garbage collection failed", f))

        collector = TimerService(GC_INTERVAL_SECONDS, collect_blobs)
        collector.clock = self._reactor
        collector.setServiceParent(self)
        if self._proxy is not None:
            fetched = self._proxy.files

            def flush_downloads() -> Deferred[Any]:
                d = Deferred.fromCoroutine(fetched.flush_downloads())
                return d.addErrback(lambda f: _log.failure("recording downloads failed", f))

            flusher = TimerService(DOWNLOADS_FLUSH_SECONDS, flush_downloads)
            flusher.clock = self._reactor
            flusher.setServiceParent(self)
            max_cache = config.proxy.max_cache_size

            def evict() -> Deferred[Any]:
                d = Deferred.fromCoroutine(fetched.evict(max_cache))
                return d.addErrback(lambda f: _log.failure("cache eviction failed", f))

            evictor = TimerService(EVICTION_INTERVAL_SECONDS, evict)
            evictor.clock = self._reactor
            evictor.setServiceParent(self)
        for description in config.server.listen:
            listener = strports.service(description, self.site, reactor=self._reactor)
            listener.setServiceParent(self)
            _log.info("pypireg listening on {endpoint}", endpoint=description)
        if config.server.metrics_listen:
            scrape = metrics_site(MetricsPage(metrics, config.server.metrics_token,
                                              self._authorizer.failures), config.server.timeout)
            for description in config.server.metrics_listen:
                listener = strports.service(description, scrape, reactor=self._reactor)
                listener.setServiceParent(self)
                _log.info("pypireg serving /-/metrics on {endpoint}", endpoint=description)
        # What start-up allocated lives as long as the process: keep it out
        # of the cyclic collector's full passes, which would otherwise pause
        # the reactor for longer and longer as caches fill.
        gc.collect()
        gc.freeze()
        _log.info("pypireg ready (storage {path})", path=str(config.storage.path))

    def _start_failed(self, failure: Failure) -> None:
        _log.failure("pypireg could not start", failure)
        if self._reactor.running:
            # twistd exits 0 whenever the reactor stops; a failed start must
            # exit non-zero (systemd's Restart=on-failure depends on it), so
            # exit once shutdown (stopService: pool, embedded PostgreSQL) ran.
            self._reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
            self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    def _start_json_log(self) -> None:
        target = self.config.logging.json_file
        if target is None:
            return
        stream: IO[str] = sys.stdout if target == "-" else open(
            target, "a", encoding="utf-8")
        self._json_observer = jsonFileLogObserver(stream)
        globalLogPublisher.addObserver(self._json_observer)

    async def _stop(self) -> None:
        await super().stopService()  # type: ignore[no-untyped-call]
        if self._authorizer is not None:
            await self._authorizer.stop()
        if self._proxy is not None:
            await self._proxy.files.flush_downloads()
            await self._proxy.close()
        if self._changes is not None:
            self._changes.stop()
        if self.db is not None:
            self.db.close()
        if self._embedded is not None:
            await self._embedded.stop()
        if self._json_observer is not None:
            globalLogPublisher.removeObserver(self._json_observer)
