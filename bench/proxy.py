"""Installing through an upstream proxy: pypireg and devpi-server beside the upstream itself.

Standalone benchmark, run by hand; not part of the test suite. Stdlib only,
like bench/compare.py, whose servers, pinning and measuring tools it reuses
(run it from the repository root):

    python bench/proxy.py --runs 3      # full run, 15 minutes on a quiet machine
    python bench/proxy.py --quick       # 1 run, 1 warm install each, under 3 minutes

What it does, in order:

1. Generates the upstream (the same bytes on every run, no network): 80
   packages in four layers (20 top-level `bx-app-NN`, which the clients
   install, and the `bx-core`, `bx-util` and `bx-base` packages they depend
   on), 2 to 6 versions each, with `Requires-Dist` ranges that cap some
   packages below their newest version, a few newest versions yanked or
   needing Python >= 3.99, so that resolution has choices to make. Real
   wheels (METADATA, WHEEL, RECORD, 2 to 8 modules, 2 KiB to 3 MiB of
   source), with their PEP 658 `.metadata` files, in a static PEP 503 tree
   (`data-core-metadata`, `data-requires-python`, `data-yanked`) that also
   has a PEP 691 JSON page beside every HTML page; nginx picks one by the
   `Accept` header (`--html-only`: HTML for everyone).
2. Starts nginx on that tree (pinned to the server core, like every server):
   the upstream, and "direct" for the clients.
3. For each run and each client tool (uv, pip): installs the 20 top-level
   packages with their dependencies into a new venv
   - directly from nginx (before each server's turn: --repeats times),
   - through a new devpi-server (`devpi-init`, then a mirror index
     `root/mirror` whose `mirror_url` is nginx's simple/): cold (its first
     install, empty cache) then warm (--repeats more installs, each into
     another new venv),
   - through a new pypireg (new storage folder and embedded PostgreSQL,
     nginx as its `[[upstreams]]`, a public project `bench`): cold, then warm.
   uv runs with `--no-cache`, pip with `--no-cache-dir`, and neither reads
   a user config, so the client never helps itself. Each install first
   waits (up to --quiet-wait seconds) for other processes to go quiet, and
   a direct or warm one that they disturbed anyway is taken again
   (--retries); the machine may be shared. Every install is checked
   against the versions the generator meant to be chosen; then every page the
   proxy served is compared with the upstream's (files, hashes, yanks,
   requires-python, core metadata) and every installed file is downloaded
   again from the proxy's cache and compared byte for byte.
4. Serving (after the uv warm installs, each run): `wrk` on the page of the
   package with the most files, on its installed wheel and on that wheel's
   `.metadata`, as pypireg serves them from its upstream cache, as a local
   project holding the same wheels (uploaded) serves them, and from devpi's
   mirror and nginx.
5. Prints the tables (medians over runs; ratios to direct and to devpi;
   the issue's targets) and writes them with every per-run value to
   `bench/results/proxy-<UTC time>.{md,json}`.

BENCHMARKS.md ("Proxy") describes the figures and the last results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import http.client
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import compare as cmp  # bench/compare.py: this script's folder is on sys.path

HERE = Path(__file__).resolve().parent
TOOLS = ("uv", "pip")
SERVERS = ("direct", "devpi", "pypireg")
SEED = "pypireg proxy benchmark, corpus 1"
# (layer, how many packages); a package depends only on later layers.
LAYERS = (("app", 20), ("core", 25), ("util", 20), ("base", 15))
UPLOAD_TIME = "2025-01-01T00:00:00.000000Z"
PROXY_PROJECT = "bench"
LOCAL_PROJECT = "local"


@dataclass(frozen=True)
class Plan:
    runs: int
    tools: tuple[str, ...]
    page_seconds: int
    file_seconds: int
    # Warm installs per new server, and direct installs before each server's turn.
    repeats: int


FULL = Plan(runs=3, tools=TOOLS, page_seconds=10, file_seconds=5, repeats=3)
QUICK = Plan(runs=1, tools=TOOLS, page_seconds=3, file_seconds=2, repeats=1)


# --- the upstream corpus ------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One wheel of the upstream, with what its index page says of it."""

    name: str
    version: str
    requires: tuple[str, ...]
    requires_python: str
    yanked: str | None
    dist: cmp.Dist
    sha256: str
    metadata_sha256: str

    @property
    def filename(self) -> str:
        return self.dist.path.name


@dataclass
class Upstream:
    folder: Path
    releases: dict[str, list[Release]]  # normalised name -> releases, oldest first
    top: list[str]  # what the clients install
    expected: dict[str, str]  # what they should end up with: name -> version
    digest: str  # over every file's sha256: the same corpus gives the same digest

    @property
    def files(self) -> int:
        return sum(len(r) for r in self.releases.values())


