"""The authorisation matrix: every route, every kind of caller, every project state.

The expected status comes from the rules as a user reads them in the README
(written out below, not derived from the code):

- a bad token (unknown, revoked, expired, a deploy token with the wrong user
  name, a blocked user's token) is 401 everywhere;
- an anonymous caller may read public projects; anything else is 401;
- a token that does not reach the project: a private project does not exist
  for it (404); a public one may be read, changes are 403;
- a token that reaches the project may read; it may change things only up to
  its level (upload: write; yank, delete: maintain), else 403;
- packages disabled: reads 404, changes 403 (to those who may change).

The home page answers every caller but a bad token (401), and lists the
project exactly to those who may read it.
"""

from __future__ import annotations

import hashlib
import itertools
from base64 import b64encode
from typing import Any

import pytest_twisted
import treq

from pypireg.storage import packages as package_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.packages import NewFile
from tests.distributions import upload_form, wheel_bytes, wheel_filename

# Caller → its level in the project under test ("own"): 0 none, 1 read,
# 2 write (upload), 3 maintain (yank, delete). None: anonymous. "bad": 401.
CALLERS: dict[str, int | str | None] = {
    "anonymous": None,
    "garbage token": "bad",
    "revoked project token": "bad",
    "project read": 1,
    "project write": 3,
    "other project's write": 0,
    "deploy read": 1,
    "deploy write": 3,
    "deploy write, wrong user name": "bad",
    "reporter api": 1,
    "developer api": 2,
    "developer read_api": 1,
    "maintainer api": 3,
    "maintainer read_api": 1,
    "non-member api": 0,
    "blocked maintainer api": "bad",
}
# Route → (level needed, success status).
ROUTES = {
    "simple index": (1, 200),
    "file download": (1, 200),
    "json api": (1, 200),
    "packages api list": (1, 200),
    "projects api": (1, 200),
    "package page link": (1, 302),
    "project page link": (1, 302),
    "upload": (2, 201),
    "yank": (3, 200),
    "delete release": (3, 204),
}


def expected(caller: int | str | None, need: int, ok: int, public: bool, enabled: bool) -> int:
    if caller == "bad":
        return 401
    if caller is None:
        if need == 1 and public:
            return ok if enabled else 404
        return 401
    assert isinstance(caller, int)
    if caller == 0:
        if not public:
            return 404
        if need == 1:
            return ok if enabled else 404
        return 403
    if need == 1:
        return ok if enabled else 404
    if caller < need:
        return 403
    return ok if enabled else 403


def basic(user: str, secret: str) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [b"Basic " + b64encode(f"{user}:{secret}".encode())]}


async def make_callers(db: Any, project: Any, other: Any) -> dict[str, dict[bytes, list[bytes]]]:
    headers: dict[str, dict[bytes, list[bytes]]] = {"anonymous": {}}
    headers["garbage token"] = basic("__token__", "pypireg_" + "g" * 43)
    record, secret = await token_store.create_token(db, project.id, "write")
    await token_store.revoke_token(db, record.id)
    headers["revoked project token"] = basic("__token__", secret)
    for scope in ("read", "write"):
        _, secret = await token_store.create_token(db, project.id, scope)  # type: ignore[arg-type]
        headers[f"project {scope}"] = basic("__token__", secret)
    _, secret = await token_store.create_token(db, other.id, "write")
    headers["other project's write"] = basic("__token__", secret)
    for scope in ("read", "write"):
        record, secret = await token_store.create_token(
            db, project.id, scope, kind="deploy")  # type: ignore[arg-type]
        assert record.username == f"gitlab+deploy-token-{record.id}"
        headers[f"deploy {scope}"] = basic(record.username, secret)
        if scope == "write":
            headers["deploy write, wrong user name"] = basic("__token__", secret)
    for role, scope in (("reporter", "write"), ("developer", "write"), ("developer", "read"),
                        ("maintainer", "write"), ("maintainer", "read"), (None, "write"),
                        ("blocked", "write")):
        user = await user_store.create_user(db, f"{role}-{scope}")
        if role is not None:
            actual_role = "maintainer" if role == "blocked" else role
            await user_store.add_member(db, project.id, user.id, actual_role)  # type: ignore[arg-type]
        if role == "blocked":
            await user_store.set_blocked(db, user.id, True)
        _, secret = await token_store.create_token(
            db, None, scope, kind="personal", user_id=user.id)  # type: ignore[arg-type]
        name = {None: "non-member", "blocked": "blocked maintainer"}.get(role, role)
        headers[f"{name} {'api' if scope == 'write' else 'read_api'}"] = basic(
            "any-name-is-ignored", secret)
    assert set(headers) == set(CALLERS)
    return headers


