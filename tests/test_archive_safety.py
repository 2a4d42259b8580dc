"""Hostile archive content: what read_core_metadata refuses before the metadata is trusted.

Each hostile archive is built here, byte by byte where zipfile or tarfile
would not write it (struct for zip records), and each test names the
reason it expects, so an archive refused for some other reason fails the
test. Valid archives from tests.distributions, zipfile's own variants
(zip64, data descriptors, comments) and a real setuptools build show the
checks refuse nothing ordinary.
"""

from __future__ import annotations

import gzip
import io
import ntpath
import posixpath
import struct
import subprocess
import sys
import tarfile
import textwrap
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given, settings
from hypothesis import strategies as st

from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import parse_filename
from pypireg.domain.metadata import CoreMetadata
from pypireg.ingest import archives
from pypireg.ingest.archives import MAX_MEMBERS, read_core_metadata
from pypireg.ingest.member_paths import path_problem
from pypireg.storage.projects import create_project
from pypireg.storage.tokens import create_token
from tests.distributions import (
    INFO,
    META,
    SDIST,
    TOP,
    WHEEL,
    ZIP_SDIST,
    sdist_bytes,
    upload_form,
    wheel_bytes,
)

HINT = "; paths in a distribution must be relative, with plain names separated by '/'."
# Deterministic: the same examples on every run, nothing written to .hypothesis/.
deterministic = settings(derandomize=True, database=None)


def read(folder: Path, filename: str, data: bytes) -> CoreMetadata:
    path = folder / filename
    path.write_bytes(data)
    return read_core_metadata(path, parse_filename(filename))


def refused(folder: Path, filename: str, data: bytes) -> str:
    with pytest.raises(BadUpload) as info:
        read(folder, filename, data)
    return info.value.reason


# -- zip records, by hand ------------------------------------------------------

LOCAL = struct.Struct("<4s5H3L2H")
CENTRAL = struct.Struct("<4s6H3L5H2L")
EOCD = struct.Struct("<4s4H2LH")
ZIP64_END = struct.Struct("<4sQ2H2L4Q")
LOCATOR = struct.Struct("<4sLQL")


@dataclass
class Member:
    """One stored (uncompressed) member; the local_* fields make its local header lie."""

    name: bytes
    data: bytes = b""
    flags: int = 0
    method: int = 0
    extra: bytes = b""
    listed: bool = True  # in the central directory
    descriptor: bool = False  # a data descriptor after the data (set flag 0x08 too)
    local_name: bytes | None = None
    local_method: int | None = None
    local_crc: int | None = None
    local_size: int | None = None


def wheel_members(*extra: Member) -> list[Member]:
    return [Member(f"{INFO}/METADATA".encode(), META), Member(b"demo_pkg/__init__.py"),
            *extra]


@dataclass
class RawZip:
    members: list[Member]
    prefix: bytes = b""
    comment: bytes = b""
    count: int | None = None  # entries the end record declares
    central_extra: list[bytes] = field(default_factory=list)  # more directory records
    offsets: list[int] = field(default_factory=list)

    def build(self) -> bytes:
        out = bytearray(self.prefix)
        central = bytearray()
        listed = 0
        self.offsets = []
        for m in self.members:
            offset = len(out)
            self.offsets.append(offset)
            crc = zlib.crc32(m.data)
            local_name = m.name if m.local_name is None else m.local_name
            out += LOCAL.pack(
                b"PK\x03\x04", 20, m.flags, m.method if m.local_method is None else m.local_method,
                0, 0x21, crc if m.local_crc is None else m.local_crc,
                len(m.data) if m.local_size is None else m.local_size,
                len(m.data) if m.local_size is None else m.local_size,
                len(local_name), len(m.extra)) + local_name + m.extra + m.data
            if m.descriptor:
                out += struct.pack("<4s3L", b"PK\x07\x08", crc, len(m.data), len(m.data))
            if m.listed:
                central += central_record(m.name, m.data, offset, flags=m.flags,
                                          method=m.method, extra=m.extra)
                listed += 1
        central += b"".join(self.central_extra)
        count = listed + len(self.central_extra) if self.count is None else self.count
        cd_offset = len(out)
        out += central
        out += EOCD.pack(b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset,
                         len(self.comment)) + self.comment
        return bytes(out)


def central_record(name: bytes, data: bytes, offset: int, *, flags: int = 0, method: int = 0,
                   extra: bytes = b"") -> bytes:
    return CENTRAL.pack(b"PK\x01\x02", 20, 20, flags, method, 0, 0x21, zlib.crc32(data),
                        len(data), len(data), len(name), len(extra), 0, 0, 0, 0,
                        offset) + name + extra


def with_zip64_end(data: bytes, *, entries: int | None = None, saturate: bool = True,
                   locator_offset: int | None = None, signature: bytes = b"PK\x06\x06",
                   disks: int = 1) -> bytes:
    """*data* (a zip without comment) with a zip64 end record and locator before its end record."""
    at = len(data) - EOCD.size
    _, _, _, _, count, cd_size, cd_offset, _ = EOCD.unpack(data[at:])
    count64 = count if entries is None else entries
    record = ZIP64_END.pack(signature, 44, 45, 45, 0, 0, count64, count64, cd_size, cd_offset)
    locator = LOCATOR.pack(b"PK\x06\x07", 0, at if locator_offset is None else locator_offset,
                           disks)
    classic = (0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF) if saturate else (count, cd_size, cd_offset)
    end = EOCD.pack(b"PK\x05\x06", 0, 0, classic[0], classic[0], classic[1], classic[2], 0)
    return data[:at] + record + locator + end


