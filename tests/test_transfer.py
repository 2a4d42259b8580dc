"""pypireg import / export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pypireg.admin.transfer import export_project, import_folder
from pypireg.storage import projects as project_store
from pypireg.storage.blobs import BlobStore
from tests.distributions import (
    metadata_text,
    sdist_bytes,
    sdist_filename,
    wheel_bytes,
    wheel_filename,
    write,
)
from tests.support import reactor
from tests.support.daemon import running_daemon


def pypiserver_folder(root: Path) -> dict[str, bytes]:
    """A pypiserver-style tree: flat files and per-project folders, plus junk."""
    (root / "alpha").mkdir(parents=True)
    (root / "nested" / "deep").mkdir(parents=True)
    files = {
        wheel_filename("alpha", "1.0"): wheel_bytes("alpha", "1.0"),
        sdist_filename("alpha", "1.0"): sdist_bytes("alpha", "1.0"),
        wheel_filename("beta", "2.0"): wheel_bytes("beta", "2.0"),
    }
    write(root / "alpha", wheel_filename("alpha", "1.0"), files[wheel_filename("alpha", "1.0")])
    write(root / "alpha", sdist_filename("alpha", "1.0"), files[sdist_filename("alpha", "1.0")])
    write(root / "nested" / "deep", wheel_filename("beta", "2.0"),
          files[wheel_filename("beta", "2.0")])
    # Refused: metadata that disagrees with the file name, and a broken zip.
    write(root, wheel_filename("gamma", "1.0"),
          wheel_bytes("gamma", "1.0", metadata=metadata_text("other", "1.0")))
    write(root, wheel_filename("delta", "1.0"), b"not a zip")
    (root / "index.html").write_text("<html></html>")
    (root / "alpha" / "alpha-1.0.tar.gz.asc").write_text("signature")
    return files


@pytest_twisted.ensureDeferred
async def test_import_validates_and_is_idempotent_then_export(registry: Any,
                                                              tmp_path: Path) -> None:
    project = await project_store.create_project(registry.db, "migrated")
    blobs = BlobStore(reactor, registry.storage)
    files = pypiserver_folder(tmp_path / "packages")

    summary = await import_folder(registry.db, blobs, project, tmp_path / "packages")
    assert sorted(Path(p).name for p in summary.imported) == sorted(files)
    assert {Path(f).name for f, _ in summary.refused} == {
        wheel_filename("gamma", "1.0"), wheel_filename("delta", "1.0")}
    assert any("is for package 'other'" in r for _, r in summary.refused)
    assert summary.ignored == 2

    again = await import_folder(registry.db, blobs, project, tmp_path / "packages")
    assert again.imported == [] and len(again.skipped) == 3 and len(again.refused) == 2

    write(tmp_path / "packages", wheel_filename("beta", "2.0"),
          wheel_bytes("beta", "2.0", payload=b"changed = True\n"))
    conflict = await import_folder(registry.db, blobs, project, tmp_path / "packages")
    assert any("different file" in r for _, r in conflict.refused)

    count = await export_project(registry.db, blobs, project, tmp_path / "out")
    assert count == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {f["filename"] for f in manifest["files"]} == set(files)
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert await registry.settled_temp_files() == []


@pytest.mark.e2e
def test_import_command_then_pip_install(tmp_path: Path) -> None:
    import os

    with running_daemon("pypireg-e2e-import-") as daemon:
        project = daemon.cli("project", "create", "imported").stdout.strip()
        read = daemon.cli("token", "create", "--project", project, "--scope", "read"
                          ).stdout.splitlines()[-1]
        files = pypiserver_folder(tmp_path / "packages")
        result = daemon.cli("import", str(tmp_path / "packages"), "--project", "imported")
        assert "Imported 3, skipped 0 already present, refused 2" in result.stdout
        result = daemon.cli("import", str(tmp_path / "packages"), "--project", "imported")
        assert "Imported 0, skipped 3 already present, refused 2" in result.stdout
        out = tmp_path / "dl"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
             "--disable-pip-version-check", "--index-url", daemon.index(project, read),
             "-d", str(out), "alpha", "beta"],
            check=True, capture_output=True, timeout=120)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [wheel_filename("alpha", "1.0"), wheel_filename("beta", "2.0")])
        assert all((out / n).read_bytes() == files[n] for n in os.listdir(out))
