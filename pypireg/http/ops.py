"""Operational endpoints: liveness, readiness and Prometheus metrics.

HTTP layer. `/-/health` answers while the process runs; `/-/ready` only
while the database answers and the storage folder takes writes, so a load
balancer stops sending traffic to a daemon that could not serve it.
"""

from __future__ import annotations

import os
import secrets

from twisted.web.iweb import IRequest

from pypireg.http.metrics import Metrics
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database


class OpsRoutes:
    def __init__(self, db: Database, blobs: BlobStore, metrics: Metrics) -> None:
        self._db = db
        self._blobs = blobs
        self._metrics = metrics

    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"

    async def ready(self, request: IRequest) -> bytes:
        database = await self._db.ping()
        storage = await self._blobs.in_thread(_storage_writable, str(self._blobs.tmp_dir))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if database and storage:
            return b"ready\n"
        request.setResponseCode(503)
        request.setHeader(b"Retry-After", b"5")
        return (f"not ready: database {'ok' if database else 'unreachable'}, "
                f"storage {'ok' if storage else 'not writable'}\n").encode()

    def metrics(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return self._metrics.render()


def _storage_writable(folder: str) -> bool:
    probe = os.path.join(folder, f"ready-probe-{secrets.token_hex(8)}")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError:
        return False
    return True
