"""The upstream proxy's state: cached pages, fetched files, blocks, per-index upstreams.

Storage layer (schema/0013 says what each table is for). Pages are kept as
JSON documents in the shape the upstream package writes them; this module
does not look inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg2.extras import Json

from pypireg.domain.audit import Actor, Event
from pypireg.storage.audit import audited, fetch_all, fetch_one
from pypireg.storage.database import Cursor, Database

PageState = Literal["found", "missing", "pending"]
_PAGE_COLUMNS = ("upstream, name, state, page, etag, last_modified, last_serial, fetched_at,"
                 " checked_at, error, error_at, fetching_until")
_FILE_COLUMNS = ("sha256, upstream, name, filename, size, metadata_sha256, stored_at,"
                 " download_count")
_BLOCK_COLUMNS = "id, project_id, name, version, reason, created_at"

# The upstream cache holds copies: a crash that loses its last writes costs
# a refetch, never a file (a row still follows its blob's fsync, and a blob
# whose row was lost is collected as garbage). So its writes commit without
# waiting for the WAL flush, which a cold install would otherwise wait for
# on nearly every request. Never for what only the registry holds.
_COPY = "SET LOCAL synchronous_commit TO OFF; "


@dataclass(frozen=True)
class CachedPage:
    upstream: str
    name: str
    state: PageState
    page: dict[str, Any] | None
    etag: str | None
    last_modified: str | None
    last_serial: int | None
    fetched_at: datetime | None
    checked_at: datetime
    error: str | None
    error_at: datetime | None
    fetching_until: datetime | None


@dataclass(frozen=True)
class CachedFile:
    sha256: str
    upstream: str
    name: str
    filename: str
    size: int
    metadata_sha256: str | None
    stored_at: datetime
    # Downloads of it through every index (schema/0017), as last flushed.
    download_count: int = 0


@dataclass(frozen=True)
class Block:
    id: int
    project_id: int
    name: str
    version: str | None
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class NameRules:
    """What decides whether an index may serve *name* from an upstream."""

    # A project of the index has the name locally (uploaded, reserved, claimed).
    local: bool
    # The upstream a project of the index first served it from, if any.
    upstream: str | None
    # The name lies in a PEP 752 namespace (granted to anyone): never proxied.
    namespaced: bool
    # An admin hid the whole name in a project of the index.
    name_blocked: bool
    # Release keys (pypireg_release_key) hidden in a project of the index.
    blocked_versions: frozenset[str]
    # The index's own upstream list, when asked for; None: every configured one.
    index_upstreams: tuple[str, ...] | None = None


async def name_rules(db: Database, project_ids: Sequence[int], name: str, *,
                     project_id: int | None = None, group_id: int | None = None) -> NameRules:
    """The rules for *name* in the index of *project_ids*.

    With *project_id* or *group_id*, the same query also reads that
    index's own upstream list (NameRules.index_upstreams).
    """
    if project_id is not None or group_id is not None:
        assert (project_id is None) != (group_id is None)
        table = "projects" if project_id is not None else "groups"
        chosen = f"(SELECT upstreams FROM {table} WHERE id = %(i)s)"
    else:
        chosen = "NULL::text[]"
    row = await db.fetch_one(
        "SELECT EXISTS (SELECT 1 FROM name_origins WHERE project_id = ANY(%(p)s)"
        "               AND name = %(n)s AND origin = 'local'),"
        " (SELECT upstream FROM name_origins WHERE project_id = ANY(%(p)s) AND name = %(n)s"
        "  AND origin = 'upstream' ORDER BY decided_at, project_id LIMIT 1),"
        " EXISTS (SELECT 1 FROM namespaces WHERE %(n)s = prefix"
        "         OR starts_with(%(n)s, prefix || '-')),"
        " ARRAY(SELECT coalesce(pypireg_release_key(version), '') FROM upstream_blocks"
        "       WHERE project_id = ANY(%(p)s) AND name = %(n)s),"
        f" {chosen}",
        {"p": list(project_ids), "n": name,
         "i": project_id if project_id is not None else group_id})
    assert row is not None
    keys = frozenset(row[3])
    return NameRules(local=row[0], upstream=row[1], namespaced=row[2],
                     name_blocked="" in keys, blocked_versions=keys - {""},
                     index_upstreams=None if row[4] is None else tuple(row[4]))


async def get_page(db: Database, upstream: str, name: str) -> CachedPage | None:
    row = await db.fetch_one(
        f"SELECT {_PAGE_COLUMNS} FROM upstream_pages WHERE upstream = %s AND name = %s",
        (upstream, name))
    return CachedPage(*row) if row else None


async def take_fetch_lease(db: Database, upstream: str, name: str, seconds: float) -> bool:
    """Whether this process may ask the upstream now (no other fetch of the name is running).

    The lease ends by itself after *seconds* (a daemon that died mid-fetch).
    """
    row = await db.fetch_one(
        _COPY + "INSERT INTO upstream_pages AS u"
        " (upstream, name, state, checked_at, fetching_until)"
        " VALUES (%s, %s, 'pending', '-infinity', now() + %s * interval '1 second')"
        " ON CONFLICT (upstream, name) DO UPDATE"
        " SET fetching_until = now() + %s * interval '1 second'"
        " WHERE u.fetching_until IS NULL OR u.fetching_until < now()"
        " RETURNING 1", (upstream, name, seconds, seconds))
    return row is not None


async def store_fetched(db: Database, upstream: str, name: str, page: dict[str, Any], *,
                        etag: str | None, last_modified: str | None, last_serial: int | None
                        ) -> None:
    await db.execute(
        _COPY + "UPDATE upstream_pages SET state = 'found', page = %s, etag = %s,"
        " last_modified = %s, last_serial = %s, fetched_at = now(), checked_at = now(),"
        " error = NULL, error_at = NULL, fetching_until = NULL WHERE upstream = %s AND name = %s",
        (Json(page), etag, last_modified, last_serial, upstream, name))


async def store_not_modified(db: Database, upstream: str, name: str) -> None:
    await db.execute(
        _COPY + "UPDATE upstream_pages SET checked_at = now(), error = NULL, error_at = NULL,"
        " fetching_until = NULL WHERE upstream = %s AND name = %s", (upstream, name))


async def store_missing(db: Database, upstream: str, name: str) -> None:
    """The upstream answered 404: the name is left off (its cached files stay)."""
    await db.execute(
        _COPY + "UPDATE upstream_pages SET state = 'missing', page = NULL, etag = NULL,"
        " last_modified = NULL, checked_at = now(), error = NULL, error_at = NULL,"
        " fetching_until = NULL WHERE upstream = %s AND name = %s", (upstream, name))


async def store_error(db: Database, upstream: str, name: str, error: str) -> None:
    await db.execute(
        _COPY + "UPDATE upstream_pages SET error = %s, error_at = now(), fetching_until = NULL"
        " WHERE upstream = %s AND name = %s", (error[:500], upstream, name))


async def forget_page(db: Database, upstream: str, name: str) -> bool:
    """`pypireg upstream refresh`: the next request fetches the page anew.

    Returns:
        Whether there was a page to forget.
    """
    # The change trigger (schema/0015) sees checked_at go to -infinity:
    # daemons drop their in-memory copies at once.
    rows = await db.fetch_all("UPDATE upstream_pages SET checked_at = '-infinity', etag = NULL,"
                              " last_modified = NULL WHERE upstream = %s AND name = %s"
                              " RETURNING 1", (upstream, name))
    return bool(rows)


async def list_pages(db: Database, names: Sequence[str] | None = None) -> list[CachedPage]:
    if names is None:
        rows = await db.fetch_all(f"SELECT {_PAGE_COLUMNS} FROM upstream_pages"
                                  ' ORDER BY name COLLATE "C", upstream')
    else:
        rows = await db.fetch_all(f"SELECT {_PAGE_COLUMNS} FROM upstream_pages"
                                  ' WHERE name = ANY(%s) ORDER BY name COLLATE "C", upstream',
                                  (list(names),))
    return [CachedPage(*r) for r in rows]


async def get_file(db: Database, sha256: str) -> CachedFile | None:
    row = await db.fetch_one(f"SELECT {_FILE_COLUMNS} FROM upstream_files WHERE sha256 = %s",
                             (sha256,))
    return CachedFile(*row) if row else None


async def record_file(db: Database, sha256: str, *, upstream: str, name: str, filename: str,
                      size: int, metadata_sha256: str | None = None,
                      downloaded: bool = False) -> None:
    """A fetched file is in the blob store, verified: keep it.

    *downloaded*: it was fetched for a download, which counts (the first
    download of an upstream file is counted here, as its row does not exist
    before; later ones through `touch_files`).
    """
    await db.execute(
        _COPY + "INSERT INTO upstream_files AS u (sha256, upstream, name, filename, size,"
        " metadata_sha256, download_count) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (sha256) DO UPDATE"
        " SET metadata_sha256 = coalesce(EXCLUDED.metadata_sha256, u.metadata_sha256),"
        " last_download_at = now(), download_count = u.download_count + EXCLUDED.download_count",
        (sha256, upstream, name, filename, size, metadata_sha256, int(downloaded)))


async def touch_files(db: Database, touched: Sequence[tuple[str, int]]) -> None:
    """Downloads since the last flush: (sha256, downloads counted) pairs, one statement.

    Every file touched is marked just downloaded (for least-recently-downloaded
    eviction; a HEAD or a metadata fetch touches too, with a count of 0), and
    its count grows by what this daemon counted (additive: daemons add up).
    """
    if touched:
        await db.execute(
            "UPDATE upstream_files u SET last_download_at = now(),"
            " download_count = u.download_count + t.n"
            " FROM unnest(%s::text[], %s::bigint[]) AS t(sha256, n) WHERE u.sha256 = t.sha256",
            ([k for k, _ in touched], [n for _, n in touched]))


async def cached_files(db: Database, name: str | None = None) -> list[CachedFile]:
    if name is None:
        rows = await db.fetch_all(f"SELECT {_FILE_COLUMNS} FROM upstream_files ORDER BY sha256")
    else:
        rows = await db.fetch_all(f"SELECT {_FILE_COLUMNS} FROM upstream_files"
                                  " WHERE name = %s ORDER BY filename", (name,))
    return [CachedFile(*r) for r in rows]


@dataclass(frozen=True)
class FileTotals:
    """How many cached files, of how many bytes (metadata files not counted); their downloads."""

    files: int
    bytes: int
    downloads: int = 0


async def file_totals(db: Database, names: Sequence[str] | None = None
                      ) -> dict[tuple[str, str], FileTotals]:
    """The cached files of each (upstream, name), of *names* or of all."""
    query = ("SELECT upstream, name, count(*), coalesce(sum(size), 0),"
             " coalesce(sum(download_count), 0) FROM upstream_files")
    params: tuple[Any, ...] = ()
    if names is not None:
        query += " WHERE name = ANY(%s)"
        params = (list(names),)
    rows = await db.fetch_all(query + " GROUP BY upstream, name", params)
    return {(r[0], r[1]): FileTotals(int(r[2]), int(r[3]), int(r[4])) for r in rows}


async def cache_totals(db: Database) -> FileTotals:
    """Every cached file: what counts against `proxy.max_cache_size`."""
    row = await db.fetch_one("SELECT count(*), coalesce(sum(size), 0) FROM upstream_files")
    assert row is not None
    return FileTotals(int(row[0]), int(row[1]))


async def evict(db: Database, max_bytes: int) -> list[CachedFile]:
    """Forget the least recently downloaded files past *max_bytes* in all; the rows gone.

    Their blobs are removed by the caller (gc.remove_evicted), after this commits.
    """
    rows = await db.fetch_all(
        "DELETE FROM upstream_files WHERE sha256 IN ("
        " SELECT sha256 FROM (SELECT sha256, sum(size) OVER"
        "  (ORDER BY last_download_at DESC, sha256) AS running FROM upstream_files) AS kept"
        " WHERE running > %s)"
        f" RETURNING {_FILE_COLUMNS}", (max_bytes,))
    return [CachedFile(*r) for r in rows]


async def known_hashes(db: Database, upstream: str, urls: Sequence[str]) -> dict[str, str]:
    """The sha256s found for files whose page gives none, by their URL."""
    rows = await db.fetch_all("SELECT url, sha256 FROM upstream_hashes"
                              " WHERE upstream = %s AND url = ANY(%s)", (upstream, list(urls)))
    return {url: sha256 for url, sha256 in rows}


async def record_hash(db: Database, upstream: str, url: str, sha256: str, size: int) -> None:
    await db.execute(_COPY + "INSERT INTO upstream_hashes (upstream, url, sha256, size)"
                     " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (upstream, url, sha256, size))


async def purge(db: Database, name: str, *, actor: Actor | None = None) -> int:
    """`pypireg upstream purge`: forget a name's pages and files (blobs go with gc)."""

    async def change(cur: Cursor) -> int:
        await cur.execute("DELETE FROM upstream_pages WHERE name = %s", (name,))
        return len(await fetch_all(
            cur, "DELETE FROM upstream_files WHERE name = %s RETURNING sha256", (name,)))

    # The cache is shared by every project: the event belongs to none.
    return await audited(db, actor, change, lambda files: Event(
        "upstream.purge", "upstream_cache", None, name, details={"files": files}))