def zip_reason(member: str, problem: str) -> str:
    return f"{WHEEL}: member {member!r} {problem}."


def structure_reason(problem: str) -> str:
    return f"{WHEEL} is not a valid wheel (zip) archive: {problem}."


# -- ordinary archives still pass ----------------------------------------------


def test_raw_built_wheel_is_accepted(tmp_path: Path) -> None:
    """The hand-built zips below differ from this one only in what each test breaks."""
    data = RawZip(wheel_members()).build()
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


def test_wheels_and_sdists_of_the_test_helpers_are_accepted(tmp_path: Path) -> None:
    assert read(tmp_path, WHEEL, wheel_bytes("demo-pkg", "1.0")).name == "demo-pkg"
    assert read(tmp_path, SDIST, sdist_bytes("demo-pkg", "1.0")).name == "demo-pkg"


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)


def zipfile_variant(how: str) -> bytes:
    members = {f"{INFO}/METADATA": META, "demo_pkg/__init__.py": b"VALUE = 1\n" * 50}
    if how == "data descriptors":  # zipfile can only append them on an unseekable stream
        sink = _Unseekable()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return bytes(sink.buffer)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            with zf.open(name, "w", force_zip64=how == "zip64 local headers") as out:
                out.write(data)
        if how == "comment":
            zf.comment = b"built by hand"
        if how == "folders":
            zf.writestr("demo_pkg/", b"")
            zf.writestr("demo_pkg/data/", b"")
    return buf.getvalue()


@pytest.mark.parametrize("how", ["data descriptors", "zip64 local headers", "comment",
                                 "folders"])
def test_zipfile_variants_are_accepted(tmp_path: Path, how: str) -> None:
    data = zipfile_variant(how)
    if how == "data descriptors":
        assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].flag_bits & 0x08
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


@pytest.mark.parametrize("saturate", [True, False])
def test_zip64_end_record_is_accepted(tmp_path: Path, saturate: bool) -> None:
    data = with_zip64_end(RawZip(wheel_members()).build(), saturate=saturate)
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


def test_data_before_the_first_entry_is_accepted(tmp_path: Path) -> None:
    data = RawZip(wheel_members(), prefix=b"#!/bin/sh\nexit 0\n").build()
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


def test_names_differing_only_in_case_are_accepted(tmp_path: Path) -> None:
    """As on the public index: they are distinct on the file systems most installs use."""
    data = RawZip(wheel_members(Member(b"demo_pkg/Util.py"), Member(b"demo_pkg/util.py"))).build()
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


@pytest.fixture(scope="module")
def real_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel and an sdist built by setuptools itself (pip wheel, python -m build)."""
    root = tmp_path_factory.mktemp("real")
    project = root / "src"
    (project / "demo_pkg").mkdir(parents=True)
    (project / "demo_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (project / "demo_pkg" / "data.txt").write_text("data\n")
    (project / "README.md").write_text("# demo\n")
    (project / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "demo-pkg"
        version = "1.0"
        readme = "README.md"
        [tool.setuptools.package-data]
        demo_pkg = ["*.txt"]
        """))
    out = root / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                    str(project)], check=True, capture_output=True, timeout=120)
    return out


def test_real_setuptools_wheel_and_sdist_are_accepted(real_build: Path) -> None:
    built = sorted(real_build.iterdir())
    assert {p.suffix for p in built} == {".whl", ".gz"}
    for path in built:
        meta = read_core_metadata(path, parse_filename(path.name))
        assert (meta.name, meta.version) == ("demo-pkg", "1.0")


# -- the member path rule ------------------------------------------------------

BAD_NAMES = [
    ("../evil.py", "has a '..' segment"),
    ("demo_pkg/../../evil.py", "has a '..' segment"),
    ("demo_pkg/..", "has a '..' segment"),
    ("/etc/evil", "is an absolute path"),
    ("C:/evil.py", "starts with a drive letter"),
    ("c:evil.py", "starts with a drive letter"),
    ("demo_pkg\\..\\..\\evil.py", "contains a backslash"),
    ("demo_pkg/evil.py\x00.txt", "contains a control character"),
    ("demo_pkg/evil\n.py", "contains a control character"),
    ("demo_pkg//evil.py", "has an empty segment ('//')"),
    ("./evil.py", "has a '.' segment"),
    ("demo_pkg/./evil.py", "has a '.' segment"),
    ("", "is empty"),
]


@pytest.mark.parametrize(("name", "problem"), BAD_NAMES)
def test_wheel_member_with_a_bad_name_is_refused(tmp_path: Path, name: str, problem: str
                                                 ) -> None:
    data = RawZip(wheel_members(Member(name.encode(), b"pwned"))).build()
    assert refused(tmp_path, WHEEL, data) == f"{WHEEL}: member {name!r} {problem}{HINT}"


