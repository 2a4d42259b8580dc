"""Where one `pypireg` admin command spends its time, phase by phase (by hand, never in CI).

    python bench/cli_phases.py --config FILE [--runs N]

Does what `pypireg --config FILE project list` does, in this process, and
prints how long each phase took, the median of *N* fresh processes: the
reactor's import, the rest of the command's imports, building the parser
and parsing, finding the installation, opening the database (embedded
PostgreSQL start or reuse, connect, migrations check), the query, closing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_ONE_RUN = r"""
import json, os, sys, time
from pathlib import Path
marks = [("start", time.perf_counter())]
def mark(name): marks.append((name, time.perf_counter()))
from twisted.internet import reactor
mark("import the reactor")
from pypireg.admin import cli
from pypireg.admin.installation import find_installation
from pypireg.startup import open_database
from pypireg.storage import projects
mark("import the command")
args = cli.build_parser().parse_args(["--config", sys.argv[1], "project", "list"])
mark("build the parser, parse")
installation = find_installation(args.config, os.environ, Path.cwd())
installation.require_existing()
mark("find the installation")
from twisted.internet.defer import Deferred
from twisted.internet.task import react
async def main(reactor):
    opened = await open_database(reactor, installation.config, pool_size=1)
    mark("open the database")
    await projects.list_projects(opened.db)
    mark("the query")
    await opened.close()
    mark("close")
try:
    react(lambda r: Deferred.fromCoroutine(main(r)))
except SystemExit:
    pass
print(json.dumps([(b[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    runs: list[list[tuple[str, float]]] = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", _ONE_RUN, args.config], check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    for i, (name, _) in enumerate(runs[0]):
        print(f"  {name:28} {statistics.median(run[i][1] for run in runs) * 1000:6.1f} ms")
    total = statistics.median(sum(t for _, t in run) for run in runs)
    print(f"  {'total (median)':28} {total * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