async def blocks(db: Database, project_id: int, name: str) -> list[Block]:
    rows = await db.fetch_all(
        f"SELECT {_BLOCK_COLUMNS} FROM upstream_blocks"
        " WHERE project_id = %s AND name = %s ORDER BY id", (project_id, name))
    return [Block(*r) for r in rows]


async def list_blocks(db: Database, project_id: int) -> list[Block]:
    """Every block of a project, by name (`pypireg upstream status`)."""
    rows = await db.fetch_all(
        f"SELECT {_BLOCK_COLUMNS} FROM upstream_blocks WHERE project_id = %s"
        ' ORDER BY name COLLATE "C", id', (project_id,))
    return [Block(*r) for r in rows]


def _block_event(action: str, project_id: int, name: str, version: str | None,
                 block_ids: list[tuple[Any, ...]], reason: str | None = None) -> Event | None:
    if not block_ids:
        return None  # nothing changed
    details = {"name": name, "version": version} | ({"reason": reason} if reason else {})
    return Event(action, "upstream_block", block_ids[0][0],
                 f"{name} {version}" if version else name, project_id=project_id,
                 details=details)


async def add_block(db: Database, project_id: int, name: str, version: str | None,
                    reason: str, *, actor: Actor | None = None) -> bool:
    """Hide an upstream release (or the whole name); False if it was hidden already."""
    rows = await audited(db, actor, lambda cur: fetch_all(
        cur, "INSERT INTO upstream_blocks (project_id, name, version, reason)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (project_id, name, version, reason)), lambda ids: _block_event(
            "upstream.block", project_id, name, version, ids, reason))
    return bool(rows)


