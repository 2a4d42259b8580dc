"""pypireg with `[server] workers = 1` and `workers = 2`, side by side in one run.

Run by hand from the repository root (not part of the test suite; about 4
minutes with the defaults):

    python bench/workers.py              # 3 runs
    python bench/workers.py --quick      # 1 run, shorter wrk runs

Two installations are started from the same data (bench/compare.py's
corpus at its --quick size: 200 one-file packages, `bench-many` with 100
files, a 1 MiB and a 10 MiB wheel), one with each setting, and measured in
turn in every run with wrk on the same machine:

- the cached project page (the project's /simple/ index, 203 packages) and
  the cached package page (`bench-many`, 100 files): req/s, p50, p99;
- the 1 MiB download: MB/s.

Nothing is pinned: the server's processes and wrk share every core, as a
registry and its clients would on one machine ("client load included").
Each measurement also records the CPU seconds of the server (twistd, its
workers and its PostgreSQL) and of wrk, so the per-request CPU cost is
known, and a noise meter (compare.py's) records how much CPU other
processes used meanwhile. From the per-request server cost the script
prints a model of what 16 and 64 cores would give (see BENCHMARKS.md for
what it leaves out).

Stdlib only; pypireg, twistd and the admin command come from --pypireg-venv
(default: the venv running the script). Results go to
bench/results/workers-<UTC time>.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import compare as cmp  # bench/compare.py: this script's folder is on sys.path

HERE = Path(__file__).resolve().parent
SETTINGS = (1, 2)
# The model's core counts, and the share of a core the reactor-less parts
# (kernel networking, accept) are assumed to need per worker: none, which
# makes the model an upper bound (BENCHMARKS.md says why).
MODEL_CORES = (16, 64)


@dataclass(frozen=True)
class Plan:
    runs: int
    page_seconds: int
    download_seconds: int
    page_connections: int = 32
    download_connections: int = 8


FULL = Plan(runs=3, page_seconds=10, download_seconds=5)
QUICK = Plan(runs=1, page_seconds=3, download_seconds=2)


def server_cpu(target: cmp.Target, marker: str) -> float:
    """CPU seconds of the server: twistd, its workers, and its PostgreSQL (named by *marker*)."""
    procs = cmp.processes()
    roots = {target.process.pid} | {pid for pid, (_, cmd) in procs.items() if marker in cmd}
    return sum(cmp.cpu_seconds(pid) for pid in cmp.descendants(procs, roots))


def wrk_measured(ctx: cmp.Context, target: cmp.Target, marker: str, url: str,
                 connections: int, seconds: int) -> dict[str, float]:
    """One wrk run on *url*: its figures, the server's and wrk's CPU, other processes' CPU."""
    # wrk is a child of this process: its CPU shows in RUSAGE_CHILDREN.
    client_before = os.times().children_user + os.times().children_system
    before = server_cpu(target, marker)
    parent_before = cmp.cpu_seconds(target.process.pid)
    with cmp.NoiseMeter(str(ctx.work)) as noise:
        wrk = cmp.run_wrk(ctx, url, 2, connections, seconds)
    server = server_cpu(target, marker) - before
    # With workers, the twistd process only relays their log lines (one
    # access line per request): its own cost bounds what any core count gives.
    parent = cmp.cpu_seconds(target.process.pid) - parent_before
    client = os.times().children_user + os.times().children_system - client_before
    return {"rps": wrk.rps, "mbps": wrk.mbps, "p50_ms": wrk.p50_ms, "p99_ms": wrk.p99_ms,
            "requests": wrk.requests, "seconds": wrk.seconds,
            "server_cpu_s": server, "client_cpu_s": client,
            "server_cpu_ms_per_request": 1e3 * server / wrk.requests,
            "parent_cpu_ms_per_request": 1e3 * parent / wrk.requests,
            "client_cpu_ms_per_request": 1e3 * client / wrk.requests,
            "noise_cores": noise.cores}


def start(ctx: cmp.Context, workers: int, corpus: cmp.Corpus) -> cmp.Target:
    folder = ctx.work / f"workers-{workers}"
    target = cmp.start_pypireg(ctx, folder, server_config=f"workers = {workers}\n")
    took = cmp.load_dists(target, corpus.all)
    cmp.log(f"workers = {workers}: loaded {len(corpus.all)} files in {took:.1f} s")
    cmp.wait_idle(target.process.pid, f"workers = {workers}")
    return target


