"""Configuration: a TOML file read into frozen dataclasses.

Domain layer, no I/O beyond reading the one file (and, for [[upstreams]],
checking that a `ca_file` exists and reading the environment variables that
`token_env` / `password_env` name, as `server.metrics_token_env` does).
Every error names the dotted key that is wrong, so an operator can fix the
file without reading code; none quotes a secret.
"""

from __future__ import annotations

import base64
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pypireg.domain.trusted_publishing import ISSUER_KINDS, IssuerKind

MIB = 1024 * 1024
DEFAULT_LISTEN = ("tcp:8080:interface=127.0.0.1",)
DEFAULT_STORAGE = "pypireg-data"
DEFAULT_MAX_UPLOAD = 50 * MIB
GIB = 1024 * MIB
DEFAULT_MAX_CACHE_SIZE = 50 * GIB
DEFAULT_UPSTREAM_TTL = 600.0
DEFAULT_UPSTREAM_TIMEOUT = 10.0
# S3 allows parts of 5 MiB to 5 GiB (all but the last) and 10,000 parts.
S3_MIN_PART = 5 * MIB
S3_MAX_PART = 5 * GIB
DEFAULT_S3_PART = 8 * MIB
DEFAULT_S3_PARTS_IN_FLIGHT = 4
DEFAULT_S3_TIMEOUT = 60.0
DEFAULT_PRESIGN_TTL = 300.0
# SigV4 presigned URLs live at most a week.
MAX_PRESIGN_TTL = 7 * 24 * 3600.0
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_REGION_RE = re.compile(r"^[a-z0-9-]{1,40}\Z")


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
    # /-/metrics wants `Authorization: Bearer <this>` when set (None: open).
    # Out of repr, so a logged or printed config never shows it.
    metrics_token: str | None = field(default=None, repr=False)
    # Endpoints that serve /-/metrics alone; when set, `listen` does not
    # serve it at all. Empty: /-/metrics is on `listen`, as every route.
    metrics_listen: tuple[str, ...] = ()
    # Worker processes serving the listeners (each with its own reactor);
    # 1 is one process that serves them itself, as without the key.
    workers: int = 1


@dataclass(frozen=True)
class LoggingConfig:
    # Also write structured JSON log events (twisted.logger's format) to
    # this file; "-" is standard output. None: only the text log.
    json_file: str | None = None


@dataclass(frozen=True)
class S3Config:
    """[storage.s3]: where blobs live with backend = "s3".

    Credentials are never here: botocore resolves them from the AWS
    environment variables or shared credentials file, as every AWS tool does.
    """

    bucket: str
    # None: AWS itself, https://s3.<region>.amazonaws.com.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # Every key starts with this ("" or ending in "/"): blobs/<sha256>, tmp/…
    prefix: str = ""
    # "path" (https://host/bucket/key: MinIO, Ceph, moto) or "virtual"
    # (https://bucket.host/key: AWS). "auto": virtual for AWS, else path.
    addressing_style: str = "auto"
    # "proxy": pypireg streams the object; "redirect": 302 to a presigned URL.
    downloads: str = "proxy"
    presign_ttl: float = DEFAULT_PRESIGN_TTL
    part_size: int = DEFAULT_S3_PART
    parts_in_flight: int = DEFAULT_S3_PARTS_IN_FLIGHT
    timeout: float = DEFAULT_S3_TIMEOUT

    @property
    def path_style(self) -> bool:
        if self.addressing_style == "auto":
            return self.endpoint_url is not None
        return self.addressing_style == "path"


@dataclass(frozen=True)
class StorageConfig:
    # Blobs (with backend = "filesystem"), and the embedded PostgreSQL.
    path: Path = Path(DEFAULT_STORAGE)
    backend: str = "filesystem"
    s3: S3Config | None = None


@dataclass(frozen=True)
class DatabaseConfig:
    # None means: run the embedded PostgreSQL inside the storage folder.
    dsn: str | None = None
    pool_size: int = 5


@dataclass(frozen=True)
class UploadsConfig:
    max_size: int = DEFAULT_MAX_UPLOAD


