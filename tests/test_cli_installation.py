"""Which installation the `pypireg` command works on, and `pypireg init`.

The order (--config, PYPIREG_CONFIG, ./pypireg.toml, ./pypireg-data) is
checked in-process on folders of config files; the real command is run in
an empty folder (it must exit 2 and create nothing), against a running
daemon found each way, and to create an installation with `pypireg init`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypireg.admin.context import CommandError
from pypireg.admin.installation import NoInstallation, find_installation
from tests.support.daemon import BIN, Daemon, running_daemon


def pypireg(*args: str, cwd: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """The real command, in *cwd*, with PYPIREG_CONFIG only if *env* sets it."""
    environ = {k: v for k, v in os.environ.items() if k != "PYPIREG_CONFIG"}
    return subprocess.run([str(BIN / "pypireg"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**environ, **(env or {})})


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not under pytest's basetemp: the embedded PostgreSQL may run as another user.
    path = Path(tempfile.mkdtemp(prefix="pypireg-cli-installation-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config_file(path: Path, storage: str, dsn: str | None = "postgresql:///x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[storage]\npath = "{storage}"\n'
                    + (f'[database]\ndsn = "{dsn}"\n' if dsn else ""))
    return path


def test_the_order_is_config_then_environment_then_the_current_directory(
        tmp_path: Path) -> None:
    given = config_file(tmp_path / "given" / "a.toml", "given-data")
    env = config_file(tmp_path / "env" / "b.toml", "env-data")
    here = tmp_path / "here"
    config_file(here / "pypireg.toml", "here-data")
    (here / "pypireg-data").mkdir()
    environ = {"PYPIREG_CONFIG": str(env)}

    found = find_installation(given, environ, here)
    assert (found.config_path, found.found_by) == (given, "--config")
    assert found.data_folder == tmp_path / "given" / "given-data"
    found = find_installation(None, environ, here)
    assert (found.config_path, found.found_by) == (env, "PYPIREG_CONFIG")
    # An empty variable is no variable.
    found = find_installation(None, {"PYPIREG_CONFIG": ""}, here)
    assert found.config_path == here / "pypireg.toml" and found.found_by == "the current directory"
    assert found.data_folder == here / "here-data"
    (here / "pypireg.toml").unlink()
    found = find_installation(None, {}, here)
    assert found.config_path is None and found.data_folder == here / "pypireg-data"
    assert found.config.database.dsn is None  # the daemon's defaults


def test_init_looks_in_its_folder_before_the_environment(tmp_path: Path) -> None:
    env = config_file(tmp_path / "env.toml", "env-data")
    target = tmp_path / "new"
    found = find_installation(None, {"PYPIREG_CONFIG": str(env)}, tmp_path, folder=target,
                              creating=True)
    assert found.config_path is None and found.data_folder == target / "pypireg-data"
    assert not found.data_folder_existed
    config_file(target / "pypireg.toml", "custom")
    found = find_installation(None, {}, tmp_path, folder=target, creating=True)
    assert found.config_path == target / "pypireg.toml"
    assert found.data_folder == target / "custom"
    with pytest.raises(NoInstallation, match="not both"):
        find_installation(env, {}, tmp_path, folder=target, creating=True)


def test_what_is_not_an_installation_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(NoInstallation) as nothing:
        find_installation(None, {}, tmp_path)
    assert nothing.value.exit_code == 2
    assert f"neither pypireg.toml nor pypireg-data/ in {tmp_path}" in str(nothing.value)
    with pytest.raises(NoInstallation, match=r"config file .*missing\.toml \(from "
                                             r"PYPIREG_CONFIG\) does not exist"):
        find_installation(None, {"PYPIREG_CONFIG": str(tmp_path / "missing.toml")}, tmp_path)
    # A config without a DSN whose data folder has no cluster yet.
    embedded = config_file(tmp_path / "embedded.toml", "data", dsn=None)
    with pytest.raises(NoInstallation, match=r"pypireg init --config .*embedded\.toml"):
        find_installation(embedded, {}, tmp_path).require_existing()
    # A configured DSN is an installation, whatever the folder holds.
    find_installation(config_file(tmp_path / "dsn.toml", "data"), {}, tmp_path
                      ).require_existing()
    (tmp_path / "pypireg-data").mkdir()
    with pytest.raises(NoInstallation, match="holds no registry"):
        find_installation(None, {}, tmp_path).require_existing()
    (tmp_path / "bad.toml").write_text("[storage]\npath = 3\n")
    with pytest.raises(CommandError, match=r"storage\.path") as bad:
        find_installation(tmp_path / "bad.toml", {}, tmp_path)
    assert bad.value.exit_code == 1


def test_a_cluster_of_another_user_is_reported_as_such(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a non-root user facing a root daemon's cluster (mode 0700, owned by
    # pypireg-postgres); root itself can read anything, hence the stand-in.
    def denied(pgdata: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(pgdata / "PG_VERSION"))

    monkeypatch.setattr("pypireg.admin.installation.cluster_exists", denied)
    found = find_installation(config_file(tmp_path / "a.toml", "data", dsn=None), {}, tmp_path)
    with pytest.raises(CommandError, match=r"cannot read .*data/postgres: permission denied; "
                                           r"run the command as the user that owns") as error:
        found.require_existing()
    assert error.value.exit_code == 1


@pytest.mark.e2e
def test_with_no_installation_the_command_exits_2_and_creates_nothing(folder: Path) -> None:
    result = pypireg("project", "list", cwd=folder)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "pypireg: no installation found: no --config, no PYPIREG_CONFIG, and neither "
        f"pypireg.toml nor pypireg-data/ in {folder}; pass --config FILE (the daemon's config), "
        "run the command in the daemon's folder, or create an installation with "
        "`pypireg init`\n")
    result = pypireg("token", "create", "--project", "x", "--scope", "write", cwd=folder)
    assert result.returncode == 2
    assert list(folder.iterdir()) == []


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("pypireg-cli-installation-") as d:
        yield d


@pytest.mark.e2e
def test_each_way_of_naming_the_installation_reaches_the_daemons(
        daemon: Daemon, folder: Path) -> None:
    # In the daemon's folder: its pypireg.toml, no --config.
    created = pypireg("project", "create", "found-here", cwd=daemon.folder)
    assert created.returncode == 0, created.stderr
    # Anywhere, through PYPIREG_CONFIG; --json after the subcommand.
    listed = pypireg("project", "list", "--json", cwd=folder,
                     env={"PYPIREG_CONFIG": str(daemon.config)})
    assert listed.returncode == 0, listed.stderr
    assert "found-here" in [p["path"] for p in json.loads(listed.stdout)]
    # --config after the subcommand wins over the variable.
    elsewhere = config_file(folder / "other.toml", "nothing-here", dsn=None)
    token = pypireg("token", "create", "--project", "found-here", "--scope", "read",
                    "--config", str(daemon.config), cwd=folder,
                    env={"PYPIREG_CONFIG": str(elsewhere)})
    assert token.returncode == 0, token.stderr
    assert token.stdout.splitlines()[-1].startswith("pypireg_")
    assert not (folder / "nothing-here").exists()


@pytest.mark.e2e
def test_init_creates_the_installation_and_says_what_it_made(
        folder: Path, daemon_dsn: str | None) -> None:
    if daemon_dsn is None:
        args: tuple[str, ...] = ()
        data = folder / "pypireg-data"
    else:
        args = ("--config", str(config_file(folder / "pypireg.toml", "data", dsn=daemon_dsn)))
        data = folder / "data"
    made = pypireg("init", *args, cwd=folder)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0] == "Initialised a pypireg installation:"
    assert lines[1] == f"  data folder  {data} (created)"
    assert "migrations applied)" in lines[2]
    if daemon_dsn is None:
        assert lines[2].startswith(f"  database     embedded PostgreSQL in {data / 'postgres'} "
                                   "(created")
        assert lines[3] == f"Start the daemon with: cd {folder} && twistd -n pypireg"
        assert (data / "postgres" / "PG_VERSION").is_file()
    assert (data / "blobs").is_dir()

    assert pypireg("project", "create", "made-by-init", *args, cwd=folder).returncode == 0
    again = pypireg("--json", "init", *args, cwd=folder)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert not report["data_folder_created"] and not report["cluster_created"]
    assert report["migrations_applied"] == [] and report["schema_version"] > 0
    assert "nothing to do" in pypireg("init", *args, cwd=folder).stdout
