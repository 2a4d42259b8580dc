"""Faults: corrupt storage and fsck, a full disk, the database going away, kill -9."""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from pypireg.admin.fsck import fsck
from pypireg.config import parse_config
from pypireg.service import build_site
from pypireg.storage import projects as project_store
from pypireg.storage.blobs import BlobStore, TempBlob
from pypireg.storage.database import Database
from pypireg.storage.embedded import EmbeddedPostgres
from pypireg.storage.migrations import migrate
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.daemon import Daemon
from tests.support.http import project_with_tokens, upload


@pytest_twisted.ensureDeferred
async def test_fsck_finds_and_repairs(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    wheels = {n: wheel_bytes(n, "1.0") for n in ("good", "gone", "rotten")}
    for name, data in wheels.items():
        code, text, _ = await upload(registry, project.id, write, wheel_filename(name, "1.0"),
                                     data, name=name)
        assert code == 201, text
    blobs = BlobStore(reactor, registry.storage)
    assert (await fsck(registry.db, blobs)).ok

    blobs.path_for(hashlib.sha256(wheels["gone"]).hexdigest()).unlink()
    blobs.path_for(hashlib.sha256(wheels["rotten"]).hexdigest()).write_bytes(b"bit rot")
    (blobs.tmp_dir / "upload-999999-0123456789abcdef.part").write_bytes(b"half")
    report = await fsck(registry.db, blobs)
    assert not report.ok
    assert len(report.missing) == 1 and "gone" in report.missing[0]
    assert len(report.corrupt) == 1 and "rotten" in report.corrupt[0]
    assert report.stale_temp_files == 1

    repaired = await fsck(registry.db, blobs, repair=True)
    assert repaired.ok and len(repaired.repaired) == 2
    assert (await fsck(registry.db, blobs)).ok
    names = [r[0] for r in await registry.db.fetch_all("SELECT filename FROM package_files")]
    assert names == [wheel_filename("good", "1.0")]
    assert (registry.storage / "quarantine").exists()


@pytest_twisted.ensureDeferred
async def test_disk_full_is_507_and_leaves_nothing(registry: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project, write, _ = await project_with_tokens(registry)

    def full(self: TempBlob, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TempBlob, "_write_sync", full)
    code, text, _ = await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                                 wheel_bytes("demo-pkg", "1.0"))
    assert code == 507, text
    assert "disk is full" in text
    assert await registry.settled_temp_files() == []
    assert registry.stored_files() == []
    assert (await registry.db.fetch_all("SELECT count(*) FROM package_files"))[0][0] == 0


@pytest_twisted.ensureDeferred
async def test_database_outage_is_503_then_recovers(tmp_path: Path) -> None:
    # Its own PostgreSQL, so that stopping it disturbs no other test.
    folder = Path(tempfile.mkdtemp(prefix="pypireg-outage-"))
    embedded = EmbeddedPostgres(reactor, folder / "postgres")
    dsn = await embedded.start()
    db = Database(reactor, dsn, pool_size=2)
    port = None
    try:
        await db.start()
        await migrate(db)
        project = await project_store.create_project(db, "open", public=True)
        config = parse_config({"storage": {"path": str(tmp_path / "data")}})
        site, _ = await build_site(reactor, config, db)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/api/v4/projects/{project.id}" \
              "/packages/pypi/simple/"

        async def status() -> tuple[int, Any]:
            resp = await treq.get(url)
            await resp.content()
            return resp.code, resp

        assert (await status())[0] == 200
        tracebacks: list[str] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None or event.get("isError"):
                tracebacks.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        await embedded.stop()
        for _ in range(3):
            started = time.monotonic()
            code, resp = await status()
            assert code == 503
            assert resp.headers.getRawHeaders(b"retry-after") == [b"5"]
            assert time.monotonic() - started < 2.0  # fails fast
        await embedded.start()
        deadline = time.monotonic() + 30
        while (await status())[0] != 200:
            assert time.monotonic() < deadline, "no recovery within 30 s"
            await deferLater(reactor, 0.2, lambda: None)
        # An outage is logged as such, not as tracebacks of unhandled errors.
        assert tracebacks == []
    finally:
        globalLogPublisher.removeObserver(observer)
        if port is not None:
            await port.stopListening()
        db.close()
        await embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _upload_raw(port: int, project: str, token: str, name: str, version: str,
                payload: bytes) -> tuple[int, bytes]:
    wheel = wheel_bytes(name, version, payload=payload)
    ctype, body = upload_form(name, version, wheel_filename(name, version), wheel)
    auth = b64encode(f"__token__:{token}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", f"/api/v4/projects/{project}/packages/pypi", body=body,
                     headers={"Content-Type": ctype.decode(), "Authorization": f"Basic {auth}"})
        return conn.getresponse().status, wheel
    finally:
        conn.close()


@pytest.mark.e2e
def test_kill_9_during_uploads_loses_nothing_acknowledged(
        clean_dsn: str, storage_backend: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pypireg-kill9-"))
    rng = random.Random(9)
    daemon = Daemon(folder, clean_dsn)
    daemon.use_storage(storage_backend)
    acknowledged: dict[str, bytes] = {}
    rounds, attempts = 5, 0
    try:
        daemon.start()
        project = daemon.cli("project", "create", "crash").stdout.strip()
        token = daemon.cli("token", "create", "--project", project, "--scope", "write"
                           ).stdout.splitlines()[-1]
        lock = threading.Lock()
        for round_ in range(rounds):
            if round_:
                daemon.start()
            stop = threading.Event()

            def uploader(worker: int, stop: threading.Event = stop, round_: int = round_) -> None:
                nonlocal attempts
                n = 0
                while not stop.is_set():
                    n += 1
                    version = f"{round_}.{worker}.{n}"
                    size = rng.randint(1, 1500) * 1024
                    try:
                        code, wheel = _upload_raw(daemon.port, project, token, "crash-pkg",
                                                  version, os.urandom(size))
                    except (OSError, http.client.HTTPException):
                        return
                    with lock:
                        attempts += 1
                        if code == 201:
                            acknowledged[wheel_filename("crash-pkg", version)] = wheel

            threads = [threading.Thread(target=uploader, args=(w,)) for w in range(3)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.3, 1.5))
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait()
            stop.set()
            for t in threads:
                t.join(30)

        daemon.start()  # the restart removes temp files of the killed daemons
        assert list((folder / "data" / "tmp").iterdir()) == []
        check = daemon.cli("fsck", check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        import urllib.request

        for filename, wheel in acknowledged.items():
            sha = hashlib.sha256(wheel).hexdigest()
            request = urllib.request.Request(
                f"{daemon.api(project)}/files/{sha}/{filename}",
                headers={"Authorization": "Basic " + b64encode(
                    f"__token__:{token}".encode()).decode()})
            with urllib.request.urlopen(request) as resp:
                assert hashlib.sha256(resp.read()).hexdigest() == sha
        assert acknowledged, "no upload completed; the test proved nothing"
        print(f"kill -9: {rounds} rounds, {attempts} uploads answered, "
              f"{len(acknowledged)} acknowledged and intact, 0 residue")
    finally:
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
def test_embedded_postgres_of_a_killed_daemon_is_adopted_and_stopped() -> None:
    folder = Path(tempfile.mkdtemp(prefix="pypireg-adopt-"))
    daemon = Daemon(folder, None)
    pidfile = folder / "data" / "postgres" / "postmaster.pid"
    try:
        daemon.start()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        orphan = int(pidfile.read_text().split()[0])
        assert _alive(orphan), "the killed daemon's PostgreSQL should still run"
        daemon.start()
        assert daemon.cli("project", "create", "after-crash").returncode == 0
        daemon.stop()
        assert "adopting the embedded PostgreSQL" in daemon.log.read_text()
        deadline = time.monotonic() + 30
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(orphan), "the adopted PostgreSQL was left running"
        assert not pidfile.exists()
    finally:
        daemon.stop()
        if pidfile.exists():
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited: it only waits for its parent to collect it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


_HOLD_EMBEDDED = """
import sys
from pathlib import Path
from twisted.internet import defer, reactor, task
from pypireg.storage.embedded import EmbeddedPostgres

async def main(_reactor):
    pg = EmbeddedPostgres(reactor, Path(sys.argv[1]))
    await pg.start()
    print("up", flush=True)
    while not Path(sys.argv[2]).exists():
        await task.deferLater(reactor, 0.1, lambda: None)
    await pg.stop()

task.react(lambda r: defer.ensureDeferred(main(r)))
"""


@pytest.mark.e2e
def test_embedded_postgres_started_by_a_command_outlives_it_for_the_daemon() -> None:
    # An admin command starts the embedded PostgreSQL, the daemon starts and
    # reuses it, the command ends: the daemon must keep its database.
    folder = Path(tempfile.mkdtemp(prefix="pypireg-handover-"))
    daemon = Daemon(folder, None)
    pgdata = folder / "data" / "postgres"
    release = folder / "release"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_EMBEDDED, str(pgdata), str(release)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        daemon.start()
        assert "reusing the embedded PostgreSQL" in daemon.log.read_text()
        release.touch()
        assert holder.wait(60) == 0
        assert daemon.cli("project", "create", "still-here").returncode == 0
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        daemon.stop()
        deadline = time.monotonic() + 30
        while _alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(postmaster), "the daemon, now its owner, left PostgreSQL running"
    finally:
        holder.kill()
        daemon.stop()
        pidfile = pgdata / "postmaster.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        shutil.rmtree(folder, ignore_errors=True)
