"""A bounded fuzz run: mutated upload requests never cause a 5xx or leave residue.

Seeded, so every run sends the same requests. Each mutation goes through
the real site (raw bytes over a StringTransport) and the real database.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest_twisted

from pypireg.admin.fsck import fsck
from pypireg.storage.blobs import BlobStore
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.raw import Client, files_in, head, upload_site

ROUNDS = 300


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf)) if buf else 0
        if op == 0 and buf:  # flip a byte
            buf[pos] = rng.randrange(256)
        elif op == 1:  # insert junk
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        elif op == 2 and buf:  # delete a run
            del buf[pos:pos + rng.randint(1, 200)]
        elif op == 3:  # truncate
            del buf[pos:]
        elif op == 4:  # duplicate a run
            end = min(len(buf), pos + rng.randint(1, 300))
            buf[pos:pos] = buf[pos:end]
        else:  # splice in a boundary-like sequence
            buf[pos:pos] = rng.choice([b"\r\n--pypiregboundary\r\n", b"\r\n--", b"--\r\n",
                                       b'Content-Disposition: form-data; name="content"\r\n'])
    return bytes(buf)


@pytest_twisted.ensureDeferred
async def test_mutated_uploads_never_5xx_nor_leave_residue(db: Any, tmp_path: Path) -> None:
    rng = random.Random(20261126)
    site, project, token = await upload_site(db, tmp_path)
    wheel = wheel_bytes("fuzz-pkg", "1.0", payload=b"x = 1\n" * 50)
    ctype, body = upload_form("fuzz-pkg", "1.0", wheel_filename("fuzz-pkg", "1.0"), wheel,
                              extra={"summary": "fuzzing", "classifiers": "Private :: X"})
    codes: dict[int, int] = {}
    for _ in range(ROUNDS):
        target = rng.random()
        if target < 0.15:  # mutate the headers as well
            request = mutate(rng, head(project, token, ctype, len(body))) + body
        else:
            mutated = mutate(rng, body)
            request = head(project, token, ctype, len(mutated)) + mutated
        client = Client(site)
        client.send(request)
        await client.wait_for(
            lambda c=client: b"\r\n\r\n" in c.response or c.transport.disconnecting)
        status = client.response[9:12]
        code = int(status) if status.isdigit() else 0
        codes[code] = codes.get(code, 0) + 1
        assert code < 500, client.response[:300]
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        client.protocol.connectionLost(Failure(ConnectionDone()))
    await client.wait_for(lambda: files_in(tmp_path, "tmp") == [])
    report = await fsck(db, BlobStore(reactor, tmp_path / "data"))
    assert report.ok, report.lines()
    print(f"fuzz: {ROUNDS} mutated requests, status counts {sorted(codes.items())}, "
          "0 residue")
