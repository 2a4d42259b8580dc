"""Unit tests for pypireg.config: defaults, every key's validation, sizes, files."""

from __future__ import annotations

import base64
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypireg.config import (
    DEFAULT_LISTEN,
    DEFAULT_MAX_CACHE_SIZE,
    MAX_WORKERS,
    MIB,
    Config,
    ConfigError,
    IssuerConfig,
    ProxyConfig,
    TrustedPublishingConfig,
    UpstreamConfig,
    load_config,
    parse_config,
    parse_duration,
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


# -- server.workers -------------------------------------------------------------
def test_workers_default_to_one_process() -> None:
    assert Config().server.workers == 1
    assert parse_config({"server": {}}, BASE).server.workers == 1


@pytest.mark.parametrize("count", [1, 2, 16, MAX_WORKERS])
def test_workers_take_a_count(count: int) -> None:
    assert parse_config({"server": {"workers": count}}, BASE).server.workers == count


def test_workers_auto_is_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process's CPU affinity (what a container or taskset allows), not
    # the machine's core count.
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5})
    assert parse_config({"server": {"workers": "auto"}}, BASE).server.workers == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(1000)))
    assert parse_config({"server": {"workers": "auto"}}, BASE).server.workers == MAX_WORKERS


@pytest.mark.parametrize("value", [0, -2, MAX_WORKERS + 1, "4", "Auto", 2.0, True, [2]])
def test_workers_refuse_anything_else(value: Any) -> None:
    assert config_error({"server": {"workers": value}}) == (
        f'server.workers must be an integer between 1 and {MAX_WORKERS} or "auto" (one per '
        "usable core)")


# -- server.metrics_token, metrics_token_env, metrics_listen ------------------

METRICS_TOKEN = "m3tr1cs-" + "a" * 40


def server_error(server: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"server": server}, BASE, environ=env or {})
    return str(info.value)


def test_metrics_are_open_on_the_listeners_by_default() -> None:
    server = parse_config({}, BASE).server
    assert server.metrics_token is None and server.metrics_listen == ()


def test_metrics_token_inline_or_from_the_environment_and_never_in_repr() -> None:
    inline = parse_config({"server": {"metrics_token": METRICS_TOKEN}}, BASE, environ={})
    assert inline.server.metrics_token == METRICS_TOKEN
    from_env = parse_config({"server": {"metrics_token_env": "SCRAPE"}}, BASE,
                            environ={"SCRAPE": METRICS_TOKEN})
    assert from_env.server.metrics_token == METRICS_TOKEN
    for config in (inline, from_env):
        assert METRICS_TOKEN not in repr(config) and METRICS_TOKEN not in str(config)


@pytest.mark.parametrize(("server", "env", "expected"), [
    ({"metrics_token": METRICS_TOKEN, "metrics_token_env": "SCRAPE"}, {"SCRAPE": METRICS_TOKEN},
     "give metrics_token or metrics_token_env, not both"),
    ({"metrics_token_env": "SCRAPE"}, {}, "server.metrics_token_env: the environment variable "
                                          "SCRAPE is not set"),
    ({"metrics_token_env": "SCRAPE"}, {"SCRAPE": ""}, "server.metrics_token_env"),
    ({"metrics_token_env": 5}, {}, "server.metrics_token_env must name"),
    ({"metrics_token": ""}, {}, "server.metrics_token must be a non-empty string"),
    ({"metrics_token": 12345}, {}, "server.metrics_token must be a non-empty string"),
    ({"metrics_token": METRICS_TOKEN + "\r\nX: y"}, {}, "server.metrics_token"),
    ({"metrics_token": f" {METRICS_TOKEN}"}, {}, "server.metrics_token"),
    ({"metrics_token": "two words" + METRICS_TOKEN}, {}, "server.metrics_token: the token must be "
                                                        "visible ASCII"),
    ({"metrics_token_env": "SCRAPE"}, {"SCRAPE": "caf\u00e9" + METRICS_TOKEN},
     "server.metrics_token_env: the token must be visible ASCII"),
])
def test_bad_metrics_tokens_name_the_key_and_never_the_token(
        server: dict[str, Any], env: dict[str, str], expected: str) -> None:
    error = server_error(server, env)
    assert expected in error
    assert METRICS_TOKEN not in error


