"""Reading core metadata out of an uploaded distribution, with bounds.

Blocking file work: call `read_core_metadata` through the thread pool, never
in the reactor thread. Every read is bounded: the metadata member's declared
and actual size, the number of archive members looked at, and the
decompressed bytes a tarball may make us skip, so neither a zip bomb nor a
tarball full of junk can tie up a worker for long.
"""

from __future__ import annotations

import gzip
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

from pkginfo import Distribution

from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import DistFilename
from pypireg.domain.metadata import CoreMetadata

MAX_METADATA_BYTES = 4 * 1024 * 1024
MAX_MEMBERS = 100_000
# How much of a tarball we decompress while looking for PKG-INFO (which
# sdist builders put first); bounds the work a gzip bomb can cause.
MAX_TAR_SCAN_BYTES = 512 * 1024 * 1024


def read_core_metadata(path: Path, dist: DistFilename) -> CoreMetadata:
    """Return the core metadata of the distribution stored at *path*."""
    if dist.packagetype == "bdist_wheel":
        raw = _wheel_metadata(path, dist.filename)
    elif dist.filename.lower().endswith(".zip"):
        raw = _zip_sdist_metadata(path, dist.filename)
    else:
        raw = _tar_sdist_metadata(path, dist.filename)
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


def _is_top_level(member: str, leaf: str) -> bool:
    """`<dir>/<leaf>` with a real directory name (not "", "." or "..")."""
    parts = member.split("/")
    return len(parts) == 2 and parts[1] == leaf and parts[0] not in ("", ".", "..")


class _BoundedReader:
    """A file-like reader that refuses to deliver more than *limit* bytes."""

    def __init__(self, fileobj: gzip.GzipFile, limit: int, filename: str) -> None:
        self._fileobj = fileobj
        self._limit = limit
        self._filename = filename
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise BadUpload(
                f"{self._filename}: no PKG-INFO in the first {self._limit} decompressed bytes."
            )
        return data


def _bad_archive(filename: str, kind: str) -> BadUpload:
    return BadUpload(f"{filename} is not a valid {kind} archive.")


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


def _open_zip(path: Path, filename: str, kind: str) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _bad_archive(filename, kind) from None
    if len(zf.infolist()) > MAX_MEMBERS:
        zf.close()
        raise BadUpload(f"{filename} has more than {MAX_MEMBERS} members.")
    return zf


def _wheel_metadata(path: Path, filename: str) -> bytes:
    with _open_zip(path, filename, "wheel (zip)") as zf:
        candidates = [
            info for info in zf.infolist()
            if _is_top_level(info.filename, "METADATA")
            and info.filename.endswith(".dist-info/METADATA")
        ]
        if len(candidates) != 1:
            raise BadUpload(
                f"{filename} must contain exactly one top-level *.dist-info/METADATA, "
                f"found {len(candidates)}."
            )
        try:
            return _read_zip_member(zf, candidates[0], filename)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error,
                RuntimeError):
            raise _bad_archive(filename, "wheel (zip)") from None


def _zip_sdist_metadata(path: Path, filename: str) -> bytes:
    with _open_zip(path, filename, "zip") as zf:
        candidates = [
            info for info in zf.infolist() if _is_top_level(info.filename, "PKG-INFO")
        ]
        if len(candidates) != 1:
            raise BadUpload(f"{filename} must contain exactly one top-level PKG-INFO file.")
        try:
            return _read_zip_member(zf, candidates[0], filename)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error,
                RuntimeError):
            raise _bad_archive(filename, "zip") from None


def _tar_sdist_metadata(path: Path, filename: str) -> bytes:
    try:
        with gzip.open(path, "rb") as raw:
            bounded = _BoundedReader(raw, MAX_TAR_SCAN_BYTES, filename)
            # Stream mode: members are read in order, never all listed at once.
            with tarfile.open(fileobj=bounded, mode="r|") as tf:  # type: ignore[call-overload]
                for count, member in enumerate(tf):
                    if count >= MAX_MEMBERS:
                        break
                    if _is_top_level(member.name, "PKG-INFO") and member.isfile():
                        if member.size > MAX_METADATA_BYTES:
                            raise BadUpload(
                                f"{member.name} in {filename} has {member.size} bytes; "
                                f"metadata files may have at most {MAX_METADATA_BYTES}."
                            )
                        fobj = tf.extractfile(member)
                        assert fobj is not None
                        data: bytes = fobj.read(MAX_METADATA_BYTES)
                        return data
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error):
        raise _bad_archive(filename, "gzipped tar") from None
    raise BadUpload(f"{filename} has no top-level PKG-INFO file.")
