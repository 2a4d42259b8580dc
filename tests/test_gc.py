"""Garbage collection of unreferenced blobs."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest_twisted

from pypireg.storage.blobs import BlobStore
from pypireg.storage.gc import collect_garbage
from tests.distributions import wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import project_with_tokens, upload


@pytest_twisted.ensureDeferred
async def test_unreferenced_old_blobs_go_referenced_and_young_stay(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    keep = wheel_bytes("keep-me", "1.0")
    drop = wheel_bytes("drop-me", "1.0")
    for name, data in (("keep-me", keep), ("drop-me", drop)):
        code, text, _ = await upload(registry, project.id, write, wheel_filename(name, "1.0"),
                                     data, name=name)
        assert code == 201, text
    assert len(registry.stored_files()) == 4  # two wheels, two METADATA files
    await registry.db.execute(
        "DELETE FROM package_files WHERE filename = %s", (wheel_filename("drop-me", "1.0"),))
    blobs = BlobStore(reactor, registry.storage)

    # Young blobs are kept: an upload may be about to commit a row for them.
    result = await collect_garbage(registry.db, blobs)
    assert (result.removed, result.kept_young, result.referenced) == (0, 2, 2)

    old = time.time() - 7200
    for path in registry.stored_files():
        os.utime(path, (old, old))
    dry = await collect_garbage(registry.db, blobs, dry_run=True)
    assert dry.removed == 2 and len(registry.stored_files()) == 4
    result = await collect_garbage(registry.db, blobs)
    assert result.removed == 2
    names = {p.name for p in registry.stored_files()}
    assert hashlib.sha256(keep).hexdigest() in names
    assert hashlib.sha256(drop).hexdigest() not in names
    assert len(names) == 2
    assert list((registry.storage / "trash").iterdir()) == []