def test_metrics_listen_takes_one_endpoint_or_a_list() -> None:
    one = parse_config({"server": {"metrics_listen": "tcp:9100:interface=127.0.0.1"}}, BASE)
    assert one.server.metrics_listen == ("tcp:9100:interface=127.0.0.1",)
    assert one.server.listen == DEFAULT_LISTEN
    endpoints = ["tcp:9100:interface=127.0.0.1", "unix:/run/pypireg/metrics.sock"]
    several = parse_config({"server": {"metrics_listen": endpoints}}, BASE)
    assert several.server.metrics_listen == tuple(endpoints)
    assert parse_config({"server": {"metrics_listen": []}}, BASE).server.metrics_listen == ()


@pytest.mark.parametrize("value", ["", [""], [9100], 9100, {"a": "tcp:9100"}, True])
def test_bad_metrics_listen_names_the_key(value: Any) -> None:
    assert "server.metrics_listen" in server_error({"metrics_listen": value})


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
    assert ("known: base_url, listen, metrics_listen, metrics_token, metrics_token_env, timeout, "
            "trusted_proxies") in config_error({"server": {"bogus": 1}})


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


# -- [[upstreams]] and [proxy] ------------------------------------------------

UPSTREAM_URL = "https://upstream.example/simple/"
SECRET = "s3cr3t-token-value"


def upstream(env: dict[str, str] | None = None, **keys: Any) -> UpstreamConfig:
    """The one upstream parsed from a table with name, url and *keys*."""
    table = {"name": "public", "url": UPSTREAM_URL, **keys}
    (result,) = parse_config({"upstreams": [table]}, BASE, environ=env or {}).upstreams
    return result


def upstream_error(env: dict[str, str] | None = None, **keys: Any) -> str:
    table = {"name": "public", "url": UPSTREAM_URL, **keys}
    with pytest.raises(ConfigError) as info:
        parse_config({"upstreams": [table]}, BASE, environ=env or {})
    return str(info.value)


def test_no_upstream_and_the_default_cache_budget_by_default() -> None:
    config = parse_config({}, BASE)
    assert config.upstreams == ()
    assert config.proxy == ProxyConfig(max_cache_size=50 * 1024 ** 3)
    assert DEFAULT_MAX_CACHE_SIZE == 50 * 1024 ** 3


def test_upstream_defaults() -> None:
    u = upstream()
    assert (u.name, u.url, u.ttl, u.timeout, u.offline, u.min_age) == (
        "public", UPSTREAM_URL, 600.0, 10.0, False, 0.0)
    assert (u.headers, u.username, u.password, u.token, u.ca_file) == ((), None, None, None, None)
    assert u.authorization is None


def test_file_hosts_are_normalised_and_checked() -> None:
    assert upstream().file_hosts == frozenset()
    assert upstream(file_hosts=["Files.Example.", "[::1]", "10.0.0.1"]).file_hosts == {
        "files.example", "::1", "10.0.0.1"}
    for bad in (["https://files.example/"], ["files.example:8080"], [""], "files.example"):
        assert "upstreams[0].file_hosts" in upstream_error(file_hosts=bad)


def test_upstreams_keep_their_order() -> None:
    config = parse_config({"upstreams": [
        {"name": "devpi", "url": "http://127.0.0.1:3141/root/pypi/+simple"},
        {"name": "public", "url": UPSTREAM_URL},
    ]}, BASE)
    assert [u.name for u in config.upstreams] == ["devpi", "public"]
    # A missing trailing slash is added: project pages hang off "<url><name>/".
    assert config.upstreams[0].url == "http://127.0.0.1:3141/root/pypi/+simple/"


