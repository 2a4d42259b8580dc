"""The legacy upload API (what twine, uv, poetry, pdm and hatch speak).

HTTP layer. By the time this route runs, the site's streaming request has
checked the token and put the body on disk (see site.py and
upload_stream.py); this applies the validation rules in PyPI's order, then
stores the metadata file and the blob, then commits the row.
"""

from __future__ import annotations

from twisted.logger import Logger

from pypireg.archives import CoreMetadata, read_core_metadata
from pypireg.errors import BadUpload
from pypireg.http.app import PYPI, RouteContext, routes
from pypireg.http.site import RegistryRequest
from pypireg.names import normalize_name
from pypireg.storage import packages as package_store
from pypireg.storage.packages import NewFile
from pypireg.upload import check_digests, check_form, check_metadata, field

_log = Logger()


class UploadRoute(RouteContext):
    @routes.route(PYPI, methods=["POST"], strict_slashes=False)
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
                    description=meta.description or field(received.fields, "description"),
                    description_content_type=meta.description_content_type or field(
                        received.fields, "description_content_type"),
                ),
                reject_duplicates=grant.project.reject_duplicates,
            )
        finally:
            if blob is not None:
                await blob.discard()
        self._metrics.bytes_uploaded.inc(record.size)
        _log.info("stored {filename} ({size} bytes) in project {project}",
                  filename=record.filename, size=record.size, project=grant.project.path)
        request.setResponseCode(201, b"Created")
        request.setHeader(  # type: ignore[no-untyped-call]
            b"Content-Type", b"text/plain; charset=utf-8")
        return f"Stored {record.filename}\n".encode()
