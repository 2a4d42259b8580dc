"""The legacy upload API (what twine, uv, poetry, pdm and hatch speak).

HTTP layer. By the time this route runs, the site's streaming request has
checked the token and put the body on disk (see site.py and
upload_stream.py); ingest.py then applies the rules and stores it.
"""

from __future__ import annotations

from twisted.logger import Logger

from pypireg.domain.errors import BadUpload, FileExists
from pypireg.http.metrics import Metrics
from pypireg.http.page_cache import PackageCaches
from pypireg.http.responses import origin, pypi_url
from pypireg.http.scopes import request_actor
from pypireg.http.site import RegistryRequest
from pypireg.ingest.accept import ingest
from pypireg.storage.blobs import BlobStore
from pypireg.storage.database import Database

_log = Logger()


class UploadRoutes:
    def __init__(self, db: Database, blobs: BlobStore, metrics: Metrics, caches: PackageCaches,
                 base_url: str | None = None) -> None:
        """*base_url* is `server.base_url`, for the index URL a refusal names."""
        self._db = db
        self._blobs = blobs
        self._metrics = metrics
        self._caches = caches
        self._base_url = base_url

    async def upload(self, request: RegistryRequest, project: str) -> bytes:
        """POST …/pypi (or …/pypi/): store the file the site received, or say why not."""
        if request.upload_error is not None:
            raise request.upload_error
        received = request.received_upload
        if received is None:  # pragma: no cover - the site always sets one of the two
            raise BadUpload("The upload body could not be read.")
        blob = received.blob
        grant = received.grant
        try:
            record = await ingest(self._db, self._blobs, grant.project, received.fields,
                                  received.filename, blob,
                                  grant.token.id if grant.token else None,
                                  actor=request_actor(request, grant.token))
        except FileExists as e:
            # Storage does not know this registry's URLs; the advice needs one.
            raise FileExists(e.filename, self._check_url(request, project,
                                                         grant.project.public)) from None
        finally:
            if blob is not None:
                await blob.discard()
        self._caches.wrote_packages()
        self._metrics.bytes_uploaded.inc(record.size)
        _log.info("stored {filename} ({size} bytes) in project {project}",
                  filename=record.filename, size=record.size, project=grant.project.path)
        request.setResponseCode(201, b"Created")
        request.setHeader(  # type: ignore[no-untyped-call]
            b"Content-Type", b"text/plain; charset=utf-8")
        return f"Stored {record.filename}\n".encode()

    def _check_url(self, request: RegistryRequest, project: str, public: bool) -> str:
        """The index URL for `uv publish --check-url`, for the project as the client named it.

        uv sends no credentials with it but those in the URL (not those it
        publishes with), so a private project's carries a placeholder for
        a token.
        """
        url = pypi_url(origin(request, self._base_url), project) + "/simple/"
        if public:
            return url
        scheme, _, rest = url.partition("://")
        return f"{scheme}://__token__:<token>@{rest}"
