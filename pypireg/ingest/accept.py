"""Accepting one distribution into a project: the rules, then durable storage.

Composition of the domain rules (upload.py), archive reading (archives.py,
in the thread pool) and storage. Both the upload API and `pypireg import`
go through `ingest`, so an imported file is validated exactly as an
uploaded one.
"""

from __future__ import annotations

from pypireg.domain.audit import Actor
from pypireg.domain.metadata import CoreMetadata
from pypireg.domain.names import normalize_name
from pypireg.domain.upload_rules import (
    Form,
    UploadClaim,
    check_digests,
    check_form,
    check_metadata,
    field,
)
from pypireg.ingest.archives import read_core_metadata
from pypireg.storage import packages as package_store
from pypireg.storage.blobs import BlobStore, TempBlob
from pypireg.storage.database import Database
from pypireg.storage.packages import NewFile, PackageFile
from pypireg.storage.projects import Project


async def ingest(db: Database, blobs: BlobStore, project: Project, fields: Form,
                 filename: str | None, blob: TempBlob | None, token_id: int | None, *,
                 actor: Actor | None) -> PackageFile:
    """Validate and store a finished temp file; raises BadUpload with the reason.

    The file row and *actor*'s audit event commit together.

    The temp file is committed (renamed into place) only after every rule
    passed, and the row that makes it visible is committed after that; the
    caller discards the temp file in any case (a no-op once committed).
    """
    claim = check_form(fields, filename)
    assert blob is not None and blob.digests is not None
    digests = await blobs.complete_digests(blob, md5=claim.form_md5 is not None,
                                           blake2=claim.form_blake2_256 is not None)
    check_digests(claim, digests)
    meta, metadata_sha256 = await blobs.in_thread(_check_and_store, blobs, blob, claim)
    return await package_store.record_file(
        db,
        NewFile(
            project_id=project.id,
            name=normalize_name(claim.name),
            display_name=meta.name or claim.name,
            version=str(claim.version),
            filename=claim.dist.filename,
            packagetype=claim.dist.packagetype,
            python_version=field(fields, "pyversion") or claim.dist.python_tag,
            size=digests.size,
            sha256=digests.sha256,
            md5=digests.md5,
            blake2_256=digests.blake2_256,
            requires_python=meta.requires_python or field(fields, "requires_python"),
            summary=meta.summary,
            metadata_version=meta.metadata_version,
            uploaded_by_token_id=token_id,
            metadata_sha256=metadata_sha256,
            description=meta.description or field(fields, "description"),
            description_content_type=(meta.description_content_type
                                      or field(fields, "description_content_type")),
        ),
        reject_duplicates=project.reject_duplicates,
        actor=actor,
    )


def _check_and_store(blobs: BlobStore, blob: TempBlob, claim: UploadClaim
                     ) -> tuple[CoreMetadata, str | None]:
    """Read and check the metadata, then store it and the file (blocking: a worker)."""
    meta = read_core_metadata(blob.path, claim.dist)
    check_metadata(claim, meta)
    # PEP 658: wheels always, sdists from Metadata-Version 2.2 on (before
    # that PKG-INFO may not describe the built package).
    served = claim.dist.packagetype == "bdist_wheel" or meta.is_reliable_sdist_metadata
    metadata_sha256 = blobs.commit_sync(blob, with_bytes=meta.raw if served else None)
    return meta, metadata_sha256
