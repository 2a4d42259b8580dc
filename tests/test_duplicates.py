"""The duplicate cleanup policy: `project update --keep-duplicates N`, uploads, the hourly
job and `pypireg cleanup`.

A project keeping N duplicates keeps the N newest files of each file name:
the index, the downloads and the packages API agree on which, the removed
files' blobs go with the garbage collection after its grace, and no cache
serves a removed file afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.http.negotiation import JSON_V1
from pypireg.service import DUPLICATES_INTERVAL_SECONDS, GC_INTERVAL_SECONDS, housekeeping
from pypireg.storage import projects as project_store
from pypireg.storage.blobs import BlobStore
from pypireg.storage.changes import ChangeListener
from pypireg.storage.database import Database
from pypireg.storage.duplicates import remove_surplus_duplicates
from pypireg.storage.gc import collect_garbage
from tests.distributions import (
    sdist_bytes,
    sdist_filename,
    upload_form,
    wheel_bytes,
    wheel_filename,
)
from tests.support import reactor
from tests.support.http import basic, project_with_tokens, start_registry, upload
from tests.support.waiting import next_turn, until

NAME = "dup-pkg"
WHEEL = wheel_filename(NAME, "1.0")


async def cli(db: Database, *argv: str) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)))


def copy(n: int) -> bytes:
    """The wheel's n-th re-upload: same file name, other bytes."""
    return wheel_bytes(NAME, "1.0", payload=f"COPY = {n}\n".encode())


async def put(reg: Any, project: Any, token: str, content: bytes) -> None:
    code, text, _ = await upload(reg, project.id, token, WHEEL, content, name=NAME)
    assert code == 201, text


async def stored(db: Database, filename: str = WHEEL) -> list[tuple[int, str]]:
    """(id, sha256) of every row of *filename*, oldest first."""
    rows = await db.fetch_all(
        "SELECT id, sha256 FROM package_files WHERE filename = %s ORDER BY id", (filename,))
    return [(r[0], r[1]) for r in rows]


async def kept_by_project(db: Database) -> dict[str, list[str]]:
    """The sha256 of every file row, oldest first, by project path."""
    rows = await db.fetch_all(
        "SELECT pr.path, f.sha256 FROM package_files f JOIN packages p ON p.id = f.package_id"
        " JOIN projects pr ON pr.id = p.project_id ORDER BY f.id")
    kept: dict[str, list[str]] = {}
    for path, digest in rows:
        kept.setdefault(path, []).append(digest)
    return kept


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def download(reg: Any, project: Any, token: str, content: bytes) -> int:
    resp = await treq.get(f"{reg.api(project.id)}/files/{sha(content)}/{WHEEL}",
                          headers=basic(token))
    body = await resp.content()
    assert resp.code != 200 or body == content
    return int(resp.code)


async def listed(reg: Any, project: Any, token: str) -> list[tuple[str, str]]:
    """(file name, sha256) of what the simple index lists for the package."""
    resp = await treq.get(f"{reg.api(project.id)}/simple/{NAME}/",
                          headers={**basic(token), b"Accept": [JSON_V1.encode()]})
    page = json.loads(await resp.content())
    assert resp.code == 200, page
    return sorted((f["filename"], f["hashes"]["sha256"]) for f in page["files"])


async def api_files(reg: Any, project: Any, token: str) -> list[str]:
    """The sha256 of every file row the packages API lists for release 1.0, by id."""
    base = f"{reg.url}/api/v4/projects/{project.id}/packages"
    resp = await treq.get(base, headers=basic(token))
    (release,) = json.loads(await resp.content())
    resp = await treq.get(f"{base}/{release['id']}/package_files?per_page=100",
                          headers=basic(token))
    return [f["file_sha256"] for f in json.loads(await resp.content())
            if f["file_name"] == WHEEL]


def age_blobs(reg: Any) -> None:
    """Make every stored blob older than the garbage collector's grace (an hour)."""
    old = time.time() - 7200
    for path in reg.stored_files():
        os.utime(path, (old, old))


