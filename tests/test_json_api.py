"""PyPI's JSON API (`/pypi/<name>/json`): shapes, latest version, redirects, access.

The API is read through the real site in memory (StubTreq); uploads and file
downloads use the real port.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urljoin

import pytest_twisted
import treq

from pypireg.config import parse_config
from pypireg.service import build_site
from pypireg.storage import packages as package_store
from tests.distributions import (
    metadata_text,
    sdist_bytes,
    sdist_filename,
    wheel_bytes,
    wheel_filename,
)
from tests.support import reactor
from tests.support.http import STUB_URL, StubClient, basic, project_with_tokens, upload

WHEEL = "demo_pkg-1.0-py3-none-any.whl"


async def get_json(client: Any, url: str, token: str | None, **headers: str) -> tuple[Any, Any]:
    h = basic(token) if token else {}
    for key, value in headers.items():
        h[key.replace("_", "-").encode()] = [value.encode()]
    resp = await client.get(url, headers=h, allow_redirects=False)
    body = await resp.content()
    return resp, json.loads(body) if resp.code == 200 else body


async def _setup(registry: Any) -> tuple[Any, str, str, dict[str, bytes]]:
    """demo-pkg 1.0 (wheel with Requires-Python, sdist) and 0.9 (sdist)."""
    project, write, read = await project_with_tokens(registry)
    blobs = {
        WHEEL: wheel_bytes("demo-pkg", "1.0", requires_python=">=3.8"),
        sdist_filename("demo-pkg", "1.0"): sdist_bytes("demo-pkg", "1.0"),
        sdist_filename("demo-pkg", "0.9"): sdist_bytes(
            "demo-pkg", "0.9", metadata=metadata_text("demo-pkg", "0.9", summary="Old one")),
    }
    for filename, content in blobs.items():
        version = "0.9" if "0.9" in filename else "1.0"
        code, text, _ = await upload(registry, project.id, write, filename, content,
                                     version=version)
        assert code == 201, text
    return project, write, read, blobs


@pytest_twisted.ensureDeferred
async def test_project_document_shape_and_values(registry: Any) -> None:
    project, _, read, blobs = await _setup(registry)
    url = registry.api(project.id) + "/pypi/demo-pkg/json"
    resp, doc = await get_json(registry.stub, url, read)
    assert resp.code == 200
    assert resp.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert set(doc) == {"info", "releases", "urls", "last_serial", "vulnerabilities"}

    prefix = f"/api/v4/projects/{project.id}/packages/pypi"
    info = doc["info"]
    assert info["name"] == "demo-pkg"
    assert info["version"] == "1.0"
    assert info["summary"] == "A test package"
    assert info["requires_python"] == ">=3.8"  # from the wheel; the sdist says nothing
    assert info["yanked"] is False and info["yanked_reason"] is None
    assert info["package_url"] == f"{prefix}/simple/demo-pkg/"
    assert info["release_url"] == f"{prefix}/pypi/demo-pkg/1.0/json"
    assert info["requires_dist"] is None

    assert list(doc["releases"]) == ["0.9", "1.0"]
    assert [f["filename"] for f in doc["releases"]["1.0"]] == [
        "demo_pkg-1.0-py3-none-any.whl", "demo_pkg-1.0.tar.gz"]
    assert doc["urls"] == doc["releases"]["1.0"]
    assert doc["vulnerabilities"] == []
    max_id = (await registry.db.fetch_one("SELECT max(id) FROM package_files"))
    assert max_id is not None and doc["last_serial"] == max_id[0]

    files = [f for release in doc["releases"].values() for f in release]
    assert {f["filename"] for f in files} == set(blobs)
    for f in files:
        content = blobs[f["filename"]]
        sha256 = hashlib.sha256(content).hexdigest()
        assert f["digests"] == {
            "sha256": sha256,
            "md5": hashlib.md5(content).hexdigest(),
            "blake2b_256": hashlib.blake2b(content, digest_size=32).hexdigest(),
        }
        assert f["md5_digest"] == f["digests"]["md5"]
        assert f["size"] == len(content)
        assert f["url"] == f"{prefix}/files/{sha256}/{f['filename']}"
        assert f["packagetype"] == ("bdist_wheel" if f["filename"].endswith(".whl")
                                    else "sdist")
        assert f["python_version"] == ("py3" if f["packagetype"] == "bdist_wheel" else "source")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", f["upload_time"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
                            f["upload_time_iso_8601"])
        assert f["upload_time_iso_8601"].startswith(f["upload_time"])
        assert f["yanked"] is False and f["yanked_reason"] is None
    wheel = next(f for f in files if f["filename"] == WHEEL)
    assert wheel["requires_python"] == ">=3.8"

    # Conditional GET; HEAD answers like GET without a body.
    etag = resp.headers.getRawHeaders(b"etag")[0].decode()
    resp, _ = await get_json(registry.stub, url, read, If_None_Match=etag)
    assert resp.code == 304
    resp = await registry.stub.head(url, headers=basic(read))
    assert resp.code == 200 and await resp.content() == b""


@pytest_twisted.ensureDeferred
async def test_release_document(registry: Any) -> None:
    project, _, read, _ = await _setup(registry)
    base = registry.api(project.id) + "/pypi/demo-pkg"
    resp, doc = await get_json(registry.stub, base + "/0.9/json", read)
    assert resp.code == 200
    # As on PyPI, a release's document has no "releases".
    assert set(doc) == {"info", "urls", "last_serial", "vulnerabilities"}
    assert doc["info"]["version"] == "0.9"
    assert doc["info"]["summary"] == "Old one"
    assert doc["info"]["requires_python"] is None
    assert [f["filename"] for f in doc["urls"]] == ["demo_pkg-0.9.tar.gz"]

    # PEP 440 equality: 1.0.0 is 1.0.
    resp, doc = await get_json(registry.stub, base + "/1.0.0/json", read)
    assert resp.code == 200 and doc["info"]["version"] == "1.0"
    for missing in ("2.0", "not-a-version"):
        resp, _ = await get_json(registry.stub, f"{base}/{missing}/json", read)
        assert resp.code == 404, missing


async def _latest(registry: Any, project: Any, token: str) -> str:
    resp, doc = await get_json(registry.stub, registry.api(project.id) + "/pypi/demo-pkg/json",
                               token)
    assert resp.code == 200
    return str(doc["info"]["version"])


@pytest_twisted.ensureDeferred
async def test_latest_version_skips_prereleases_and_yanked(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    for version in ("1.9", "2.0rc1", "1.10"):
        code, text, _ = await upload(registry, project.id, write,
                                     wheel_filename("demo-pkg", version),
                                     wheel_bytes("demo-pkg", version), version=version)
        assert code == 201, text
    # By PEP 440 (1.10 > 1.9), and not the pre-release.
    assert await _latest(registry, project, read) == "1.10"

    assert await package_store.set_yanked(registry.db, project.id, "demo-pkg", "1.10",
                                          yanked=True, reason="broken build") == 1
    assert await _latest(registry, project, read) == "1.9"
    _, doc = await get_json(registry.stub, registry.api(project.id) + "/pypi/demo-pkg/1.10/json",
                            read)
    assert doc["info"]["yanked"] is True
    assert doc["info"]["yanked_reason"] == "broken build"
    assert doc["urls"][0]["yanked"] is True
    assert doc["urls"][0]["yanked_reason"] == "broken build"

    # Only a pre-release left unyanked: it is the latest.
    await package_store.set_yanked(registry.db, project.id, "demo-pkg", "1.9", yanked=True)
    assert await _latest(registry, project, read) == "2.0rc1"
    # Everything yanked: the highest release.
    await package_store.set_yanked(registry.db, project.id, "demo-pkg", "2.0rc1", yanked=True)
    assert await _latest(registry, project, read) == "2.0rc1"
    await package_store.set_yanked(registry.db, project.id, "demo-pkg", "1.10", yanked=False)
    assert await _latest(registry, project, read) == "1.10"


@pytest_twisted.ensureDeferred
async def test_redirects_and_not_found(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    code, text, _ = await upload(registry, project.id, write, wheel_filename("Demo.Pkg", "1.0"),
                                 wheel_bytes("Demo.Pkg", "1.0"), name="Demo.Pkg")
    assert code == 201, text
    base = registry.api(project.id) + "/pypi"
    prefix = f"/api/v4/projects/{project.id}/packages/pypi/pypi"
    resp, _ = await get_json(registry.stub, base + "/Demo.Pkg/json", read)
    assert resp.code == 301
    assert resp.headers.getRawHeaders(b"location") == [f"{prefix}/demo-pkg/json".encode()]
    resp, _ = await get_json(registry.stub, base + "/Demo_Pkg/1.0/json", read)
    assert resp.code == 301
    assert resp.headers.getRawHeaders(b"location") == [f"{prefix}/demo-pkg/1.0/json".encode()]
    resp, doc = await get_json(registry.stub, base + "/demo-pkg/json", read)
    assert resp.code == 200
    assert doc["info"]["name"] == "Demo.Pkg"  # the display name
    for missing in ("/unknown/json", "/-bad-/json", "/unknown/1.0/json"):
        resp, _ = await get_json(registry.stub, base + missing, read)
        assert resp.code == 404, missing


@pytest_twisted.ensureDeferred
async def test_access(registry: Any) -> None:
    private, write, read = await project_with_tokens(registry, "private")
    public, pub_write, _ = await project_with_tokens(registry, "public", public=True)
    wheel = wheel_bytes("demo-pkg", "1.0")
    for project, token in ((private, write), (public, pub_write)):
        assert (await upload(registry, project.id, token, WHEEL, wheel))[0] == 201

    def url(project: Any) -> str:
        return registry.api(project.id) + "/pypi/demo-pkg/json"

    resp, _ = await get_json(registry.stub, url(private), None)
    assert resp.code == 401
    assert resp.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="pypireg"']
    resp, _ = await get_json(registry.stub, url(private), pub_write)  # another project's token
    assert resp.code == 404
    resp, _ = await get_json(registry.stub, url(private), None, PRIVATE_TOKEN=read)
    assert resp.code == 200
    resp, doc = await get_json(registry.stub, url(public), None)
    assert resp.code == 200 and doc["info"]["name"] == "demo-pkg"
    assert resp.headers.getRawHeaders(b"cache-control") == [
        b"public, max-age=0, must-revalidate"]


@pytest_twisted.ensureDeferred
async def test_poetry_style_consumer_downloads_urls(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry, "acme/tools")
    wheel = wheel_bytes("demo-pkg", "1.0")
    assert (await upload(registry, project.id, write, WHEEL, wheel))[0] == 201
    # Addressed by its path, as a pyproject.toml source URL would.
    url = registry.api("acme%2Ftools") + "/pypi/demo-pkg/json"
    resp, doc = await get_json(registry.stub, url, read)
    assert resp.code == 200
    release = doc["releases"][doc["info"]["version"]]
    assert release == doc["urls"]
    file_url = urljoin(url, doc["urls"][0]["url"])
    resp = await treq.get(file_url, headers=basic(read))
    assert resp.code == 200
    content = await resp.content()
    assert content == wheel
    assert hashlib.sha256(content).hexdigest() == doc["urls"][0]["digests"]["sha256"]


@pytest_twisted.ensureDeferred
async def test_links_are_absolute_with_base_url(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    assert (await upload(registry, project.id, write, WHEEL, wheel_bytes("demo-pkg", "1.0"))
            )[0] == 201
    config = parse_config({"storage": {"path": str(registry.storage)},
                           "server": {"base_url": "https://pypi.example.com/reg"}})
    site, _ = await build_site(reactor, config, registry.db)
    client = StubClient(site.resource)
    api = f"{STUB_URL}/api/v4/projects/{project.id}/packages/pypi"
    resp, doc = await get_json(client, api + "/pypi/demo-pkg/json", read)
    prefix = f"https://pypi.example.com/reg/api/v4/projects/{project.id}/packages/pypi"
    assert doc["info"]["package_url"] == f"{prefix}/simple/demo-pkg/"
    assert doc["urls"][0]["url"].startswith(f"{prefix}/files/")
    resp, _ = await get_json(client, api + "/pypi/Demo_Pkg/json", read)
    assert resp.headers.getRawHeaders(b"location") == [
        f"{prefix}/pypi/demo-pkg/json".encode()]
