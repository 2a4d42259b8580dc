"""The admin command's upstream side (in-process, real PostgreSQL).

`project update` / `group update` choose the upstreams an index includes;
`pypireg upstream …` blocks releases, refreshes and purges the shared cache,
and reports its status without ever printing an upstream's secrets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import pytest_twisted  # type: ignore[import-untyped]

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.config import GIB, Config, ProxyConfig, UpstreamConfig
from pypireg.storage import projects as project_store
from pypireg.storage import upstream_cache as cache
from pypireg.storage.database import Database

_Test = TypeVar("_Test", bound=Callable[..., Coroutine[Any, Any, None]])


def inline(test: _Test) -> _Test:
    """pytest_twisted.ensureDeferred, typed: it only marks the test and returns it."""
    marked: _Test = pytest_twisted.ensureDeferred(test)
    return marked


# Distinctive values, so a leak anywhere in the output is found.
TOKEN = "tok-3f9a1c-never-print"
PASSWORD = "pw-8b2e77-never-print"
HEADER_VALUE = "hdr-51d0aa-never-print"
USERNAME = "robot-user-7c1d"

CONFIG = Config(
    upstreams=(
        UpstreamConfig(name="public", url="https://upstream.example/simple/", ttl=600,
                       min_age=86400, headers=(("X-Api-Key", HEADER_VALUE),), token=TOKEN),
        UpstreamConfig(name="other", url="https://upstream.example/other/simple/",
                       timeout=2.5, offline=True, username=USERNAME, password=PASSWORD),
    ),
    proxy=ProxyConfig(max_cache_size=GIB),
)


async def cli(db: Database, *argv: str, config: Config = CONFIG) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)), config=config)


async def cli_json(db: Database, *argv: str, config: Config = CONFIG) -> Any:
    return json.loads(await cli(db, "--json", *argv, config=config))


@inline
async def test_project_update_chooses_the_upstreams_of_its_index(db: Database) -> None:
    assert (await cli_json(db, "project", "create", "acme"))["upstreams"] is None
    assert [r["upstreams"] for r in await cli_json(db, "project", "list")] == [None]
    assert "UPSTREAMS" in await cli(db, "project", "list")

    chosen = await cli_json(db, "project", "update", "acme", "--upstreams", "other, public")
    assert chosen["upstreams"] == ["other", "public"]  # in the order given
    project = await project_store.get_project(db, "acme")
    assert project is not None
    assert await cache.index_upstreams(db, project_id=project.id) == ["other", "public"]
    assert "other,public" in await cli(db, "project", "list")

    # Other settings leave the list alone.
    kept = await cli_json(db, "project", "update", "acme", "--public")
    assert kept["public"] and kept["upstreams"] == ["other", "public"]

    text = await cli(db, "project", "update", "acme", "--no-upstreams")
    assert "none" in text.splitlines()[1]
    assert await cache.index_upstreams(db, project_id=project.id) == []
    assert [r["upstreams"] for r in await cli_json(db, "project", "list")] == [[]]

    back = await cli_json(db, "project", "update", "acme", "--default-upstreams")
    assert back["upstreams"] is None
    assert await cache.index_upstreams(db, project_id=project.id) is None
    assert "default" in (await cli(db, "project", "list")).splitlines()[1]


@inline
async def test_group_update_chooses_the_upstreams_of_its_index(db: Database) -> None:
    assert (await cli_json(db, "group", "create", "corp"))["upstreams"] is None
    assert "default" in (await cli(db, "group", "list")).splitlines()[1]

    chosen = await cli_json(db, "group", "update", "corp", "--upstreams", "public",
                            "--public")
    assert chosen["upstreams"] == ["public"] and chosen["public"]
    assert [r["upstreams"] for r in await cli_json(db, "group", "list")] == [["public"]]

    assert "none" in (await cli(db, "group", "update", "corp", "--no-upstreams")
                      ).splitlines()[1]
    assert (await cli_json(db, "group", "update", "corp", "--default-upstreams")
            )["upstreams"] is None
    with pytest.raises(CommandError, match="no group 'nope'"):
        await cli(db, "group", "update", "nope", "--no-upstreams")


@inline
async def test_upstream_names_are_checked_before_anything_changes(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    await cli(db, "group", "create", "corp")
    for kind, path in (("project", "acme"), ("group", "corp")):
        with pytest.raises(CommandError, match=r"unknown upstream 'nope'; the configured "
                                               r"upstreams are: public, other\Z"):
            await cli(db, kind, "update", path, "--public", "--upstreams", "public,nope")
        with pytest.raises(CommandError, match="names 'public' twice"):
            await cli(db, kind, "update", path, "--upstreams", "public,other,public")
        with pytest.raises(CommandError, match=r"separated by commas.*--no-upstreams"):
            await cli(db, kind, "update", path, "--upstreams", "public,")
        # Without the daemon's config there is no upstream to name.
        with pytest.raises(CommandError, match=r"no upstreams are configured.*--config"):
            await cli(db, kind, "update", path, "--upstreams", "public", config=Config())
        rows = await cli_json(db, kind, "list")
        assert [(r["public"], r["upstreams"]) for r in rows] == [(False, None)]


@pytest.mark.parametrize("kind", ["project", "group"])
@pytest.mark.parametrize("options", [
    ["--upstreams", "public", "--no-upstreams"],
    ["--upstreams", "public", "--default-upstreams"],
    ["--no-upstreams", "--default-upstreams"],
])
def test_the_upstream_options_exclude_one_another(kind: str, options: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([kind, "update", "x", *options])
