"""The structure of an uploaded zip, checked before zipfile trusts it.

Blocking file work over a binary file object (a worker thread, never the
reactor). `check_zip_structure` reads the end-of-central-directory record
itself, from the last 64 KiB + 22 bytes, so the declared entry count is
refused before `zipfile.ZipFile` indexes a single entry; then it walks the
central directory with small reads and checks every entry against its
local header. Memory is bounded by the entry limit, never by what the
archive claims.

Different unzip tools read a zip differently: `zipfile` and pip trust the
central directory, streaming readers walk the local headers from the
start, and scanners may do either. So every byte range is accounted for:

- the end record is found the way `zipfile` finds it, and the central
  directory must end exactly where the zip64 end record (or the end record)
  begins, so `zipfile` never shifts offsets for "prepended data";
- each entry's span (local header, name, extra field, compressed data and
  data descriptor) must agree with its central-directory record (name,
  flags, method, CRC and sizes) and must not overlap another span or the
  central directory, which refuses overlapping-entry bombs and quines;
- the bytes no span covers (data before the first entry, gaps, the archive
  comment) may hold anything except a zip record signature, so a member
  visible only to a local-header walker is refused (see below), and so is a
  second central directory or end record (two archives in one file);
- a local-header walker skips each entry by the sizes its local header
  gives, which must equal the central directory's, so it lands on the next
  span or in a gap. The exception is an entry whose sizes only its data
  descriptor gives: there the walker stops where the deflate stream (or,
  for stored data, the first descriptor signature) ends, so that entry's
  data may not hold a local header or descriptor signature.

Member names are checked by the archive readers with `member_paths`.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import BinaryIO

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end record, without extensible data
_EOCD64_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIG = b"PK\x03\x04"
_DESCRIPTOR_SIG = b"PK\x07\x08"
# Every record a zip reader may look for; none may hide in uncovered bytes.
_RECORD_SIGNATURES = {
    _LOCAL_SIG: "local file header", _CENTRAL_SIG: "central directory header",
    _EOCD_SIG: "end of central directory record", _EOCD64_SIG: "zip64 end record",
    _LOCATOR_SIG: "zip64 end record locator", _DESCRIPTOR_SIG: "data descriptor",
}
_MAX_COMMENT = 0xFFFF
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_ZIP64_EXTRA = 0x0001
_UNICODE_PATH_EXTRA = 0x7075
_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
# Flags that change how a reader finds or names the data: local and central must agree.
_FLAGS_THAT_MATTER = _FLAG_ENCRYPTED | _FLAG_DESCRIPTOR | _FLAG_UTF8
_SCAN_CHUNK = 64 * 1024
class ZipStructureError(Exception):
    """The zip is malformed or ambiguous; *member* names the entry when there is one."""

    def __init__(self, problem: str, member: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.member = member


class TooManyEntries(ZipStructureError):
    """The end record declares more entries than we index."""


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One central-directory record, with zip64 values resolved."""

    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    file_size: int
    header_offset: int


@dataclass(frozen=True, slots=True)
class _End:
    entries: int
    cd_offset: int
    cd_size: int
    cd_end: int  # where the zip64 end record, or the end record, begins
    eocd_offset: int


def check_zip_structure(fileobj: BinaryIO, max_entries: int) -> list[ZipEntry]:
    """Check the whole structure of the zip in *fileobj*; return its entries in directory order.

    Raises:
        TooManyEntries: more than *max_entries* declared (nothing was indexed).
        ZipStructureError: anything malformed, ambiguous or overlapping.
    """
    size = fileobj.seek(0, 2)
    end = _read_end(fileobj, size, max_entries)
    entries = _read_central_directory(fileobj, end)
    covered: list[tuple[int, int, str]] = []
    for entry in sorted(entries, key=lambda e: e.header_offset):
        covered.append((entry.header_offset, _check_local(fileobj, entry, end.cd_offset),
                        entry.name))
    covered.append((end.cd_offset, end.eocd_offset + _EOCD.size, ""))
    _check_spans(fileobj, covered, size)
    return entries


