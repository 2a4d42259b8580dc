"""The simple API in both formats, core metadata files, yanking, conditional GETs.

Reads and yanks go through the real site in memory (StubTreq); the uploads
that set the data up use the real port.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import pytest
import pytest_twisted
from pypi_simple import IndexPage, ProjectPage

from pypireg.admin.cli import build_parser, run_command
from pypireg.http.negotiation import HTML_V1, JSON_V1, TEXT_HTML, choose_format
from pypireg.storage.blobs import BlobStore
from tests.distributions import (
    metadata_text,
    sdist_bytes,
    sdist_filename,
    wheel_bytes,
    wheel_filename,
)
from tests.support import reactor
from tests.support.http import basic, project_with_tokens, upload

PIP_ACCEPT = f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01"


@pytest.mark.parametrize(("accept", "fmt", "expected"), [
    (None, None, TEXT_HTML),
    ("*/*", None, TEXT_HTML),
    ("text/html", None, TEXT_HTML),
    (PIP_ACCEPT, None, JSON_V1),
    (f"{HTML_V1}, {JSON_V1};q=0.5", None, HTML_V1),
    ("application/vnd.pypi.simple.latest+json", None, JSON_V1),
    ("application/vnd.pypi.simple.latest+html", None, HTML_V1),
    ("application/*;q=0.5, text/html;q=0.2", None, HTML_V1),
    ("application/xml", None, None),
    ("text/html;q=0", None, None),
    ("text/html", JSON_V1, JSON_V1),
    (None, "application/pdf", None),
])
def test_choose_format(accept: str | None, fmt: str | None, expected: str | None) -> None:
    assert choose_format(accept, fmt) == expected


async def _setup(registry: Any) -> tuple[Any, str, str, bytes, bytes]:
    project, write, read = await project_with_tokens(registry)
    wheel = wheel_bytes("demo-pkg", "1.0", requires_python=">=3.8")
    assert (await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                         wheel))[0] == 201
    sdist = sdist_bytes("demo-pkg", "1.0")
    assert (await upload(registry, project.id, write, sdist_filename("demo-pkg", "1.0"),
                         sdist))[0] == 201
    old = sdist_bytes("demo-pkg", "0.9", metadata=metadata_text("demo-pkg", "0.9"))
    assert (await upload(registry, project.id, write, sdist_filename("demo-pkg", "0.9"), old,
                         version="0.9"))[0] == 201
    return project, write, read, wheel, sdist


async def get(client: Any, url: str, token: str, accept: str | None = None, **headers: str
              ) -> Any:
    h = basic(token)
    if accept:
        h[b"Accept"] = [accept.encode()]
    for k, v in headers.items():
        h[k.replace("_", "-").encode()] = [v.encode()]
    resp = await client.get(url, headers=h)
    return resp, await resp.content()


@pytest_twisted.ensureDeferred
async def test_json_and_html_detail_pages(registry: Any) -> None:
    project, _, read, wheel, _ = await _setup(registry)
    url = registry.api(project.id) + "/simple/demo-pkg/"

    resp, body = await get(registry.stub, url, read, PIP_ACCEPT)
    assert resp.headers.getRawHeaders(b"content-type") == [JSON_V1.encode()]
    assert resp.headers.getRawHeaders(b"vary") == [b"Accept, Authorization"]
    doc = json.loads(body)
    assert doc["meta"] == {"api-version": "1.4"}
    assert doc["name"] == "demo-pkg"
    assert doc["versions"] == ["0.9", "1.0"]
    by_name = {f["filename"]: f for f in doc["files"]}
    whl = by_name["demo_pkg-1.0-py3-none-any.whl"]
    assert whl["hashes"] == {"sha256": hashlib.sha256(wheel).hexdigest()}
    assert whl["size"] == len(wheel)
    assert whl["requires-python"] == ">=3.8"
    assert whl["upload-time"].endswith("Z")
    assert whl["yanked"] is False
    assert whl["core-metadata"] == whl["dist-info-metadata"] != False  # noqa: E712
    # Sdists before Metadata-Version 2.2 offer no core metadata file.
    assert by_name["demo_pkg-0.9.tar.gz"]["core-metadata"] is False
    assert by_name["demo_pkg-1.0.tar.gz"]["core-metadata"] != False  # noqa: E712

    # An independent parser agrees, in both formats.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = ProjectPage.from_json_data(doc, base_url=url)
    assert {p.filename for p in page.packages} == set(by_name)
    resp, html = await get(registry.stub, url, read, HTML_V1)
    assert resp.headers.getRawHeaders(b"content-type") == [HTML_V1.encode()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hpage = ProjectPage.from_html("demo-pkg", html, base_url=url)
    assert hpage.repository_version == "1.4"
    hwhl = next(p for p in hpage.packages if p.filename.endswith(".whl"))
    assert hwhl.digests == {"sha256": hashlib.sha256(wheel).hexdigest()}
    assert hwhl.requires_python == ">=3.8"
    assert hwhl.has_metadata is True

    # The metadata file (PEP 658/714) is the wheel's METADATA.
    resp, metadata = await get(registry.stub, hwhl.url + ".metadata", read)
    assert resp.code == 200
    assert metadata.decode().startswith("Metadata-Version: 2.1\nName: demo-pkg")
    assert whl["core-metadata"] == {"sha256": hashlib.sha256(metadata).hexdigest()}


@pytest_twisted.ensureDeferred
async def test_project_list_negotiation_and_conditional_get(registry: Any) -> None:
    project, _, read, _, _ = await _setup(registry)
    url = registry.api(project.id) + "/simple/"
    resp, body = await get(registry.stub, url, read, JSON_V1)
    assert json.loads(body) == {"meta": {"api-version": "1.4"}, "projects": [{"name": "demo-pkg"}]}
    resp, body = await get(registry.stub, url, read, "text/html")
    assert resp.headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    index = IndexPage.from_html(body)
    assert index.projects == ["demo-pkg"] and index.repository_version == "1.4"
    etag = resp.headers.getRawHeaders(b"etag")[0].decode()
    resp, body = await get(registry.stub, url, read, "text/html", If_None_Match=etag)
    assert resp.code == 304 and body == b""
    resp, body = await get(registry.stub, url, read, JSON_V1, If_None_Match=etag)
    assert resp.code == 200  # another representation, another ETag
    resp, body = await get(registry.stub, url, read, "application/xml")
    assert resp.code == 406
    resp, body = await get(registry.stub, url + "?format=" + JSON_V1, read, "text/html")
    assert resp.headers.getRawHeaders(b"content-type") == [JSON_V1.encode()]


@pytest_twisted.ensureDeferred
async def test_yank_and_unyank_over_the_api(registry: Any) -> None:
    project, write, read, _, _ = await _setup(registry)
    yank_url = registry.api(project.id) + "/demo-pkg/1.0/yank"
    resp = await registry.stub.put(yank_url, data=b'{"reason": "broken <build>"}',
                                   headers=basic(read))
    assert resp.code == 403
    resp = await registry.stub.put(yank_url, data=b'{"reason": "broken <build>"}',
                                   headers=basic(write))
    assert resp.code == 200
    assert json.loads(await resp.content())["files"] == 2

    url = registry.api(project.id) + "/simple/demo-pkg/"
    _, body = await get(registry.stub, url, read, JSON_V1)
    yanked = {f["filename"]: f["yanked"] for f in json.loads(body)["files"]}
    assert yanked == {"demo_pkg-0.9.tar.gz": False, "demo_pkg-1.0-py3-none-any.whl":
                      "broken <build>", "demo_pkg-1.0.tar.gz": "broken <build>"}
    _, html = await get(registry.stub, url, read, "text/html")
    assert b'data-yanked="broken &lt;build&gt;"' in html
    page = ProjectPage.from_html("demo-pkg", html, base_url=url)
    assert {p.filename for p in page.packages if p.is_yanked} == {
        "demo_pkg-1.0-py3-none-any.whl", "demo_pkg-1.0.tar.gz"}

    resp = await registry.stub.delete(yank_url, headers=basic(write))
    assert resp.code == 200
    _, html = await get(registry.stub, url, read, "text/html")
    assert b"data-yanked" not in html
    resp = await registry.stub.put(registry.api(project.id) + "/demo-pkg/7.0/yank",
                                   headers=basic(write))
    assert resp.code == 404
    resp = await registry.stub.put(yank_url, data=b"not json", headers=basic(write))
    assert resp.code == 400


@pytest_twisted.ensureDeferred
async def test_cli_yank_and_metadata_backfill(registry: Any) -> None:
    project, _, read, _, _ = await _setup(registry)
    blobs = BlobStore(reactor, registry.storage)

    async def cli(*argv: str) -> str:
        return await run_command(registry.db, build_parser().parse_args(list(argv)), blobs)

    assert await cli("yank", "acme", "Demo.Pkg", "1.0", "--reason", "CVE") == \
        "Yanked demo-pkg 1.0 (2 files)."
    assert await cli("unyank", "acme", "demo-pkg", "1.0") == "Unyanked demo-pkg 1.0 (2 files)."

    await registry.db.execute("UPDATE package_files SET metadata_sha256 = NULL")
    result = await cli("backfill-metadata")
    assert result == "Extracted core metadata for 2 files; 1 have none to serve."
    _, body = await get(registry.stub, registry.api(project.id) + "/simple/demo-pkg/", read,
                        JSON_V1)
    offered = {f["filename"]: bool(f["core-metadata"]) for f in json.loads(body)["files"]}
    assert offered == {"demo_pkg-0.9.tar.gz": False, "demo_pkg-1.0-py3-none-any.whl": True,
                       "demo_pkg-1.0.tar.gz": True}


@pytest_twisted.ensureDeferred
async def test_pips_own_parser_reads_both_formats(registry: Any) -> None:
    # pip prefers JSON, so the end-to-end tests exercise that path; this
    # feeds our HTML (and JSON) to pip's own link parser as well.
    from pip._internal.index.collector import IndexContent, parse_links

    project, write, read, wheel, _ = await _setup(registry)
    await registry.stub.put(registry.api(project.id) + "/demo-pkg/1.0/yank",
                   data=b'{"reason": "bad"}', headers=basic(write))
    url = registry.api(project.id) + "/simple/demo-pkg/"
    for media in ("text/html", JSON_V1):
        resp, body = await get(registry.stub, url, read, media)
        content_type = resp.headers.getRawHeaders(b"content-type")[0].decode()
        links = {link.filename: link for link in parse_links(
            IndexContent(body, content_type, "utf-8", url, cache_link_parsing=False))}
        assert set(links) == {"demo_pkg-0.9.tar.gz", "demo_pkg-1.0-py3-none-any.whl",
                              "demo_pkg-1.0.tar.gz"}, media
        whl = links["demo_pkg-1.0-py3-none-any.whl"]
        assert whl.hash == hashlib.sha256(wheel).hexdigest(), media
        assert whl.requires_python == ">=3.8", media
        assert whl.yanked_reason == "bad", media
        assert whl.metadata_link() is not None, media
        assert links["demo_pkg-0.9.tar.gz"].metadata_link() is None, media
        assert links["demo_pkg-0.9.tar.gz"].yanked_reason is None, media
