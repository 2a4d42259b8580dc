"""Races, and what they settle to (documented in the README under Consistency)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import DeferredList

from pypireg.admin.fsck import fsck
from pypireg.config import parse_config
from pypireg.service import build_site
from pypireg.storage import projects as project_store
from pypireg.storage.blobs import BlobStore
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import basic, project_with_tokens


def post(url: str, token: str, filename: str, data: bytes, version: str = "1.0") -> Any:
    ctype, body = upload_form("race-pkg", version, filename, data)
    return treq.post(url, data=body, headers={**basic(token), b"Content-Type": [ctype]})


async def codes(deferreds: list[Any]) -> list[int]:
    results = await DeferredList(deferreds, consumeErrors=True)
    out = []
    for ok, resp in results:
        assert ok, resp
        await resp.content()
        out.append(resp.code)
    return sorted(out)


@pytest_twisted.ensureDeferred
async def test_same_file_twice_at_once(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    data = wheel_bytes("race-pkg", "1.0")
    name = wheel_filename("race-pkg", "1.0")
    url = registry.api(project.id)
    # Duplicates allowed (GitLab's default): both stored, one blob.
    assert await codes([post(url, write, name, data) for _ in range(2)]) == [201, 201]
    rows = await registry.db.fetch_all("SELECT count(*) FROM package_files")
    assert rows[0][0] == 2
    assert sum(1 for p in registry.stored_files()
               if p.name == hashlib.sha256(data).hexdigest()) == 1
    # Duplicates rejected: exactly one of two simultaneous uploads wins.
    await project_store.update_project(registry.db, project.id, reject_duplicates=True)
    other = wheel_filename("race-pkg", "2.0")
    data2 = wheel_bytes("race-pkg", "2.0")
    assert await codes([post(url, write, other, data2, "2.0") for _ in range(2)]) == [201, 400]


@pytest_twisted.ensureDeferred
async def test_uploads_racing_deletes_stay_consistent(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    url = registry.api(project.id)
    api = f"{registry.url}/api/v4/projects/{project.id}/packages"
    for round_ in range(8):
        version = f"1.{round_}"
        first = wheel_bytes("race-pkg", version)
        resp = await post(url, write, wheel_filename("race-pkg", version), first, version)
        assert resp.code == 201
        await resp.content()
        listing = await treq.get(api, headers=basic(read))
        package_id = json.loads(await listing.content())[-1]["id"]
        again = wheel_bytes("race-pkg", version, payload=b"again = 1\n")
        await codes([
            post(url, write, wheel_filename("race-pkg", version), again, version),
            treq.delete(f"{api}/{package_id}", headers=basic(write)),
        ])
        # Whatever the order, the index and the storage agree.
        report = await fsck(registry.db, BlobStore(reactor, registry.storage))
        assert report.ok, report.lines()
        page = await treq.get(url + "/simple/race-pkg/", headers=basic(read))
        body = await page.content()
        rows = await registry.db.fetch_all(
            "SELECT sha256 FROM package_files f JOIN packages p ON p.id = f.package_id"
            " WHERE p.name = 'race-pkg' AND f.version = %s", (version,))
        for (sha256,) in rows:
            assert sha256.encode() in body


@pytest_twisted.ensureDeferred
async def test_two_daemons_on_one_database_and_storage(registry: Any, tmp_path: Path) -> None:
    project, write, read = await project_with_tokens(registry)
    config = parse_config({"storage": {"path": str(registry.storage)}})
    second_site, _ = await build_site(reactor, config, registry.db)
    second = reactor.listenTCP(0, second_site, interface="127.0.0.1")
    try:
        second_url = f"http://127.0.0.1:{second.getHost().port}/api/v4/projects/{project.id}" \
                     "/packages/pypi"
        a = wheel_bytes("race-pkg", "1.0")
        b = wheel_bytes("race-pkg", "2.0")
        assert await codes([
            post(registry.api(project.id), write, wheel_filename("race-pkg", "1.0"), a),
            post(second_url, write, wheel_filename("race-pkg", "2.0"), b, "2.0"),
        ]) == [201, 201]
        for base in (registry.api(project.id), second_url):
            page = await treq.get(base + "/simple/race-pkg/", headers=basic(read))
            body = await page.content()
            assert hashlib.sha256(a).hexdigest().encode() in body
            assert hashlib.sha256(b).hexdigest().encode() in body
    finally:
        await second.stopListening()