@pytest.mark.parametrize("name", [f"/{INFO}/METADATA", f"../{INFO}/METADATA"])
def test_metadata_outside_the_root_is_refused_for_its_name(tmp_path: Path, name: str) -> None:
    data = RawZip([Member(name.encode(), META)]).build()
    assert refused(tmp_path, WHEEL, data).startswith(f"{WHEEL}: member {name!r} ")


@pytest.mark.parametrize(("name", "problem"), BAD_NAMES[:6])
def test_zip_sdist_member_with_a_bad_name_is_refused(tmp_path: Path, name: str, problem: str
                                                     ) -> None:
    data = RawZip([Member(f"{TOP}/PKG-INFO".encode(), META), Member(name.encode())]).build()
    assert refused(tmp_path, ZIP_SDIST, data) == f"{ZIP_SDIST}: member {name!r} {problem}{HINT}"


NAME_PARTS = st.lists(st.sampled_from(["a", "b", ".", "..", "", "C:", "c:d", "\\", "\x00",
                                       "é", " ", "~"]), max_size=6)


@deterministic
@given(NAME_PARTS, st.booleans())
def test_accepted_names_are_normal_relative_paths_on_every_os(parts: list[str], folder: bool
                                                              ) -> None:
    name = "/".join(parts) + ("/" if folder and parts else "")
    if path_problem(name) is not None:
        return
    plain = name.removesuffix("/")
    assert posixpath.normpath(plain) == plain  # no '.', '..' or '//' to resolve
    assert not plain.startswith("../") and plain != ".."
    assert not ntpath.isabs(plain) and not ntpath.splitdrive(plain)[0]
    assert ntpath.normpath(plain) == plain.replace("/", "\\")  # the same path on Windows


@deterministic
@given(st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                      blacklist_characters="/\\:\x7f"), min_size=1)
                .filter(lambda part: part not in (".", "..")), min_size=1, max_size=5))
def test_plain_names_are_accepted(parts: list[str]) -> None:
    assert path_problem("/".join(parts)) is None
    assert path_problem("/".join(parts) + "/") is None


def test_name_flagged_utf8_that_is_not_is_refused(tmp_path: Path) -> None:
    data = RawZip(wheel_members(Member(b"demo_pkg/\xff.py", flags=0x0800))).build()
    assert refused(tmp_path, WHEEL, data) == structure_reason(
        "member b'demo_pkg/\\xff.py' is flagged UTF-8 but is not")


# -- duplicate names -----------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [
    ("demo_pkg/__init__.py", "demo_pkg/__init__.py"),
    ("demo_pkg/x", "demo_pkg/x/"),  # a file and a folder of one name
])
def test_duplicate_member_names_are_refused(tmp_path: Path, first: str, second: str) -> None:
    members = [Member(f"{INFO}/METADATA".encode(), META), Member(first.encode(), b"good"),
               Member(second.encode(), b"" if second.endswith("/") else b"evil")]
    assert refused(tmp_path, WHEEL, RawZip(members).build()) == zip_reason(
        second, "appears more than once")


def test_names_differing_only_in_double_slashes_are_refused(tmp_path: Path) -> None:
    data = RawZip(wheel_members(Member(b"demo_pkg//__init__.py", b"evil"))).build()
    assert refused(tmp_path, WHEEL, data) == (
        f"{WHEEL}: member 'demo_pkg//__init__.py' has an empty segment ('//'){HINT}")


def test_duplicate_pkg_info_in_a_zip_sdist_is_refused(tmp_path: Path) -> None:
    members = [Member(f"{TOP}/PKG-INFO".encode(), META), Member(f"{TOP}/PKG-INFO".encode(), META)]
    assert refused(tmp_path, ZIP_SDIST, RawZip(members).build()) == (
        f"{ZIP_SDIST}: member '{TOP}/PKG-INFO' appears more than once.")


# -- local headers against the central directory --------------------------------


@pytest.mark.parametrize(("lie", "problem"), [
    (dict(local_name=b"demo_pkg/__evil__.py"), "has another name in its local header"),
    (dict(local_method=8), "has another compression method in its local header"),
    (dict(local_size=4), "has another CRC or size in its local header"),
    (dict(local_crc=0x12345678), "has another CRC or size in its local header"),
])
def test_local_header_that_disagrees_is_refused(tmp_path: Path, lie: dict[str, Any],
                                                problem: str) -> None:
    data = RawZip([Member(f"{INFO}/METADATA".encode(), META),
                   Member(b"demo_pkg/__init__.py", b"VALUE = 1\n", **lie)]).build()
    assert refused(tmp_path, WHEEL, data) == zip_reason("demo_pkg/__init__.py", problem)


def test_local_header_with_other_flags_is_refused(tmp_path: Path) -> None:
    data = bytearray(RawZip(wheel_members()).build())
    data[6] |= 0x08  # the first local header now announces a data descriptor
    assert refused(tmp_path, WHEEL, bytes(data)) == zip_reason(
        f"{INFO}/METADATA", "has other flags in its local header")


