"""`pypireg upstream status [PROJECT] [--name NAME]`: the upstreams, the cache, the blocks.

Composition layer. The report has four parts: the configured upstreams and
which indexes include them; the cached pages (per upstream and name, shared
by every project) with their files and how often they were downloaded; the cache's size against
`proxy.max_cache_size`; and, for a project, its blocks. An upstream is
shown by its name, URL and timings only: its headers and credentials are
secrets (config.py keeps them out of `repr` for the same reason).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pypireg.admin import index_upstreams
from pypireg.admin.context import CommandContext, Subparsers, add_command
from pypireg.admin.names import package_name
from pypireg.admin.output import duration, iso, render, size, table
from pypireg.config import Config, UpstreamConfig
from pypireg.storage import upstream_cache as cache
from pypireg.storage.projects import Project
from pypireg.storage.upstream_cache import Block, CachedPage, FileTotals, IndexUpstreams

# Long upstream errors are cut in the table; --json has them whole.
_ERROR_WIDTH = 60
_NO_FILES = FileTotals(0, 0)


def add_parser(upstream: Subparsers) -> None:
    status = add_command(upstream, "status", status_report,
                         help="the configured upstreams, the cached pages and the cache size; "
                              "with PROJECT, only the pages of the upstreams it includes, and "
                              "its blocks")
    status.add_argument("project", nargs="?", help="project path or id")
    status.add_argument("--name", help="only this package name")


async def status_report(ctx: CommandContext, args: argparse.Namespace) -> str:
    """The `upstream status` handler."""
    project = await ctx.project(args.project) if args.project is not None else None
    names = None if args.name is None else [package_name(args.name)]
    data = await _gather(ctx, project, names)
    return render(ctx.as_json, data, _text(data))


async def _gather(ctx: CommandContext, project: Project | None, names: list[str] | None
                  ) -> dict[str, Any]:
    """The report as JSON data; the text is made from it."""
    indexes = await cache.all_index_upstreams(ctx.db)
    pages = await cache.list_pages(ctx.db, names)
    files = await cache.file_totals(ctx.db, names)
    total = await cache.cache_totals(ctx.db)
    data: dict[str, Any] = {
        "upstreams": [_upstream_row(u, indexes) for u in ctx.config.upstreams],
        "cache": {"files": total.files, "bytes": total.bytes,
                  "max_bytes": ctx.config.proxy.max_cache_size}}
    scope = indexes
    if project is not None:
        scope = [i for i in indexes if i.kind == "project" and i.id == project.id]
        stored = scope[0].upstreams if scope else None
        included = [u.name for u in index_upstreams.in_use(ctx.config, stored)]
        pages = [p for p in pages if p.upstream in included]
        blocks = [b for b in await cache.list_blocks(ctx.db, project.id)
                  if names is None or b.name in names]
        data["project"] = {"path": project.path, "upstreams": stored, "includes": included}
        data["blocks"] = [_block_row(b) for b in blocks]
    data["warnings"] = _unconfigured(ctx.config, scope)
    data["pages"] = [_page_row(p, files.get((p.upstream, p.name), _NO_FILES)) for p in pages]
    return data


def _text(data: dict[str, Any]) -> str:
    parts = [_upstreams_text(data["upstreams"])]
    project = data.get("project")
    if project is not None:
        parts.append(_includes_text(project))
    parts += [f"Warning: {w}" for w in data["warnings"]]
    parts.append(_pages_text(data["pages"]))
    totals = data["cache"]
    files = f"{totals['files']} file{'' if totals['files'] == 1 else 's'}"
    parts.append(f"Cache, shared by every project: {files}, {size(totals['bytes'])} of "
                 f"{size(totals['max_bytes'])} (proxy.max_cache_size).")
    if project is not None:
        parts.append(_blocks_text(project["path"], data["blocks"]))
    return "\n\n".join(parts)


def _includes_text(project: dict[str, Any]) -> str:
    path, stored, included = project["path"], project["upstreams"], ", ".join(project["includes"])
    if stored is None:
        return (f"{path} includes every configured upstream (the default): "
                f"{included or 'none is configured'}.")
    if not stored:
        return f"{path} includes no upstream."
    return f"{path} includes, in this order: {included or 'none that is configured'}."


def _upstream_row(u: UpstreamConfig, indexes: Sequence[IndexUpstreams]) -> dict[str, Any]:
    # Named field by field: never headers, username, password or token.
    using = [i for i in indexes if i.upstreams is None or u.name in i.upstreams]
    return {"name": u.name, "url": u.url, "ttl": u.ttl, "timeout": u.timeout,
            "offline": u.offline, "min_age": u.min_age,
            "projects": [i.path for i in using if i.kind == "project"],
            "groups": [i.path for i in using if i.kind == "group"]}


def _upstreams_text(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ("No upstreams are configured: add [[upstreams]] to the daemon's config (and "
                "give it with --config).")
    return "Upstreams:\n" + table(
        [(r["name"], r["url"], duration(r["ttl"]), duration(r["timeout"]),
          "yes" if r["offline"] else "no", duration(r["min_age"]),
          ", ".join(r["projects"]), ", ".join(r["groups"])) for r in rows],
        ["UPSTREAM", "URL", "TTL", "TIMEOUT", "OFFLINE", "MIN AGE", "PROJECTS", "GROUPS"])


def _unconfigured(config: Config, indexes: Sequence[IndexUpstreams]) -> list[str]:
    """A warning for each index naming an upstream the config does not have (any more)."""
    known = {u.name for u in config.upstreams}
    warnings = []
    for i in indexes:
        for name in (i.upstreams or ()):
            if name not in known:
                warnings.append(f"{i.kind} {i.path} lists the upstream {name!r}, "
                                f"which is not configured, and skips it; `pypireg {i.kind} "
                                f"update {i.path} --upstreams …` fixes its list.")
    return warnings


def _checked(value: datetime) -> str | None:
    # '-infinity' (psycopg2's datetime.min): never checked, or reset by
    # `upstream refresh`; the next request asks the upstream.
    return None if value.replace(tzinfo=None) == datetime.min else iso(value)


def _page_row(p: CachedPage, files: FileTotals) -> dict[str, Any]:
    return {"upstream": p.upstream, "name": p.name, "state": p.state, "files": files.files,
            "bytes": files.bytes, "downloads": files.downloads, "fetched_at": iso(p.fetched_at),
            "checked_at": _checked(p.checked_at), "error": p.error, "error_at": iso(p.error_at)}


def _pages_text(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "No cached pages."
    return "Cached pages:\n" + table(
        [(r["upstream"], r["name"], r["state"], r["files"], size(r["bytes"]), r["downloads"],
          r["checked_at"] or "due", _cut(r["error"]), r["error_at"]) for r in rows],
        ["UPSTREAM", "NAME", "STATE", "FILES", "SIZE", "DOWNLOADS", "CHECKED", "ERROR",
         "ERROR AT"])


def _cut(error: str | None) -> str | None:
    if error is None or len(error) <= _ERROR_WIDTH:
        return error
    return error[:_ERROR_WIDTH - 1] + "…"


def _block_row(b: Block) -> dict[str, Any]:
    return {"name": b.name, "version": b.version, "reason": b.reason,
            "created_at": iso(b.created_at)}


def _blocks_text(path: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return f"No blocks in {path}."
    return f"Blocks in {path}:\n" + table(
        [(r["name"], r["version"] or "(every release)", r["reason"], r["created_at"])
         for r in rows], ["NAME", "VERSION", "REASON", "CREATED"])