@dataclass(frozen=True)
class UpstreamConfig:
    """One `[[upstreams]]` entry: a PEP 503/691 index whose projects are proxied.

    The secrets (*password*, *token*, and *headers*, which may carry an API
    key) are left out of `repr`, so a logged or printed config never shows
    them; no ConfigError message quotes them either.
    """

    # Used in logs, metrics, pages and the CLI: [a-z0-9][a-z0-9_-]{0,39}.
    name: str
    # The index's simple/ URL: absolute http(s), always ending in "/".
    url: str
    # Seconds a cached project page is fresh; after that it is revalidated.
    ttl: float = DEFAULT_UPSTREAM_TTL
    # Seconds allowed for connecting and for the first byte of an answer.
    timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    # Serve only what is cached; never contact the upstream.
    offline: bool = False
    # Seconds: upstream files younger than this are hidden (a quarantine).
    min_age: float = 0.0
    # Extra request headers, in the order given (name, value).
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # HTTP Basic credentials, or a bearer token; at most one of the two.
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    # PEM file of the CA certificates to trust instead of the system's.
    ca_file: Path | None = None
    # Hosts besides the index's own that its files may be fetched from at
    # any address; others only at public ones (upstream/addresses.py).
    file_hosts: frozenset[str] = frozenset()

    @property
    def authorization(self) -> str | None:
        """The `Authorization` header value the credentials make, or None."""
        if self.token is not None:
            return f"Bearer {self.token}"
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return None


@dataclass(frozen=True)
class ProxyConfig:
    # Past this many bytes of cached upstream files, the least recently
    # downloaded are evicted; local uploads never count and never go.
    max_cache_size: int = DEFAULT_MAX_CACHE_SIZE


@dataclass(frozen=True)
class IssuerConfig:
    """One `[[trusted_publishing.issuers]]` entry: an OIDC issuer whose ID tokens are taken."""

    # The issuer URL, exactly as the tokens' `iss` claim gives it.
    url: str
    # Which claims its publishers check: github | gitlab | generic.
    kind: IssuerKind
    # Seconds allowed to fetch its discovery document or its keys.
    timeout: float = DEFAULT_UPSTREAM_TIMEOUT

    @property
    def plain_http(self) -> bool:
        """An http:// issuer (allowed on loopback addresses only, for tests)."""
        return self.url.startswith("http://")