def test_data_descriptor_that_disagrees_is_refused(tmp_path: Path) -> None:
    data = bytearray(zipfile_variant("data descriptors"))
    at = data.find(b"PK\x07\x08")
    data[at + 4] ^= 0xFF  # its CRC
    assert refused(tmp_path, WHEEL, bytes(data)) == zip_reason(
        f"{INFO}/METADATA", "has another CRC or size in its data descriptor")


def test_entry_pointing_at_no_local_header_is_refused(tmp_path: Path) -> None:
    zip_ = RawZip(wheel_members())
    data = bytearray(zip_.build())
    data[zip_.offsets[1]:zip_.offsets[1] + 4] = b"XXXX"
    assert refused(tmp_path, WHEEL, bytes(data)) == zip_reason(
        "demo_pkg/__init__.py", "points at no local file header")


def test_member_only_in_the_local_headers_is_refused(tmp_path: Path) -> None:
    """A streaming unzip would install it; zipfile and pip would not see it."""
    members = wheel_members()
    members.insert(1, Member(b"demo_pkg/hidden.py", b"import os\n", listed=False))
    zip_ = RawZip(members)
    data = zip_.build()
    assert [i.filename for i in zipfile.ZipFile(io.BytesIO(data)).infolist()] == [
        f"{INFO}/METADATA", "demo_pkg/__init__.py"]
    assert refused(tmp_path, WHEEL, data) == zip_reason(
        "demo_pkg/hidden.py",
        f"is hidden: its local header at byte {zip_.offsets[1]} is not in the central directory")


def test_local_header_hidden_before_the_first_entry_is_refused(tmp_path: Path) -> None:
    hidden = RawZip([Member(b"evil.py", b"x")]).build()
    data = RawZip(wheel_members(), prefix=hidden[:hidden.find(b"PK\x01\x02")]).build()
    assert refused(tmp_path, WHEEL, data) == zip_reason(
        "evil.py", "is hidden: its local header at byte 0 is not in the central directory")


def test_second_archive_in_the_comment_is_refused(tmp_path: Path) -> None:
    inner = RawZip([Member(b"evil.py", b"x")]).build()
    data = RawZip(wheel_members(), comment=inner[:-EOCD.size]).build()
    assert refused(tmp_path, WHEEL, data).startswith(f"{WHEEL}: member 'evil.py' is hidden")


def test_stored_member_with_a_data_descriptor_is_accepted(tmp_path: Path) -> None:
    data = RawZip(wheel_members(Member(b"demo_pkg/x.py", b"plain", flags=0x08,
                                       descriptor=True))).build()
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


def deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize("method", [0, 8])
def test_member_hidden_inside_data_sized_only_by_its_descriptor_is_refused(
        tmp_path: Path, method: int) -> None:
    """A streaming unzip ends the data early (deflate end, or the first descriptor
    signature), reads a descriptor, then the hidden local header after it."""
    hidden = RawZip([Member(b"evil.pth", b"import os")]).build()
    hidden = hidden[:hidden.find(b"PK\x01\x02")]
    fake_descriptor = struct.pack("<4s3L", b"PK\x07\x08", 0, 1, 1)
    body = (deflated(b"x") if method else b"x") + fake_descriptor + hidden
    data = RawZip(wheel_members(Member(b"demo_pkg/x.py", body, flags=0x08, method=method,
                                       descriptor=True))).build()
    assert refused(tmp_path, WHEEL, data) == zip_reason(
        "demo_pkg/x.py", "has a data descriptor and a zip record signature inside its data, "
        "where a streaming unzip could stop")


# -- overlapping entries (zip bombs, quines) ----------------------------------------


def test_two_entries_sharing_one_local_header_are_refused(tmp_path: Path) -> None:
    zip_ = RawZip(wheel_members())
    zip_.build()
    init = Member(b"demo_pkg/__init__.py")
    zip_.central_extra = [central_record(init.name, init.data, zip_.offsets[1])]
    data = zip_.build()
    assert refused(tmp_path, WHEEL, data) == zip_reason(
        "demo_pkg/__init__.py", "overlaps 'demo_pkg/__init__.py'")


def test_entry_whose_data_holds_another_entry_is_refused(tmp_path: Path) -> None:
    """The overlapping-entry bomb: one kernel of data, reached through many entries."""
    kernel = RawZip([Member(b"demo_pkg/b.py", b"0" * 1000)]).build()
    inner = kernel[:kernel.find(b"PK\x01\x02")]  # b.py's local header and data
    outer = Member(b"demo_pkg/a.py", inner)
    zip_ = RawZip([Member(f"{INFO}/METADATA".encode(), META), outer])
    zip_.build()
    b_offset = zip_.offsets[1] + LOCAL.size + len(outer.name)
    zip_.central_extra = [central_record(b"demo_pkg/b.py", b"0" * 1000, b_offset)]
    assert refused(tmp_path, WHEEL, zip_.build()) == zip_reason(
        "demo_pkg/b.py", "overlaps 'demo_pkg/a.py'")


