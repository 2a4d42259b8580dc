"""`twistd pypireg`: options and service construction, composition only.

A failed start is one line and exit status 1, whatever fails: a config
error here, anything later in RegistryService._start_failed.
"""

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
    """The registry's service, configured by `--config` (or the defaults).

    Raises:
        SystemExit: The config cannot be used; its message is the one line
            to print (Python prints it to stderr and exits 1).
    """
    from twisted.internet import reactor

    path = Path(options["config"]) if options["config"] else None
    try:
        config = load_config(path)
    except ConfigError as e:
        # Not UsageError: twistd lets that escape from makeService as a
        # traceback (and at option-parsing time it prints all of its own
        # usage first). Logging has not begun yet, so stderr is the terminal's
        # or the journal's, and exit status 1 is what Restart=on-failure wants.
        raise SystemExit(f"pypireg could not start: {e}") from None
    if config.server.workers > 1:
        from pypireg.supervisor import WorkersParent

        # The workers read the same file; resolved, as they may start elsewhere.
        return WorkersParent(reactor, config, path.resolve() if path is not None else None)
    return RegistryService(reactor, config)
