"""`twistd pypireg`: options and service construction, composition only."""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import IService
from twisted.python import usage

from pypireg.config import ConfigError, load_config
from pypireg.service import RegistryService


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Run the pypireg package registry. Without --config it listens on "
        "127.0.0.1:8080, keeps its data in ./pypireg-data and runs an embedded "
        "PostgreSQL there."
    )
    optParameters = [
        ["config", "c", None, "Path to the TOML configuration file."],
    ]


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    path = Path(options["config"]) if options["config"] else None
    try:
        config = load_config(path)
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
    return RegistryService(reactor, config)
