"""Upload a large wheel to the real daemon and watch the daemon's memory.

Standalone benchmark, not part of the package. For each wheel size it

1. writes a config (free port on 127.0.0.1, its own temp storage folder,
   embedded PostgreSQL, [uploads] max_size = 600 MiB) and starts
   `twistd -n --pidfile= pypireg --config <config>`;
2. creates a project and a write token with the `pypireg` admin command;
3. builds a valid wheel (METADATA, WHEEL, RECORD and one incompressible data
   file, all ZIP_STORED) of the requested size;
4. uploads a tiny warm-up wheel first (so one-off imports and pools are not
   counted), then the large one with `twine upload`, timed, while a thread
   reads VmRSS of the twistd process from /proc every 50 ms;
5. checks that the simple index lists the file with the right sha256;
6. stops the daemon with SIGTERM and removes the temp folders.

Only the twistd process is measured; the embedded PostgreSQL runs in its
own processes. If the server buffered upload bodies in memory, the growth
would track the file size; a streaming server stays flat.

Run: python bench/upload_rss.py [--sizes-mib 50 500]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
SAMPLE_SECONDS = 0.05
NAME = "big-pkg"
PROJECT = "bench"
# Growth above this share of the file size (or above a fixed floor) means the
# server holds the body, or a large part of it, in memory.
BUFFERING_SHARE = 0.25
BUFFERING_FLOOR_MIB = 64.0


# --- the wheel ---------------------------------------------------------------

def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(folder: Path, version: str, size: int) -> Path:
    """A valid pure-Python wheel of about *size* bytes, stored uncompressed."""
    dist = f"big_pkg-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    info = f"{dist}.dist-info"
    small = {
        "big_pkg/__init__.py": b'"""A package that is mostly one big data file."""\n',
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {version}\n"
            "Summary: Benchmark payload for pypireg\nRequires-Python: >=3.8\n\n"
        ).encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: pypireg-bench\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    records: list[str] = []
    # Zip headers, RECORD and the small files take about this much.
    data_size = max(0, size - 2048)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, content in small.items():
            zf.writestr(_zipinfo(name), content)
            records.append(f"{name},{_record_hash(hashlib.sha256(content).digest())},"
                           f"{len(content)}")
        digest = hashlib.sha256()
        with zf.open(_zipinfo("big_pkg/data.bin"), "w") as out:
            left = data_size
            while left:
                block = os.urandom(min(left, MIB))
                out.write(block)
                digest.update(block)
                left -= len(block)
        records.append(f"big_pkg/data.bin,{_record_hash(digest.digest())},{data_size}")
        records.append(f"{info}/RECORD,,")
        zf.writestr(_zipinfo(f"{info}/RECORD"), "\n".join(records) + "\n")
    return path


def _zipinfo(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    zi.compress_type = zipfile.ZIP_STORED
    zi.external_attr = 0o644 << 16
    return zi


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


# --- watching the daemon -----------------------------------------------------

def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 (1-based) of the full line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RssSampler:
    """Reads VmRSS of *pid* every SAMPLE_SECONDS in a thread."""

    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            kib = _status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.samples.append((time.monotonic() - start, kib))
            self._stop.wait(SAMPLE_SECONDS)

    @property
    def peak_kib(self) -> int:
        return max(kib for _, kib in self.samples)


def steady_rss_kib(pid: int, seconds: float = 1.0) -> int:
    """Median VmRSS over *seconds*, to step over short blips."""
    values = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kib = _status_kib(pid, "VmRSS")
        if kib is not None:
            values.append(kib)
        time.sleep(SAMPLE_SECONDS)
    values.sort()
    return values[len(values) // 2]


# --- the daemon ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    config: Path
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@contextmanager
def running_daemon(bin_dir: Path, folder: Path, storage_keys: str = "", extra_config: str = "",
                   env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """twistd on a free port in *folder*; *storage_keys* go in [storage], *extra_config* last."""
    port = free_port()
    config = folder / "pypireg.toml"
    config.write_text(
        "[server]\n"
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        "[storage]\n"
        'path = "data"\n'
        + storage_keys
        + "[uploads]\n"
        'max_size = "600MiB"\n'
        + extra_config
    )
    log = folder / "twistd.log"
    with log.open("wb") as logfile:
        process = subprocess.Popen(
            [str(bin_dir / "twistd"), "-n", "--pidfile=", "pypireg", "--config", str(config)],
            stdout=logfile, stderr=subprocess.STDOUT, cwd=folder, env=env,
        )
    daemon = Daemon(process, config, log, port)
    try:
        _wait_listening(daemon, timeout=180)
        yield daemon
    finally:
        stop_daemon(daemon)


def _wait_listening(daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"twistd exited with {daemon.process.returncode}:\n"
                               + daemon.log_tail())
        try:
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("twistd did not start listening in time:\n" + daemon.log_tail())


def stop_daemon(daemon: Daemon) -> None:
    if daemon.process.poll() is not None:
        return
    daemon.process.send_signal(signal.SIGTERM)
    try:
        daemon.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        print("twistd ignored SIGTERM for 90 s; killing it", file=sys.stderr)
        daemon.process.kill()
        daemon.process.wait()


def admin(bin_dir: Path, daemon: Daemon, *args: str) -> str:
    """Run the `pypireg` admin command against the daemon's config; return stdout."""
    result = subprocess.run(
        [str(bin_dir / "pypireg"), "--config", str(daemon.config), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pypireg {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


# --- one run -------------------------------------------------------------------

@dataclass
class Result:
    size_mib: int
    wheel_bytes: int
    idle_kib: int
    baseline_kib: int
    peak_kib: int
    after_kib: int
    hwm_kib: int
    seconds: float
    cpu_seconds: float
    ok: bool
    problem: str = ""

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.baseline_kib) / 1024

    @property
    def mb_per_s(self) -> float:
        return self.wheel_bytes / self.seconds / 1e6

    @property
    def buffers(self) -> bool:
        wheel_mib = self.wheel_bytes / MIB
        return self.growth_mib > max(BUFFERING_FLOOR_MIB, BUFFERING_SHARE * wheel_mib)


def twine_upload(bin_dir: Path, daemon: Daemon, project_id: str, token: str,
                 wheel: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    url = f"http://127.0.0.1:{daemon.port}/api/v4/projects/{project_id}/packages/pypi"
    start = time.perf_counter()
    result = subprocess.run(
        [str(bin_dir / "twine"), "upload", "--disable-progress-bar", "--non-interactive",
         "--repository-url", url, "-u", "__token__", "-p", token, str(wheel)],
        capture_output=True, text=True, timeout=1800, check=False,
        # No user config (~/.pypirc) or TWINE_* settings from the caller.
        env={k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
        | {"HOME": str(wheel.parent)},
    )
    return time.perf_counter() - start, result


def index_lists(daemon: Daemon, project_id: str, token: str, wheel: Path, sha256: str) -> bool:
    url = (f"http://127.0.0.1:{daemon.port}/api/v4/projects/{project_id}/packages/pypi/"
           f"simple/{NAME}/")
    auth = base64.b64encode(f"__token__:{token}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        page = response.read().decode()
    return wheel.name in page and sha256 in page


def measure(bin_dir: Path, size_mib: int, work: Path) -> Result:
    folder = Path(tempfile.mkdtemp(prefix=f"run{size_mib}-", dir=work))
    # The embedded PostgreSQL may run as another user (as root: pypireg-postgres),
    # which must be able to walk down to its cluster.
    folder.chmod(0o755)
    print(f"[{size_mib} MiB] building wheels", flush=True)
    warmup = build_wheel(folder, "0.0.1", 64 * 1024)
    wheel = build_wheel(folder, "1.0.0", size_mib * MIB)
    wheel_sha = sha256_of(wheel)
    print(f"[{size_mib} MiB] starting twistd", flush=True)
    with running_daemon(bin_dir, folder) as daemon:
        project_id = admin(bin_dir, daemon, "project", "create", PROJECT).strip().splitlines()[-1]
        token = admin(bin_dir, daemon, "token", "create", "--project", PROJECT,
                      "--scope", "write").strip().splitlines()[-1]
        idle = steady_rss_kib(daemon.pid)
        _, warm = twine_upload(bin_dir, daemon, project_id, token, warmup)
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up upload failed:\n{warm.stdout}{warm.stderr}\n"
                               + daemon.log_tail())
        baseline = steady_rss_kib(daemon.pid)
        cpu_before = _cpu_seconds(daemon.pid)
        sampler = RssSampler(daemon.pid)
        sampler.start()
        print(f"[{size_mib} MiB] uploading with twine", flush=True)
        try:
            seconds, upload = twine_upload(bin_dir, daemon, project_id, token, wheel)
        finally:
            sampler.stop()
        cpu = _cpu_seconds(daemon.pid) - cpu_before
        after = steady_rss_kib(daemon.pid)
        hwm = _status_kib(daemon.pid, "VmHWM") or 0
        problem = ""
        ok = upload.returncode == 0
        if not ok:
            problem = (f"twine exited {upload.returncode}:\n{upload.stdout}{upload.stderr}\n"
                       f"--- daemon log tail ---\n{daemon.log_tail()}")
        elif not index_lists(daemon, project_id, token, wheel, wheel_sha):
            ok = False
            problem = "the simple index does not list the wheel with its sha256"
        result = Result(size_mib, wheel.stat().st_size, idle, baseline, sampler.peak_kib,
                        after, hwm, seconds, cpu, ok, problem)
        if result.buffers:
            result.problem += ("\nRSS grew with the file size: the server buffers the body.\n"
                               f"--- daemon log tail ---\n{daemon.log_tail()}")
    log_copy = work / f"twistd-{size_mib}MiB.log"
    shutil.copy(daemon.log, log_copy)
    shutil.rmtree(folder)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Daemon RSS and throughput during uploads.")
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent,
                        help="folder with twistd, pypireg and twine (default: this Python's)")
    parser.add_argument("--keep-logs", type=Path,
                        help="copy each run's daemon log into this folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pypireg-upload-rss-"))
    work.chmod(0o755)
    results = []
    try:
        for size in args.sizes_mib:
            results.append(measure(args.bin_dir, size, work))
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("twistd-*.log"):
                shutil.copy(log, args.keep_logs / log.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| wheel | idle RSS | baseline RSS | peak RSS | growth | RSS after | VmHWM "
          "| twine wall time | MB/s | daemon CPU | result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        verdict = "ok" if r.ok and not r.buffers else ("BUFFERS" if r.buffers else "FAILED")
        print(f"| {r.wheel_bytes / MIB:.0f} MiB | {r.idle_kib / 1024:.1f} MiB "
              f"| {r.baseline_kib / 1024:.1f} MiB | {r.peak_kib / 1024:.1f} MiB "
              f"| {r.growth_mib:+.1f} MiB | {r.after_kib / 1024:.1f} MiB "
              f"| {r.hwm_kib / 1024:.1f} MiB | {r.seconds:.2f} s | {r.mb_per_s:.0f} "
              f"| {r.cpu_seconds:.2f} s | {verdict} |")
    print()
    print("baseline: median RSS over 1 s after a 64 KiB warm-up upload; peak: highest "
          "VmRSS sampled every 50 ms during the upload; VmHWM: the kernel's lifetime peak. "
          "MB = 10^6 bytes; time is twine's wall time (start-up and hashing included).")
    for r in results:
        if r.problem:
            print(f"\n[{r.size_mib} MiB] PROBLEM: {r.problem}")
    if any(r.problem for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
