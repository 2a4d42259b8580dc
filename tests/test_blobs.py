"""The streaming blob writer: back-pressure, digests, partial writes."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from pypireg.domain.errors import InsufficientStorage, UploadAbandoned
from pypireg.storage import blobs
from pypireg.storage.blobs import HIGH_WATER, LOW_WATER, BlobStore
from tests.support import reactor


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self._resumed: Deferred[None] | None = None

    def pauseProducing(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        assert self.paused
        self.paused = False
        if self._resumed is not None:
            resumed, self._resumed = self._resumed, None
            resumed.callback(None)

    def stopProducing(self) -> None:
        pass

    def resumed(self) -> Deferred[None]:
        """Fires when the writer resumes us (its worker thread has drained the buffer)."""
        assert self.paused
        if self._resumed is None:
            self._resumed = Deferred()
        return self._resumed


@pytest_twisted.ensureDeferred
async def test_writer_pauses_the_producer_and_keeps_memory_bounded(tmp_path: Path) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    producer = _Producer()
    temp = store.open_temp(producer, md5=True, blake2=True)
    rng = random.Random(7)
    expected = hashlib.sha256()
    md5 = hashlib.md5()
    blake2 = hashlib.blake2b(digest_size=32)
    total = 0
    # Like a transport: deliver reads only while not paused.
    while total < 40 * 1024 * 1024:
        if producer.paused:
            assert temp.buffered <= HIGH_WATER + 256 * 1024
            await producer.resumed()
            continue
        chunk = rng.randbytes(rng.choice([1, 100, 4096, 65536, 262144]))
        temp.write(chunk)
        for h in (expected, md5, blake2):
            h.update(chunk)
        total += len(chunk)
    digests = await temp.finish()
    assert producer.pauses > 0 and not producer.paused
    assert temp.buffered == 0
    assert digests.size == total == temp.path.stat().st_size
    assert (digests.sha256, digests.md5, digests.blake2_256) == (
        expected.hexdigest(), md5.hexdigest(), blake2.hexdigest())
    await store.in_thread(store.commit_sync, temp)
    final = store.path_for(digests.sha256)
    assert hashlib.sha256(final.read_bytes()).hexdigest() == digests.sha256


@pytest_twisted.ensureDeferred
async def test_only_requested_digests_are_computed(tmp_path: Path) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    temp = store.open_temp(None, md5=False, blake2=False)
    temp.write(b"x" * 10_000)
    digests = await temp.finish()
    assert digests.md5 is None and digests.blake2_256 is None
    both = await store.complete_digests(temp, md5=True, blake2=True)
    assert both.md5 == hashlib.md5(b"x" * 10_000).hexdigest()
    await temp.discard()
    assert not temp.path.exists()


def test_low_water_is_below_high_water() -> None:
    assert 0 < LOW_WATER < HIGH_WATER


@pytest.mark.parametrize("seed", range(20))
def test_writev_all_survives_partial_writes(tmp_path: Path, seed: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(rng.choice([0, 1, 7, 1000, 70_000])) for _ in range(rng.randint(1, 40))]
    real_writev = os.writev

    def partial(fd: int, buffers: Any) -> int:
        # Write at most a random prefix, as a kernel may.
        want = sum(len(b) for b in buffers)
        limit = rng.randint(1, max(1, want))
        taken, out = 0, []
        for b in buffers:
            piece = bytes(b[: limit - taken])
            out.append(piece)
            taken += len(piece)
            if taken >= limit:
                break
        return real_writev(fd, out)

    monkeypatch.setattr(blobs.os, "writev", partial)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        blobs._writev_all(fd, chunks)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(chunks)



async def _stream(temp: blobs.TempBlob, producer: _Producer, total: int) -> None:
    sent = 0
    while sent < total:
        if producer.paused:
            await producer.resumed()
            continue
        temp.write(b"\x01" * 262144)
        sent += 262144


@pytest_twisted.ensureDeferred
async def test_data_is_flushed_while_it_streams_in(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    flushed: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        flushed.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(blobs.os, "fdatasync", counting)
    producer = _Producer()
    temp = store.open_temp(producer, md5=False, blake2=False)
    await _stream(temp, producer, 40 * 1024 * 1024)
    await temp.finish()
    # Flushed on the way (how often depends on the disk's speed: one flush
    # at a time), so the final fsync has little to do.
    assert len(flushed) >= 1
    assert all(size >= blobs.SYNC_EVERY for size in flushed)
    await temp.discard()


@pytest_twisted.ensureDeferred
async def test_a_failed_flush_is_a_full_disk_and_never_stalls_the_body(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs.os, "fdatasync", full)
    producer = _Producer()
    temp = store.open_temp(producer, md5=False, blake2=False)
    await _stream(temp, producer, 40 * 1024 * 1024)
    with pytest.raises(InsufficientStorage):
        await temp.finish()
    assert not producer.paused
    await temp.discard()
    assert not temp.path.exists()


async def _finished(store: BlobStore, data: bytes) -> blobs.TempBlob:
    temp = store.open_temp(None, md5=False, blake2=False)
    temp.write(data)
    await temp.finish()
    return temp


@pytest_twisted.ensureDeferred
async def test_the_metadata_is_stored_in_the_same_commit(tmp_path: Path) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    temp = await _finished(store, b"distribution")
    meta_sha256 = await store.in_thread(lambda: store.commit_sync(temp, with_bytes=b"Name: x\n"))
    assert meta_sha256 == hashlib.sha256(b"Name: x\n").hexdigest()
    assert store.path_for(meta_sha256).read_bytes() == b"Name: x\n"
    assert store.path_for(hashlib.sha256(b"distribution").hexdigest()).read_bytes() == (
        b"distribution")
    assert temp.committed and list(store.tmp_dir.iterdir()) == []
    await temp.discard()  # a no-op once committed
    assert store.path_for(meta_sha256).exists()


@pytest_twisted.ensureDeferred
async def test_a_file_abandoned_before_its_commit_is_not_stored(tmp_path: Path) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    temp = await _finished(store, b"abandoned")
    await temp.discard()
    with pytest.raises(UploadAbandoned):
        await store.in_thread(lambda: store.commit_sync(temp, with_bytes=b"Name: x\n"))
    assert not store.path_for(hashlib.sha256(b"abandoned").hexdigest()).exists()
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("discard_first", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_discard_racing_the_commit_leaves_one_consistent_outcome(
        tmp_path: Path, discard_first: bool) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    temp = await _finished(store, b"raced")
    final = store.path_for(hashlib.sha256(b"raced").hexdigest())
    # Both run in worker threads at once, as when the client disconnects
    # while its finished upload is committed.
    if discard_first:
        gone = Deferred.fromCoroutine(temp.discard())
        committing = store.in_thread(store.commit_sync, temp)
    else:
        committing = store.in_thread(store.commit_sync, temp)
        gone = Deferred.fromCoroutine(temp.discard())
    await gone
    try:
        await committing
    except UploadAbandoned:
        assert not temp.committed and not final.exists()
    else:
        assert temp.committed and final.read_bytes() == b"raced"
    assert list(store.tmp_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_an_upload_that_never_wrote_creates_no_file_until_committed(
        tmp_path: Path) -> None:
    store = BlobStore(reactor, tmp_path)
    store.prepare()
    temp = store.open_temp(None)
    assert not temp.path.exists()
    await temp.finish()
    await temp.discard()
    assert list(store.tmp_dir.iterdir()) == []
