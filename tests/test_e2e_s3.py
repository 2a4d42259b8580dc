"""End to end on object storage: the real daemon over a bucket, twine and pip.

The daemon reads its AWS credentials from the environment the test session
set for the moto server (tests/support/s3.py), as it would on a host with
AWS_ACCESS_KEY_ID set; nothing S3-specific is in the test but the config.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.distributions import wheel_bytes, wheel_filename, write
from tests.support.daemon import Daemon, running_daemon, twine

pytestmark = pytest.mark.e2e


def _on_s3(storage: dict[str, Any], downloads: str) -> Any:
    def setup(d: Daemon) -> None:
        d.use_storage({**storage, "s3": {**storage["s3"], "downloads": downloads}})

    return setup


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize("downloads", ["proxy", "redirect"])
def test_twine_upload_and_pip_download_through_a_bucket(
        s3_storage: dict[str, Any], tmp_path: Path, downloads: str) -> None:
    with running_daemon("pypireg-e2e-s3-", setup=_on_s3(s3_storage, downloads)) as daemon:
        project = daemon.cli("project", "create", "objects", "--public").stdout.strip()
        token = daemon.cli("token", "create", "--project", project, "--scope", "write"
                           ).stdout.splitlines()[-1]
        data = wheel_bytes("bucket-demo", "1.0")
        wheel = write(tmp_path, wheel_filename("bucket-demo", "1.0"), data)
        result = twine(daemon, project, token, wheel)
        assert result.returncode == 0, result.stdout + result.stderr
        # The daemon's stored files are in the bucket, not its folder.
        assert not list((daemon.folder / "data" / "blobs").rglob("*.whl"))
        assert not [p for p in (daemon.folder / "data").rglob("*") if p.is_file()
                    and hashlib.sha256(p.read_bytes()).hexdigest()
                    == hashlib.sha256(data).hexdigest()]

        out = tmp_path / "out"
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir",
             "download", "--no-deps", "-d", str(out), "--index-url",
             f"{daemon.url}/api/v4/projects/{project}/packages/pypi/simple", "bucket-demo"],
            capture_output=True, text=True, timeout=180)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        assert (out / wheel.name).read_bytes() == data

        url = (f"{daemon.url}/api/v4/projects/{project}/packages/pypi/files/"
               f"{hashlib.sha256(data).hexdigest()}/{wheel.name}")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(url, timeout=30) as resp:
                code = resp.status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == (302 if downloads == "redirect" else 200)

        fsck = daemon.cli("fsck")
        assert "OK" in fsck.stdout
        with urllib.request.urlopen(daemon.url + "/-/ready", timeout=30) as resp:
            assert resp.status == 200
