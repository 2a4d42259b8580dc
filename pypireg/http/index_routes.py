"""The simple repository API pages, HTML or JSON by content negotiation.

HTTP layer.
"""

from __future__ import annotations

import hashlib

from twisted.web.iweb import IRequest

from pypireg.errors import NotAcceptable, NotFound
from pypireg.http.app import PYPI, RouteContext, routes
from pypireg.http.auth import Grant
from pypireg.http.negotiation import HTML_V1, JSON_V1, choose_format, content_type_header
from pypireg.http.responses import not_modified, redirect
from pypireg.http.simple_index import project_detail, project_list
from pypireg.names import is_valid_name, normalize_name
from pypireg.storage import packages as package_store


class IndexRoutes(RouteContext):
    @routes.route(PYPI + "/simple/", methods=["GET", "HEAD"])
    async def simple_root(self, request: IRequest, project: str) -> bytes:
        grant = await self._read_access(request, project)
        media = self._negotiate(request)
        packages = await package_store.list_packages(self._db, grant.project.id)
        prefix = f"{self._api_prefix(project)}/simple/" if self._base_url else ""
        return self._index_response(request, grant, media, project_list(packages, media, prefix))

    @routes.route(PYPI + "/simple/<name>/", methods=["GET", "HEAD"])
    async def simple_package(self, request: IRequest, project: str, name: str) -> bytes:
        grant = await self._read_access(request, project)
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        normalized = normalize_name(name)
        if normalized != name:
            return redirect(request, f"{self._api_prefix(project)}/simple/{normalized}/")
        media = self._negotiate(request)
        files = await package_store.list_files(self._db, grant.project.id, normalized)
        if not files:
            raise NotFound(f"No package named {name!r} in this project.")
        files_prefix = f"{self._api_prefix(project)}/files/" if self._base_url else "../../files/"
        body = project_detail(normalized, files, media, files_prefix)
        return self._index_response(request, grant, media, body)

    def _negotiate(self, request: IRequest) -> str:
        format_param = request.args.get(b"format", [b""])[0].decode("latin-1")
        accept = request.getHeader(b"accept")
        media = choose_format(accept.decode("latin-1") if accept else None, format_param)
        if media is None:
            raise NotAcceptable(
                f"None of the accepted types is offered; ask for {JSON_V1}, {HTML_V1} or "
                "text/html."
            )
        return media

    def _index_response(self, request: IRequest, grant: Grant, media: str, body: bytes
                        ) -> bytes:
        visibility = b"public" if grant.project.public else b"private"
        request.setHeader(b"Content-Type", content_type_header(media))
        request.setHeader(b"Vary", b"Accept, Authorization")
        request.setHeader(b"Cache-Control", visibility + b", max-age=0, must-revalidate")
        etag = f'"{hashlib.sha256(body).hexdigest()}"'.encode()
        return b"" if not_modified(request, etag) else body