@pytest_twisted.ensureDeferred
async def test_authorisation_matrix(registry: Any) -> None:
    db = registry.db
    # This test makes hundreds of failed logins from one address on purpose.
    registry.authorizer.failures.limit = 10**6
    project = await project_store.create_project(db, "matrix")
    other = await project_store.create_project(db, "other")
    _, admin = await token_store.create_token(db, project.id, "write")
    callers = await make_callers(db, project, other)
    wheel = wheel_bytes("matrix-pkg", "1.0")
    ctype, body = upload_form("matrix-pkg", "1.0", wheel_filename("matrix-pkg", "1.0"), wheel)
    resp = await treq.post(registry.api(project.id), data=body,
                           headers={**basic("__token__", admin), b"Content-Type": [ctype]})
    assert resp.code == 201
    sha = hashlib.sha256(wheel).hexdigest()
    api = registry.api(project.id)
    counter = itertools.count(1)
    failures = []
    checked = 0

    async def release_id() -> int:
        """A fresh release to delete (rows only: deletes never touch blobs)."""
        version = f"9.{next(counter)}"
        await package_store.record_file(db, NewFile(
            project_id=project.id, name="matrix-pkg", display_name="matrix-pkg",
            version=version, filename=wheel_filename("matrix-pkg", version),
            packagetype="bdist_wheel", python_version="py3", size=1, sha256=sha, md5="0" * 32,
            blake2_256="0" * 64, requires_python=None, summary=None, metadata_version="2.1",
            uploaded_by_token_id=None, metadata_sha256=None), reject_duplicates=False)
        row = await db.fetch_one(
            "SELECT v.id FROM package_versions v JOIN packages p ON p.id = v.package_id"
            " WHERE p.project_id = %s AND v.version = %s", (project.id, version))
        return int(row[0])

    async def call(route: str, headers: dict[bytes, list[bytes]]) -> int:
        if route == "simple index":
            resp = await treq.get(f"{api}/simple/matrix-pkg/", headers=headers)
        elif route == "file download":
            resp = await treq.get(f"{api}/files/{sha}/{wheel_filename('matrix-pkg', '1.0')}",
                                  headers=headers)
        elif route == "json api":
            resp = await treq.get(f"{api}/pypi/matrix-pkg/json", headers=headers)
        elif route == "packages api list":
            resp = await treq.get(f"{registry.url}/api/v4/projects/{project.id}/packages",
                                  headers=headers)
        elif route == "projects api":
            resp = await treq.get(
                f"{registry.url}/api/v4/projects/{project.id}?statistics=true", headers=headers)
        elif route == "package page link":
            resp = await treq.get(f"{api}/matrix-pkg/1.0/", headers=headers,
                                  allow_redirects=False)
        elif route == "project page link":
            resp = await treq.get(f"{registry.url}/matrix", headers=headers,
                                  allow_redirects=False)
        elif route == "upload":
            version = f"2.{next(counter)}"
            data = wheel_bytes("matrix-pkg", version)
            ctype, body = upload_form("matrix-pkg", version,
                                      wheel_filename("matrix-pkg", version), data)
            resp = await treq.post(api, data=body,
                                   headers={**headers, b"Content-Type": [ctype]})
        elif route == "yank":
            resp = await treq.put(f"{api}/matrix-pkg/1.0/yank", headers=headers)
        else:
            target = await release_id()
            resp = await treq.delete(
                f"{registry.url}/api/v4/projects/{project.id}/packages/{target}",
                headers=headers)
        await resp.content()
        return int(resp.code)

    for public, enabled in itertools.product((False, True), (True, False)):
        await project_store.update_project(db, project.id, public=public,
                                           packages_enabled=enabled)
        for (route, (need, ok)), (caller, level) in itertools.product(
                ROUTES.items(), CALLERS.items()):
            want = expected(level, need, ok, public, enabled)
            got = await call(route, callers[caller])
            checked += 1
            if got != want:
                failures.append(f"{route} as {caller} (public={public}, enabled={enabled}): "
                                f"{got}, expected {want}")
        for caller, level in CALLERS.items():
            resp = await treq.get(registry.url + "/", headers=callers[caller])
            page = await resp.text()
            listing = ("200, listed" if 'href="/matrix/-/packages"' in page else "200") \
                if resp.code == 200 else str(resp.code)
            readable = expected(level, 1, 200, public, enabled) == 200
            want_listing = "401" if level == "bad" else "200, listed" if readable else "200"
            checked += 1
            if listing != want_listing:
                failures.append(f"home page as {caller} (public={public}, enabled={enabled}): "
                                f"{listing}, expected {want_listing}")
    assert not failures, "\n".join(failures)
    assert checked == (len(ROUTES) + 1) * len(CALLERS) * 4
