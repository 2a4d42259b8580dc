"""Operational endpoints: liveness, readiness and Prometheus metrics.

HTTP layer. `/-/health` answers while the process runs; `/-/ready` only
while the database answers and the storage folder takes writes, so a load
balancer stops sending traffic to a daemon that could not serve it.

`/-/metrics` is open unless `server.metrics_token` is set: then it wants
`Authorization: Bearer <token>`, and failures count against the same
per-client budget as failed logins. With `server.metrics_listen` it is
served only by `metrics_site`, on listeners of its own (a port that only
the scraper reaches, say), and the registry's listeners answer 404 for it.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.web import resource, server
from twisted.web.iweb import IRequest

from pypireg.access import FailureLimiter
from pypireg.domain.errors import MethodNotAllowed, NotFound, RegistryError, TooLarge
from pypireg.http.credentials import client_address
from pypireg.http.errors import error_bytes, render_error
from pypireg.http.metrics import Metrics
from pypireg.storage.blob_backend import BlobBackend
from pypireg.storage.database import Database

METRICS_PATH = b"/-/metrics"


class MetricsUnauthorized(RegistryError):
    """No valid bearer token for /-/metrics.

    The challenge is Bearer (RFC 6750), not the registry's Basic: the
    metrics token is no token of a project, and a browser should not offer
    the Basic credentials it keeps for the registry's pages here.
    """

    code = 401

    def __init__(self) -> None:
        super().__init__("The metrics need Authorization: Bearer and the server.metrics_token.",
                         headers={"WWW-Authenticate": 'Bearer realm="pypireg metrics"'})


class MetricsPage:
    """`/-/metrics`: the Prometheus text, behind the bearer token when one is configured."""

    def __init__(self, metrics: Metrics, token: str | None, failures: FailureLimiter) -> None:
        self._metrics = metrics
        self._token = token.encode("ascii") if token is not None else None
        self._failures = failures

    def render(self, request: IRequest) -> bytes:
        """The metrics, or raise MetricsUnauthorized (TooManyRequests past the budget)."""
        if self._token is not None:
            presented = _bearer(request.getHeader(b"authorization"))
            # Compared in constant time: no timing tells how much of a guess was right.
            if presented is None or not hmac.compare_digest(presented, self._token):
                self._failures.record_failure(client_address(request))
                raise MetricsUnauthorized()
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return self._metrics.render()


def _bearer(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


class OpsRoutes:
    def __init__(self, db: Database, blobs: BlobBackend, metrics: MetricsPage | None) -> None:
        """*metrics* is None when /-/metrics lives on its own listeners (metrics_site)."""
        self._db = db
        self._blobs = blobs
        self._metrics = metrics

    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"

    async def ready(self, request: IRequest) -> bytes:
        database = await self._db.ping()
        storage = await self._blobs.writable()
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if database and storage:
            return b"ready\n"
        request.setResponseCode(503)
        request.setHeader(b"Retry-After", b"5")
        return (f"not ready: database {'ok' if database else 'unreachable'}, "
                f"storage {'ok' if storage else 'not writable'}\n").encode()

    def metrics(self, request: IRequest) -> bytes:
        if self._metrics is None:
            # The same answer as any unknown URL: this listener has no metrics.
            raise NotFound("No such URL on this registry.")
        return self._metrics.render(request)


class _MetricsOnly(resource.Resource):
    """The root of a metrics listener: GET and HEAD of /-/metrics, 404 for any other path."""

    isLeaf = True

    def __init__(self, page: MetricsPage) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._page = page

    def render(self, request: Any) -> bytes:
        try:
            if request.path != METRICS_PATH:
                raise NotFound("No such URL on this listener.")
            if request.method not in (b"GET", b"HEAD"):
                raise MethodNotAllowed("Method not allowed on this URL.",
                                       headers={"Allow": "GET, HEAD"})
            return self._page.render(request)
        except RegistryError as error:
            return render_error(request, error)


class _MetricsRequest(server.Request):
    """A scrape has no body: one that comes is refused (413) rather than stored.

    Twisted's own request would spool any body to a temporary file, so a
    client could fill the disk through a port meant for a scraper.
    """

    def gotLength(self, length: int | None) -> None:
        # Never a temporary file; the first body byte ends the connection.
        super().gotLength(0)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        transport = self.channel.transport
        if data and transport is not None:
            transport.write(error_bytes(TooLarge("A metrics request has no body.")))
            transport.loseConnection()


def metrics_site(page: MetricsPage, timeout: float) -> server.Site:
    """The site of `server.metrics_listen`: /-/metrics alone, nothing of the registry."""
    return server.Site(
        _MetricsOnly(page), requestFactory=_MetricsRequest, timeout=timeout)
