"""The home page, the sign-in URL, `/<path>` and the icon, through the real site in memory."""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import pytest_twisted

from pypireg.domain.names import normalize_name
from pypireg.http.web.favicon import ICON
from pypireg.http.web.home import ProjectOverview, home_page
from pypireg.http.web.layout import CONTENT_SECURITY_POLICY, SiteUrls
from pypireg.storage import groups as group_store
from pypireg.storage import packages as package_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.packages import NewFile
from tests.support.http import basic


async def get(reg: Any, path: str, token: str | None = None, method: str = "GET",
              **headers: bytes) -> tuple[int, str, Any]:
    h: dict[bytes, list[bytes]] = basic(token) if token else {}
    for key, value in headers.items():
        h[key.replace("_", "-").encode()] = [value]
    resp = await reg.stub.request(method, reg.url + path, headers=h, allow_redirects=False)
    return resp.code, (await resp.content()).decode("utf-8", "replace"), resp


def header(resp: Any, name: bytes) -> list[bytes]:
    return list(resp.headers.getRawHeaders(name, []))


async def add_files(reg: Any, project: Any, name: str, versions: list[str]) -> None:
    """Rows only: the home page counts packages, it never reads the files."""
    for version in versions:
        await package_store.record_file(reg.db, NewFile(
            project_id=project.id, name=normalize_name(name), display_name=name, version=version,
            filename=f"{name.replace('-', '_')}-{version}-py3-none-any.whl",
            packagetype="bdist_wheel", python_version="py3", size=1, sha256="0" * 64,
            md5="0" * 32, blake2_256="0" * 64, requires_python=None, summary=None,
            metadata_version="2.1", uploaded_by_token_id=None, metadata_sha256=None),
            reject_duplicates=False)


def listed(page: str) -> dict[str, tuple[str, str]]:
    """The home page's rows: project path → (visibility, package count)."""
    rows = re.findall(r'<tr><td data-label="Project"><a href="([^"]*)">([^<]*)</a></td>'
                      r'<td data-label="Visibility"><span class="badge">(\w+)</span></td>'
                      r'<td data-label="Packages" class="num">(\d+)</td></tr>', page)
    for href, path, _, _ in rows:
        assert href == f"/{path}/-/packages"
    return {path: (visibility, count) for _, path, visibility, count in rows}


@pytest_twisted.ensureDeferred
async def test_home_lists_what_each_caller_may_read(web: Any) -> None:
    db = web.db
    tools = await project_store.create_project(db, "acme/tools", public=True)
    secret = await project_store.create_project(db, "acme/secret")
    other = await project_store.create_project(db, "Zeta/other")
    off = await project_store.create_project(db, "acme/off", public=True)
    await project_store.create_project(db, "alpha", public=True)
    await project_store.update_project(db, off.id, packages_enabled=False)
    await add_files(web, tools, "demo-pkg", ["1.0", "1.1"])
    await add_files(web, tools, "other-lib", ["0.1"])
    await add_files(web, secret, "hidden-pkg", ["1.0"])
    await add_files(web, other, "zeta-pkg", ["1.0"])
    _, secret_read = await token_store.create_token(db, secret.id, "read")
    _, other_write = await token_store.create_token(db, other.id, "write")
    alice = await user_store.create_user(db, "alice")
    await user_store.add_member(db, secret.id, alice.id, "reporter")
    await user_store.add_member(db, other.id, alice.id, "developer")
    _, personal = await token_store.create_token(db, None, "read", kind="personal",
                                                 user_id=alice.id)

    code, page, resp = await get(web, "/")
    assert code == 200, page
    assert header(resp, b"content-type") == [b"text/html; charset=utf-8"]
    assert header(resp, b"cache-control") == [b"public, no-cache"]
    assert header(resp, b"vary") == [b"Authorization"]
    assert header(resp, b"content-security-policy") == [CONTENT_SECURITY_POLICY.encode()]
    # Public projects only, by path, with their packages; no private name anywhere.
    assert listed(page) == {"acme/tools": ("Public", "2"), "alpha": ("Public", "0")}
    assert "acme/secret" not in page and "hidden-pkg" not in page and "Zeta" not in page
    assert "acme/off" not in page  # packages disabled: its pages are 404
    assert '<a href="/?sign-in">Sign in with a token</a>' in page
    assert '<p class="meta" role="status">2 projects</p>' in page
    assert re.findall(r"<h1>([^<]*)</h1>", page) == ["Projects"]
    assert '<a class="brand" href="/">pypireg</a>' in page
    assert '<link rel="icon" href="/favicon.ico" type="image/x-icon">' in page

    code, page, resp = await get(web, "/", secret_read)
    assert code == 200
    assert header(resp, b"cache-control") == [b"private, no-cache"]
    assert listed(page) == {"acme/secret": ("Private", "1"), "acme/tools": ("Public", "2"),
                            "alpha": ("Public", "0")}
    assert "Sign in" not in page and "Your browser keeps the token" in page
    # Rows sort by path whatever the case; a personal token reaches its memberships.
    code, page, _ = await get(web, "/", personal)
    assert list(listed(page)) == ["acme/secret", "acme/tools", "alpha", "Zeta/other"]
    code, page, _ = await get(web, "/", private_token=other_write.encode())
    assert list(listed(page)) == ["acme/tools", "alpha", "Zeta/other"]
    # A bad token is told so, as on every other page.
    code, page, resp = await get(web, "/", "pypireg_" + "x" * 43)
    assert code == 401 and "acme" not in page
    assert header(resp, b"www-authenticate") == [b'Basic realm="pypireg"']

    code, body, resp = await get(web, "/", method="HEAD")
    assert code == 200 and body == ""


