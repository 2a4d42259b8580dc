"""The real daemon: `twistd -n pypireg` in a folder of its own, its CLI, and twine.

The daemon runs the embedded PostgreSQL in its data folder (the README's
default) unless it is given a DSN; `running_daemon` gives it a fresh empty
database on PYPIREG_TEST_DSN's server when that is set, as CI's second run
does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.databases import blank_server_database
from tests.support.oidc import TlsFiles

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, folder: Path, dsn: str | None, tls: TlsFiles | None = None,
                 server: tuple[str, ...] = ()) -> None:
        """With *tls*, the daemon listens on an `ssl:` endpoint serving its leaf.

        *server* are extra lines for the config's [server] table (`workers = 2`).
        """
        self.folder = folder
        self.port = free_port()
        self.config = folder / "pypireg.toml"
        listen = tls.listen(self.port) if tls else f"tcp:{self.port}:interface=127.0.0.1"
        self.scheme = "https" if tls else "http"
        lines = [
            "[server]",
            f'listen = ["{listen}"]',
            *server,
            "[storage]",
            'path = "data"',
            "[uploads]",
            'max_size = "2MiB"',
        ]
        if dsn:
            lines += ["[database]", f'dsn = "{dsn}"']
        self.config.write_text("\n".join(lines) + "\n")
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "daemon.log"

    def use_storage(self, storage: dict[str, Any]) -> None:
        """Add *storage* (the `storage_backend` fixture's keys: a bucket, or nothing) to the config.

        The daemon inherits the test's environment, and with it the AWS
        credentials the S3 fixtures set.
        """
        if not storage:
            return
        s3 = "".join(f'{key} = "{value}"\n' for key, value in storage["s3"].items())
        backend = storage["backend"]
        text = self.config.read_text().replace(
            '[storage]\npath = "data"\n', f'[storage]\npath = "data"\nbackend = "{backend}"\n', 1)
        self.config.write_text(text + "[storage.s3]\n" + s3)

    def start(self) -> None:
        # The log grows across restarts: only this start's part counts.
        before = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", "pypireg", "--config", str(self.config)],
                cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            # The log line comes once it serves; with workers, the port
            # accepts connections (into its backlog) before any worker does.
            if b"pypireg ready (" in self.log.read_bytes()[before:]:
                return
            time.sleep(0.1)
        raise AssertionError("daemon did not start:\n" + self.log.read_text())

    def children(self) -> list[tuple[int, str]]:
        """The daemon's child processes: (pid, command line)."""
        assert self.proc is not None
        return child_processes(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "pypireg"), "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=120, cwd=self.folder,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def api(self, project: str) -> str:
        return f"{self.url}/api/v4/projects/{project}/packages/pypi"

    def index(self, project: str, token: str) -> str:
        return (f"{self.scheme}://__token__:{token}@127.0.0.1:{self.port}/api/v4/projects/"
                f"{project}/packages/pypi/simple")


def terminate(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM *proc* and wait for it; SIGKILL it after *grace* seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_processes(pid: int) -> list[tuple[int, str]]:
    """The live children of *pid*: (pid, command line), from /proc."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    children = []
    for child in map(int, listed):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        children.append((child, cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return children


@contextmanager
def running_daemon(prefix: str, setup: Callable[[Daemon], None] | None = None,
                   tls: TlsFiles | None = None, server: tuple[str, ...] = ()
                   ) -> Iterator[Daemon]:
    """A started daemon in a fresh folder, on a fresh server database or embedded.

    *setup*, if given, runs before the start (to seed the folder or the config);
    with *tls* the daemon serves HTTPS (tests/support/oidc.py `tls_files`);
    *server* are extra lines for the config's [server] table.
    """
    with blank_server_database(prefix) as dsn:
        # Not under pytest's basetemp: pytest resets that to mode 0700 when a
        # session starts, and the embedded PostgreSQL runs as another user.
        daemon = Daemon(Path(tempfile.mkdtemp(prefix=prefix)), dsn, tls, server)
        try:
            if setup is not None:
                setup(daemon)
            daemon.start()
            yield daemon
        finally:
            daemon.stop()
            shutil.rmtree(daemon.folder, ignore_errors=True)


def twine(daemon: Daemon, project: str, token: str, *files: Path,
          repository: str | None = None, options: tuple[str, ...] = ()
          ) -> subprocess.CompletedProcess[str]:
    """`twine upload` through a .pypirc; *repository* replaces the project's upload URL."""
    pypirc = daemon.folder / "pypirc"
    pypirc.write_text(
        "[distutils]\nindex-servers = local\n\n[local]\n"
        f"repository = {repository or daemon.api(project)}\nusername = __token__\n"
        f"password = {token}\n"
    )
    return subprocess.run(
        [str(BIN / "twine"), "upload", "--disable-progress-bar", "--non-interactive",
         "--config-file", str(pypirc), "--repository", "local", *options, *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )


def start_socket_activated(folder: Path, server: str, dsn: str | None, output: Any
                           ) -> tuple[subprocess.Popen[bytes], int]:
    """twistd in *folder*, given a listening socket as systemd gives it; (process, port).

    As systemd (or systemd-socket-activate) does: the socket on fd 3, with
    LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES. *server* is the config's [server]
    table's body (its `listen` names the systemd: endpoint); *output* takes
    the daemon's output (a file, or subprocess.PIPE).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = int(listener.getsockname()[1])
    (folder / "pypireg.toml").write_text(
        f"[server]\n{server}" + (f'[database]\ndsn = "{dsn}"\n' if dsn else ""))
    fd = listener.fileno()

    def as_systemd_does() -> None:
        os.dup2(fd, 3)
        os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()),
                          LISTEN_FDNAMES="pypireg.socket")

    proc = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "pypireg", "--config",
         str(folder / "pypireg.toml")],
        # Descriptors are closed after preexec_fn runs: keep 3, the dup.
        cwd=folder, stdout=output, stderr=subprocess.STDOUT, pass_fds=(3,),
        preexec_fn=as_systemd_does,
    )
    listener.close()  # the daemon owns the socket now
    return proc, port
