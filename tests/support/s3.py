"""An S3 endpoint for the tests: moto's server on 127.0.0.1, spoken to over real HTTP.

The registry talks to it exactly as to AWS or MinIO: credentials come from
the AWS environment variables (set here to test values), requests are
SigV4-signed. One server per test session; each test gets its own bucket.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.server import ThreadedMotoServer

from pypireg.config import S3Config

TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "pypireg-test-key",
    "AWS_SECRET_ACCESS_KEY": "pypireg-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Nothing else on the machine may leak in: no profile, no config files.
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server; yields its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def aws_environment() -> Iterator[None]:
    """The test credentials in os.environ (botocore's resolver reads them there)."""
    saved = {key: os.environ.get(key) for key in TEST_ENVIRONMENT}
    os.environ.update(TEST_ENVIRONMENT)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def new_bucket_name() -> str:
    return f"pypireg-test-{secrets.token_hex(6)}"


def s3_table(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    """A [storage.s3] table for *bucket* on *endpoint*."""
    return {"endpoint_url": endpoint, "bucket": bucket, "prefix": "reg/", **extra}


async def create_bucket(reactor: Any, config: S3Config) -> None:
    from pypireg.storage.s3 import S3Client

    client = S3Client(reactor, config)
    response = await client.request("CreateBucket", "PUT", "")
    assert response is not None
    await client.close()
