"""Prometheus metrics for the daemon.

HTTP layer. One registry per site (no global state), filled from the access
log hook (every finished request), the upload path and the pool. Every
label comes from a fixed set (routes from a classification of the path,
methods from the standard ones, statuses from 100 to 599), so their number
is bounded whatever clients send.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_ROUTES: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("simple_root", re.compile(rb"^/api/v4/(projects|groups)/.+/packages/pypi/simple/?$")),
    ("simple_package", re.compile(rb"^/api/v4/(projects|groups)/.+/packages/pypi/simple/")),
    ("metadata", re.compile(rb"^/api/v4/(projects|groups)/.+/packages/pypi/files/.+\.metadata$")),
    ("files", re.compile(rb"^/api/v4/(projects|groups)/.+/packages/pypi/files/")),
    ("json_api", re.compile(rb"^/api/v4/projects/.+/packages/pypi/pypi/")),
    ("yank", re.compile(rb"^/api/v4/projects/.+/packages/pypi/.+/yank$")),
    ("upload", re.compile(rb"^/api/v4/projects/.+/packages/pypi/?$")),
    ("packages_api", re.compile(rb"^/api/v4/projects/.+/packages(/|$)")),
    ("ops", re.compile(rb"^/-/")),
)


# Methods a client may send are unbounded; labels are not.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def method_label(method: bytes) -> str:
    text = method.decode("latin-1")
    return text if text in _METHODS else "other"


def route_of(path: bytes) -> str:
    path = path.split(b"?", 1)[0]
    for name, pattern in _ROUTES:
        if pattern.match(path):
            return name
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pypireg_http_requests", "Finished HTTP requests",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "pypireg_http_request_duration_seconds", "Time from request line to response end",
            ["route"], registry=self.registry,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.bytes_served = Counter("pypireg_http_response_bytes",
                                    "Response body bytes sent", ["route"],
                                    registry=self.registry)
        self.bytes_uploaded = Counter("pypireg_uploaded_bytes",
                                      "Bytes of distributions stored", registry=self.registry)
        self.uploads_in_flight = Gauge("pypireg_uploads_in_flight",
                                       "Upload bodies being received", registry=self.registry)
        self.pool_in_use = Gauge("pypireg_db_pool_connections_in_use",
                                 "Database connections checked out", registry=self.registry)
        self.pool_size = Gauge("pypireg_db_pool_connections",
                               "Database connections in the pool", registry=self.registry)
        self.cache_hits = Counter("pypireg_cache_hits", "Answers served from a cache",
                                  ["cache"], registry=self.registry)
        # Bounded labels: upstream names come from the config; events are
        # hit, miss, revalidated, stale, missing, error, fetched, integrity,
        # evicted.
        self.upstream_events = Counter("pypireg_upstream_events",
                                       "Upstream proxy page and file events",
                                       ["upstream", "event"], registry=self.registry)
        self.upstream_bytes = Counter("pypireg_upstream_fetched_bytes",
                                      "Bytes of files fetched from upstreams", ["upstream"],
                                      registry=self.registry)
        self.not_modified = Counter("pypireg_not_modified",
                                    "Conditional requests answered 304", registry=self.registry)

    def observe_request(self, path: bytes, method: bytes, status: int, seconds: float,
                        sent: int) -> None:
        route = route_of(path)
        code = str(status) if 100 <= status <= 599 else "other"
        self.requests.labels(route, method_label(method), code).inc()
        self.latency.labels(route).observe(max(seconds, 0.0))
        self.bytes_served.labels(route).inc(sent)
        if status == 304:
            self.not_modified.inc()

    def upstream_event(self, event: str, upstream: str) -> None:
        self.upstream_events.labels(upstream, event).inc()

    def upstream_fetched(self, upstream: str, count: int) -> None:
        self.upstream_bytes.labels(upstream).inc(count)

    def track_pool(self, in_use: Callable[[], int], size: Callable[[], int]) -> None:
        self.pool_in_use.set_function(in_use)
        self.pool_size.set_function(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
