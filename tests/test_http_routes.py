"""Routes in-process: upload, index, files, access, validation.

Uploads, downloads and the round trip go over real TCP; index reads in the
access and redirect tests go through the same site in memory (StubTreq).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest_twisted
import treq
from hypothesis import example, given
from hypothesis import strategies as st
from klein._resource import URLDecodeError, extractURLparts
from twisted.web.http import unquote
from twisted.web.test.requesthelper import DummyRequest
from werkzeug.exceptions import HTTPException

from pypireg.http.app import PYPI, RouteGroups, route_table
from pypireg.http.errors import ErrorFunnel
from pypireg.http.site import upload_project
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from tests.distributions import (
    metadata_text,
    sdist_bytes,
    sdist_filename,
    upload_form,
    wheel_bytes,
    wheel_filename,
)
from tests.support.http import basic, project_with_tokens, upload


@pytest_twisted.ensureDeferred
async def test_upload_index_download_roundtrip(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    wheel = wheel_bytes("demo-pkg", "1.0", requires_python=">=3.8")
    code, text, resp = await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                                    wheel)
    assert code == 201, text
    sdist = sdist_bytes("demo-pkg", "1.0")
    code, text, _ = await upload(registry, project.id, write, sdist_filename("demo-pkg", "1.0"),
                                 sdist)
    assert code == 201, text

    resp = await treq.get(registry.api(project.id) + "/simple/", headers=basic(read))
    assert resp.code == 200
    page = (await resp.text()).strip()
    assert '<a href="demo-pkg/">demo-pkg</a>' in page
    assert resp.headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]

    resp = await treq.get(registry.api("acme") + "/simple/demo-pkg/", headers=basic(read))
    page = await resp.text()
    sha = hashlib.sha256(wheel).hexdigest()
    assert f"../../files/{sha}/demo_pkg-1.0-py3-none-any.whl#sha256={sha}" in page
    assert 'data-requires-python="&gt;=3.8"' in page

    file_url = f"{registry.api(project.id)}/files/{sha}/demo_pkg-1.0-py3-none-any.whl"
    resp = await treq.get(file_url, headers=basic(read))
    assert resp.code == 200
    assert await resp.content() == wheel
    assert resp.headers.getRawHeaders(b"etag") == [f'"{sha}"'.encode()]

    resp = await treq.head(file_url, headers=basic(read))
    assert resp.code == 200
    assert resp.headers.getRawHeaders(b"content-length") == [str(len(wheel)).encode()]

    ranged = {**basic(read), b"Range": [b"bytes=0-9"]}
    resp = await treq.get(file_url, headers=ranged)
    assert resp.code == 206
    assert await resp.content() == wheel[:10]

    cond = {**basic(read), b"If-None-Match": [f'"{sha}"'.encode()]}
    resp = await treq.get(file_url, headers=cond)
    assert resp.code == 304

    # Two distributions and their two core metadata files (PEP 658).
    assert len(registry.stored_files()) == 4
    assert await registry.settled_temp_files() == []


@pytest_twisted.ensureDeferred
async def test_project_by_url_encoded_path(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry, "group/sub/tools")
    wheel = wheel_bytes("demo-pkg", "1.0")
    code, text, _ = await upload(registry, "group%2Fsub%2Ftools", write,
                                 wheel_filename("demo-pkg", "1.0"), wheel)
    assert code == 201, text
    resp = await treq.get(registry.api("group%2Fsub%2Ftools") + "/simple/demo-pkg/",
                          headers=basic(read))
    assert resp.code == 200
    assert project.id > 0


@pytest_twisted.ensureDeferred
async def test_access_rules(registry: Any) -> None:
    private, write, read = await project_with_tokens(registry, "private")
    public, pub_write, _ = await project_with_tokens(registry, "public", public=True)
    wheel = wheel_bytes("demo-pkg", "1.0")
    name = wheel_filename("demo-pkg", "1.0")
    assert (await upload(registry, public.id, pub_write, name, wheel))[0] == 201
    assert (await upload(registry, private.id, write, name, wheel))[0] == 201

    async def get(project: Any, token: str | None) -> int:
        headers = basic(token) if token else {}
        resp = await registry.stub.get(registry.api(project) + "/simple/demo-pkg/",
                                       headers=headers)
        await resp.content()
        if resp.code == 401:
            assert resp.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="pypireg"']
        return int(resp.code)

    assert await get(public.id, None) == 200
    assert await get(private.id, None) == 401
    assert await get(999999, None) == 401  # as for a private project: nothing leaks
    assert await get(private.id, read) == 200
    assert await get(private.id, write) == 200
    assert await get(private.id, pub_write) == 404  # another project's token
    assert await get(999999, read) == 404
    assert await get(private.id, "pypireg_" + "x" * 43) == 401
    assert await get(private.id, "not-a-token") == 401

    # Upload: anonymous 401, read scope 403, other project 404, wrong 401.
    assert (await upload(registry, private.id, None, name, wheel))[0] == 401
    code, text, _ = await upload(registry, private.id, read, name, wheel)
    assert code == 403 and "read scope" in text
    assert (await upload(registry, private.id, pub_write, name, wheel))[0] == 404
    assert (await upload(registry, public.id, write, name, wheel))[0] == 403
    assert (await upload(registry, private.id, "pypireg_" + "y" * 43, name, wheel))[0] == 401

    # Revoked and expired tokens stop working at once.
    record, revoked = await token_store.create_token(registry.db, private.id, "read")
    assert await get(private.id, revoked) == 200
    await token_store.revoke_token(registry.db, record.id)
    assert await get(private.id, revoked) == 401
    record, expired = await token_store.create_token(registry.db, private.id, "read",
                                                     expires_in_days=1)
    await registry.db.execute("UPDATE tokens SET expires_at = now() - interval '1 second'"
                              " WHERE id = %s", (record.id,))
    assert await get(private.id, expired) == 401

    # Packages disabled: 404 to readers, 403 to uploaders.
    await project_store.update_project(registry.db, private.id, packages_enabled=False)
    assert await get(private.id, read) == 404
    code, text, _ = await upload(registry, private.id, write, name, wheel)
    assert code == 403 and "disabled" in text


@pytest_twisted.ensureDeferred
async def test_duplicates_are_kept_and_newest_served(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    name = wheel_filename("demo-pkg", "1.0")
    first = wheel_bytes("demo-pkg", "1.0", payload=b"VALUE = 1\n")
    second = wheel_bytes("demo-pkg", "1.0", payload=b"VALUE = 2\n")
    assert (await upload(registry, project.id, write, name, first))[0] == 201
    assert (await upload(registry, project.id, write, name, second))[0] == 201
    resp = await treq.get(registry.api(project.id) + "/simple/demo-pkg/", headers=basic(read))
    page = await resp.text()
    assert hashlib.sha256(second).hexdigest() in page
    assert hashlib.sha256(first).hexdigest() not in page
    rows = await registry.db.fetch_all("SELECT count(*) FROM package_files")
    assert rows[0][0] == 2

    await project_store.update_project(registry.db, project.id, reject_duplicates=True)
    code, text, resp = await upload(registry, project.id, write, name, first)
    assert code == 400
    # "already exist" in the reason is what clients that skip existing files look for.
    assert resp.phrase.startswith(f"File already exists ({name!r})".encode())
    assert text.startswith(f"File already exists ({name!r}); this project rejects duplicate "
                           "uploads. Bump the version, or skip the files the index already has")
    # The index to check, as the client named the project; a token goes in it.
    index = registry.api(project.id).replace("http://", "http://__token__:<token>@")
    assert f"uv publish --check-url {index}/simple/ or pdm publish --skip-existing" in text
    assert "twine's --skip-existing works only with the public index" in text
    assert resp.phrase.decode() == text.strip()  # whole: twine shows only the phrase
    await project_store.update_project(registry.db, project.id, public=True)
    code, text, _ = await upload(registry, "acme", write, name, first)
    assert code == 400
    assert f"--check-url {registry.api('acme')}/simple/ " in text  # public: no token needed


@pytest_twisted.ensureDeferred
async def test_the_upload_url_with_a_trailing_slash(registry: Any) -> None:
    # A common .pypirc habit: "repository = …/packages/pypi/".
    project, write, read = await project_with_tokens(registry, "acme/tools")
    for ref, version in ((str(project.id), "1.0"), ("acme%2Ftools", "1.1"), ("acme/tools", "1.2")):
        filename = wheel_filename("demo-pkg", version)
        ctype, body = upload_form("demo-pkg", version, filename, wheel_bytes("demo-pkg", version))
        resp = await treq.post(registry.api(ref) + "/", data=body,
                               headers={**basic(write), b"Content-Type": [ctype]})
        assert resp.code == 201, await resp.text()
        assert await resp.text() == f"Stored {filename}\n"
    resp = await registry.stub.get(registry.api(project.id) + "/simple/demo-pkg/",
                                   headers=basic(read))
    page = await resp.text()
    assert all(wheel_filename("demo-pkg", v) in page for v in ("1.0", "1.1", "1.2"))
    assert await registry.settled_temp_files() == []


@pytest_twisted.ensureDeferred
async def test_index_redirects_and_not_found(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry)
    wheel = wheel_bytes("Demo.Pkg", "1.0")
    code, text, _ = await upload(registry, project.id, write, wheel_filename("Demo.Pkg", "1.0"),
                                 wheel, name="Demo.Pkg")
    assert code == 201, text
    base = registry.api(project.id)
    http = registry.stub
    resp = await http.get(base + "/simple/Demo.Pkg/", headers=basic(read), allow_redirects=False)
    assert resp.code == 301
    assert resp.headers.getRawHeaders(b"location") == [
        f"/api/v4/projects/{project.id}/packages/pypi/simple/demo-pkg/".encode()]
    resp = await http.get(base + "/simple/demo-pkg", headers=basic(read), allow_redirects=False)
    assert resp.code == 301
    resp = await http.get(base + "/simple/unknown/", headers=basic(read))
    assert resp.code == 404
    resp = await http.get(base + "/files/" + "0" * 64 + "/x-1.0.tar.gz", headers=basic(read))
    assert resp.code == 404
    resp = await http.get(base + "/files/" + "0" * 64 + "/..%2Fetc%2Fpasswd", headers=basic(read))
    assert resp.code == 404


VALIDATION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("name mismatch", {"name": "other-pkg"}, "is for package"),
    ("version mismatch", {"version": "2.0"}, "is for version"),
    ("invalid version", {"version": "not a version"}, "Invalid version"),
    ("invalid name", {"name": "bad name!"}, "Invalid package name"),
    ("bad extension", {"filename": "demo_pkg-1.0.exe"}, "only wheels"),
    ("unsafe file name", {"filename": "../demo_pkg-1.0-py3-none-any.whl"}, "Invalid file name"),
    ("wrong sha256", {"sha256": "0" * 64}, "sha256_digest sent does not match"),
    ("metadata disagrees", {"content": wheel_bytes("demo-pkg", "1.0",
                                                   metadata=metadata_text("other", "1.0"))},
     "metadata in"),
    ("metadata version disagrees", {"content": wheel_bytes(
        "demo-pkg", "1.0", metadata=metadata_text("demo-pkg", "1.1"))}, "is for version 1.1"),
    ("not a zip", {"content": b"this is not a zip file"}, "not a valid wheel"),
    ("filetype mismatch", {"extra": {"filetype": "sdist"}}, "does not match the file name"),
    ("bad action", {"extra": {":action": "submit"}}, "Unsupported :action"),
]


@pytest_twisted.ensureDeferred
async def test_validation_rules_each_give_400_and_store_nothing(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    for label, case, message in VALIDATION_CASES:
        case = dict(case)
        filename = case.pop("filename", wheel_filename("demo-pkg", "1.0"))
        content = case.pop("content", wheel_bytes("demo-pkg", "1.0"))
        code, text, resp = await upload(registry, project.id, write, filename, content, **case)
        assert code == 400, (label, code, text)
        assert message in text, (label, text)
        assert resp.phrase.decode("latin-1").split()[0] in text, label
    assert registry.stored_files() == []
    assert await registry.settled_temp_files() == []
    assert (await registry.db.fetch_all("SELECT count(*) FROM package_files"))[0][0] == 0


@pytest_twisted.ensureDeferred
async def test_missing_content_and_empty_file(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    body = (b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\ndemo-pkg\r\n'
            b'--b\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0\r\n--b--\r\n')
    resp = await treq.post(registry.api(project.id), data=body, headers={
        **basic(write), b"Content-Type": [b"multipart/form-data; boundary=b"]})
    assert resp.code == 400
    assert "Missing file" in await resp.text()
    code, text, _ = await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                                 b"")
    assert code == 400 and "is empty" in text
    assert registry.stored_files() == [] and await registry.settled_temp_files() == []


@pytest_twisted.ensureDeferred
async def test_too_large_file_is_refused(registry: Any) -> None:
    project, write, _ = await project_with_tokens(registry)
    big = wheel_bytes("demo-pkg", "1.0", payload=os.urandom(2 * 1024 * 1024))
    code, text, _ = await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                                 big)
    assert code == 413, text
    assert "uploads.max_size" in text
    assert registry.stored_files() == [] and await registry.settled_temp_files() == []


@pytest_twisted.ensureDeferred
async def test_only_sent_digests_are_computed_and_late_ones_still_checked(registry: Any
                                                                         ) -> None:
    project, write, _ = await project_with_tokens(registry)
    wheel = wheel_bytes("demo-pkg", "1.0")
    name = wheel_filename("demo-pkg", "1.0")
    # As twine 7 sends it: sha256 and blake2b-256, no md5.
    ctype, body = upload_form("demo-pkg", "1.0", name, wheel)
    body = body.replace(b'name="md5_digest"', b'name="ignored_field"')
    resp = await treq.post(registry.api(project.id), data=body,
                           headers={**basic(write), b"Content-Type": [ctype]})
    assert resp.code == 201, await resp.text()
    row = await registry.db.fetch_one("SELECT md5, blake2_256 FROM package_files")
    assert row is not None and row[0] is None
    assert row[1] == hashlib.blake2b(wheel, digest_size=32).hexdigest()
    # A wrong md5 sent after the file part is still caught.
    boundary = b"pypiregboundary"
    late = (b'--' + boundary + b'\r\nContent-Disposition: form-data; name="md5_digest"\r\n\r\n'
            + b"0" * 32 + b"\r\n--" + boundary + b"--\r\n")
    ctype, body = upload_form("demo-pkg", "1.1", wheel_filename("demo-pkg", "1.1"),
                              wheel_bytes("demo-pkg", "1.1"))
    body = body.replace(b'name="md5_digest"', b'name="ignored_field"')
    body = body[: -len(b"--" + boundary + b"--\r\n")] + late
    resp = await treq.post(registry.api(project.id), data=body,
                           headers={**basic(write), b"Content-Type": [ctype]})
    assert resp.code == 400
    assert "md5_digest sent does not match" in await resp.text()


class _AnyRoutes:
    """Stands in for a route group: every handler the route table asks for exists."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: None