@dataclass(frozen=True)
class TrustedPublishingConfig:
    # What CI jobs request their ID token for (GET /_/oidc/audience).
    audience: str = "pypireg"
    # ID tokens whose exp - iat is longer are refused.
    max_token_lifetime: float = 2 * 3600.0
    # No issuer: trusted publishing is off (mint-token answers not-enabled).
    issuers: tuple[IssuerConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # No upstream unless configured: a private registry proxies nothing by default.
    upstreams: tuple[UpstreamConfig, ...] = ()
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    trusted_publishing: TrustedPublishingConfig = field(
        default_factory=TrustedPublishingConfig)

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


def parse_config(raw: Mapping[str, Any], base: Path = Path(),
                 environ: Mapping[str, str] | None = None) -> Config:
    """Turn a parsed TOML document into a Config; relative paths hang off *base*.

    *environ* (default: the process environment) is where `token_env`,
    `password_env` and `metrics_token_env` look their secrets up.
    """
    _only_keys(raw, "", {"server", "storage", "database", "uploads", "logging", "upstreams",
                         "proxy", "trusted_publishing"})
    # Every section's shape first: a table that is not one is reported before
    # any key inside the others.
    server, storage, database, uploads, logging, proxy, publishing = (
        _table(raw, key)
        for key in ("server", "storage", "database", "uploads", "logging", "proxy",
                    "trusted_publishing"))
    upstreams = _array_of_tables(raw, "upstreams")
    # Each section checks its own keys, then its values; the first mistake,
    # in this order, is the one reported.
    return Config(
        server=_server(server, os.environ if environ is None else environ),
        logging=_logging(logging, base),
        storage=_storage(storage, base),
        database=_database(database),
        uploads=_uploads(uploads),
        upstreams=_upstreams(upstreams, base, os.environ if environ is None else environ),
        proxy=_proxy(proxy),
        trusted_publishing=_trusted_publishing(publishing),
    )


def _server(table: Mapping[str, Any], environ: Mapping[str, str]) -> ServerConfig:
    """The [server] table: listeners, public URL, timeout, trusted proxies, metrics access."""
    _only_keys(table, "server", {"listen", "base_url", "timeout", "trusted_proxies",
                                 "metrics_token", "metrics_token_env", "metrics_listen",
                                 "workers"})
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
    metrics_token = _secret(table, "server", "metrics_token", environ)
    # Sent as `Bearer <token>`: visible ASCII keeps it one unambiguous header word.
    if metrics_token is not None and not _VISIBLE_ASCII_RE.match(metrics_token):
        which = "metrics_token" if "metrics_token" in table else "metrics_token_env"
        raise ConfigError(f"server.{which}: the token must be visible ASCII without spaces, "
                          "e.g. 64 hex digits from a random source")
    # One endpoint string or a list of them, as the example in the docs gives it.
    metrics_listen = table.get("metrics_listen", [])
    if isinstance(metrics_listen, str):
        metrics_listen = [metrics_listen]
    metrics_listen = _strings(
        metrics_listen, "server.metrics_listen must be an endpoint string or a list of them, "
        'e.g. "tcp:9100:interface=127.0.0.1"', allow_empty=True)
    if "" in metrics_listen:
        raise ConfigError("server.metrics_listen must not contain an empty endpoint string")
    return ServerConfig(listen=tuple(listen), base_url=base_url, timeout=timeout,
                        trusted_proxies=trusted, metrics_token=metrics_token,
                        metrics_listen=tuple(metrics_listen),
                        workers=_workers(table.get("workers", 1)))


MAX_WORKERS = 256


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    return len(os.sched_getaffinity(0))


def _workers(value: Any) -> int:
    """server.workers: a count, or "auto" for one worker per usable core."""
    if value == "auto":
        return min(usable_cores(), MAX_WORKERS)
    return _positive_int(value, f'server.workers must be an integer between 1 and {MAX_WORKERS} '
                         'or "auto" (one per usable core)', maximum=MAX_WORKERS)


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
    """The [storage] table: the folder for blobs (and the embedded PostgreSQL), or S3."""
    _only_keys(table, "storage", {"path", "backend", "s3"})
    backend = table.get("backend", "filesystem")
    if backend not in ("filesystem", "s3"):
        raise ConfigError('storage.backend must be "filesystem" (the default) or "s3"')
    s3_table = table.get("s3")
    if s3_table is not None and not isinstance(s3_table, dict):
        raise ConfigError("storage.s3 must be a table ([storage.s3])")
    if backend == "s3" and s3_table is None:
        raise ConfigError('storage.backend = "s3" needs a [storage.s3] table with at least'
                          ' bucket = "..."')
    # [storage.s3] with the folder backend: the target of `pypireg storage copy
    # --to s3`, before backend = "s3" switches the daemon over.
    s3 = _s3(s3_table) if s3_table is not None else None
    path = Path(_string(table.get("path", DEFAULT_STORAGE),
                        "storage.path must be a non-empty string"))
    return StorageConfig(path=path if path.is_absolute() else base / path, backend=backend,
                         s3=s3)


def _s3(table: Mapping[str, Any]) -> S3Config:
    """The [storage.s3] table (credentials come from the AWS environment, never from here)."""
    for key in table:
        if any(word in key for word in ("key_id", "secret", "token", "password")):
            raise ConfigError(f"storage.s3.{key}: credentials never go in the config file; set"
                              " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE"
                              " and a shared credentials file) in the daemon's environment")
    _only_keys(table, "storage.s3", {
        "bucket", "endpoint_url", "region", "prefix", "addressing_style", "downloads",
        "presign_ttl", "part_size", "parts_in_flight", "timeout"})
    if "bucket" not in table:
        raise ConfigError('storage.s3.bucket is missing, e.g. bucket = "pypireg-blobs"')
    bucket = table["bucket"]
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError("storage.s3.bucket must be an S3 bucket name: 3 to 63 of a-z, 0-9,"
                          " '.' and '-', starting and ending with a letter or digit")
    endpoint = table.get("endpoint_url")
    if endpoint is not None:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or parts.username or parts.password or parts.query or parts.fragment
                or parts.path not in ("", "/")):
            raise ConfigError('storage.s3.endpoint_url must be an http(s) URL without a path,'
                              ' query or credentials, e.g. "https://minio.example:9000"')
        endpoint = endpoint.rstrip("/")
    region = table.get("region", "us-east-1")
    if not isinstance(region, str) or not _REGION_RE.match(region):
        raise ConfigError('storage.s3.region must be a region name, e.g. "eu-west-1"')
    prefix = table.get("prefix", "")
    if (not isinstance(prefix, str) or prefix.startswith("/") or "//" in prefix
            or not prefix.isprintable() or len(prefix) > 200):
        raise ConfigError('storage.s3.prefix must be a key prefix such as "pypireg/" (no'
                          ' leading "/", no "//")')
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    style = table.get("addressing_style", "auto")
    if style not in ("auto", "path", "virtual"):
        raise ConfigError('storage.s3.addressing_style must be "auto", "path" or "virtual"')
    downloads = table.get("downloads", "proxy")
    if downloads not in ("proxy", "redirect"):
        raise ConfigError('storage.s3.downloads must be "proxy" (pypireg streams the file)'
                          ' or "redirect" (302 to a presigned URL)')
    ttl = _duration(table.get("presign_ttl", DEFAULT_PRESIGN_TTL), "storage.s3.presign_ttl")
    if not 1 <= ttl <= MAX_PRESIGN_TTL:
        raise ConfigError('storage.s3.presign_ttl must be from 1s to 7d, e.g. "5m"')
    part_size = _size(table.get("part_size", DEFAULT_S3_PART), "storage.s3.part_size",
                      'storage.s3.part_size must be a size from 5MiB to 5GiB, e.g. "8MiB"')
    if not S3_MIN_PART <= part_size <= S3_MAX_PART:
        raise ConfigError('storage.s3.part_size must be a size from 5MiB to 5GiB, e.g. "8MiB"')
    in_flight = _positive_int(table.get("parts_in_flight", DEFAULT_S3_PARTS_IN_FLIGHT),
                              "storage.s3.parts_in_flight must be an integer from 1 to 64",
                              maximum=64)
    timeout = _duration(table.get("timeout", DEFAULT_S3_TIMEOUT), "storage.s3.timeout")
    if timeout <= 0:
        raise ConfigError('storage.s3.timeout must be above zero, e.g. "60s"')
    return S3Config(bucket=bucket, endpoint_url=endpoint, region=region, prefix=prefix,
                    addressing_style=style, downloads=downloads, presign_ttl=ttl,
                    part_size=part_size, parts_in_flight=in_flight, timeout=timeout)


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
    return UploadsConfig(max_size=_size(
        table.get("max_size", DEFAULT_MAX_UPLOAD), "uploads.max_size",
        'uploads.max_size must be a positive size, e.g. 52428800 or "50MiB"'))