def test_entry_running_into_the_central_directory_is_refused(tmp_path: Path) -> None:
    data = bytearray(RawZip(wheel_members(Member(b"demo_pkg/x.py", b"x" * 10))).build())
    for at in (data.rfind(b"PK\x03\x04") + 18, data.rfind(b"PK\x01\x02") + 20):
        data[at:at + 8] = struct.pack("<LL", 200, 200)  # both headers: 200 bytes of data
    assert refused(tmp_path, WHEEL, bytes(data)) == zip_reason(
        "demo_pkg/x.py", "runs into the central directory")


def test_entry_whose_local_header_is_in_the_central_directory_is_refused(tmp_path: Path
                                                                          ) -> None:
    zip_ = RawZip(wheel_members())
    data = zip_.build()
    cd_offset = data.find(b"PK\x01\x02")
    zip_.central_extra = [central_record(b"demo_pkg/ghost.py", b"", cd_offset)]
    assert refused(tmp_path, WHEEL, zip_.build()) == zip_reason(
        "demo_pkg/ghost.py", "has its local header inside the central directory")


# -- the end record, before zipfile indexes anything ---------------------------------


@pytest.fixture
def zipfile_never_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: zipfile.ZipFile) -> None:
        raise AssertionError("zipfile indexed the central directory")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", fail)


def peak_memory(path: Path) -> tuple[str | None, int]:
    """The refusal reason (None if accepted) and peak Python memory of reading *path*."""
    tracemalloc.start()
    try:
        read_core_metadata(path, parse_filename(path.name))
        reason = None
    except BadUpload as error:
        reason = error.reason
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return reason, peak


@pytest.mark.usefixtures("zipfile_never_indexes")
def test_end_record_claiming_a_million_entries_is_refused_in_flat_memory(tmp_path: Path
                                                                         ) -> None:
    data = with_zip64_end(RawZip(wheel_members()).build(), entries=1_000_000)
    path = tmp_path / WHEEL
    path.write_bytes(data)
    reason, peak = peak_memory(path)
    assert reason == f"{WHEEL} has more than {MAX_MEMBERS} members."
    assert peak < 1 << 20


@pytest.mark.usefixtures("zipfile_never_indexes")
def test_classic_end_record_count_is_checked_before_indexing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 1000)
    data = RawZip(wheel_members(), count=0xFFFF).build()
    assert refused(tmp_path, WHEEL, data) == f"{WHEEL} has more than 1000 members."


@pytest.mark.usefixtures("zipfile_never_indexes")
def test_wheel_with_more_entries_than_the_limit_is_refused_in_flat_memory(tmp_path: Path
                                                                          ) -> None:
    """The reported case: the directory really holds the entries, far more than we index."""
    count = MAX_MEMBERS + 20_000
    locals_, central = [], []
    offset = 0
    for i in range(count):
        name = b"m%06d" % i
        locals_.append(LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0)
                       + name)
        central.append(central_record(name, b"", offset))
        offset += LOCAL.size + len(name)
    cd = b"".join(central)
    path = tmp_path / WHEEL
    with path.open("wb") as out:
        out.write(b"".join(locals_))
        out.write(cd)
        out.write(EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(cd), offset, 0))
    path.write_bytes(with_zip64_end(path.read_bytes(), entries=count))
    reason, peak = peak_memory(path)
    assert reason == f"{WHEEL} has more than {MAX_MEMBERS} members."
    assert peak < 1 << 20  # zipfile would index all 120,000 entries first: ~40 MB


@pytest.mark.parametrize(("data", "problem"), [
    (RawZip(wheel_members(), count=1).build(),
     "its central directory holds more than the 1 entries declared"),
    (RawZip(wheel_members(), count=10).build(),
     "its central directory is too small for 10 entries"),
    (RawZip(wheel_members(), count=3).build(),
     "its central directory holds 2 entries in 143 bytes; the end record declares 3 in 143"),
    (b"junk" + RawZip(wheel_members()).build(),
     "its central directory does not end where the end record begins (data prepended, or a "
     "wrong size or offset)"),
    (RawZip(wheel_members()).build() + b"trailing",
     "its end record's comment length does not match the file size"),
    (with_zip64_end(RawZip(wheel_members()).build(), entries=3, saturate=False),
     "its zip64 end record disagrees with the end record"),
    (with_zip64_end(RawZip(wheel_members()).build(), locator_offset=0),
     "its zip64 locator does not point just before itself"),
    (with_zip64_end(RawZip(wheel_members()).build(), signature=b"PK\x00\x00"),
     "its zip64 locator points at no plain zip64 end record"),
    (with_zip64_end(RawZip(wheel_members()).build(), disks=3), "it spans several disks"),
])
def test_inconsistent_end_records_are_refused(tmp_path: Path, data: bytes, problem: str
                                              ) -> None:
    assert refused(tmp_path, WHEEL, data) == structure_reason(problem)


def test_prepended_data_that_zipfile_would_skip_is_refused(tmp_path: Path) -> None:
    data = b"junk" + RawZip(wheel_members()).build()
    assert zipfile.ZipFile(io.BytesIO(data)).read(f"{INFO}/METADATA") == META  # zipfile shifts
    assert "does not end where the end record begins" in refused(tmp_path, WHEEL, data)


# -- extra fields --------------------------------------------------------------


