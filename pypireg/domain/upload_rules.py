"""The rules an upload must pass, in the order PyPI checks them.

Domain layer, no I/O: the HTTP layer hands in the parsed form, the digests
of the stored bytes and the metadata read from the archive.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from pypireg.domain.digests import Digests
from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import DistFilename, parse_filename
from pypireg.domain.metadata import CoreMetadata
from pypireg.domain.names import check_name, is_valid_name, normalize_name, parse_version

Form = Mapping[str, Sequence[str]]
_FILETYPES = {"bdist_wheel", "sdist"}


@dataclass(frozen=True)
class UploadClaim:
    """What the form says, checked for shape and consistency with the file name."""

    name: str
    version: Version
    dist: DistFilename
    form_sha256: str | None
    form_md5: str | None
    form_blake2_256: str | None


def field(form: Form, key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


def check_form(form: Form, filename: str | None) -> UploadClaim:
    """Validate the form fields and the file name, before the bytes are looked at."""
    action = field(form, ":action")
    if action is not None and action != "file_upload":
        raise BadUpload(f"Unsupported :action {action!r}; only file_upload is supported.")
    protocol = field(form, "protocol_version")
    if protocol is not None and protocol != "1":
        raise BadUpload(f"Unsupported protocol_version {protocol!r}; only 1 is supported.")
    name = field(form, "name")
    if not name:
        raise BadUpload("Missing form field 'name': the package name is required.")
    check_name(name)
    version_text = field(form, "version")
    if not version_text:
        raise BadUpload("Missing form field 'version': the package version is required.")
    version = parse_version(version_text)
    if filename is None:
        raise BadUpload("Missing file: send the distribution in a form field named 'content'.")
    dist = parse_filename(filename)
    filetype = field(form, "filetype")
    if filetype is not None:
        if filetype not in _FILETYPES:
            raise BadUpload(
                f"Unsupported filetype {filetype!r}; only bdist_wheel and sdist are accepted."
            )
        if filetype != dist.packagetype:
            raise BadUpload(f"filetype {filetype!r} does not match the file name {filename!r}.")
    if normalize_name(dist.name) != normalize_name(name):
        raise BadUpload(
            f"The file name {filename!r} is for package {dist.name!r}, but the form says {name!r}."
        )
    if dist.version != version:
        raise BadUpload(
            f"The file name {filename!r} is for version {dist.version}, but the form says "
            f"{version_text}."
        )
    requires_python = field(form, "requires_python")
    if requires_python:
        _check_specifier(requires_python)
    return UploadClaim(
        name=name,
        version=version,
        dist=dist,
        form_sha256=_digest(form, "sha256_digest", 64),
        form_md5=_digest(form, "md5_digest", 32),
        form_blake2_256=_digest(form, "blake2_256_digest", 64),
    )


def check_digests(claim: UploadClaim, digests: Digests) -> None:
    """Every digest the client sent must match the bytes we received."""
    if digests.size == 0:
        raise BadUpload(f"{claim.dist.filename} is empty.")
    for label, sent, actual in (
        ("sha256_digest", claim.form_sha256, digests.sha256),
        ("md5_digest", claim.form_md5, digests.md5),
        ("blake2_256_digest", claim.form_blake2_256, digests.blake2_256),
    ):
        # A digest that was sent was computed (BlobStore.complete_digests).
        if sent is not None and not hmac.compare_digest(sent, actual or ""):
            raise BadUpload(
                f"The {label} sent does not match the uploaded file: the upload was corrupted "
                "or the digest is wrong. Retry the upload."
            )


def check_metadata(claim: UploadClaim, meta: CoreMetadata) -> None:
    """The metadata inside the file must name the same package and version."""
    filename = claim.dist.filename
    if not meta.name:
        raise BadUpload(f"The metadata in {filename} has no Name field.")
    if not is_valid_name(meta.name):
        raise BadUpload(
            f"The metadata in {filename} has an invalid Name {meta.name!r}: names must be ASCII "
            "letters, digits, '.', '_' and '-', starting and ending with a letter or digit.")
    if normalize_name(meta.name) != normalize_name(claim.name):
        raise BadUpload(
            f"The metadata in {filename} is for package {meta.name!r}, but the form says "
            f"{claim.name!r}."
        )
    if not meta.version:
        raise BadUpload(f"The metadata in {filename} has no Version field.")
    try:
        if not meta.version.isascii():
            raise ValueError(meta.version)
        inner = Version(meta.version)
    except ValueError:
        raise BadUpload(f"The metadata in {filename} has an invalid Version {meta.version!r}."
                        ) from None
    if inner != claim.version:
        raise BadUpload(
            f"The metadata in {filename} is for version {meta.version}, but the form says "
            f"{claim.version}."
        )
    if meta.requires_python:
        _check_specifier(meta.requires_python)


def _check_specifier(text: str) -> None:
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise BadUpload(
            f"Invalid Requires-Python {text!r}: use a PEP 440 specifier such as '>=3.9'."
        ) from None


def _digest(form: Form, key: str, length: int) -> str | None:
    value = field(form, key)
    if not value:
        return None
    value = value.strip().lower()
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise BadUpload(f"Invalid {key}: expected {length} hexadecimal characters.")
    return value
