"""The admin command's behaviour (in-process), the twistd plugin and tap."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from pypireg.admin.cli import CommandError, build_parser, run_command
from pypireg.storage.database import Database
from pypireg.tap import Options, makeService


async def cli(db: Database, *argv: str) -> str:
    return await run_command(db, build_parser().parse_args(list(argv)))


@pytest_twisted.ensureDeferred
async def test_project_and_token_lifecycle(db: Database) -> None:
    assert await cli(db, "project", "create", "acme/tools") == "1"
    assert await cli(db, "project", "create", "open", "--public") == "2"
    listing = await cli(db, "project", "list")
    assert "acme/tools" in listing and "private" in listing and "public" in listing
    rows = json.loads(await cli(db, "--json", "project", "list"))
    assert [r["path"] for r in rows] == ["acme/tools", "open"]

    out = await cli(db, "token", "create", "--project", "acme/tools", "--scope", "write",
                    "--description", "CI", "--expires-in", "30")
    token = out.splitlines()[-1]
    assert token.startswith("pypireg_") and token not in "\n".join(out.splitlines()[:-1])
    listed = await cli(db, "token", "list", "--project", "1")
    assert "CI" in listed and token not in listed and token[:12] in listed
    assert await cli(db, "token", "revoke", "1") == "Revoked token 1."
    with pytest.raises(CommandError, match="no active token"):
        await cli(db, "token", "revoke", "1")

    updated = json.loads(await cli(db, "--json", "project", "update", "acme/tools",
                                   "--public", "--packages-disabled", "--reject-duplicates"))
    assert updated["public"] and not updated["packages_enabled"] and updated["reject_duplicates"]


@pytest_twisted.ensureDeferred
async def test_command_errors_are_one_line(db: Database) -> None:
    with pytest.raises(CommandError, match="no project 'nope'"):
        await cli(db, "token", "create", "--project", "nope", "--scope", "read")
    with pytest.raises(CommandError, match="invalid project path"):
        await cli(db, "project", "create", "../etc")
    await cli(db, "project", "create", "acme")
    with pytest.raises(CommandError, match="exists already"):
        await cli(db, "project", "create", "ACME")
    with pytest.raises(CommandError, match="positive"):
        await cli(db, "token", "create", "--project", "acme", "--scope", "read",
                  "--expires-in", "0")


def test_scope_is_validated_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["token", "create", "--project", "x", "--scope", "admin"])


def _leaves(parser: argparse.ArgumentParser, path: str = "pypireg"
            ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, child in group.choices.items():
            yield from _leaves(child, f"{path} {name}")


def test_every_leaf_subcommand_names_its_handler() -> None:
    # argparse is the dispatcher: a leaf without a handler would fail at run time.
    leaves = dict(_leaves(build_parser()))
    assert len(leaves) == 45
    assert {"pypireg init", "pypireg name claim", "pypireg namespace grant",
            "pypireg upstream block", "pypireg upstream status", "pypireg cleanup",
            "pypireg audit", "pypireg trusted-publisher add"} <= set(leaves)
    missing = [path for path, parser in leaves.items() if not callable(
        parser.get_default("handler"))]
    assert missing == []


def test_twistd_finds_the_plugin() -> None:
    names = [p.tapname for p in getPlugins(IServiceMaker)]
    assert "pypireg" in names


def test_tap_reports_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlisten = []\n")
    options = Options()
    options.parseOptions(["--config", str(bad)])
    # One line and exit status 1 (SystemExit with a message), not a traceback.
    with pytest.raises(SystemExit, match=r"^pypireg could not start: server\.listen"):
        makeService(options)
    good = tmp_path / "good.toml"
    good.write_text('[storage]\npath = "data"\n')
    options.parseOptions(["--config", str(good)])
    service = makeService(options)
    assert service.config.storage.path == tmp_path / "data"  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_users_members_and_token_kinds(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    assert await cli(db, "user", "create", "alice") == "1"
    out = await cli(db, "user", "token", "create", "alice", "--scope", "api",
                    "--description", "laptop")
    assert "personal token 1 (api) for user alice" in out
    assert out.splitlines()[-1].startswith("pypireg_")
    assert await cli(db, "member", "add", "acme", "alice", "--role", "developer") == \
        "alice is developer of acme."
    assert "developer" in await cli(db, "member", "list", "acme")
    deploy = json.loads(await cli(db, "--json", "deploy-token", "create", "--project", "acme",
                                  "--scope", "read_package_registry"))
    assert deploy["kind"] == "deploy" and deploy["scope"] == "read_package_registry"
    assert deploy["username"] == f"gitlab+deploy-token-{deploy['id']}"
    listed = await cli(db, "token", "list", "--project", "acme")
    assert "read_package_registry" in listed and deploy["username"] in listed
    assert "laptop" in await cli(db, "user", "token", "list", "alice")
    assert await cli(db, "user", "block", "alice") == "Blocked user alice."
    assert await cli(db, "member", "remove", "acme", "alice") == "Removed alice from acme."
    with pytest.raises(CommandError, match="not a member"):
        await cli(db, "member", "remove", "acme", "alice")
    with pytest.raises(CommandError, match="exists already"):
        await cli(db, "user", "create", "ALICE")


def test_the_command_does_not_import_the_daemons_http_code() -> None:
    # Each import is time every `pypireg` run waits for (bench/RESULTS.md):
    # the HTTP layer, the proxy and the upload checks are the daemon's.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pypireg.admin.cli; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    heavy = ("pypireg.http", "pypireg.proxy", "pypireg.ingest", "pypireg.upstream",
             "pypireg.service", "klein", "werkzeug", "treq", "pkginfo", "tqdm")
    assert [m for m in loaded if m.split(".")[0] in heavy or m.startswith(heavy)] == []


@pytest_twisted.ensureDeferred
async def test_audit_takes_its_options_anywhere_and_checks_them(db: Database) -> None:
    await cli(db, "project", "create", "acme")
    before = json.loads(await cli(db, "--json", "audit", "--project", "acme"))
    after = json.loads(await cli(db, "audit", "--project", "acme", "--json"))
    assert before == after and [e["action"] for e in after] == ["project.create"]
    for bad in (["audit", "--limit", "0"], ["audit", "--limit", "many"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    with pytest.raises(CommandError, match="no group 'nope'"):
        await cli(db, "audit", "--group", "nope")
