"""Unit tests for pypireg.ingest.archives: bounded core-metadata reading from uploads.

Archives are built in memory (real wheels and sdists from tests.distributions,
hostile ones by hand) and written to tmp_path, as the upload path stores them.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import parse_filename
from pypireg.domain.metadata import CoreMetadata
from pypireg.ingest import archives
from pypireg.ingest.archives import MAX_METADATA_BYTES, read_core_metadata
from tests.distributions import (
    INFO,
    META,
    SDIST,
    TOP,
    WHEEL,
    ZIP_SDIST,
    metadata_text,
    sdist_bytes,
    wheel_bytes,
)


def read(folder: Path, filename: str, data: bytes) -> CoreMetadata:
    path = folder / filename
    path.write_bytes(data)
    return read_core_metadata(path, parse_filename(filename))


def refused(folder: Path, filename: str, data: bytes) -> str:
    with pytest.raises(BadUpload) as info:
        read(folder, filename, data)
    return info.value.reason


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
               linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mtime = 1_700_000_000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def make_tar(*members: tuple[tarfile.TarInfo, bytes], compresslevel: int = 9) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=compresslevel) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def files_under(folder: Path) -> set[Path]:
    return {Path(root) / name for root, dirs, names in os.walk(folder) for name in dirs + names}


# -- valid distributions ------------------------------------------------------


def test_wheel_metadata_is_read(tmp_path: Path) -> None:
    data = wheel_bytes("demo-pkg", "1.0", requires_python=">=3.9")
    meta = read(tmp_path, WHEEL, data)
    assert meta.metadata_version == "2.1"
    assert meta.name == "demo-pkg"
    assert meta.version == "1.0"
    assert meta.summary == "A test package"
    assert meta.requires_python == ">=3.9"
    assert meta.raw == metadata_text("demo-pkg", "1.0", requires_python=">=3.9").encode()


def test_tar_gz_sdist_metadata_is_read(tmp_path: Path) -> None:
    meta = read(tmp_path, SDIST, sdist_bytes("demo-pkg", "1.0", requires_python=">=3.10"))
    assert (meta.metadata_version, meta.name, meta.version) == ("2.2", "demo-pkg", "1.0")
    assert meta.requires_python == ">=3.10"


def test_zip_sdist_metadata_is_read(tmp_path: Path) -> None:
    data = make_zip({f"{TOP}/setup.py": b"", f"{TOP}/PKG-INFO": META,
                     f"{TOP}/demo_pkg/__init__.py": b""})
    meta = read(tmp_path, ZIP_SDIST, data)
    assert (meta.name, meta.version, meta.raw) == ("demo-pkg", "1.0", META)


def test_stored_zip_member_is_read(tmp_path: Path) -> None:
    data = make_zip({f"{INFO}/METADATA": META}, compression=zipfile.ZIP_STORED)
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


def test_newer_metadata_version_is_accepted(tmp_path: Path) -> None:
    text = metadata_text("demo-pkg", "1.0", metadata_version="2.4")
    meta = read(tmp_path, WHEEL, wheel_bytes("demo-pkg", "1.0", metadata=text))
    assert meta.metadata_version == "2.4"


def test_metadata_of_exactly_4_mib_is_accepted(tmp_path: Path) -> None:
    body = META + b"Description: " + b"x" * (MAX_METADATA_BYTES - len(META) - 14) + b"\n"
    assert len(body) == MAX_METADATA_BYTES
    meta = read(tmp_path, WHEEL, make_zip({f"{INFO}/METADATA": body}))
    assert len(meta.raw) == MAX_METADATA_BYTES


@pytest.mark.parametrize(("version", "reliable"), [
    ("2.2", True), ("2.4", True), ("2.10", True), ("3.0", True),
    ("2.1", False), ("1.0", False), (None, False), ("two", False),
])
def test_sdist_metadata_is_reliable_from_version_2_2(version: str | None, reliable: bool
                                                     ) -> None:
    meta = CoreMetadata(metadata_version=version, name="x", version="1", summary=None,
                        requires_python=None, raw=b"")
    assert meta.is_reliable_sdist_metadata is reliable


# -- wheels: which METADATA -----------------------------------------------------


def test_wheel_without_metadata_is_refused(tmp_path: Path) -> None:
    data = make_zip({"demo_pkg/__init__.py": b"", f"{INFO}/WHEEL": b"Wheel-Version: 1.0\n"})
    assert refused(tmp_path, WHEEL, data) == (
        f"{WHEEL} must contain exactly one top-level *.dist-info/METADATA, found 0.")


def test_wheel_with_two_dist_info_directories_is_refused(tmp_path: Path) -> None:
    data = make_zip({f"{INFO}/METADATA": META, "other-2.0.dist-info/METADATA": META})
    assert refused(tmp_path, WHEEL, data) == (
        f"{WHEEL} must contain exactly one top-level *.dist-info/METADATA, found 2.")


# An absolute or "../" METADATA is refused for its name (tests/test_archive_safety.py).
@pytest.mark.parametrize("name", [
    f"vendored/{INFO}/METADATA", "METADATA", f"{INFO}/METADATA/", f"{TOP}.data/METADATA",
])
def test_wheel_metadata_outside_a_top_level_dist_info_is_not_used(tmp_path: Path, name: str
                                                                  ) -> None:
    assert "found 0" in refused(tmp_path, WHEEL, make_zip({name: META}))


def test_nested_metadata_does_not_count_as_a_second_one(tmp_path: Path) -> None:
    other = metadata_text("other", "9.9").encode()
    data = make_zip({f"{INFO}/METADATA": META, f"demo_pkg/_vendor/{INFO}/METADATA": other})
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


# -- wheels: hostile METADATA ---------------------------------------------------


def test_metadata_declaring_over_4_mib_is_refused_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spaces = b" " * (5 * 1024 * 1024)
    data = make_zip({f"{INFO}/METADATA": META + spaces})
    assert len(data) < 100_000  # highly compressible: a small upload
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def recording_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    reason = refused(tmp_path, WHEEL, data)
    assert reason.startswith(f"{INFO}/METADATA in {WHEEL} declares {len(META) + len(spaces)} "
                             "bytes")
    assert opened == []  # refused from the directory entry alone


def set_declared_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size of the (single) member in both zip headers."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    central = out.find(b"PK\x01\x02")
    out[local + 22:local + 26] = size.to_bytes(4, "little")
    out[central + 24:central + 28] = size.to_bytes(4, "little")
    return bytes(out)


def test_metadata_larger_than_it_declares_is_refused(tmp_path: Path) -> None:
    data = make_zip({f"{INFO}/METADATA": META + b" " * (5 * 1024 * 1024)})
    liar = set_declared_size(data, 1000)
    assert zipfile.ZipFile(io.BytesIO(liar)).infolist()[0].file_size == 1000
    with pytest.raises(BadUpload):
        read(tmp_path, WHEEL, liar)


def test_non_utf8_metadata_is_refused(tmp_path: Path) -> None:
    latin1 = "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\nAuthor: José\n\n"
    data = make_zip({f"{INFO}/METADATA": latin1.encode("latin-1")})
    assert refused(tmp_path, WHEEL, data) == f"The metadata in {WHEEL} is not valid UTF-8."


@pytest.mark.parametrize("text", [
    "Name: demo-pkg\nVersion: 1.0\n\n",
    "Metadata-Version:\nName: demo-pkg\nVersion: 1.0\n\n",
    "",
    "\n\nMetadata-Version: 2.1\n",  # after the header block: part of the body
])
def test_metadata_without_metadata_version_is_refused(tmp_path: Path, text: str) -> None:
    data = make_zip({f"{INFO}/METADATA": text.encode()})
    assert refused(tmp_path, WHEEL, data) == (
        f"The metadata in {WHEEL} has no Metadata-Version field.")


@pytest.mark.parametrize("filename", [WHEEL, ZIP_SDIST])
@pytest.mark.parametrize("data", [
    b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 100, gzip.compress(META),
])
def test_file_that_is_not_a_zip_is_refused(tmp_path: Path, filename: str, data: bytes) -> None:
    assert "is not a valid" in refused(tmp_path, filename, data)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_wheel_is_refused(tmp_path: Path, keep: float) -> None:
    data = wheel_bytes("demo-pkg", "1.0")
    with pytest.raises(BadUpload, match="is not a valid"):
        read(tmp_path, WHEEL, data[:int(len(data) * keep)])


def test_wheel_missing_its_last_byte_is_refused(tmp_path: Path) -> None:
    data = wheel_bytes("demo-pkg", "1.0")
    with pytest.raises(BadUpload, match="is not a valid"):
        read(tmp_path, WHEEL, data[:-1])


def test_corrupt_metadata_member_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_zip({f"{INFO}/METADATA": META * 50}))
    start = data.find(b"PK\x03\x04") + 30 + len(f"{INFO}/METADATA")
    for i in range(start + 5, start + 25):  # scramble the deflate stream
        data[i] ^= 0xA5
    with pytest.raises(BadUpload, match="is not a valid wheel"):
        read(tmp_path, WHEEL, bytes(data))


@pytest.mark.parametrize(("filename", "member"), [
    (WHEEL, f"{INFO}/METADATA"), (ZIP_SDIST, f"{TOP}/PKG-INFO"),
])
def test_encrypted_metadata_member_is_refused(tmp_path: Path, filename: str, member: str
                                              ) -> None:
    data = bytearray(make_zip({member: META}, compression=zipfile.ZIP_STORED))
    data[data.find(b"PK\x03\x04") + 6] |= 0x01  # general purpose flag: encrypted
    data[data.find(b"PK\x01\x02") + 8] |= 0x01
    with pytest.raises(BadUpload):
        read(tmp_path, filename, bytes(data))


def test_zip_with_too_many_members_is_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 10)
    members = {f"demo_pkg/m{i}.py": b"" for i in range(10)} | {f"{INFO}/METADATA": META}
    assert refused(tmp_path, WHEEL, make_zip(members)) == f"{WHEEL} has more than 10 members."


# -- zip sdists ---------------------------------------------------------------


@pytest.mark.parametrize("members", [
    {f"{TOP}/setup.py": b""},
    {f"{TOP}/sub/PKG-INFO": META},
    {f"{TOP}/PKG-INFO": META, "other-1.0/PKG-INFO": META},
])
def test_zip_sdist_needs_exactly_one_top_level_pkg_info(tmp_path: Path,
                                                        members: dict[str, bytes]) -> None:
    assert refused(tmp_path, ZIP_SDIST, make_zip(members)) == (
        f"{ZIP_SDIST} must contain exactly one top-level PKG-INFO file.")


# -- tar.gz sdists ------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"",
    b"not gzip",
    make_zip({f"{TOP}/PKG-INFO": META}),
    sdist_bytes("demo-pkg", "1.0")[10:],  # gzip header cut off
])
def test_tar_gz_that_is_not_gzip_is_refused(tmp_path: Path, data: bytes) -> None:
    assert refused(tmp_path, SDIST, data) == f"{SDIST} is not a valid gzipped tar archive."


def test_uncompressed_tar_named_tar_gz_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info, data = tar_member(f"{TOP}/PKG-INFO", META)
        tf.addfile(info, io.BytesIO(data))
    assert "is not a valid gzipped tar" in refused(tmp_path, SDIST, buf.getvalue())


def test_gzip_of_something_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    assert "is not a valid gzipped tar" in refused(tmp_path, SDIST, gzip.compress(b"x" * 5000))


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_tar_gz_is_refused(tmp_path: Path, keep: float) -> None:
    pkg_info = META + os.urandom(20_000).hex().encode()  # incompressible, so it spans the cut
    data = make_tar(tar_member(f"{TOP}/PKG-INFO", pkg_info))
    assert "is not a valid gzipped tar" in refused(tmp_path, SDIST, data[:int(len(data) * keep)])


def test_tarball_without_pkg_info_is_refused(tmp_path: Path) -> None:
    data = make_tar(tar_member(f"{TOP}/setup.py", b""), tar_member(f"{TOP}/README", b"hi"))
    assert refused(tmp_path, SDIST, data) == f"{SDIST} has no top-level PKG-INFO file."


@pytest.mark.parametrize("name", [f"{TOP}/src/PKG-INFO", f"{TOP}/{TOP}/PKG-INFO", "PKG-INFO",
                                  f"{TOP}/PKG-INFO/x"])
def test_pkg_info_outside_the_top_level_directory_is_not_accepted(tmp_path: Path, name: str
                                                                   ) -> None:
    data = make_tar(tar_member(name, META))
    assert refused(tmp_path, SDIST, data) == f"{SDIST} has no top-level PKG-INFO file."


# A PKG-INFO symlink to /etc/passwd is refused as a link out of the archive
# (tests/test_archive_safety.py).
@pytest.mark.parametrize(("kind", "linkname"), [
    (tarfile.SYMTYPE, "setup.py"),
    (tarfile.LNKTYPE, f"{TOP}/setup.py"),
    (tarfile.DIRTYPE, ""),
])
def test_pkg_info_that_is_not_a_regular_file_is_not_followed(
        tmp_path: Path, kind: bytes, linkname: str) -> None:
    data = make_tar(tar_member(f"{TOP}/setup.py", META),
                    tar_member(f"{TOP}/PKG-INFO", kind=kind, linkname=linkname))
    assert refused(tmp_path, SDIST, data) == f"{SDIST} has no top-level PKG-INFO file."


def test_pkg_info_over_4_mib_is_refused(tmp_path: Path) -> None:
    data = make_tar(tar_member(f"{TOP}/PKG-INFO", META + b" " * MAX_METADATA_BYTES))
    assert refused(tmp_path, SDIST, data) == (
        f"{TOP}/PKG-INFO in {SDIST} has {len(META) + MAX_METADATA_BYTES} bytes; metadata "
        f"files may have at most {MAX_METADATA_BYTES}.")


def test_first_top_level_pkg_info_is_used(tmp_path: Path) -> None:
    data = make_tar(tar_member(f"{TOP}/PKG-INFO", META),
                    tar_member(f"{TOP}/sub/PKG-INFO", metadata_text("other", "2").encode()))
    assert read(tmp_path, SDIST, data).name == "demo-pkg"


def test_tarball_with_too_many_members_before_pkg_info_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 10)
    junk = [tar_member(f"{TOP}/m{i}.py") for i in range(10)]
    data = make_tar(*junk, tar_member(f"{TOP}/PKG-INFO", META))
    # Every member is checked now, so a tarball we cannot scan whole is refused as such.
    assert refused(tmp_path, SDIST, data) == f"{SDIST} has more than 10 members."


# -- path traversal -----------------------------------------------------------


def traversal_names(tmp_path: Path) -> list[str]:
    return ["../../evil.txt", "../evil-dir/evil.txt", str(tmp_path / "absolute-evil.txt"),
            f"{TOP}/../../evil2.txt"]


def test_tar_traversal_members_are_never_extracted(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # where a careless extraction would resolve "../../"
    members = [tar_member(name, b"pwned\n") for name in traversal_names(tmp_path)]
    members.append(tar_member("../../etc/passwd", b"root::0:0::/:/bin/sh\n"))
    members.append(tar_member(f"{TOP}/link", kind=tarfile.SYMTYPE, linkname="../../.."))
    data = make_tar(*members, tar_member(f"{TOP}/PKG-INFO", META))
    archive = work / SDIST
    archive.write_bytes(data)
    before = files_under(tmp_path)
    with pytest.raises(BadUpload, match=r"has a '\.\.' segment|is an absolute path"):
        read_core_metadata(archive, parse_filename(SDIST))
    assert files_under(tmp_path) == before


def test_zip_traversal_members_are_never_extracted(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    members = {name: b"pwned\n" for name in traversal_names(tmp_path)}
    for filename, metadata_member in ((ZIP_SDIST, f"{TOP}/PKG-INFO"),
                                      (WHEEL, f"{INFO}/METADATA")):
        archive = work / filename
        archive.write_bytes(make_zip(members | {metadata_member: META}))
        before = files_under(tmp_path)
        with pytest.raises(BadUpload, match=r"has a '\.\.' segment|is an absolute path"):
            read_core_metadata(archive, parse_filename(filename))
        assert files_under(tmp_path) == before


@pytest.mark.parametrize("filename", [SDIST, ZIP_SDIST])
def test_pkg_info_reached_by_traversal_is_not_accepted(tmp_path: Path, filename: str) -> None:
    if filename == SDIST:
        data = make_tar(tar_member("../PKG-INFO", META))
    else:
        data = make_zip({"../PKG-INFO": META})
    with pytest.raises(BadUpload):
        read(tmp_path, filename, data)


# -- decompression bounds ------------------------------------------------------


class _Zeros(io.RawIOBase):
    """*size* zero bytes, without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


