"""`pypireg storage copy`: an installation's blobs to the other backend, resumably."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.config import parse_config
from pypireg.storage.backends import open_blob_store
from tests.distributions import wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import project_with_tokens, start_registry, upload


def _config(tmp_path: Path, s3: dict[str, Any], backend: str) -> Any:
    return parse_config({"storage": {"path": str(tmp_path / "data"), "backend": backend,
                                     "s3": s3["s3"]}})


async def _copy(db: Any, config: Any, to: str) -> str:
    blobs = open_blob_store(reactor, config.storage)
    blobs.prepare()
    try:
        return await run_command(
            db, build_parser().parse_args(["storage", "copy", "--to", to, "--quiet"]),
            blobs, config)
    finally:
        await blobs.close()


async def _served(reg: Any, project: Any, files: dict[str, bytes]) -> None:
    for filename, data in files.items():
        url = (f"{reg.api(project.id)}/files/{hashlib.sha256(data).hexdigest()}/{filename}")
        response = await treq.get(url)
        assert response.code == 200
        assert await response.content() == data


@pytest.mark.parametrize(("start", "to"), [("filesystem", "s3"), ("s3", "filesystem")])
@pytest_twisted.ensureDeferred
async def test_copy_moves_every_blob_and_a_second_run_resumes(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any], start: str, to: str) -> None:
    storage = {"backend": start, "s3": s3_storage["s3"]}
    reg = await start_registry(db, tmp_path, storage=storage)
    files = {}
    try:
        project, write, _ = await project_with_tokens(reg, public=True)
        for name in ("first-pkg", "second-pkg"):
            data = wheel_bytes(name, "1.0")
            code, text, _ = await upload(reg, project.id, write, wheel_filename(name, "1.0"),
                                         data, name=name)
            assert code == 201, text
            files[wheel_filename(name, "1.0")] = data
    finally:
        await reg.stop()

    config = _config(tmp_path, s3_storage, start)
    out = await _copy(db, config, to)
    # Two wheels and their METADATA files.
    assert out.startswith("copied 4 blobs") and "0 were there already" in out
    assert f'backend = "{to}"' in out
    again = await _copy(db, config, to)
    assert again.startswith("copied 0 blobs") and "4 were there already" in again

    # Switched over, the registry serves every file from the other backend.
    switched = await start_registry(db, tmp_path, storage={"backend": to,
                                                           "s3": s3_storage["s3"]})
    try:
        await _served(switched, project, files)
    finally:
        await switched.stop()


@pytest_twisted.ensureDeferred
async def test_copy_to_the_backend_in_use_or_without_a_bucket_is_refused(
        db: Any, tmp_path: Path) -> None:
    config = parse_config({"storage": {"path": str(tmp_path / "data")}})
    with pytest.raises(CommandError, match="already in the filesystem backend"):
        await _copy(db, config, "filesystem")
    with pytest.raises(CommandError, match=r"\[storage.s3\]"):
        await _copy(db, config, "s3")


@pytest_twisted.ensureDeferred
async def test_a_blob_missing_from_the_source_is_reported(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    reg = await start_registry(db, tmp_path)
    try:
        project, write, _ = await project_with_tokens(reg)
        data = wheel_bytes("gone-pkg", "1.0")
        code, text, _ = await upload(reg, project.id, write, wheel_filename("gone-pkg", "1.0"),
                                     data, name="gone-pkg")
        assert code == 201, text
        reg.blobs.path_for(hashlib.sha256(data).hexdigest()).unlink()
    finally:
        await reg.stop()
    with pytest.raises(CommandError) as info:
        await _copy(db, _config(tmp_path, s3_storage, "filesystem"), "s3")
    assert "copied 1 blobs" in str(info.value)  # the METADATA file
    assert f"MISSING in the source: {hashlib.sha256(data).hexdigest()}" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_backup_and_restore_with_a_bucket(
        db: Any, tmp_path: Path, s3_storage: dict[str, Any]) -> None:
    from pypireg.admin.backup import backup, restore
    from pypireg.storage.blobs import BlobStore

    reg = await start_registry(db, tmp_path, storage=s3_storage)
    try:
        project, write, _ = await project_with_tokens(reg, public=True)
        data = wheel_bytes("saved-pkg", "1.0")
        filename = wheel_filename("saved-pkg", "1.0")
        code, text, _ = await upload(reg, project.id, write, filename, data, name="saved-pkg")
        assert code == 201, text
        out = await backup(reactor, db.dsn, reg.blobs, tmp_path / "backup", db)
        assert "and 2 blob files" in out  # the wheel and its METADATA
        # The folder backend's layout: a backup restores on either backend.
        sha256 = hashlib.sha256(data).hexdigest()
        assert BlobStore(reactor, tmp_path / "backup").path_for(sha256).read_bytes() == data
        assert not (tmp_path / "backup" / "tmp").exists()
        if os.environ.get("PYPIREG_TEST_DSN"):
            # The dump above found an external server's socket (its directory
            # given to the bundled pg_dump); restoring is the embedded run's.
            pytest.skip("pg_restore is the bundled PostgreSQL 18's, which cannot restore into"
                        " an older external server (README: the admin command's backup row)")

        # The bucket loses its objects; the restore puts them back.
        for name in await reg.blobs.client.list_objects("reg/blobs/"):
            await reg.blobs.client.delete(name.key)
        restored = await restore(reactor, db.dsn, reg.blobs, tmp_path / "backup", db)
        assert "and 2 blob files" in restored
        await _served(reg, project, {filename: data})
    finally:
        await reg.stop()
