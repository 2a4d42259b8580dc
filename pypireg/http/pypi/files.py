"""Distribution files and their core metadata files (PEP 658/714).

HTTP layer. Bodies are sent by file_body (sendfile on plain TCP,
twisted.web.static otherwise and for Range); URLs carry the sha256, so
responses are immutable and their ETag is the hash.

Downloads are the hottest route, so `DownloadDispatch` sits in front of
the Klein app and calls the two routes below itself: Klein's routing
(werkzeug's matcher, Deferred plumbing) was a fifth of a 1 MiB download's
CPU. Everything else goes on to Klein, where these routes stay
registered: the route table stays whole, and other methods on these URLs
get Klein's 405.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from pypireg.domain.errors import NotFound, RegistryError
from pypireg.domain.filenames import is_safe_basename, is_sha256
from pypireg.http.app import GROUP_PYPI, PYPI, ReadScope, RouteContext, routes
from pypireg.http.file_body import BlobBody
from pypireg.http.responses import not_modified
from pypireg.storage import packages as package_store
from pypireg.storage.blobs import BlobStore

_log = Logger()
_METADATA_TYPE = b"text/plain; charset=utf-8"
# The two routes below, as werkzeug matches them (a path converter is
# "[^/].*?"), over the percent-decoded path.
_PROJECT_FILE = re.compile(rb"/api/v4/projects/([^/].*?)/packages/pypi/files/([^/]+)/([^/]+)\Z")
_GROUP_FILE = re.compile(rb"/api/v4/groups/([^/].*?)/-/packages/pypi/files/([^/]+)/([^/]+)\Z")
_DIST_TYPE = b"application/octet-stream"


@functools.lru_cache(maxsize=4096)
def _blob_path(blobs: BlobStore, sha256: str) -> str:
    # Blobs are content-addressed, so a hash's path never changes; building
    # it with pathlib was a third of the route's own time per download.
    return str(blobs.path_for(sha256))


class FileRoutes(RouteContext):
    @routes.route(PYPI + "/files/<sha256>/<filename>", methods=["GET", "HEAD"])
    async def download(self, request: IRequest, project: str, sha256: str, filename: str
                       ) -> Any:
        scope = await self._project_scope(request, project)
        return await self._serve_file(request, scope, sha256, filename)

    @routes.route(GROUP_PYPI + "/files/<sha256>/<filename>", methods=["GET", "HEAD"])
    async def group_download(self, request: IRequest, group: str, sha256: str, filename: str
                             ) -> Any:
        scope = await self._group_scope(request, group)
        return await self._serve_file(request, scope, sha256, filename)

    async def _serve_file(self, request: IRequest, scope: ReadScope, sha256: str, filename: str
                          ) -> Any:
        # PEP 658/714: the core metadata lives at "<file URL>.metadata".
        want_metadata = filename.endswith(".metadata")
        dist_filename = filename.removesuffix(".metadata")
        if not is_sha256(sha256) or not is_safe_basename(dist_filename):
            raise NotFound("No such file.")
        key = (tuple(scope.project_ids), sha256, dist_filename)
        row = self._file_rows.get(key) if self._caching else None
        if row is None:
            row = await package_store.find_file(self._db, scope.project_ids, sha256,
                                                dist_filename)
            if row is not None and self._caching:
                self._file_rows.put(key, row)
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
        return BlobBody(_blob_path(self._blobs, blob_sha256),
                        _METADATA_TYPE if want_metadata else _DIST_TYPE)


class DownloadDispatch(resource.Resource):
    """GET and HEAD of files straight to FileRoutes; any other request to *app*'s Klein."""

    isLeaf = True

    def __init__(self, app: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._app = app
        self._klein = app.resource()

    def render(self, request: IRequest) -> Any:
        if request.method in (b"GET", b"HEAD"):
            # Twisted percent-decoded the segments into postpath, as Klein
            # sees them.
            path = b"/" + b"/".join(request.postpath)
            for pattern, route in ((_PROJECT_FILE, self._app.download),
                                   (_GROUP_FILE, self._app.group_download)):
                match = pattern.match(path)
                if match is not None:
                    try:
                        ref, sha256, filename = (g.decode("utf-8") for g in match.groups())
                    except UnicodeDecodeError:
                        break  # Klein answers it
                    return self._dispatch(request, route(request, ref, sha256, filename))
        return self._klein.render(request)

    def _dispatch(self, request: IRequest, handler: Any) -> int:
        d = Deferred.fromCoroutine(handler)
        finished = request.notifyFinish()  # type: ignore[attr-defined]
        # As Klein does: a client that went away cancels the handler.
        finished.addErrback(lambda _: d.cancel())
        d.addCallbacks(lambda body: self._respond(request, body),
                       lambda failure: self._failed(request, failure))
        d.addErrback(self._unanswerable, request)
        return server.NOT_DONE_YET

    def _unanswerable(self, failure: Failure, request: IRequest) -> None:
        # Only if answering itself failed (the handler's errors are answered
        # above): the response cannot be completed, so log it and close the
        # connection rather than leave the client waiting.
        _log.failure("could not answer {method} {uri}", failure,
                     method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"))
        request.loseConnection()  # type: ignore[attr-defined]

    def _respond(self, request: IRequest, body: Any) -> None:
        if isinstance(body, bytes):
            request.write(body)
            request.finish()
        else:
            request.render(body)  # type: ignore[attr-defined]

    def _failed(self, request: IRequest, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        # The error funnel's own handlers, so errors read as on any route.
        if failure.check(RegistryError):
            body = self._app._registry_error(request, failure)
        else:
            body = self._app._unexpected_error(request, failure)
        self._respond(request, body)
