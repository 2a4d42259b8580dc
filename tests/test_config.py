"""Unit tests for pypireg.config: defaults, every key's validation, sizes, files."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypireg.config import (
    DEFAULT_LISTEN,
    MIB,
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_size,
)

BASE = Path("/etc/pypireg")
# Deterministic: the same examples on every run, nothing written to .hypothesis/.
deterministic = settings(derandomize=True, database=None)


def config_error(raw: dict[str, Any]) -> str:
    """The message of the ConfigError that parse_config raises for *raw*."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw, BASE)
    return str(info.value)


# -- defaults -----------------------------------------------------------------


def test_empty_document_gives_documented_defaults() -> None:
    config = parse_config({}, BASE)
    assert config.server.listen == ("tcp:8080:interface=127.0.0.1",)
    assert config.server.base_url is None
    assert config.server.timeout == 60.0
    assert config.uploads.max_size == 50 * 1024 * 1024
    assert config.database.dsn is None  # None: the embedded PostgreSQL
    assert config.database.pool_size == 5
    assert config.storage.path == BASE / "pypireg-data"


def test_embedded_database_lives_inside_the_storage_folder() -> None:
    config = parse_config({"storage": {"path": "/srv/pypireg"}}, BASE)
    assert config.database.dsn is None
    assert config.pgdata == Path("/srv/pypireg/postgres")


def test_load_config_without_a_path_returns_the_defaults() -> None:
    assert load_config(None) == Config()
    assert load_config(None).server.listen == DEFAULT_LISTEN


def test_empty_tables_keep_the_defaults() -> None:
    raw: dict[str, Any] = {"server": {}, "storage": {}, "database": {}, "uploads": {}}
    assert parse_config(raw, BASE) == parse_config({}, BASE)


def test_all_keys_set_are_all_used() -> None:
    config = parse_config({
        "server": {"listen": ["tcp:9000", "unix:/run/pypireg.sock"],
                   "base_url": "https://pypi.example.com", "timeout": 5},
        "storage": {"path": "/data"},
        "database": {"dsn": "postgresql://pypireg@db/pypireg", "pool_size": 12},
        "uploads": {"max_size": 1234},
    }, BASE)
    assert config.server.listen == ("tcp:9000", "unix:/run/pypireg.sock")
    assert config.server.base_url == "https://pypi.example.com"
    assert config.server.timeout == 5.0
    assert isinstance(config.server.timeout, float)
    assert config.storage.path == Path("/data")
    assert config.database.dsn == "postgresql://pypireg@db/pypireg"
    assert config.database.pool_size == 12
    assert config.uploads.max_size == 1234


def test_config_is_frozen() -> None:
    config = parse_config({}, BASE)
    with pytest.raises(AttributeError):
        config.uploads.max_size = 1  # type: ignore[misc]


# -- storage.path -------------------------------------------------------------


def test_relative_storage_path_hangs_off_the_base() -> None:
    config = parse_config({"storage": {"path": "data/registry"}}, Path("/opt/conf"))
    assert config.storage.path == Path("/opt/conf/data/registry")


def test_absolute_storage_path_is_kept() -> None:
    config = parse_config({"storage": {"path": "/var/lib/pypireg"}}, Path("/opt/conf"))
    assert config.storage.path == Path("/var/lib/pypireg")


@pytest.mark.parametrize("value", ["", 5, ["data"], True])
def test_bad_storage_path_names_the_key(value: Any) -> None:
    assert "storage.path" in config_error({"storage": {"path": value}})


def test_load_config_resolves_storage_relative_to_the_config_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "pypireg.toml"
    path.write_text('[storage]\npath = "data"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/pypireg.toml"))
    assert config.storage.path == folder.resolve() / "data"


def test_load_config_default_storage_is_next_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "pypireg.toml"
    path.write_text("")
    assert load_config(path).storage.path == tmp_path.resolve() / "pypireg-data"


# -- server.listen ------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "tcp:8080",  # a string, not a list
    [],
    [""],
    ["tcp:8080", ""],
    [8080],
    ["tcp:8080", 8081],
    {"a": "tcp:8080"},
    8080,
])
def test_bad_listen_names_the_key(value: Any) -> None:
    assert "server.listen" in config_error({"server": {"listen": value}})


def test_listen_keeps_every_endpoint_in_order() -> None:
    endpoints = ["systemd:domain=INET:index=0", "ssl:443:privateKey=k.pem", "tcp:80"]
    config = parse_config({"server": {"listen": endpoints}}, BASE)
    assert config.server.listen == tuple(endpoints)


# -- server.base_url ----------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("https://pypi.example.com", "https://pypi.example.com"),
    ("https://pypi.example.com/", "https://pypi.example.com"),
    ("http://pypi.example.com:8443/registry/", "http://pypi.example.com:8443/registry"),
    ("https://pypi.example.com/registry//", "https://pypi.example.com/registry"),
])
def test_base_url_is_kept_without_trailing_slash(value: str, expected: str) -> None:
    config = parse_config({"server": {"base_url": value}}, BASE)
    assert config.server.base_url == expected


@pytest.mark.parametrize("value", [
    "pypi.example.com",  # no scheme
    "/registry",  # relative
    "ftp://pypi.example.com",
    "https://",  # no host
    "https:///path",
    "https://pypi.example.com/?x=1",  # a query
    "",
    42,
    ["https://pypi.example.com"],
])
def test_bad_base_url_names_the_key(value: Any) -> None:
    assert "server.base_url" in config_error({"server": {"base_url": value}})


# -- server.timeout -----------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, -0.5, "60", True, [60]])
def test_bad_timeout_names_the_key(value: Any) -> None:
    assert "server.timeout" in config_error({"server": {"timeout": value}})


