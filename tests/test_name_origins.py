"""Origin locks and PEP 752 namespaces: who may upload a name, decided once and kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.storage import name_origins as origin_store
from pypireg.storage import projects as project_store
from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import project_with_tokens, upload

JSON_V1 = b"application/vnd.pypi.simple.v1+json"


async def cli(db: Any, *argv: str) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)))


async def project(registry: Any, path: str) -> tuple[Any, str]:
    created, write, _ = await project_with_tokens(registry, path, public=True)
    return created, write


async def upload_wheel(registry: Any, project: Any, token: str, name: str,
                       version: str = "1.0") -> tuple[int, str]:
    code, text, _ = await upload(registry, project.id, token, wheel_filename(name, version),
                                 wheel_bytes(name, version), name=name, version=version)
    return code, text


@pytest_twisted.ensureDeferred
async def test_a_name_first_served_from_an_upstream_cannot_be_uploaded_until_claimed(
        registry: Any) -> None:
    acme, token = await project(registry, "acme")
    await origin_store.record_upstream_origin(registry.db, acme.id, "six", "public")
    code, text = await upload_wheel(registry, acme, token, "six")
    assert code == 409, text
    assert "comes from the upstream 'public'" in text and "pypireg name claim" in text

    # The origin stays what it was: a second upstream cannot take it over either.
    again = await origin_store.record_upstream_origin(registry.db, acme.id, "six", "other")
    assert again.upstream == "public"

    assert "six: local (claimed)" in await cli(registry.db, "name", "claim", "acme", "Six")
    code, text = await upload_wheel(registry, acme, token, "six")
    assert code == 201, text


@pytest_twisted.ensureDeferred
async def test_an_upload_fixes_a_local_origin_that_outlives_its_files(registry: Any) -> None:
    acme, token = await project(registry, "acme")
    assert (await upload_wheel(registry, acme, token, "private-lib"))[0] == 201
    origin = await origin_store.get_origin(registry.db, acme.id, "private-lib")
    assert origin is not None and (origin.origin, origin.reason) == ("local", "upload")
    await registry.db.execute("DELETE FROM package_files")
    # Still local: the proxy will never take the name from an upstream.
    after = await origin_store.record_upstream_origin(registry.db, acme.id, "private-lib",
                                                      "public")
    assert after.origin == "local"


@pytest_twisted.ensureDeferred
async def test_reserving_a_name(db: Any) -> None:
    acme = await project_store.create_project(db, "acme")
    assert await cli(db, "name", "reserve", "acme", "Internal.Tool") == (
        "internal-tool: local (reserved)")
    await origin_store.record_upstream_origin(db, acme.id, "six", "public")
    with pytest.raises(CommandError, match="already comes from the upstream 'public'"):
        await cli(db, "name", "reserve", "acme", "six")
    with pytest.raises(CommandError, match="invalid package name"):
        await cli(db, "name", "reserve", "acme", "not a name")
    listed = json.loads(await cli(db, "--json", "name", "list", "acme"))
    assert [(n["name"], n["origin"], n["upstream"]) for n in listed] == [
        ("internal-tool", "local", None), ("six", "upstream", "public")]


@pytest_twisted.ensureDeferred
async def test_a_namespace_belongs_to_its_owner(registry: Any) -> None:
    owner, owner_token = await project(registry, "acme")
    other, other_token = await project(registry, "other")
    assert (await upload_wheel(registry, other, other_token, "acme-legacy"))[0] == 201  # before
    assert "Granted acme and acme-* to acme." == await cli(
        registry.db, "namespace", "grant", "--project", "acme", "ACME")

    for name in ("acme", "acme-tools", "Acme_Tools2", "acme.cli"):
        code, text = await upload_wheel(registry, other, other_token, name)
        assert code == 409, (name, text)
        assert "namespace 'ACME'" in text
    assert (await upload_wheel(registry, other, other_token, "acmetools"))[0] == 201
    # A package that existed before the grant keeps releasing (PEP 752).
    assert (await upload_wheel(registry, other, other_token, "acme-legacy", "2.0"))[0] == 201
    assert (await upload_wheel(registry, owner, owner_token, "acme-tools"))[0] == 201

    # PEP 752's keys in the owner's JSON index, not in the other project's.
    resp = await treq.get(registry.api("acme") + "/simple/acme-tools/",
                          headers={b"Accept": [JSON_V1]})
    files = json.loads(await resp.content())["files"]
    assert [(f["namespace"], f["owner"]) for f in files] == [("acme", "acme")]
    resp = await treq.get(registry.api("other") + "/simple/acme-legacy/",
                          headers={b"Accept": [JSON_V1]})
    assert all("namespace" not in f for f in json.loads(await resp.content())["files"])


@pytest_twisted.ensureDeferred
async def test_a_group_namespace_covers_the_projects_under_it(registry: Any) -> None:
    await cli(registry.db, "group", "create", "corp")
    inside, inside_token = await project(registry, "corp/tools")
    outside, outside_token = await project(registry, "elsewhere")
    await cli(registry.db, "namespace", "grant", "--group", "corp", "corp")
    assert (await upload_wheel(registry, inside, inside_token, "corp-lib"))[0] == 201
    assert (await upload_wheel(registry, outside, outside_token, "corp-lib"))[0] == 409
    with pytest.raises(CommandError, match="granted already"):
        await cli(registry.db, "namespace", "grant", "--project", "elsewhere", "corp")
    with pytest.raises(CommandError, match="another owner"):
        await cli(registry.db, "name", "reserve", "elsewhere", "corp-x")
    listed = json.loads(await cli(registry.db, "--json", "namespace", "list"))
    assert [(n["prefix"], n["owner"], n["owner_kind"]) for n in listed] == [
        ("corp", "corp", "group")]
    assert await cli(registry.db, "namespace", "revoke", "corp") == "Revoked the namespace corp."
    assert (await upload_wheel(registry, outside, outside_token, "corp-lib"))[0] == 201
    with pytest.raises(CommandError, match="no namespace"):
        await cli(registry.db, "namespace", "revoke", "corp")


@pytest_twisted.ensureDeferred
async def test_an_origin_recorded_by_two_daemons_at_once_is_the_first_ones(db: Any) -> None:
    from twisted.internet.defer import Deferred

    from tests.support.waiting import eventually, until

    acme = await project_store.create_project(db, "acme")
    commit: Deferred[None] = Deferred()
    inserted = []

    async def other_daemon(cur: Any) -> None:
        await cur.execute("INSERT INTO name_origins (project_id, name, origin, upstream,"
                          " reason) VALUES (%s, 'six', 'upstream', 'first', 'proxied')",
                          (acme.id,))
        inserted.append(True)
        await commit

    first = Deferred.fromCoroutine(db.run_interaction(other_daemon))
    await until(lambda: inserted)
    # This one's INSERT waits for the other's commit, then finds the row.
    second = Deferred.fromCoroutine(
        origin_store.record_upstream_origin(db, acme.id, "six", "second"))

    async def second_waits() -> bool:
        row = await db.fetch_one("SELECT count(*) FROM pg_stat_activity"
                                 " WHERE wait_event_type = 'Lock' AND datname = current_database()")
        return bool(row and row[0])

    await eventually(second_waits)
    commit.callback(None)
    await first
    origin = await second
    assert (origin.origin, origin.upstream) == ("upstream", "first")
