"""End to end: `server.workers = 2` with the real twistd, twine and raw sockets.

The parent opens the port and spawns the workers; each answer says which
worker sent it (X-Pypireg-Worker), so a test can see both serve, and
that a change made through one is seen through the other.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributions import wheel_bytes, wheel_filename, write
from tests.support.daemon import (
    BIN,
    Daemon,
    free_port,
    running_daemon,
    start_socket_activated,
    terminate,
    twine,
)
from tests.support.oidc import tls_files

pytestmark = pytest.mark.e2e

WORKERS = ("workers = 2",)
# Requests on fresh connections until both workers have answered: the
# kernel hands each connection to whichever worker accepts first.
MAX_TRIES = 400


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("pypireg-workers-", server=WORKERS) as d:
        yield d


@pytest.fixture(scope="module")
def project(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, bytes]:
    """A project with one big wheel uploaded through the workers: (id, write token, bytes)."""
    project_id = daemon.cli("project", "create", "acme/workers").stdout.strip()
    write_token = daemon.cli("token", "create", "--project", project_id, "--scope", "write"
                             ).stdout.splitlines()[-1]
    data = wheel_bytes("spread", "1.0", payload=os.urandom(1_500_000))
    folder = tmp_path_factory.mktemp("dist")
    result = twine(daemon, project_id, write_token,
                   write(folder, wheel_filename("spread", "1.0"), data))
    assert result.returncode == 0, result.stdout + result.stderr
    return project_id, write_token, data


def get(url: str, token: str | None = None) -> tuple[int, str, bytes]:
    """(status, worker, body) of a GET on a fresh connection."""
    request = urllib.request.Request(url, headers={"PRIVATE-TOKEN": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers.get("X-Pypireg-Worker", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("X-Pypireg-Worker", ""), e.read()


def on_each_worker(url: str, token: str | None = None) -> dict[str, tuple[int, bytes]]:
    """The answer of every worker to *url*: asked on fresh connections until both answered."""
    answers: dict[str, tuple[int, bytes]] = {}
    for _ in range(MAX_TRIES):
        status, worker, body = get(url, token)
        answers.setdefault(worker, (status, body))
        if len(answers) == 2:
            return answers
    raise AssertionError(f"only workers {sorted(answers)} answered {MAX_TRIES} requests")


def workers_of(daemon: Daemon) -> dict[str, int]:
    """Worker number → pid, from the daemon's children."""
    found = {}
    for pid, cmdline in daemon.children():
        if "pypireg.worker" in cmdline:
            found[cmdline.split("--worker ")[1].split()[0]] = pid
    return found


