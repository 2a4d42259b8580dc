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
from pypireg.admin.output import duration, size
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


async def project_id(db: Database, path: str) -> int:
    project = await project_store.get_project(db, path)
    assert project is not None
    return project.id


async def cached_page(db: Database, upstream: str, name: str, etag: str = '"e1"') -> None:
    """A page fetched from *upstream*, with an ETag to revalidate it by."""
    await cache.take_fetch_lease(db, upstream, name, 30)
    await cache.store_fetched(db, upstream, name, {"files": []}, etag=etag,
                              last_modified=None, last_serial=None)


async def cached_file(db: Database, upstream: str, name: str, filename: str, size: int
                      ) -> None:
    digest = (filename.encode().hex() * 64)[:64]
    await cache.record_file(db, digest, upstream=upstream, name=name, filename=filename,
                            size=size)


@inline
async def test_block_and_unblock_upstream_releases(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    acme = await project_id(db, "acme")

    text = await cli(db, "upstream", "block", "acme", "Evil_Pkg", "v1.0.0", "--reason",
                     " malicious release ")
    assert text == "Hid evil-pkg 1.0.0 from the upstreams in acme: malicious release"
    # The same release spelt otherwise is hidden already; the first reason stays.
    again = await cli_json(db, "upstream", "block", "acme", "evil-pkg", "1.0", "--reason", "x")
    assert again == {"project": "acme", "name": "evil-pkg", "version": "1.0", "reason": "x",
                     "added": False}
    assert "acme hides evil-pkg 1.0 already" in await cli(
        db, "upstream", "block", "acme", "evil-pkg", "1.0", "--reason", "x")
    whole = await cli(db, "upstream", "block", "acme", "evil.pkg", "--reason", "typosquat")
    assert whole == "Hid every release of evil-pkg from the upstreams in acme: typosquat"
    assert [(b.version, b.reason) for b in await cache.blocks(db, acme, "evil-pkg")] == [
        ("1.0.0", "malicious release"), (None, "typosquat")]

    assert await cli(db, "upstream", "unblock", "acme", "EVIL-PKG", "1") == \
        "Unblocked evil-pkg 1 in acme."
    with pytest.raises(CommandError, match=r"no block of evil-pkg 1\.0 in acme; "
                                           r"`pypireg upstream status acme`"):
        await cli(db, "upstream", "unblock", "acme", "evil-pkg", "1.0")
    assert await cli_json(db, "upstream", "unblock", "acme", "evil-pkg") == {
        "project": "acme", "name": "evil-pkg", "version": None}
    with pytest.raises(CommandError, match="no block of every release of evil-pkg"):
        await cli(db, "upstream", "unblock", "acme", "evil-pkg")
    assert await cache.blocks(db, acme, "evil-pkg") == []


@inline
async def test_block_arguments_are_checked(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    with pytest.raises(CommandError, match="no project 'nope'"):
        await cli(db, "upstream", "block", "nope", "six", "--reason", "x")
    with pytest.raises(CommandError, match="invalid package name 'six!'"):
        await cli(db, "upstream", "block", "acme", "six!", "--reason", "x")
    with pytest.raises(CommandError, match="PEP 440"):
        await cli(db, "upstream", "block", "acme", "six", "not-a-version", "--reason", "x")
    with pytest.raises(CommandError, match="PEP 440"):
        await cli(db, "upstream", "unblock", "acme", "six", "not-a-version")
    with pytest.raises(CommandError, match="--reason must say why"):
        await cli(db, "upstream", "block", "acme", "six", "--reason", "  ")
    with pytest.raises(SystemExit):  # --reason is required
        build_parser().parse_args(["upstream", "block", "acme", "six", "1.0"])
    assert await cache.list_blocks(db, await project_id(db, "acme")) == []


@inline
async def test_refresh_resets_the_pages_of_the_upstreams_a_project_includes(
        db: Database) -> None:
    await cli(db, "project", "create", "acme")
    await cli(db, "project", "create", "tools")
    await cli(db, "project", "update", "tools", "--upstreams", "other")
    for upstream, name in (("public", "six"), ("other", "six"), ("public", "seven")):
        await cached_page(db, upstream, name)

    text = await cli(db, "upstream", "refresh", "acme", "Six")
    assert text.startswith("Reset the cached page of six from public, other:")
    for upstream in ("public", "other"):
        page = await cache.get_page(db, upstream, "six")
        assert page is not None and page.etag is None
        assert page.checked_at.replace(tzinfo=None).year == 1  # '-infinity': due now
    untouched = await cache.get_page(db, "public", "seven")
    assert untouched is not None and untouched.etag == '"e1"'

    # tools includes only "other": the page from "public" keeps its validators.
    await cached_page(db, "public", "six", etag='"e2"')
    await cached_page(db, "other", "six", etag='"e2"')
    assert await cli_json(db, "upstream", "refresh", "tools", "six") == {
        "project": "tools", "name": "six", "reset": ["other"], "not_cached": []}
    public = await cache.get_page(db, "public", "six")
    assert public is not None and public.etag == '"e2"'

    assert await cli(db, "upstream", "refresh", "acme", "eight") == \
        "eight is not cached from public, other; nothing to reset."


@inline
async def test_refresh_needs_an_upstream(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    with pytest.raises(CommandError, match=r"no upstreams are configured.*--config"):
        await cli(db, "upstream", "refresh", "acme", "six", config=Config())
    await cli(db, "project", "update", "acme", "--no-upstreams")
    with pytest.raises(CommandError, match="acme includes no upstream; `pypireg project "
                                           "update acme --default-upstreams`"):
        await cli(db, "upstream", "refresh", "acme", "six")
    with pytest.raises(CommandError, match="invalid package name"):
        await cli(db, "upstream", "refresh", "acme", "six_")


@inline
async def test_purge_forgets_a_name_for_every_project(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    await cli(db, "project", "update", "acme", "--no-upstreams")  # purge is not per project
    await cached_page(db, "public", "six")
    await cached_page(db, "other", "six")
    await cached_page(db, "public", "seven")
    await cached_file(db, "public", "six", "six-1.16.0-py2.py3-none-any.whl", 100)
    await cached_file(db, "other", "six", "six-1.16.0.tar.gz", 200)
    await cached_file(db, "public", "seven", "seven-1.0.tar.gz", 300)

    text = await cli(db, "upstream", "purge", "acme", "SIX")
    assert "Purged six" in text and "2 cached files" in text and "every project" in text
    assert "garbage collector" in text
    assert await cache.get_page(db, "public", "six") is None
    assert await cache.get_page(db, "other", "six") is None
    assert await cache.cached_files(db, "six") == []
    assert [f.filename for f in await cache.cached_files(db, "seven")] == ["seven-1.0.tar.gz"]
    assert await cache.get_page(db, "public", "seven") is not None

    assert await cli_json(db, "upstream", "purge", "acme", "six") == {
        "project": "acme", "name": "six", "files": 0}
    with pytest.raises(CommandError, match="no project 'nope'"):
        await cli(db, "upstream", "purge", "nope", "six")


def test_purge_help_says_the_cache_is_shared(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["upstream", "--help"])
    assert "shared by every project" in " ".join(capsys.readouterr().out.split())


async def status_fixture(db: Database) -> None:
    """acme includes both upstreams, tools only "other", solo none, the group corp "public"."""
    for path in ("acme", "tools", "solo"):
        await cli(db, "project", "create", path)
    await cli(db, "project", "update", "tools", "--upstreams", "other")
    await cli(db, "project", "update", "solo", "--no-upstreams")
    await cli(db, "group", "create", "corp")
    await cli(db, "group", "update", "corp", "--upstreams", "public")
    await cached_page(db, "public", "six")
    await cached_file(db, "public", "six", "six-1.16.0-py2.py3-none-any.whl", 1024)
    await cached_file(db, "public", "six", "six-1.16.0.tar.gz", 2048)
    # Downloads a daemon counted, flushed: 3 of the wheel, 2 of the sdist.
    await cache.touch_files(db, [((name.encode().hex() * 64)[:64], n) for name, n in (
        ("six-1.16.0-py2.py3-none-any.whl", 3), ("six-1.16.0.tar.gz", 2))])
    await cache.take_fetch_lease(db, "other", "six", 30)
    await cache.store_missing(db, "other", "six")
    await cache.take_fetch_lease(db, "other", "six", 30)
    await cache.store_error(db, "other", "six", "connection refused " + "x" * 100)
    await cache.take_fetch_lease(db, "public", "seven", 30)  # asked for, never answered
    await cli(db, "upstream", "block", "acme", "six", "1.0", "--reason", "bad build")


@inline
async def test_status_reports_upstreams_pages_and_the_cache(db: Database) -> None:
    await status_fixture(db)
    report = await cli_json(db, "upstream", "status")
    assert report["upstreams"] == [
        {"name": "public", "url": "https://upstream.example/simple/", "ttl": 600.0,
         "timeout": 10.0, "offline": False, "min_age": 86400.0, "projects": ["acme"],
         "groups": ["corp"]},
        {"name": "other", "url": "https://upstream.example/other/simple/", "ttl": 600.0,
         "timeout": 2.5, "offline": True, "min_age": 0.0, "projects": ["acme", "tools"],
         "groups": []}]
    pages = {(p["upstream"], p["name"]): p for p in report["pages"]}
    assert list(pages) == [("public", "seven"), ("other", "six"), ("public", "six")]
    found, missing, pending = pages["public", "six"], pages["other", "six"], \
        pages["public", "seven"]
    assert (found["state"], found["files"], found["bytes"]) == ("found", 2, 3072)
    assert found["downloads"] == 5
    assert found["checked_at"] is not None and found["error"] is None
    assert (missing["state"], missing["files"]) == ("missing", 0)
    assert missing["error"].startswith("connection refused") and missing["error_at"]
    assert (pending["state"], pending["checked_at"]) == ("pending", None)
    assert report["cache"] == {"files": 2, "bytes": 3072, "max_bytes": GIB}
    assert report["warnings"] == [] and "blocks" not in report

    text = await cli(db, "upstream", "status")
    lines = text.splitlines()
    public = next(line for line in lines if line.startswith("public "))
    assert public.split()[1:8] == ["https://upstream.example/simple/", "10m", "10s", "no",
                                   "1d", "acme", "corp"]
    other = next(line for line in lines if line.startswith("other  "))
    assert "2.5s" in other and "yes" in other and "acme, tools" in other
    six = next(line for line in lines if line.startswith("public    six"))
    assert six.split()[2:6] == ["found", "2", "3KiB", "5"]
    seven = next(line for line in lines if " seven " in line)
    assert seven.split()[2:7] == ["pending", "0", "0B", "0", "due"]
    refused = next(line for line in lines if "connection refused" in line)
    assert "…" in refused and "x" * 100 not in refused  # cut in the table, whole in JSON
    assert "Cache, shared by every project: 2 files, 3KiB of 1GiB (proxy.max_cache_size)." \
        in lines


@inline
async def test_status_of_a_project_shows_its_upstreams_pages_and_blocks(db: Database) -> None:
    await status_fixture(db)
    acme = await cli_json(db, "upstream", "status", "acme")
    assert acme["project"] == {"path": "acme", "upstreams": None,
                               "includes": ["public", "other"]}
    assert len(acme["pages"]) == 3
    assert [(b["name"], b["version"], b["reason"]) for b in acme["blocks"]] == [
        ("six", "1.0", "bad build")]
    text = await cli(db, "upstream", "status", "acme")
    assert "acme includes every configured upstream (the default): public, other." in text
    assert "Blocks in acme:" in text and "bad build" in text

    tools = await cli_json(db, "upstream", "status", "tools")
    assert [(p["upstream"], p["name"]) for p in tools["pages"]] == [("other", "six")]
    assert tools["blocks"] == [] and tools["cache"]["files"] == 2  # the cache is shared
    text = await cli(db, "upstream", "status", "tools")
    assert "tools includes, in this order: other." in text and "No blocks in tools." in text

    solo = await cli(db, "upstream", "status", "solo")
    assert "solo includes no upstream." in solo and "No cached pages." in solo

    only = await cli_json(db, "upstream", "status", "acme", "--name", "Seven")
    assert [(p["upstream"], p["name"]) for p in only["pages"]] == [("public", "seven")]
    assert only["blocks"] == []
    six = await cli_json(db, "upstream", "status", "--name", "six")
    assert {p["name"] for p in six["pages"]} == {"six"} and len(six["pages"]) == 2

    with pytest.raises(CommandError, match="no project 'nope'"):
        await cli(db, "upstream", "status", "nope")
    with pytest.raises(CommandError, match="invalid package name"):
        await cli(db, "upstream", "status", "--name", "six seven")


@inline
async def test_status_points_out_upstreams_the_config_no_longer_has(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    await cli(db, "project", "update", "acme", "--upstreams", "other,public")
    only_public = Config(upstreams=CONFIG.upstreams[:1])
    report = await cli_json(db, "upstream", "status", "acme", config=only_public)
    assert report["project"]["includes"] == ["public"]
    assert len(report["warnings"]) == 1 and "'other'" in report["warnings"][0]
    text = await cli(db, "upstream", "status", config=only_public)
    assert "Warning: project acme lists the upstream 'other', which is not configured" in text

    empty = await cli(db, "upstream", "status", config=Config())
    assert empty.startswith("No upstreams are configured")


@inline
async def test_status_never_prints_an_upstreams_secrets(db: Database) -> None:
    await status_fixture(db)
    outputs = [await cli(db, *json_flag, "upstream", "status", *project)
               for json_flag in ((), ("--json",)) for project in ((), ("acme",))]
    for output in outputs:
        # The config does hold them (this test would pass on an empty one).
        assert CONFIG.upstreams[0].token == TOKEN
        for secret in (TOKEN, PASSWORD, HEADER_VALUE, USERNAME, "X-Api-Key", "Bearer",
                       "Basic "):
            assert secret not in output
        assert "https://upstream.example/simple/" in output


def test_durations_and_sizes_print_as_the_config_writes_them() -> None:
    assert [duration(s) for s in (0, 1.5, 90, 600, 7200, 86400, 90000)] == [
        "0s", "1.5s", "90s", "10m", "2h", "1d", "25h"]
    assert [size(n) for n in (0, 1023, 1024, 1536, 50 * GIB, 3 * 1024 * GIB * 1024)] == [
        "0B", "1023B", "1KiB", "1.5KiB", "50GiB", "3072TiB"]