_VISIBLE_ASCII_RE = re.compile(r"^[\x21-\x7e]+\Z")


_UPSTREAM_KEYS = {"name", "url", "ttl", "timeout", "offline", "min_age", "headers", "username",
                  "password", "password_env", "token", "token_env", "ca_file", "file_hosts"}
_UPSTREAM_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}\Z")
# RFC 9110 5.1 (field names are tokens) and 5.5 (values: visible ASCII,
# spaces and tabs inside). Anything else could split a request in two.
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}\Z")
_HEADER_VALUE_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?\Z")
# Headers the client sets itself (negotiation, revalidation, framing): a
# configured one would contradict it.
_MANAGED_HEADERS = {"host", "accept", "accept-encoding", "if-none-match", "if-modified-since",
                    "content-length", "transfer-encoding", "connection", "te", "upgrade",
                    "keep-alive", "proxy-connection", "cookie"}


def _upstreams(tables: list[Mapping[str, Any]], base: Path,
               environ: Mapping[str, str]) -> tuple[UpstreamConfig, ...]:
    """The [[upstreams]] array: each entry checked in order, then names unique."""
    result: list[UpstreamConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        upstream = _upstream(table, f"upstreams[{i}]", base, environ)
        if upstream.name in seen:
            raise ConfigError(f"upstreams[{i}].name {upstream.name!r} is used by an earlier "
                              "upstream; names must be unique")
        seen.add(upstream.name)
        result.append(upstream)
    return tuple(result)


def _upstream(table: Mapping[str, Any], key: str, base: Path,
              environ: Mapping[str, str]) -> UpstreamConfig:
    """One [[upstreams]] table; *key* is its dotted prefix, e.g. "upstreams[1]"."""
    _only_keys(table, key, _UPSTREAM_KEYS)
    if "name" not in table:
        raise ConfigError(f"{key}.name is missing: every upstream needs a name, e.g. \"public\"")
    name = table["name"]
    if not isinstance(name, str) or not _UPSTREAM_NAME_RE.match(name):
        raise ConfigError(f"{key}.name must be 1 to 40 of a-z, 0-9, '_' and '-', starting with "
                          f"a letter or digit, got {name!r}")
    if "url" not in table:
        raise ConfigError(f"{key}.url is missing, e.g. \"https://upstream.example/simple/\"")
    url = _upstream_url(table["url"], f"{key}.url")
    ttl = _duration(table.get("ttl", DEFAULT_UPSTREAM_TTL), f"{key}.ttl")
    timeout = _duration(table.get("timeout", DEFAULT_UPSTREAM_TIMEOUT), f"{key}.timeout")
    if timeout == 0:
        raise ConfigError(f"{key}.timeout must be above zero, e.g. \"10s\"")
    min_age = _duration(table.get("min_age", 0), f"{key}.min_age")
    offline = table.get("offline", False)
    if not isinstance(offline, bool):
        raise ConfigError(f"{key}.offline must be true or false")
    username, password, token = _credentials(table, key, environ)
    headers = _headers(table.get("headers", {}), f"{key}.headers",
                       has_credentials=username is not None or token is not None)
    ca_file = None
    if "ca_file" in table:
        ca_path = Path(_string(table["ca_file"], f"{key}.ca_file must be a path to a PEM file"))
        ca_file = ca_path if ca_path.is_absolute() else base / ca_path
        if not ca_file.is_file():
            raise ConfigError(f"{key}.ca_file: {ca_file} is not a file")
    file_hosts = _strings(table.get("file_hosts", []),
                          f"{key}.file_hosts must be a list of host names or addresses, e.g."
                          ' ["files.upstream.example"]', allow_empty=True)
    return UpstreamConfig(name=name, url=url, ttl=ttl, timeout=timeout, offline=offline,
                          min_age=min_age, headers=headers, username=username,
                          password=password, token=token, ca_file=ca_file,
                          file_hosts=frozenset(_file_host(h, f"{key}.file_hosts")
                                               for h in file_hosts))


_HOST_NAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?\Z")


def _file_host(host: str, key: str) -> str:
    """A host name (lower case) or an address (normalised), as URLs' hosts are compared."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ip_address(bare))
    except ValueError:
        pass
    if not _HOST_NAME_RE.match(bare.lower()):
        raise ConfigError(f"{key}: {host!r} is not a host name or an address (no scheme, port"
                          " or path), e.g. \"files.upstream.example\"")
    return bare.lower().rstrip(".")


def _upstream_url(value: Any, key: str) -> str:
    """An index URL: absolute http(s), no credentials, query or fragment; ends with "/"."""
    example = "e.g. \"https://upstream.example/simple/\""
    url = _string(value, f"{key} must be a URL, {example}")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (not url.isascii() or any(c.isspace() for c in url)
            or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok):
        raise ConfigError(f"{key} must be an absolute http(s) URL (ASCII; an international "
                          f"host name in its xn-- form), {example}")
    # Credentials in the URL would end up in logs and error messages.
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key} must not contain credentials; use {key[:-4]}.username and "
                          f"password (or password_env), or token / token_env")
    if parts.query or parts.fragment or "#" in url:
        raise ConfigError(f"{key} must not have a query or fragment, {example}")
    # Project pages are resolved relative to it: "<url><name>/".
    return url if url.endswith("/") else url + "/"


def _credentials(table: Mapping[str, Any], key: str, environ: Mapping[str, str]
                 ) -> tuple[str | None, str | None, str | None]:
    """(username, password, token): Basic credentials or a bearer token, never both."""
    password = _secret(table, key, "password", environ)
    token = _secret(table, key, "token", environ)
    username = table.get("username")
    if username is not None:
        username = _string(username, f"{key}.username must be a non-empty string")
        # RFC 7617: the user-id cannot contain a colon; control characters
        # would corrupt the header.
        if ":" in username or not username.isprintable():
            raise ConfigError(f"{key}.username must not contain ':' or control characters")
    if token is not None and (username is not None or password is not None):
        raise ConfigError(f"{key}: give either token (or token_env) or username and password "
                          "(or password_env), not both")
    if (username is None) != (password is None):
        missing = "password (or password_env)" if password is None else "username"
        raise ConfigError(f"{key}.{missing} is missing: Basic credentials need both a "
                          "username and a password")
    return username, password, token


def _secret(table: Mapping[str, Any], key: str, what: str, environ: Mapping[str, str]
            ) -> str | None:
    """*what* ("token", "password") given inline or as `<what>_env`, the variable naming it.

    Messages name keys and variables, never the secret itself.
    """
    inline, env_key = table.get(what), f"{what}_env"
    if inline is not None and env_key in table:
        raise ConfigError(f"{key}: give {what} or {env_key}, not both")
    if inline is not None:
        value = _string(inline, f"{key}.{what} must be a non-empty string")
    elif env_key in table:
        variable = _string(table[env_key],
                           f"{key}.{env_key} must name an environment variable")
        value = environ.get(variable, "")
        if not value:
            raise ConfigError(f"{key}.{env_key}: the environment variable {variable} is not "
                              "set or is empty")
    else:
        return None
    if not value.isprintable() or value != value.strip():
        raise ConfigError(f"{key}.{what if inline is not None else env_key}: the {what} must "
                          "not contain control characters or surrounding spaces")
    return value


def _headers(value: Any, key: str, *, has_credentials: bool) -> tuple[tuple[str, str], ...]:
    """The `headers` table: extra request headers, validated so none can split a request."""
    if not isinstance(value, dict):
        raise ConfigError(f'{key} must be a table of strings, e.g. {{ "X-Team" = "infra" }}')
    headers: list[tuple[str, str]] = []
    for name, header_value in value.items():
        if not _HEADER_NAME_RE.match(name):
            raise ConfigError(f"{key}: {name!r} is not a valid header name")
        dotted = f"{key}.{name}"
        lower = name.lower()
        if lower in _MANAGED_HEADERS:
            raise ConfigError(f"{dotted}: this header is set by pypireg itself")
        if lower == "authorization" and has_credentials:
            raise ConfigError(f"{dotted}: the credentials already set Authorization")
        # The value is not quoted: it may be an API key.
        if not isinstance(header_value, str) or not _HEADER_VALUE_RE.match(header_value):
            raise ConfigError(f"{dotted} must be a non-empty string of printable ASCII")
        headers.append((name, header_value))
    return tuple(headers)


def _proxy(table: Mapping[str, Any]) -> ProxyConfig:
    """The [proxy] table: the disk budget of cached upstream files."""
    _only_keys(table, "proxy", {"max_cache_size"})
    return ProxyConfig(max_cache_size=_size(
        table.get("max_cache_size", DEFAULT_MAX_CACHE_SIZE), "proxy.max_cache_size",
        'proxy.max_cache_size must be a positive size, e.g. "50GiB"'))


_AUDIENCE_RE = re.compile(r"^[\x21-\x7e]{1,200}\Z")


def _trusted_publishing(table: Mapping[str, Any]) -> TrustedPublishingConfig:
    """The [trusted_publishing] table: the audience, the lifetime cap, the issuers."""
    _only_keys(table, "trusted_publishing", {"audience", "max_token_lifetime", "issuers"})
    audience = table.get("audience", "pypireg")
    if not isinstance(audience, str) or not _AUDIENCE_RE.match(audience):
        raise ConfigError("trusted_publishing.audience must be 1 to 200 visible ASCII "
                          'characters without spaces, e.g. "pypireg"')
    lifetime = _duration(table.get("max_token_lifetime", 2 * 3600.0),
                         "trusted_publishing.max_token_lifetime")
    if lifetime == 0:
        raise ConfigError('trusted_publishing.max_token_lifetime must be above zero, e.g. "2h"')
    issuers: list[IssuerConfig] = []
    for i, entry in enumerate(_array_of_tables(table, "issuers", "trusted_publishing.issuers")):
        issuer = _issuer(entry, f"trusted_publishing.issuers[{i}]")
        if any(other.url == issuer.url for other in issuers):
            raise ConfigError(f"trusted_publishing.issuers[{i}].url {issuer.url!r} is "
                              "configured twice")
        issuers.append(issuer)
    return TrustedPublishingConfig(audience=audience, max_token_lifetime=lifetime,
                                   issuers=tuple(issuers))


def _issuer(table: Mapping[str, Any], key: str) -> IssuerConfig:
    """One issuer: https (http only on a loopback address), its kind, its timeout."""
    _only_keys(table, key, {"url", "kind", "timeout"})
    example = 'e.g. "https://token.actions.githubusercontent.com"'
    if "url" not in table:
        raise ConfigError(f"{key}.url is missing, {example}")
    url = _string(table["url"], f"{key}.url must be the issuer's URL, {example}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        host, port_ok = None, False
    if (not url.isascii() or any(c.isspace() for c in url) or not host or not port_ok
            or parts.scheme not in ("http", "https") or parts.query or parts.fragment
            or parts.username is not None or parts.password is not None):
        raise ConfigError(f"{key}.url must be an absolute https URL without credentials, query "
                          f"or fragment, exactly as the tokens' iss claim gives it, {example}")
    if parts.scheme == "http" and not _loopback(host):
        raise ConfigError(f"{key}.url: an http:// issuer is accepted only on a loopback "
                          "address (tests); use https")
    kind = next((k for k in ISSUER_KINDS if k == table.get("kind")), None)
    if kind is None:
        raise ConfigError(f"{key}.kind must be one of {', '.join(ISSUER_KINDS)}, "
                          f"got {table.get('kind')!r}")
    timeout = _duration(table.get("timeout", DEFAULT_UPSTREAM_TIMEOUT), f"{key}.timeout")
    if timeout == 0:
        raise ConfigError(f"{key}.timeout must be above zero, e.g. \"10s\"")
    return IssuerConfig(url=url, kind=kind, timeout=timeout)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _size(value: Any, dotted: str, message: str) -> int:
    """A positive byte count, given as a number or a "50MiB"-style string."""
    if isinstance(value, str):
        value = parse_size(value, dotted)
    return _positive_int(value, message)


def _duration(value: Any, key: str) -> float:
    """A duration key: a number of seconds or a "10m"-style string; never negative."""
    if isinstance(value, str):
        return parse_duration(value, key)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0):
        raise ConfigError(f'{key} must be a duration: seconds (e.g. 600) or a string such as '
                          f'"10m", "30s", "2h" or "1d"')
    return float(value)


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


_DURATION_RE = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)(ms|s|m|h|d)?\Z")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, key: str) -> float:
    """Parse "10m"-style durations into seconds: ms, s, m, h, d; no unit means seconds."""
    match = _DURATION_RE.match(text.strip().lower().replace(" ", ""))
    if not match:
        raise ConfigError(f'{key} must be a duration such as 600, "10m", "30s", "2h" or "1d", '
                          f"got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _array_of_tables(raw: Mapping[str, Any], key: str, dotted: str | None = None
                     ) -> list[Mapping[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        dotted = dotted or key
        raise ConfigError(f"{dotted} must be an array of tables ([[{dotted}]])")
    return value


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