def normalise(name: str) -> str:
    """PEP 503 normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _module_source(rng: random.Random, size: int) -> bytes:
    """About *size* bytes of Python that compresses about as well as real code (2-3x)."""
    lines, total, i = [], 0, 0
    words = ("value", "count", "index", "buffer", "result", "state", "config", "item")
    while total < size:
        line = (f"def {rng.choice(words)}_{i}(x, y={rng.randrange(1000)}):\n"
                f"    return x * {rng.getrandbits(48):#x} + y  # {rng.getrandbits(64):016x}\n")
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()


def _allows(spec: str, version: str) -> bool:
    """Whether *version* meets *spec*: only the `>=`, `<` and `!=` clauses written here."""
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, bound = re.match(r"(>=|<|!=)(.+)", clause).groups()  # type: ignore[union-attr]
        v, b = _key(version), _key(bound)
        if (op == ">=" and v < b) or (op == "<" and v >= b) or (op == "!=" and v == b):
            return False
    return True


def plan_corpus(seed: str = SEED) -> tuple[dict[str, list[dict[str, Any]]], list[str],
                                            dict[str, str]]:
    """The packages, their versions and dependencies; no files yet.

    Returns (name -> release specs, top-level names, expected resolution).
    Every release of a package has the same dependencies, so what one
    package may resolve to never depends on another's choice: the newest
    version every edge allows (and that is neither yanked nor for a newer
    Python) is the one answer, whatever the resolver's order.
    """
    rng = random.Random(seed)
    layers = [[f"bx-{layer}-{i:02d}" for i in range(count)] for layer, count in LAYERS]
    versions: dict[str, list[str]] = {}
    for name in (n for layer in layers for n in layer):
        chosen: set[tuple[int, int, int]] = set()
        while len(chosen) < rng.randint(2, 6):
            chosen.add((rng.randint(0, 2), rng.randint(0, 12), rng.randint(0, 3)))
        versions[name] = [".".join(map(str, v)) for v in sorted(chosen)]
    # The version each package should end at: mostly its newest, sometimes an older one.
    target = {n: (vs[-1] if rng.random() < 0.6 else rng.choice(vs[:-1]))
              for n, vs in versions.items()}
    deps: dict[str, list[str]] = {n: [] for n in versions}
    for k, layer in enumerate(layers[:-1]):
        below = [n for later in layers[k + 1:] for n in later]
        nearest = layers[k + 1]
        for name in layer:
            count = rng.randint(1, 4)
            picks = {rng.choice(nearest if rng.random() < 0.7 else below) for _ in range(count)}
            deps[name] = sorted(picks)
    # Every package below the top has at least one dependent.
    for k, layer in enumerate(layers[1:], start=1):
        for name in layer:
            if not any(name in d for d in deps.values()):
                parent = rng.choice(layers[k - 1])
                deps[parent] = sorted({*deps[parent], name})
    # Edge specifiers: each allows the target; one edge per package caps it there.
    specs: dict[tuple[str, str], str] = {}
    capped: set[str] = set()
    for parent in sorted(deps):
        for child in deps[parent]:
            vs, t = versions[child], target[child]
            lower = rng.choice([v for v in vs if _key(v) <= _key(t)])
            clauses = [f">={lower}"] if rng.random() < 0.6 else []
            newer = [v for v in vs if _key(v) > _key(t)]
            if newer and child not in capped:
                clauses.append(f"<{newer[0]}")
                capped.add(child)
            others = [v for v in vs if v != t]
            if others and rng.random() < 0.15:
                clauses.append(f"!={rng.choice(others)}")
            specs[(parent, child)] = ",".join(clauses)
    # A few packages get an extra newest release that clients must pass over.
    extra: dict[str, tuple[str, str | None, str]] = {}
    for name in rng.sample(sorted(versions), 6):
        top = _key(versions[name][-1])
        version = f"{top[0] + 1}.0.0"
        if len(extra) % 2:
            extra[name] = (version, "broken release (benchmark)", ">=3.8")
        else:
            extra[name] = (version, None, ">=3.99")
    releases: dict[str, list[dict[str, Any]]] = {}
    for name, vs in versions.items():
        requires = []
        for child in deps[name]:
            # Some dependents spell the name un-normalised, as real metadata does.
            spelled = child.replace("-", "_").upper() if rng.random() < 0.1 else child
            requires.append(f"{spelled}{specs[(name, child)]}")
        size_class = rng.random()
        size = (rng.randint(2, 20) if size_class < 0.7 else
                rng.randint(20, 200) if size_class < 0.95 else rng.randint(1024, 3072)) * 1024
        modules = rng.randint(1, 7)
        entries = [{"version": v, "requires": requires, "yanked": None,
                    "requires_python": ">=3.8", "size": size, "modules": modules} for v in vs]
        if name in extra:
            version, yanked, python = extra[name]
            entries.append({"version": version, "requires": requires, "yanked": yanked,
                            "requires_python": python, "size": size, "modules": modules})
        releases[name] = entries
    # The expected answer: closure from the top, newest allowed version of each.
    edges_to: dict[str, list[str]] = {}
    for (_parent, child), spec in specs.items():
        edges_to.setdefault(child, []).append(spec)
    expected: dict[str, str] = {}
    todo = list(layers[0])
    while todo:
        name = todo.pop()
        if name in expected:
            continue
        allowed = [e["version"] for e in releases[name]
                   if e["yanked"] is None and e["requires_python"] == ">=3.8"
                   and all(_allows(s, e["version"]) for s in
                           (edges_to.get(name, []) if name not in layers[0] else []))]
        expected[name] = max(allowed, key=_key)
        todo.extend(deps[name])
    return releases, layers[0], expected


def build_upstream(folder: Path) -> Upstream:
    """The wheels, their `.metadata` files and the static index tree under *folder*."""
    specs, top, expected = plan_corpus()
    packages = folder / "packages"
    packages.mkdir(parents=True)
    releases: dict[str, list[Release]] = {}
    digest = hashlib.sha256()
    for name, entries in specs.items():
        for e in entries:
            rng = random.Random(f"{SEED}/{name}/{e['version']}")
            per = max(e["size"] // e["modules"], 256)
            modules = {"__init__.py": f"VERSION = {e['version']!r}\n".encode()}
            for m in range(e["modules"]):
                modules[f"part_{m}.py"] = _module_source(rng, per)
            dist = cmp.write_small_wheel(packages, name, e["version"], requires=e["requires"],
                                         requires_python=e["requires_python"], modules=modules)
            metadata = cmp.wheel_metadata(name, e["version"], e["requires"], e["requires_python"])
            (packages / f"{dist.path.name}.metadata").write_bytes(metadata)
            sha = hashlib.sha256(dist.path.read_bytes()).hexdigest()
            digest.update(f"{dist.path.name} {sha}\n".encode())
            releases.setdefault(name, []).append(Release(
                name, e["version"], tuple(e["requires"]), e["requires_python"], e["yanked"],
                dist, sha, hashlib.sha256(metadata).hexdigest()))
    upstream = Upstream(folder, releases, top, expected, digest.hexdigest()[:16])
    write_index_tree(folder / "simple", upstream)
    return upstream


def write_index_tree(simple: Path, upstream: Upstream) -> None:
    """simple/index.{html,json} and simple/<name>/index.{html,json} (PEP 503 and 691)."""
    simple.mkdir()
    head = "<!DOCTYPE html>\n<html>\n<head><title>{t}</title></head>\n<body>\n<h1>{t}</h1>\n"
    names = sorted(upstream.releases)
    (simple / "index.html").write_text(head.format(t="Simple index") + "".join(
        f'<a href="{n}/">{n}</a><br>\n' for n in names) + "</body>\n</html>\n")
    (simple / "index.json").write_text(json.dumps(
        {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}))
    for name, releases in upstream.releases.items():
        rows, files = [], []
        for r in releases:
            url = f"../../packages/{r.filename}"
            attrs = [f'href="{url}#sha256={r.sha256}"',
                     f'data-requires-python="{html.escape(r.requires_python)}"',
                     f'data-core-metadata="sha256={r.metadata_sha256}"',
                     f'data-dist-info-metadata="sha256={r.metadata_sha256}"']
            if r.yanked is not None:
                attrs.append(f'data-yanked="{html.escape(r.yanked)}"')
            rows.append(f"<a {' '.join(attrs)}>{r.filename}</a><br>\n")
            files.append({"filename": r.filename, "url": url, "hashes": {"sha256": r.sha256},
                          "requires-python": r.requires_python,
                          "core-metadata": {"sha256": r.metadata_sha256},
                          "dist-info-metadata": {"sha256": r.metadata_sha256},
                          "yanked": r.yanked if r.yanked is not None else False,
                          "size": r.dist.size, "upload-time": UPLOAD_TIME})
        (simple / name).mkdir()
        (simple / name / "index.html").write_text(
            head.format(t=f"Links for {name}") + "".join(rows) + "</body>\n</html>\n")
        (simple / name / "index.json").write_text(json.dumps(
            {"meta": {"api-version": "1.1"}, "name": name, "files": files,
             "versions": [r.version for r in releases]}))


# nginx: the JSON page for clients that ask for PEP 691 JSON, HTML for the rest
# (q-values are not weighed: every client here lists JSON only when it wants it).
NGINX_NEGOTIATION = r"""
    map $http_accept $simple_index {
        default index.html;
        "~application/vnd\.pypi\.simple\.v1\+json" index.json;
    }