@pytest_twisted.ensureDeferred
async def test_uploads_keep_the_newest_n_and_every_reader_agrees(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    updated = json.loads(await cli(registry.db, "--json", "project", "update", "acme",
                                   "--keep-duplicates", "2"))
    assert updated["keep_duplicates"] == 2
    sdist = sdist_bytes(NAME, "1.0")
    code, text, _ = await upload(registry, project.id, write, sdist_filename(NAME, "1.0"),
                                 sdist, name=NAME)
    assert code == 201, text
    copies = [copy(n) for n in range(4)]
    for n, content in enumerate(copies):
        await put(registry, project, write, content)
        # After each upload: at most two rows of the name, the newest ones.
        assert [s for _, s in await stored(registry.db)] == [sha(c) for c in copies[:n + 1]][-2:]

    # The index serves the newest; the packages API lists the two kept rows;
    # the kept ones download, the removed ones are gone.
    assert await listed(registry, project, read) == sorted(
        [(WHEEL, sha(copies[3])), (sdist_filename(NAME, "1.0"), sha(sdist))])
    assert await api_files(registry, project, read) == [sha(copies[2]), sha(copies[3])]
    assert [await download(registry, project, read, c) for c in copies] == [404, 404, 200, 200]
    # Another file name of the same release is not a duplicate of it.
    assert len(await stored(registry.db, sdist_filename(NAME, "1.0"))) == 1

    # The removed rows' blobs go with the garbage collection, after its grace.
    blobs = BlobStore(reactor, registry.storage)
    young = await collect_garbage(registry.db, blobs)
    assert young.removed == 0 and young.kept_young == 2
    age_blobs(registry)
    collected = await collect_garbage(registry.db, blobs)
    assert collected.removed == 2
    names = {p.name for p in registry.stored_files()}
    assert not {sha(copies[0]), sha(copies[1])} & names
    assert {sha(copies[2]), sha(copies[3]), sha(sdist)} <= names
    assert [await download(registry, project, read, c) for c in copies] == [404, 404, 200, 200]


@pytest_twisted.ensureDeferred
async def test_keeping_all_again_and_the_settings_in_project_list(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    await cli(registry.db, "project", "update", "acme", "--keep-duplicates", "1")
    listing = json.loads(await cli(registry.db, "--json", "project", "list"))
    assert listing[0]["keep_duplicates"] == 1
    text = (await cli(registry.db, "project", "list")).splitlines()
    assert text[0].split()[:6] == ["ID", "PATH", "VISIBILITY", "PACKAGES", "DUPLICATES",
                                   "KEEP"]
    assert text[1].split()[4:6] == ["allow", "1"]

    updated = json.loads(await cli(registry.db, "--json", "project", "update", "acme",
                                   "--keep-all-duplicates"))
    assert updated["keep_duplicates"] is None
    assert (await cli(registry.db, "project", "list")).splitlines()[1].split()[5] == "all"
    # Other settings leave the policy as it is.
    await cli(registry.db, "project", "update", "acme", "--keep-duplicates", "3")
    await cli(registry.db, "project", "update", "acme", "--public")
    kept = await project_store.get_project(registry.db, "acme")
    assert kept is not None and kept.keep_duplicates == 3
    await cli(registry.db, "project", "update", "acme", "--keep-all-duplicates")
    for n in range(3):
        await put(registry, project, write, copy(n))
    assert len(await stored(registry.db)) == 3

    parser = build_parser()
    for bad in (["--keep-duplicates", "0"], ["--keep-duplicates", "-1"],
                ["--keep-duplicates", "two"], ["--keep-duplicates", str(2**31)],
                ["--keep-duplicates", "2", "--keep-all-duplicates"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["project", "update", "acme", *bad])


@pytest_twisted.ensureDeferred
async def test_cleanup_dry_run_changes_nothing_and_cleanup_removes_what_it_listed(
        registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    other, other_write, _ = await project_with_tokens(registry, "acme/other")
    keeps_all, all_write, _ = await project_with_tokens(registry, "acme/all")
    for n in range(3):
        for p, token in ((project, write), (other, other_write), (keeps_all, all_write)):
            await put(registry, p, token, copy(n))
    # Set afterwards: nothing is removed until the policy is applied.
    await cli(registry.db, "project", "update", "acme", "--keep-duplicates", "1")
    await cli(registry.db, "project", "update", "acme/other", "--keep-duplicates", "2")
    before = await registry.db.fetch_all("SELECT * FROM package_files ORDER BY id")
    assert len(before) == 9

    dry = json.loads(await cli(registry.db, "--json", "cleanup", "--dry-run"))
    assert dry["dry_run"] is True
    assert [(f["project"], f["sha256"]) for f in dry["removed"]] == [
        ("acme", sha(copy(0))), ("acme", sha(copy(1))), ("acme/other", sha(copy(0)))]
    assert dry["removed_bytes"] == sum(f["size"] for f in dry["removed"])
    text = await cli(registry.db, "cleanup", "--dry-run")
    assert text.splitlines()[0].split() == ["PROJECT", "FILE", "ID", "UPLOADED", "SIZE",
                                            "SHA256"]
    assert text.splitlines()[-1].startswith("Would remove 3 older duplicate files (")
    assert await registry.db.fetch_all("SELECT * FROM package_files ORDER BY id") == before
    assert await download(registry, project, read, copy(0)) == 200

    # --project limits it to one project.
    one = json.loads(await cli(registry.db, "--json", "cleanup", "--project", "acme/other"))
    assert [(f["project"], f["sha256"]) for f in one["removed"]] == [
        ("acme/other", sha(copy(0)))]
    done = json.loads(await cli(registry.db, "--json", "cleanup"))
    assert done["dry_run"] is False
    assert [f["id"] for f in done["removed"]] == [f["id"] for f in dry["removed"]
                                                 if f["project"] == "acme"]
    assert await kept_by_project(registry.db) == {
        "acme": [sha(copy(2))], "acme/other": [sha(copy(1)), sha(copy(2))],
        "acme/all": [sha(copy(n)) for n in range(3)]}
    assert await download(registry, project, read, copy(0)) == 404
    assert await download(registry, project, read, copy(2)) == 200
    # Nothing left to do; a project keeping everything says so.
    assert (await cli(registry.db, "cleanup")) == "Removed 0 older duplicate files (0B)."
    assert "keeps every duplicate" in await cli(registry.db, "cleanup", "--project", "acme/all")
    with pytest.raises(CommandError, match="no project 'nope'"):
        await cli(registry.db, "cleanup", "--project", "nope")


@pytest_twisted.ensureDeferred
async def test_the_hourly_job_applies_the_policies(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    for n in range(3):
        await put(registry, project, write, copy(n))
    await project_store.update_project(registry.db, project.id, keep_duplicates=2)
    clock = Clock()
    # Not started: it tells its subscribers only what this daemon notifies itself.
    changes = ChangeListener(reactor, registry.db.dsn)
    local: list[str] = []
    changes.subscribe(local.append)
    jobs = housekeeping(clock, registry.db, BlobStore(reactor, registry.storage), changes)
    assert [job.step for job in jobs] == [DUPLICATES_INTERVAL_SECONDS, GC_INTERVAL_SECONDS]
    assert DUPLICATES_INTERVAL_SECONDS == 3600

    def finished() -> bool:
        # A timer schedules its next run once the current one is over.
        return len(clock.getDelayedCalls()) == len(jobs)

    for job in jobs:
        job.startService()  # runs at once
    try:
        await until(finished)
        assert [s for _, s in await stored(registry.db)] == [sha(copy(1)), sha(copy(2))]
        assert local == ["package_files"]  # this daemon's caches dropped at once

        await project_store.update_project(registry.db, project.id, keep_duplicates=1)
        clock.advance(DUPLICATES_INTERVAL_SECONDS - 1)
        assert finished() and len(await stored(registry.db)) == 2  # not yet
        clock.advance(1)
        await until(finished)
        assert [s for _, s in await stored(registry.db)] == [sha(copy(2))]
        assert local == ["package_files"] * 2
        clock.advance(DUPLICATES_INTERVAL_SECONDS)  # nothing to remove: no notification
        await until(finished)
        assert local == ["package_files"] * 2
    finally:
        for job in jobs:
            job.stopService()
    assert await download(registry, project, read, copy(1)) == 404


@pytest_twisted.ensureDeferred
async def test_racing_uploads_of_one_file_name_keep_the_newest(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    await project_store.update_project(registry.db, project.id, keep_duplicates=2)
    await put(registry, project, write, copy(0))
    url = registry.api(project.id)

    def post(content: bytes) -> Any:
        ctype, body = upload_form(NAME, "1.0", WHEEL, content)
        return treq.post(url, data=body, headers={**basic(write), b"Content-Type": [ctype]})

    racers = [post(copy(n)) for n in range(1, 5)]
    # The hourly job, or `pypireg cleanup`, running at the same time.
    cleanups = [Deferred.fromCoroutine(remove_surplus_duplicates(registry.db))
                for _ in range(2)]
    results = await DeferredList(racers + cleanups, consumeErrors=True)
    for ok, result in results:
        assert ok, result
    for resp in [r for _, r in results[:len(racers)]]:
        await resp.content()
        assert resp.code == 201
    # Five rows were made (ids 1-5, in the order their uploads took the
    # package's lock); the two newest stay, whichever upload they were.
    rows = await stored(registry.db)
    assert [i for i, _ in rows] == [4, 5]
    newest = rows[-1][1]
    assert await listed(registry, project, read) == [(WHEEL, newest)]
    assert await api_files(registry, project, read) == [s for _, s in rows]


@pytest_twisted.ensureDeferred
async def test_no_cache_serves_a_removed_file(db: Database, tmp_path: Any) -> None:
    changes = ChangeListener(reactor, db.dsn)
    await changes.start()
    # Another process (the admin command, another daemon's job): its own connection.
    other = Database(reactor, db.dsn, pool_size=1)
    await other.start()
    reg = await start_registry(db, tmp_path, changes=changes)
    try:
        project, write, read = await project_with_tokens(reg)
        await project_store.update_project(db, project.id, keep_duplicates=1)
        await put(reg, project, write, copy(0))
        assert await download(reg, project, read, copy(0)) == 200  # its row is cached now
        await put(reg, project, write, copy(1))  # this daemon's upload: seen at once
        assert await download(reg, project, read, copy(0)) == 404

        await project_store.update_project(db, project.id, keep_all_duplicates=True)
        await put(reg, project, write, copy(2))
        assert await download(reg, project, read, copy(1)) == 200  # cached again
        await project_store.update_project(db, project.id, keep_duplicates=1)
        assert len(await remove_surplus_duplicates(other)) == 1  # committed elsewhere
        for _ in range(2000):
            if await download(reg, project, read, copy(1)) == 404:
                break
            await next_turn()
        else:
            raise AssertionError("a removed file was still served from the cache")
        assert await download(reg, project, read, copy(2)) == 200
    finally:
        await reg.stop()
        changes.stop()
        other.close()
