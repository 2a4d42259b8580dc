"""A bounded fuzz run: mutated upload requests are answered, never with a 5xx, and leave no residue.

Seeded, so every run sends the same requests. Each mutation goes through
the real site (raw bytes over a StringTransport) and the real database.
A connection closed without a status line counts as a failure, as a 5xx
does: it is what an exception escaping into the channel looks like.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from pypireg.admin.fsck import fsck
from pypireg.storage.blobs import BlobStore
from tests.distributions import upload_form, wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.raw import Client, files_in, head, upload_site

ROUNDS = 300
# A complete response head: the status line, headers, the blank line. A
# mutated request line may say HTTP/1.0, and is then answered in kind.
_HEAD = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n")


def final_status(response: bytes) -> int | None:
    """The final status of the first response in *response*; None if no complete head arrived.

    Interim `100 Continue` heads are skipped.
    """
    while (match := _HEAD.match(response)) is not None:
        code = int(match.group(1))
        if code != 100:
            return code
        response = response[match.end():]
    return None


def test_final_status_needs_a_complete_head() -> None:
    assert final_status(b"HTTP/1.1 400 Bad Request\r\n\r\n") == 400
    assert final_status(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                        b"Content-Length: 0\r\n\r\n") == 201
    assert final_status(b"HTTP/1.0 413 Too Large\r\nConnection: close\r\n\r\nbody") == 413
    assert final_status(b"") is None  # dropped without a word
    assert final_status(b"HTTP/1.1 100 Continue\r\n\r\n") is None
    assert final_status(b"HTTP/1.1 201 Created\r\nContent-Le") is None  # cut off
    assert final_status(b"garbage") is None


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
        # Answered (a 4xx may be followed by a close: that is fine), or closed.
        await client.wait_for(
            lambda c=client: final_status(c.response) is not None or c.transport.disconnecting)
        code = final_status(client.response)
        assert code is not None, ("closed without an answer", request[:300], client.response)
        codes[code] = codes.get(code, 0) + 1
        assert code < 500, client.response[:300]
        client.protocol.connectionLost(Failure(ConnectionDone()))
    await client.wait_for(lambda: files_in(tmp_path, "tmp") == [])
    report = await fsck(db, BlobStore(reactor, tmp_path / "data"))
    assert report.ok, report.lines()
    print(f"fuzz: {ROUNDS} mutated requests, status counts {sorted(codes.items())}, "
          "0 residue")