BOMB_MEMBER = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def zero_bomb_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small .tar.gz with 64 MiB of zeros before PKG-INFO."""
    path = tmp_path_factory.mktemp("bomb") / SDIST
    with tarfile.open(path, mode="w:gz", compresslevel=9) as tf:
        info = tarfile.TarInfo(f"{TOP}/zeros.bin")
        info.size = BOMB_MEMBER
        tf.addfile(info, io.BufferedReader(_Zeros(BOMB_MEMBER)))
        info, data = tar_member(f"{TOP}/PKG-INFO", META)
        tf.addfile(info, io.BytesIO(data))
    assert path.stat().st_size < 1024 * 1024
    return path


def test_zero_filled_member_before_pkg_info_ends_quickly(zero_bomb_sdist: Path) -> None:
    started = time.monotonic()
    try:
        meta = read_core_metadata(zero_bomb_sdist, parse_filename(SDIST))
    except BadUpload:
        pass
    else:
        assert meta.name == "demo-pkg"
    assert time.monotonic() - started < 10


class _CountingDecompressor:
    def __init__(self, inner: Any, counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def decompress(self, data: bytes, *args: Any) -> bytes:
        out: bytes = self._inner.decompress(data, *args)
        self._counter[0] += len(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def decompressed_bytes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the bytes zlib inflates (tarfile's gzip stream uses zlib.decompressobj)."""
    counter = [0]
    real = zlib.decompressobj

    def counting(*args: Any, **kwargs: Any) -> _CountingDecompressor:
        return _CountingDecompressor(real(*args, **kwargs), counter)

    monkeypatch.setattr(zlib, "decompressobj", counting)
    yield counter


def test_tar_scan_limit_bounds_the_bytes_decompressed(
        zero_bomb_sdist: Path, decompressed_bytes: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    limit = 1024 * 1024
    monkeypatch.setattr(archives, "MAX_TAR_SCAN_BYTES", limit)
    with pytest.raises(BadUpload):  # PKG-INFO lies beyond the scan limit
        read_core_metadata(zero_bomb_sdist, parse_filename(SDIST))
    assert decompressed_bytes[0] > 0  # the counter sees tarfile's inflation
    # Slack: tarfile inflates in blocks, and a block of zeros inflates a lot.
    assert decompressed_bytes[0] <= limit + 16 * 1024 * 1024