@pytest.mark.parametrize(("text", "seconds"), [
    ("10m", 600.0), ("10s", 10.0), ("2h", 7200.0), ("1d", 86400.0), ("0h", 0.0),
    ("500ms", 0.5), ("1.5h", 5400.0), ("30", 30.0), (" 5 m ", 300.0), ("10M", 600.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "upstreams[0].ttl") == seconds


@pytest.mark.parametrize("text", ["", "m", "-1s", "10 minutes", "1w", "1e3", "½h", "\u0661\u0660s",
                                  "1h30m", "inf", "nan"])
def test_parse_duration_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.ttl must be a duration"):
        parse_duration(text, "upstreams[0].ttl")


def test_durations_accept_numbers_and_strings() -> None:
    u = upstream(ttl=90, timeout=2.5, min_age="2h")
    assert (u.ttl, u.timeout, u.min_age) == (90.0, 2.5, 7200.0)
    assert upstream(ttl=0).ttl == 0.0  # always revalidate


@pytest.mark.parametrize(("key", "value"), [
    ("ttl", -1), ("ttl", True), ("ttl", "soon"), ("ttl", float("inf")), ("ttl", []),
    ("timeout", 0), ("timeout", "0s"), ("timeout", -3), ("min_age", "-1h"), ("min_age", False),
])
def test_bad_durations_name_the_dotted_key(key: str, value: Any) -> None:
    assert f"upstreams[0].{key}" in upstream_error(**{key: value})


@pytest.mark.parametrize("name", ["public", "a", "devpi-1", "x_y", "0", "a" * 40])
def test_upstream_names_that_are_accepted(name: str) -> None:
    assert upstream(name=name).name == name


@pytest.mark.parametrize("name", ["", "Public", "-x", "_x", "a" * 41, "a b", "a.b", "ünï",
                                  "\u212aelvin", 5, None, ["a"]])
def test_bad_upstream_names_name_the_key(name: Any) -> None:
    assert "upstreams[0].name" in upstream_error(name=name)


def test_upstream_names_are_unique_and_the_second_is_named() -> None:
    error = config_error({"upstreams": [{"name": "a", "url": UPSTREAM_URL},
                                        {"name": "b", "url": UPSTREAM_URL},
                                        {"name": "a", "url": UPSTREAM_URL}]})
    assert "upstreams[2].name" in error and "unique" in error


def test_name_and_url_are_required() -> None:
    assert "upstreams[0].name is missing" in config_error({"upstreams": [{"url": UPSTREAM_URL}]})
    assert "upstreams[0].url is missing" in config_error({"upstreams": [{"name": "x"}]})


def test_errors_in_a_later_upstream_carry_its_index() -> None:
    error = config_error({"upstreams": [{"name": "a", "url": UPSTREAM_URL},
                                        {"name": "b", "url": "ftp://upstream.example/"}]})
    assert error.startswith("upstreams[1].url")


@pytest.mark.parametrize("url", [
    "ftp://upstream.example/simple/", "upstream.example/simple/", "/simple/", "https://",
    "https:///simple/", "https://upstream.example:0/", "https://upstream.example:99999/",
    "https://upstream.example/simple/?x=1", "https://upstream.example/simple/#top",
    "https://ünicode.example/simple/", "https://upstream.example/sim ple/", "", 7,
    "https://upstream.example:port/",
])
def test_bad_upstream_urls_name_the_key(url: Any) -> None:
    assert "upstreams[0].url" in upstream_error(url=url)


def test_credentials_in_the_url_are_refused_without_being_repeated() -> None:
    error = upstream_error(url=f"https://ci:{SECRET}@upstream.example/simple/")
    assert "upstreams[0].url must not contain credentials" in error
    assert SECRET not in error


def test_bad_upstream_types_name_the_key() -> None:
    assert "upstreams must be an array of tables" in config_error(
        {"upstreams": {"name": "x", "url": UPSTREAM_URL}})
    assert "upstreams must be an array" in config_error({"upstreams": ["x"]})
    assert "upstreams[0].offline" in upstream_error(offline="yes")
    assert "upstreams[0].bogus" in upstream_error(bogus=1)


def test_token_becomes_a_bearer_header_and_stays_out_of_repr() -> None:
    u = upstream(token=SECRET)
    assert u.authorization == f"Bearer {SECRET}"
    assert SECRET not in repr(u)
    assert SECRET not in repr(parse_config({"upstreams": [
        {"name": "p", "url": UPSTREAM_URL, "token": SECRET}]}, BASE))


def test_basic_credentials_and_their_repr() -> None:
    u = upstream(username="ci", password=SECRET)
    assert u.authorization == "Basic " + base64.b64encode(f"ci:{SECRET}".encode()).decode()
    assert "ci" in repr(u) and SECRET not in repr(u)


def test_secrets_can_come_from_the_environment() -> None:
    env = {"UP_TOKEN": SECRET, "UP_PASSWORD": "pw-" + SECRET}
    assert upstream(env, token_env="UP_TOKEN").token == SECRET
    u = upstream(env, username="ci", password_env="UP_PASSWORD")
    assert u.password == "pw-" + SECRET and SECRET not in repr(u)


def test_a_missing_environment_variable_is_named_but_no_value_shown() -> None:
    error = upstream_error({}, token_env="UP_TOKEN")
    assert "upstreams[0].token_env" in error and "UP_TOKEN" in error
    assert "upstreams[0].token_env" in upstream_error({"UP_TOKEN": ""}, token_env="UP_TOKEN")


@pytest.mark.parametrize(("env", "keys", "expected"), [
    ({}, {"token": SECRET, "username": "ci", "password": "x"}, "not both"),
    ({"T": SECRET}, {"token": SECRET, "token_env": "T"}, "token or token_env"),
    ({"P": SECRET}, {"username": "ci", "password": SECRET, "password_env": "P"},
     "password or password_env"),
    ({}, {"username": "ci"}, "upstreams[0].password (or password_env) is missing"),
    ({}, {"password": SECRET}, "upstreams[0].username is missing"),
    ({}, {"username": "c:i", "password": SECRET}, "upstreams[0].username"),
    ({}, {"token": ""}, "upstreams[0].token"),
    ({}, {"token": 5}, "upstreams[0].token"),
    ({}, {"token": SECRET + "\r\nX-Evil: 1"}, "upstreams[0].token"),
    ({}, {"token": f" {SECRET}"}, "upstreams[0].token"),
    ({"P": SECRET + "\n"}, {"username": "ci", "password_env": "P"}, "upstreams[0].password_env"),
    ({}, {"token_env": 3}, "upstreams[0].token_env"),
])
def test_bad_credentials_name_the_key_and_never_the_secret(
        env: dict[str, str], keys: dict[str, Any], expected: str) -> None:
    error = upstream_error(env, **keys)
    assert expected in error
    assert SECRET not in error


def test_headers_keep_their_order_and_stay_out_of_repr() -> None:
    u = upstream(headers={"X-Api-Key": SECRET, "X-Team": "infra"})
    assert u.headers == (("X-Api-Key", SECRET), ("X-Team", "infra"))
    assert SECRET not in repr(u)


def test_an_authorization_header_is_allowed_without_credentials_only() -> None:
    assert upstream(headers={"Authorization": "Custom x"}).headers == (
        ("Authorization", "Custom x"),)
    assert "upstreams[0].headers.Authorization" in upstream_error(
        token=SECRET, headers={"Authorization": "Custom x"})


@pytest.mark.parametrize(("headers", "expected"), [
    ("X-A: b", "upstreams[0].headers must be a table"),
    ({"X A": "b"}, "upstreams[0].headers: 'X A' is not a valid header name"),
    ({"": "b"}, "upstreams[0].headers"),
    ({"X-A": "b\r\nX-Evil: 1"}, "upstreams[0].headers.X-A"),
    ({"X-A": ""}, "upstreams[0].headers.X-A"),
    ({"X-A": 5}, "upstreams[0].headers.X-A"),
    ({"X-A": "caf\u00e9"}, "upstreams[0].headers.X-A"),
    ({"Host": "elsewhere.example"}, "upstreams[0].headers.Host: this header is set by pypireg"),
    ({"if-none-match": "*"}, "upstreams[0].headers.if-none-match"),
])
def test_bad_headers_name_the_key(headers: Any, expected: str) -> None:
    error = upstream_error(headers=headers)
    assert expected in error
    assert "Evil" not in error and "caf" not in error


def test_ca_file_is_relative_to_the_config_folder_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = parse_config({"upstreams": [{"name": "p", "url": UPSTREAM_URL,
                                          "ca_file": "ca.pem"}]}, tmp_path)
    assert config.upstreams[0].ca_file == tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.ca_file: .* is not a file"):
        parse_config({"upstreams": [{"name": "p", "url": UPSTREAM_URL,
                                     "ca_file": "missing.pem"}]}, tmp_path)
    assert "upstreams[0].ca_file" in upstream_error(ca_file="")


@pytest.mark.parametrize(("value", "expected"), [
    ("50GiB", 50 * 1024 ** 3), ("1MiB", MIB), (1000, 1000), ("10GB", 10 ** 10)])
def test_proxy_max_cache_size(value: Any, expected: int) -> None:
    assert parse_config({"proxy": {"max_cache_size": value}}, BASE).proxy.max_cache_size == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ({"proxy": {"max_cache_size": 0}}, "proxy.max_cache_size"),
    ({"proxy": {"max_cache_size": "lots"}}, "proxy.max_cache_size"),
    ({"proxy": {"max_cache_size": True}}, "proxy.max_cache_size"),
    ({"proxy": {"size": 1}}, "proxy.size"),
    ({"proxy": 5}, "proxy must be a table"),
])
def test_bad_proxy_values_name_the_key(raw: dict[str, Any], expected: str) -> None:
    assert expected in config_error(raw)


