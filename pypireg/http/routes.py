"""The registry's HTTP routes (GitLab's PyPI API layout).

HTTP layer: parse, check access, call storage, render. Every route checks
access through the Authorizer before it touches data; all errors go through
one funnel (`_registry_error` / `_unexpected_error`).

    POST     /api/v4/projects/<project>/packages/pypi                upload (twine)
    GET      /api/v4/projects/<project>/packages/pypi/simple/        package list
    GET      /api/v4/projects/<project>/packages/pypi/simple/<name>/ package links
    GET/HEAD /api/v4/projects/<project>/packages/pypi/files/<sha256>/<filename>
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import static
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from pypireg.archives import CoreMetadata, read_core_metadata
from pypireg.errors import (
    BadRequest,
    BadUpload,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    RegistryError,
)
from pypireg.filenames import is_safe_basename
from pypireg.http.auth import Authorizer, Grant, request_credentials
from pypireg.http.negotiation import HTML_V1, JSON_V1, choose_format, content_type_header
from pypireg.http.responses import not_modified, redirect, render_error
from pypireg.http.simple_index import project_detail, project_list
from pypireg.http.site import RegistryRequest
from pypireg.names import is_valid_name, normalize_name, parse_version
from pypireg.storage import packages as package_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database
from pypireg.storage.packages import NewFile
from pypireg.upload import check_digests, check_form, check_metadata, field

_log = Logger()
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Twisted has already percent-decoded each segment, so an encoded project
# path ("group%2Fproject") arrives with its slashes: match them.
PYPI = "/api/v4/projects/<path:project>/packages/pypi"


def _yank_reason(body: bytes) -> str | None:
    if not body.strip():
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('The body must be JSON such as {"reason": "broken build"}.') from None
    reason = document.get("reason") if isinstance(document, dict) else None
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise BadRequest("reason must be a string of at most 1000 characters.")
    return reason


class RegistryApp:
    app = Klein()

    def __init__(self, reactor: Any, db: Database, authorizer: Authorizer, blobs: BlobStore,
                 base_url: str | None = None) -> None:
        self._reactor = reactor
        self._db = db
        self._authz = authorizer
        self._blobs = blobs
        self._base_url = base_url

    def resource(self) -> Any:
        return self.app.resource()

    # -- helpers -------------------------------------------------------------

    async def _read_access(self, request: IRequest, project: str) -> Grant:
        secret = request_credentials(request.requestHeaders)
        return await self._authz.authorize(project, secret, "read")

    def _api_prefix(self, project: str) -> str:
        """Absolute URL of the project's pypi API when base_url is set, else a path."""
        return f"{self._base_url or ''}/api/v4/projects/{quote(project, safe='')}/packages/pypi"

    # -- upload --------------------------------------------------------------

    @app.route(PYPI, methods=["POST"], strict_slashes=False)
    async def upload(self, request: RegistryRequest, project: str) -> bytes:
        if request.upload_error is not None:
            raise request.upload_error
        received = request.received_upload
        if received is None:  # pragma: no cover - the site always sets one of the two
            raise BadUpload("The upload body could not be read.")
        blob = received.blob
        try:
            claim = check_form(received.fields, received.filename)
            assert blob is not None and blob.digests is not None
            check_digests(claim, blob.digests)
            meta: CoreMetadata = await self._blobs.in_thread(
                read_core_metadata, blob.path, claim.dist)
            check_metadata(claim, meta)
            grant = received.grant
            # PEP 658: wheels always, sdists from Metadata-Version 2.2 on
            # (before that PKG-INFO may not describe the built package).
            metadata_sha256 = None
            if claim.dist.packagetype == "bdist_wheel" or meta.is_reliable_sdist_metadata:
                metadata_sha256 = await self._blobs.store_bytes(meta.raw)
            await self._blobs.commit(blob)
            digests = blob.digests
            record = await package_store.record_file(
                self._db,
                NewFile(
                    project_id=grant.project.id,
                    name=normalize_name(claim.name),
                    display_name=meta.name or claim.name,
                    version=str(claim.version),
                    filename=claim.dist.filename,
                    packagetype=claim.dist.packagetype,
                    python_version=field(received.fields, "pyversion") or claim.dist.python_tag,
                    size=digests.size,
                    sha256=digests.sha256,
                    md5=digests.md5,
                    blake2_256=digests.blake2_256,
                    requires_python=meta.requires_python or field(received.fields,
                                                                  "requires_python"),
                    summary=meta.summary,
                    metadata_version=meta.metadata_version,
                    uploaded_by_token_id=grant.token.id if grant.token else None,
                    metadata_sha256=metadata_sha256,
                ),
                reject_duplicates=grant.project.reject_duplicates,
            )
        finally:
            if blob is not None:
                await blob.discard()
        _log.info("stored {filename} ({size} bytes) in project {project}",
                  filename=record.filename, size=record.size, project=grant.project.path)
        request.setResponseCode(201, b"Created")
        request.setHeader(  # type: ignore[no-untyped-call]
            b"Content-Type", b"text/plain; charset=utf-8")
        return f"Stored {record.filename}\n".encode()

    # -- simple index --------------------------------------------------------

    @app.route(PYPI + "/simple/", methods=["GET", "HEAD"])
    async def simple_root(self, request: IRequest, project: str) -> bytes:
        grant = await self._read_access(request, project)
        media = self._negotiate(request)
        packages = await package_store.list_packages(self._db, grant.project.id)
        prefix = f"{self._api_prefix(project)}/simple/" if self._base_url else ""
        return self._index_response(request, grant, media, project_list(packages, media, prefix))

    @app.route(PYPI + "/simple/<name>/", methods=["GET", "HEAD"])
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

    # -- yanking (PEP 592) ----------------------------------------------------

    @app.route(PYPI + "/<name>/<version>/yank", methods=["PUT", "DELETE"])
    async def yank(self, request: IRequest, project: str, name: str, version: str) -> bytes:
        """PUT yanks a release (JSON body {"reason": "..."} optional), DELETE unyanks it."""
        grant = await self._authz.authorize(
            project, request_credentials(request.requestHeaders), "write")
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        parsed = str(parse_version(version))
        yanked = request.method == b"PUT"
        reason = _yank_reason(request.content.read() if request.content else b"") if yanked \
            else None
        changed = await package_store.set_yanked(
            self._db, grant.project.id, normalize_name(name), parsed, yanked=yanked,
            reason=reason)
        if not changed:
            raise NotFound(f"No release {name} {version} in this project.")
        _log.info("{action} {name} {version} in project {project}",
                  action="yanked" if yanked else "unyanked", name=name, version=parsed,
                  project=grant.project.path)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"name": normalize_name(name), "version": parsed, "yanked": yanked,
                           "yanked_reason": reason, "files": changed}).encode()

    # -- files ---------------------------------------------------------------

    @app.route(PYPI + "/files/<sha256>/<filename>", methods=["GET", "HEAD"])
    async def download(self, request: IRequest, project: str, sha256: str, filename: str
                       ) -> Any:
        grant = await self._read_access(request, project)
        # PEP 658/714: the core metadata lives at "<file URL>.metadata".
        want_metadata = filename.endswith(".metadata")
        dist_filename = filename.removesuffix(".metadata")
        if not _SHA256_RE.match(sha256) or not is_safe_basename(dist_filename):
            raise NotFound("No such file.")
        row = await package_store.find_file(self._db, grant.project.id, sha256, dist_filename)
        if row is None or (want_metadata and row.metadata_sha256 is None):
            raise NotFound("No such file.")
        blob_sha256 = row.metadata_sha256 if want_metadata else sha256
        assert blob_sha256 is not None
        visibility = b"public" if grant.project.public else b"private"
        request.setHeader(b"Cache-Control", visibility + b", max-age=31536000, immutable")
        if not_modified(request, f'"{blob_sha256}"'.encode()):
            return b""
        if not want_metadata:
            request.setHeader(
                b"Content-Disposition", f'attachment; filename="{row.filename}"'.encode()
            )
        resource = static.File(str(self._blobs.path_for(blob_sha256)),
                               defaultType="application/octet-stream")
        resource.type = "text/plain; charset=utf-8" if want_metadata else "application/octet-stream"
        resource.encoding = None
        return resource

    # -- errors --------------------------------------------------------------

    @app.handle_errors(RegistryError)
    def _registry_error(self, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(failure.value, RegistryError)
        return render_error(request, failure.value)

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        if isinstance(error, RequestRedirect):
            # Werkzeug's trailing-slash redirect; keep it host-relative so it
            # is right behind a proxy (or absolute from base_url).
            parts = urlsplit(error.new_url)
            location = (self._base_url or "") + parts.path + (
                f"?{parts.query}" if parts.query else "")
            return redirect(request, location, 301 if request.method in (b"GET", b"HEAD") else 308)
        if error.code == 405:
            return render_error(request, MethodNotAllowed("Method not allowed on this URL."))
        return render_error(request, NotFound("No such URL on this registry."))

    @app.handle_errors(CancelledError)
    def _cancelled(self, request: IRequest, failure: Failure) -> bytes:
        # Klein cancels the handler when the client goes away.
        return b""

    @app.handle_errors(Exception)
    def _unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        _log.failure(
            "internal error on {method} {uri}", failure,
            method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"),
        )
        return render_error(request, RegistryError(
            "Internal server error; it was logged. Please report it to the registry's operator."
        ))