def test_nan_timeout_is_refused() -> None:
    # TOML has a `nan` literal; NaN is not a positive number of seconds, and a
    # NaN delay in the reactor's timer heap breaks its ordering.
    assert "server.timeout" in config_error({"server": {"timeout": float("nan")}})


def test_fractional_timeout_is_accepted() -> None:
    assert parse_config({"server": {"timeout": 0.5}}, BASE).server.timeout == 0.5


# -- database -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["", 5, ["postgresql:///x"], False])
def test_bad_dsn_names_the_key(value: Any) -> None:
    assert "database.dsn" in config_error({"database": {"dsn": value}})


@pytest.mark.parametrize("value", [0, -1, 101, 1000, "5", 5.0, True, None])
def test_bad_pool_size_names_the_key(value: Any) -> None:
    assert "database.pool_size" in config_error({"database": {"pool_size": value}})


@pytest.mark.parametrize("value", [1, 100])
def test_pool_size_bounds_are_inclusive(value: int) -> None:
    assert parse_config({"database": {"pool_size": value}}, BASE).database.pool_size == value


# -- uploads.max_size ---------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (52428800, 50 * MIB),
    ("50MiB", 50 * MIB),
    ("2GiB", 2 * 1024 * MIB),
    ("512KiB", 512 * 1024),
    ("10MB", 10_000_000),
    ("3kb", 3000),
    ("1GB", 10**9),
    ("100B", 100),
    ("100", 100),
    (" 50 MiB ", 50 * MIB),
    ("50mib", 50 * MIB),
])
def test_max_size_accepts_integers_and_size_strings(value: Any, expected: int) -> None:
    assert parse_config({"uploads": {"max_size": value}}, BASE).uploads.max_size == expected


@pytest.mark.parametrize("value", [
    0, -1, "0", "0MiB", "", "MiB", "1.5GiB", "-5MiB", "50M", "50k", "50 TiB", "fifty",
    "1bib", 1.5, True, [50],
])
def test_bad_max_size_names_the_key(value: Any) -> None:
    assert "uploads.max_size" in config_error({"uploads": {"max_size": value}})


def test_parse_size_error_names_the_key_it_was_given() -> None:
    with pytest.raises(ConfigError, match=r"some\.key"):
        parse_size("lots", "some.key")


@deterministic
@given(st.integers(min_value=0, max_value=10**6),
       st.sampled_from([("", 1), ("B", 1), ("KiB", 1024), ("MiB", MIB), ("GiB", 1024 * MIB),
                        ("kB", 1000), ("MB", 10**6), ("GB", 10**9)]),
       st.sampled_from(["", " "]))
def test_parse_size_multiplies_by_the_unit(number: int, unit: tuple[str, int], gap: str
                                           ) -> None:
    suffix, factor = unit
    assert parse_size(f"{number}{gap}{suffix}", "k") == number * factor


@deterministic
@given(st.text(alphabet=string.printable))
def test_parse_size_only_raises_config_error_on_ascii(text: str) -> None:
    try:
        size = parse_size(text, "uploads.max_size")
    except ConfigError as e:
        assert "uploads.max_size" in str(e)
    else:
        assert size >= 0


def test_parse_size_superscript_digit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"uploads\.max_size"):
        parse_size("²MiB", "uploads.max_size")


# -- unknown keys and wrong table types ---------------------------------------


@pytest.mark.parametrize(("raw", "dotted"), [
    ({"server": {"bogus": 1}}, "server.bogus"),
    ({"storage": {"folder": "x"}}, "storage.folder"),
    ({"database": {"host": "db"}}, "database.host"),
    ({"uploads": {"max_file_size": 1}}, "uploads.max_file_size"),
    ({"bogus": {}}, "bogus"),
    ({"listen": ["tcp:8080"]}, "listen"),  # a server key at top level
])
def test_unknown_key_is_named_with_its_dotted_path(raw: dict[str, Any], dotted: str) -> None:
    message = config_error(raw)
    assert f"unknown configuration key {dotted};" in message


def test_unknown_key_message_lists_the_known_keys() -> None:
    assert "known: base_url, listen, timeout" in config_error({"server": {"bogus": 1}})


@pytest.mark.parametrize("table", ["server", "storage", "database", "uploads"])
def test_table_that_is_not_a_table_names_the_key(table: str) -> None:
    message = config_error({table: "oops"})
    assert message.startswith(f"{table} must be a table")


# -- load_config --------------------------------------------------------------


def test_load_config_reads_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "pypireg.toml"
    path.write_text(
        '[server]\nlisten = ["tcp:9090"]\nbase_url = "https://r.example.org/"\n'
        '[database]\ndsn = "postgresql:///pypireg"\n'
        '[uploads]\nmax_size = "2GiB"\n'
    )
    config = load_config(path)
    assert config.server.listen == ("tcp:9090",)
    assert config.server.base_url == "https://r.example.org"
    assert config.database.dsn == "postgresql:///pypireg"
    assert config.uploads.max_size == 2 * 1024 * MIB


def test_load_config_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pypireg.toml"
    path.write_text("[server\nlisten = \n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_bad_value_in_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "pypireg.toml"
    path.write_text("[database]\npool_size = 0\n")
    with pytest.raises(ConfigError, match=r"database\.pool_size"):
        load_config(path)


def test_load_config_unknown_table_in_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "pypireg.toml"
    path.write_text("[server]\nbogus = true\n")
    with pytest.raises(ConfigError, match=r"server\.bogus"):
        load_config(path)


def test_load_config_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pypireg.toml"
    path.write_bytes(b'[storage]\npath = "caf\xe9"\n')  # Latin-1, not valid TOML (UTF-8 only)
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)


def test_load_config_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path)