def test_the_example_file_upstream_block_parses_once_uncommented(tmp_path: Path) -> None:
    """etc/pypireg.toml's commented-out [[upstreams]] example is valid as written."""
    example = Path(__file__).resolve().parent.parent / "etc" / "pypireg.toml"
    text = example.read_text()
    block = text[text.index("# [[upstreams]]"):text.index("\n[proxy]")]
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line
                            for line in block.splitlines())
    path = tmp_path / "pypireg.toml"
    path.write_text(uncommented + "\n")
    (u,) = load_config(path).upstreams
    assert (u.name, u.url, u.ttl, u.timeout, u.offline, u.min_age) == (
        "public", UPSTREAM_URL, 600.0, 10.0, False, 0.0)
    # And the file as shipped still has no upstream.
    assert load_config(example).upstreams == ()


@deterministic
@given(st.text(alphabet=string.printable, max_size=30))
def test_any_duration_text_parses_or_names_the_key(text: str) -> None:
    try:
        seconds = parse_duration(text, "upstreams[3].ttl")
    except ConfigError as e:
        assert str(e).startswith("upstreams[3].ttl")
    else:
        assert seconds >= 0


def test_trusted_publishing_defaults_and_issuers() -> None:
    assert parse_config({}).trusted_publishing == TrustedPublishingConfig()
    assert TrustedPublishingConfig().audience == "pypireg"
    config = parse_config({"trusted_publishing": {
        "audience": "registry.example", "max_token_lifetime": "3h", "issuers": [
            {"url": "https://token.actions.githubusercontent.com", "kind": "github"},
            {"url": "https://gitlab.example.com/sub", "kind": "gitlab", "timeout": "3s"},
            {"url": "http://127.0.0.1:8999", "kind": "generic"},
            {"url": "http://[::1]:8999", "kind": "generic"}]}}).trusted_publishing
    assert (config.audience, config.max_token_lifetime) == ("registry.example", 3 * 3600.0)
    assert config.issuers[1] == IssuerConfig("https://gitlab.example.com/sub", "gitlab", 3.0)
    assert [i.plain_http for i in config.issuers] == [False, False, True, True]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"audience": ""}, "trusted_publishing.audience"),
    ({"audience": "two words"}, "trusted_publishing.audience"),
    ({"max_token_lifetime": 0}, "trusted_publishing.max_token_lifetime must be above zero"),
    ({"max_token_lifetime": "long"}, "trusted_publishing.max_token_lifetime"),
    ({"issuers": {"url": "x"}}, "trusted_publishing.issuers must be an array of tables"),
    ({"issuers": [{"kind": "github"}]}, "trusted_publishing.issuers[0].url is missing"),
    ({"issuers": [{"url": "http://ci.example", "kind": "github"}]},
     "trusted_publishing.issuers[0].url: an http:// issuer is accepted only on a loopback"),
    ({"issuers": [{"url": "https://u:p@ci.example", "kind": "github"}]},
     "trusted_publishing.issuers[0].url must be an absolute https URL"),
    ({"issuers": [{"url": "https://ci.example/?a=1", "kind": "github"}]},
     "trusted_publishing.issuers[0].url must be"),
    ({"issuers": [{"url": "https://ci.example", "kind": "jenkins"}]},
     "trusted_publishing.issuers[0].kind must be one of github, gitlab, generic"),
    ({"issuers": [{"url": "https://ci.example", "kind": "generic", "timeout": 0}]},
     "trusted_publishing.issuers[0].timeout"),
    ({"issuers": [{"url": "https://ci.example", "kind": "generic", "aud": "x"}]},
     "unknown configuration key trusted_publishing.issuers[0].aud"),
    ({"issuers": [{"url": "https://ci.example", "kind": "generic"},
                  {"url": "https://ci.example", "kind": "github"}]},
     "trusted_publishing.issuers[1].url 'https://ci.example' is configured twice"),
    ({"enabled": True}, "unknown configuration key trusted_publishing.enabled"),
])
def test_bad_trusted_publishing_values_name_the_key(raw: dict[str, Any], expected: str) -> None:
    assert expected in config_error({"trusted_publishing": raw})


