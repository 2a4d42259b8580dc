"""The README worker: renders one long description in a child process, then exits.

HTTP layer (the page's renderer, run out of process). readme.py starts it as

    python -P -m pypireg.http.web.readme_worker --memory BYTES --cpu SECONDS

and writes one JSON object to its stdin, `{"text": ..., "content_type": ...}`,
then closes it. The worker caps its own address space and CPU time, renders
with `render_description_how` (readme-renderer, sanitised as on PyPI) and
writes `{"html": ..., "how": "rendered" | "plain"}` to stdout. Any other
outcome (a traceback, MemoryError, a signal) is a non-zero exit, which the
daemon turns into escaped plain text.

Out of process because rendering a large README holds the GIL for seconds
(the daemon's reactor would stall with it) and leaves its peak heap behind
in the daemon; here the kernel takes both back when the process exits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

from pypireg.http.web.pages import render_description_how


def limit_resources(memory: int, cpu: int) -> None:
    """Cap this process before it reads a byte of the README."""
    # The address space, not the resident set: RLIMIT_RSS is not enforced
    # on Linux. docutils on a 1 MiB README peaks near 330 MiB of it.
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # The daemon kills us when its time budget runs out; this cap is for the
    # case where the daemon is gone and nobody is left to.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    # Yield the CPU to the daemon: its index requests must not wait for us.
    os.nice(10)


# Written as is when memory runs out: under the cap, even printing the
# traceback can fail half-way (Python then reports that instead), and the
# daemon logs the worker's last line of stderr as the reason.
_OUT_OF_MEMORY = b"MemoryError: rendering needed more memory than the worker's cap\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="readme_worker")
    parser.add_argument("--memory", type=int, required=True, help="address space cap, bytes")
    parser.add_argument("--cpu", type=int, required=True, help="CPU time cap, seconds")
    args = parser.parse_args(argv)
    limit_resources(args.memory, args.cpu)
    try:
        return _render()
    except MemoryError:
        os.write(2, _OUT_OF_MEMORY)
        # At once: unwinding further, or exiting normally, may need memory too.
        os._exit(1)


def _render() -> int:
    """Read the request from stdin, write the answer to stdout."""
    request = json.loads(sys.stdin.buffer.read())
    text, content_type = request["text"], request["content_type"]
    if not isinstance(text, str) or not isinstance(content_type, str | None):
        raise TypeError("expected a text and a content type")
    html, how = render_description_how(text, content_type)
    sys.stdout.buffer.write(json.dumps({"html": html, "how": how}, ensure_ascii=False)
                            .encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0


# Written without allocating: past the cap, even formatting a traceback can
# fail, and the daemon would log "Exception ignored in sys.unraisablehook".
_OUT_OF_MEMORY = b"MemoryError: the README needs more memory than the renderer may use\n"

if __name__ == "__main__":
    try:
        status = main()
    except MemoryError:
        os.write(2, _OUT_OF_MEMORY)
        os._exit(1)
    sys.exit(status)
