"""Audit events: each change records exactly one event, in its own transaction, with no secret.

Uploads go through the real upload route over TCP (one behind a trusted
proxy, to see the client's address after it); the API calls through the
site in memory; the admin commands in-process. The events are read back
from the table, through `pypireg audit` and through GitLab's API.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import pytest_twisted
import treq

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.config import Config, UpstreamConfig
from pypireg.domain.audit import Actor, Event, UnsafeDetails, parse_since
from pypireg.domain.tokens import hash_token
from pypireg.storage import audit as audit_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.database import Database
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import basic, project_with_tokens, upload

_Test = TypeVar("_Test", bound=Callable[..., Coroutine[Any, Any, None]])

UPSTREAM_TOKEN = "upstream-tok-5e1f-never-stored"
UPSTREAM_PASSWORD = "upstream-pw-a9c3-never-stored"
CONFIG = Config(upstreams=(
    UpstreamConfig(name="public", url="https://upstream.example/simple/", token=UPSTREAM_TOKEN),
    UpstreamConfig(name="other", url="https://upstream.example/other/simple/",
                   username="robot", password=UPSTREAM_PASSWORD),
))
WHEEL = wheel_filename("demo-pkg", "1.0")


def inline(test: _Test) -> _Test:
    """pytest_twisted.ensureDeferred, typed."""
    marked: _Test = pytest_twisted.ensureDeferred(test)
    return marked


async def cli(db: Database, *argv: str, blobs: Any = None) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)), blobs, CONFIG)


async def events(db: Database) -> list[dict[str, Any]]:
    """Every event, oldest first, as a dict of its columns."""
    rows = await db.fetch_all("SELECT to_jsonb(e) FROM audit_events e ORDER BY id")
    return [r[0] for r in rows]


async def new_events(db: Database, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return (await events(db))[len(seen):]


async def one_new(db: Database, seen: list[dict[str, Any]], action: str) -> dict[str, Any]:
    """The single event since *seen*; it must have *action*."""
    fresh = await new_events(db, seen)
    assert [e["action"] for e in fresh] == [action], fresh
    seen.extend(fresh)
    return fresh[0]


async def api(registry: Any, method: str, path: str, secret: str | None = None,
              **kw: Any) -> tuple[int, Any, Any]:
    headers = {b"PRIVATE-TOKEN": [secret.encode()]} if secret else {}
    resp = await registry.stub.request(method, f"{registry.url}/api/v4/projects/{path}",
                                       headers=headers, **kw)
    body = await resp.content()
    ctype = resp.headers.getRawHeaders(b"content-type") or [b""]
    return resp.code, json.loads(body) if ctype[0] == b"application/json" else body, resp


async def personal(db: Database, project_id: int, name: str, role: str | None) -> tuple[int, str]:
    user = await user_store.create_user(db, name)
    if role is not None:
        await user_store.add_member(db, project_id, user.id, role)  # type: ignore[arg-type]
    record, secret = await token_store.create_token(db, None, "write", kind="personal",
                                                    user_id=user.id)
    return record.id, secret


# ---------------------------------------------------------------- the HTTP routes


@inline
async def test_an_upload_records_one_event_with_its_token_client_and_file(registry: Any
                                                                          ) -> None:
    project, write, _ = await project_with_tokens(registry)
    token_id = (await token_store.list_tokens(registry.db, project.id))[0].id
    content = wheel_bytes("demo-pkg", "1.0")
    code, text, _ = await upload(registry, project.id, write, WHEEL, content)
    assert code == 201, text

    [event] = await events(registry.db)
    assert event["action"] == "package_file.upload"
    assert (event["project_id"], event["project_path"]) == (project.id, "acme")
    assert (event["actor_kind"], event["actor_token_id"], event["actor_token_kind"]) == (
        "token", token_id, "project")
    assert event["client_address"] == "127.0.0.1"
    assert (event["target_type"], event["target_details"]) == ("package_file", WHEEL)
    file_id = (await registry.db.fetch_one("SELECT id FROM package_files"))[0]
    assert event["target_id"] == file_id
    assert event["details"] == {
        "name": "demo-pkg", "version": "1.0", "filename": WHEEL, "packagetype": "bdist_wheel",
        "sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}

    # A refused upload (the same file again, with duplicates rejected) stores
    # nothing and records nothing: the row and its event were one transaction.
    await project_store.update_project(registry.db, project.id, reject_duplicates=True)
    code, _, _ = await upload(registry, project.id, write, WHEEL, content)
    assert code == 400
    assert len(await events(registry.db)) == 1


@inline
async def test_the_client_address_is_the_one_after_trusted_proxies(db: Database,
                                                                   tmp_path: Path) -> None:
    from pypireg.config import parse_config
    from pypireg.service import build_site

    config = parse_config({"storage": {"path": str(tmp_path / "data")},
                           "server": {"trusted_proxies": ["127.0.0.0/8"]}})
    site, _ = await build_site(reactor, config, db)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        project = await project_store.create_project(db, "acme")
        _, write = await token_store.create_token(db, project.id, "write")
        ctype, body = upload_form("demo-pkg", "1.0", WHEEL, wheel_bytes("demo-pkg", "1.0"))
        resp = await treq.post(
            f"http://127.0.0.1:{port.getHost().port}/api/v4/projects/acme/packages/pypi",
            data=body, headers={**basic(write), b"Content-Type": [ctype],
                                b"X-Forwarded-For": [b"203.0.113.9, 127.0.0.2"]})
        assert resp.code == 201, await resp.text()
    finally:
        await port.stopListening()
    [event] = await events(db)
    assert event["client_address"] == "203.0.113.9"


@inline
async def test_yank_unyank_and_deletes_over_the_api_record_who_and_what(registry: Any
                                                                        ) -> None:
    project, write, _ = await project_with_tokens(registry)
    for version in ("1.0", "2.0"):
        code, _, _ = await upload(registry, project.id, write,
                                  wheel_filename("demo-pkg", version),
                                  wheel_bytes("demo-pkg", version), version=version)
        assert code == 201
    maintainer_token, maintainer = await personal(registry.db, project.id, "mia", "maintainer")
    seen = await events(registry.db)

    yank = f"{registry.url}/api/v4/projects/acme/packages/pypi/demo-pkg/1.0/yank"
    resp = await registry.stub.put(yank, data=b'{"reason": "broken"}',
                                   headers={b"PRIVATE-TOKEN": [maintainer.encode()]})
    assert resp.code == 200
    event = await one_new(registry.db, seen, "release.yank")
    assert (event["actor_token_id"], event["actor_token_kind"], event["actor_name"]) == (
        maintainer_token, "personal", "mia")
    assert event["details"]["reason"] == "broken"
    assert event["details"]["files"] == [wheel_filename("demo-pkg", "1.0")]
    resp = await registry.stub.delete(yank, headers=basic(write))
    assert resp.code == 200
    assert (await one_new(registry.db, seen, "release.unyank"))["target_details"] == (
        "demo-pkg 1.0")
    # Nothing to yank: a 404 and no event.
    resp = await registry.stub.put(yank.replace("1.0", "9.9"), headers=basic(write))
    assert resp.code == 404
    assert await new_events(registry.db, seen) == []

    code, packages, _ = await api(registry, "GET", "acme/packages", write)
    ids = {p["version"]: p["id"] for p in packages}
    code, files, _ = await api(registry, "GET", f"acme/packages/{ids['2.0']}/package_files",
                               write)
    code, _, _ = await api(registry, "DELETE",
                           f"acme/packages/{ids['2.0']}/package_files/{files[0]['id']}",
                           maintainer)
    assert code == 204
    event = await one_new(registry.db, seen, "package_file.delete")
    assert (event["target_id"], event["target_details"]) == (
        files[0]["id"], wheel_filename("demo-pkg", "2.0"))
    assert event["details"]["sha256"] == files[0]["file_sha256"]
    code, _, _ = await api(registry, "DELETE", f"acme/packages/{ids['1.0']}", write)
    assert code == 204
    event = await one_new(registry.db, seen, "release.delete")
    assert event["target_id"] == ids["1.0"]
    assert event["details"]["package_removed"] is True
    # A second delete finds nothing and records nothing.
    code, _, _ = await api(registry, "DELETE", f"acme/packages/{ids['1.0']}", write)
    assert code == 404
    assert await new_events(registry.db, seen) == []


@inline
async def test_deploy_tokens_over_the_api_record_creation_and_revocation(web: Any) -> None:
    project = await project_store.create_project(web.db, "acme")
    maintainer_token, maintainer = await personal(web.db, project.id, "mia", "maintainer")
    seen = await events(web.db)
    code, created, _ = await api(web, "POST", "acme/deploy_tokens", maintainer, json={
        "name": "ci", "scopes": ["write_package_registry"]})
    assert code == 201
    event = await one_new(web.db, seen, "token.create")
    assert (event["target_type"], event["target_id"]) == ("token", created["id"])
    assert event["details"]["kind"] == "deploy"
    assert event["details"]["username"] == created["username"]
    assert event["actor_token_id"] == maintainer_token
    code, _, _ = await api(web, "DELETE", f"acme/deploy_tokens/{created['id']}", maintainer)
    assert code == 204
    assert (await one_new(web.db, seen, "token.revoke"))["target_id"] == created["id"]


# ---------------------------------------------------------------- the admin command


@inline
async def test_admin_commands_record_one_event_each_naming_the_admin(db: Database) -> None:
    seen: list[dict[str, Any]] = []
    await cli(db, "project", "create", "acme/tools")
    event = await one_new(db, seen, "project.create")
    assert event["actor_kind"] == "admin" and event["client_address"] is None
    assert event["actor_name"]  # the OS user
    await cli(db, "project", "update", "acme/tools", "--public", "--keep-duplicates", "3")
    event = await one_new(db, seen, "project.update")
    assert event["details"]["changes"] == {"public": {"from": False, "to": True},
                                           "keep_duplicates": {"from": None, "to": 3}}
    # The same settings again change nothing and record nothing.
    await cli(db, "project", "update", "acme/tools", "--public")
    assert await new_events(db, seen) == []
    await cli(db, "project", "update", "acme/tools", "--upstreams", "other")
    event = await one_new(db, seen, "project.update")
    assert event["details"]["changes"] == {"upstreams": {"from": None, "to": ["other"]}}

    await cli(db, "group", "create", "acme")
    assert (await one_new(db, seen, "group.create"))["group_path"] == "acme"
    await cli(db, "group", "update", "acme", "--public")
    assert (await one_new(db, seen, "group.update"))["details"]["changes"] == {
        "public": {"from": False, "to": True}}
    await cli(db, "group", "update", "acme", "--no-upstreams")
    await one_new(db, seen, "group.update")

    out = await cli(db, "token", "create", "--project", "acme/tools", "--scope", "write")
    token_id = int(out.split()[3])
    event = await one_new(db, seen, "token.create")
    assert (event["target_id"], event["project_path"]) == (token_id, "acme/tools")
    await cli(db, "token", "revoke", str(token_id))
    await one_new(db, seen, "token.revoke")
    with pytest.raises(CommandError):
        await cli(db, "token", "revoke", str(token_id))
    assert await new_events(db, seen) == []

    await cli(db, "user", "create", "mia")
    await one_new(db, seen, "user.create")
    await cli(db, "user", "token", "create", "mia", "--scope", "api")
    event = await one_new(db, seen, "token.create")
    assert (event["details"]["kind"], event["details"]["username"]) == ("personal", "mia")
    await cli(db, "deploy-token", "create", "--project", "acme/tools", "--scope",
              "read_package_registry")
    assert (await one_new(db, seen, "token.create"))["details"]["kind"] == "deploy"
    await cli(db, "member", "add", "acme/tools", "mia", "--role", "developer")
    assert (await one_new(db, seen, "member.add"))["details"]["role"] == "developer"
    await cli(db, "member", "add", "acme/tools", "mia", "--role", "developer")
    assert await new_events(db, seen) == []
    await cli(db, "member", "add", "acme/tools", "mia", "--role", "maintainer")
    assert (await one_new(db, seen, "member.update"))["details"]["changes"] == {
        "role": {"from": "developer", "to": "maintainer"}}
    await cli(db, "member", "remove", "acme/tools", "mia")
    event = await one_new(db, seen, "member.remove")
    assert (event["target_details"], event["details"]["role"]) == ("mia", "maintainer")
    await cli(db, "user", "block", "mia")
    await one_new(db, seen, "user.block")
    await cli(db, "user", "unblock", "mia")
    await one_new(db, seen, "user.unblock")

    await cli(db, "name", "reserve", "acme/tools", "Our_Pkg")
    assert (await one_new(db, seen, "name.reserve"))["target_details"] == "our-pkg"
    await cli(db, "name", "claim", "acme/tools", "other-pkg")
    await one_new(db, seen, "name.claim")
    await cli(db, "namespace", "grant", "--group", "acme", "acme-ns")
    event = await one_new(db, seen, "namespace.grant")
    assert event["group_path"] == "acme" and event["details"]["prefix"] == "acme-ns"
    await cli(db, "namespace", "revoke", "acme-ns")
    await one_new(db, seen, "namespace.revoke")
    await cli(db, "upstream", "block", "acme/tools", "evil", "1.0", "--reason", "CVE")
    assert (await one_new(db, seen, "upstream.block"))["details"]["reason"] == "CVE"
    await cli(db, "upstream", "unblock", "acme/tools", "evil", "1.0")
    await one_new(db, seen, "upstream.unblock")
    await cli(db, "upstream", "purge", "acme/tools", "evil")
    await one_new(db, seen, "upstream.purge")


@inline
async def test_cli_yank_cleanup_and_import_are_recorded(registry: Any, tmp_path: Path
                                                        ) -> None:
    project, write, _ = await project_with_tokens(registry)
    for n in range(3):
        code, _, _ = await upload(registry, project.id, write, WHEEL, wheel_bytes(
            "demo-pkg", "1.0", payload=f"N = {n}\n".encode()))
        assert code == 201
    seen = await events(registry.db)
    await cli(registry.db, "yank", "acme", "Demo_Pkg", "1.0.0", "--reason", "bad")
    assert (await one_new(registry.db, seen, "release.yank"))["actor_kind"] == "admin"
    await cli(registry.db, "unyank", "acme", "demo-pkg", "1.0")
    await one_new(registry.db, seen, "release.unyank")
    await cli(registry.db, "project", "update", "acme", "--keep-duplicates", "1")
    await one_new(registry.db, seen, "project.update")
    await cli(registry.db, "cleanup", "--dry-run")
    assert await new_events(registry.db, seen) == []
    await cli(registry.db, "cleanup")
    event = await one_new(registry.db, seen, "package_file.cleanup")
    assert len(event["details"]["files"]) == 2

    folder = tmp_path / "import"
    folder.mkdir()
    (folder / wheel_filename("other-pkg", "1.0")).write_bytes(wheel_bytes("other-pkg", "1.0"))
    from pypireg.storage.blobs import BlobStore

    blobs = BlobStore(reactor, registry.config.storage.path)
    await cli(registry.db, "import", str(folder), "--project", "acme", "--json", blobs=blobs)
    event = await one_new(registry.db, seen, "package_file.upload")
    assert event["actor_kind"] == "admin"

    # fsck --repair removes the row of a lost blob: one event for the project.
    sha256 = hashlib.sha256(wheel_bytes("other-pkg", "1.0")).hexdigest()
    blobs.path_for(sha256).unlink()
    await cli(registry.db, "fsck", "--repair", blobs=blobs)
    event = await one_new(registry.db, seen, "package_file.repair")
    assert event["details"]["files"] == [wheel_filename("other-pkg", "1.0")]


@inline
async def test_the_hourly_cleanup_is_the_daemons_own_event(registry: Any) -> None:
    from twisted.internet.task import Clock

    from pypireg.service import housekeeping
    from tests.support.waiting import eventually

    project, write, _ = await project_with_tokens(registry)
    for n in range(2):
        code, _, _ = await upload(registry, project.id, write, WHEEL,
                                  wheel_bytes("demo-pkg", "1.0", payload=f"N = {n}\n".encode()))
        assert code == 201
    await project_store.update_project(registry.db, project.id, keep_duplicates=1)
    seen = await events(registry.db)
    jobs = housekeeping(Clock(), registry.db, None, None)  # type: ignore[arg-type]
    jobs[0].startService()  # the duplicate cleanup runs at once

    async def cleaned() -> bool:
        return bool(await new_events(registry.db, seen))

    try:
        await eventually(cleaned)
    finally:
        jobs[0].stopService()
    [event] = await new_events(registry.db, seen)
    assert (event["actor_kind"], event["actor_name"]) == ("system", "pypireg daemon")


# ---------------------------------------------------------------- transactions and secrets


@inline
async def test_a_change_whose_event_fails_rolls_back(db: Database,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    project = await project_store.create_project(db, "acme")

    async def broken(*args: Any) -> None:
        await db.fetch_one("SELECT 1")  # a real round trip first
        raise RuntimeError("the event could not be written")

    monkeypatch.setattr(audit_store, "insert_events", broken)
    admin = Actor.admin("root")
    with pytest.raises(RuntimeError):
        await project_store.update_project(db, project.id, public=True, actor=admin)
    with pytest.raises(RuntimeError):
        await token_store.create_token(db, project.id, "write", actor=admin)
    assert not (await project_store.get_project(db, "acme")).public  # type: ignore[union-attr]
    assert await token_store.list_tokens(db, project.id) == []
    assert await events(db) == []


@inline
async def test_no_event_holds_a_secret(registry: Any) -> None:
    db = registry.db
    secrets: list[str] = []
    await cli(db, "project", "create", "acme")
    for argv in (("token", "create", "--project", "acme", "--scope", "write"),
                 ("user", "create", "mia"),
                 ("user", "token", "create", "mia", "--scope", "api"),
                 ("deploy-token", "create", "--project", "acme", "--scope",
                  "write_package_registry")):
        out = await cli(db, *argv)
        if "token" in argv:
            secrets.append(out.splitlines()[-1])
    await cli(db, "member", "add", "acme", "mia", "--role", "maintainer")
    await cli(db, "project", "update", "acme", "--upstreams", "public,other")
    code, created, _ = await api(registry, "POST", "acme/deploy_tokens", secrets[1],
                                 json={"name": "ci", "scopes": ["read_package_registry"]})
    assert code == 201
    secrets.append(created["token"])
    code, _, _ = await upload(registry, "acme", secrets[0], WHEEL, wheel_bytes("demo-pkg", "1.0"))
    assert code == 201
    for token in await token_store.list_tokens(db, 1):
        await cli(db, "token", "revoke", str(token.id))

    everything = json.dumps(await events(db))
    assert len(await events(db)) >= 10
    for secret in secrets:
        digest = hash_token(secret)
        for form in (secret, secret[len("pypireg_"):], digest.hex(), "\\x" + digest.hex()):
            assert form not in everything
    for credential in (UPSTREAM_TOKEN, UPSTREAM_PASSWORD):
        assert credential not in everything
    # The API and the command show the same events: nor do they.
    code, listed, _ = await api(registry, "GET", "acme/audit_events?per_page=100", secrets[1])
    assert code == 200 and len(listed) >= 8
    shown = json.dumps(listed) + await cli(db, "--json", "audit", "--limit", "1000")
    assert not any(s in shown for s in secrets)


def test_details_refuse_keys_that_name_secrets() -> None:
    with pytest.raises(UnsafeDetails):
        Event("token.create", "token", details={"token": "x"})
    with pytest.raises(UnsafeDetails):
        Event("project.update", "project", details={"changes": {"password": "x"}})
    with pytest.raises(ValueError, match="unknown audit action"):
        Event("token.steal", "token")


# Every storage function that changes what the audit covers, and its module.
MUTATIONS = {
    "pypireg.storage.tokens": {"create_token", "revoke_token"},
    "pypireg.storage.projects": {"create_project", "update_project"},
    "pypireg.storage.groups": {"create_group", "update_group"},
    "pypireg.storage.packages": {"record_file", "set_yanked", "delete_files"},
    "pypireg.storage.releases": {"delete_release", "delete_release_file"},
    "pypireg.storage.duplicates": {"remove_surplus_duplicates"},
    "pypireg.storage.users": {"create_user", "set_blocked", "add_member", "remove_member"},
    "pypireg.storage.name_origins": {"reserve_name", "claim_name", "grant_namespace",
                                     "revoke_namespace"},
    "pypireg.storage.upstream_cache": {"add_block", "remove_block", "purge",
                                       "set_index_upstreams"},
    "pypireg.ingest.accept": {"ingest"},
    "pypireg.storage.trusted_publishing": {"add_publisher", "remove_publisher", "mint_token"},
    "pypireg.oidc.publishers": {"register_publisher"},
}


def _calls_without_actor(path: Path) -> list[str]:
    """Calls in *path* of a MUTATIONS function that pass no `actor=`."""
    tree = ast.parse(path.read_text())
    modules: dict[str, str] = {}  # local name -> module
    functions: dict[str, str] = {}  # local name -> module of the function
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MUTATIONS:
                    modules[alias.asname or alias.name] = full
                elif node.module in MUTATIONS and alias.name in MUTATIONS[node.module]:
                    functions[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MUTATIONS and alias.asname:
                    modules[alias.asname] = alias.name
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        hit = (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
               and func.attr in MUTATIONS.get(modules.get(func.value.id, ""), ())) or (
            isinstance(func, ast.Name) and func.id in functions)
        if hit and not any(k.arg == "actor" for k in node.keywords):
            missing.append(f"{path}:{node.lineno}")
    return missing


def test_every_change_outside_storage_names_its_actor() -> None:
    # Each listed function takes an actor (so the list names the right ones)...
    for module, names in MUTATIONS.items():
        for name in names:
            assert "actor" in inspect.signature(getattr(import_module(module), name)).parameters
    # ...and every call from the routes, the commands and the daemon passes one.
    root = Path(__file__).parent.parent / "pypireg"
    sources = [p for p in root.rglob("*.py") if "storage" not in p.parts]
    assert len(sources) > 50
    missing = [where for p in sources for where in _calls_without_actor(p)]
    assert missing == []


def test_the_actor_check_finds_a_call_without_one(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("from pypireg.storage import tokens as t\n"
                      "from pypireg.storage.users import add_member\n"
                      "async def f(db):\n"
                      "    await t.revoke_token(db, 1)\n"
                      "    await t.revoke_token(db, 1, actor=None)\n"
                      "    await add_member(db, 1, 2, 'developer')\n")
    assert _calls_without_actor(source) == [f"{source}:4", f"{source}:6"]


# ---------------------------------------------------------------- reading them back


@inline
async def test_the_api_in_gitlabs_shape_with_filters_pagination_and_access(registry: Any
                                                                            ) -> None:
    db = registry.db
    project, write, read = await project_with_tokens(registry)
    other, other_write, _ = await project_with_tokens(registry, "other")
    code, _, _ = await upload(registry, project.id, write, WHEEL, wheel_bytes("demo-pkg", "1.0"))
    assert code == 201
    for n in range(4):
        await cli(db, "project", "update", "acme", "--public" if n % 2 == 0 else "--private")
    _, maintainer = await personal(db, project.id, "mia", "maintainer")
    _, developer = await personal(db, project.id, "dev", "developer")
    await cli(db, "project", "update", "other", "--public")
    # Whole minutes apart, so the filters' bounds are exact.
    await db.execute("UPDATE audit_events SET created_at ="
                     " '2026-12-01T00:00:00Z'::timestamptz + id * interval '1 minute'")

    code, listed, resp = await api(registry, "GET", "acme/audit_events", maintainer)
    assert code == 200
    assert [e["event_name"] for e in listed] == ["project.update"] * 4 + [
        "package_file.upload"]  # newest first
    upload_event = listed[-1]
    token_id = (await token_store.list_tokens(db, project.id))[0].id
    assert upload_event["author_id"] == -1  # a project token: not a user
    assert upload_event["entity_id"] == project.id
    assert upload_event["entity_type"] == "Project"
    assert upload_event["created_at"].endswith("Z")
    details = upload_event["details"]
    assert details["custom_message"] == "Uploaded package file"
    assert details["author_name"] == f"project token {token_id}"
    assert (details["target_type"], details["target_details"]) == ("package_file", WHEEL)
    assert details["ip_address"] == "127.0.0.1"
    assert details["entity_path"] == "acme"
    assert resp.headers.getRawHeaders(b"X-Total") == [b"5"]

    # One event by id; another project's is not found through this one.
    code, one, _ = await api(registry, "GET", f"acme/audit_events/{upload_event['id']}", write)
    assert (code, one) == (200, upload_event)
    [other_event] = [e for e in await events(db) if e["project_id"] == other.id]
    code, _, _ = await api(registry, "GET", f"acme/audit_events/{other_event['id']}", write)
    assert code == 404

    # Pagination as GitLab's.
    code, page, resp = await api(registry, "GET", "acme/audit_events?per_page=2&page=2", write)
    assert [e["id"] for e in page] == [e["id"] for e in listed[2:4]]
    assert resp.headers.getRawHeaders(b"X-Total-Pages") == [b"3"]
    assert resp.headers.getRawHeaders(b"X-Next-Page") == [b"3"]
    assert resp.headers.getRawHeaders(b"X-Prev-Page") == [b"1"]
    assert b'rel="next"' in resp.headers.getRawHeaders(b"Link")[0]

    # created_after / created_before, on the events' own times.
    stamp = quote(listed[1]["created_at"])
    code, after, _ = await api(registry, "GET", f"acme/audit_events?created_after={stamp}",
                               write)
    assert [e["id"] for e in after] == [e["id"] for e in listed[:2]]
    code, before, _ = await api(registry, "GET", f"acme/audit_events?created_before={stamp}",
                                write)
    assert [e["id"] for e in before] == [e["id"] for e in listed[1:]]
    code, error, _ = await api(registry, "GET", "acme/audit_events?created_after=yesterday",
                               write)
    assert code == 400 and b"must be an ISO 8601 time" in error

    # A personal token's user is the author.
    await cli(db, "yank", "acme", "demo-pkg", "1.0")  # an admin event in between
    yank = f"{registry.url}/api/v4/projects/acme/packages/pypi/demo-pkg/1.0/yank"
    await registry.stub.delete(yank, headers={b"PRIVATE-TOKEN": [maintainer.encode()]})
    code, listed, _ = await api(registry, "GET", "acme/audit_events?per_page=2", maintainer)
    mia = await user_store.get_user(db, "mia")
    assert mia is not None and listed[0]["author_id"] == mia.id
    assert listed[0]["details"]["author_name"].endswith("(mia)")
    assert listed[1]["details"]["author_name"].startswith("admin command")

    # Only maintainers: a developer and a reader get the maintainer routes'
    # refusal, anonymous callers 401, another project's token 404.
    for secret, expected in ((developer, 403), (read, 403), (None, 401), (other_write, 404)):
        code, body, _ = await api(registry, "GET", "acme/audit_events", secret)
        assert code == expected, (secret, body)
        code, _, _ = await api(registry, "GET", f"acme/audit_events/{upload_event['id']}",
                               secret)
        assert code == expected


@inline
async def test_pypireg_audit_lists_and_filters(db: Database) -> None:
    await cli(db, "project", "create", "acme/tools")
    await cli(db, "project", "create", "acme/web")
    await cli(db, "project", "create", "solo")
    await cli(db, "group", "create", "acme")
    await cli(db, "token", "create", "--project", "solo", "--scope", "read")
    await db.execute("UPDATE audit_events SET created_at = now() - interval '10 days'"
                     " WHERE project_path = 'acme/tools'")

    text = await cli(db, "audit")
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "TIME", "PROJECT", "ACTION", "ACTOR", "CLIENT", "TARGET"]
    assert [line.split()[3] for line in lines[1:]] == [
        "token.create", "group.create", "project.create", "project.create", "project.create"]
    assert "admin command" in lines[1] and lines[1].endswith("token project token 1")

    rows = json.loads(await cli(db, "audit", "--json"))
    assert [r["project_path"] for r in rows] == ["solo", None, "solo", "acme/web", "acme/tools"]
    assert rows[0]["actor"]["kind"] == "admin" and rows[0]["details"]["kind"] == "project"
    assert [r["action"] for r in json.loads(await cli(db, "audit", "--project", "solo",
                                                      "--json"))] == [
        "token.create", "project.create"]
    assert [r["project_path"] or r["group_path"] for r in json.loads(
        await cli(db, "--json", "audit", "--group", "acme"))] == ["acme", "acme/web",
                                                                  "acme/tools"]
    assert len(json.loads(await cli(db, "audit", "--since", "7d", "--json"))) == 4
    old = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    assert len(json.loads(await cli(db, "audit", "--since", old, "--json"))) == 5
    limited = await cli(db, "audit", "--limit", "2")
    assert len(limited.splitlines()) == 4
    assert limited.splitlines()[-1].startswith("Showing the newest 2 of 5 events")

    with pytest.raises(CommandError, match="no project 'nope'"):
        await cli(db, "audit", "--project", "nope")
    with pytest.raises(CommandError, match="--since: 'soon' is neither a duration"):
        await cli(db, "audit", "--since", "soon")


def test_since_reads_durations_dates_and_times() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00:00Z", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_since("last week", now)


# ---------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_the_real_daemon_twine_and_command_and_api(tmp_path: Path) -> None:
    import urllib.request

    from tests.support.daemon import running_daemon, twine

    wheel = tmp_path / WHEEL
    wheel.write_bytes(wheel_bytes("demo-pkg", "1.0"))
    with running_daemon("pypireg-audit-") as daemon:
        daemon.cli("project", "create", "acme/tools")
        created = daemon.cli("token", "create", "--project", "acme/tools", "--scope", "write")
        token_id, secret = int(created.stdout.split()[3]), created.stdout.splitlines()[-1]
        result = twine(daemon, "acme%2Ftools", secret, wheel)
        assert result.returncode == 0, result.stdout + result.stderr

        listed = json.loads(daemon.cli("audit", "--project", "acme/tools", "--json").stdout)
        assert [e["action"] for e in listed] == ["package_file.upload", "token.create",
                                                 "project.create"]
        uploaded = listed[0]
        assert uploaded["actor"]["token_id"] == token_id
        assert uploaded["client_address"] == "127.0.0.1"
        assert uploaded["details"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()

        request = urllib.request.Request(
            f"{daemon.url}/api/v4/projects/acme%2Ftools/audit_events",
            headers={"PRIVATE-TOKEN": secret})
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = resp.read().decode()
            assert resp.headers["X-Total"] == "3"
        assert [e["id"] for e in json.loads(body)] == [e["id"] for e in listed]
        assert secret not in body and secret not in json.dumps(listed)
