"""Package names, versions and project paths: validation and normalisation.

Domain layer, no I/O.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from pypireg.domain.errors import BadUpload

# PEP 508 / core metadata: ASCII letters, digits, ., _ and -, starting and
# ending with a letter or digit. Spelled out rather than IGNORECASE, which
# lets U+212A KELVIN SIGN match "k" (and .lower() then turns it into one).
_NAME_RE = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])\Z", re.ASCII)
_NORMALIZE_RE = re.compile(r"[-_.]+")
# A project path: one or more segments separated by "/", as GitLab's
# namespace/project paths are.
_PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
MAX_NAME_LENGTH = 200
MAX_VERSION_LENGTH = 100


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: lower case, runs of -_. become one -."""
    return _NORMALIZE_RE.sub("-", name).lower()


def is_valid_name(name: str) -> bool:
    return (len(name) <= MAX_NAME_LENGTH and name.isascii()
            and _NAME_RE.match(name) is not None)


def check_name(name: str) -> str:
    """Return *name* if it is a valid distribution name, else raise BadUpload."""
    if not is_valid_name(name):
        raise BadUpload(
            f"Invalid package name {name!r}: names must be ASCII letters, digits, '.', '_' "
            "and '-', starting and ending with a letter or digit (PEP 508)."
        )
    return name


def parse_version(version: str) -> Version:
    """Parse a PEP 440 version, raising BadUpload with a clear reason."""
    if len(version) > MAX_VERSION_LENGTH:
        raise BadUpload(f"Invalid version: longer than {MAX_VERSION_LENGTH} characters.")
    if not version.isascii():
        raise BadUpload(f"Invalid version {version!r}: versions are ASCII (PEP 440).")
    try:
        return Version(version)
    except InvalidVersion:
        raise BadUpload(
            f"Invalid version {version!r}: versions must follow PEP 440, e.g. 1.0, 2.1.3rc1."
        ) from None


def is_valid_project_path(path: str) -> bool:
    segments = path.split("/")
    return (
        0 < len(path) <= 255
        and all(_PATH_SEGMENT_RE.match(s) for s in segments)
        and not any(s.endswith((".git", ".atom")) or set(s) <= {"."} for s in segments)
    )
