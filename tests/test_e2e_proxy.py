"""End to end: pip and uv install through one index URL that proxies an upstream.

Two real daemons: the upstream (a public project of a second pypireg,
serving PEP 691 JSON) and the registry under test, configured with the
upstream's simple URL as `[[upstreams]]`. A static PEP 503 tree served by
`python -m http.server` is a second, pypiserver-like upstream for a large
file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.distributions import metadata_text, wheel_bytes, wheel_filename, write
from tests.support.daemon import BIN, Daemon, free_port, running_daemon, twine

pytestmark = pytest.mark.e2e
UV = shutil.which("uv", path=str(BIN)) or shutil.which("uv")
BIG_SIZE = 200 * 1024 * 1024


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    metadata = metadata_text(name, version)
    if requires:
        head, _, tail = metadata.partition("\n\n")
        metadata = head + "".join(f"\nRequires-Dist: {r}" for r in requires) + "\n\n" + tail
    return write(folder, wheel_filename(name, version),
                 wheel_bytes(name, version, metadata=metadata))


def _big_wheel(path: Path) -> None:
    """A valid wheel of BIG_SIZE bytes or so, its payload stored (not deflated: fast)."""
    info = "big_file-1.0.dist-info"
    payload = hashlib.sha256()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        with zf.open("big_file/data.bin", "w", force_zip64=True) as member:
            block = os.urandom(1024 * 1024)
            for i in range(BIG_SIZE // len(block)):
                chunk = block[:-4] + i.to_bytes(4, "big")
                payload.update(chunk)
                member.write(chunk)
        metadata = metadata_text("big-file", "1.0").encode()
        wheel = b"Wheel-Version: 1.0\nGenerator: pypireg-tests\nRoot-Is-Purelib: true\n" \
                b"Tag: py3-none-any\n"
        zf.writestr(f"{info}/METADATA", metadata)
        zf.writestr(f"{info}/WHEEL", wheel)
        record = [_record("big_file/data.bin", payload.digest(), BIG_SIZE),
                  _record(f"{info}/METADATA", hashlib.sha256(metadata).digest(), len(metadata)),
                  _record(f"{info}/WHEEL", hashlib.sha256(wheel).digest(), len(wheel)),
                  f"{info}/RECORD,,"]
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


def _record(path: str, digest: bytes, size: int) -> str:
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{path},sha256={encoded},{size}"


@contextmanager
def _static_tree(folder: Path) -> Iterator[str]:
    """A PEP 503 tree with one big file, served by the standard library's web server."""
    name, filename = "big-file", "big_file-1.0-py3-none-any.whl"
    (folder / "simple" / name).mkdir(parents=True)
    (folder / "packages").mkdir()
    wheel = folder / "packages" / filename
    _big_wheel(wheel)
    with wheel.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    (folder / "simple" / name / "index.html").write_text(
        f'<a href="../../packages/{filename}#sha256={digest.hexdigest()}">{filename}</a>\n')
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}/simple/"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon("pypireg-e2e-upstream-") as daemon:
        daemon.cli("project", "create", "pub", "--public")
        token = daemon.cli("token", "create", "--project", "pub", "--scope", "write"
                           ).stdout.splitlines()[-1]
        dists = tmp_path_factory.mktemp("public")
        files = [
            _wheel(dists, "dep-a", "1.0", ("dep-b>=1.0",)),
            _wheel(dists, "dep-b", "1.0"),
            _wheel(dists, "dep-b", "1.1"),
            _wheel(dists, "dep-c", "1.0"),
            # Dependency confusion, attempted: the private name, higher.
            _wheel(dists, "private-app", "99.0"),
        ]
        result = twine(daemon, "pub", token, *files)
        assert result.returncode == 0, result.stdout + result.stderr
        daemon.write_token = token  # type: ignore[attr-defined]
        yield daemon


@pytest.fixture(scope="module")
def proxy(upstream: Daemon, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Daemon, str]]:
    tree = tmp_path_factory.mktemp("tree")
    with _static_tree(tree) as static_url:
        def configure(daemon: Daemon) -> None:
            with daemon.config.open("a") as f:
                f.write('[[upstreams]]\nname = "public"\n'
                        f'url = "{upstream.api("pub")}/simple/"\ntimeout = "3s"\n'
                        '[[upstreams]]\nname = "static"\n'
                        f'url = "{static_url}"\ntimeout = "3s"\n'
                        # The same index again, with a quarantine for fresh releases.
                        '[[upstreams]]\nname = "quarantine"\n'
                        f'url = "{upstream.api("pub")}/simple/"\nmin_age = "1d"\n')

        with running_daemon("pypireg-e2e-proxy-", configure) as daemon:
            daemon.cli("project", "create", "acme")
            daemon.cli("project", "update", "acme", "--upstreams", "public,static")
            daemon.cli("project", "create", "careful", "--public")
            daemon.cli("project", "update", "careful", "--upstreams", "quarantine")
            write_token = daemon.cli("token", "create", "--project", "acme", "--scope", "write"
                                     ).stdout.splitlines()[-1]
            read = daemon.cli("token", "create", "--project", "acme", "--scope", "read"
                              ).stdout.splitlines()[-1]
            dists = tmp_path_factory.mktemp("private")
            result = twine(daemon, "acme", write_token,
                           _wheel(dists, "private-app", "1.0", ("dep-a",)))
            assert result.returncode == 0, result.stdout + result.stderr
            yield daemon, read


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", *args],
        capture_output=True, text=True, timeout=180,
    )