def check_workers(target: cmp.Target, workers: int) -> int:
    """How many pypireg.worker processes run under the target (0 for workers = 1)."""
    procs = cmp.processes()
    below = cmp.descendants(procs, {target.process.pid}) - {target.process.pid}
    running = sum(1 for pid in below if "pypireg.worker" in procs[pid][1])
    expected = workers if workers > 1 else 0
    if running != expected:
        raise RuntimeError(f"workers = {workers}: {running} worker processes, not {expected}")
    return running


Measure = Callable[[cmp.Target], dict[str, float]]


def measurements(ctx: cmp.Context, plan: Plan, marker: Callable[[cmp.Target], str]
                 ) -> dict[str, Measure]:
    def page(path: str) -> Measure:
        def measure(target: cmp.Target) -> dict[str, float]:
            url = target.simple_url + path
            cmp.check_page(target, url, 100)
            cmp.http_get(url)  # cached from here on (by each worker as it serves it)
            return wrk_measured(ctx, target, marker(target), url, plan.page_connections,
                                plan.page_seconds)
        return measure

    def download(target: cmp.Target) -> dict[str, float]:
        url = cmp.file_url(target, "dl-1mib")
        return wrk_measured(ctx, target, marker(target), url, plan.download_connections,
                            plan.download_seconds)

    return {"project_page": page(""), "package_page": page("bench-many/"),
            "download_1mib": download}


def model(med: dict[str, float]) -> dict[str, float]:
    """Throughput on 16 and 64 server cores from the per-request CPU measured with 2 workers.

    The smaller of: cores / (CPU seconds per request), the workers' share
    (the load generator elsewhere); and 1 / (the parent's CPU seconds per
    request), since the one parent relays every worker's log lines. An
    upper bound: it assumes the work per request stays what it is here and
    that nothing else limits (no NIC, no lock, the kernel spreading
    connections evenly).
    """
    out: dict[str, float] = {}
    for figure, unit in (("project_page", "rps"), ("package_page", "rps"),
                         ("download_1mib", "mbps")):
        cost = med.get(f"w2.{figure}.server_cpu_ms_per_request")
        if not cost:
            continue
        parent = med.get(f"w2.{figure}.parent_cpu_ms_per_request", 0.0)
        ceiling = 1e3 / parent if parent else float("inf")
        out[f"model.{figure}.parent_ceiling.rps"] = ceiling
        for cores in MODEL_CORES:
            value = min(1e3 / cost * cores, ceiling)
            out[f"model.{figure}.{cores}cores.rps"] = value
            if unit == "mbps":
                out[f"model.{figure}.{cores}cores.mbps"] = value * cmp.MIB / 1e6
    return out