def _read_end(fileobj: BinaryIO, size: int, max_entries: int) -> _End:
    if size < _EOCD.size:
        raise ZipStructureError("it is too short")
    tail_start = max(0, size - _MAX_COMMENT - _EOCD.size)
    fileobj.seek(tail_start)
    tail = fileobj.read(size - tail_start)
    # The same search as zipfile's _EndRecData, so we judge the record it will use.
    if tail[-_EOCD.size:-_EOCD.size + 4] == _EOCD_SIG and tail[-2:] == b"\0\0":
        at = len(tail) - _EOCD.size
    else:
        at = tail.rfind(_EOCD_SIG)
    if at < 0 or at + _EOCD.size > len(tail):
        raise ZipStructureError("it has no end of central directory record")
    (_, disk, cd_disk, disk_entries, entries, cd_size, cd_offset,
     comment_length) = _EOCD.unpack_from(tail, at)
    if at + _EOCD.size + comment_length != len(tail):
        raise ZipStructureError("its end record's comment length does not match the file size")
    eocd_offset = tail_start + at
    cd_end = eocd_offset
    if (disk, cd_disk) != (0, 0) or disk_entries != entries:
        raise ZipStructureError("it spans several disks")
    if eocd_offset >= _LOCATOR.size:
        fileobj.seek(eocd_offset - _LOCATOR.size)
        sig, locator_disk, eocd64_offset, disks = _LOCATOR.unpack(fileobj.read(_LOCATOR.size))
        if sig == _LOCATOR_SIG:  # where zipfile looks for it
            cd_end = eocd_offset - _LOCATOR.size - _EOCD64.size
            if locator_disk != 0 or disks > 1:
                raise ZipStructureError("it spans several disks")
            if eocd64_offset != cd_end or cd_end < 0:
                raise ZipStructureError("its zip64 locator does not point just before itself")
            fileobj.seek(cd_end)
            (sig, record_size, _, _, disk64, cd_disk64, disk_entries64, entries64, cd_size64,
             cd_offset64) = _EOCD64.unpack(fileobj.read(_EOCD64.size))
            if sig != _EOCD64_SIG or record_size != _EOCD64.size - 12:
                raise ZipStructureError("its zip64 locator points at no plain zip64 end record")
            if (disk64, cd_disk64) != (0, 0) or disk_entries64 != entries64:
                raise ZipStructureError("it spans several disks")
            # zipfile takes the zip64 values; the classic ones must agree or be saturated.
            for classic, wide, full in ((entries, entries64, _U16), (cd_size, cd_size64, _U32),
                                        (cd_offset, cd_offset64, _U32)):
                if classic not in (wide, full):
                    raise ZipStructureError("its zip64 end record disagrees with the end record")
            entries, cd_size, cd_offset = entries64, cd_size64, cd_offset64
    if entries > max_entries:
        raise TooManyEntries(f"declares {entries} entries")
    if cd_offset + cd_size != cd_end:
        raise ZipStructureError(
            "its central directory does not end where the end record begins "
            "(data prepended, or a wrong size or offset)")
    if cd_size < entries * _CENTRAL.size:
        raise ZipStructureError(f"its central directory is too small for {entries} entries")
    return _End(entries, cd_offset, cd_size, cd_end, eocd_offset)