async def remove_block(db: Database, project_id: int, name: str, version: str | None, *,
                       actor: Actor | None = None) -> bool:
    rows = await audited(db, actor, lambda cur: fetch_all(
        cur, "DELETE FROM upstream_blocks WHERE project_id = %s AND name = %s"
        " AND coalesce(pypireg_release_key(version), '') ="
        " coalesce(pypireg_release_key(%s), '') RETURNING id", (project_id, name, version)),
        lambda ids: _block_event("upstream.unblock", project_id, name, version, ids))
    return bool(rows)


async def index_upstreams(db: Database, *, project_id: int | None = None,
                          group_id: int | None = None) -> list[str] | None:
    """The upstreams a project's or group's index includes; None: every configured one."""
    assert (project_id is None) != (group_id is None)
    table, key = ("projects", project_id) if project_id is not None else ("groups", group_id)
    row = await db.fetch_one(f"SELECT upstreams FROM {table} WHERE id = %s", (key,))
    return None if row is None or row[0] is None else list(row[0])


async def set_index_upstreams(db: Database, upstreams: Sequence[str] | None, *,
                              project_id: int | None = None, group_id: int | None = None,
                              actor: Actor | None = None) -> None:
    """Set the list (None: every configured upstream); the event records the names only."""
    assert (project_id is None) != (group_id is None)
    table, key = ("projects", project_id) if project_id is not None else ("groups", group_id)
    value = None if upstreams is None else list(upstreams)

    async def change(cur: Cursor) -> tuple[Any, ...]:
        row = await fetch_one(cur, f"SELECT path, upstreams FROM {table} WHERE id = %s"
                              " FOR UPDATE", (key,))
        assert row is not None
        await cur.execute(f"UPDATE {table} SET upstreams = %s WHERE id = %s", (value, key))
        return row

    def event(row: tuple[Any, ...]) -> Event | None:
        path, was = row
        if was == value:
            return None
        kind = "project" if project_id is not None else "group"
        return Event(f"{kind}.update", kind, key, path, project_id=project_id,
                     group_id=group_id,
                     details={"changes": {"upstreams": {"from": was, "to": value}}})

    await audited(db, actor, change, event)


@dataclass(frozen=True)
class IndexUpstreams:
    """The upstreams one project's or group's index includes (None: every configured one)."""

    kind: Literal["project", "group"]
    id: int
    path: str
    upstreams: list[str] | None


async def all_index_upstreams(db: Database) -> list[IndexUpstreams]:
    """Every project's and group's upstreams: projects first, each kind by id."""
    # 'project' > 'group': DESC puts the projects first.
    rows = await db.fetch_all(
        "SELECT 'project' AS kind, id, path, upstreams FROM projects"
        " UNION ALL SELECT 'group', id, path, upstreams FROM groups ORDER BY kind DESC, id")
    return [IndexUpstreams(r[0], r[1], r[2], None if r[3] is None else list(r[3]))
            for r in rows]
