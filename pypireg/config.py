"""Configuration: a TOML file read into frozen dataclasses.

Domain layer, no I/O beyond reading the one file. Every error names the
dotted key that is wrong, so an operator can fix the file without reading
code.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MIB = 1024 * 1024
DEFAULT_LISTEN = ("tcp:8080:interface=127.0.0.1",)
DEFAULT_STORAGE = "pypireg-data"
DEFAULT_MAX_UPLOAD = 50 * MIB


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    base_url: str | None = None
    # Idle connections (and clients that stop sending mid-request) are cut
    # off after this many seconds.
    timeout: float = 60.0
    # Peers whose X-Forwarded-For / X-Forwarded-Proto headers are believed.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True)
class LoggingConfig:
    # Also write structured JSON log events (twisted.logger's format) to
    # this file; "-" is standard output. None: only the text log.
    json_file: str | None = None


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path(DEFAULT_STORAGE)


@dataclass(frozen=True)
class DatabaseConfig:
    # None means: run the embedded PostgreSQL inside the storage folder.
    dsn: str | None = None
    pool_size: int = 5


@dataclass(frozen=True)
class UploadsConfig:
    max_size: int = DEFAULT_MAX_UPLOAD


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def pgdata(self) -> Path:
        """Where the embedded PostgreSQL keeps its cluster."""
        return self.storage.path / "postgres"


def load_config(path: Path | None) -> Config:
    """Read *path*, or return the defaults when it is None."""
    if path is None:
        return Config()
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    base = path.resolve().parent
    return parse_config(raw, base)


def parse_config(raw: Mapping[str, Any], base: Path = Path()) -> Config:
    """Turn a parsed TOML document into a Config; relative paths hang off *base*."""
    _only_keys(raw, "", {"server", "storage", "database", "uploads", "logging"})
    # Every section's shape first: a table that is not one is reported before
    # any key inside the others.
    server, storage, database, uploads, logging = (
        _table(raw, key) for key in ("server", "storage", "database", "uploads", "logging"))
    # Each section checks its own keys, then its values; the first mistake,
    # in this order, is the one reported.
    return Config(
        server=_server(server),
        logging=_logging(logging, base),
        storage=_storage(storage, base),
        database=_database(database),
        uploads=_uploads(uploads),
    )


def _server(table: Mapping[str, Any]) -> ServerConfig:
    """The [server] table: listeners, public URL, timeout, trusted proxies."""
    _only_keys(table, "server", {"listen", "base_url", "timeout", "trusted_proxies"})
    listen = _strings(
        table.get("listen", list(DEFAULT_LISTEN)),
        "server.listen must be a non-empty list of endpoint strings, "
        'e.g. ["tcp:8080:interface=127.0.0.1"]')
    base_url = table.get("base_url")
    if base_url is not None:
        base_url = _base_url(base_url)
    timeout = _positive_number(table.get("timeout", 60.0),
                               "server.timeout must be a positive number of seconds")
    proxies = _strings(table.get("trusted_proxies", []),
                       "server.trusted_proxies must be a list of addresses or networks, "
                       'e.g. ["127.0.0.1", "10.0.0.0/8"]', allow_empty=True)
    try:
        trusted = tuple(ip_network(p, strict=False) for p in proxies)
    except ValueError as e:
        raise ConfigError(f"server.trusted_proxies: {e}") from None
    return ServerConfig(listen=tuple(listen), base_url=base_url, timeout=timeout,
                        trusted_proxies=trusted)


def _base_url(value: Any) -> str:
    """server.base_url: absolute http(s), no query; kept without trailing slashes."""
    url = _string(value, "server.base_url must be a string such as https://pypi.example.com",
                  allow_empty=True)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(
            f"server.base_url must be an absolute http(s) URL without a query, got {url!r}"
        )
    return url.rstrip("/")


def _logging(table: Mapping[str, Any], base: Path) -> LoggingConfig:
    """The [logging] table: the optional JSON event log."""
    _only_keys(table, "logging", {"json_file"})
    json_file = table.get("json_file")
    if json_file is not None:
        json_file = _string(json_file,
                            'logging.json_file must be a file path or "-" for standard output')
        # Relative paths hang off the config file's folder, as storage.path does.
        if json_file != "-" and not Path(json_file).is_absolute():
            json_file = str(base / json_file)
    return LoggingConfig(json_file=json_file)


def _storage(table: Mapping[str, Any], base: Path) -> StorageConfig:
    """The [storage] table: the folder for blobs (and the embedded PostgreSQL)."""
    _only_keys(table, "storage", {"path"})
    path = Path(_string(table.get("path", DEFAULT_STORAGE),
                        "storage.path must be a non-empty string"))
    return StorageConfig(path=path if path.is_absolute() else base / path)


def _database(table: Mapping[str, Any]) -> DatabaseConfig:
    """The [database] table: DSN (none: embedded) and pool size."""
    _only_keys(table, "database", {"dsn", "pool_size"})
    dsn = table.get("dsn")
    if dsn is not None:
        dsn = _string(dsn, "database.dsn must be a non-empty libpq connection string or URI")
    pool_size = _positive_int(table.get("pool_size", 5),
                              "database.pool_size must be an integer between 1 and 100",
                              maximum=100)
    return DatabaseConfig(dsn=dsn, pool_size=pool_size)


def _uploads(table: Mapping[str, Any]) -> UploadsConfig:
    """The [uploads] table: the size limit, as bytes or a "50MiB"-style string."""
    _only_keys(table, "uploads", {"max_size"})
    max_size = table.get("max_size", DEFAULT_MAX_UPLOAD)
    if isinstance(max_size, str):
        max_size = parse_size(max_size, "uploads.max_size")
    return UploadsConfig(max_size=_positive_int(
        max_size, 'uploads.max_size must be a positive size, e.g. 52428800 or "50MiB"'))


def _string(value: Any, message: str, *, allow_empty: bool = False) -> str:
    """*value* if it is a string (a non-empty one unless *allow_empty*), else ConfigError."""
    if not isinstance(value, str) or not (value or allow_empty):
        raise ConfigError(message)
    return value


def _strings(value: Any, message: str, *, allow_empty: bool = False) -> list[str]:
    """*value* if it is a list of strings, else ConfigError.

    Unless *allow_empty*, neither the list nor any string in it may be empty.
    """
    if not isinstance(value, list) or not (value or allow_empty) or not all(
            isinstance(x, str) and (x or allow_empty) for x in value):
        raise ConfigError(message)
    return value


def _positive_number(value: Any, message: str) -> float:
    """*value* as a float if it is a finite number above zero, else ConfigError."""
    # bool is an int to Python, but `timeout = true` is a mistake.
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ConfigError(message)
    return float(value)


def _positive_int(value: Any, message: str, *, maximum: int | None = None) -> int:
    """*value* if it is an integer from 1 up to *maximum* (if given), else ConfigError."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < 1
            or (maximum is not None and value > maximum)):
        raise ConfigError(message)
    return value


_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": MIB, "gib": 1024 * MIB, "kb": 1000, "mb": 10**6,
          "gb": 10**9}


def parse_size(text: str, key: str) -> int:
    """Parse "50MiB"-style sizes."""
    s = text.strip().lower().replace(" ", "")
    digits = s.rstrip("kmgib")
    unit = s[len(digits):]
    if not (digits.isascii() and digits.isdigit()) or unit not in _UNITS:
        raise ConfigError(f'{key} must be a size such as 52428800, "50MiB" or "2GiB", got {text!r}')
    return int(digits) * _UNITS[unit]


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table ([{key}])")
    return value


def _only_keys(table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            dotted = f"{prefix}.{key}" if prefix else key
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"unknown configuration key {dotted}; known: {known}")
