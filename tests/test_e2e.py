"""End to end: the real `twistd -n pypireg`, the real `pypireg` command, twine and pip.

The daemon runs the embedded PostgreSQL in its data folder (the README's
default) unless PYPIREG_TEST_DSN names a server, as CI's second run does;
then each daemon gets a fresh empty database there (tests/support/daemon.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, running_daemon, start_socket_activated, terminate, twine

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    def left_by_a_crash(d: Daemon) -> None:
        stale = d.folder / "data" / "tmp"
        stale.mkdir(parents=True)
        (stale / "upload-999999-0123456789abcdef.part").write_bytes(b"left by a crash")

    with running_daemon("pypireg-e2e-", setup=left_by_a_crash) as d:
        yield d


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real project built with `python -m build` (wheel and sdist)."""
    src = tmp_path_factory.mktemp("src")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "e2e-demo"\nversion = "0.3.0"\nrequires-python = ">=3.8"\n'
        'description = "pypireg end-to-end test package"\n'
    )
    (src / "e2e_demo.py").write_text("ANSWER = 42\n")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                    str(src / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    return src / "dist"


def test_stale_temp_files_removed_at_startup(daemon: Daemon) -> None:
    assert list((daemon.folder / "data" / "tmp").iterdir()) == []


def test_twine_upload_then_pip_install(daemon: Daemon, built: Path, tmp_path: Path) -> None:
    project_id = daemon.cli("project", "create", "acme/tools").stdout.strip()
    assert project_id.isdigit()
    created = daemon.cli("token", "create", "--project", "acme/tools", "--scope", "write",
                         "--description", "e2e upload").stdout
    write = created.strip().splitlines()[-1]
    assert write.startswith("pypireg_")
    read = daemon.cli("token", "create", "--project", project_id, "--scope", "read",
                      "--expires-in", "7").stdout.strip().splitlines()[-1]

    dists = sorted(built.iterdir())
    assert {p.suffix for p in dists} == {".whl", ".gz"}
    result = twine(daemon, project_id, write, *dists)
    assert result.returncode == 0, result.stdout + result.stderr

    # pip through the index, by numeric id and by URL-encoded path.
    out = tmp_path / "download"
    for ref in (project_id, "acme%2Ftools"):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps",
             "--disable-pip-version-check", "--index-url", daemon.index(ref, read),
             "-d", str(out), "e2e-demo==0.3.0"],
            check=True, capture_output=True, timeout=120,
        )
    wheel = next(p for p in dists if p.suffix == ".whl")
    assert (out / wheel.name).read_bytes() == wheel.read_bytes()

    target = tmp_path / "target"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-deps",
         "--disable-pip-version-check", "--index-url", daemon.index(project_id, read),
         "--target", str(target), "e2e-demo"],
        check=True, capture_output=True, timeout=120,
    )
    assert (target / "e2e_demo.py").read_text() == "ANSWER = 42\n"

    listed = daemon.cli("token", "list", "--project", "acme/tools").stdout
    assert "e2e upload" in listed and write not in listed


def test_twine_auth_failures(daemon: Daemon, built: Path) -> None:
    project_id = daemon.cli("project", "create", "auth-matrix").stdout.strip()
    other_id = daemon.cli("project", "create", "other").stdout.strip()
    read = daemon.cli("token", "create", "--project", project_id, "--scope", "read"
                      ).stdout.splitlines()[-1]
    other = daemon.cli("token", "create", "--project", other_id, "--scope", "write"
                       ).stdout.splitlines()[-1]
    write_out = daemon.cli("token", "create", "--project", project_id, "--scope", "write").stdout
    write = write_out.splitlines()[-1]
    token_id = write_out.split()[3]
    wheel = next(p for p in built.iterdir() if p.suffix == ".whl")

    cases = [
        ("pypireg_" + "A" * 43, "401"),
        (read, "403"),
        (other, "404"),
    ]
    for token, status in cases:
        result = twine(daemon, project_id, token, wheel)
        assert result.returncode != 0
        assert status in result.stdout + result.stderr, (token[:12], result.stdout)

    daemon.cli("token", "revoke", token_id)
    result = twine(daemon, project_id, write, wheel)
    assert result.returncode != 0 and "401" in result.stdout + result.stderr
    failed = daemon.cli("token", "revoke", token_id, check=False)
    assert failed.returncode == 1 and "no active token" in failed.stderr


