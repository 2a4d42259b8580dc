"""Reading core metadata out of an uploaded distribution, with bounds and content checks.

Blocking file work: call `read_core_metadata` through the thread pool, never
in the reactor thread. Every read is bounded: the metadata member's declared
and actual size, the number of archive members looked at, and the
decompressed bytes a tarball or RECORD may make us read, so neither a zip
bomb nor a tarball full of junk can tie up a worker for long.

Before the metadata is trusted, the whole archive must be one that every
installer unpacks the same way, inside its target folder. Zips (wheels and
zip sdists): `zip_checks.check_zip_structure` runs before `zipfile`
indexes anything; then every member name, and every path in the wheel's
RECORD, must pass `member_paths.path_problem`, and no name may appear twice.
The path rule leaves one spelling per path (no `//`, `./` or backslashes),
so exact comparison catches `a/b` against `a//b`; names that differ only
in case are allowed, as on the public index. Tarballs: `tar_checks`.
"""

from __future__ import annotations

import codecs
import csv
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from pkginfo import Distribution

from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import DistFilename
from pypireg.domain.metadata import CoreMetadata
from pypireg.ingest.member_paths import is_top_level
from pypireg.ingest.tar_checks import (
    BoundedReader,
    Readable,
    TarLimits,
    check_path,
    tar_sdist_metadata,
)
from pypireg.ingest.zip_checks import TooManyEntries, ZipStructureError, check_zip_structure
from pypireg.storage.blob_backend import Openable

MAX_METADATA_BYTES = 4 * 1024 * 1024
# RECORD is streamed, never held whole; this bounds the time a lying one takes.
MAX_RECORD_BYTES = 64 * 1024 * 1024
MAX_MEMBERS = 100_000
# How much of a tarball we decompress while checking its members; bounds
# the work a gzip bomb can cause.
MAX_TAR_SCAN_BYTES = 512 * 1024 * 1024

_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
               zlib.error, RuntimeError, struct.error)


def read_core_metadata(path: Openable, dist: DistFilename) -> CoreMetadata:
    """Return the core metadata of the distribution stored at *path* (a Path, or any Openable)."""
    if dist.packagetype == "bdist_wheel":
        raw = _wheel_metadata(path, dist.filename)
    elif dist.filename.lower().endswith(".zip"):
        raw = _zip_sdist_metadata(path, dist.filename)
    else:
        # Read at call time: tests lower the limits.
        limits = TarLimits(MAX_MEMBERS, MAX_TAR_SCAN_BYTES, MAX_METADATA_BYTES)
        raw = tar_sdist_metadata(path, dist.filename, limits)
    return _parse(raw, dist.filename)


def _parse(raw: bytes, filename: str) -> CoreMetadata:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadUpload(f"The metadata in {filename} is not valid UTF-8.") from None
    dist = Distribution()
    with warnings.catch_warnings():
        # pkginfo warns about metadata versions newer than it knows; the
        # fields we read exist in all of them.
        warnings.simplefilter("ignore")
        dist.parse(raw)
    if not dist.metadata_version:
        raise BadUpload(f"The metadata in {filename} has no Metadata-Version field.")
    return CoreMetadata(
        metadata_version=dist.metadata_version,
        name=dist.name,
        version=dist.version,
        summary=dist.summary,
        requires_python=dist.requires_python,
        raw=raw,
        description=dist.description,
        description_content_type=dist.description_content_type,
    )


def _bad_archive(filename: str, kind: str, why: str = "") -> BadUpload:
    return BadUpload(f"{filename} is not a valid {kind} archive{': ' if why else ''}{why}.")


def _bad_member(filename: str, member: str, problem: str) -> BadUpload:
    return BadUpload(f"{filename}: member {member!r} {problem}.")


