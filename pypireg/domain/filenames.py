"""Distribution file names: which are accepted and what they claim.

Domain layer, no I/O. A client-supplied file name only reaches the
filesystem after passing `parse_filename`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

from pypireg.domain.errors import BadUpload
from pypireg.domain.names import check_name, parse_version
from pypireg.domain.wheel_tags import tag_problem

PackageType = Literal["bdist_wheel", "sdist"]
ACCEPTED = "wheels (.whl) and source distributions (.tar.gz, .zip)"
MAX_FILENAME_LENGTH = 255
_SAFE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\Z")
SDIST_SUFFIXES = (".tar.gz", ".zip")


@dataclass(frozen=True)
class DistFilename:
    filename: str
    name: str
    version: Version
    packagetype: PackageType
    # The wheel's python tag(s), "source" for sdists (the legacy pyversion).
    python_tag: str


_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


def is_sha256(text: str) -> bool:
    """A lower-case hex SHA-256 digest: the only blob names there are."""
    return _SHA256_RE.match(text) is not None


def is_safe_basename(filename: str) -> bool:
    """A name we would put on disk and into a URL: no separators, no dot-only names."""
    return (
        0 < len(filename) <= MAX_FILENAME_LENGTH
        and _SAFE_RE.match(filename) is not None
        and ".." not in filename
    )


def parse_filename(filename: str) -> DistFilename:
    """Check that *filename* is a safe, accepted distribution file name and parse it."""
    if not is_safe_basename(filename):
        raise BadUpload(
            f"Invalid file name {filename!r}: it must be a plain file name (letters, digits, "
            "'.', '_', '-', '+', '!') without path separators, '..' or control characters."
        )
    lower = filename.lower()
    if lower.endswith(".whl"):
        try:
            wheel_name, version, _build, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename as e:
            raise BadUpload(f"Invalid wheel file name {filename!r}: {e}.") from None
        for tag in sorted(tags, key=str):
            problem = tag_problem(tag.interpreter, tag.abi, tag.platform)
            if problem is not None:
                raise BadUpload(f"Invalid wheel file name {filename!r}: {problem}.")
        python_tag = ".".join(sorted({t.interpreter for t in tags}))
        return DistFilename(filename, str(wheel_name), version, "bdist_wheel", python_tag)
    for suffix in SDIST_SUFFIXES:
        if lower.endswith(suffix):
            stem = filename[: -len(suffix)]
            # PEP 625 names use "_" for separators, legacy sdists may not:
            # the version is what follows the last "-".
            name, sep, version_text = stem.rpartition("-")
            if not sep or not name or not version_text:
                raise BadUpload(
                    f"Invalid source distribution file name {filename!r}: expected "
                    f"NAME-VERSION{suffix}."
                )
            check_name(name)
            return DistFilename(filename, name, parse_version(version_text), "sdist", "source")
    raise BadUpload(f"Invalid distribution file {filename!r}: only {ACCEPTED} are accepted.")
