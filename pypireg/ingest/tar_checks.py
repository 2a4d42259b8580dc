"""Reading a .tar.gz sdist: every member checked in one bounded stream, PKG-INFO kept.

Blocking file work (a worker thread, never the reactor). The tarball is
read once, in tarfile's stream mode, with at most *max_scan_bytes*
decompressed and *max_members* members; only PKG-INFO's bytes are kept.

What `tar x` or pip could do with a member that we would not see:

- a name outside the tree: names must pass `member_paths.path_problem`;
- a symlink out of it: each symlink, followed through the archive's other
  symlinks (its own folder too), must stay inside its top folder, because
  pip strips that folder when it unpacks; hard links must name a member
  path, and a hard link to a symlink counts as that symlink (GNU tar links
  the symlink itself);
- device nodes, FIFOs and types tarfile would unpack as plain files;
- two top-level PKG-INFO files: we would read the first, `tar x` keeps the
  last; refused even when identical;
- anything but zero padding after the end-of-archive blocks: a second
  archive that `tar --ignore-zeros` would unpack, or a damaged header that
  tarfile reads as the end.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from pypireg.domain.errors import BadUpload
from pypireg.ingest.member_paths import is_top_level, path_problem, spelling_problem
from pypireg.storage.blob_backend import Openable

# As Linux's ELOOP limit: a longer chain of symlinks does not resolve.
MAX_SYMLINK_HOPS = 40
NAME_HINT = "paths in a distribution must be relative, with plain names separated by '/'"


@dataclass(frozen=True, slots=True)
class TarLimits:
    max_members: int
    max_scan_bytes: int
    max_metadata_bytes: int


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BoundedReader:
    """A file-like reader that raises BadUpload(*too_much*) past *limit* bytes."""

    def __init__(self, fileobj: Readable, limit: int, too_much: str) -> None:
        self._fileobj = fileobj
        self._limit = limit
        self._too_much = too_much
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise BadUpload(self._too_much)
        return data


def check_path(filename: str, name: str, what: str = "member") -> None:
    """Refuse *name* (a member, or what a link or RECORD names) unless it passes the path rule."""
    problem = path_problem(name)
    if problem is not None:
        raise BadUpload(f"{filename}: {what} {name!r} {problem}; {NAME_HINT}.")


def tar_sdist_metadata(path: Openable, filename: str, limits: TarLimits) -> bytes:
    """Check every member of the .tar.gz at *path*; return its one top-level PKG-INFO."""
    scan = _TarScan(filename, limits)
    try:
        with path.open("rb") as compressed, gzip.GzipFile(fileobj=compressed) as raw:
            bounded = BoundedReader(
                raw, limits.max_scan_bytes,
                f"{filename} decompresses to more than {limits.max_scan_bytes} bytes.")
            # Stream mode: members are read in order, never all listed at once.
            with tarfile.open(fileobj=bounded, mode="r|") as tf:  # type: ignore[call-overload]
                while (member := tf.next()) is not None:
                    scan.add(member, tf)
                    # Even in stream mode tarfile keeps every TarInfo (~500
                    # bytes each); we never look one up again.
                    tf.members.clear()
                _check_trailer(tf.fileobj, filename)
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error):
        raise BadUpload(f"{filename} is not a valid gzipped tar archive.") from None
    return scan.finish()


def _bad_member(filename: str, member: str, problem: str) -> BadUpload:
    return BadUpload(f"{filename}: member {member!r} {problem}.")


class _TarScan:
    """The checks on each member, in archive order, then on the links between them."""

    def __init__(self, filename: str, limits: TarLimits) -> None:
        self._filename = filename
        self._limits = limits
        self._count = 0
        self._pkg_info: str | None = None
        self._metadata: bytes | None = None
        self._symlinks: dict[str, str] = {}

    def add(self, member: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self._count += 1
        if self._count > self._limits.max_members:
            raise BadUpload(f"{self._filename} has more than {self._limits.max_members} members.")
        name = member.name
        check_path(self._filename, name)
        if member.ischr() or member.isblk():
            raise _bad_member(self._filename, name, "is a device node")
        if member.isfifo():
            raise _bad_member(self._filename, name, "is a FIFO")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise _bad_member(self._filename, name, "is not a file, folder or link")
        if member.issym():
            problem = spelling_problem(member.linkname)
            if problem is not None:
                raise _bad_member(self._filename, name,
                                  f"links to {member.linkname!r}, which {problem}")
            self._symlinks[name] = member.linkname
        elif member.islnk():
            check_path(self._filename, member.linkname, f"hard link {name!r} to")
            if member.linkname in self._symlinks:
                self._symlinks[name] = self._symlinks[member.linkname]
        if is_top_level(name, "PKG-INFO"):
            if self._pkg_info is not None:
                raise BadUpload(f"{self._filename} has two top-level PKG-INFO files: "
                                f"{self._pkg_info!r} and {name!r}.")
            self._pkg_info = name
            if member.isfile():
                self._metadata = self._read(member, tf)

    def _read(self, member: tarfile.TarInfo, tf: tarfile.TarFile) -> bytes:
        limit = self._limits.max_metadata_bytes
        if member.size > limit:
            raise BadUpload(f"{member.name} in {self._filename} has {member.size} bytes; "
                            f"metadata files may have at most {limit}.")
        fobj = tf.extractfile(member)
        assert fobj is not None
        # The declared size, not the limit: the buffered reader allocates what it is asked for.
        data: bytes = fobj.read(member.size)
        return data

    def finish(self) -> bytes:
        for name, target in self._symlinks.items():
            problem = symlink_problem(self._symlinks, name)
            if problem is not None:
                raise _bad_member(self._filename, name, f"links to {target!r}, {problem}")
        if self._metadata is None:
            raise BadUpload(f"{self._filename} has no top-level PKG-INFO file.")
        return self._metadata


def symlink_problem(symlinks: dict[str, str], name: str) -> str | None:
    """Follow symlink *name* through *symlinks* (name → target): does it leave its top folder?

    The walk starts at the archive root with the link's own folder, so a
    folder that is itself a symlink is followed too. A link inside a folder
    may not climb out of its top folder; a top-level link may not climb
    out of the archive.
    """
    floor = 1 if "/" in name else 0
    todo = list(reversed(name.split("/")[:-1] + symlinks[name].split("/")))
    path: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if len(path) <= floor:
                return "outside the archive's top folder"
            path.pop()
            continue
        path.append(part)
        target = symlinks.get("/".join(path))
        if target is not None:
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return "through too many symlinks"
            path.pop()
            todo.extend(reversed(target.split("/")))
    return None


def _check_trailer(stream: BinaryIO | None, filename: str) -> None:
    """After the end-of-archive blocks only zero padding may follow."""
    assert stream is not None
    while chunk := stream.read(64 * 1024):
        if chunk.count(0) != len(chunk):
            raise BadUpload(f"{filename} has data after the end of its tar archive.")
