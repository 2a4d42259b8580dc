"""[storage] backend = "s3" and [storage.s3]: parsing, defaults, and errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pypireg.config import MIB, ConfigError, S3Config, load_config, parse_config


def s3(**keys: Any) -> dict[str, Any]:
    return {"storage": {"backend": "s3", "s3": {"bucket": "pypireg-blobs", **keys}}}


def error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


def test_filesystem_stays_the_default() -> None:
    storage = parse_config({}).storage
    assert storage.backend == "filesystem"
    assert storage.s3 is None


def test_s3_defaults() -> None:
    config = parse_config(s3()).storage
    assert config.backend == "s3"
    assert config.s3 == S3Config(bucket="pypireg-blobs")
    assert config.s3.endpoint_url is None
    assert config.s3.downloads == "proxy"
    assert config.s3.part_size == 8 * MIB
    # AWS itself: virtual-hosted style.
    assert not config.s3.path_style


def test_every_s3_key_is_used() -> None:
    config = parse_config(s3(endpoint_url="http://127.0.0.1:9000/", region="eu-west-1",
                             prefix="reg/one", addressing_style="virtual",
                             downloads="redirect", presign_ttl="10m", part_size="16MiB",
                             parts_in_flight=2, timeout=30)).storage.s3
    assert config == S3Config(bucket="pypireg-blobs", endpoint_url="http://127.0.0.1:9000",
                              region="eu-west-1", prefix="reg/one/",
                              addressing_style="virtual", downloads="redirect",
                              presign_ttl=600.0, part_size=16 * MIB, parts_in_flight=2,
                              timeout=30.0)
    assert not config.path_style


def test_a_bucket_may_be_configured_while_blobs_stay_in_the_folder() -> None:
    # The target of `pypireg storage copy --to s3`, before the switch.
    storage = parse_config({"storage": {"s3": {"bucket": "b-b-b"}}}).storage
    assert storage.backend == "filesystem"
    assert storage.s3 == S3Config(bucket="b-b-b")


def test_a_custom_endpoint_uses_path_style_unless_told() -> None:
    config = parse_config(s3(endpoint_url="http://minio.example:9000")).storage.s3
    assert config is not None and config.path_style


@pytest.mark.parametrize(("raw", "key"), [
    ({"storage": {"backend": "ftp"}}, "storage.backend"),
    ({"storage": {"backend": "s3"}}, "[storage.s3]"),
    ({"storage": {"backend": "s3", "s3": "bucket"}}, "storage.s3 must be a table"),
    ({"storage": {"backend": "s3", "s3": {}}}, "storage.s3.bucket is missing"),
    (s3(bucket="Not_A_Bucket"), "storage.s3.bucket"),
    (s3(bucket=5), "storage.s3.bucket"),
    (s3(endpoint_url="ftp://x"), "storage.s3.endpoint_url"),
    (s3(endpoint_url="https://key:secret@minio.example"), "storage.s3.endpoint_url"),
    (s3(endpoint_url="https://minio.example/bucket"), "storage.s3.endpoint_url"),
    (s3(region="Europe West"), "storage.s3.region"),
    (s3(prefix="/abs"), "storage.s3.prefix"),
    (s3(prefix="a//b"), "storage.s3.prefix"),
    (s3(addressing_style="dns"), "storage.s3.addressing_style"),
    (s3(downloads="stream"), "storage.s3.downloads"),
    (s3(presign_ttl="30d"), "storage.s3.presign_ttl"),
    (s3(presign_ttl=0), "storage.s3.presign_ttl"),
    (s3(part_size="1MiB"), "storage.s3.part_size"),
    (s3(part_size="6GiB"), "storage.s3.part_size"),
    (s3(parts_in_flight=0), "storage.s3.parts_in_flight"),
    (s3(parts_in_flight=100), "storage.s3.parts_in_flight"),
    (s3(timeout=0), "storage.s3.timeout"),
])
def test_bad_values_name_the_key(raw: dict[str, Any], key: str) -> None:
    assert key in error(raw)


@pytest.mark.parametrize("key", ["access_key_id", "secret_access_key", "aws_access_key_id",
                                 "aws_secret_access_key", "session_token"])
def test_credentials_are_refused_in_the_file_and_not_echoed(key: str) -> None:
    message = error(s3(**{key: "AKIASECRETVALUE"}))
    assert f"storage.s3.{key}" in message
    assert "AKIASECRETVALUE" not in message


def test_the_example_file_s3_block_parses_once_uncommented(tmp_path: Path) -> None:
    """etc/pypireg.toml's commented-out S3 settings are valid as written."""
    example = Path(__file__).resolve().parent.parent / "etc" / "pypireg.toml"
    text = example.read_text()
    block = text[text.index("# backend = \"s3\""):text.index("\n[database]")]
    uncommented = "\n".join(line[2:] if (line.startswith("# ") and " = " in line)
                            or line.startswith("# [") else line
                            for line in block.splitlines())
    path = tmp_path / "pypireg.toml"
    path.write_text("[storage]\n" + uncommented + "\n")
    storage = load_config(path).storage
    assert storage.backend == "s3"
    assert storage.s3 == S3Config(bucket="pypireg-blobs",
                                  endpoint_url="https://minio.example:9000")
    # And the file as shipped keeps the folder.
    assert load_config(example).storage.backend == "filesystem"
