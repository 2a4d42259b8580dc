"""The real daemon: `twistd -n pypireg` in a folder of its own, its CLI, and twine.

The daemon runs the embedded PostgreSQL in its data folder (the README's
default) unless it is given a DSN; `running_daemon` gives it a fresh empty
database on PYPIREG_TEST_DSN's server when that is set, as CI's second run
does.
"""

from __future__ import annotations

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
    def __init__(self, folder: Path, dsn: str | None, tls: TlsFiles | None = None) -> None:
        """With *tls*, the daemon listens on an `ssl:` endpoint serving its leaf."""
        self.folder = folder
        self.port = free_port()
        self.config = folder / "pypireg.toml"
        listen = tls.listen(self.port) if tls else f"tcp:{self.port}:interface=127.0.0.1"
        self.scheme = "https" if tls else "http"
        lines = [
            "[server]",
            f'listen = ["{listen}"]',
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
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", "pypireg", "--config", str(self.config)],
                cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("daemon did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

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


@contextmanager
def running_daemon(prefix: str, setup: Callable[[Daemon], None] | None = None,
                   tls: TlsFiles | None = None) -> Iterator[Daemon]:
    """A started daemon in a fresh folder, on a fresh server database or embedded.

    *setup*, if given, runs before the start (to seed the folder or the config);
    with *tls* the daemon serves HTTPS (tests/support/oidc.py `tls_files`).
    """
    with blank_server_database(prefix) as dsn:
        # Not under pytest's basetemp: pytest resets that to mode 0700 when a
        # session starts, and the embedded PostgreSQL runs as another user.
        daemon = Daemon(Path(tempfile.mkdtemp(prefix=prefix)), dsn, tls)
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