@pytest_twisted.ensureDeferred
async def test_home_page_escapes_and_says_when_nothing_is_public(web: Any) -> None:
    code, page, _ = await get(web, "/")
    assert code == 200
    assert '<p class="empty" role="status">No public projects yet.</p>' in page
    await project_store.create_project(web.db, "acme/private")
    code, page, _ = await get(web, "/")
    assert "No public projects yet." in page and "acme" not in page
    # Paths are escaped (a path cannot hold markup, but the page must not rely on it).
    html = home_page(SiteUrls("", "http://h"), [ProjectOverview('a"<b>', True, 1)],
                     False).decode()
    assert 'a"<b>' not in html and "a&quot;&lt;b&gt;" in html
    assert 'href="/a%22%3Cb%3E/-/packages"' in html


@pytest_twisted.ensureDeferred
async def test_sign_in_asks_until_a_valid_token_comes(web: Any) -> None:
    project = await project_store.create_project(web.db, "acme/secret")
    _, read = await token_store.create_token(web.db, project.id, "read")

    code, page, resp = await get(web, "/?sign-in")
    assert code == 401
    assert header(resp, b"www-authenticate") == [b'Basic realm="pypireg"']
    assert header(resp, b"cache-control") == [b"no-store"]
    assert header(resp, b"content-type") == [b"text/html; charset=utf-8"]
    assert "<h1>Sign in</h1>" in page and "<code>__token__</code>" in page
    assert '<a href="/">Back to the public projects</a>' in page
    code, page, resp = await get(web, "/?sign-in", "pypireg_" + "x" * 43)
    assert code == 401 and "<h1>Sign in</h1>" in page
    assert header(resp, b"www-authenticate") == [b'Basic realm="pypireg"']
    # Signed in: the home page, with what the token reads.
    code, page, resp = await get(web, "/?sign-in", read)
    assert code == 200
    assert header(resp, b"cache-control") == [b"private, no-cache"]
    assert "<h1>Projects</h1>" in page and "acme/secret" in page
    # The flag alone, as the page links it; other queries are the home page.
    code, page, _ = await get(web, "/?sign-in=1")
    assert code == 200 and "acme/secret" not in page


@pytest_twisted.ensureDeferred
async def test_failed_sign_ins_are_rate_limited(web: Any) -> None:
    web.authorizer.failures.limit = 3
    for _ in range(3):
        assert (await get(web, "/?sign-in", "pypireg_" + "x" * 43))[0] == 401
    code, _, resp = await get(web, "/?sign-in", "pypireg_" + "x" * 43)
    assert code == 429 and header(resp, b"retry-after")


@pytest_twisted.ensureDeferred
async def test_a_path_leads_to_its_project_or_group_packages(web: Any) -> None:
    db = web.db
    public = await project_store.create_project(db, "acme/tools", public=True)
    private = await project_store.create_project(db, "acme/secret")
    await group_store.create_group(db, "acme", public=True)
    await group_store.create_group(db, "hush")
    hushed = await project_store.create_project(db, "hush/app")
    _, read = await token_store.create_token(db, private.id, "read")
    _, hush_read = await token_store.create_token(db, hushed.id, "read")

    async def location(path: str, token: str | None = None) -> str:
        code, _, resp = await get(web, path, token)
        assert code == 302, (path, code)
        assert header(resp, b"cache-control") == [b"no-store"]
        return header(resp, b"location")[0].decode()

    assert await location("/acme/tools") == "/acme/tools/-/packages"
    assert await location("/acme/tools/") == "/acme/tools/-/packages"
    # Another spelling, or the id, leads to the canonical path.
    assert await location("/ACME/Tools") == "/acme/tools/-/packages"
    assert await location(f"/{public.id}") == "/acme/tools/-/packages"
    assert await location("/acme/secret", read) == "/acme/secret/-/packages"
    # A group's path (GitLab's group URL) leads to the group's packages.
    assert await location("/acme") == "/groups/acme/-/packages"
    assert await location("/hush", hush_read) == "/groups/hush/-/packages"

    # What the caller may not read, existing or not, answers as a missing project.
    for path in ("/acme/secret", "/acme/nothing", f"/{private.id}", "/hush", "/hush/app"):
        code, body, resp = await get(web, path)
        assert code == 401, path
        assert header(resp, b"www-authenticate") == [b'Basic realm="pypireg"']
        assert not header(resp, b"location") and "secret" not in body
    for path in ("/acme/secret", "/acme/nothing", "/hush"):
        code, _, resp = await get(web, path, hush_read if path != "/hush" else read)
        assert code == 404, path
        assert not header(resp, b"location")
    code, _, _ = await get(web, "/acme/secret", "pypireg_" + "x" * 43)
    assert code == 401

    # Other methods stay 404, as for any unknown URL; HEAD is answered like GET.
    for method in ("POST", "PUT", "DELETE"):
        assert (await get(web, "/acme/tools", method=method))[0] == 404
        assert (await get(web, "/no/such/thing", method=method))[0] == 404
    code, body, resp = await get(web, "/acme/tools", method="HEAD")
    assert code == 302 and body == ""