def _read_central_directory(fileobj: BinaryIO, end: _End) -> list[ZipEntry]:
    fileobj.seek(end.cd_offset)
    entries: list[ZipEntry] = []
    consumed = 0
    while consumed < end.cd_size:
        if len(entries) == end.entries:
            raise ZipStructureError(
                f"its central directory holds more than the {end.entries} entries declared")
        fixed = fileobj.read(_CENTRAL.size)
        if len(fixed) != _CENTRAL.size:
            raise ZipStructureError("its central directory is truncated")
        (sig, _, _, _, _, flags, method, _, _, crc, compressed_size, file_size, name_length,
         extra_length, comment_length, disk, _, _, header_offset) = _CENTRAL.unpack(fixed)
        if sig != _CENTRAL_SIG:
            raise ZipStructureError("its central directory has a bad record signature")
        raw_name = fileobj.read(name_length)
        extra = fileobj.read(extra_length)
        fileobj.seek(comment_length, 1)
        consumed += _CENTRAL.size + name_length + extra_length + comment_length
        name = _decode_name(raw_name, flags)
        fields = _extra_fields(extra, name)
        # zip64 values appear in this order, each only when its classic field is full.
        wide = fields.get(_ZIP64_EXTRA, b"")
        values = []
        for classic, full in ((file_size, _U32), (compressed_size, _U32),
                              (header_offset, _U32), (disk, _U16)):
            if classic == full:
                if len(wide) < (8 if full == _U32 else 4):
                    raise ZipStructureError("has a short zip64 extra field", name)
                width = 8 if full == _U32 else 4
                classic = int.from_bytes(wide[:width], "little")
                wide = wide[width:]
            values.append(classic)
        file_size, compressed_size, header_offset, disk = values
        if disk != 0:
            raise ZipStructureError("lives on another disk", name)
        _check_unicode_path(fields, raw_name, name)
        entries.append(ZipEntry(name, raw_name, flags, method, crc, compressed_size,
                                file_size, header_offset))
    if consumed != end.cd_size or len(entries) != end.entries:
        raise ZipStructureError(
            f"its central directory holds {len(entries)} entries in {consumed} bytes; "
            f"the end record declares {end.entries} in {end.cd_size}")
    return entries


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & _FLAG_UTF8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ZipStructureError(f"member {raw!r} is flagged UTF-8 but is not") from None
    return raw.decode("cp437")  # as zipfile does without the flag


def _extra_fields(extra: bytes, name: str) -> dict[int, bytes]:
    """Split an extra field; refuse malformed ones and repeated ids readers disagree on."""
    fields: dict[int, bytes] = {}
    at = 0
    while at + 4 <= len(extra):  # zipfile ignores up to 3 trailing bytes (padding)
        field_id, length = struct.unpack_from("<HH", extra, at)
        if at + 4 + length > len(extra):
            raise ZipStructureError("has a corrupt extra field", name)
        if field_id in fields and field_id in (_ZIP64_EXTRA, _UNICODE_PATH_EXTRA):
            raise ZipStructureError(f"repeats extra field {field_id:#06x}", name)
        fields[field_id] = extra[at + 4:at + 4 + length]
        at += 4 + length
    return fields


def _check_unicode_path(fields: dict[int, bytes], raw_name: bytes, name: str) -> None:
    """Info-ZIP's unzip names the file after this field; zipfile ignores it. They must agree."""
    field = fields.get(_UNICODE_PATH_EXTRA)
    if field is not None and field[5:] != name.encode("utf-8"):
        raise ZipStructureError("has a Unicode Path extra field naming another file", name)