def unicode_path(name: bytes, target: str) -> bytes:
    body = b"\x01" + struct.pack("<L", zlib.crc32(name)) + target.encode()
    return struct.pack("<HH", 0x7075, len(body)) + body


def test_unicode_path_extra_naming_another_file_is_refused(tmp_path: Path) -> None:
    name = b"demo_pkg/data.txt"
    data = RawZip(wheel_members(Member(name, extra=unicode_path(name, "../../evil")))).build()
    assert refused(tmp_path, WHEEL, data) == zip_reason(
        "demo_pkg/data.txt", "has a Unicode Path extra field naming another file")


def test_unicode_path_extra_naming_the_same_file_is_accepted(tmp_path: Path) -> None:
    name = b"demo_pkg/data.txt"
    data = RawZip(wheel_members(Member(name, extra=unicode_path(name, name.decode())))).build()
    assert read(tmp_path, WHEEL, data).name == "demo-pkg"


def test_repeated_zip64_extra_is_refused(tmp_path: Path) -> None:
    zip64 = struct.pack("<HHQ", 1, 8, 0)
    data = RawZip(wheel_members(Member(b"demo_pkg/x.py", extra=zip64 + zip64))).build()
    assert refused(tmp_path, WHEEL, data) == zip_reason("demo_pkg/x.py",
                                                        "repeats extra field 0x0001")


# -- RECORD ------------------------------------------------------------------------


def wheel_with_record(record: bytes) -> bytes:
    return RawZip(wheel_members(Member(f"{INFO}/RECORD".encode(), record))).build()


@pytest.mark.parametrize(("path", "problem"), [
    ("../../../bin/evil", "has a '..' segment"),
    ("/usr/lib/python3/evil.py", "is an absolute path"),
    ("C:/Windows/evil.dll", "starts with a drive letter"),
    ("demo_pkg\\..\\..\\evil.py", "contains a backslash"),
    ("demo_pkg/a,b/../../../evil.py", "has a '..' segment"),  # quoted: a comma in the path
])
def test_record_path_escaping_the_root_is_refused(tmp_path: Path, path: str, problem: str
                                                  ) -> None:
    quoted = f'"{path}"' if "," in path else path
    record = f"demo_pkg/__init__.py,,\n{quoted},sha256=abc,5\n{INFO}/RECORD,,\n".encode()
    assert refused(tmp_path, WHEEL, wheel_with_record(record)) == (
        f"{WHEEL}: {INFO}/RECORD path {path!r} {problem}{HINT}")


def test_record_of_the_test_helpers_and_a_missing_record_are_accepted(tmp_path: Path) -> None:
    assert zipfile.ZipFile(io.BytesIO(wheel_bytes("demo-pkg", "1.0"))).getinfo(f"{INFO}/RECORD")
    assert read(tmp_path, WHEEL, wheel_bytes("demo-pkg", "1.0")).name == "demo-pkg"
    assert read(tmp_path, WHEEL, RawZip(wheel_members()).build()).name == "demo-pkg"


def test_record_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    record = "demo_pkg/caf\xe9.py,,\n".encode("latin-1")
    assert refused(tmp_path, WHEEL, wheel_with_record(record)) == (
        f"{INFO}/RECORD in {WHEEL} is not valid UTF-8.")


def test_record_larger_than_its_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_RECORD_BYTES", 100_000)
    record = b"".join(b"demo_pkg/m%06d.py,,\n" % i for i in range(10_000))
    assert refused(tmp_path, WHEEL, wheel_with_record(record)) == (
        f"{INFO}/RECORD in {WHEEL} has more than 100000 bytes.")


# -- tar.gz sdists ------------------------------------------------------------------


