"""The Packages web pages over real TCP in-process: content, access, escaping, routing."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import pytest_twisted
import treq

from pypireg.http.web.layout import CONTENT_SECURITY_POLICY, SiteUrls
from pypireg.http.web.pages import (
    human_size,
    latest_version,
    package_page,
    render_description,
)
from pypireg.storage import groups as group_store
from pypireg.storage import packages as package_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.projects import Project
from pypireg.storage.releases import FileDetail
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support.http import basic, project_with_tokens, upload

README = """# Demo heading

Some *emphasis* and a list:

- one
- two
"""


def metadata(name: str, version: str, *, summary: str = "A demo package",
             readme: str = README, content_type: str | None = "text/markdown",
             requires_python: str | None = ">=3.9") -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             f"Summary: {summary}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    if content_type:
        lines.append(f"Description-Content-Type: {content_type}")
    return "\n".join(lines) + "\n\n" + readme


async def publish(reg: Any, project: Any, token: str, name: str, version: str, **kw: Any
                  ) -> bytes:
    wheel = wheel_bytes(name, version, metadata=metadata(name, version, **kw))
    code, text, _ = await upload(reg, project.id, token, wheel_filename(name, version), wheel,
                                 name=name, version=version)
    assert code == 201, text
    return wheel


async def get(reg: Any, path: str, token: str | None = None, **headers: bytes
              ) -> tuple[int, str, Any]:
    h: dict[bytes, list[bytes]] = basic(token) if token else {}
    for key, value in headers.items():
        h[key.replace("_", "-").encode()] = [value]
    resp = await treq.get(reg.url + path, headers=h, allow_redirects=False)
    return resp.code, (await resp.content()).decode("utf-8", "replace"), resp


@pytest_twisted.ensureDeferred
async def test_project_list_page_and_filter(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry, "acme/tools", public=True)
    await publish(registry, project, write, "demo-pkg", "1.0")
    await publish(registry, project, write, "demo-pkg", "1.1")
    await publish(registry, project, write, "demo-pkg", "2.0rc1")
    await publish(registry, project, write, "Other_Lib", "0.5")
    await publish(registry, project, write, "Other_Lib", "0.6")
    await package_store.set_yanked(registry.db, project.id, "other-lib", "0.6", yanked=True,
                                   reason="broken")

    code, page, resp = await get(registry, "/acme/tools/-/packages")
    assert code == 200, page
    assert resp.headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    assert resp.headers.getRawHeaders(b"content-security-policy") == [
        CONTENT_SECURITY_POLICY.encode()]
    assert "<header" in page and "<nav" in page and "<main" in page
    rows = re.findall(r"<tr><td.*?</tr>", page)
    assert len(rows) == 2
    # Latest: the highest final release that is not yanked.
    assert '<a href="/acme/tools/-/packages/demo-pkg">demo-pkg</a>' in rows[0]
    assert '<td data-label="Latest version">1.1</td>' in rows[0]
    assert '<td data-label="Files" class="num">3</td>' in rows[0]
    assert '<a href="/acme/tools/-/packages/other-lib">Other_Lib</a>' in rows[1]
    assert '<td data-label="Latest version">0.5</td>' in rows[1]
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:]+Z">', rows[1])
    # The install snippet has this registry's absolute URL, from the Host header.
    index = f"{registry.url}/api/v4/projects/{project.id}/packages/pypi/simple"
    assert f"pip install --index-url &quot;{index}&quot; PACKAGE" in page
    assert '<label for="pypireg-q">' in page

    for query in ("other", "OTHER.lib", "other_"):
        code, page, _ = await get(registry, f"/acme/tools/-/packages?q={query}")
        assert code == 200
        assert "Other_Lib" in page and "demo-pkg</a>" not in page
        assert f'value="{query}"' in page
    code, page, _ = await get(registry, "/acme/tools/-/packages?q=nothing-like-it")
    assert "No package name contains “nothing-like-it”" in page

    # Another spelling of the project (its id, another case) redirects.
    code, _, resp = await get(registry, f"/{project.id}/-/packages?q=demo")
    assert code == 302
    assert resp.headers.getRawHeaders(b"location") == [b"/acme/tools/-/packages?q=demo"]
    code, _, resp = await get(registry, "/ACME/Tools/-/packages/Demo_Pkg")
    assert code == 302
    assert resp.headers.getRawHeaders(b"location") == [b"/acme/tools/-/packages/demo-pkg"]


@pytest_twisted.ensureDeferred
async def test_package_page(registry: Any) -> None:
    project = await project_store.create_project(registry.db, "acme/tools")
    _, write = await token_store.create_token(registry.db, project.id, "write",
                                              description="CI upload")
    _, read = await token_store.create_token(registry.db, project.id, "read")
    old = await publish(registry, project, write, "demo-pkg", "1.0", readme="# Old readme\n")
    await publish(registry, project, write, "demo-pkg", "1.1")
    await publish(registry, project, write, "demo-pkg", "1.2")
    await package_store.set_yanked(registry.db, project.id, "demo-pkg", "1.2", yanked=True,
                                   reason="Security <hole>")

    code, page, resp = await get(registry, "/acme/tools/-/packages/demo-pkg", read)
    assert code == 200, page
    assert resp.headers.getRawHeaders(b"cache-control") == [b"private, no-cache"]
    # Versions newest first, the yanked one marked with its reason.
    headings = re.findall(r'<h3 id="pypireg-v-([^"]+)">', page)
    assert headings == ["1.2", "1.1", "1.0"]
    assert '1.2 <span class="badge yanked">yanked</span>' in page
    assert "Yanked: Security &lt;hole&gt;" in page
    assert '1.1 <span class="badge latest">latest</span>' in page
    assert '<h1>demo-pkg <span class="version">1.1</span></h1>' in page
    # The README of the latest release, rendered from Markdown.
    assert re.search(r'<h1 id="user-content-demo-heading">Demo heading', page)
    assert "<em>emphasis</em>" in page and "Old readme" not in page
    # Files: download link (the simple index's URL), size, sha256, uploader.
    sha = hashlib.sha256(old).hexdigest()
    href = f"/api/v4/projects/{project.id}/packages/pypi/files/{sha}/demo_pkg-1.0-py3-none-any.whl"
    assert f'<a class="filename" href="{href}">demo_pkg-1.0-py3-none-any.whl</a>' in page
    assert f"sha256: {sha}" in page
    assert f'<td data-label="Size" class="num">{human_size(len(old))}</td>' in page
    assert page.count('<td data-label="Uploaded by">CI upload</td>') == 3
    assert "Requires Python <strong>&gt;=3.9</strong>" in page
    assert '<p class="summary">A demo package</p>' in page
    # The download link works with the same credentials.
    code, _, resp = await get(registry, href, read)
    assert code == 200
    # Copy-ready snippets with this registry's URL (private: the token variable).
    api = f"{registry.url}/api/v4/projects/{project.id}/packages/pypi"
    creds = registry.url.replace("http://", "http://__token__:${PYPIREG_TOKEN}@")
    index = f"{creds}/api/v4/projects/{project.id}/packages/pypi/simple"
    assert f"pip install --index-url &quot;{index}&quot; demo-pkg==1.1" in page
    assert f"uv pip install --index-url &quot;{index}&quot; demo-pkg==1.1" in page
    assert f"[pypireg]\nrepository = {api}\nusername = __token__\n" in page
    assert "twine upload --repository pypireg dist/*" in page

    # With the Host the client used (a proxy's name, say).
    code, page, _ = await get(registry, "/acme/tools/-/packages/demo-pkg", read,
                              host=b"pypi.internal:8443")
    assert "http://__token__:${PYPIREG_TOKEN}@pypi.internal:8443/api/v4/projects/" in page
    # A Host header that is not a host name is refused at the front, never echoed.
    code, page, _ = await get(registry, "/acme/tools/-/packages/demo-pkg", read,
                              host=b'evil"><script>')
    assert code == 400 and "evil" not in page and "Malformed Host header" in page

    code, _, _ = await get(registry, "/acme/tools/-/packages/unknown", read)
    assert code == 404
    code, _, _ = await get(registry, "/acme/tools/-/packages/not%20a%20name", read)
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_access_rules(registry: Any) -> None:
    private, write, read = await project_with_tokens(registry, "secret/app")
    public, pub_write, _ = await project_with_tokens(registry, "open/app", public=True)
    await publish(registry, private, write, "hidden-pkg", "1.0")
    await publish(registry, public, pub_write, "shown-pkg", "1.0")

    for path in ("/secret/app/-/packages", "/secret/app/-/packages/hidden-pkg",
                 "/no/such/project/-/packages", f"/{private.id}/-/packages"):
        code, body, resp = await get(registry, path)
        assert code == 401, path
        assert resp.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="pypireg"']
        assert "hidden-pkg" not in body
    code, body, _ = await get(registry, "/secret/app/-/packages", read)
    assert code == 200 and "hidden-pkg" in body
    code, body, _ = await get(registry, "/secret/app/-/packages/hidden-pkg", write)
    assert code == 200 and "hidden-pkg" in body
    # PRIVATE-TOKEN works too; another project's token sees nothing.
    code, _, _ = await get(registry, "/secret/app/-/packages", private_token=read.encode())
    assert code == 200
    code, body, _ = await get(registry, "/secret/app/-/packages", pub_write)
    assert code == 404 and "hidden-pkg" not in body
    code, _, _ = await get(registry, "/secret/app/-/packages", "pypireg_" + "x" * 43)
    assert code == 401

    code, body, resp = await get(registry, "/open/app/-/packages")
    assert code == 200 and "shown-pkg" in body
    assert resp.headers.getRawHeaders(b"cache-control") == [b"public, no-cache"]
    code, body, _ = await get(registry, "/open/app/-/packages/shown-pkg")
    assert code == 200
    assert f"&quot;{registry.url}/api/v4/projects/{public.id}/packages/pypi/simple&quot;" in body
    assert "PYPIREG_TOKEN" not in body

    await project_store.update_project(registry.db, private.id, packages_enabled=False)
    code, _, _ = await get(registry, "/secret/app/-/packages", read)
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_group_page(registry: Any) -> None:
    await group_store.create_group(registry.db, "acme", public=True)
    await group_store.create_group(registry.db, "hush")
    private, write, read = await project_with_tokens(registry, "acme/private")
    public, pub_write, _ = await project_with_tokens(registry, "acme/public", public=True)
    hushed, hush_write, _ = await project_with_tokens(registry, "hush/app", public=True)
    await publish(registry, private, write, "secret-pkg", "1.0")
    await publish(registry, public, pub_write, "demo-pkg", "2.0")
    await publish(registry, public, pub_write, "demo-pkg", "2.1")
    await publish(registry, hushed, hush_write, "quiet-pkg", "1.0")

    code, body, _ = await get(registry, "/groups/acme/-/packages")
    assert code == 200, body
    assert "demo-pkg" in body and "secret-pkg" not in body
    assert '<a href="/acme/public/-/packages">acme/public</a>' in body
    assert '<td data-label="Latest version">2.1</td>' in body
    code, body, _ = await get(registry, "/groups/acme/-/packages", read)
    assert "demo-pkg" in body and "secret-pkg" in body
    assert '<a href="/acme/private/-/packages/secret-pkg">secret-pkg</a>' in body
    code, body, _ = await get(registry, "/groups/acme/-/packages?q=secret", read)
    assert "secret-pkg" in body and "demo-pkg</a>" not in body

    code, body, resp = await get(registry, "/groups/hush/-/packages")
    assert code == 401 and "quiet-pkg" not in body
    assert resp.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="pypireg"']
    code, body, _ = await get(registry, "/groups/hush/-/packages", hush_write)
    assert code == 200 and "quiet-pkg" in body
    code, _, _ = await get(registry, "/groups/hush/-/packages", read)
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_escaping_and_sanitising(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry, "acme", public=True)
    evil_readme = (
        "# Title\n\n<script>alert('readme')</script>\n\n"
        '<img src="x.png" onerror="alert(1)">\n\n[click](javascript:alert(2))\n\n'
        '<a href="/ok" onclick="alert(3)" style="color:red">link</a>\n'
    )
    await publish(registry, project, write, "demo-pkg", "1.0",
                  summary="<script>alert('summary')</script>", readme=evil_readme)

    code, page, _ = await get(registry, "/acme/-/packages/demo-pkg")
    assert code == 200
    assert "&lt;script&gt;alert(&#x27;summary&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "onerror" not in page and "onclick" not in page and "javascript:" not in page
    assert 'style="' not in page
    assert '<img src="x.png">' in page

    code, page, _ = await get(registry, "/acme/-/packages?q=%22%3E%3Cscript%3Ex")
    assert code == 200
    assert "<script" not in page
    assert 'value="&quot;&gt;&lt;script&gt;x"' in page


@pytest_twisted.ensureDeferred
async def test_routes_do_not_shadow_the_api(registry: Any) -> None:
    await group_store.create_group(registry.db, "acme", public=True)
    project, write, _ = await project_with_tokens(registry, "acme/tools", public=True)
    await publish(registry, project, write, "demo-pkg", "1.0")

    code, body, _ = await get(registry, "/-/health")
    assert (code, body) == (200, "ok\n")
    code, body, resp = await get(registry, f"/api/v4/projects/{project.id}/packages")
    assert code == 200 and body.startswith("[")
    assert resp.headers.getRawHeaders(b"content-type") == [b"application/json"]
    code, body, _ = await get(registry, "/api/v4/projects/acme%2Ftools/packages/pypi/simple/")
    assert code == 200 and "demo-pkg" in body and "<main" not in body
    code, body, _ = await get(registry, "/api/v4/groups/acme/-/packages/pypi/simple/")
    assert code == 200 and "demo-pkg" in body and "<main" not in body
    code, body, _ = await get(registry, "/api/v4/groups/acme/-/packages/pypi/simple/demo-pkg/")
    assert code == 200 and "demo_pkg-1.0" in body
    # Reserved first segments are never projects (not even a 401 for them).
    for path in ("/api/v4/groups/acme/-/packages/pypi", "/api/-/packages",
                 "/groups/acme/-/packages/demo-pkg", "/-/-/packages"):
        code, _, _ = await get(registry, path)
        assert code == 404, path
    # The group page is the group's, not a project called "groups/acme".
    code, body, _ = await get(registry, "/groups/acme/-/packages")
    assert code == 200 and "Group <strong>acme</strong>" in body


def test_latest_version_and_sizes() -> None:
    assert latest_version({"1.0": False, "1.10": False, "1.9": False}) == "1.10"
    assert latest_version({"1.0": False, "2.0rc1": False}) == "1.0"
    assert latest_version({"1.0": True, "2.0rc1": False}) == "2.0rc1"
    assert latest_version({"1.0": True, "0.9": True}) == "1.0"
    assert latest_version({"1.0": False, "1.1": True}) == "1.0"
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]


def test_render_description_types() -> None:
    assert "<h1" in render_description("# Hi\n", "text/markdown")
    assert "<h1" in render_description("# Hi\n", "text/markdown; charset=UTF-8; variant=GFM")
    assert "<h1" in render_description("# Hi\n", "text/markdown; variant=CommonMark")
    # No type: reStructuredText, as on PyPI.
    rst = render_description("Title\n=====\n\nSome *text*.\n", None)
    assert "<em>text</em>" in rst
    assert "<em>text</em>" in render_description("Title\n=====\n\nSome *text*.\n",
                                                 "text/x-rst; charset=UTF-8")
    # reStructuredText the renderer refuses (raw HTML) falls back to plain text.
    refused = render_description(".. raw:: html\n\n   <script>x()</script>\n", "text/x-rst")
    assert "<script" not in refused and "&lt;script&gt;" in refused
    assert render_description("a <b>\nc", "text/plain") == "a &lt;b&gt;<br>c"
    assert render_description("a <b>", "application/x-weird") == "a &lt;b&gt;"
    assert "&lt;b&gt;" in render_description("a <b>", "broken;;\n type")


def test_package_page_with_base_url() -> None:
    project = Project(7, "acme/tools", False, True, False, datetime(2024, 1, 1, tzinfo=UTC))
    row = FileDetail(1, "Demo.Pkg", "1.0", "demo_pkg-1.0.tar.gz", "sdist", 2048, "a" * 64,
                     None, None, datetime(2024, 5, 1, 12, 30, tzinfo=UTC), False, None, None,
                     None, None, 0)
    urls = SiteUrls("https://pypi.example/reg", "https://pypi.example/reg")
    page = package_page(urls, project, "demo-pkg", [row], None).decode()
    assert ('href="https://pypi.example/reg/api/v4/projects/7/packages/pypi/files/'
            f'{"a" * 64}/demo_pkg-1.0.tar.gz"') in page
    assert "https://__token__:${PYPIREG_TOKEN}@pypi.example/reg/api/v4/projects/7/" in page
    assert 'href="https://pypi.example/reg/acme/tools/-/packages"' in page
    assert '<time datetime="2024-05-01T12:30:00Z">2024-05-01 12:30 UTC</time>' in page
    assert '<span class="meta">unknown</span>' in page
    assert "This release has no description." in page


@pytest_twisted.ensureDeferred
async def test_head(registry: Any) -> None:
    # A renderer that fails (it runs in a worker process now, out of a
    # monkeypatch's reach) is tested in test_readme_render.py.
    project, write, _ = await project_with_tokens(registry, "acme", public=True)
    await publish(registry, project, write, "demo-pkg", "1.0", readme="# Title <b>\n")
    resp = await treq.head(registry.url + "/acme/-/packages/demo-pkg")
    assert resp.code == 200 and await resp.content() == b""
    code, page, _ = await get(registry, "/acme/-/packages/demo-pkg")
    assert code == 200 and '<h1 id="user-content-title-">Title' in page


@pytest_twisted.ensureDeferred
async def test_uploader_is_the_person_or_deploy_user_behind_the_token(registry: Any) -> None:
    project = await project_store.create_project(registry.db, "acme/people")
    alice = await user_store.create_user(registry.db, "alice")
    await user_store.add_member(registry.db, project.id, alice.id, "developer")
    _, personal = await token_store.create_token(registry.db, None, "write", kind="personal",
                                                 user_id=alice.id)
    deploy, deploy_secret = await token_store.create_token(
        registry.db, project.id, "write", kind="deploy", username="ci-bot")
    _, read = await token_store.create_token(registry.db, project.id, "read")
    await publish(registry, project, personal, "demo-pkg", "1.0")
    wheel = wheel_bytes("demo-pkg", "1.1")
    ctype, body = upload_form("demo-pkg", "1.1", wheel_filename("demo-pkg", "1.1"), wheel)
    resp = await treq.post(registry.api(project.id), data=body, headers={
        b"Content-Type": [ctype], **basic(deploy_secret, user=deploy.username or "")})
    assert resp.code == 201, await resp.text()

    code, page, _ = await get(registry, "/acme/people/-/packages/demo-pkg", read)
    assert code == 200, page
    assert '<td data-label="Uploaded by">alice</td>' in page
    assert ('<td data-label="Uploaded by">ci-bot <span class="meta">(deploy token)</span></td>'
            in page)