def _check_local(fileobj: BinaryIO, entry: ZipEntry, cd_offset: int) -> int:
    """Check *entry*'s local header (and data descriptor); return the end of its span."""
    name = entry.name
    if entry.header_offset + _LOCAL.size > cd_offset:
        raise ZipStructureError("has its local header inside the central directory", name)
    fileobj.seek(entry.header_offset)
    (sig, _, _, flags, method, _, _, crc, compressed_size, file_size, name_length,
     extra_length) = _LOCAL.unpack(fileobj.read(_LOCAL.size))
    if sig != _LOCAL_SIG:
        raise ZipStructureError("points at no local file header", name)
    if fileobj.read(name_length) != entry.raw_name:
        raise ZipStructureError("has another name in its local header", name)
    fields = _extra_fields(fileobj.read(extra_length), name)
    if (flags ^ entry.flags) & _FLAGS_THAT_MATTER:
        raise ZipStructureError("has other flags in its local header", name)
    if method != entry.method:
        raise ZipStructureError("has another compression method in its local header", name)
    wide = fields.get(_ZIP64_EXTRA)
    if wide is not None and (file_size == _U32 or compressed_size == _U32):
        if len(wide) < 16:
            raise ZipStructureError("has a short zip64 extra field", name)
        file_size, compressed_size = struct.unpack_from("<QQ", wide)
    data_end: int = entry.header_offset + _LOCAL.size + name_length + extra_length \
        + entry.compressed_size
    if data_end > cd_offset:
        raise ZipStructureError("runs into the central directory", name)
    if not flags & _FLAG_DESCRIPTOR:
        if (crc, compressed_size, file_size) != (entry.crc, entry.compressed_size,
                                                 entry.file_size):
            raise ZipStructureError("has another CRC or size in its local header", name)
        return data_end
    # Only the central directory knows where this data ends: a streaming reader
    # stops where the deflate stream ends, or (stored) at a descriptor
    # signature, and reads the next local header from there. So the data may
    # hold neither signature (for deflated data a false alarm is a 2**-32
    # chance per byte).
    data_start = data_end - entry.compressed_size
    if _find_signature(fileobj, data_start, data_end, (_LOCAL_SIG, _DESCRIPTOR_SIG)):
        raise ZipStructureError("has a data descriptor and a zip record signature inside "
                                "its data, where a streaming unzip could stop", name)
    # A data descriptor follows the data; its sizes are 8 bytes when the local header is zip64.
    layout = struct.Struct("<LQQ" if wide is not None else "<LLL")
    fileobj.seek(data_end)
    raw = fileobj.read(4 + layout.size)
    skip = 4 if raw[:4] == _DESCRIPTOR_SIG else 0
    if len(raw) < skip + layout.size:
        raise ZipStructureError("has a truncated data descriptor", name)
    if layout.unpack_from(raw, skip) != (entry.crc, entry.compressed_size, entry.file_size):
        raise ZipStructureError("has another CRC or size in its data descriptor", name)
    end: int = data_end + skip + layout.size
    if end > cd_offset:
        raise ZipStructureError("runs into the central directory", name)
    return end


def _check_spans(fileobj: BinaryIO, spans: list[tuple[int, int, str]], size: int) -> None:
    """Refuse overlapping spans and zip records in the bytes between them."""
    spans.sort()
    position = 0
    previous = ""
    for start, stop, name in spans:
        if start < position:
            raise ZipStructureError(
                f"overlaps {previous!r}" if previous else "overlaps another member",
                name or previous)
        _scan_gap(fileobj, position, start)
        position, previous = stop, name
    _scan_gap(fileobj, position, size)  # the archive comment


def _scan_gap(fileobj: BinaryIO, start: int, stop: int) -> None:
    found = _find_signature(fileobj, start, stop, _RECORD_SIGNATURES)
    if found is None:
        return
    where, signature = found
    if signature == _LOCAL_SIG:
        raise ZipStructureError(
            f"is hidden: its local header at byte {where} is not in the central directory",
            _hidden_name(fileobj, where))
    raise ZipStructureError(f"it has a {_RECORD_SIGNATURES[signature]} at byte {where} "
                            "that the central directory does not list")


def _find_signature(fileobj: BinaryIO, start: int, stop: int, signatures: Collection[bytes]
                    ) -> tuple[int, bytes] | None:
    """The offset and value of the first of *signatures* ("PK" + 2 bytes) in [start, stop)."""
    fileobj.seek(start)
    carry = b""  # a signature may straddle two chunks
    offset = start
    while offset < stop:
        chunk = fileobj.read(min(_SCAN_CHUNK, stop - offset))
        if not chunk:
            break
        window = carry + chunk
        at = window.find(b"PK")
        while at >= 0:
            if window[at:at + 4] in signatures:
                return offset - len(carry) + at, window[at:at + 4]
            at = window.find(b"PK", at + 1)
        offset += len(chunk)
        carry = window[-3:]
    return None


def _hidden_name(fileobj: BinaryIO, where: int) -> str:
    """The name in the local header at *where*, for the refusal (at most 200 characters)."""
    fileobj.seek(where)
    header = fileobj.read(_LOCAL.size)
    if len(header) < _LOCAL.size:
        return "?"
    flags, name_length = struct.unpack_from("<H", header, 6)[0], _LOCAL.unpack(header)[10]
    raw = fileobj.read(min(name_length, 200))
    return raw.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