def tar_member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
               linkname: str = "", pax: dict[str, str] | None = None
               ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mtime = 1_700_000_000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.pax_headers = pax or {}
    return info, data


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes],
              fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def sdist(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tarball with PKG-INFO first, then *members*."""
    return gzip.compress(tar_bytes(tar_member(f"{TOP}/PKG-INFO", META), *members, fmt=fmt))


def tar_reason(member: str, problem: str) -> str:
    return f"{SDIST}: member {member!r} {problem}."


@pytest.mark.parametrize(("name", "problem"), [
    (f"{TOP}/../../etc/x", "has a '..' segment"),
    ("../evil", "has a '..' segment"),
    ("/etc/x", "is an absolute path"),
    (f"{TOP}\\..\\..\\evil", "contains a backslash"),
    ("C:/evil", "starts with a drive letter"),
])
def test_tar_member_escaping_the_tree_is_refused(tmp_path: Path, name: str, problem: str
                                                 ) -> None:
    assert refused(tmp_path, SDIST, sdist(tar_member(name, b"pwned"))) == (
        f"{SDIST}: member {name!r} {problem}{HINT}")


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_and_pax_names_are_checked_too(tmp_path: Path, fmt: int) -> None:
    name = f"{TOP}/{'d' * 120}/../../../evil"  # over 100 bytes: a GNU long name or pax path
    assert refused(tmp_path, SDIST, sdist(tar_member(name), fmt=fmt)) == (
        f"{SDIST}: member {name!r} has a '..' segment{HINT}")


def test_pax_path_overriding_a_harmless_name_is_checked(tmp_path: Path) -> None:
    data = sdist(tar_member(f"{TOP}/harmless", pax={"path": "../../evil"}))
    assert refused(tmp_path, SDIST, data) == (
        f"{SDIST}: member '../../evil' has a '..' segment{HINT}")


@pytest.mark.parametrize(("name", "target", "problem"), [
    (f"{TOP}/x", "../../etc/passwd", "outside the archive's top folder"),
    (f"{TOP}/x", "..", "outside the archive's top folder"),
    (f"{TOP}/sub/x", "../../other-1.0/y", "outside the archive's top folder"),
    ("x", "../etc", "outside the archive's top folder"),
    (f"{TOP}/x", "/etc/passwd", "which is an absolute path"),
    (f"{TOP}/PKG-INFO", "/etc/passwd", "which is an absolute path"),
    (f"{TOP}/x", "C:/Windows", "which starts with a drive letter"),
    (f"{TOP}/x", "..\\..\\etc", "which contains a backslash"),
    (f"{TOP}/x", "", "which is empty"),
])
def test_symlink_out_of_the_tree_is_refused(tmp_path: Path, name: str, target: str,
                                            problem: str) -> None:
    members = [tar_member(name, kind=tarfile.SYMTYPE, linkname=target)]
    if name == f"{TOP}/PKG-INFO":
        data = gzip.compress(tar_bytes(tar_member(f"{TOP}/setup.py", META), *members))
    else:
        data = sdist(*members)
    assert refused(tmp_path, SDIST, data) == tar_reason(name, f"links to {target!r}, {problem}")


def test_symlink_escaping_through_another_symlink_is_refused(tmp_path: Path) -> None:
    """Lexically 'up/..' is TOP/d, but 'up' is TOP, so '..' leaves it."""
    data = sdist(tar_member(f"{TOP}/d/up", kind=tarfile.SYMTYPE, linkname=".."),
                 tar_member(f"{TOP}/e", kind=tarfile.SYMTYPE, linkname="d/up/.."))
    assert refused(tmp_path, SDIST, data) == tar_reason(
        f"{TOP}/e", "links to 'd/up/..', outside the archive's top folder")


def test_symlink_in_a_symlinked_folder_is_resolved_from_where_it_lands(tmp_path: Path
                                                                       ) -> None:
    # The link comes first: an order-independent check, not one at extraction time.
    data = sdist(tar_member(f"{TOP}/s/l", kind=tarfile.SYMTYPE, linkname="../x"),
                 tar_member(f"{TOP}/s", kind=tarfile.SYMTYPE, linkname="."))
    assert refused(tmp_path, SDIST, data) == tar_reason(
        f"{TOP}/s/l", "links to '../x', outside the archive's top folder")


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    data = sdist(tar_member(f"{TOP}/a", kind=tarfile.SYMTYPE, linkname="b"),
                 tar_member(f"{TOP}/b", kind=tarfile.SYMTYPE, linkname="a"))
    assert refused(tmp_path, SDIST, data) == tar_reason(
        f"{TOP}/a", "links to 'b', through too many symlinks")


def test_symlinks_inside_the_tree_are_accepted(tmp_path: Path) -> None:
    data = sdist(tar_member(f"{TOP}/README.md", b"# demo\n"),
                 tar_member(f"{TOP}/docs", kind=tarfile.DIRTYPE),
                 tar_member(f"{TOP}/docs/README.md", kind=tarfile.SYMTYPE,
                            linkname="../README.md"),
                 tar_member(f"{TOP}/here", kind=tarfile.SYMTYPE, linkname="./docs/../docs"),
                 tar_member(f"{TOP}/chain", kind=tarfile.SYMTYPE, linkname="here/README.md"),
                 tar_member(f"{TOP}/hard", kind=tarfile.LNKTYPE, linkname=f"{TOP}/README.md"))
    assert read(tmp_path, SDIST, data).name == "demo-pkg"


@pytest.mark.parametrize(("target", "problem"), [
    ("/etc/passwd", "is an absolute path"),
    ("../../etc/passwd", "has a '..' segment"),
    (f"{TOP}/../../etc/passwd", "has a '..' segment"),
])
def test_hard_link_out_of_the_tree_is_refused(tmp_path: Path, target: str, problem: str
                                              ) -> None:
    data = sdist(tar_member(f"{TOP}/x", kind=tarfile.LNKTYPE, linkname=target))
    assert refused(tmp_path, SDIST, data) == (
        f"{SDIST}: hard link '{TOP}/x' to {target!r} {problem}{HINT}")


def test_hard_link_to_a_symlink_counts_as_that_symlink_where_it_lands(tmp_path: Path) -> None:
    """GNU tar links the symlink itself: TOP/h becomes '../..', which from TOP leaves it."""
    data = sdist(tar_member(f"{TOP}/a/b/s", kind=tarfile.SYMTYPE, linkname="../.."),
                 tar_member(f"{TOP}/h", kind=tarfile.LNKTYPE, linkname=f"{TOP}/a/b/s"))
    assert refused(tmp_path, SDIST, data) == tar_reason(
        f"{TOP}/h", "links to '../..', outside the archive's top folder")


@pytest.mark.parametrize(("kind", "problem"), [
    (tarfile.FIFOTYPE, "is a FIFO"),
    (tarfile.CHRTYPE, "is a device node"),
    (tarfile.BLKTYPE, "is a device node"),
    (b"Z", "is not a file, folder or link"),  # unknown: tarfile would unpack it as a file
])
def test_special_files_are_refused(tmp_path: Path, kind: bytes, problem: str) -> None:
    data = sdist(tar_member(f"{TOP}/dev", kind=kind))
    assert refused(tmp_path, SDIST, data) == tar_reason(f"{TOP}/dev", problem)


@pytest.mark.parametrize(("second", "kind"), [
    (f"{TOP}/PKG-INFO", tarfile.REGTYPE),  # identical: still two
    ("other-2.0/PKG-INFO", tarfile.REGTYPE),
    (f"{TOP}/PKG-INFO", tarfile.SYMTYPE),  # tar x would keep the link
])
def test_two_top_level_pkg_info_files_are_refused(tmp_path: Path, second: str, kind: bytes
                                                  ) -> None:
    linkname = "setup.py" if kind == tarfile.SYMTYPE else ""
    data = sdist(tar_member(second, META, kind=kind, linkname=linkname))
    assert refused(tmp_path, SDIST, data) == (
        f"{SDIST} has two top-level PKG-INFO files: '{TOP}/PKG-INFO' and {second!r}.")


@pytest.mark.parametrize("how", ["second tar", "second gzip member", "garbage block"])
def test_data_after_the_end_of_the_tar_is_refused(tmp_path: Path, how: str) -> None:
    good = tar_bytes(tar_member(f"{TOP}/PKG-INFO", META))
    evil = tar_bytes(tar_member("../../evil", b"pwned"))
    if how == "second tar":  # what tar --ignore-zeros would also unpack
        data = gzip.compress(good + evil)
    elif how == "second gzip member":
        data = gzip.compress(good) + gzip.compress(evil)
    else:
        # tarfile ends at a damaged header; GNU tar skips it and unpacks what follows.
        data = gzip.compress(good[:1024] + b"\xff" * 512 + evil)
    assert refused(tmp_path, SDIST, data) == f"{SDIST} has data after the end of its tar archive."


def test_tar_decompressing_past_the_scan_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_TAR_SCAN_BYTES", 100_000)
    data = sdist(tar_member(f"{TOP}/zeros", bytes(200_000)))
    assert refused(tmp_path, SDIST, data) == f"{SDIST} decompresses to more than 100000 bytes."


def test_members_after_pkg_info_are_checked_too(tmp_path: Path) -> None:
    """PKG-INFO comes first in real sdists: a scan that stopped there would miss the rest."""
    many = [tar_member(f"{TOP}/m{i}.py", b"x") for i in range(50)]
    data = sdist(*many, tar_member(f"{TOP}/evil", kind=tarfile.SYMTYPE, linkname="/etc"))
    assert refused(tmp_path, SDIST, data).startswith(f"{SDIST}: member '{TOP}/evil' links to")


def test_tar_scan_memory_does_not_grow_with_the_member_count(tmp_path: Path) -> None:
    members = [tar_member(f"{TOP}/pkg/module_{i:05d}.py") for i in range(20_000)]
    path = tmp_path / SDIST
    path.write_bytes(sdist(*members))
    reason, peak = peak_memory(path)
    assert reason is None
    assert peak < 1 << 20


# -- through the upload API -----------------------------------------------------------


async def upload(registry: Any, filename: str, content: bytes) -> Any:
    project = await create_project(registry.db, "acme")
    _, token = await create_token(registry.db, project.id, "write")
    ctype, body = upload_form("demo-pkg", "1.0", filename, content)
    return await treq.post(registry.api(project.id), data=body, auth=("__token__", token),
                           headers={b"Content-Type": [ctype]})


@pytest_twisted.ensureDeferred
async def test_upload_of_a_wheel_with_a_traversal_member_is_a_400_naming_it(registry: Any
                                                                            ) -> None:
    data = RawZip(wheel_members(Member(b"../../evil.pth", b"import os"))).build()
    resp = await upload(registry, WHEEL, data)
    text = await resp.text()
    assert resp.code == 400
    assert text.strip() == f"{WHEEL}: member '../../evil.pth' has a '..' segment{HINT}"
    assert b"'../../evil.pth' has a '..' segment" in resp.phrase  # what twine prints
    assert registry.stored_files() == []


@pytest_twisted.ensureDeferred
async def test_upload_of_an_sdist_with_an_escaping_symlink_is_a_400_naming_it(registry: Any
                                                                              ) -> None:
    data = sdist(tar_member(f"{TOP}/x", kind=tarfile.SYMTYPE, linkname="../../etc/passwd"))
    resp = await upload(registry, SDIST, data)
    assert resp.code == 400
    assert (await resp.text()).strip() == tar_reason(
        f"{TOP}/x", "links to '../../etc/passwd', outside the archive's top folder")
    assert registry.stored_files() == []
