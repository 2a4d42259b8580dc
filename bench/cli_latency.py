"""Wall and CPU time of one `pypireg` admin command, run again and again (by hand, never in CI).

    python bench/cli_latency.py [--runs N] [--cwd DIR] -- pypireg --config FILE project list

Runs the command *N* times one after the other and prints the best and the
median wall time and CPU time (user + system, the command's and its
children's), with the load average: on a shared machine the other
processes move the wall time more than anything else, the CPU time much
less. The command's own output is discarded; a non-zero exit stops the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import time


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cwd", default=None, help="run the command in this folder")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    load_before = os.getloadavg()[0]
    walls, cpus = [], []
    for _ in range(args.runs):
        cpu, start = _children_cpu(), time.perf_counter()
        result = subprocess.run(command, cwd=args.cwd, capture_output=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu)
        if result.returncode != 0:
            raise SystemExit(f"exit {result.returncode}: {result.stderr.decode().strip()}")
    print(" ".join(command))
    print(f"  {args.runs} runs: wall best {min(walls):.3f} s, median "
          f"{statistics.median(walls):.3f} s; CPU best {min(cpus):.3f} s, median "
          f"{statistics.median(cpus):.3f} s (load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after)")


if __name__ == "__main__":
    main()
