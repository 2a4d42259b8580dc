"""The registry's HTTP site in-process: over real TCP, or in memory with StubTreq.

`Registry` holds one site over the test database. `registry.http` is the
real treq over a listening port (uploads need that: they stream through the
site's own request class, `RegistryRequest`); `registry.stub` drives the
same root resource in memory with treq's `StubTreq`, no socket involved,
for routes that only read answers.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource, getChildForRequest

from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.database import Database
from tests.distributions import upload_form
from tests.support import reactor
from tests.support.waiting import until

# The stub's requests name this host; nothing resolves it.
STUB_URL = "http://pypireg.test"


def basic(token: str, user: str = "__token__") -> dict[bytes, list[bytes]]:
    return {b"Authorization": [b"Basic " + b64encode(f"{user}:{token}".encode())]}


class _FlushWhenFinished(Resource):
    """The site's root resource, telling StubTreq to deliver an answer once it is complete.

    StubTreq's transports only move bytes when its `flush()` is called. Our
    handlers answer after real database round trips (NOT_DONE_YET), so the
    answer is written later, on the real reactor: this flushes once the
    request has finished, instead of flushing on a timer.
    """

    isLeaf = True

    def __init__(self, root: Any, flush: Callable[[], None]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._root = root
        self._flush = flush

    def render(self, request: Any) -> Any:
        request.notifyFinish().addBoth(lambda _: reactor.callLater(0, self._flush))
        return getChildForRequest(self._root, request).render(request)


class StubClient:
    """treq's request functions against a root resource, in memory."""

    def __init__(self, root: Any) -> None:
        # treq.testing is untyped: StubTreq's functions are set per instance.
        self._treq: Any = StubTreq(  # type: ignore[no-untyped-call]
            _FlushWhenFinished(root, lambda: self._treq.flush()))

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = self._treq.request(method, url, **kwargs)
        self._treq.flush()  # deliver the request; the answer follows by itself
        # A safety net only: a handler that never answers fails the test.
        return d.addTimeout(30, reactor)

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("DELETE", url, **kwargs)


class Registry:
    """An in-process registry over the test database; *port* is None if it does not listen."""

    def __init__(self, db: Database, config: Any, site: Any, authorizer: Any,
                 port: Any = None, proxy: Any = None, downloads: Any = None) -> None:
        self.db = db
        # The download counts it keeps in memory (service.DownloadCounts):
        # `await registry.downloads.flush()` writes them, as the daemon's timer does.
        self.downloads = downloads
        self.config = config
        self.site = site
        self.port = port
        self.authorizer = authorizer
        # The upstream proxy's parts (service.ProxyParts), if upstreams are configured.
        self.proxy = proxy
        self.url = f"http://127.0.0.1:{port.getHost().port}" if port is not None else STUB_URL

    @property
    def http(self) -> Any:
        """treq itself, over the real port."""
        assert self.port is not None, "this registry does not listen: use .stub"
        return treq

    @cached_property
    def stub(self) -> StubClient:
        """In-memory requests to the same site (same caches, same authorizer)."""
        return StubClient(self.site.resource)

    def api(self, project: str | int) -> str:
        return f"{self.url}/api/v4/projects/{project}/packages/pypi"

    @property
    def storage(self) -> Path:
        return Path(self.config.storage.path)

    def stored_files(self) -> list[Path]:
        return sorted(p for p in (self.storage / "blobs").rglob("*") if p.is_file())

    def temp_files(self) -> list[Path]:
        return sorted((self.storage / "tmp").iterdir())

    async def settled_temp_files(self) -> list[Path]:
        """Temp files once in-flight removals (done in worker threads) are over."""
        try:
            await until(lambda: not self.temp_files())
        except AssertionError:
            pass  # the caller asserts on what is left
        return self.temp_files()

    async def stop(self) -> None:
        """Stop listening (connections already open stay); safe to call twice."""
        port, self.port = self.port, None
        if port is not None:
            await port.stopListening()
        if self.proxy is not None:
            await self.proxy.close()


async def start_registry(db: Database, tmp_path: Path, max_size: int = 1024 * 1024,
                         listen: bool = True, upstreams: Sequence[Mapping[str, Any]] = (),
                         changes: Any = None,
                         trusted_publishing: Mapping[str, Any] | None = None) -> Registry:
    """The whole HTTP site, on a real TCP port if *listen*; stop it with `stop()`.

    *upstreams* are `[[upstreams]]` tables; with them the site proxies.
    *trusted_publishing* is the `[trusted_publishing]` table.
    """
    from pypireg.config import parse_config
    from pypireg.http.metrics import Metrics
    from pypireg.service import DownloadCounts, build_proxy, build_site, file_downloads
    from pypireg.storage.blobs import BlobStore

    config = parse_config(
        {"storage": {"path": str(tmp_path / "data")}, "uploads": {"max_size": max_size},
         "upstreams": [dict(u) for u in upstreams],
         "trusted_publishing": dict(trusted_publishing or {})}
    )
    metrics = Metrics()
    blobs = BlobStore(reactor, config.storage.path)
    proxy = build_proxy(reactor, config, db, blobs, metrics, changes)
    downloads = DownloadCounts(file_downloads(db), proxy)
    site, authorizer = await build_site(reactor, config, db, changes, metrics=metrics,
                                        blobs=blobs, proxy=proxy, downloads=downloads.files)
    port = reactor.listenTCP(0, site, interface="127.0.0.1") if listen else None
    return Registry(db, config, site, authorizer, port, proxy, downloads)


async def project_with_tokens(reg: Any, path: str = "acme", public: bool = False
                              ) -> tuple[Any, str, str]:
    project = await project_store.create_project(reg.db, path, public=public)
    _, write = await token_store.create_token(reg.db, project.id, "write")
    _, read = await token_store.create_token(reg.db, project.id, "read")
    return project, write, read


async def personal_token(db: Any, project_id: int, role: str | None, scope: str = "write"
                         ) -> str:
    """A personal token of a new user, a member of the project with *role* (None: not one)."""
    user = await user_store.create_user(db, f"{role}-{scope}")
    if role is not None:
        await user_store.add_member(db, project_id, user.id, role)  # type: ignore[arg-type]
    _, secret = await token_store.create_token(
        db, None, scope, kind="personal", user_id=user.id)  # type: ignore[arg-type]
    return secret


async def upload(reg: Any, project: Any, token: str | None, filename: str, content: bytes,
                 **kw: Any) -> tuple[int, str, Any]:
    """POST an upload form over the real port (the streaming request path)."""
    user = kw.pop("user", "__token__")  # a deploy token's own user name
    ctype, body = upload_form(kw.pop("name", "demo-pkg"), kw.pop("version", "1.0"), filename,
                              content, **kw)
    headers: dict[Any, Any] = {b"Content-Type": [ctype]}
    if token:
        headers.update(basic(token, user))
    resp = await treq.post(reg.api(project), data=body, headers=headers)
    text = (await resp.content()).decode()
    return resp.code, text, resp
