"""GitLab's deploy tokens API: maintainers create, list and revoke tokens over HTTP.

The API calls go through the real site in memory (StubTreq); only the
uploads that prove a token works use the real port.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_twisted

from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from tests.distributions import wheel_bytes, wheel_filename
from tests.support.http import basic, personal_token, upload


async def _deploy_upload(registry: Any, project_id: int, user: str, secret: str,
                         version: str) -> int:
    code, _, _ = await upload(registry, project_id, secret, wheel_filename("demo-pkg", version),
                              wheel_bytes("demo-pkg", version), version=version, user=user)
    return code


def _url(registry: Any, project: str | int, token_id: int | None = None) -> str:
    base = f"{registry.url}/api/v4/projects/{project}/deploy_tokens"
    return base if token_id is None else f"{base}/{token_id}"


async def _call(registry: Any, method: str, url: str, secret: str | None, **kw: Any
                ) -> tuple[int, Any]:
    headers = {b"PRIVATE-TOKEN": [secret.encode()]} if secret else {}
    headers.update(kw.pop("headers", {}))
    resp = await registry.stub.request(method, url, headers=headers, **kw)
    body = await resp.content()
    if resp.headers.getRawHeaders(b"content-type") == [b"application/json"]:
        return resp.code, json.loads(body)
    return resp.code, body.decode()


@pytest_twisted.ensureDeferred
async def test_a_maintainer_creates_uses_lists_and_revokes_a_deploy_token(
        registry: Any) -> None:
    db = registry.db
    project = await project_store.create_project(db, "team/app")
    maintainer = await personal_token(db, project.id, "maintainer")
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    code, created = await _call(
        registry, "POST", _url(registry, "team%2Fapp"), maintainer,
        data=json.dumps({"name": "CI", "scopes": ["write_package_registry"],
                         "expires_at": expires.isoformat()}).encode(),
        headers={b"Content-Type": [b"application/json"]})
    assert code == 201, created
    assert created["name"] == "CI" and created["scopes"] == ["write_package_registry"]
    assert created["username"] == f"gitlab+deploy-token-{created['id']}"
    assert created["expires_at"] == expires.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    assert created["token"].startswith("pypireg_") and not created["revoked"]

    # The new token uploads, with its user name, as a deploy token does.
    assert await _deploy_upload(registry, project.id, created["username"], created["token"],
                                "1.0") == 201

    code, listed = await _call(registry, "GET", _url(registry, project.id), maintainer)
    assert code == 200 and [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0]
    code, one = await _call(registry, "GET", _url(registry, project.id, created["id"]),
                            maintainer)
    assert code == 200 and one == listed[0]

    code, _ = await _call(registry, "DELETE", _url(registry, project.id, created["id"]),
                          maintainer)
    assert code == 204
    assert await _deploy_upload(registry, project.id, created["username"], created["token"],
                                "1.1") == 401
    code, listed = await _call(registry, "GET", _url(registry, project.id), maintainer)
    assert listed[0]["revoked"] is True
    code, _ = await _call(registry, "DELETE", _url(registry, project.id, created["id"]),
                          maintainer)
    assert code == 204  # revoking twice is harmless


@pytest_twisted.ensureDeferred
async def test_a_form_body_with_gitlab_array_syntax_and_a_user_name(web: Any) -> None:
    project = await project_store.create_project(web.db, "app")
    maintainer = await personal_token(web.db, project.id, "maintainer")
    code, created = await _call(
        web, "POST", _url(web, project.id), maintainer,
        data=b"name=mirror&scopes%5B%5D=read_package_registry&username=mirror-bot"
             b"&expires_at=2099-01-01",
        headers={b"Content-Type": [b"application/x-www-form-urlencoded"]})
    assert code == 201, created
    assert (created["scopes"], created["username"], created["expires_at"]) == (
        ["read_package_registry"], "mirror-bot", "2099-01-01T00:00:00.000Z")


@pytest_twisted.ensureDeferred
async def test_only_a_maintainers_personal_api_token_manages_tokens(web: Any) -> None:
    db = web.db
    project = await project_store.create_project(db, "private-app")
    other = await project_store.create_project(db, "other")
    _, project_write = await token_store.create_token(db, project.id, "write")
    deploy, deploy_secret = await token_store.create_token(db, project.id, "write",
                                                           kind="deploy")
    def private(secret: str) -> dict[bytes, list[bytes]]:
        return {b"PRIVATE-TOKEN": [secret.encode()]}

    callers = {
        "developer api": (private(await personal_token(db, project.id, "developer")), 403),
        "maintainer read_api": (private(await personal_token(db, project.id, "maintainer", "read")),
                                403),
        "project write token": (private(project_write), 403),
        "deploy write token": (basic(deploy_secret, deploy.username or ""), 403),
        "maintainer of another project": (private(await personal_token(db, other.id, "maintainer")),
                                          404),
        "anonymous": ({}, 401),
    }
    form = {b"Content-Type": [b"application/x-www-form-urlencoded"]}
    for label, (auth, expected) in callers.items():
        for method, url in (("GET", _url(web, project.id)),
                            ("POST", _url(web, project.id)),
                            ("GET", _url(web, project.id, deploy.id)),
                            ("DELETE", _url(web, project.id, deploy.id))):
            code, body = await _call(web, method, url, None, headers={**auth, **form},
                                     data=b"name=x&scopes=read_package_registry")
            assert code == expected, (label, method, url, body)
    assert (await token_store.list_tokens(db, project.id))[1].revoked_at is None


@pytest_twisted.ensureDeferred
async def test_bad_requests_say_what_is_wrong_and_create_nothing(web: Any) -> None:
    db = web.db
    project = await project_store.create_project(db, "app")
    other = await project_store.create_project(db, "other")
    maintainer = await personal_token(db, project.id, "maintainer")
    others_token, _ = await token_store.create_token(db, other.id, "read", kind="deploy")
    personal_of_project = await token_store.create_token(db, project.id, "read")
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    cases = [
        ({"scopes": ["read_package_registry"]}, "name is required"),
        ({"name": "x"}, "scopes must name"),
        ({"name": "x", "scopes": ["read_repository"]}, "no read_repository"),
        ({"name": "x", "scopes": ["read_package_registry"], "expires_at": past},
         "in the future"),
        ({"name": "x", "scopes": ["read_package_registry"], "expires_at": "soon"},
         "ISO 8601"),
        ({"name": "x", "scopes": ["read_package_registry"], "username": "no spaces"},
         "username may use"),
        ({"name": ["x", 1], "scopes": ["read_package_registry"]}, "text"),
    ]
    for document, says in cases:
        code, body = await _call(web, "POST", _url(web, project.id), maintainer,
                                 data=json.dumps(document).encode(),
                                 headers={b"Content-Type": [b"application/json"]})
        assert (code, says in body) == (400, True), (document, body)
    code, body = await _call(web, "POST", _url(web, project.id), maintainer, data=b"[1]",
                             headers={b"Content-Type": [b"application/json"]})
    assert code == 400 and "object" in body
    # Another project's deploy token, a project token and an unknown id: not found here.
    for token_id in (others_token.id, personal_of_project[0].id, 999_999):
        for method in ("GET", "DELETE"):
            code, body = await _call(web, method, _url(web, project.id, token_id), maintainer)
            assert code == 404, (method, token_id, body)
    assert [t.kind for t in await token_store.list_tokens(db, project.id)] == ["project"]
    assert (await token_store.list_tokens(db, other.id))[0].revoked_at is None
