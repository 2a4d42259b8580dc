"""Group-level read indexes over the projects under a group's path."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest_twisted
import treq

from pypireg.admin.cli import build_parser, run_command
from pypireg.http.negotiation import JSON_V1
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import basic, upload


def group_api(registry: Any, group: str) -> str:
    return f"{registry.url}/api/v4/groups/{group}/-/packages/pypi"


async def cli(registry: Any, *argv: str) -> str:
    return await run_command(registry.db, build_parser().parse_args(list(argv)))


async def _populate(registry: Any) -> dict[str, Any]:
    """acme (group) with acme/public-lib (public), acme/tools/cli (private, subgroup path),
    acme/off (public, packages disabled) and other/app outside the group."""
    assert await cli(registry, "group", "create", "acme") == "1"
    made = {}
    for path, public in (("acme/public-lib", True), ("acme/tools/cli", False),
                         ("acme/off", True), ("other/app", False), ("acme_x/y", True)):
        project = await project_store.create_project(registry.db, path, public=public)
        _, write = await token_store.create_token(registry.db, project.id, "write")
        _, read = await token_store.create_token(registry.db, project.id, "read")
        name = path.replace("/", "-")
        data = wheel_bytes(name, "1.0")
        code, text, _ = await upload(registry, project.id, write, wheel_filename(name, "1.0"),
                                     data, name=name)
        assert code == 201, text
        made[path] = {"project": project, "read": read, "name": name, "wheel": data}
    await project_store.update_project(registry.db, made["acme/off"]["project"].id,
                                       packages_enabled=False)
    return made


async def names(url: str, token: str | None) -> tuple[int, list[str]]:
    headers = basic(token) if token else {}
    headers[b"Accept"] = [JSON_V1.encode()]
    resp = await treq.get(url, headers=headers)
    body = await resp.content()
    if resp.code != 200:
        return resp.code, []
    return resp.code, [p["name"] for p in json.loads(body)["projects"]]


@pytest_twisted.ensureDeferred
async def test_group_index_shows_what_the_caller_may_read(registry: Any) -> None:
    made = await _populate(registry)
    url = group_api(registry, "acme") + "/simple/"
    # Private group: anonymous 401, a token from outside 404.
    assert (await names(url, None))[0] == 401
    assert (await names(url, made["other/app"]["read"]))[0] == 404
    # A token of a project in the group sees its own project plus public ones;
    # "acme_x/y" is not under "acme/" (no LIKE wildcard leak).
    code, listed = await names(url, made["acme/tools/cli"]["read"])
    assert code == 200
    assert listed == ["acme-public-lib", "acme-tools-cli"]

    await cli(registry, "group", "update", "acme", "--public")
    assert await names(url, None) == (200, ["acme-public-lib"])
    # By id and by encoded path.
    assert await names(group_api(registry, "1") + "/simple/", None) == (200, ["acme-public-lib"])


@pytest_twisted.ensureDeferred
async def test_group_package_page_and_files(registry: Any) -> None:
    made = await _populate(registry)
    entry = made["acme/tools/cli"]
    base = group_api(registry, "acme")
    resp = await treq.get(base + "/simple/acme-tools-cli/", headers=basic(entry["read"]))
    assert resp.code == 200
    page = await resp.text()
    sha = hashlib.sha256(entry["wheel"]).hexdigest()
    assert f"../../files/{sha}/" in page
    file_url = f"{base}/files/{sha}/{wheel_filename(entry['name'], '1.0')}"
    resp = await treq.get(file_url, headers=basic(entry["read"]))
    assert resp.code == 200 and await resp.content() == entry["wheel"]
    # Another group member's token cannot fetch it through the group.
    resp = await treq.get(file_url, headers=basic(made["acme/public-lib"]["read"]))
    assert resp.code == 404
    resp = await treq.get(base + "/simple/acme-off/", headers=basic(entry["read"]))
    assert resp.code == 404  # packages disabled
    resp = await treq.get(group_api(registry, "nope") + "/simple/", headers=basic(entry["read"]))
    assert resp.code == 404