def _check_names(filename: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        check_path(filename, name)
        key = name.removesuffix("/")  # a folder and a file of one name collide on disk
        if key in seen:
            raise _bad_member(filename, name, "appears more than once")
        seen.add(key)


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> bytes:
    if info.file_size > MAX_METADATA_BYTES:
        raise BadUpload(
            f"{info.filename} in {filename} declares {info.file_size} bytes; metadata files "
            f"may have at most {MAX_METADATA_BYTES}."
        )
    with zf.open(info) as member:
        # Read past the declared size to catch archives that lie about it.
        data = member.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise BadUpload(f"{info.filename} in {filename} is larger than it declares.")
    return data


@contextmanager
def _open_zip(path: Openable, filename: str, kind: str) -> Iterator[zipfile.ZipFile]:
    """The checked zip at *path*: structure (before zipfile indexes it), then member names."""
    with path.open("rb") as fileobj:
        try:
            entries = check_zip_structure(fileobj, MAX_MEMBERS)
        except TooManyEntries:
            raise BadUpload(f"{filename} has more than {MAX_MEMBERS} members.") from None
        except ZipStructureError as error:
            if error.member is None:
                raise _bad_archive(filename, kind, error.problem) from None
            raise _bad_member(filename, error.member, error.problem) from None
        except (OSError, struct.error):
            raise _bad_archive(filename, kind) from None
        names = [entry.name for entry in entries]
        _check_names(filename, names)
        try:
            zf = zipfile.ZipFile(fileobj)
        except _ZIP_ERRORS:
            raise _bad_archive(filename, kind) from None
        with zf:
            if [info.orig_filename for info in zf.infolist()] != names:
                # Never expected: zipfile read another directory than we checked.
                raise _bad_archive(filename, kind, "its central directory is ambiguous")
            yield zf


def _wheel_metadata(path: Openable, filename: str) -> bytes:
    with _open_zip(path, filename, "wheel (zip)") as zf:
        candidates = [
            info for info in zf.infolist()
            if is_top_level(info.filename, "METADATA")
            and info.filename.endswith(".dist-info/METADATA")
        ]
        if len(candidates) != 1:
            raise BadUpload(
                f"{filename} must contain exactly one top-level *.dist-info/METADATA, "
                f"found {len(candidates)}."
            )
        try:
            metadata = _read_zip_member(zf, candidates[0], filename)
            record = candidates[0].filename.removesuffix("METADATA") + "RECORD"
            if record in zf.NameToInfo:
                _check_record(zf, zf.NameToInfo[record], filename)
        except _ZIP_ERRORS:
            raise _bad_archive(filename, "wheel (zip)") from None
        return metadata


def _check_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> None:
    """Every path RECORD lists must pass the member path rule (RECORD is optional)."""
    too_much = f"{info.filename} in {filename} has more than {MAX_RECORD_BYTES} bytes."
    if info.file_size > MAX_RECORD_BYTES:
        raise BadUpload(too_much)
    with zf.open(info) as member:
        lines = _text_lines(BoundedReader(member, MAX_RECORD_BYTES, too_much))
        try:
            for row in csv.reader(lines):
                if row and row[0]:
                    check_path(filename, row[0], f"{info.filename} path")
        except UnicodeDecodeError:
            raise BadUpload(f"{info.filename} in {filename} is not valid UTF-8.") from None
        except csv.Error:
            raise BadUpload(f"{info.filename} in {filename} is not valid CSV.") from None


def _text_lines(source: Readable) -> Iterator[str]:
    """UTF-8 lines (with their '\\n') read in chunks, so RECORD is never held whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    # The pieces of the current line: joined once, not re-concatenated per chunk.
    pieces: list[str] = []
    while chunk := source.read(64 * 1024):
        *complete, rest = decoder.decode(chunk).split("\n")
        for piece in complete:
            yield "".join([*pieces, piece, "\n"])
            pieces = []
        pieces.append(rest)
    tail = "".join(pieces) + decoder.decode(b"", final=True)
    if tail:
        yield tail


def _zip_sdist_metadata(path: Openable, filename: str) -> bytes:
    with _open_zip(path, filename, "zip") as zf:
        candidates = [
            info for info in zf.infolist() if is_top_level(info.filename, "PKG-INFO")
        ]
        if len(candidates) != 1:
            raise BadUpload(f"{filename} must contain exactly one top-level PKG-INFO file.")
        try:
            return _read_zip_member(zf, candidates[0], filename)
        except _ZIP_ERRORS:
            raise _bad_archive(filename, "zip") from None