def file_url(daemon: Daemon, project_id: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"{daemon.api(project_id)}/files/{sha}/{wheel_filename('spread', '1.0')}"


def test_postgres_and_migrations_once_workers_are_children(daemon: Daemon) -> None:
    log = daemon.log.read_text()
    if "[database]" not in daemon.config.read_text():  # not with PYPIREG_TEST_DSN
        assert log.count("started embedded PostgreSQL") == 1
    assert log.count("applied schema migration 1\n") == 1
    assert sorted(workers_of(daemon)) == ["1", "2"]
    # Each worker's lines reach the parent's log, marked with its number.
    assert "pypireg.service#info worker 1] pypireg worker 1 ready" in log
    assert "pypireg.service#info worker 2] pypireg worker 2 ready" in log


def test_uploads_and_downloads_on_one_port_land_on_both_workers(
        daemon: Daemon, project: tuple[str, str, bytes]) -> None:
    project_id, token, data = project
    answers = on_each_worker(file_url(daemon, project_id, data), token)
    assert answers == {"1": (200, data), "2": (200, data)}
    log = daemon.log.read_text()
    # The upload went through one of them, and its access line says which.
    assert any(f"worker {n}] " in line and "POST /api/v4/projects/" in line
               for line in log.splitlines() for n in (1, 2))


def test_a_delete_through_one_worker_is_seen_by_the_other(
        daemon: Daemon, tmp_path: Path) -> None:
    project_id = daemon.cli("project", "create", "acme/caches").stdout.strip()
    token = daemon.cli("token", "create", "--project", project_id, "--scope", "write"
                       ).stdout.splitlines()[-1]
    wheel = write(tmp_path, wheel_filename("gone", "1.0"), wheel_bytes("gone", "1.0"))
    assert twine(daemon, project_id, token, wheel).returncode == 0
    page = daemon.api(project_id) + "/simple/gone/"
    # Both workers render the page and keep it in their caches.
    assert all(status == 200 and wheel.name.encode() in body
               for status, body in on_each_worker(page, token).values())
    listing = json.loads(get(f"{daemon.url}/api/v4/projects/{project_id}/packages", token)[2])
    request = urllib.request.Request(
        f"{daemon.url}/api/v4/projects/{project_id}/packages/{listing[0]['id']}",
        method="DELETE", headers={"PRIVATE-TOKEN": token})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 204
        deleted_by = resp.headers["X-Pypireg-Worker"]
    # The worker that deleted drops its cache before answering; the other
    # on the NOTIFY, which arrives before a client can ask again.
    answers = on_each_worker(page, token)
    assert answers[deleted_by][0] == 404
    assert {status for status, _body in answers.values()} == {404}


def test_a_killed_worker_is_replaced_and_no_connection_is_refused(
        daemon: Daemon, project: tuple[str, str, bytes]) -> None:
    before = workers_of(daemon)
    failures: list[BaseException] = []
    answered: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                answered.append(get(daemon.url + "/-/health")[1])
            except OSError as e:
                failures.append(e)

    client = threading.Thread(target=hammer)
    client.start()
    try:
        while len(answered) < 20:
            time.sleep(0.01)
        os.kill(before["1"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while workers_of(daemon).get("1") in (None, before["1"]):
            assert time.monotonic() < deadline, "worker 1 was not restarted"
            time.sleep(0.05)
        seen = len(answered)
        # The new worker 1 serves (its first answers, among worker 2's).
        while "1" not in answered[seen:]:
            assert time.monotonic() < deadline, "the new worker 1 never answered"
            time.sleep(0.05)
    finally:
        stop.set()
        client.join()
    # The parent holds the socket: connections wait in its backlog while
    # worker 1 is down. At most the one request in flight on it is lost.
    assert not [f for f in failures if isinstance(f, ConnectionRefusedError)]
    assert len(failures) <= 1, failures
    assert workers_of(daemon)["2"] == before["2"]
    assert "worker 1 ended (killed by signal 9); restarting it" in daemon.log.read_text()


def _bigger_uploads(daemon: Daemon) -> None:
    daemon.config.write_text(daemon.config.read_text().replace('"2MiB"', '"40MiB"'))


def test_sigterm_drains_a_slow_download_and_leaves_no_process(tmp_path: Path) -> None:
    with running_daemon("pypireg-workers-drain-", setup=_bigger_uploads,
                        server=WORKERS) as daemon:
        project_id = daemon.cli("project", "create", "drain", "--public").stdout.strip()
        token = daemon.cli("token", "create", "--project", project_id, "--scope", "write"
                           ).stdout.splitlines()[-1]
        # More than the socket buffers on both sides hold (4 MiB each at most
        # on Linux): the answer is still being sent when the drain begins.
        data = wheel_bytes("spread", "1.0", payload=os.urandom(24 * 1024 * 1024))
        assert twine(daemon, project_id, token,
                     write(tmp_path, wheel_filename("spread", "1.0"), data)).returncode == 0
        workers = workers_of(daemon)
        path = file_url(daemon, project_id, data).removeprefix(daemon.url)
        slow = socket.socket()
        # A small receive window: the worker cannot push the file out at once.
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", daemon.port))
        slow.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = slow.recv(1024)
        assert received.startswith(b"HTTP/1.1 200")
        server = received.split(b"X-Pypireg-Worker: ")[1].split(b"\r\n")[0].decode()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        # The parent lets go of the socket and the workers stop listening.
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", daemon.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            except OSError:
                pass  # accepted into the backlog, then reset as the socket closed
            assert time.monotonic() < deadline, "still accepting connections"
            time.sleep(0.05)
        while chunk := slow.recv(65536):
            received += chunk
        slow.close()
        head, _, body = received.partition(b"\r\n\r\n")
        assert body == data, head
        # twistd ends with the signal that stopped it, once shut down.
        assert daemon.proc.wait(60) == -signal.SIGTERM
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers.values())
        log = daemon.log.read_text()
        assert "worker 1 stopped (exit status 0)" in log
        assert "worker 2 stopped (exit status 0)" in log
        # The download was answered after the worker began to drain.
        mine = [line for line in log.splitlines() if f"worker {server}] " in line]
        stopping = next(i for i, line in enumerate(mine) if "Received SIGTERM" in line)
        assert any("GET /api/v4/projects/" in line for line in mine[stopping:])
        assert not (daemon.folder / "data" / "postgres" / "postmaster.pid").exists()


def test_one_worker_forks_nothing() -> None:
    with running_daemon("pypireg-workers-one-", server=("workers = 1",)) as daemon:
        status, worker, _body = get(daemon.url + "/-/ready")
        assert (status, worker) == (200, "")
        assert not [cmd for _pid, cmd in daemon.children() if "pypireg.worker" in cmd]
        assert "pypireg ready (storage " in daemon.log.read_text()


def test_workers_of_a_killed_parent_stop_and_the_next_start_serves() -> None:
    with running_daemon("pypireg-workers-orphans-", server=WORKERS) as daemon:
        workers = workers_of(daemon)
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait(30)
        # Their pipe from the parent closed: they drain and exit by themselves
        # (what they log about it has nowhere to go: the parent read it).
        deadline = time.monotonic() + 60
        while any(Path(f"/proc/{pid}").exists() for pid in workers.values()):
            assert time.monotonic() < deadline, "the workers outlived their parent"
            time.sleep(0.05)
        # A new start takes over what is left (the embedded PostgreSQL).
        daemon.start()
        assert get(daemon.url + "/-/ready")[0] == 200


def test_every_kind_of_listener_is_served_by_the_workers() -> None:
    metrics_port = free_port()
    tls_port = free_port()

    def listeners(d: Daemon) -> None:
        endpoints = [tls_files(d.folder).listen(tls_port), f"unix:{d.folder / 'http.sock'}"]
        d.config.write_text(d.config.read_text().replace(
            "listen = [", "listen = [" + "".join(f'"{e}", ' for e in endpoints)).replace(
            "[storage]", f'metrics_listen = "tcp:{metrics_port}:interface=127.0.0.1"\n'
                         "[storage]"))

    with running_daemon("pypireg-workers-listeners-", setup=listeners,
                        server=WORKERS) as daemon:
        context = ssl.create_default_context(cafile=str(daemon.folder / "ca.pem"))
        seen = set()
        for _ in range(MAX_TRIES):
            tls = http.client.HTTPSConnection("127.0.0.1", tls_port, context=context,
                                              timeout=30)
            tls.request("GET", "/-/ready")
            answer = tls.getresponse()
            assert (answer.status, answer.read()) == (200, b"ready\n")
            seen.add(answer.getheader("X-Pypireg-Worker"))
            tls.close()
            if len(seen) == 2:
                break
        assert seen == {"1", "2"}
        local = socket.socket(socket.AF_UNIX)
        local.connect(str(daemon.folder / "http.sock"))
        local.sendall(b"GET /-/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert local.makefile("rb").read().endswith(b"\r\n\r\nok\n")
        local.close()
        status, _worker, body = get(f"http://127.0.0.1:{metrics_port}/-/metrics")
        assert status == 200 and b"pypireg_http_requests_total" in body
        assert get(daemon.url + "/-/metrics")[0] == 404
        daemon.stop()
        # The parent made the unix socket's file, and removes it when it stops.
        assert not (daemon.folder / "http.sock").exists()


def test_systemd_socket_activation_with_workers(daemon_dsn: str | None) -> None:
    # A listening socket on fd 3, as systemd passes it: the parent adopts it
    # and hands it on to its workers.
    folder = Path(tempfile.mkdtemp(prefix="pypireg-workers-systemd-"))
    log = folder / "daemon.log"
    with log.open("wb") as out:
        proc, port = start_socket_activated(
            folder, 'listen = ["systemd:domain=INET:index=0"]\nworkers = 2\n', daemon_dsn, out)
    try:
        deadline = time.monotonic() + 60
        while "pypireg ready (2 workers" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        workers = {get(f"http://127.0.0.1:{port}/-/ready")[1] for _ in range(MAX_TRIES // 4)}
        assert workers == {"1", "2"}
    finally:
        terminate(proc, 60)
        shutil.rmtree(folder, ignore_errors=True)


def _start_until_exit(folder: Path, config: str) -> tuple[int, str]:
    (folder / "pypireg.toml").write_text(config)
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "pypireg", "--config", "pypireg.toml"],
        cwd=folder, capture_output=True, text=True, timeout=180)
    return result.returncode, result.stdout + result.stderr


def test_a_port_in_use_fails_the_start_as_without_workers(daemon_dsn: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pypireg-workers-port-"))
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            database = f'[database]\ndsn = "{daemon_dsn}"\n' if daemon_dsn else ""
            code, output = _start_until_exit(
                folder, f'[server]\nlisten = ["{endpoint}"]\nworkers = 2\n{database}')
        assert code == 1, output
        assert f"pypireg could not start: cannot listen on {endpoint} (server.listen): " \
               "address already in use" in output
        assert "started worker" not in output
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_worker_that_keeps_failing_at_once_ends_the_daemon_with_exit_1(
        daemon_dsn: str | None) -> None:
    # The parent never touches the blob folders; each worker fails to make them.
    folder = Path(tempfile.mkdtemp(prefix="pypireg-workers-failing-"))
    try:
        (folder / "data").mkdir()
        (folder / "data" / "blobs").write_text("not a folder")
        database = f'[database]\ndsn = "{daemon_dsn}"\n' if daemon_dsn else ""
        code, output = _start_until_exit(
            folder, f'[server]\nlisten = ["tcp:{free_port()}:interface=127.0.0.1"]\n'
                    f'workers = 2\n[storage]\npath = "data"\n{database}')
        assert code == 1, output
        stops = [line for line in output.splitlines() if "pypireg stops: " in line]
        assert len(stops) == 1, output
        assert stops[0].endswith("ended 5 times in a row within 10 seconds of its start "
                                 "(last: exit status 1); its log lines above say why")
        # Why, in the worker's own words, with its number.
        assert "could not start: cannot use the data folder" in output
        assert "restarting it in 0.25 seconds" in output
        assert not (folder / "data" / "postgres" / "postmaster.pid").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
