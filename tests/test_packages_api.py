"""GitLab's package management API: listing, pagination, filters, access, deletes."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest_twisted
import treq

from pypireg.config import parse_config
from pypireg.service import build_site
from pypireg.storage.database import Database
from pypireg.storage.migrations import migrate
from tests.distributions import sdist_bytes, sdist_filename, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import STUB_URL, StubClient, basic, project_with_tokens, upload

ITEM_KEYS = {"id", "name", "version", "package_type", "status", "created_at", "_links",
             "pipelines", "tags", "last_downloaded_at", "download_count"}
GITLAB_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def packages_url(registry: Any, project: Any) -> str:
    return f"{registry.url}/api/v4/projects/{project}/packages"


async def call(client: Any, method: str, url: str, token: str | None = None, *,
               private_token: bool = False) -> tuple[Any, Any]:
    """(response, JSON body or raw bytes), following no redirects; *client* a StubClient."""
    headers: dict[bytes, list[bytes]] = {}
    if token and private_token:
        headers[b"PRIVATE-TOKEN"] = [token.encode()]
    elif token:
        headers.update(basic(token))
    resp = await client.request(method, url, headers=headers, allow_redirects=False)
    body = await resp.content()
    if resp.code == 200:
        assert resp.headers.getRawHeaders(b"content-type") == [b"application/json"]
        return resp, json.loads(body)
    return resp, body


def header(resp: Any, name: str) -> str:
    values = resp.headers.getRawHeaders(name.encode())
    assert values is not None and len(values) == 1, name
    return str(values[0].decode())


def links(resp: Any) -> dict[str, str]:
    return {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', header(resp, "link"))}


async def put(registry: Any, project: Any, token: str, name: str, version: str,
              sdist: bool = False, payload: bytes = b"VALUE = 1\n") -> bytes:
    if sdist:
        filename, content = sdist_filename(name, version), sdist_bytes(name, version)
    else:
        filename = wheel_filename(name, version)
        content = wheel_bytes(name, version, payload=payload)
    code, text, _ = await upload(registry, project.id, token, filename, content, name=name,
                                 version=version)
    assert code == 201, text
    return content


async def listing(registry: Any, project: Any, token: str, query: str = "") -> list[str]:
    """The listing as "name version" strings."""
    resp, items = await call(
        registry.stub, "GET", packages_url(registry, project.id) + query, token)
    assert resp.code == 200, items
    return [f"{i['name']} {i['version']}" for i in items]


@pytest_twisted.ensureDeferred
async def test_shapes_and_values(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    wheel = await put(registry, project, write, "Demo.Pkg", "1.0")
    sdist = await put(registry, project, write, "Demo.Pkg", "1.0", sdist=True)
    await put(registry, project, write, "Demo.Pkg", "2.0")
    await put(registry, project, write, "other", "0.1")
    # A duplicate upload is another file of the same package (release).
    code, text, _ = await upload(registry, project.id, write, "Demo_Pkg-1.0-py3-none-any.whl",
                                 wheel, name="Demo.Pkg")
    assert code == 201, text

    resp, items = await call(registry.stub, "GET", packages_url(registry, project.id), read)
    assert resp.code == 200
    assert [(i["name"], i["version"]) for i in items] == [
        ("Demo.Pkg", "1.0"), ("Demo.Pkg", "2.0"), ("other", "0.1")]
    first = items[0]
    assert set(first) == ITEM_KEYS
    assert isinstance(first["id"], int)
    assert first["package_type"] == "pypi" and first["status"] == "default"
    assert first["pipelines"] == [] and first["tags"] == []
    assert first["_links"] == {
        "web_path": f"/api/v4/projects/{project.id}/packages/pypi/simple/demo-pkg/"}
    assert re.fullmatch(GITLAB_TIME, first["created_at"])
    uploaded = await registry.db.fetch_one(
        "SELECT min(uploaded_at) FROM package_files WHERE version = '1.0'")
    assert uploaded is not None
    assert first["created_at"] == uploaded[0].astimezone(UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    assert len({i["id"] for i in items}) == 3
    assert header(resp, "x-total") == "3" and header(resp, "x-total-pages") == "1"
    assert header(resp, "x-page") == "1" and header(resp, "x-per-page") == "20"
    assert header(resp, "x-next-page") == "" and header(resp, "x-prev-page") == ""
    assert set(links(resp)) == {"first", "last"}

    resp, item = await call(
        registry.stub, "GET", f"{packages_url(registry, project.id)}/{first['id']}", read)
    assert resp.code == 200 and item == first

    resp, files = await call(
        registry.stub, "GET", f"{packages_url(registry, project.id)}/{first['id']}/package_files",
        read)
    assert resp.code == 200
    assert header(resp, "x-total") == "3"
    assert [f["file_name"] for f in files] == [
        "Demo_Pkg-1.0-py3-none-any.whl", "Demo_Pkg-1.0.tar.gz", "Demo_Pkg-1.0-py3-none-any.whl"]
    for f, content in zip(files, [wheel, sdist, wheel], strict=True):
        assert set(f) == {"id", "package_id", "created_at", "file_name", "size", "file_md5",
                          "file_sha1", "file_sha256", "download_count", "last_downloaded_at",
                          "pipelines"}
        # Uploaded with a plain token: no pipeline (tests/test_trusted_publishing.py has one).
        assert f["pipelines"] == []
        assert f["package_id"] == first["id"]
        assert f["size"] == len(content)
        assert f["file_md5"] == hashlib.md5(content).hexdigest()
        assert f["file_sha256"] == hashlib.sha256(content).hexdigest()
        assert f["file_sha1"] is None
        assert re.fullmatch(GITLAB_TIME, f["created_at"])
    assert files[0]["id"] < files[1]["id"] < files[2]["id"]
    resp, desc = await call(
        registry.stub, "GET", f"{packages_url(registry, project.id)}/{first['id']}"
        "/package_files?order_by=file_name&sort=desc", read)
    assert [f["id"] for f in desc] == [files[1]["id"], files[2]["id"], files[0]["id"]]


@pytest_twisted.ensureDeferred
async def test_pagination_across_three_pages(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    for version in ("1.0", "2.0", "3.0", "4.0", "5.0"):
        await put(registry, project, write, "demo-pkg", version)
    base = packages_url(registry, project.id)
    everything = await listing(registry, project, read, "?sort=desc")
    assert everything == [f"demo-pkg {v}.0" for v in (5, 4, 3, 2, 1)]

    seen: list[str] = []
    url: str | None = base + "?sort=desc&per_page=2"
    pages = []
    while url is not None:
        resp, items = await call(registry.stub, "GET", url, read)
        assert resp.code == 200
        seen += [f"{i['name']} {i['version']}" for i in items]
        pages.append(resp)
        url = links(resp).get("next")
    assert seen == everything
    assert len(pages) == 3
    for number, resp in enumerate(pages, start=1):
        assert header(resp, "x-total") == "5"
        assert header(resp, "x-total-pages") == "3"
        assert header(resp, "x-page") == str(number)
        assert header(resp, "x-per-page") == "2"
        assert header(resp, "x-next-page") == (str(number + 1) if number < 3 else "")
        assert header(resp, "x-prev-page") == (str(number - 1) if number > 1 else "")
        rels = links(resp)
        assert set(rels) == {"first", "last"} | ({"prev"} if number > 1 else set()) | (
            {"next"} if number < 3 else set())
        for rel, link in rels.items():
            # Absolute, same path, the other parameters kept.
            parts = urlsplit(link)
            assert f"{parts.scheme}://{parts.netloc}" == registry.url
            assert parts.path == f"/api/v4/projects/{project.id}/packages"
            query = parse_qs(parts.query)
            assert query["sort"] == ["desc"] and query["per_page"] == ["2"]
            expected = {"first": 1, "last": 3, "prev": number - 1, "next": number + 1}[rel]
            assert query["page"] == [str(expected)]

    # Past the end: an empty page, no prev or next, as in GitLab.
    resp, items = await call(registry.stub, "GET", base + "?per_page=2&page=4", read)
    assert resp.code == 200 and items == []
    assert header(resp, "x-prev-page") == "" and header(resp, "x-next-page") == ""
    assert set(links(resp)) == {"first", "last"}
    # per_page above 100 counts as 100.
    resp, items = await call(registry.stub, "GET", base + "?per_page=500", read)
    assert resp.code == 200 and len(items) == 5
    assert header(resp, "x-per-page") == "100"


@pytest_twisted.ensureDeferred
async def test_links_use_base_url(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry, "acme/tools")
    await put(registry, project, write, "demo-pkg", "1.0")
    config = parse_config({"storage": {"path": str(registry.storage)},
                           "server": {"base_url": "https://pypi.example.com"}})
    site, _ = await build_site(reactor, config, registry.db)
    url = f"{STUB_URL}/api/v4/projects/acme%2Ftools/packages"
    resp, items = await call(StubClient(site.resource), "GET", url, read)
    assert resp.code == 200 and len(items) == 1
    assert links(resp)["first"] == (
        "https://pypi.example.com/api/v4/projects/acme%2Ftools/packages?page=1&per_page=20")


@pytest_twisted.ensureDeferred
async def test_filters_and_sorting(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    for name, version in (("Alpha_Tools", "1.0"), ("beta", "1.9"), ("beta", "1.10"),
                          ("beta", "2.0rc1"), ("alphabet", "0.1")):
        await put(registry, project, write, name, version)
    uploaded = ["Alpha_Tools 1.0", "beta 1.9", "beta 1.10", "beta 2.0rc1", "alphabet 0.1"]

    async def names(query: str) -> list[str]:
        return await listing(registry, project, read, query)

    assert await names("") == uploaded
    assert await names("?order_by=created_at&sort=desc") == uploaded[::-1]
    assert await names("?package_name=alpha") == ["Alpha_Tools 1.0", "alphabet 0.1"]
    # Matched on the normalised name, whatever the case and separators.
    assert await names("?package_name=ALPHA.t") == ["Alpha_Tools 1.0"]
    assert await names("?package_name=zeta") == []
    assert await names("?package_version=1.10") == ["beta 1.10"]
    assert await names("?package_version=2.0-RC1") == ["beta 2.0rc1"]
    assert await names("?package_name=beta&package_version=1.0") == []
    assert await names("?package_type=pypi") == uploaded
    assert await names("?package_type=npm") == []
    by_version = ["alphabet 0.1", "Alpha_Tools 1.0", "beta 1.9", "beta 1.10", "beta 2.0rc1"]
    assert await names("?order_by=version") == by_version
    assert await names("?order_by=version&sort=desc") == by_version[::-1]
    by_name = ["Alpha_Tools 1.0", "alphabet 0.1", "beta 1.9", "beta 1.10", "beta 2.0rc1"]
    assert await names("?order_by=name") == by_name
    assert await names("?order_by=name&sort=desc") == by_name[::-1]
    assert await names("?order_by=type") == uploaded
    assert await names("?order_by=version&per_page=2&page=2") == by_version[2:4]

    resp, _ = await call(
        registry.stub, "GET", packages_url(registry, project.id) + "?package_type=npm", read)
    assert header(resp, "x-total") == "0" and header(resp, "x-total-pages") == "1"

    for query, message in (("order_by=size", "order_by must be one of"),
                           ("sort=up", "sort must be one of"),
                           ("page=0", "page must be"), ("page=x", "page must be"),
                           ("page=99999999999", "page must be"),
                           ("per_page=-1", "per_page must be")):
        resp, body = await call(
            registry.stub, "GET", f"{packages_url(registry, project.id)}?{query}", read)
        assert resp.code == 400, query
        assert message in body.decode(), (query, body)


@pytest_twisted.ensureDeferred
async def test_access(registry: Any) -> None:
    private, write, read = await project_with_tokens(registry, "private")
    public, pub_write, pub_read = await project_with_tokens(registry, "public", public=True)
    await put(registry, private, write, "demo-pkg", "1.0")
    await put(registry, public, pub_write, "demo-pkg", "1.0")
    _, (own,) = await call(registry.stub, "GET", packages_url(registry, private.id), read)
    _, (foreign,) = await call(registry.stub, "GET", packages_url(registry, public.id), None)
    mine = f"{packages_url(registry, private.id)}/{own['id']}"
    files_url = mine + "/package_files"

    for url in (packages_url(registry, private.id), mine, files_url):
        resp, _ = await call(registry.stub, "GET", url)
        assert resp.code == 401, url
        assert resp.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="pypireg"']
        assert (await call(
            registry.stub, "GET", url, pub_read))[0].code == 404, url  # another project's
        assert (await call(registry.stub, "GET", url, read, private_token=True))[0].code == 200, url
        assert (await call(registry.stub, "GET", url, write))[0].code == 200, url

    # Another project's package id is not found, for reads and deletes.
    assert (await call(
        registry.stub, "GET", f"{packages_url(registry, private.id)}/{foreign['id']}",
        read))[0].code == 404
    assert (await call(
        registry.stub, "DELETE", f"{packages_url(registry, private.id)}/{foreign['id']}",
        write))[0].code == 404
    assert (await call(registry.stub, "GET", f"{packages_url(registry, private.id)}/{2**70}", read)
            )[0].code == 404

    # Deletes: anonymous 401, read token 403, another project's write token 404.
    _, (own_file,) = await call(registry.stub, "GET", files_url, read)
    for url in (mine, f"{files_url}/{own_file['id']}"):
        assert (await call(registry.stub, "DELETE", url))[0].code == 401
        resp, body = await call(registry.stub, "DELETE", url, read)
        assert resp.code == 403, body
        assert (await call(registry.stub, "DELETE", url, pub_write))[0].code == 404
        assert (await call(registry.stub, "DELETE", url, read, private_token=True))[0].code == 403
    assert (await call(
        registry.stub, "DELETE", f"{packages_url(registry, public.id)}/{foreign['id']}",
        write))[0].code == 403  # readable, not writable
    # Nothing was deleted.
    assert (await call(registry.stub, "GET", mine, read))[0].code == 200
    assert len(await listing(registry, public, pub_read)) == 1

    # Anonymous reads of a public project.
    resp, items = await call(registry.stub, "GET", packages_url(registry, public.id))
    assert resp.code == 200 and len(items) == 1


async def simple_page(registry: Any, project: Any, token: str, path: str = "") -> tuple[int, str]:
    resp = await registry.stub.get(f"{registry.api(project.id)}/simple/{path}",
                                   headers=basic(token))
    return resp.code, await resp.text()


@pytest_twisted.ensureDeferred
async def test_deletes(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    wheel = await put(registry, project, write, "demo-pkg", "1.0")
    await put(registry, project, write, "demo-pkg", "1.0", sdist=True)
    await put(registry, project, write, "demo-pkg", "2.0")
    await put(registry, project, write, "other", "0.1")
    stored = registry.stored_files()
    base = packages_url(registry, project.id)
    _, items = await call(registry.stub, "GET", base, read)
    ids = {f"{i['name']} {i['version']}": i["id"] for i in items}
    _, files = await call(registry.stub, "GET", f"{base}/{ids['demo-pkg 1.0']}/package_files", read)
    sdist_id = next(f["id"] for f in files if f["file_name"].endswith(".tar.gz"))

    # One file, with PRIVATE-TOKEN: gone from the index at once.
    resp, _ = await call(
        registry.stub, "DELETE", f"{base}/{ids['demo-pkg 1.0']}/package_files/{sdist_id}",
        write, private_token=True)
    assert resp.code == 204
    code, page = await simple_page(registry, project, read, "demo-pkg/")
    assert code == 200
    assert "demo_pkg-1.0.tar.gz" not in page and "demo_pkg-1.0-py3-none-any.whl" in page
    resp, _ = await call(
        registry.stub, "DELETE", f"{base}/{ids['demo-pkg 1.0']}/package_files/{sdist_id}",
        write)
    assert resp.code == 404
    # A file id of another package.
    resp, _ = await call(
        registry.stub, "DELETE", f"{base}/{ids['demo-pkg 2.0']}/package_files/{files[0]['id']}",
        write)
    assert resp.code == 404

    # A whole package (release): rows go, blobs stay for the garbage collector.
    resp, _ = await call(registry.stub, "DELETE", f"{base}/{ids['demo-pkg 1.0']}", write)
    assert resp.code == 204
    assert (await call(registry.stub, "GET", f"{base}/{ids['demo-pkg 1.0']}", read))[0].code == 404
    assert await listing(registry, project, read) == ["demo-pkg 2.0", "other 0.1"]
    code, page = await simple_page(registry, project, read, "demo-pkg/")
    assert "demo_pkg-1.0" not in page and "demo_pkg-2.0-py3-none-any.whl" in page
    sha = hashlib.sha256(wheel).hexdigest()
    resp = await treq.get(f"{registry.api(project.id)}/files/{sha}/demo_pkg-1.0-py3-none-any.whl",
                          headers=basic(read))
    assert resp.code == 404
    assert registry.stored_files() == stored
    assert (await call(
        registry.stub, "DELETE", f"{base}/{ids['demo-pkg 1.0']}", write))[0].code == 404

    # The last release of a package: the package leaves the index.
    assert (await call(
        registry.stub, "DELETE", f"{base}/{ids['demo-pkg 2.0']}", write))[0].code == 204
    assert (await simple_page(registry, project, read, "demo-pkg/"))[0] == 404
    code, page = await simple_page(registry, project, read)
    assert "demo-pkg" not in page and "other" in page
    # Or its last file.
    _, (other_file,) = await call(
        registry.stub, "GET", f"{base}/{ids['other 0.1']}/package_files", read)
    resp, _ = await call(
        registry.stub, "DELETE", f"{base}/{ids['other 0.1']}/package_files/{other_file['id']}",
        write)
    assert resp.code == 204
    assert (await call(registry.stub, "GET", f"{base}/{ids['other 0.1']}", read))[0].code == 404
    code, page = await simple_page(registry, project, read)
    assert "other" not in page
    assert await listing(registry, project, read) == []
    assert (await registry.db.fetch_one("SELECT count(*) FROM packages")) == (0,)

    # Uploading again makes a new package, with a new id.
    await put(registry, project, write, "demo-pkg", "1.0")
    _, (again,) = await call(registry.stub, "GET", base, read)
    assert again["version"] == "1.0" and again["id"] not in ids.values()
    assert (await simple_page(registry, project, read, "demo-pkg/"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_migration_backfills_existing_releases(db: Database) -> None:
    # Undo migration 3, add files the old way, migrate again.
    await db.execute("DROP TABLE package_versions")
    await db.execute("DELETE FROM schema_migrations WHERE version = 3")
    project = await db.fetch_one("INSERT INTO projects (path) VALUES ('acme') RETURNING id")
    assert project is not None
    package_ids = {}
    for name in ("a", "b"):
        row = await db.fetch_one("INSERT INTO packages (project_id, name, display_name)"
                                 " VALUES (%s, %s, %s) RETURNING id", (project[0], name, name))
        assert row is not None
        package_ids[name] = row[0]
    for name, version, filename, day in (("a", "1.0", "a-1.0.tar.gz", 3),
                                         ("a", "1.0", "a-1.0-py3-none-any.whl", 2),
                                         ("a", "2.0", "a-2.0.tar.gz", 4),
                                         ("b", "0.1", "b-0.1.tar.gz", 1)):
        await db.execute(
            "INSERT INTO package_files (package_id, version, filename, packagetype, size,"
            " sha256, md5, blake2_256, uploaded_at) VALUES (%s, %s, %s, 'sdist', 1, %s, '', '',"
            " timestamptz '2024-01-01 00:00:00+00' + %s * interval '1 day')",
            (package_ids[name], version, filename, "0" * 64, day))
    assert await migrate(db) == [3]
    rows = await db.fetch_all(
        "SELECT p.name, v.version, extract(day FROM v.created_at AT TIME ZONE 'UTC')::int"
        " FROM package_versions v JOIN packages p ON p.id = v.package_id ORDER BY v.id")
    # Numbered in order of first upload; created_at is that first upload.
    assert rows == [("b", "0.1", 2), ("a", "1.0", 3), ("a", "2.0", 5)]
