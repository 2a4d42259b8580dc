"""Caches are dropped on every committed change, whoever commits it."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq

from pypireg.config import parse_config
from pypireg.http.negotiation import JSON_V1
from pypireg.service import build_site
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.changes import ChangeListener
from pypireg.storage.database import Database
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import basic
from tests.support.waiting import next_turn


@pytest_twisted.ensureDeferred
async def test_caches_follow_changes_from_other_processes(db: Database, tmp_path: Any) -> None:
    changes = ChangeListener(reactor, db.dsn)
    await changes.start()
    # Another process (the admin command, another daemon): its own connection.
    other = Database(reactor, db.dsn, pool_size=1)
    await other.start()
    config = parse_config({"storage": {"path": str(tmp_path / "data")}})
    site, _ = await build_site(reactor, config, db, changes)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        project = await project_store.create_project(db, "cached", public=True)
        _, write = await token_store.create_token(db, project.id, "write")
        record, read = await token_store.create_token(db, project.id, "read")
        api = f"{base}/api/v4/projects/{project.id}/packages/pypi"

        async def upload(version: str) -> None:
            ctype, body = upload_form("cached-pkg", version, wheel_filename("cached-pkg", version),
                                      wheel_bytes("cached-pkg", version))
            resp = await treq.post(api, data=body, headers={**basic(write),
                                                            b"Content-Type": [ctype]})
            assert resp.code == 201
            await resp.content()

        async def versions(token: str | None = None) -> tuple[int, list[str]]:
            headers = {**(basic(token) if token else {}), b"Accept": [JSON_V1.encode()]}
            resp = await treq.get(api + "/simple/cached-pkg/", headers=headers)
            body = await resp.content()
            return resp.code, json.loads(body)["versions"] if resp.code == 200 else []

        async def eventually(check: Any) -> None:
            # The notification arrives on the listener's own connection; each
            # check is a request, a few reactor turns: no sleeping between.
            for _ in range(2000):
                if await check():
                    return
                await next_turn()
            raise AssertionError("the change was not seen within 2000 requests")

        await upload("1.0")
        assert await versions() == (200, ["1.0"])
        assert await versions() == (200, ["1.0"])  # now served from the cache
        await upload("2.0")  # this daemon's own write: seen at once
        assert await versions() == (200, ["1.0", "2.0"])

        # Another process yanks, revokes, makes the project private.
        await other.execute("DELETE FROM package_files WHERE version = '1.0'")
        await eventually(lambda: _eq(versions(), (200, ["2.0"])))
        assert (await versions(read))[0] == 200
        await other.execute("UPDATE tokens SET revoked_at = now() WHERE id = %s", (record.id,))
        await eventually(lambda: _eq(versions(read), (401, [])))
        await other.execute("UPDATE projects SET public = false WHERE id = %s", (project.id,))
        await eventually(lambda: _eq(versions(), (401, [])))

        # Without notifications the caches are bypassed, so still correct.
        changes.stop()
        await other.execute("UPDATE projects SET public = true WHERE id = %s", (project.id,))
        assert await versions() == (200, ["2.0"])
    finally:
        await port.stopListening()
        changes.stop()
        other.close()


async def _eq(result: Any, expected: Any) -> bool:
    return bool(await result == expected)