def render(plan: Plan, runs: dict[str, list[float]], med: dict[str, float]) -> str:
    def cell(key: str, fmt: str = "{:.0f}") -> str:
        if key not in med:
            return "n/a"
        values = runs[key]
        spread = f" ({fmt.format(min(values))}-{fmt.format(max(values))})" \
            if len(values) > 1 else ""
        return fmt.format(med[key]) + spread

    rows = ["| figure | workers = 1 | workers = 2 | 2 vs 1 |", "|---|---|---|---|"]
    for figure, unit, label in (("project_page", "rps", "cached project page, req/s"),
                                ("package_page", "rps", "cached package page (100 files), "
                                                        "req/s"),
                                ("download_1mib", "mbps", "1 MiB download, MB/s")):
        one, two = med.get(f"w1.{figure}.{unit}"), med.get(f"w2.{figure}.{unit}")
        ratio = f"{two / one:.2f}x" if one and two else "n/a"
        rows.append(f"| {label} | {cell(f'w1.{figure}.{unit}')} | "
                    f"{cell(f'w2.{figure}.{unit}')} | {ratio} |")
        if unit == "rps":
            rows.append(f"| … p50 / p99 ms | {cell(f'w1.{figure}.p50_ms', '{:.2f}')} / "
                        f"{cell(f'w1.{figure}.p99_ms', '{:.2f}')} | "
                        f"{cell(f'w2.{figure}.p50_ms', '{:.2f}')} / "
                        f"{cell(f'w2.{figure}.p99_ms', '{:.2f}')} | |")
        rows.append(f"| … server CPU ms per request | "
                    f"{cell(f'w1.{figure}.server_cpu_ms_per_request', '{:.3f}')} | "
                    f"{cell(f'w2.{figure}.server_cpu_ms_per_request', '{:.3f}')} | |")
        rows.append(f"| … of which the parent | | "
                    f"{cell(f'w2.{figure}.parent_cpu_ms_per_request', '{:.3f}')} | |")
        rows.append(f"| … wrk CPU ms per request | "
                    f"{cell(f'w1.{figure}.client_cpu_ms_per_request', '{:.3f}')} | "
                    f"{cell(f'w2.{figure}.client_cpu_ms_per_request', '{:.3f}')} | |")
        rows.append(f"| … other processes, cores | {cell(f'w1.{figure}.noise_cores', '{:.2f}')}"
                    f" | {cell(f'w2.{figure}.noise_cores', '{:.2f}')} | |")
    rows += ["", "| model (server CPU only) | 16 cores | 64 cores | the parent's ceiling, req/s |",
             "|---|---|---|---|"]
    for figure, label in (("project_page", "cached project page, req/s"),
                          ("package_page", "cached package page, req/s"),
                          ("download_1mib", "1 MiB downloads, MB/s")):
        unit = "mbps" if figure.startswith("download") else "rps"
        rows.append(f"| {label} | {cell(f'model.{figure}.16cores.{unit}')} | "
                    f"{cell(f'model.{figure}.64cores.{unit}')} | "
                    f"{cell(f'model.{figure}.parent_ceiling.rps')} |")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="repetitions (full: 3, quick: 1)")
    parser.add_argument("--quick", action="store_true", help="1 run, 2- and 3-second wrk runs")
    parser.add_argument("--pypireg-venv", type=Path, default=Path(sys.prefix),
                        help="venv with pypireg (twistd, pypireg) (default: the one running "
                             "this script)")
    parser.add_argument("--output-dir", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp folder, "
                        "removed at the end)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    plan = Plan(runs=args.runs or base.runs, page_seconds=base.page_seconds,
                download_seconds=base.download_seconds)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, cmp._interrupt)
    # No pinning: workers = 2 needs both cores, and the client shares them.
    pin = cmp.Pinning(0, 1)
    pin.enabled = False
    work = args.work or Path(tempfile.mkdtemp(prefix="pypireg-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the embedded PostgreSQL's user walks down into it
    started = time.monotonic()
    runs: dict[str, list[float]] = {}
    errors: list[dict[str, str]] = []
    info: dict[str, Any] = {}
    with ExitStack() as stack:
        if args.work is None:
            stack.callback(shutil.rmtree, work, True)
        ctx = cmp.Context(args, cmp.QUICK, work, pin, args.pypireg_venv, work, stack)
        info = cmp.machine_info(ctx)
        corpus = cmp.build_corpus(work / "corpus", cmp.QUICK, work)
        targets = {n: start(ctx, n, corpus) for n in SETTINGS}
        for n, target in targets.items():
            info[f"worker_processes_w{n}"] = check_workers(target, n)
        marker = {id(t): str(t.extra["storage"]) for t in targets.values()}
        measures = measurements(ctx, plan, lambda t: marker[id(t)])
        try:
            for run in range(1, plan.runs + 1):
                for figure, measure in measures.items():
                    # Alternating within each run: drift lands on both alike.
                    for n, target in targets.items():
                        try:
                            for key, value in measure(target).items():
                                runs.setdefault(f"w{n}.{figure}.{key}", []).append(value)
                            r = runs[f"w{n}.{figure}.rps"][-1]
                            cmp.log(f"run {run} workers = {n} {figure}: {r:.0f} req/s, "
                                    f"{runs[f'w{n}.{figure}.mbps'][-1]:.0f} MB/s, noise "
                                    f"{runs[f'w{n}.{figure}.noise_cores'][-1]:.2f} cores")
                        except Exception as e:
                            errors.append({"what": f"workers = {n} {figure} run {run}",
                                           "error": str(e)[:2000]})
                            cmp.log(f"FAILED workers = {n} {figure}: {e}")
        except KeyboardInterrupt as e:
            errors.append({"what": "the run: interrupted, the figures so far are kept",
                           "error": repr(e)})
    med = {k: cmp.median(v) for k, v in runs.items()}
    modelled = model(med)
    med.update(modelled)
    runs.update({k: [v] for k, v in modelled.items()})
    elapsed = time.monotonic() - started
    lines = [f"pypireg workers benchmark, {info.get('date_utc')}, {plan.runs} run(s), medians "
             f"(min-max); {elapsed / 60:.1f} min; {info.get('cpus')} cpus ({info.get('cpu')}), "
             "nothing pinned, wrk on the same machine", "", render(plan, runs, med)]
    for err in errors:
        lines.append(f"\nFAILED {err['what']}: {err['error']}")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    cmp.write_results(args, "workers", {
        "machine": info, "plan": asdict(plan), "runs": runs, "medians": med, "errors": errors,
        "elapsed_s": round(elapsed, 1)}, report)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
