"""Raw request bytes through the real site, over a StringTransport.

We control exactly which bytes have arrived when, and look at the
transport's producer state and at what was written back.
"""

from __future__ import annotations

from base64 import b64encode
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from pypireg.config import parse_config
from pypireg.service import build_site
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from tests.support import reactor
from tests.support.waiting import MAX_TURNS, until


class Client:
    """One connection to *site*: bytes in with `send`, bytes out in `response`."""

    def __init__(self, site: Any) -> None:
        # Lenient: twisted.web resumes the transport after closing it.
        self.transport = StringTransport(lenient=True)
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    async def wait_for(self, predicate: Any, turns: int = MAX_TURNS) -> None:
        """Until *predicate()* holds: the site answers after database and thread work."""
        await until(predicate, turns, what=self.transport.value)

    @property
    def response(self) -> bytes:
        return bytes(self.transport.value())


def head(project: int, token: str | None, ctype: bytes, length: int | None,
         extra: bytes = b"", target: str | None = None) -> bytes:
    """An upload request's line and headers (chunked if *length* is None).

    *target* replaces the upload URL's path (`/api/v4/projects/<project>/packages/pypi`).
    """
    target = target or f"/api/v4/projects/{project}/packages/pypi"
    lines = [f"POST {target} HTTP/1.1".encode(), b"Host: test", b"Content-Type: " + ctype]
    if token:
        lines.append(b"Authorization: Basic " + b64encode(f"__token__:{token}".encode()))
    if length is None:
        lines.append(b"Transfer-Encoding: chunked")
    else:
        lines.append(b"Content-Length: %d" % length)
    if extra:
        lines.append(extra)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def upload_site(db: Any, tmp_path: Path, max_size: int = 1024 * 1024,
                      base_url: str | None = None) -> tuple[Any, int, str]:
    """The real site over *db*, a project `acme` and a write token for it."""
    config = parse_config({"storage": {"path": str(tmp_path / "data")},
                           "uploads": {"max_size": max_size},
                           "server": {"base_url": base_url} if base_url else {}})
    site, _ = await build_site(reactor, config, db)
    project = await project_store.create_project(db, "acme")
    _, token = await token_store.create_token(db, project.id, "write")
    return site, project.id, token


def files_in(tmp_path: Path, sub: str) -> list[Path]:
    return [p for p in (tmp_path / "data" / sub).rglob("*") if p.is_file()]