"""
NGINX_SIMPLE_LOCATION = """
        location /simple/ {
            index $simple_index;
            add_header Vary Accept;
        }
"""
NGINX_JSON_TYPE = "application/vnd.pypi.simple.v1+json json;"


def start_upstream(ctx: cmp.Context, upstream: Upstream, html_only: bool) -> cmp.Target:
    if html_only:
        target = cmp.serve_static(ctx, ctx.work / "nginx", upstream.folder)
    else:
        target = cmp.serve_static(ctx, ctx.work / "nginx", upstream.folder,
                                  extra_http=NGINX_NEGOTIATION, extra_types=NGINX_JSON_TYPE,
                                  extra_server=NGINX_SIMPLE_LOCATION)
    target.name = "direct"
    target.notes = ("nginx, 1 worker, sendfile on, access log off: the static tree "
                    + ("(HTML only)" if html_only else
                       "(HTML, or PEP 691 JSON when the Accept header asks for it)"))
    return target


# --- the proxies ----------------------------------------------------------------------


def start_devpi_mirror(ctx: cmp.Context, folder: Path, upstream_url: str) -> cmp.Target:
    target = cmp.start_devpi_server(ctx, folder, "mirror",
                                    {"type": "mirror", "mirror_url": upstream_url},
                                    pin_now=True)
    target.notes = ("waitress (50 threads, its default), a new server folder per cold "
                    "install, index root/mirror of type mirror (mirror_url = nginx's "
                    "simple/; mirror_cache_expiry at its default)")
    return target


def start_pypireg_proxy(ctx: cmp.Context, folder: Path, upstream_url: str) -> cmp.Target:
    config = ("[[upstreams]]\n"
              'name = "public"\n'
              f'url = "{upstream_url}"\n'
              'ttl = "10m"\n'
              'timeout = "10s"\n')
    target = cmp.start_pypireg(ctx, folder, config)
    target.notes = ("twistd, embedded PostgreSQL, a new storage folder per cold install, "
                    "nginx as [[upstreams]] \"public\" (ttl 10m), public project "
                    f"{PROXY_PROJECT!r} (every project includes the configured upstreams)")
    return target


def log_problems(path: Path, limit: int = 5) -> list[str]:
    """Lines of a server log that look like failures (for the report, never fatal)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    found = [ln.strip() for ln in text.splitlines()
             if re.search(r"Traceback|Unhandled|CRITICAL|\bERROR\b|\berror\b", ln)]
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


# --- installing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    seconds: float
    installed: dict[str, str]
    server_cpu_s: float
    noise_cores: float