def installed(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))


def test_pip_installs_private_and_public_through_one_index(proxy: tuple[Daemon, str],
                                                           tmp_path: Path) -> None:
    daemon, read = proxy
    result = pip("install", "--index-url", daemon.index("acme", read), "--target",
                 str(tmp_path / "t"), "private-app")
    assert result.returncode == 0, result.stdout + result.stderr
    # The private 1.0, never the upstream's 99.0; dep-b at its newest.
    assert installed(tmp_path / "t") == ["dep_a-1.0.dist-info", "dep_b-1.1.dist-info",
                                         "private_app-1.0.dist-info"]


@pytest.mark.skipif(UV is None, reason="uv is installed with the test extras")
def test_uv_installs_private_and_public_through_one_index(proxy: tuple[Daemon, str],
                                                          tmp_path: Path) -> None:
    daemon, read = proxy
    assert UV is not None
    env = {**os.environ, "UV_NO_CACHE": "1", "UV_PYTHON": sys.executable}
    result = subprocess.run(
        [UV, "pip", "install", "--index-url", daemon.index("acme", read), "--target",
         str(tmp_path / "t"), "private-app"],
        capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    assert installed(tmp_path / "t") == ["dep_a-1.0.dist-info", "dep_b-1.1.dist-info",
                                         "private_app-1.0.dist-info"]


def test_a_blocked_version_is_not_installed(proxy: tuple[Daemon, str], tmp_path: Path) -> None:
    daemon, read = proxy
    daemon.cli("upstream", "block", "acme", "dep-b", "1.1", "--reason", "malicious release")
    try:
        result = pip("install", "--index-url", daemon.index("acme", read), "--target",
                     str(tmp_path / "t"), "dep-b")
        assert result.returncode == 0, result.stderr
        assert installed(tmp_path / "t") == ["dep_b-1.0.dist-info"]
    finally:
        daemon.cli("upstream", "unblock", "acme", "dep-b", "1.1")


def test_min_age_hides_releases_younger_than_it(proxy: tuple[Daemon, str],
                                                tmp_path: Path) -> None:
    daemon, _ = proxy
    index = f"{daemon.api('careful')}/simple"
    # Every upstream release here is minutes old: none is old enough.
    result = pip("download", "--no-deps", "--index-url", index, "-d", str(tmp_path), "dep-c")
    assert result.returncode != 0
    assert "from versions: none" in result.stderr, result.stderr


def test_a_big_upstream_file_streams_through_in_constant_memory(
        proxy: tuple[Daemon, str]) -> None:
    daemon, read = proxy
    assert daemon.proc is not None
    index = daemon.index("acme", read)
    pid = daemon.proc.pid
    peak = [_rss(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak.append(_rss(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = pip("download", "--no-deps", "--index-url", index, "-d",
                     str(daemon.folder / "dl"), "big-file")
    finally:
        done.set()
        sampler.join()
    assert result.returncode == 0, result.stderr
    assert (daemon.folder / "dl" / "big_file-1.0-py3-none-any.whl").stat().st_size > BIG_SIZE
    # Buffering the file (or a good part of it) would show here; streaming
    # keeps the daemon within its chunk and write-queue bounds.
    assert max(peak) - peak[0] < BIG_SIZE // 4, (peak[0], max(peak))
    status = daemon.cli("upstream", "status").stdout
    assert "big-file" in status


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_upstream_stopped_cached_names_install_new_names_fail(
        upstream: Daemon, proxy: tuple[Daemon, str], tmp_path: Path) -> None:
    daemon, read = proxy
    index = daemon.index("acme", read)
    result = pip("install", "--index-url", index, "--target", str(tmp_path / "warm"),
                 "private-app")
    assert result.returncode == 0, result.stderr
    upstream.stop()
    try:
        # Past the pages' ttl the proxy asks again, fails, and serves the cache.
        daemon.cli("upstream", "refresh", "acme", "dep-a")
        result = pip("install", "--index-url", index, "--target", str(tmp_path / "t"),
                     "private-app")
        assert result.returncode == 0, result.stderr
        request = urllib.request.Request(f"{daemon.api('acme')}/simple/dep-c/")
        request.add_header("Authorization", "Basic " + _basic(read))
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(request, timeout=30)
        assert failure.value.code == 502
        assert b"public" in failure.value.read()
    finally:
        upstream.start()


def _basic(token: str) -> str:
    return base64.b64encode(f"__token__:{token}".encode()).decode()