@pytest_twisted.ensureDeferred
async def test_top_level_paths_never_take_api_or_ops_urls(web: Any) -> None:
    await project_store.create_project(web.db, "acme", public=True)
    code, body, _ = await get(web, "/-/health")
    assert (code, body) == (200, "ok\n")
    for path in ("/api", "/api/v4", "/API/v4/x", "/groups", "/groups/acme", "/-", "/-/x",
                 "/acme/-", "/acme/-/x"):
        code, _, resp = await get(web, path)
        assert code == 404, path
        assert not header(resp, b"location"), path
    # The upload URL, with or without its slash, is the upload route's: 405 to a GET.
    for path in ("/api/v4/projects/1/packages/pypi", "/api/v4/projects/1/packages/pypi/"):
        code, _, resp = await get(web, path)
        assert code == 405, path
        assert not header(resp, b"location"), path
    # A segment that merely starts like a reserved one is a path like any other.
    code, _, _ = await get(web, "/apis")
    assert code == 401
    # Files every site is asked for, and paths no project can have, are plain 404s
    # (no sign-in prompt for a crawler's robots.txt).
    for path in ("/robots.txt", "/Apple-Touch-Icon.png", "/.env", "/acme/.git", "/a/_x",
                 "/acme/tools.atom"):
        code, body, resp = await get(web, path)
        assert (code, body) == (404, "No such URL on this registry.\n"), path
        assert not header(resp, b"www-authenticate"), path
    # The trailing-slash redirect of the simple index is untouched.
    code, _, resp = await get(web, "/api/v4/projects/1/packages/pypi/simple")
    assert code == 301
    assert header(resp, b"location") == [b"/api/v4/projects/1/packages/pypi/simple/"]
    code, _, resp = await get(web, "/api/v4/projects/1/packages/pypi/simple/demo")
    assert code == 301
    assert header(resp, b"location") == [b"/api/v4/projects/1/packages/pypi/simple/demo/"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    # The image data inflates to one filter byte and 4 bytes (RGBA) per pixel per row.
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    assert len(zlib.decompress(data[start:start + length])) == height * (1 + 4 * width)
    return width, height


@pytest_twisted.ensureDeferred
async def test_favicon_is_a_cached_icon(web: Any) -> None:
    code, _, resp = await get(web, "/favicon.ico")
    assert code == 200
    body = await resp.content()
    assert body == ICON and len(ICON) < 1024
    assert header(resp, b"content-type") == [b"image/x-icon"]
    assert header(resp, b"cache-control") == [b"public, max-age=2592000"]
    assert header(resp, b"x-content-type-options") == [b"nosniff"]
    [etag] = header(resp, b"etag")
    # An ICO directory of PNG images, 16 and 32 pixels square.
    reserved, kind, count = struct.unpack("<HHH", ICON[:6])
    assert (reserved, kind, count) == (0, 1, 2)
    sizes = []
    for i in range(count):
        width, height, _, _, _, bits, size, offset = struct.unpack(
            "<BBBBHHII", ICON[6 + 16 * i:22 + 16 * i])
        assert bits == 32 and offset + size <= len(ICON)
        assert png_size(ICON[offset:offset + size]) == (width, height)
        sizes.append(width)
    assert sizes == [16, 32]

    code, body, resp = await get(web, "/favicon.ico", if_none_match=etag)
    assert code == 304 and body == ""
    assert header(resp, b"cache-control") == [b"public, max-age=2592000"]
    code, body, _ = await get(web, "/favicon.ico", method="HEAD")
    assert code == 200 and body == ""
