"""Download counts: which answers count, the batched flush, and where the numbers show.

Downloads go through the real routes (StubTreq, and real TCP for the
sendfile body); the flush is driven directly (`registry.downloads.flush()`,
what the daemon's timer calls), so no test waits for a timer.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.logger import LogLevel, globalLogPublisher

from pypireg.batching import PendingCounts
from pypireg.storage import downloads as download_store
from pypireg.storage import groups as group_store
from pypireg.storage import packages as package_store
from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.database import Database
from tests.distributions import wheel_bytes, wheel_filename, write
from tests.support.daemon import running_daemon, twine
from tests.support.http import Registry, basic, project_with_tokens, start_registry, upload
from tests.support.upstreams import start_upstream
from tests.support.waiting import eventually


@dataclass
class Stored:
    """One uploaded wheel: its project, tokens, file URL path and file row id."""

    project: Any
    read: str
    write: str
    content: bytes
    filename: str
    path: str
    file_id: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


async def store(reg: Registry, project_path: str = "acme", *, name: str = "demo-pkg",
                version: str = "1.0", payload: bytes = b"VALUE = 1\n",
                tokens: tuple[Any, str, str] | None = None) -> Stored:
    project, write, read = tokens or await project_with_tokens(reg, project_path)
    content = wheel_bytes(name, version, payload=payload)
    filename = wheel_filename(name, version)
    code, text, _ = await upload(reg, project.id, write, filename, content, name=name,
                                 version=version)
    assert code == 201, text
    sha256 = hashlib.sha256(content).hexdigest()
    row = await package_store.find_file(reg.db, project.id, sha256, filename)
    assert row is not None
    return Stored(project, read, write, content, filename,
                  f"/api/v4/projects/{project.id}/packages/pypi/files/{sha256}/{filename}",
                  row.id)


async def counts(db: Database, *stored: Stored) -> list[int]:
    found = await download_store.file_counts(db, [s.file_id for s in stored])
    return [found.get(s.file_id, 0) for s in stored]


async def get(reg: Registry, path: str, token: str | None, method: str = "GET",
              **headers: str) -> tuple[int, bytes]:
    sent = basic(token) if token else {}
    sent.update({k.replace("_", "-").encode(): [v.encode()] for k, v in headers.items()})
    resp = await reg.stub.request(method, reg.url + path, headers=sent)
    return resp.code, await resp.content()


@pytest_twisted.ensureDeferred
async def test_a_download_counts_once_flushed_over_both_bodies(registry: Registry) -> None:
    s = await store(registry)
    code, body = await get(registry, s.path, s.read)
    assert code == 200 and body == s.content
    # Counted in memory only: the download asked the database nothing.
    assert await counts(registry.db, s) == [0]
    assert registry.downloads.files.pending() == {s.file_id: 1}
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [1]
    assert registry.downloads.files.pending() == {}

    # Over real TCP the body is sent with sendfile: counted the same.
    resp = await treq.get(registry.url + s.path, headers=basic(s.read))
    assert resp.code == 200 and await resp.content() == s.content
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [2]
    # An empty flush writes nothing and changes nothing.
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [2]


@pytest_twisted.ensureDeferred
async def test_head_304_metadata_and_refusals_do_not_count(registry: Registry) -> None:
    s = await store(registry)
    _, _, other_read = await project_with_tokens(registry, "other")
    assert (await get(registry, s.path, s.read, "HEAD"))[0] == 200
    assert (await get(registry, s.path, s.read, If_None_Match=f'"{s.sha256}"'))[0] == 304
    assert (await get(registry, s.path, s.read,
                      If_Modified_Since="Fri, 01 Jan 2100 00:00:00 GMT"))[0] == 304
    code, metadata = await get(registry, s.path + ".metadata", s.read)
    assert code == 200 and b"Name: demo-pkg" in metadata
    assert (await get(registry, s.path, None))[0] == 401
    assert (await get(registry, s.path, other_read))[0] == 404
    assert (await get(registry, s.path.replace("demo_pkg-1.0", "demo_pkg-2.0"), s.read))[0] \
        == 404
    resp = await treq.head(registry.url + s.path, headers=basic(s.read))  # the sendfile path
    assert resp.code == 200
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [0]
    assert registry.downloads.files.pending() == {}
    # Not vacuous: the same file's GET does count.
    assert (await get(registry, s.path, s.read))[0] == 200
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [1]


@pytest_twisted.ensureDeferred
async def test_a_range_from_byte_zero_counts_a_later_one_does_not(registry: Registry) -> None:
    s = await store(registry)
    size = len(s.content)
    cases = [
        ("bytes=0-9", 206, True),
        ("bytes=10-19", 206, False),
        (f"bytes=-{size - 1}", 206, False),     # a suffix: from byte 1
        (f"bytes=-{size + 5}", 206, True),      # a suffix longer than the file: from 0
        ("bytes=20-29,0-4", 206, True),         # a set whose lowest range is at 0
        (f"bytes={size + 10}-", 416, False),    # unsatisfiable
        ("bytes=0-,0-,0-", 206, True),          # merged into one, counted once
        ("pages=0-9", 200, True),               # an unknown unit: the whole file
    ]
    expected = 0
    for header, status, counted in cases:
        code, _ = await get(registry, s.path, s.read, Range=header)
        assert code == status, header
        expected += counted
        await registry.downloads.flush()
        assert await counts(registry.db, s) == [expected], header


@pytest_twisted.ensureDeferred
async def test_one_blob_in_two_projects_counts_per_project(registry: Registry) -> None:
    acme = await store(registry, "acme")
    beta = await store(registry, "beta")
    assert acme.sha256 == beta.sha256 and acme.file_id != beta.file_id
    await get(registry, acme.path, acme.read)
    for _ in range(2):
        await get(registry, beta.path, beta.read)
    await registry.downloads.flush()
    assert await counts(registry.db, acme, beta) == [1, 2]


@pytest_twisted.ensureDeferred
async def test_a_group_download_counts_on_the_projects_file(registry: Registry) -> None:
    await group_store.create_group(registry.db, "corp", public=True)
    s = await store(registry, "corp/tools")
    path = f"/api/v4/groups/corp/-/packages/pypi/files/{s.sha256}/{s.filename}"
    assert (await get(registry, path, s.read))[0] == 200
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [1]


@pytest_twisted.ensureDeferred
async def test_two_daemons_on_one_database_add_up(registry: Registry, tmp_path: Path) -> None:
    s = await store(registry)
    # A second site on the same database and storage folder, as a second daemon.
    second = await start_registry(registry.db, tmp_path, listen=False)
    try:
        for _ in range(3):
            assert (await get(registry, s.path, s.read))[0] == 200
        for _ in range(2):
            assert (await get(second, s.path, s.read))[0] == 200
        await second.downloads.flush()
        await registry.downloads.flush()
        assert await counts(registry.db, s) == [5]
        await get(second, s.path, s.read)
        await second.downloads.flush()
        assert await counts(registry.db, s) == [6]
    finally:
        await second.stop()


@pytest.fixture
def failures() -> Any:
    """Failures logged while the test runs."""
    events: list[Any] = []

    def observe(event: Any) -> None:
        if "log_failure" in event or event.get("log_level") == LogLevel.critical:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_a_failed_flush_keeps_its_counts_for_the_next(registry: Registry,
                                                            failures: list[Any]) -> None:
    s = await store(registry)
    await get(registry, s.path, s.read)
    # The statement fails in PostgreSQL (its table is not there).
    await registry.db.execute("ALTER TABLE file_downloads RENAME TO file_downloads_away")
    await registry.downloads.flush()  # logs, never raises (the timer would stop)
    assert [e["what"] for e in failures] == ["download counts"]
    assert registry.downloads.files.pending() == {s.file_id: 1}
    await get(registry, s.path, s.read)  # counted meanwhile
    await registry.db.execute("ALTER TABLE file_downloads_away RENAME TO file_downloads")
    await registry.downloads.flush()
    assert await counts(registry.db, s) == [2]
    assert registry.downloads.files.pending() == {}


@pytest_twisted.ensureDeferred
async def test_pending_counts_merge_and_are_bounded_across_failures(failures: list[Any]
                                                                    ) -> None:
    written: list[list[tuple[int, int]]] = []
    failing = [True]

    async def write(batch: list[tuple[int, int]]) -> None:
        if failing[0]:
            raise OSError("database away")
        written.append(batch)

    pending: PendingCounts[int] = PendingCounts(write, "test counts", limit=3)
    for key in (5, 1, 5, 2, 9):
        pending.add(key)
    pending.add(7, 0)  # touched, not counted
    await pending.flush()
    # Over the limit: the oldest keys go, and it says so.
    assert pending.pending() == {2: 1, 9: 1, 7: 0}
    assert len(failures) == 1
    pending.add(9, 2)
    failing[0] = False
    await pending.flush()
    assert written == [[(2, 1), (7, 0), (9, 3)]]  # sorted by key, in one call
    assert pending.pending() == {}


@pytest_twisted.ensureDeferred
async def test_deleted_files_are_skipped_not_fatal(registry: Registry) -> None:
    s = await store(registry)
    kept = await store(registry, name="other-pkg", tokens=(s.project, s.write, s.read))
    await get(registry, s.path, s.read)
    await get(registry, kept.path, kept.read)
    await package_store.delete_files(registry.db, [s.file_id])
    await registry.downloads.flush()
    assert await counts(registry.db, s, kept) == [0, 1]
    assert registry.downloads.files.pending() == {}


@pytest_twisted.ensureDeferred
async def test_proxied_files_are_counted_and_shown(db: Database, tmp_path: Path) -> None:
    upstream = await start_upstream()
    content = wheel_bytes("six", "1.16.0")
    filename = wheel_filename("six", "1.16.0")
    sha256 = hashlib.sha256(content).hexdigest()
    upstream.project("six", {filename: content})
    reg = await start_registry(db, tmp_path, listen=False,
                               upstreams=[{"name": "local", "url": upstream.index}])
    try:
        _, _, read = await project_with_tokens(reg, "acme")
        code, page = await get(reg, "/api/v4/projects/acme/packages/pypi/simple/six/", read,
                               Accept="application/vnd.pypi.simple.v1+json")
        assert code == 200, page
        [entry] = json.loads(page)["files"]
        path = f"/api/v4/projects/acme/packages/pypi/files/{sha256}/{filename}"
        assert entry["url"].endswith(f"files/{sha256}/{filename}")
        # The first download fetches it through, and counts with the row it records.
        assert await get(reg, path, read) == (200, content)
        cached = await eventually(lambda: cache_store.get_file(db, sha256))
        assert cached.download_count == 1
        # Later ones come from the cache: counted in memory, then flushed.
        assert await get(reg, path, read) == (200, content)
        assert (await get(reg, path, read, "HEAD"))[0] == 200
        assert (await get(reg, path, read, If_None_Match=f'"{sha256}"'))[0] == 304
        assert (await get(reg, path, read, Range="bytes=5-9"))[0] == 206
        assert (await get(reg, path, read, Range="bytes=0-9"))[0] == 206
        await reg.downloads.flush()
        cached = await cache_store.get_file(db, sha256)
        assert cached is not None and cached.download_count == 3

        code, html = await get(reg, "/acme/-/packages/six", read)
        assert code == 200
        text = html.decode()
        assert "Downloaded 3 times through this registry" in text
        assert '<li>1.16.0 <span class="meta">· 3 downloads</span></li>' in text
    finally:
        await reg.stop()
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_the_package_page_shows_file_version_and_package_totals(
        registry: Registry) -> None:
    old = await store(registry, version="1.0")
    tokens = (old.project, old.write, old.read)
    new = await store(registry, version="2.0", tokens=tokens)
    for _ in range(3):
        await get(registry, old.path, old.read)
    await get(registry, new.path, new.read)
    await registry.downloads.flush()
    code, html = await get(registry, "/acme/-/packages/demo-pkg", old.read)
    assert code == 200
    text = html.decode()
    assert "<li>Downloaded <strong>4</strong> times</li>" in text
    assert "· 3 downloads</p>" in text   # release 1.0
    assert "· 1 download</p>" in text    # release 2.0
    assert '<td data-label="Downloads" class="num">3</td>' in text
    assert '<td data-label="Downloads" class="num">1</td>' in text


@pytest_twisted.ensureDeferred
async def test_a_reuploaded_file_keeps_the_downloads_of_its_earlier_copies(
        registry: Registry) -> None:
    first = await store(registry)
    await get(registry, first.path, first.read)
    await registry.downloads.flush()
    again = await store(registry, tokens=(first.project, first.write, first.read))
    assert again.file_id != first.file_id
    await get(registry, again.path, again.read)
    await registry.downloads.flush()
    assert await counts(registry.db, first, again) == [1, 1]
    text = (await get(registry, "/acme/-/packages/demo-pkg", first.read))[1].decode()
    assert '<td data-label="Downloads" class="num">2</td>' in text


@pytest_twisted.ensureDeferred
async def test_the_packages_api_shows_counts_and_the_last_download(registry: Registry
                                                                   ) -> None:
    s = await store(registry)
    api = f"/api/v4/projects/{s.project.id}/packages"
    code, body = await get(registry, api, s.read)
    [package] = json.loads(body)
    assert package["download_count"] == 0 and package["last_downloaded_at"] is None
    for _ in range(2):
        await get(registry, s.path, s.read)
    await registry.downloads.flush()
    code, body = await get(registry, api, s.read)
    [package] = json.loads(body)
    assert code == 200 and package["download_count"] == 2
    assert package["last_downloaded_at"].endswith("Z")
    code, body = await get(registry, f"{api}/{package['id']}", s.read)
    assert json.loads(body)["download_count"] == 2
    code, body = await get(registry, f"{api}/{package['id']}/package_files", s.read)
    [f] = json.loads(body)
    assert f["id"] == s.file_id and f["download_count"] == 2
    assert f["last_downloaded_at"] == package["last_downloaded_at"]


@pytest.mark.e2e
def test_pip_downloads_are_counted_and_the_daemon_writes_them_when_it_stops(
        tmp_path: Path) -> None:
    """The real daemon and pip: a stop (SIGTERM) writes the counts the timer has not yet."""
    with running_daemon("pypireg-e2e-downloads-") as daemon:
        project_id = daemon.cli("project", "create", "acme").stdout.strip()
        write_token, read = (
            daemon.cli("token", "create", "--project", "acme", "--scope", scope
                       ).stdout.splitlines()[-1] for scope in ("write", "read"))
        wheel = write(tmp_path, wheel_filename("counted-pkg", "1.0"),
                      wheel_bytes("counted-pkg", "1.0"))
        result = twine(daemon, project_id, write_token, wheel)
        assert result.returncode == 0, result.stdout + result.stderr
        for attempt in range(2):
            # pip fetches the PEP 658 metadata file first: that does not count.
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps",
                 "--disable-pip-version-check", "--index-url",
                 daemon.index(project_id, read), "-d", str(tmp_path / f"pip-{attempt}"),
                 "counted-pkg==1.0"], check=True, capture_output=True, timeout=120)
        daemon.stop()  # within the flush interval: only the stop writes them
        daemon.start()
        request = urllib.request.Request(
            f"{daemon.url}/api/v4/projects/{project_id}/packages",
            headers={"PRIVATE-TOKEN": read})
        with urllib.request.urlopen(request, timeout=30) as resp:
            [package] = json.load(resp)
        assert package["download_count"] == 2, package
        assert package["last_downloaded_at"] is not None
