"""GitLab's projects API (`GET /api/v4/projects/<id or path>[?statistics=true]`) and the
storage usage `pypireg project list` shows: the same bytes in both places.

The authorisation matrix (test_authz_matrix.py) covers the route for every
kind of caller; the refusals' shapes are checked here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest_twisted

from pypireg.admin.cli import build_parser, run_command
from pypireg.admin.output import size
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.database import Database
from tests.distributions import sdist_bytes, sdist_filename, wheel_bytes, wheel_filename
from tests.support.http import basic, project_with_tokens, upload

GITLAB_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


async def cli(db: Database, *argv: str) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)))


async def get(registry: Any, path: str, headers: dict[bytes, list[bytes]] | None = None
              ) -> tuple[int, Any, Any]:
    """(status, JSON body or raw bytes, response) of GET *path*, in memory."""
    resp = await registry.stub.get(registry.url + path, headers=headers or {},
                                   allow_redirects=False)
    body = await resp.content()
    if resp.code == 200:
        assert resp.headers.getRawHeaders(b"content-type") == [b"application/json"]
        assert resp.headers.getRawHeaders(b"cache-control") == [b"no-store"]
        return resp.code, json.loads(body), resp
    return resp.code, body, resp


async def put(registry: Any, project: Any, token: str, filename: str, content: bytes) -> int:
    code, text, _ = await upload(registry, project.id, token, filename, content, name="demo-pkg")
    assert code == 201, text
    return len(content)


@pytest_twisted.ensureDeferred
async def test_the_project_and_its_statistics(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry, "acme/tools")
    empty, _, empty_read = await project_with_tokens(registry, "acme/empty")
    wheel = wheel_bytes("demo-pkg", "1.0")
    again = wheel_bytes("demo-pkg", "1.0", payload=b"VALUE = 2\n")
    sizes = [
        await put(registry, project, write, wheel_filename("demo-pkg", "1.0"), wheel),
        # The same bytes again, and other bytes under the same name: GitLab
        # counts every stored file, so both duplicates count.
        await put(registry, project, write, wheel_filename("demo-pkg", "1.0"), wheel),
        await put(registry, project, write, wheel_filename("demo-pkg", "1.0"), again),
        await put(registry, project, write, sdist_filename("demo-pkg", "1.0"),
                  sdist_bytes("demo-pkg", "1.0")),
    ]
    total = sum(sizes)

    code, document, _ = await get(registry, f"/api/v4/projects/{project.id}", basic(read))
    assert code == 200
    assert document == {
        "id": project.id, "name": "tools", "path": "tools",
        "name_with_namespace": "acme / tools", "path_with_namespace": "acme/tools",
        "visibility": "private", "created_at": document["created_at"],
        "packages_enabled": True,
    }
    assert re.fullmatch(GITLAB_TIME, document["created_at"])
    for query in ("?statistics=true", "?statistics=1", "?statistics=TRUE"):
        code, with_stats, _ = await get(
            registry, f"/api/v4/projects/{project.id}{query}", basic(read))
        assert code == 200
        assert with_stats == {**document,
                              "statistics": {"packages_size": total, "storage_size": total}}
    # By its URL-encoded path, and with GitLab's PRIVATE-TOKEN header.
    code, by_path, _ = await get(registry, "/api/v4/projects/acme%2Ftools?statistics=true",
                                 {b"PRIVATE-TOKEN": [read.encode()]})
    assert code == 200 and by_path == with_stats
    for query in ("", "?statistics=false", "?statistics=0", "?statistics="):
        code, plain, _ = await get(registry, f"/api/v4/projects/{project.id}{query}",
                                   basic(read))
        assert code == 200 and plain == document
    code, body, _ = await get(registry, f"/api/v4/projects/{project.id}?statistics=maybe",
                              basic(read))
    assert code == 400 and b"statistics must be true or false" in body
    code, nothing, _ = await get(registry, f"/api/v4/projects/{empty.id}?statistics=true",
                                 basic(empty_read))
    assert code == 200 and nothing["statistics"]["packages_size"] == 0

    # The admin command shows the same bytes, per project and in total.
    rows = json.loads(await cli(registry.db, "--json", "project", "list"))
    assert [(r["path"], r["packages_size"]) for r in rows] == [
        ("acme/tools", total), ("acme/empty", 0)]
    lines = (await cli(registry.db, "project", "list")).splitlines()
    assert size(total) in lines[1].split() and "0B" in lines[2].split()
    assert lines[-1] == f"Total: {size(total)} in 2 projects"

    # Once the older duplicates are cleaned up, they no longer count.
    await cli(registry.db, "project", "update", "acme/tools", "--keep-duplicates", "1")
    await cli(registry.db, "cleanup")
    code, after, _ = await get(registry, f"/api/v4/projects/{project.id}?statistics=true",
                               basic(read))
    assert after["statistics"]["packages_size"] == sizes[2] + sizes[3]


@pytest_twisted.ensureDeferred
async def test_access_is_that_of_the_projects_other_routes(registry: Any) -> None:
    project, _, read = await project_with_tokens(registry, "acme/tools")
    _, _, other_read = await project_with_tokens(registry, "acme/other")
    url = f"/api/v4/projects/{project.id}?statistics=true"
    # Private: anonymous callers are asked for credentials, for a project
    # that does not exist too; a token of another project sees nothing.
    for path in (url, "/api/v4/projects/acme%2Fnope", "/api/v4/projects/999"):
        code, _, resp = await get(registry, path)
        assert code == 401
        assert resp.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="pypireg"']
    for path in (url, "/api/v4/projects/acme%2Fnope"):
        code, _, _ = await get(registry, path, basic(other_read))
        assert code == 404
    code, _, _ = await get(registry, url, basic("pypireg_" + "x" * 43))
    assert code == 401
    # Public: readable by anyone, statistics included (every file's size is
    # on the public index anyway).
    await project_store.update_project(registry.db, project.id, public=True)
    code, document, _ = await get(registry, url)
    assert code == 200 and document["visibility"] == "public"
    assert document["statistics"]["packages_size"] == 0
    # Packages disabled: the registry's reads answer 404.
    await project_store.update_project(registry.db, project.id, packages_enabled=False)
    code, _, _ = await get(registry, url, basic(read))
    assert code == 404
    # A revoked token stops at once.
    await project_store.update_project(registry.db, project.id, public=False,
                                       packages_enabled=True)
    record, revoked = await token_store.create_token(registry.db, project.id, "read")
    assert (await get(registry, url, basic(revoked)))[0] == 200
    await token_store.revoke_token(registry.db, record.id)
    assert (await get(registry, url, basic(revoked)))[0] == 401


@pytest_twisted.ensureDeferred
async def test_the_longer_project_urls_keep_their_routes(registry: Any) -> None:
    project, write, read = await project_with_tokens(registry, "acme/tools")
    await put(registry, project, write, wheel_filename("demo-pkg", "1.0"),
              wheel_bytes("demo-pkg", "1.0"))
    for ref in (str(project.id), "acme/tools", "acme%2Ftools"):
        code, listing, _ = await get(registry, f"/api/v4/projects/{ref}/packages", basic(read))
        assert code == 200 and [p["name"] for p in listing] == ["demo-pkg"]
    # Not read as project "<id>/packages/pypi": the upload URL takes POST only.
    code, _, _ = await get(registry, f"/api/v4/projects/{project.id}/packages/pypi",
                           basic(read))
    assert code == 405
    code, _, _ = await get(registry, f"/api/v4/projects/{project.id}/nothing/packages",
                           basic(read))
    assert code == 404
    for path in (f"/api/v4/projects/{project.id}/", f"/api/v4/projects/{project.id}/-/x"):
        code, _, _ = await get(registry, path, basic(read))
        assert code == 404, path
