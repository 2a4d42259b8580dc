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
    server = _table(raw, "server")
    storage = _table(raw, "storage")
    database = _table(raw, "database")
    uploads = _table(raw, "uploads")
    logging = _table(raw, "logging")
    _only_keys(server, "server", {"listen", "base_url", "timeout", "trusted_proxies"})
    _only_keys(logging, "logging", {"json_file"})
    _only_keys(storage, "storage", {"path"})
    _only_keys(database, "database", {"dsn", "pool_size"})
    _only_keys(uploads, "uploads", {"max_size"})

    listen = server.get("listen", list(DEFAULT_LISTEN))
    if (
        not isinstance(listen, list)
        or not listen
        or not all(isinstance(x, str) and x for x in listen)
    ):
        raise ConfigError(
            "server.listen must be a non-empty list of endpoint strings, "
            'e.g. ["tcp:8080:interface=127.0.0.1"]'
        )
    base_url = server.get("base_url")
    if base_url is not None:
        if not isinstance(base_url, str):
            raise ConfigError("server.base_url must be a string such as https://pypi.example.com")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ConfigError(
                f"server.base_url must be an absolute http(s) URL without a query, got {base_url!r}"
            )
        base_url = base_url.rstrip("/")
    timeout = server.get("timeout", 60.0)
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError("server.timeout must be a positive number of seconds")

    proxies = server.get("trusted_proxies", [])
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise ConfigError('server.trusted_proxies must be a list of addresses or networks, '
                          'e.g. ["127.0.0.1", "10.0.0.0/8"]')
    try:
        trusted = tuple(ip_network(p, strict=False) for p in proxies)
    except ValueError as e:
        raise ConfigError(f"server.trusted_proxies: {e}") from None

    json_file = logging.get("json_file")
    if json_file is not None and (not isinstance(json_file, str) or not json_file):
        raise ConfigError('logging.json_file must be a file path or "-" for standard output')
    if json_file not in (None, "-") and not Path(json_file).is_absolute():
        json_file = str(base / json_file)

    spath = storage.get("path", DEFAULT_STORAGE)
    if not isinstance(spath, str) or not spath:
        raise ConfigError("storage.path must be a non-empty string")
    storage_path = Path(spath)
    if not storage_path.is_absolute():
        storage_path = base / storage_path

    dsn = database.get("dsn")
    if dsn is not None and (not isinstance(dsn, str) or not dsn):
        raise ConfigError("database.dsn must be a non-empty libpq connection string or URI")
    pool_size = database.get("pool_size", 5)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 100:
        raise ConfigError("database.pool_size must be an integer between 1 and 100")

    max_size = uploads.get("max_size", DEFAULT_MAX_UPLOAD)
    if isinstance(max_size, str):
        max_size = parse_size(max_size, "uploads.max_size")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
        raise ConfigError('uploads.max_size must be a positive size, e.g. 52428800 or "50MiB"')

    return Config(
        server=ServerConfig(listen=tuple(listen), base_url=base_url, timeout=float(timeout),
                            trusted_proxies=trusted),
        storage=StorageConfig(path=storage_path),
        database=DatabaseConfig(dsn=dsn, pool_size=pool_size),
        uploads=UploadsConfig(max_size=max_size),
        logging=LoggingConfig(json_file=json_file),
    )


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
