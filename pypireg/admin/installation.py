"""Which installation an admin command works on, and whether it exists.

Composition layer. A command must never make a second registry by
accident (run elsewhere, it used to create a fresh `./pypireg-data` with
its own PostgreSQL, and mint tokens into it): only the daemon and
`pypireg init` create installations. A command finds its installation
from, in this order:

1. `--config FILE`;
2. the `PYPIREG_CONFIG` environment variable (a config file's path);
3. in the current directory, `pypireg.toml` (the name etc/ and the systemd
   unit use), else `pypireg-data/` (the data folder the daemon uses when
   started without a config, with the default settings).

The installation exists when its config names a database (`[database]
dsn`) or its data folder holds an initialised embedded PostgreSQL.
Anything else is a usage error (exit status 2) that says where the command
looked and what to pass.

Everything here is a few `stat` calls and reading one small file, done
before the reactor runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pypireg.admin.context import CommandError
from pypireg.admin.parsing import USAGE_ERROR
from pypireg.config import DEFAULT_STORAGE, Config, ConfigError, StorageConfig, load_config
from pypireg.storage.embedded import cluster_exists

CONFIG_ENV = "PYPIREG_CONFIG"
CONFIG_NAME = "pypireg.toml"


class NoInstallation(CommandError):
    """There is no installation where the command looked: a usage error."""

    exit_code = USAGE_ERROR


@dataclass(frozen=True)
class Installation:
    """The installation a command names, found but not opened.

    Attributes:
        config: Its config; storage.path is absolute.
        config_path: The config file, or None for a bare data folder.
        found_by: How it was named: "--config", "PYPIREG_CONFIG", or the
            folder it was found in.
        data_folder_existed: Whether storage.path existed when it was
            found (so `pypireg init` can say what it made).
    """

    config: Config
    config_path: Path | None
    found_by: str
    data_folder_existed: bool

    @property
    def data_folder(self) -> Path:
        return self.config.storage.path

    def describe(self) -> str:
        """Where it is and how it was named, for messages."""
        if self.config_path is not None:
            return f"{self.config_path} (from {self.found_by})"
        return f"{self.data_folder} (found in {self.found_by}, default settings)"

    def require_existing(self) -> None:
        """Check that the installation exists (the daemon or `pypireg init` made it).

        Raises:
            NoInstallation: It does not; the message says how to make it.
            CommandError: Its data folder cannot be read by this user.
        """
        if self.config.database.dsn is not None:
            return
        pgdata = self.config.pgdata
        try:
            if cluster_exists(pgdata):
                return
        except PermissionError:
            raise CommandError(
                f"cannot read {pgdata}: permission denied; run the command as the user that "
                "owns the data folder (or as root)") from None
        if self.config_path is not None:
            raise NoInstallation(
                f"no installation at {self.data_folder} yet (storage.path of "
                f"{self.describe()}): start the daemon with this config once, or run "
                f"`pypireg init --config {self.config_path}`")
        raise NoInstallation(
            f"{self.data_folder} holds no registry (no embedded PostgreSQL in it); if its "
            "daemon uses [database] dsn, pass that daemon's --config; to create one here, "
            "run `pypireg init`")


def find_installation(config_file: Path | None, environ: Mapping[str, str], cwd: Path, *,
                      folder: Path | None = None, creating: bool = False) -> Installation:
    """The installation named by *config_file*, *environ* or the current directory *cwd*.

    Args:
        config_file: `--config`, if given.
        environ: The environment, for PYPIREG_CONFIG.
        cwd: The current directory.
        folder: `pypireg init DIR`: look in (or create in) DIR, before
            PYPIREG_CONFIG and instead of *cwd*.
        creating: For `pypireg init`: with nothing found, name the
            default data folder to create instead of failing.

    Raises:
        NoInstallation: Nothing is named (unless *creating*), or a named
            config file does not exist.
        CommandError: The config file is not a valid config.
    """
    if config_file is not None and folder is not None:
        raise NoInstallation(f"give --config FILE or the folder {folder}, not both")
    if config_file is not None:
        return _from_config(config_file, "--config")
    if folder is None and environ.get(CONFIG_ENV):
        return _from_config(Path(environ[CONFIG_ENV]), CONFIG_ENV)
    where = cwd if folder is None else folder.absolute()
    label = "the current directory" if folder is None else str(where)
    if (where / CONFIG_NAME).is_file():
        return _from_config(where / CONFIG_NAME, label)
    data = where / DEFAULT_STORAGE
    if data.is_dir() or creating:
        config = replace(Config(), storage=StorageConfig(path=data))
        return Installation(config, None, label, data.is_dir())
    raise NoInstallation(
        f"no installation found: no --config, no {CONFIG_ENV}, and neither {CONFIG_NAME} nor "
        f"{DEFAULT_STORAGE}/ in {where}; pass --config FILE (the daemon's config), run the "
        "command in the daemon's folder, or create an installation with `pypireg init`")


def _from_config(path: Path, found_by: str) -> Installation:
    path = path.absolute()
    if not path.is_file():
        raise NoInstallation(f"config file {path} (from {found_by}) does not exist")
    try:
        config = load_config(path)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    return Installation(config, path, found_by, config.storage.path.is_dir())
