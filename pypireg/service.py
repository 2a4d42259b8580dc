"""The daemon's service tree: database → migrations → storage → listeners.

Composition only: every part gets its dependencies through its
constructor. Stopping runs in reverse: listeners first (in-flight requests
finish), then the token-use and download-count flushes, the pool and the
embedded PostgreSQL.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import IO, Any

from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, globalLogPublisher, jsonFileLogObserver
from twisted.python.failure import Failure

from pypireg.access import Authorizer
from pypireg.batching import PendingCounts
from pypireg.config import Config
from pypireg.domain.audit import SYSTEM
from pypireg.http.app import RegistryResource, RouteGroups
from pypireg.http.errors import ErrorFunnel
from pypireg.http.gitlab.audit_events import AuditEventsRoutes
from pypireg.http.gitlab.deploy_tokens import DeployTokensRoutes
from pypireg.http.gitlab.packages_api import PackagesApiRoutes
from pypireg.http.gitlab.projects_api import ProjectsApiRoutes
from pypireg.http.gitlab.trusted_publishers import TrustedPublishersRoutes
from pypireg.http.metrics import Metrics
from pypireg.http.ops import MetricsPage, OpsRoutes, metrics_site
from pypireg.http.page_cache import PackageCaches
from pypireg.http.pypi.files import FileRoutes
from pypireg.http.pypi.json_api import JsonApiRoutes
from pypireg.http.pypi.oidc import OidcRoutes
from pypireg.http.pypi.simple import SimpleRoutes
from pypireg.http.pypi.upload import UploadRoutes
from pypireg.http.pypi.yank import YankRoutes
from pypireg.http.scopes import RequestAccess
from pypireg.http.site import RegistrySite
from pypireg.http.upload_stream import UploadContext
from pypireg.http.web.readme import ReadmeLimits, ReadmeRenderer
from pypireg.http.web.routes import PageRoutes
from pypireg.listeners import (
    LISTEN,
    METRICS_LISTEN,
    InheritedListener,
    InheritedListeners,
    listen_failed,
    parse_endpoint,
)
from pypireg.oidc.exchange import TokenExchange
from pypireg.oidc.keys import IssuerKeys, default_client
from pypireg.proxy.files import UpstreamFiles
from pypireg.proxy.index import ProxiedIndex
from pypireg.proxy.pages import UpstreamPages
from pypireg.startup import StartupError, data_folder_error, open_database, os_reason
from pypireg.storage.backends import open_blob_store
from pypireg.storage.blob_backend import BlobBackend
from pypireg.storage.changes import ChangeListener
from pypireg.storage.database import Database
from pypireg.storage.downloads import record_downloads
from pypireg.storage.duplicates import remove_surplus_duplicates
from pypireg.storage.embedded import EmbeddedPostgres
from pypireg.storage.gc import collect_garbage
from pypireg.upstream.client import UpstreamClient

_log = Logger()
# Unreferenced blobs (from deletes) are removed this often; see storage/gc.py.
GC_INTERVAL_SECONDS = 3600.0
# Projects' duplicate cleanup policies are applied to stored files this
# often (each upload applies its own); see storage/duplicates.py.
DUPLICATES_INTERVAL_SECONDS = 3600.0
# Downloads counted in memory (of stored files, and of cached upstream
# files, for their counts and for eviction) are written this often.
DOWNLOADS_FLUSH_SECONDS = 60.0
# Cached upstream files past proxy.max_cache_size are evicted this often.
EVICTION_INTERVAL_SECONDS = 300.0


@dataclass(frozen=True)
class ProxyParts:
    """The upstream proxy of one daemon (present only with upstreams configured)."""

    clients: list[UpstreamClient]
    index: ProxiedIndex
    files: UpstreamFiles

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def build_proxy(reactor: Any, config: Config, db: Database, blobs: BlobBackend,
                metrics: Metrics, changes: ChangeListener | None) -> ProxyParts | None:
    if not config.upstreams:
        return None
    clients = [UpstreamClient(reactor, upstream) for upstream in config.upstreams]
    pages = UpstreamPages(reactor, db, clients, metrics.upstream_event)
    if changes is not None:
        # A page fetched, refreshed or purged by any daemon or the CLI.
        changes.subscribe(lambda table: pages.forget_all()
                          if table in ("upstream_pages", "*") else None)
    files = UpstreamFiles(db, blobs, {c.name: c for c in clients}, clock=reactor,
                          max_file_size=config.proxy.max_cache_size,
                          observe=metrics.upstream_event,
                          observe_bytes=metrics.upstream_fetched)
    return ProxyParts(clients, ProxiedIndex(db, pages, files), files)


def file_downloads(db: Database) -> PendingCounts[int]:
    """The downloads of stored files a site counts (per file row), until flushed to *db*."""
    return PendingCounts(lambda counted: record_downloads(db, counted), "download counts")


class DownloadCounts:
    """Every download count a daemon keeps in memory, flushed together.

    Stored files' counts (per file row), and the proxy's (per cached
    upstream file, which also records their last download for eviction).
    """

    def __init__(self, files: PendingCounts[int], proxy: ProxyParts | None) -> None:
        self.files = files
        self._proxy = proxy

    async def flush(self) -> None:
        """Write them all (each in one statement); a failed flush keeps its counts."""
        await self.files.flush()
        if self._proxy is not None:
            await self._proxy.files.flush_downloads()


async def build_site(reactor: Any, config: Config, db: Database,
                     changes: ChangeListener | None = None, *,
                     metrics: Metrics | None = None, blobs: BlobBackend | None = None,
                     proxy: ProxyParts | None = None,
                     downloads: PendingCounts[int] | None = None,
                     oidc_client: HTTPClient | None = None
                     ) -> tuple[RegistrySite, Authorizer]:
    """The HTTP site over *db*, with its storage ready; the caller starts the authorizer.

    With a started ChangeListener the site caches token checks, index pages
    and file lookups (dropped on every committed change); without, it does
    not cache. The upstream proxy is the caller's (*proxy*, built with the
    same *metrics* and *blobs*): it has connections to close. So are the
    *downloads* it counts (file_downloads): the caller flushes them;
    without, stored files' downloads are not counted. *oidc_client*
    fetches the OIDC issuers' keys (default: treq verifying TLS).
    """
    if blobs is None:
        blobs = open_blob_store(reactor, config.storage)
    blobs.prepare()
    await blobs.remove_stale_temp_files()
    authorizer = Authorizer(db, reactor, changes)
    if metrics is None:
        metrics = Metrics()
    metrics.track_pool(db.in_use, lambda: db.size)
    access = RequestAccess(authorizer, config.server.base_url)
    caches = PackageCaches(reactor, changes)
    proxied = proxy.index if proxy is not None else None
    keys = IssuerKeys(db, reactor, oidc_client or default_client(reactor))
    exchange = TokenExchange(db, reactor, config.trusted_publishing, keys, authorizer.failures)
    routes = RouteGroups(
        uploads=UploadRoutes(db, blobs, metrics, caches, config.server.base_url),
        simple=SimpleRoutes(db, access, caches, metrics, proxied),
        files=FileRoutes(db, access, blobs, caches, proxied,
                         proxy.files if proxy is not None else None, downloads),
        yank=YankRoutes(db, access, caches),
        json_api=JsonApiRoutes(db, access),
        packages_api=PackagesApiRoutes(db, access, caches),
        projects_api=ProjectsApiRoutes(db, access),
        deploy_tokens=DeployTokensRoutes(db, access),
        audit_events=AuditEventsRoutes(db, access),
        pages=PageRoutes(db, access, ReadmeRenderer(reactor, db, ReadmeLimits())),
        # With metrics listeners of their own, /-/metrics is not on this site.
        ops=OpsRoutes(db, blobs, None if config.server.metrics_listen else MetricsPage(
            metrics, config.server.metrics_token, authorizer.failures)),
        oidc=OidcRoutes(exchange),
        trusted_publishers=TrustedPublishersRoutes(db, access, config.trusted_publishing),
    )
    site = RegistrySite(
        RegistryResource(routes, ErrorFunnel(config.server.base_url)),
        UploadContext(authorizer, blobs, config.uploads.max_size),
        clock=reactor,
        metrics=metrics,
        timeout=config.server.timeout,
        trusted_proxies=config.server.trusted_proxies,
        base_url=config.server.base_url,
    )
    return site, authorizer


def periodic(clock: Any, interval: float, job: Callable[[], Coroutine[Any, Any, object]],
             what: str) -> TimerService:
    """A TimerService running *job* now and every *interval* seconds on *clock*.

    A failed run is logged as "*what* failed" and the next one comes anyway
    (an unhandled failure would stop the timer for good).
    """

    def run() -> Deferred[Any]:
        d = Deferred.fromCoroutine(job())
        return d.addErrback(lambda f: _log.failure("{what} failed", f, what=what))

    timer = TimerService(interval, run)
    timer.clock = clock
    timer.setName(what)
    return timer


def housekeeping(clock: Any, db: Database, blobs: BlobBackend,
                 changes: ChangeListener | None) -> list[TimerService]:
    """The hourly jobs: the duplicate cleanup policies, and the garbage collection.

    The rows the duplicate cleanup removes are dropped from this daemon's
    caches at once (the other daemons' go with the NOTIFY); their blobs go
    with a later garbage collection, like those of deleted files.
    """

    async def clean_up_duplicates() -> None:
        if await remove_surplus_duplicates(db, actor=SYSTEM) and changes is not None:
            changes.notify_local("package_files")

    return [
        periodic(clock, DUPLICATES_INTERVAL_SECONDS, clean_up_duplicates, "duplicate cleanup"),
        periodic(clock, GC_INTERVAL_SECONDS, lambda: collect_garbage(db, blobs),
                 "garbage collection"),
    ]


def background_jobs(clock: Any, db: Database, blobs: BlobBackend, changes: ChangeListener | None,
                    proxy: ProxyParts | None,
                    flush_downloads: Callable[[], Coroutine[Any, Any, object]],
                    max_cache_size: int, *, once: bool) -> list[TimerService]:
    """The periodic jobs of one process; *once*: also those that must run in one process only.

    Writing the download counts (DownloadCounts.flush) is each process's
    own counts; the housekeeping and the cache eviction act on the whole
    installation, so with workers only worker 1 runs them (they would be
    safe in several, as with several daemons, but would do the work N times).
    """
    jobs = housekeeping(clock, db, blobs, changes) if once else []
    jobs.append(periodic(clock, DOWNLOADS_FLUSH_SECONDS, flush_downloads, "recording downloads"))
    if proxy is not None and once:
        fetched = proxy.files
        jobs.append(periodic(clock, EVICTION_INTERVAL_SECONDS,
                             lambda: fetched.evict(max_cache_size), "cache eviction"))
    return jobs


def _exit_failed() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


# The field of the log event with which a worker tells its parent it serves.
WORKER_READY_KEY = "pypireg_worker_ready"


@dataclass(frozen=True)
class WorkerRole:
    """What makes a RegistryService one of `server.workers` processes (see supervisor.py).

    Attributes:
        number: 1 to N. Worker 1 alone runs the jobs that must run once
            (garbage collection, duplicate cleanup, cache eviction).
        listeners: The sockets the parent opened, to serve instead of
            listening itself.
    """

    number: int
    listeners: list[InheritedListener]

    @property
    def runs_housekeeping(self) -> bool:
        return self.number == 1


class RegistryService(MultiService):
    """The registry: one process, or (with *worker*) one of the parent's workers.

    A worker's config names the database the parent opened (the embedded
    PostgreSQL's socket, or the configured DSN), which the parent migrated:
    it starts no PostgreSQL and applies no migration, leaves the JSON log
    to the parent (its events reach the parent's log through
    worker.py), serves the inherited sockets, and drains when stopped.
    """

    def __init__(self, reactor: Any, config: Config, worker: WorkerRole | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self.config = config
        self._worker = worker
        self.db: Database | None = None
        self.site: RegistrySite | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._authorizer: Authorizer | None = None
        self._changes: ChangeListener | None = None
        self._json_observer: Any = None
        self._proxy: ProxyParts | None = None
        self._downloads: DownloadCounts | None = None

    def startService(self) -> None:
        # Children (the listeners) are added once the database is ready.
        self.running = True
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(self._start_failed)

    async def _start(self) -> None:
        config = self.config
        worker = self._worker
        if worker is None:
            self._start_json_log()
        if worker is None or worker.runs_housekeeping:  # said once, not by every worker
            for issuer in config.trusted_publishing.issuers:
                if issuer.plain_http:
                    _log.warn("trusted_publishing: the issuer {url} is plain http (loopback "
                              "only); use https outside tests", url=issuer.url)
        opened = await open_database(self._reactor, config, migrate_schema=worker is None)
        self.db, self._embedded = opened.db, opened.embedded
        self._changes = ChangeListener(self._reactor, self.db.dsn)
        await self._changes.start()
        blobs = open_blob_store(self._reactor, config.storage)
        metrics = Metrics()
        self._proxy = build_proxy(self._reactor, config, self.db, blobs, metrics,
                                  self._changes)
        downloads = self._downloads = DownloadCounts(file_downloads(self.db), self._proxy)
        try:
            self.site, self._authorizer = await build_site(
                self._reactor, config, self.db, self._changes, metrics=metrics, blobs=blobs,
                proxy=self._proxy, downloads=downloads.files)
        except OSError as e:
            # Only the blob store touches the disk here: its folders, its temp files.
            raise data_folder_error(config, e) from e
        self._authorizer.start()
        # With workers, the jobs that must run once run in worker 1 only.
        for job in background_jobs(self._reactor, self.db, blobs, self._changes, self._proxy,
                                   downloads.flush, config.proxy.max_cache_size,
                                   once=worker is None or worker.runs_housekeeping):
            job.setServiceParent(self)
        scrape = None
        if config.server.metrics_listen:
            scrape = metrics_site(MetricsPage(metrics, config.server.metrics_token,
                                              self._authorizer.failures), config.server.timeout)
        if worker is not None:
            self.site.worker = worker.number
            served = [(listener, self.site if listener.setting == LISTEN else scrape)
                      for listener in worker.listeners]
            InheritedListeners(self._reactor, served, [self.site],
                               config.server.timeout).setServiceParent(self)  # type: ignore[no-untyped-call]
        else:
            for description in config.server.listen:
                self._listen(description, self.site)
            for description in config.server.metrics_listen:
                self._listen(description, scrape, METRICS_LISTEN)
        # What start-up allocated lives as long as the process: keep it out
        # of the cyclic collector's full passes, which would otherwise pause
        # the reactor for longer and longer as caches fill.
        gc.collect()
        gc.freeze()
        if worker is not None:
            # The parent (supervisor.py) counts its workers ready on this key.
            _log.info("pypireg worker {worker} ready", worker=worker.number,
                      **{WORKER_READY_KEY: True})
        else:
            _log.info("pypireg ready (storage {path})", path=str(config.storage.path))

    def _listen(self, description: str, site: Any, setting: str = LISTEN) -> None:
        """Listen on the endpoint *description* (one entry of *setting*).

        Raises:
            StartupError: The string is no endpoint, or listening failed.
        """
        listener = StreamServerEndpointService(
            parse_endpoint(self._reactor, description, setting), site)
        # As strports.service does: a failure to listen raises here, not later.
        listener._raiseSynchronously = True
        try:
            listener.setServiceParent(self)
        except (CannotListenError, OSError) as e:
            raise listen_failed(description, setting, e) from e
        what = "serving /-/metrics" if setting == METRICS_LISTEN else "listening"
        _log.info("pypireg {what} on {endpoint}", what=what, endpoint=description)

    def _start_failed(self, failure: Failure) -> None:
        if failure.check(StartupError):
            # The operator's to fix, and the message says how: no traceback.
            _log.critical("pypireg could not start: {reason}", reason=str(failure.value))
        else:
            _log.failure("pypireg could not start: {reason}", failure,
                         reason=f"unexpected {type(failure.value).__name__}: {failure.value}")
        # twistd exits 0 whenever the reactor stops; a failed start must exit
        # non-zero (systemd's Restart=on-failure depends on it), so exit once
        # shutdown (stopService: pool, embedded PostgreSQL) ran. A start that
        # failed before its first wait (a malformed DSN) failed during the
        # reactor's startup, before it runs: stopping then would be ignored.
        self._reactor.callWhenRunning(self._exit_after_shutdown)

    def _exit_after_shutdown(self) -> None:
        self._reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
        self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    def _start_json_log(self) -> None:
        target = self.config.logging.json_file
        if target is None:
            return
        try:
            stream: IO[str] = sys.stdout if target == "-" else open(
                target, "a", encoding="utf-8")
        except OSError as e:
            raise StartupError(f"cannot open the JSON log {target}", "logging.json_file",
                               os_reason(e)) from e
        self._json_observer = jsonFileLogObserver(stream)
        globalLogPublisher.addObserver(self._json_observer)

    async def _stop(self) -> None:
        await super().stopService()  # type: ignore[no-untyped-call]
        if self._authorizer is not None:
            await self._authorizer.stop()
        if self._proxy is not None:
            # Files fetched through, still being kept: their rows first.
            await self._proxy.files.settled()
        if self._downloads is not None:
            # The listeners are closed: what is counted now is all there is.
            await self._downloads.flush()
        if self._proxy is not None:
            await self._proxy.close()
        if self._changes is not None:
            self._changes.stop()
        if self.db is not None:
            self.db.close()
        if self._embedded is not None:
            await self._embedded.stop()
        if self._json_observer is not None:
            globalLogPublisher.removeObserver(self._json_observer)
