"""Versions equal under PEP 440 are one release: 1.0, 1.0.0 and 1.0.0.0.

Everywhere: the index's PEP 700 `versions`, the JSON API, the packages
API, the web pages, yanking and deleting; and releases recorded apart
before schema/0011 are merged by it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq

from pypireg.storage.database import Cursor, Database
from pypireg.storage.migrations import load_migrations, migrate
from tests.distributions import (
    sdist_bytes,
    sdist_filename,
    wheel_bytes,
    wheel_filename,
)
from tests.support import reactor
from tests.support.http import basic, project_with_tokens, upload

JSON_V1 = "application/vnd.pypi.simple.v1+json"


async def _upload(registry: Any, token: str, version: str, filename: str, content: bytes
                  ) -> None:
    code, text, _ = await upload(registry, "acme", token, filename, content, name="demo",
                                 version=version)
    assert code == 201, text


async def _get_json(url: str, **kw: Any) -> Any:
    resp = await treq.get(url, **kw)
    assert resp.code == 200, (url, await resp.text())
    return json.loads(await resp.content())


@pytest_twisted.ensureDeferred
async def test_equal_versions_are_one_release_everywhere(registry: Any) -> None:
    _, token, _ = await project_with_tokens(registry, "acme", public=True)
    auth = basic(token)
    await _upload(registry, token, "1.0", wheel_filename("demo", "1.0"),
                  wheel_bytes("demo", "1.0"))
    await _upload(registry, token, "1.0.0", sdist_filename("demo", "1.0.0"),
                  sdist_bytes("demo", "1.0.0"))
    await _upload(registry, token, "1.0.0.0", wheel_filename("demo", "1.0.0.0"),
                  wheel_bytes("demo", "1.0.0.0"))
    await _upload(registry, token, "1.0.1", wheel_filename("demo", "1.0.1"),
                  wheel_bytes("demo", "1.0.1"))
    api = registry.api("acme")

    index = await _get_json(api + "/simple/demo/", headers={b"Accept": [JSON_V1.encode()]})
    assert index["versions"] == ["1.0", "1.0.1"]
    assert len(index["files"]) == 4

    for spelling in ("1.0", "1.0.0", "1.0.0.0"):
        release = await _get_json(f"{api}/pypi/demo/{spelling}/json")
        assert release["info"]["version"] == "1.0"
        assert len(release["urls"]) == 3
    project_doc = await _get_json(f"{api}/pypi/demo/json")
    assert sorted(project_doc["releases"]) == ["1.0", "1.0.1"]

    packages_url = f"{registry.url}/api/v4/projects/acme/packages"
    packages = await _get_json(packages_url)
    assert sorted(p["version"] for p in packages) == ["1.0", "1.0.1"]
    found = await _get_json(packages_url + "?package_version=1.0.0.0")
    assert [p["version"] for p in found] == ["1.0"]
    files = await _get_json(f"{packages_url}/{found[0]['id']}/package_files")
    assert len(files) == 3

    resp = await treq.get(f"{registry.url}/acme/-/packages/demo")
    page = await resp.text()
    assert page.count('<section class="release"') == 2
    assert 'id="pypireg-v-1.0"' in page and 'id="pypireg-v-1.0.0"' not in page

    # Yank by any spelling: the whole release.
    resp = await treq.put(f"{api}/demo/1.0.0.0/yank", data=b'{"reason": "broken"}',
                          headers=auth)
    assert resp.code == 200, await resp.text()
    assert json.loads(await resp.content())["files"] == 3
    index = await _get_json(api + "/simple/demo/", headers={b"Accept": [JSON_V1.encode()]})
    yanked = {f["filename"]: f["yanked"] for f in index["files"]}
    assert sum(1 for v in yanked.values() if v) == 3

    # Delete the release: all three files go.
    resp = await treq.delete(f"{packages_url}/{found[0]['id']}", headers=auth)
    assert resp.code == 204
    index = await _get_json(api + "/simple/demo/", headers={b"Accept": [JSON_V1.encode()]})
    assert index["versions"] == ["1.0.1"] and len(index["files"]) == 1


@pytest_twisted.ensureDeferred
async def test_the_migration_merges_releases_recorded_apart(clean_dsn: str) -> None:
    db = Database(reactor, clean_dsn, pool_size=1)
    await db.start()
    try:
        await _merge_on(db)
    finally:
        db.close()


async def _merge_on(db: Database) -> None:
    # The schema as it was before 0011, with releases 1.0, 1.0.0 and 1.0.0.0 apart.
    async def before(cur: Cursor) -> None:
        await cur.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                          " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for m in load_migrations():
            if m.version < 11:
                await cur.execute(m.sql)
                await cur.execute("INSERT INTO schema_migrations (version, name)"
                                  " VALUES (%s, %s)", (m.version, m.name))

    await db.run_interaction(before)
    # Plain SQL: the store's queries are written for the current schema.
    project = await db.fetch_one("INSERT INTO projects (path) VALUES ('acme') RETURNING id")
    assert project is not None
    package = await db.fetch_one(
        "INSERT INTO packages (project_id, name, display_name) VALUES (%s, 'demo', 'demo')"
        " RETURNING id", (project[0],))
    assert package is not None
    for n, (version, filename) in enumerate([("1.0", "demo-1.0.tar.gz"),
                                             ("1.0.0", "demo-1.0.0.tar.gz"),
                                             ("1.0.0.0", "demo-1.0.0.0.zip"),
                                             ("2.0", "demo-2.0.tar.gz")]):
        await db.execute(
            "INSERT INTO package_versions (package_id, version, created_at)"
            " VALUES (%s, %s, now() + %s * interval '1 second')", (package[0], version, n))
        await db.execute(
            "INSERT INTO package_files (package_id, version, filename, packagetype,"
            " python_version, size, sha256) VALUES (%s, %s, %s, 'sdist', 'source', 1, %s)",
            (package[0], version, filename, f"{n:064x}"))
    assert (await migrate(db))[0] == 11
    releases = await db.fetch_all(
        "SELECT version FROM package_versions WHERE package_id = %s ORDER BY version",
        (package[0],))
    assert [r[0] for r in releases] == ["1.0", "2.0"]
    files = await db.fetch_all(
        "SELECT filename, version FROM package_files WHERE package_id = %s ORDER BY filename",
        (package[0],))
    assert [tuple(r) for r in files] == [("demo-1.0.0.0.zip", "1.0"), ("demo-1.0.0.tar.gz", "1.0"),
                                         ("demo-1.0.tar.gz", "1.0"), ("demo-2.0.tar.gz", "2.0")]


@pytest_twisted.ensureDeferred
async def test_release_keys(db: Any) -> None:
    cases = {"1.0": "1", "1.0.0": "1", "1.10": "1.10", "2.0.0rc1": "2rc1", "1!1.0": "1!1",
             "1.0.post0": "1.post0", "1.0+local.0": "1+local.0", "0.0": "0", "1.20.0": "1.20"}
    for version, key in cases.items():
        row = await db.fetch_one("SELECT pypireg_release_key(%s)", (version,))
        assert row is not None and row[0] == key, version
