"""The blob store a configuration asks for.

Storage layer, composition only: `[storage] backend = "filesystem"` (the
default) is a folder (blobs.py); `"s3"` is a bucket (s3_blobs.py), with
upload parts spooled in the storage folder's tmp/.
"""

from __future__ import annotations

from typing import Any

from pypireg.config import StorageConfig
from pypireg.storage.blob_backend import BlobBackend
from pypireg.storage.blobs import BlobStore


def open_blob_store(reactor: Any, storage: StorageConfig) -> BlobBackend:
    if storage.backend == "s3":
        from pypireg.storage.s3_blobs import S3BlobStore

        assert storage.s3 is not None  # config.py requires the table
        return S3BlobStore(reactor, storage.s3, storage.path)
    return BlobStore(reactor, storage.path)