def test_the_example_file_issuer_blocks_parse_once_uncommented(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "etc" / "pypireg.toml"
    text = example.read_text()
    block = text[text.index("[trusted_publishing]"):]
    uncommented = "\n".join(line[2:] if line.startswith("# [") or line.startswith("# url")
                            or line.startswith("# kind") or line.startswith("# timeout")
                            else line for line in block.splitlines())
    path = tmp_path / "pypireg.toml"
    path.write_text(uncommented + "\n")
    issuers = load_config(path).trusted_publishing.issuers
    assert [(i.url, i.kind) for i in issuers] == [
        ("https://token.actions.githubusercontent.com", "github"),
        ("https://gitlab.com", "gitlab")]
    assert load_config(example).trusted_publishing.issuers == ()


def test_the_readme_trusted_publishing_block_parses(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Trusted publishing"):]
    block = section[section.index("```toml\n") + len("```toml\n"):]
    block = "\n".join(line.strip() for line in block[:block.index("```")].splitlines())
    path = tmp_path / "pypireg.toml"
    path.write_text(block + "\n")
    config = load_config(path).trusted_publishing
    assert config.audience == "pypireg"
    assert [(i.url, i.kind) for i in config.issuers] == [
        ("https://token.actions.githubusercontent.com", "github"),
        ("https://gitlab.com", "gitlab")]
