"""Registering trusted publishers: `pypireg trusted-publisher …` and the HTTP API.

The command runs in-process with a config that has issuers; the API goes
through the real site in memory (StubTreq).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.config import Config, parse_config
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import trusted_publishing as store
from pypireg.storage.database import Database
from tests.support.http import personal_token, start_registry

GITHUB = "https://token.actions.githubusercontent.com"
GITLAB = "https://gitlab.example.com"
GENERIC = "https://ci.example"
ISSUERS = [{"url": GITHUB, "kind": "github"}, {"url": GITLAB, "kind": "gitlab"},
           {"url": GENERIC, "kind": "generic"}]


def _config() -> Config:
    return parse_config({"trusted_publishing": {"issuers": ISSUERS}})


async def cli(db: Database, *argv: str) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)), config=_config())


@pytest_twisted.ensureDeferred
async def test_add_list_and_remove_publishers_of_each_kind(db: Database) -> None:
    await project_store.create_project(db, "acme/tools")
    out = await cli(db, "trusted-publisher", "add", "--project", "acme/tools", "--issuer", GITHUB,
                    "--github", "acme/tools", "--workflow", "release.yml",
                    "--environment", "pypi")
    assert out == ("Added trusted publisher 1 to project acme/tools: github acme/tools workflow "
                   f"release.yml environment pypi ({GITHUB}).")
    await cli(db, "trusted-publisher", "add", "--project", "acme/tools", "--issuer", GITLAB,
              "--gitlab", "acme/sub/tools")
    await cli(db, "trusted-publisher", "add", "--project", "acme/tools", "--issuer", GENERIC,
              "--claim", "sub=job:deploy", "--claim", "team=infra")
    listing = json.loads(await cli(db, "--json", "trusted-publisher", "list", "--project",
                                   "acme/tools"))
    assert [(p["kind"], p["repository"], p["workflow"], p["claims"]) for p in listing] == [
        ("github", "acme/tools", "release.yml", {}),
        ("gitlab", "acme/sub/tools", ".gitlab-ci.yml", {}),
        ("generic", None, None, {"sub": "job:deploy", "team": "infra"}),
    ]
    table = await cli(db, "trusted-publisher", "list", "--project", "acme/tools")
    assert "acme/sub/tools ci config .gitlab-ci.yml" in table
    assert "sub=job:deploy, team=infra" in table
    assert (await cli(db, "trusted-publisher", "remove", "2")).startswith(
        "Removed trusted publisher 2")
    assert len(await store.list_publishers(db, 1)) == 2
    with pytest.raises(CommandError, match="no trusted publisher with id 2"):
        await cli(db, "trusted-publisher", "remove", "2")


@pytest.mark.parametrize(("argv", "message"), [
    (["--issuer", "https://other.example", "--github", "a/b", "--workflow", "x.yml"],
     "is not configured in \\[\\[trusted_publishing.issuers\\]\\]"),
    (["--issuer", GITHUB, "--github", "a/b"], "--workflow must be"),
    (["--issuer", GITHUB, "--github", "not-a-repo", "--workflow", "x.yml"], "OWNER/REPO"),
    (["--issuer", GITHUB, "--github", "a/b", "--workflow", "../x.yml"], "--workflow must be"),
    (["--issuer", GITLAB, "--github", "a/b", "--workflow", "x.yml"],
     "is a gitlab issuer: give --gitlab"),
    (["--issuer", GITLAB, "--gitlab", "a/b", "--workflow", "x.yml"], "--workflow goes with"),
    (["--issuer", GITLAB, "--gitlab", "a/b", "--ci-config-path", "/abs.yml"],
     "--ci-config-path must be"),
    (["--issuer", GENERIC, "--github", "a/b", "--workflow", "x.yml"],
     "generic issuer: give --claim NAME=VALUE"),
    (["--issuer", GENERIC, "--claim", "novalue"], "give NAME=VALUE"),
    (["--issuer", GENERIC, "--claim", "aud=pypireg"], "registered claim"),
    (["--issuer", GITHUB, "--claim", "sub=x"], "github issuer: give --github"),
])
@pytest_twisted.ensureDeferred
async def test_a_publisher_that_does_not_fit_its_issuer_is_refused(
        db: Database, argv: list[str], message: str) -> None:
    await project_store.create_project(db, "acme/tools")
    with pytest.raises(CommandError, match=message):
        await cli(db, "trusted-publisher", "add", "--project", "acme/tools", *argv)
    assert await store.list_publishers(db, 1) == []


# The HTTP API.

@pytest_twisted.async_yield_fixture()
async def api(db: Database, tmp_path: Path) -> Any:
    reg = await start_registry(db, tmp_path, listen=False,
                               trusted_publishing={"issuers": ISSUERS})
    yield reg
    await reg.stop()


async def _call(reg: Any, method: str, secret: str | None, body: Any = None,
                suffix: str = "") -> tuple[int, Any]:
    headers = {b"PRIVATE-TOKEN": [secret.encode()]} if secret else {}
    kw: dict[str, Any] = {}
    if body is not None:
        kw["data"] = json.dumps(body).encode()
        headers[b"Content-Type"] = [b"application/json"]
    resp = await reg.stub.request(
        method, f"{reg.url}/api/v4/projects/acme%2Ftools/trusted_publishers{suffix}",
        headers=headers, **kw)
    text = await resp.content()
    try:
        return resp.code, json.loads(text)
    except ValueError:
        return resp.code, text.decode()


@pytest_twisted.ensureDeferred
async def test_a_maintainer_manages_publishers_over_http(api: Any) -> None:
    project = await project_store.create_project(api.db, "acme/tools")
    maintainer = await personal_token(api.db, project.id, "maintainer")
    code, created = await _call(api, "POST", maintainer, {
        "issuer": GITHUB, "github": "acme/tools", "workflow": "release.yml",
        "environment": "pypi"})
    assert code == 201, created
    assert {k: created[k] for k in ("kind", "repository", "workflow", "environment")} == {
        "kind": "github", "repository": "acme/tools", "workflow": "release.yml",
        "environment": "pypi"}
    code, created2 = await _call(api, "POST", maintainer, {
        "issuer": GITLAB, "gitlab": "acme/tools", "ci_config_path": "ci/release.yml"})
    assert code == 201 and created2["workflow"] == "ci/release.yml"
    code, listing = await _call(api, "GET", maintainer)
    assert code == 200 and [p["id"] for p in listing] == [created["id"], created2["id"]]
    code, _ = await _call(api, "DELETE", maintainer, suffix=f"/{created['id']}")
    assert code == 204
    code, _ = await _call(api, "DELETE", maintainer, suffix=f"/{created['id']}")
    assert code == 404
    code, listing = await _call(api, "GET", maintainer)
    assert [p["id"] for p in listing] == [created2["id"]]


@pytest_twisted.ensureDeferred
async def test_only_a_maintainers_personal_token_manages_publishers(api: Any) -> None:
    project = await project_store.create_project(api.db, "acme/tools")
    _, write = await token_store.create_token(api.db, project.id, "write")
    developer = await personal_token(api.db, project.id, "developer")
    for secret in (write, developer):
        code, text = await _call(api, "GET", secret)
        assert code == 403 and "Managing trusted publishers needs the personal access token" \
            in text
    code, _ = await _call(api, "GET", None)
    assert code == 401


@pytest.mark.parametrize(("body", "message"), [
    ({"github": "acme/tools", "workflow": "r.yml"}, "issuer is required"),
    ({"issuer": GITHUB, "github": "acme/tools"}, "Workflow must be"),
    ({"issuer": GITHUB, "github": 5, "workflow": "r.yml"}, "github must be a string"),
    ({"issuer": GITHUB, "github": "a/b", "gitlab": "a/b"}, "not both"),
    ({"issuer": GENERIC, "claims": {"sub": 1}}, "claims must be an object of strings"),
    ({"issuer": GENERIC, "claims": {}}, "at least one claims"),
    ({"issuer": GITHUB, "repo": "a/b"}, "Unknown field 'repo'"),
    ([1, 2], "Send a JSON object"),
])
@pytest_twisted.ensureDeferred
async def test_bad_publishers_over_http_are_400s_that_say_why(api: Any, body: Any,
                                                              message: str) -> None:
    project = await project_store.create_project(api.db, "acme/tools")
    maintainer = await personal_token(api.db, project.id, "maintainer")
    code, text = await _call(api, "POST", maintainer, body)
    assert code == 400 and message in text, text