_URL_MAP = route_table(RouteGroups(*(_AnyRoutes() for _ in fields(RouteGroups))),
                       ErrorFunnel(None)).url_map
_UPLOAD_ENDPOINTS = {f"POST {PYPI}", f"POST {PYPI}/"}


class _PlainRequest(DummyRequest):
    def isSecure(self) -> bool:
        return False


def _routed_to_upload(target: bytes) -> bool:
    """Whether Klein sends a POST to *target* to the upload route, as it decodes the path."""
    # server.Request.process splits and decodes the path so; Klein takes it from there.
    path = target.split(b"?", 1)[0]
    request = _PlainRequest(list(map(unquote, path[1:].split(b"/"))))
    try:
        _, server, _, path_info, script = extractURLparts(request)
        endpoint, _ = _URL_MAP.bind(server, script).match(path_info, method="POST")
    except (HTTPException, URLDecodeError):  # 404, 405, a redirect; a path Klein refuses
        return False
    return endpoint in _UPLOAD_ENDPOINTS


_SEGMENTS = st.sampled_from(["1", "acme", "acme%2Ftools", "a/b", "packages", "pypi", "simple",
                             "", "%2F", "%70ypi", "%ff", "\xc3\xa9", "%C3%A9", "x?y", "%3F"])


@given(prefix=st.sampled_from(["/api/v4/projects/", "//api/v4/projects/", "/api/v4/projects//",
                               "/api/v4/project/", "/api%2Fv4/projects/"]),
       middle=st.lists(_SEGMENTS, min_size=1, max_size=4).map("/".join),
       suffix=st.sampled_from(["/packages/pypi", "/packages/pypi/", "/packages/pypi//",
                               "/packages/pypi%2F", "/packages/pyp%69", "/packages%2Fpypi",
                               "/packages/pypi/simple", "/packages/pypi/x", ""]),
       query=st.sampled_from(["", "?", "?a=1", "?a=/packages/pypi"]))
@example(prefix="/api/v4/projects/", middle="1", suffix="/packages/pypi/", query="")
@example(prefix="/api/v4/projects/", middle="acme%2Ftools", suffix="/packages/pypi", query="")
def test_the_site_streams_exactly_the_urls_the_upload_route_takes(
        prefix: str, middle: str, suffix: str, query: str) -> None:
    # A body is streamed to a temp file only for a URL whose route takes the
    # file over; one streamed for a URL without that route was a temp file
    # no one removed, and a URL routed but not streamed has no body to store.
    target = (prefix + middle + suffix + query).encode("utf-8")
    assert (upload_project(target) is not None) == _routed_to_upload(target), target
