"""Upload and download speed through pypireg on S3, against the same endpoint used directly.

Standalone benchmark, not part of the package. It starts moto's S3 server
(`moto_server`, its own process) on 127.0.0.1 and, for each file size:

1. direct: a plain botocore client PUTs the wheel file (one streamed
   request) and GETs it back (streamed, read in 1 MiB chunks), timed;
2. through pypireg: a daemon with `[storage] backend = "s3"` (default
   part size and parts in flight, downloads = "proxy") on the same
   endpoint; `twine upload` of the wheel, then a streamed GET of its file
   URL, each timed while a thread samples the daemon's VmRSS every 50 ms.

Idle is the daemon's steady RSS after a tiny warm-up upload and download.
The issue's bound: the peak during each transfer stays within 32 MiB of it.
Both sides pay for moto (a Python server) in the same way, so the ratio
says what pypireg's streaming, hashing and multipart copy cost.

Run: python bench/s3_speed.py [--sizes-mib 50 500]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from upload_rss import (
    MIB,
    RssSampler,
    admin,
    build_wheel,
    free_port,
    running_daemon,
    steady_rss_kib,
    twine_upload,
)
from upload_rss import Daemon as _Daemon

RSS_BOUND_MIB = 32
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Row:
    size_mib: int
    direct_up: float
    direct_down: float
    up: float
    down: float
    idle_mib: float
    up_peak_mib: float
    down_peak_mib: float

    @property
    def within_bound(self) -> bool:
        return max(self.up_peak_mib, self.down_peak_mib) - self.idle_mib <= RSS_BOUND_MIB


def _client(endpoint: str) -> Any:
    import botocore.session

    return botocore.session.get_session().create_client("s3", endpoint_url=endpoint,
                                                        region_name="us-east-1")


def _direct(client: Any, bucket: str, wheel: Path) -> tuple[float, float]:
    size = wheel.stat().st_size
    key = f"direct/{secrets.token_hex(4)}"
    start = time.perf_counter()
    with wheel.open("rb") as f:
        client.put_object(Bucket=bucket, Key=key, Body=f)
    up = size / (time.perf_counter() - start) / 1e6
    start = time.perf_counter()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    got = 0
    while chunk := body.read(MIB):
        got += len(chunk)
    assert got == size
    down = size / (time.perf_counter() - start) / 1e6
    client.delete_object(Bucket=bucket, Key=key)
    return up, down


def _download(daemon: _Daemon, project: str, wheel: Path) -> float:
    import hashlib

    digest = hashlib.sha256()
    with wheel.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    url = (f"http://127.0.0.1:{daemon.port}/api/v4/projects/{project}/packages/pypi/files/"
           f"{digest.hexdigest()}/{wheel.name}")
    start = time.perf_counter()
    got = 0
    with urllib.request.urlopen(url, timeout=600) as response:
        while chunk := response.read(MIB):
            got += len(chunk)
    assert got == wheel.stat().st_size, (got, wheel.stat().st_size)
    return got / (time.perf_counter() - start) / 1e6


def measure(bin_dir: Path, endpoint: str, size_mib: int, work: Path) -> Row:
    client = _client(endpoint)
    bucket = f"bench-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    folder = Path(tempfile.mkdtemp(prefix=f"s3-{size_mib}-", dir=work))
    folder.chmod(0o755)
    warmup = build_wheel(folder, "0.0.1", 64 * 1024)
    wheel = build_wheel(folder, "1.0.0", size_mib * MIB)
    direct_up, direct_down = _direct(client, bucket, wheel)
    print(f"[{size_mib} MiB] direct: up {direct_up:.0f} MB/s, down {direct_down:.0f} MB/s",
          flush=True)
    storage = (f'[storage.s3]\nbucket = "{bucket}"\nendpoint_url = "{endpoint}"\n')
    with running_daemon(bin_dir, folder, 'backend = "s3"\n', storage,
                        os.environ | CREDENTIALS) as daemon:
        project = admin(bin_dir, daemon, "project", "create", "bench", "--public"
                        ).strip().splitlines()[-1]
        token = admin(bin_dir, daemon, "token", "create", "--project", "bench",
                      "--scope", "write").strip().splitlines()[-1]
        _, warm = twine_upload(bin_dir, daemon, project, token, warmup)
        assert warm.returncode == 0, warm.stdout + warm.stderr + daemon.log_tail()
        _download(daemon, project, warmup)
        idle = steady_rss_kib(daemon.pid) / 1024
        sampler = RssSampler(daemon.pid)
        sampler.start()
        try:
            seconds, result = twine_upload(bin_dir, daemon, project, token, wheel)
        finally:
            sampler.stop()
        assert result.returncode == 0, result.stdout + result.stderr + daemon.log_tail()
        up = wheel.stat().st_size / seconds / 1e6
        up_peak = sampler.peak_kib / 1024
        sampler = RssSampler(daemon.pid)
        sampler.start()
        try:
            down = _download(daemon, project, wheel)
        finally:
            sampler.stop()
        down_peak = sampler.peak_kib / 1024
    shutil.rmtree(folder, ignore_errors=True)
    row = Row(size_mib, direct_up, direct_down, up, down, idle, up_peak, down_peak)
    print(f"[{size_mib} MiB] pypireg: up {up:.0f} MB/s, down {down:.0f} MB/s, idle"
          f" {idle:.0f} MiB, peaks {up_peak:.0f}/{down_peak:.0f} MiB", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[50, 500])
    args = parser.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="pypireg-s3-bench-"))
    work.chmod(0o755)
    port = free_port()
    os.environ.update(CREDENTIALS)
    moto = subprocess.Popen([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        rows = [measure(bin_dir, endpoint, size, work) for size in args.sizes_mib]
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| file | direct up | pypireg up | direct down | pypireg down | idle RSS |"
          " peak up | peak down | within 32 MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.size_mib} MiB | {r.direct_up:.0f} MB/s | {r.up:.0f} MB/s |"
              f" {r.direct_down:.0f} MB/s | {r.down:.0f} MB/s | {r.idle_mib:.0f} MiB |"
              f" {r.up_peak_mib:.0f} MiB | {r.down_peak_mib:.0f} MiB |"
              f" {'yes' if r.within_bound else 'NO'} |")


if __name__ == "__main__":
    main()
