"""Which upstream serves a name, and its page: fresh, revalidated, or stale on error.

Proxy layer. For a name no project in the index has, the first upstream in
the index's list that has it serves it, and only that one (uv's
first-index rule, applied on the server so that every client gets it).
Pages live in PostgreSQL (storage/upstream_cache.py) so every daemon on the
database shares them; this module adds freshness and one fetch at a time:

    asked ─▶ fresh in memory? ─yes─▶ page
               │no
               ▼
             row in PostgreSQL fresh (checked_at + ttl)? ─yes─▶ page
               │no (or none)
               ▼
             another request of this process fetching it? ─yes─▶ share its answer
               │no
               ▼
             lease (upstream_pages.fetching_until) taken? ─no─▶ poll the row until
               │yes                                            the holder answers
               ▼
             ask the upstream (conditional when we have validators)
               200 ─▶ store, serve │ 304 ─▶ mark checked │ 404 ─▶ record missing
               down/slow ─▶ record the error; serve the last good page, marked
                            stale, or fail 502/504 when there is none

An unreachable upstream never lets the next one answer for the name: the
next one might be exactly the index an attacker published the name to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pypireg.config import UpstreamConfig
from pypireg.domain.errors import BadGateway, GatewayTimeout
from pypireg.domain.simple_pages import ProjectPage
from pypireg.proxy.listing import from_document, to_document
from pypireg.single_flight import SingleFlight
from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.database import Database
from pypireg.storage.upstream_cache import CachedPage
from pypireg.upstream.client import Fetched, Missing, NotModified, UpstreamUnavailable

_log = Logger()
# How often a request waiting on another daemon's fetch looks at the row.
POLL_SECONDS = 0.05
# A lease outlives the fetch it guards by this much (the page is parsed and
# stored after the upstream answered); a daemon that dies loses it by then.
LEASE_MARGIN_SECONDS = 10.0
# After an upstream failed for a name, its last good page is served stale
# for this long before the upstream is asked again.
ERROR_BACKOFF_SECONDS = 10.0
# Pages kept in memory, each for at most its upstream's ttl.
MEMORY_PAGES = 5_000


class PageSource(Protocol):
    """What this module needs of an upstream client (pypireg/upstream/client.py)."""

    @property
    def config(self) -> UpstreamConfig: ...

    async def fetch_page(self, name: str, *, etag: str | None = None,
                         last_modified: str | None = None) -> Fetched | NotModified | Missing:
        ...


# Events counted by the caller's metrics: hit (fresh cache), miss (first
# fetch), revalidated (a 304 or a changed page after ttl), stale (served
# after an upstream error), error (the upstream failed), missing (a 404).
Observer = Callable[[str, str], None]


@dataclass(frozen=True)
class Resolved:
    """The upstream serving a name, and its page."""

    upstream: UpstreamConfig
    page: ProjectPage
    # Why the page may be out of date (the upstream failed), or None.
    stale: str | None = None


@dataclass(frozen=True)
class _Answer:
    page: ProjectPage | None  # None: the upstream does not have the name
    stale: str | None = None


class UpstreamPages:
    """Resolves names to upstream pages for every index of one daemon."""

    def __init__(self, clock: IReactorTime, db: Database, sources: Sequence[PageSource],
                 observe: Observer | None = None) -> None:
        self._clock = clock
        self._db = db
        self._sources: dict[str, PageSource] = {s.config.name: s for s in sources}
        self._observe: Observer = observe or (lambda event, upstream: None)
        self._memory: dict[tuple[str, str], tuple[float, _Answer]] = {}
        self._in_flight: SingleFlight[tuple[str, str], _Answer] = SingleFlight()

    @property
    def configured(self) -> list[str]:
        """Every configured upstream, in config order (an index's default list)."""
        return list(self._sources)

    def upstream(self, name: str) -> UpstreamConfig | None:
        source = self._sources.get(name)
        return source.config if source else None

    async def resolve(self, name: str, upstreams: Sequence[str]) -> Resolved | None:
        """The first of *upstreams* that has *name* (normalised), or None when none has.

        Raises:
            BadGateway, GatewayTimeout: an upstream could not be asked and
                nothing cached for it can stand in; the later upstreams are
                not asked (see the module docstring).
        """
        for upstream in upstreams:
            source = self._sources.get(upstream)
            if source is None:  # dropped from the config since the index named it
                continue
            answer = await self._answer(source, name)
            if answer.page is not None:
                return Resolved(source.config, answer.page, answer.stale)
        return None

    def waiting(self) -> int:
        """Requests waiting for a page being looked up (for tests and metrics)."""
        return self._in_flight.waiting()

    def forget(self, upstream: str, name: str) -> None:
        """Drop the in-memory copy (after `pypireg upstream refresh` or a change)."""
        self._memory.pop((upstream, name), None)

    def forget_all(self) -> None:
        self._memory.clear()

    async def _answer(self, source: PageSource, name: str) -> _Answer:
        key = (source.config.name, name)
        remembered = self._memory.get(key)
        if remembered is not None and remembered[0] > self._clock.seconds():
            self._observe("hit", key[0])
            return remembered[1]
        return await self._in_flight.run(key, lambda: self._look_up(source, name))

    async def _look_up(self, source: PageSource, name: str) -> _Answer:
        config = source.config
        cached = await cache_store.get_page(self._db, config.name, name)
        if config.offline:
            # Only what is cached; a name never fetched is not there.
            if cached is None or cached.state == "pending":
                return _Answer(None)
            return self._remember(config, name, cached, self._answer_of(config, name, cached))
        if cached is not None and self._is_fresh(cached, config):
            self._observe("hit", config.name)
            return self._remember(config, name, cached, self._answer_of(config, name, cached))
        if cached is not None and cached.state == "found" and self._failed_recently(cached):
            # The upstream failed moments ago: serve the last good page
            # instead of making every request wait for it to fail again.
            return self._answer_of(config, name, cached)
        return await self._fetch(source, name, cached)

    async def _fetch(self, source: PageSource, name: str, cached: CachedPage | None
                     ) -> _Answer:
        config = source.config
        lease = config.timeout * 2 + LEASE_MARGIN_SECONDS
        while not await cache_store.take_fetch_lease(self._db, config.name, name, lease):
            # Another daemon is asking; its answer lands in the row.
            row = await self._wait_for_other(config, name)
            if row is not None:
                return self._remember(config, name, row, self._answer_of(config, name, row))
            # Its lease ran out (it died mid-fetch): try to take it over.
        found = cached if cached is not None and cached.state == "found" else None
        try:
            result = await source.fetch_page(
                name, etag=found.etag if found else None,
                last_modified=found.last_modified if found else None)
        except UpstreamUnavailable as e:
            return await self._failed(config, name, cached, e)
        except BaseException:
            await cache_store.store_error(self._db, config.name, name, "the fetch failed")
            raise
        if isinstance(result, Fetched):
            await cache_store.store_fetched(self._db, config.name, name,
                                            to_document(result.page), etag=result.etag,
                                            last_modified=result.last_modified,
                                            last_serial=result.page.last_serial)
            self._observe("revalidated" if found else "miss", config.name)
            if result.page.skipped:
                _log.warn("{upstream}'s page for {name} had {count} unusable entries,"
                          " left off (e.g. {examples})", upstream=config.name, name=name,
                          count=result.page.skipped,
                          examples="; ".join(result.page.skipped_examples))
            return self._remember_answer(config, name, _Answer(result.page))
        if isinstance(result, NotModified):
            if found is None:
                return await self._failed(config, name, cached, UpstreamUnavailable(
                    "it answered 304 Not Modified to a request without validators"))
            await cache_store.store_not_modified(self._db, config.name, name)
            self._observe("revalidated", config.name)
            return self._remember_answer(config, name, self._answer_of(config, name, found))
        await cache_store.store_missing(self._db, config.name, name)
        self._observe("missing", config.name)
        return self._remember_answer(config, name, _Answer(None))

    async def _failed(self, config: UpstreamConfig, name: str, cached: CachedPage | None,
                      error: UpstreamUnavailable) -> _Answer:
        await cache_store.store_error(self._db, config.name, name, error.reason)
        self._observe("error", config.name)
        _log.warn("upstream {upstream} failed for {name}: {reason}", upstream=config.name,
                  name=name, reason=error.reason)
        if cached is None or cached.state == "pending":
            raise _unavailable(config, name, error.reason, error.timed_out)
        # Not remembered: the next request asks again.
        return self._answer_of(config, name, cached, stale=error.reason)

    def _answer_of(self, config: UpstreamConfig, name: str, row: CachedPage,
                   stale: str | None = None) -> _Answer:
        """What a stored row says; an unanswered ('pending') row with an error raises it."""
        if row.state == "found" and row.page is not None:
            if stale is None and row.error is not None and row.fetching_until is None:
                # Another daemon's fetch failed just now: it serves this page stale too.
                stale = row.error
            if stale is not None:
                self._observe("stale", config.name)
            return _Answer(from_document(row.page), stale)
        if row.state == "pending":
            raise _unavailable(config, name, row.error or "no answer yet", False)
        return _Answer(None)

    async def _wait_for_other(self, config: UpstreamConfig, name: str) -> CachedPage | None:
        """The row once another daemon's fetch ended; None when its lease ran out first."""
        while True:
            await deferLater(self._clock, POLL_SECONDS, lambda: None)
            row = await cache_store.get_page(self._db, config.name, name)
            if row is None:
                return None
            if row.fetching_until is None:
                return row
            if row.fetching_until.timestamp() < time.time():
                return None

    def _failed_recently(self, cached: CachedPage) -> bool:
        return (cached.error_at is not None and cached.fetching_until is None
                and cached.error_at.timestamp() + ERROR_BACKOFF_SECONDS > time.time())

    def _is_fresh(self, cached: CachedPage, config: UpstreamConfig) -> bool:
        if cached.state == "pending":
            return False
        return cached.checked_at.timestamp() + config.ttl > time.time()

    def _remember(self, config: UpstreamConfig, name: str, row: CachedPage, answer: _Answer
                  ) -> _Answer:
        if row.state == "pending" or answer.stale is not None:
            return answer
        remaining = row.checked_at.timestamp() + config.ttl - time.time()
        if config.offline:
            remaining = config.ttl
        if remaining > 0:
            self._put(config.name, name, answer, remaining)
        return answer

    def _remember_answer(self, config: UpstreamConfig, name: str, answer: _Answer) -> _Answer:
        self._put(config.name, name, answer, config.ttl)
        return answer

    def _put(self, upstream: str, name: str, answer: _Answer, seconds: float) -> None:
        if len(self._memory) >= MEMORY_PAGES:
            now = self._clock.seconds()
            for key in [k for k, (until, _) in self._memory.items() if until <= now]:
                del self._memory[key]
            if len(self._memory) >= MEMORY_PAGES:
                del self._memory[next(iter(self._memory))]
        self._memory[(upstream, name)] = (self._clock.seconds() + seconds, answer)


def _unavailable(config: UpstreamConfig, name: str, reason: str, timed_out: bool
                 ) -> BadGateway | GatewayTimeout:
    message = (f"The upstream index {config.name!r} could not be asked about {name!r}"
               f" ({reason}), and nothing is cached for it; retry later.")
    return GatewayTimeout(message) if timed_out else BadGateway(message)
