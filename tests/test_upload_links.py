"""The links hatch and flit print after an upload lead to the package's page.

hatch prints `<repository>/<name>/<version>/` (hatch/publish/index.py, its
`project` URL of a non-PyPI index is the repository URL itself); flit prints
`<repository>/<name>` with the name as in the metadata (flit/upload.py).
Both are redirected (302) to the web page, after the index's access check.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from pypireg.domain.names import normalize_name
from pypireg.storage import packages as package_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.packages import NewFile
from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import basic, upload


async def fetch(reg: Any, url: str, token: str | None = None, method: str = "GET"
                ) -> tuple[int, str | None, str]:
    resp = await reg.stub.request(method, url, headers=basic(token) if token else {},
                                  allow_redirects=False)
    body = (await resp.content()).decode("utf-8", "replace")
    location = resp.headers.getRawHeaders(b"location", [None])[0]
    return resp.code, location.decode() if location else None, body


async def add_file(reg: Any, project: Any, name: str, version: str) -> None:
    await package_store.record_file(reg.db, NewFile(
        project_id=project.id, name=normalize_name(name), display_name=name, version=version,
        filename=wheel_filename(name, version), packagetype="bdist_wheel",
        python_version="py3", size=1, sha256="0" * 64, md5="0" * 32, blake2_256="0" * 64,
        requires_python=None, summary=None, metadata_version="2.1",
        uploaded_by_token_id=None, metadata_sha256=None), reject_duplicates=False)


@pytest_twisted.ensureDeferred
async def test_printed_links_redirect_to_the_package_page(web: Any) -> None:
    project = await project_store.create_project(web.db, "acme/tools", public=True)
    await add_file(web, project, "Demo_Pkg", "1.0")
    await add_file(web, project, "Demo_Pkg", "2.0+local.1")
    page = "/acme/tools/-/packages/demo-pkg"
    for api in (web.api(project.id), web.api("acme%2Ftools"), web.api("ACME/Tools")):
        # hatch: the normalised name and the version, with a trailing slash.
        assert (await fetch(web, f"{api}/demo-pkg/1.0/"))[:2] == (302, page + "#pypireg-v-1.0")
        # flit: the name as in the metadata, no slash.
        assert (await fetch(web, f"{api}/Demo_Pkg"))[:2] == (302, page)
    api = web.api(project.id)
    assert (await fetch(web, f"{api}/demo-pkg/"))[:2] == (302, page)
    assert (await fetch(web, f"{api}/demo-pkg/1.0"))[:2] == (302, page + "#pypireg-v-1.0")
    # The anchor is the version as the page writes it: 1.0.0 is release 1.0.
    assert (await fetch(web, f"{api}/demo-pkg/1.0.0/"))[1] == page + "#pypireg-v-1.0"
    assert (await fetch(web, f"{api}/demo-pkg/2.0+local.1/"))[1] == (
        page + "#pypireg-v-2.0+local.1")
    # A version the project does not have: the page, without an anchor.
    assert (await fetch(web, f"{api}/demo-pkg/3.0/"))[:2] == (302, page)
    code, location, _ = await fetch(web, f"{api}/demo-pkg/1.0/", method="HEAD")
    assert (code, location) == (302, page + "#pypireg-v-1.0")
    # Where the redirect leads is the page, and the anchor is on it.
    code, _, body = await fetch(web, web.url + page)
    assert code == 200 and 'id="pypireg-v-1.0"' in body and 'id="pypireg-v-2.0+local.1"' in body

    # Not names or versions: 404, never a redirect.
    for path in ("not%20a%20name", "demo-pkg/json", "demo-pkg/not%20a%20version",
                 "pypi/demo-pkg", "-demo/1.0/"):
        code, location, _ = await fetch(web, f"{api}/{path}")
        assert (code, location) == (404, None), path


@pytest_twisted.ensureDeferred
async def test_links_say_nothing_to_who_may_not_read(web: Any) -> None:
    private = await project_store.create_project(web.db, "acme/secret")
    other = await project_store.create_project(web.db, "acme/other")
    await add_file(web, private, "hidden-pkg", "1.0")
    _, read = await token_store.create_token(web.db, private.id, "read")
    _, other_read = await token_store.create_token(web.db, other.id, "read")
    api = web.api(private.id)
    for path in ("hidden-pkg/1.0/", "hidden-pkg", "missing-pkg/1.0/", "not%20a%20name"):
        # Anonymous: 401 for an existing project, as for one that does not exist.
        for target in (api, web.api("acme%2Fnothing")):
            code, location, body = await fetch(web, f"{target}/{path}")
            assert (code, location) == (401, None), path
            assert "acme" not in body and "hidden" not in body
        # Another project's token: 404, as for a project that does not exist.
        code, location, body = await fetch(web, f"{api}/{path}", other_read)
        assert (code, location) == (404, None), path
        assert "hidden" not in body
    code, location, _ = await fetch(web, f"{api}/hidden-pkg/1.0/", read)
    assert (code, location) == (302, "/acme/secret/-/packages/hidden-pkg#pypireg-v-1.0")
    await project_store.update_project(web.db, private.id, packages_enabled=False)
    assert (await fetch(web, f"{api}/hidden-pkg/1.0/", read))[:2] == (404, None)


@pytest_twisted.ensureDeferred
async def test_links_leave_the_other_pypi_routes_alone(registry: Any) -> None:
    project = await project_store.create_project(registry.db, "acme", public=True)
    _, write = await token_store.create_token(registry.db, project.id, "write")
    wheel = wheel_bytes("demo-pkg", "1.0")
    code, text, _ = await upload(registry, project.id, write, wheel_filename("demo-pkg", "1.0"),
                                 wheel)
    assert code == 201, text
    api = registry.api(project.id)
    code, location, _ = await fetch(registry, f"{api}/simple")
    assert (code, location) == (301, f"/api/v4/projects/{project.id}/packages/pypi/simple/")
    code, location, _ = await fetch(registry, f"{api}/simple/demo-pkg")
    assert code == 301 and location is not None and location.endswith("/simple/demo-pkg/")
    code, _, body = await fetch(registry, f"{api}/simple/demo-pkg/")
    assert code == 200 and "demo_pkg-1.0-py3-none-any.whl" in body
    code, _, body = await fetch(registry, f"{api}/pypi/demo-pkg/json")
    assert code == 200 and '"version": "1.0"' in body
    code, _, body = await fetch(registry, f"{api}/pypi/demo-pkg/1.0/json")
    assert code == 200 and '"version": "1.0"' in body
    # Yank and unyank keep their methods; GET on the yank URL is still not one.
    code, _, _ = await fetch(registry, f"{api}/demo-pkg/1.0/yank", write, method="PUT")
    assert code == 200
    code, _, _ = await fetch(registry, f"{api}/demo-pkg/1.0/yank", write, method="DELETE")
    assert code == 200
    code, location, _ = await fetch(registry, f"{api}/demo-pkg/1.0/yank", write)
    assert (code, location) == (405, None)
    # The redirects are for reading: other methods are not routed to them.
    code, location, _ = await fetch(registry, f"{api}/demo-pkg/1.0/", write, method="POST")
    assert (code, location) == (405, None)
