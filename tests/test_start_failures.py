"""A daemon that cannot start says why in one line, names the setting, and exits 1.

systemd's Restart=on-failure needs the exit status; the operator needs the
line. The real `twistd -n pypireg` is started in a fresh folder for each
case; the cases that fail before any database is used run in about a
second. The messages' building blocks are checked in-process too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypireg.storage.database import _connect_failure_reason
from pypireg.storage.embedded import _one_line_reason
from pypireg.tap import Options, makeService
from tests.support.daemon import BIN, free_port


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not under pytest's basetemp: the embedded PostgreSQL may run as another user.
    path = Path(tempfile.mkdtemp(prefix="pypireg-start-fail-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(folder: Path, config: str, timeout: float = 30) -> tuple[int, list[str]]:
    """Run the daemon on *config* until it gives up; its exit status and output lines.

    A daemon that hangs instead of exiting fails the test after *timeout*
    seconds (the cases here fail within one or two; an initdb takes a few).
    """
    (folder / "pypireg.toml").write_text(config)
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "pypireg", "--config", "pypireg.toml"],
        cwd=folder, capture_output=True, text=True, timeout=timeout)
    return result.returncode, (result.stdout + result.stderr).splitlines()


def failure_line(lines: list[str]) -> str:
    """The one line that says the start failed; there must be no other, and no traceback."""
    said = [line for line in lines if "could not start" in line]
    assert len(said) == 1, "\n".join(lines)
    assert not any("Traceback" in line or line.startswith("\t") for line in lines), \
        "\n".join(lines)
    return said[0]


@pytest.mark.e2e
def test_a_port_in_use_is_one_line_naming_the_endpoint_and_exit_1(
        folder: Path, daemon_dsn: str | None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        database = f'[database]\ndsn = "{daemon_dsn}"\n' if daemon_dsn else ""
        code, lines = start(folder, f'[server]\nlisten = ["{endpoint}"]\n{database}', 90)
    assert code == 1, "\n".join(lines)
    assert failure_line(lines).endswith(
        f"pypireg could not start: cannot listen on {endpoint} (server.listen): "
        "address already in use")


@pytest.mark.e2e
def test_an_unreachable_database_is_one_line_without_the_password(folder: Path) -> None:
    # Nothing listens on a port just freed: the connection is refused at once.
    dsn = f"postgresql://pypireg:s3cret-pw@127.0.0.1:{free_port()}/pypireg"
    code, lines = start(folder, f'[database]\ndsn = "{dsn}"\n')
    assert code == 1, "\n".join(lines)
    line = failure_line(lines)
    assert "cannot connect to the database (database.dsn): Connection refused" in line
    assert "s3cret-pw" not in "\n".join(lines)
    assert not (folder / "pypireg-data" / "postgres").exists()


@pytest.mark.e2e
def test_a_malformed_dsn_fails_the_start_instead_of_hanging(folder: Path) -> None:
    # psycopg2 refuses it before the reactor runs: the stop must wait for it.
    code, lines = start(folder, '[database]\ndsn = "not a dsn"\n')
    assert code == 1, "\n".join(lines)
    assert failure_line(lines).endswith(
        'cannot connect to the database (database.dsn): invalid dsn: missing "=" after "not" '
        "in connection info string")


@pytest.mark.e2e
def test_an_unusable_data_folder_names_storage_path(folder: Path) -> None:
    (folder / "file").write_text("not a folder")
    code, lines = start(folder, '[storage]\npath = "file/data"\n')
    assert code == 1, "\n".join(lines)
    assert failure_line(lines).endswith(
        f"cannot use the data folder {folder / 'file' / 'data'} (storage.path): "
        f"not a directory: {folder / 'file' / 'data' / 'postgres'}")


@pytest.mark.e2e
def test_a_config_error_is_one_line_on_stderr(folder: Path) -> None:
    code, lines = start(folder, "[server]\nlisten = []\n")
    assert code == 1
    assert lines == ["pypireg could not start: server.listen must be a non-empty list of "
                     'endpoint strings, e.g. ["tcp:8080:interface=127.0.0.1"]']


def test_make_service_exits_with_the_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    options = Options()
    options.parseOptions(["--config", str(missing)])
    with pytest.raises(SystemExit) as exited:
        makeService(options)
    assert exited.value.code == f"pypireg could not start: config file {missing} does not exist"


@pytest.mark.parametrize(("output", "log", "reason"), [
    # pg_ctl only says it could not; the server's log says why.
    ("waiting for server to start.... stopped waiting\npg_ctl: could not start server\n"
     "Examine the log output.\n",
     '2026-12-03 17:00:00 UTC [12] FATAL:  lock file "postmaster.pid" already exists\n'
     "2026-12-03 17:00:00 UTC [12] HINT:  Is another postmaster running?\n",
     'lock file "postmaster.pid" already exists'),
    ("initdb: error: directory \"/x\" exists but is not empty\nIf you want to create a new\n",
     "", 'directory "/x" exists but is not empty'),
    ("pg_ctl: could not start server\nExamine the log output.\n", "", "could not start server"),
    ("", "", "no output"),
])
def test_embedded_postgres_failures_are_reduced_to_their_reason(
        output: str, log: str, reason: str) -> None:
    assert _one_line_reason(output, log) == reason


@pytest.mark.parametrize("dsn", [
    "postgresql://app:hunter2@db.internal/registry",
    "host=db.internal user=app password=hunter2",
    "host=db.internal password='hunter2' user=app",
    "postgresql://app:hunter2@[::1/registry",  # malformed: libpq quotes it back
])
def test_connection_failures_never_quote_the_password(dsn: str) -> None:
    error = Exception(f'invalid dsn: could not parse "{dsn}"\n\tsecond line')
    reason = _connect_failure_reason(error, dsn)
    assert "hunter2" not in reason and "***" in reason
    assert "\n" not in reason and reason.endswith("; second line")