def fresh_venv(ctx: cmp.Context, label: str) -> Path:
    venv = ctx.work / "clients" / label
    venv.parent.mkdir(exist_ok=True)
    cmp.run_checked([str(ctx.pypireg_bin / "uv"), "venv", "--no-config", "--quiet",
                     "--python", str(ctx.pypireg_bin / "python"), str(venv)],
                    timeout=120, env=cmp.clean_env(UV_PYTHON_DOWNLOADS="never"))
    return venv


def installed_versions(venv: Path) -> dict[str, str]:
    out = {}
    for meta in venv.glob("lib/python*/site-packages/*.dist-info/METADATA"):
        fields = dict(ln.split(": ", 1) for ln in meta.read_text().splitlines()[:3]
                      if ": " in ln)
        out[normalise(fields["Name"])] = fields["Version"]
    return out


def install_command(ctx: cmp.Context, tool: str, venv: Path, index_url: str,
                    names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    python = venv / "bin" / "python"
    if tool == "uv":
        cmd = [str(ctx.pypireg_bin / "uv"), "pip", "install", "--no-config", "--no-cache",
               "--python", str(python), "--index-url", index_url, *names]
        env = cmp.clean_env(UV_NO_CACHE="1", UV_PYTHON_DOWNLOADS="never")
    else:
        cmd = [str(ctx.pypireg_bin / "python"), "-m", "pip", "--python", str(python),
               "install", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
               "--index-url", index_url, *names]
        env = cmp.clean_env(PIP_CONFIG_FILE=os.devnull)
    return cmd, env


def server_cpu(target: cmp.Target) -> float:
    """CPU seconds of *target*'s processes so far: the server, its children (nginx's
    worker) and, for pypireg, its embedded PostgreSQL (which pg_ctl detaches)."""
    procs = cmp.processes()
    marker = str(target.extra.get("storage", "")) or None
    roots = {target.watch_pid} | {pid for pid, (_, cmd) in procs.items()
                                  if marker is not None and marker in cmd}
    return sum(cmp.cpu_seconds(pid) for pid in cmp.descendants(procs, roots))


def wait_quiet(ctx: cmp.Context, limit: float) -> None:
    """Until processes that are not ours use under a tenth of a core for a second, or *limit*.

    The machine may be shared (other sessions' test suites): an install of
    half a second is easily doubled by a neighbour's burst.
    """
    deadline = time.monotonic() + limit
    last = ""
    while time.monotonic() < deadline:
        with cmp.NoiseMeter(str(ctx.work)) as noise:
            time.sleep(1.0)
        if noise.cores < cmp.NOISE_WARN_CORES:
            return
        last = f"{noise.cores:.2f} cores, {noise.top[:2]}"
    if last:
        cmp.log(f"  the machine was not quiet within {limit:.0f} s (last second: {last}); "
                "measuring anyway")


def timed_install(ctx: cmp.Context, tool: str, target: cmp.Target, upstream: Upstream,
                  label: str) -> Install:
    """Install the top-level packages into a new venv through *target*; check the result."""
    venv = fresh_venv(ctx, label)
    wait_quiet(ctx, ctx.args.quiet_wait)
    cmd, env = install_command(ctx, tool, venv, target.simple_url, upstream.top)
    try:
        cpu = server_cpu(target)
        with cmp.profiled(ctx, target, f"install-{label}"), \
                cmp.NoiseMeter(str(ctx.work)) as noise:
            start = time.perf_counter()
            cmp.run_checked(ctx.pin.client(cmd), timeout=600, env=env)
            seconds = time.perf_counter() - start
        used = server_cpu(target) - cpu
        installed = installed_versions(venv)
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    if installed != upstream.expected:
        wrong = sorted(set(installed.items()) ^ set(upstream.expected.items()))
        raise RuntimeError(f"{' '.join(cmd)}\ninstalled the wrong set: {len(installed)} "
                           f"packages, expected {len(upstream.expected)}; differences "
                           f"(name, version): {wrong[:12]}")
    noisy = (f"; NOTE: other processes used {noise.cores:.2f} cores: {noise.top[:2]}"
             if noise.cores > cmp.NOISE_WARN_CORES else "")
    cmp.log(f"  {target.name} {label}: {seconds:.2f} s ({len(installed)} packages; server "
            f"CPU {used:.2f} s{noisy})")
    return Install(seconds, installed, used, noise.cores)


def quiet_install(ctx: cmp.Context, tool: str, target: cmp.Target, upstream: Upstream,
                  label: str, results: Results) -> Install:
    """timed_install, again (up to --retries times) while other processes disturbed it.

    Only for installs that leave the server as they found it (direct, warm):
    a cold install cannot be taken again without a new server.
    """
    for attempt in range(ctx.args.retries + 1):
        done = timed_install(ctx, tool, target, upstream, f"{label}-{attempt}")
        if done.noise_cores <= cmp.NOISE_WARN_CORES or attempt == ctx.args.retries:
            return done
        results.discarded += 1
    raise AssertionError("unreachable")


# --- checking what a proxy served ----------------------------------------------------


class Links(HTMLParser):
    """The anchors of a simple page: (href, attributes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, dict[str, str | None], str]] = []
        self._open: tuple[str, dict[str, str | None]] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = dict(attrs)
            self._open = (found.get("href") or "", found)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((*self._open, "".join(self._text).strip()))
            self._open = None


JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


def get(url: str, accept: str | None = None) -> tuple[int, str, bytes]:
    """GET *url*: (status, content type, body)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("GET", parts.path, headers={"Accept": accept} if accept else {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class Listed:
    """One file as a simple page (HTML or JSON) lists it, in the HTML attributes' terms."""

    url: str  # absolute, without the fragment
    sha256: str | None
    requires_python: str | None
    yanked: str | None  # the reason ("" if none given), None if not yanked
    metadata: str | None  # "sha256=<hex>", "true", or None


def listed_html(page: str, body: bytes) -> dict[str, Listed]:
    parser = Links()
    parser.feed(body.decode(errors="replace"))
    out = {}
    for href, attrs, text in parser.links:
        fragment = urllib.parse.urlsplit(href).fragment
        out[text] = Listed(
            urllib.parse.urljoin(page, href.partition("#")[0]),
            fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None,
            attrs.get("data-requires-python"),
            (attrs.get("data-yanked") or "") if "data-yanked" in attrs else None,
            attrs.get("data-core-metadata") or attrs.get("data-dist-info-metadata"))
    return out


def listed_json(page: str, body: bytes) -> dict[str, Listed]:
    out = {}
    for f in json.loads(body)["files"]:
        yanked = f.get("yanked", False)
        metadata = f.get("core-metadata", f.get("dist-info-metadata"))
        if isinstance(metadata, dict):
            metadata = f"sha256={metadata['sha256']}" if "sha256" in metadata else "true"
        out[f["filename"]] = Listed(
            urllib.parse.urljoin(page, f["url"]), f.get("hashes", {}).get("sha256"),
            f.get("requires-python"),
            None if yanked is False else ("" if yanked is True else str(yanked)),
            "true" if metadata is True else (metadata or None))
    return out


def check_served(target: cmp.Target, upstream: Upstream) -> tuple[list[str], list[str]]:
    """How the proxy's pages and cached files differ from the upstream's.

    For each installed package, in HTML and (where the server offers it)
    PEP 691 JSON: its page lists every upstream file with the same sha256,
    requires-python, yank and core-metadata hash; the installed version's
    file and its core metadata, downloaded again (from the cache by now),
    have the upstream's bytes. Returns (differences, notes). Notes are what
    a client copes with: a file listed without its core metadata (the client
    reads the wheel instead), a yank without its reason, no JSON pages.
    """
    problems: list[str] = []
    counts = {"no core metadata": 0, "yank reason differs": 0, "no JSON page": 0}
    for name, version in sorted(upstream.expected.items()):
        page = f"{target.simple_url}{name}/"
        for accept in (None, JSON_ACCEPT):
            status, kind, body = get(page, accept)
            if status != 200:
                problems.append(f"{page} ({accept or 'no Accept'}): {status}")
                continue
            if accept is not None and "json" not in kind:
                counts["no JSON page"] += 1
                continue
            where = f"{page} ({'JSON' if accept else 'HTML'})"
            listed = listed_json(page, body) if accept else listed_html(page, body)
            for r in upstream.releases[name]:
                f = listed.get(r.filename)
                if f is None:
                    problems.append(f"{where}: {r.filename} missing")
                    continue
                if f.sha256 != r.sha256:
                    problems.append(f"{where}: {r.filename} sha256 {f.sha256!r}")
                if f.requires_python != r.requires_python:
                    problems.append(f"{where}: {r.filename} requires-python "
                                    f"{f.requires_python!r}")
                if (f.yanked is None) != (r.yanked is None):
                    problems.append(f"{where}: {r.filename} yanked {f.yanked!r}")
                elif f.yanked is not None and f.yanked != r.yanked:
                    counts["yank reason differs"] += 1
                if f.metadata is None:
                    counts["no core metadata"] += 1
                elif f.metadata != f"sha256={r.metadata_sha256}":
                    problems.append(f"{where}: {r.filename} core metadata {f.metadata!r}")
                if r.version != version or accept is not None:
                    continue
                got, _, data = get(f.url)
                if got != 200 or hashlib.sha256(data).hexdigest() != r.sha256:
                    problems.append(f"{f.url}: {got}, {len(data)} bytes, not the file")
                if f.metadata is not None:
                    got, _, data = get(f"{f.url}.metadata")
                    if got != 200 or hashlib.sha256(data).hexdigest() != r.metadata_sha256:
                        problems.append(f"{f.url}.metadata: {got}, {len(data)} bytes, not "
                                        "the core metadata")
            extra = set(listed) - {r.filename for r in upstream.releases[name]}
            if extra:
                problems.append(f"{where}: files the upstream does not have: "
                                f"{sorted(extra)[:5]}")
    notes = [f"{what}: {count} ({'pages' if what == 'no JSON page' else 'file entries'})"
             for what, count in counts.items() if count]
    return problems, notes


# --- page throughput --------------------------------------------------------------------


def page_name(upstream: Upstream) -> str:
    """The package with the most files and none yanked (a local copy can match it)."""
    candidates = [n for n, rs in upstream.releases.items() if all(r.yanked is None for r in rs)]
    return max(candidates, key=lambda n: (len(upstream.releases[n]), n))


def measure_serving(ctx: cmp.Context, simple_url: str, label: str, upstream: Upstream,
                    name: str) -> dict[str, float]:
    """wrk on *name*'s page (32 connections), then on its installed wheel and that
    wheel's core metadata (8 connections), as *simple_url* serves them."""
    page = f"{simple_url}{name}/"
    status, _, body = get(page)
    listed = listed_html(page, body)
    if status != 200 or len(listed) != len(upstream.releases[name]):
        raise RuntimeError(f"{page} gave {status} with {len(listed)} files, expected "
                           f"{len(upstream.releases[name])}")
    release = next(r for r in upstream.releases[name] if r.version == upstream.expected[name])
    file = listed[release.filename]
    urls = [("page", page, 32, ctx.plan.page_seconds),
            ("file", file.url, 8, ctx.plan.file_seconds)]
    if file.metadata is not None:
        urls.append(("metadata", f"{file.url}.metadata", 8, ctx.plan.file_seconds))
    metrics: dict[str, float] = {}
    for what, url, connections, seconds in urls:
        wrk = cmp.run_wrk(ctx, url, 2, connections, seconds)
        key = f"{what}.{label}"
        metrics.update({f"{key}.rps": wrk.rps, f"{key}.p50_ms": wrk.p50_ms,
                        f"{key}.p99_ms": wrk.p99_ms, f"{key}.kib": wrk.bytes / wrk.requests / 1024})
        cmp.log(f"  {what} {label}: {wrk.rps:,.0f} req/s, p50 {wrk.p50_ms:.2f} ms, p99 "
                f"{wrk.p99_ms:.2f} ms, {wrk.bytes / wrk.requests / 1024:.1f} KiB")
    return metrics


def local_copy(ctx: cmp.Context, proxy: cmp.Target, upstream: Upstream, name: str) -> str:
    """A second project holding *name*'s wheels, uploaded; its simple/ URL."""
    project_id = cmp.pypireg_admin(ctx, proxy, "project", "create", LOCAL_PROJECT, "--public")
    token = cmp.pypireg_admin(ctx, proxy, "token", "create", "--project", LOCAL_PROJECT,
                              "--scope", "write")
    api = f"{proxy.base}/api/v4/projects/{project_id}/packages/pypi"
    local = cmp.Target("pypireg", proxy.process, proxy.port, f"{api}/simple/", api, proxy.log,
                       "__token__", token, watch_pid=proxy.watch_pid)
    cmp.load_dists(local, [r.dist for r in upstream.releases[name]])
    return local.simple_url


# --- report ------------------------------------------------------------------------------


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


@dataclass
class Verdict:
    target: str
    figure: str
    value: float | None
    met: bool | None


def evaluate(plan: Plan, med: dict[str, float]) -> list[Verdict]:
    def ratio(a: str, b: str) -> float | None:
        x, y = med.get(a), med.get(b)
        return x / y if x is not None and y else None

    verdicts = []
    for tool in plan.tools:
        direct = f"{tool}.direct_s"
        warm = ratio(f"{tool}.pypireg.warm_s", direct)
        verdicts.append(Verdict(f"{tool}: pypireg warm ≤ 1.1x direct", f"x{fmt_ratio(warm)}",
                                warm, None if warm is None else warm <= 1.1))
        vs = ratio(f"{tool}.pypireg.warm_s", f"{tool}.devpi.warm_s")
        verdicts.append(Verdict(f"{tool}: pypireg warm faster than devpi warm",
                                f"x{fmt_ratio(vs)} of devpi's time", vs,
                                None if vs is None else vs < 1))
        cold = ratio(f"{tool}.pypireg.cold_s", direct)
        verdicts.append(Verdict(f"{tool}: pypireg cold ≤ 1.3x direct", f"x{fmt_ratio(cold)}",
                                cold, None if cold is None else cold <= 1.3))
    page = ratio("page.pypireg-cached.rps", "page.pypireg-local.rps")
    verdicts.append(Verdict("cached upstream page at the local page's req/s (≥ 0.9x)",
                            f"x{fmt_ratio(page)}", page, None if page is None else page >= 0.9))
    return verdicts


def render(plan: Plan, runs: dict[str, list[float]], med: dict[str, float], name: str,
           files: int) -> str:
    def get(key: str) -> str:
        return cmp.fmt(med.get(key))

    def ratio(a: str, b: str) -> str:
        x, y = med.get(a), med.get(b)
        return fmt_ratio(x / y if x is not None and y else None)

    rows = ["| install | unit | direct | devpi | pypireg | devpi ÷ direct | pypireg ÷ direct "
            "| pypireg ÷ devpi |", "|---|---|---|---|---|---|---|---|"]
    for tool in plan.tools:
        for phase in ("cold", "warm"):
            d, p = f"{tool}.devpi.{phase}_s", f"{tool}.pypireg.{phase}_s"
            rows.append(f"| {tool}, {phase} | s ↓ | {get(f'{tool}.direct_s')} | {get(d)} | "
                        f"{get(p)} | {ratio(d, f'{tool}.direct_s')} | "
                        f"{ratio(p, f'{tool}.direct_s')} | {ratio(p, d)} |")
        for phase in ("cold", "warm"):
            rows.append(f"|   server CPU (all its processes), {tool} {phase} | s ↓ | "
                        f"{get(f'{tool}.direct.cpu_s')} | {get(f'{tool}.devpi.{phase}.cpu_s')}"
                        f" | {get(f'{tool}.pypireg.{phase}.cpu_s')} | | | |")
    rows += ["", f"| serving {name} ({files} files) | req/s ↑ | p50 ms ↓ | p99 ms ↓ | KiB |",
             "|---|---|---|---|---|"]
    for what, title in (("page", "page, wrk -t2 -c32"), ("file", "installed wheel, -c8"),
                        ("metadata", "its .metadata, -c8")):
        for label, server in (("pypireg-cached", "pypireg, cached from the upstream"),
                              ("pypireg-local", "pypireg, local project (same wheels uploaded)"),
                              ("devpi", "devpi, mirror (cached)"),
                              ("direct", "nginx, static")):
            key = f"{what}.{label}"
            if f"{key}.rps" in med:
                rows.append(f"| {title}: {server} | {get(f'{key}.rps')} | "
                            f"{get(f'{key}.p50_ms')} | {get(f'{key}.p99_ms')} | "
                            f"{get(f'{key}.kib')} |")
    noise = [(k.removeprefix("noise."), v) for k, v in runs.items() if k.startswith("noise.")]
    if noise:
        rows += ["", "| installs | other processes' CPU, median | max | installs above "
                 f"{cmp.NOISE_WARN_CORES} cores |", "|---|---|---|---|"]
        for what, values in noise:
            above = sum(v > cmp.NOISE_WARN_CORES for v in values)
            rows.append(f"| {what} | {values and cmp.median(values):.2f} | {max(values):.2f} "
                        f"| {above} of {len(values)} |")
    return "\n".join(rows)


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="repetitions (full: 3, quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="1 run, 1 warm install per server, 3-second wrk runs")
    parser.add_argument("--repeats", type=int,
                        help="warm installs per new server, and direct installs before each "
                             "server's turn (full: 3)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated clients out of {','.join(TOOLS)}")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated setups out of {','.join(SERVERS)} "
                             "(direct is always measured: the ratios need it)")
    parser.add_argument("--quiet-wait", type=float,
                        help="before each install, wait up to this many seconds for other "
                             "processes to go quiet (full: 60, quick: 0, no wait)")
    parser.add_argument("--retries", type=int,
                        help="take a direct or warm install again, up to this many times, "
                             "while other processes used over a tenth of a core during it "
                             "(full: 2, quick: 0)")
    parser.add_argument("--html-only", action="store_true",
                        help="the upstream serves HTML pages only (no PEP 691 JSON)")
    parser.add_argument("--pypireg-venv", type=Path, default=Path(sys.prefix),
                        help="venv with pypireg (twistd, pypireg), pip and uv "
                             "(default: the one running this script)")
    parser.add_argument("--cache", type=Path, default=HERE / ".venvs",
                        help="where devpi-server's venv lives (default bench/.venvs, "
                             "shared with compare.py)")
    parser.add_argument("--refresh-peers", action="store_true",
                        help="reinstall devpi-server at its latest version")
    parser.add_argument("--output-dir", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp folder, "
                        "removed at the end)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample pypireg's twistd with py-spy during each install through "
                             "it, as compare.py --profile does: DIR/install-<tool>-<phase>-"
                             "….txt and .summary.txt (slows it down; do not compare the "
                             "figures of such a run)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for t in args.tools:
        if t not in TOOLS:
            parser.error(f"unknown tool {t!r}")
    for s in args.servers:
        if s not in SERVERS:
            parser.error(f"unknown setup {s!r}")
    return args


@dataclass
class Results:
    runs: dict[str, list[float]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    checks: dict[str, list[str]] = field(default_factory=dict)
    check_notes: dict[str, list[str]] = field(default_factory=dict)
    server_logs: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # Installs taken again because other processes used the machine meanwhile.
    discarded: int = 0

    def add(self, key: str, value: float) -> None:
        self.runs.setdefault(key, []).append(value)

    def fail(self, what: str, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        self.errors.append({"what": what, "error": text})
        cmp.log(f"  FAILED {what}: {text}")


def measure_proxy(ctx: cmp.Context, kind: str, tool: str, run: int, upstream: Upstream,
                  direct: cmp.Target, results: Results) -> None:
    """One fresh *kind* server: cold install, warm install, checks, pages (uv only)."""
    folder = ctx.work / f"{kind}-{tool}-{run}"
    starter: Callable[[cmp.Context, Path, str], cmp.Target] = (
        start_devpi_mirror if kind == "devpi" else start_pypireg_proxy)
    cmp.log(f"run {run}, {tool}: a new {kind}")
    try:
        target = starter(ctx, folder, direct.simple_url)
    except Exception as e:
        results.fail(f"{kind} start (run {run}, {tool})", e)
        return
    results.versions[kind] = target.versions
    results.notes[kind] = target.notes
    try:
        cmp.wait_idle(target.watch_pid, kind, timeout=120)
        for phase, repeat in [("cold", 0)] + [("warm", i) for i in range(ctx.plan.repeats)]:
            try:
                label = f"{tool}-{phase}-{run}-{repeat}"
                done = (timed_install(ctx, tool, target, upstream, label) if phase == "cold"
                        else quiet_install(ctx, tool, target, upstream, label, results))
            except Exception as e:
                results.fail(f"{kind} {tool} {phase} install (run {run})", e)
                return
            results.add(f"{tool}.{kind}.{phase}_s", done.seconds)
            results.add(f"{tool}.{kind}.{phase}.cpu_s", done.server_cpu_s)
            results.add(f"noise.{tool}.{kind}.{phase}", done.noise_cores)
            if phase == "cold":
                # Whatever the server still does after its first fetches is not
                # charged to the warm install.
                cmp.wait_idle(target.watch_pid, kind, timeout=60)
        try:
            problems, notes = check_served(target, upstream)
        except Exception as e:
            results.fail(f"{kind} {tool} check of the served pages (run {run})", e)
        else:
            results.checks[f"{kind} {tool} run {run}"] = problems
            results.check_notes[f"{kind} {tool} run {run}"] = notes
            if problems:
                cmp.log(f"  {kind}: {len(problems)} differences from the upstream, e.g. "
                        f"{problems[:3]}")
        if tool == "uv":
            name = page_name(upstream)
            label = "pypireg-cached" if kind == "pypireg" else "devpi"
            try:
                for key, value in measure_serving(ctx, target.simple_url, label, upstream,
                                                  name).items():
                    results.add(key, value)
                if kind == "pypireg":
                    url = local_copy(ctx, target, upstream, name)
                    cmp.wait_idle(target.watch_pid, kind, timeout=60)
                    for key, value in measure_serving(ctx, url, "pypireg-local", upstream,
                                                      name).items():
                        results.add(key, value)
            except Exception as e:
                results.fail(f"{kind} page throughput (run {run})", e)
    finally:
        if kind == "pypireg":
            cmp.stop_pypireg(target)
        else:
            cmp.stop_process(target.process, kind)
        problems = log_problems(target.log)
        if problems:
            results.server_logs[f"{kind} {tool} run {run}"] = problems


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds like Ctrl-C: every server stops


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    plan = Plan(runs=args.runs or base.runs, tools=tuple(args.tools),
                page_seconds=base.page_seconds, file_seconds=base.file_seconds,
                repeats=args.repeats or base.repeats)
    pin = cmp.Pinning(args.server_cpu, args.client_cpu)
    if pin.enabled:
        os.sched_setaffinity(0, {args.client_cpu})  # this process and its children
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk nginx-light", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        cmp.ensure_venv(args.cache / "tools", args.pypireg_venv / "bin" / "python", ["py-spy"],
                        refresh=False)
    work = args.work or Path(tempfile.mkdtemp(prefix="pypireg-proxy-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the embedded PostgreSQL's user and nginx walk down into it
    started = time.monotonic()
    results = Results()
    info: dict[str, Any] = {}
    with ExitStack() as stack:
        if args.work is None:
            stack.callback(shutil.rmtree, work, True)
        ctx = cmp.Context(args, plan, work, pin, args.pypireg_venv, args.cache, stack)
        info = cmp.machine_info(ctx)
        upstream = build_upstream(work / "upstream")
        closure = len(upstream.expected)
        cmp.log(f"upstream: {len(upstream.releases)} packages, {upstream.files} wheels, "
                f"{closure} installed from {len(upstream.top)} top-level names "
                f"(corpus {upstream.digest}, {time.monotonic() - started:.0f} s)")
        direct = start_upstream(ctx, upstream, args.html_only)
        results.versions["direct"] = direct.versions
        results.notes["direct"] = direct.notes
        name = page_name(upstream)
        # An interrupted run (Ctrl-C, SIGTERM) still reports what it measured.
        try:
            for run in range(1, plan.runs + 1):
                for tool in plan.tools:
                    for kind in ("devpi", "pypireg"):
                        for repeat in range(plan.repeats):
                            try:
                                done = quiet_install(ctx, tool, direct, upstream,
                                                     f"{tool}-direct-{run}-{kind}-{repeat}",
                                                     results)
                                results.add(f"{tool}.direct_s", done.seconds)
                                results.add(f"{tool}.direct.cpu_s", done.server_cpu_s)
                                results.add(f"noise.{tool}.direct", done.noise_cores)
                            except Exception as e:
                                results.fail(f"direct {tool} install (run {run})", e)
                        if kind in args.servers:
                            measure_proxy(ctx, kind, tool, run, upstream, direct, results)
                try:
                    for key, value in measure_serving(ctx, direct.simple_url, "direct", upstream,
                                                      name).items():
                        results.add(key, value)
                except Exception as e:
                    results.fail(f"direct page throughput (run {run})", e)
        except KeyboardInterrupt as e:
            results.fail("the run: interrupted, the figures so far are kept", e)

    med = {k: cmp.median(v) for k, v in results.runs.items()}
    verdicts = evaluate(plan, med)
    elapsed = time.monotonic() - started
    lines = [f"pypireg proxy benchmark, {info.get('date_utc')}, {plan.runs} run(s), medians; "
             f"{elapsed / 60:.1f} min; {closure} packages installed from "
             f"{len(upstream.top)} top-level names (corpus {upstream.digest}, "
             f"{upstream.files} wheels upstream"
             + (", HTML only" if args.html_only else ", HTML and PEP 691 JSON") + ")", "",
             render(plan, results.runs, med, name, len(upstream.releases[name])), "",
             "| target | figure | verdict |", "|---|---|---|"]
    for v in verdicts:
        verdict = "n/a" if v.met is None else ("met" if v.met else "MISSED")
        lines.append(f"| {v.target} | {v.figure} | {verdict} |")
    for what, problems in results.checks.items():
        if problems:
            lines.append(f"\nDIFFERENT from the upstream, {what} ({len(problems)}): "
                         + "; ".join(problems[:8]))
    if results.discarded:
        lines.append(f"\n{results.discarded} direct or warm installs were taken again: other "
                     f"processes used over {cmp.NOISE_WARN_CORES} cores meanwhile.")
    for what, notes in results.check_notes.items():
        if notes:
            lines.append(f"\nnote, {what}: " + "; ".join(notes))
    for what, problems in results.server_logs.items():
        lines.append(f"\nserver log, {what}: " + " | ".join(problems))
    for err in results.errors:
        lines.append(f"\nFAILED {err['what']}: {err['error']}")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.output_dir / f"proxy-{stamp}{'-quick' if args.quick else ''}.json"
    json_path.write_text(json.dumps({
        "machine": info,
        "plan": asdict(plan),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "corpus": {"digest": upstream.digest, "packages": len(upstream.releases),
                   "wheels": upstream.files, "top": upstream.top,
                   "expected": upstream.expected, "page": name},
        "servers": {k: {"versions": results.versions.get(k, {}), "notes": n}
                    for k, n in results.notes.items()},
        "runs": results.runs,
        "medians": med,
        "targets": [asdict(v) for v in verdicts],
        "checks": results.checks,
        "check_notes": results.check_notes,
        "server_logs": results.server_logs,
        "errors": results.errors,
        "discarded_noisy_installs": results.discarded,
        "elapsed_s": round(elapsed, 1),
    }, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(report)
    cmp.log(f"wrote {json_path} and {json_path.with_suffix('.md').name}")
    return 1 if results.errors or any(results.checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