def _raw_request(daemon: Daemon, head: bytes, body: bytes = b"") -> tuple[bytes, float]:
    """Send *head* (and *body*); return the response and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
        s.sendall(head + body)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                break
    return b"".join(chunks), time.monotonic() - started


def test_early_401_and_413_before_the_body(daemon: Daemon) -> None:
    project_id = daemon.cli("project", "create", "early").stdout.strip()
    write = daemon.cli("token", "create", "--project", project_id, "--scope", "write"
                       ).stdout.splitlines()[-1]
    # Headers only, announcing 1 MiB; the body is never sent. An answer
    # proves the server decided without reading it.
    head = (f"POST /api/v4/projects/{project_id}/packages/pypi HTTP/1.1\r\n"
            f"Host: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: 1048576\r\nExpect: 100-continue\r\n\r\n").encode()
    response, _ = _raw_request(daemon, head)
    assert response.startswith(b"HTTP/1.1 401 "), response
    assert b'WWW-Authenticate: Basic realm="pypireg"' in response
    assert b"100 Continue" not in response

    import base64

    auth = base64.b64encode(f"__token__:{write}".encode()).decode()
    big = head.replace(b"1048576", str(50 * 1024 * 1024).encode()).replace(
        b"Host: x\r\n", f"Host: x\r\nAuthorization: Basic {auth}\r\n".encode())
    response, _ = _raw_request(daemon, big)
    assert response.startswith(b"HTTP/1.1 413 "), response

    # With a valid token the server asks for the body.
    ok = head.replace(b"Host: x\r\n", f"Host: x\r\nAuthorization: Basic {auth}\r\n".encode())
    response, _ = _raw_request(daemon, ok)
    assert response.startswith(b"HTTP/1.1 100 Continue"), response
    assert list((daemon.folder / "data" / "tmp").iterdir()) == []


def test_public_project_anonymous_read(daemon: Daemon, built: Path) -> None:
    project_id = daemon.cli("project", "create", "open-source", "--public").stdout.strip()
    write = daemon.cli("token", "create", "--project", project_id, "--scope", "write"
                       ).stdout.splitlines()[-1]
    wheel = next(p for p in built.iterdir() if p.suffix == ".whl")
    assert twine(daemon, project_id, write, wheel).returncode == 0
    with urllib.request.urlopen(daemon.api(project_id) + "/simple/e2e-demo/") as resp:
        assert wheel.name in resp.read().decode()
    daemon.cli("project", "update", "open-source", "--private")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(daemon.api(project_id) + "/simple/e2e-demo/")
    assert err.value.code == 401
    daemon.cli("project", "update", "open-source", "--public", "--packages-disabled")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(daemon.api(project_id) + "/simple/e2e-demo/")
    assert err.value.code == 404


def test_systemd_socket_activation(daemon_dsn: str | None) -> None:
    # A listening socket on fd 3, as systemd passes it, and the systemd: endpoint.
    folder = Path(tempfile.mkdtemp(prefix="pypireg-e2e-systemd-"))
    proc, port = start_socket_activated(
        folder, 'listen = ["systemd:domain=INET:index=0"]\n', daemon_dsn, subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/health", timeout=2) as r:
                    assert r.read() == b"ok\n"
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "no answer through the passed socket"
                time.sleep(0.2)
    finally:
        terminate(proc)
        shutil.rmtree(folder, ignore_errors=True)


def test_backup_and_restore(built: Path, tmp_path: Path) -> None:
    # Embedded PostgreSQL on both sides, whatever PYPIREG_TEST_DSN says: a
    # restore replaces the whole database.
    source = Daemon(Path(tempfile.mkdtemp(prefix="pypireg-e2e-backup-")), None)
    target = Daemon(Path(tempfile.mkdtemp(prefix="pypireg-e2e-restore-")), None)
    try:
        source.start()
        project = source.cli("project", "create", "precious").stdout.strip()
        write = source.cli("token", "create", "--project", project, "--scope", "write"
                           ).stdout.splitlines()[-1]
        read = source.cli("token", "create", "--project", project, "--scope", "read"
                          ).stdout.splitlines()[-1]
        assert twine(source, project, write, *built.iterdir()).returncode == 0
        blobs = sum(1 for p in (source.folder / "data" / "blobs").rglob("*") if p.is_file())
        assert blobs >= 3  # two distributions and their core metadata
        out = source.cli("backup", str(tmp_path / "backup")).stdout
        assert f"Backed up the database and {blobs} blob files" in out
        source.stop()

        # A restore goes into an installation: `pypireg init` makes an empty one.
        assert "Initialised a pypireg installation" in target.cli("init").stdout
        restored = target.cli("restore", str(tmp_path / "backup")).stdout
        assert f"Restored the database and {blobs} blob files" in restored
        assert target.cli("fsck").returncode == 0
        target.start()
        dl = tmp_path / "dl"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
             "--disable-pip-version-check", "--index-url", target.index(project, read),
             "-d", str(dl), "e2e-demo"],
            check=True, capture_output=True, timeout=120)
        wheel = next(p for p in built.iterdir() if p.suffix == ".whl")
        assert (dl / wheel.name).read_bytes() == wheel.read_bytes()
    finally:
        for d in (source, target):
            d.stop()
            shutil.rmtree(d.folder, ignore_errors=True)


def test_json_event_log() -> None:
    def log_json(d: Daemon) -> None:
        with d.config.open("a") as f:
            f.write('[logging]\njson_file = "events.json"\n')

    with running_daemon("pypireg-e2e-json-", setup=log_json) as daemon:
        with urllib.request.urlopen(daemon.url + "/-/health") as resp:
            assert resp.status == 200
        daemon.stop()
        events = [json.loads(line) for line in
                  (daemon.folder / "events.json").read_text().splitlines() if line.strip()]
        assert any(e.get("log_namespace") == "pypireg.service" for e in events)
        assert any("/-/health" in json.dumps(e) for e in events)  # the access log too


def test_metrics_on_a_listener_of_their_own_behind_a_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.daemon import free_port

    token = "scrape-" + "7" * 40
    metrics_port = free_port()
    monkeypatch.setenv("PYPIREG_TEST_METRICS_TOKEN", token)

    def metrics_listener(d: Daemon) -> None:
        # Into [server], the config's first table.
        text = d.config.read_text().replace(
            "[server]\n", "[server]\nmetrics_token_env = \"PYPIREG_TEST_METRICS_TOKEN\"\n"
            f"metrics_listen = \"tcp:{metrics_port}:interface=127.0.0.1\"\n", 1)
        d.config.write_text(text)

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read().decode(), resp.headers.get("WWW-Authenticate", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers.get("WWW-Authenticate", "")

    with running_daemon("pypireg-e2e-metrics-", setup=metrics_listener) as daemon:
        scrape = f"http://127.0.0.1:{metrics_port}/-/metrics"
        # The listener may come up a moment after the registry's.
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", metrics_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, daemon.log.read_text()
                time.sleep(0.1)
        assert get(daemon.url + "/-/health")[0] == 200
        assert get(daemon.url + "/-/metrics")[0] == 404
        code, body, challenge = get(scrape)
        assert (code, challenge) == (401, 'Bearer realm="pypireg metrics"')
        assert "pypireg_" not in body
        code, body, _ = get(scrape, {"Authorization": f"Bearer {token}"})
        assert code == 200
        assert 'pypireg_http_requests_total{method="GET",route="ops",status="200"} 1.0' in body
        assert get(f"http://127.0.0.1:{metrics_port}/-/health")[0] == 404
        daemon.stop()
        log = daemon.log.read_text()
        assert f"serving /-/metrics on tcp:{metrics_port}:interface=127.0.0.1" in log
        assert token not in log
