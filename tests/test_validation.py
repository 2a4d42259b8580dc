"""Unit tests for the pure validation modules: names, filenames and upload rules."""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from pypireg.domain.digests import Digests
from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import ACCEPTED, is_safe_basename, parse_filename
from pypireg.domain.metadata import CoreMetadata
from pypireg.domain.names import (
    check_name,
    is_valid_name,
    is_valid_project_path,
    normalize_name,
    parse_version,
)
from pypireg.domain.upload_rules import UploadClaim, check_digests, check_form, check_metadata

NORMALIZED_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
VALID_NAMES = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,60}[A-Za-z0-9])?\Z")
CONTROL_CHARS = [chr(c) for c in range(32)] + ["\x7f"]
UNSAFE_CHARS = ["/", "\\", "\x00", *CONTROL_CHARS]
# Deterministic: the same examples on every run, nothing written to .hypothesis/.
deterministic = settings(derandomize=True, database=None)


# == names ====================================================================


@pytest.mark.parametrize(("name", "expected"), [
    ("Demo", "demo"),
    ("demo_pkg", "demo-pkg"),
    ("Demo.Pkg", "demo-pkg"),
    ("demo--pkg", "demo-pkg"),
    ("demo-_.pkg", "demo-pkg"),
    ("Friendly-Bard", "friendly-bard"),
    ("FRIENDLY.._BARD", "friendly-bard"),
    ("zope.interface", "zope-interface"),
    ("a", "a"),
    ("0", "0"),
])
def test_normalize_name_follows_pep_503(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


@deterministic
@given(st.text())
def test_normalize_name_is_idempotent(name: str) -> None:
    once = normalize_name(name)
    assert normalize_name(once) == once


@deterministic
@given(VALID_NAMES)
def test_normalized_valid_name_is_lowercase_words_joined_by_single_dashes(name: str) -> None:
    assert is_valid_name(name)
    assert NORMALIZED_RE.match(normalize_name(name))


@deterministic
@given(VALID_NAMES, st.sampled_from(["-", "_", ".", "-_.", "__", "..", "-.-"]))
def test_separator_runs_do_not_change_the_normalized_name(name: str, sep: str) -> None:
    assert normalize_name(f"{name}{sep}x") == normalize_name(f"{name}-x")


@pytest.mark.parametrize("name", ["a", "A1", "demo-pkg", "Demo.Pkg_2", "x" * 200, "1-2"])
def test_check_name_returns_a_valid_name(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", [
    "", "-demo", "demo-", ".demo", "demo.", "_demo", "demo_", "de mo", "démo", "demo/pkg",
    "x" * 201, "demo!", "demo+pkg",
])
def test_check_name_rejects_invalid_names_citing_pep_508(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(BadUpload, match="Invalid package name") as info:
        check_name(name)
    assert "PEP 508" in info.value.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("1.0", Version("1.0")),
    ("1.0.0", Version("1.0")),
    ("2.1.3rc1", Version("2.1.3rc1")),
    ("1!2.0.post1.dev3", Version("1!2.0.post1.dev3")),
    ("v1.0", Version("1.0")),
    ("1.0+local.7", Version("1.0+local.7")),
])
def test_parse_version_accepts_pep_440(text: str, expected: Version) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1.0-foo-bar", "1..0", "1.0 beta", "latest"])
def test_parse_version_rejects_non_pep_440(text: str) -> None:
    with pytest.raises(BadUpload, match="must follow PEP 440"):
        parse_version(text)


def test_parse_version_rejects_versions_over_100_characters() -> None:
    long = "1." + ".".join(["0"] * 50)  # 101 characters, a valid PEP 440 version otherwise
    assert len(long) == 101
    with pytest.raises(BadUpload, match="longer than 100 characters"):
        parse_version(long)
    assert parse_version(long[:99]) == Version(long[:99])


@pytest.mark.parametrize("path", [
    "acme", "acme/tools", "acme/sub.group/tool_s-2", "a/b/c/d", "A1", "x" * 100,
    "/".join(["abcdefghij"] * 23),  # 252 characters
])
def test_valid_project_paths(path: str) -> None:
    assert is_valid_project_path(path)


@pytest.mark.parametrize("path", [
    "", "/", "acme/", "/acme", "acme//tools", "acme/../tools", "..", ".", ".hidden",
    "acme/-tools", "acme/_tools", "acme/tools.git", "acme.atom", "acme/to ols", "acme\\tools",
    "x" * 101, "/".join(["abcdefghij"] * 24), "acme/tööls",
])
def test_invalid_project_paths(path: str) -> None:
    assert not is_valid_project_path(path)


def test_check_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(BadUpload, match="Invalid package name"):
        check_name("demo\n")


def test_project_path_with_a_trailing_newline_is_invalid() -> None:
    assert not is_valid_project_path("acme/tools\n")


# == filenames ================================================================


@pytest.mark.parametrize(("filename", "name", "version", "packagetype", "tag"), [
    ("demo_pkg-1.0-py3-none-any.whl", "demo-pkg", "1.0", "bdist_wheel", "py3"),
    ("Demo_Pkg-2.0.1-py2.py3-none-any.whl", "demo-pkg", "2.0.1", "bdist_wheel", "py2.py3"),
    ("demo_pkg-1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", "demo-pkg", "1.0", "bdist_wheel",
     "cp311"),
    ("demo_pkg-1.0.tar.gz", "demo_pkg", "1.0", "sdist", "source"),
    ("demo-pkg-1.0rc1.tar.gz", "demo-pkg", "1.0rc1", "sdist", "source"),
    ("Demo.Pkg-3.0.zip", "Demo.Pkg", "3.0", "sdist", "source"),
    ("DEMO-1.0.TAR.GZ", "DEMO", "1.0", "sdist", "source"),
])
def test_parse_filename_accepts_wheels_and_sdists(
        filename: str, name: str, version: str, packagetype: str, tag: str) -> None:
    dist = parse_filename(filename)
    assert dist.filename == filename
    assert dist.name == name
    assert dist.version == Version(version)
    assert dist.packagetype == packagetype
    assert dist.python_tag == tag


@pytest.mark.parametrize("filename", [
    "demo-1.0.exe", "demo-1.0.egg", "demo-1.0.tar.bz2", "demo-1.0.tgz", "demo-1.0.tar",
    "demo-1.0.tar.xz", "demo-1.0.msi", "demo-1.0.rpm", "demo-1.0.whl.txt", "demo", "README",
])
def test_parse_filename_rejects_other_extensions_naming_what_is_accepted(filename: str) -> None:
    with pytest.raises(BadUpload) as info:
        parse_filename(filename)
    assert f"only {ACCEPTED} are accepted" in info.value.reason
    assert ".whl" in info.value.reason and ".tar.gz" in info.value.reason
    assert ".zip" in info.value.reason


@pytest.mark.parametrize("filename", [
    "demo_pkg-1.0-py3-none-any-extra-stuff.whl",  # too many parts
    "demo_pkg-py3-none-any.whl",  # no version
    "demo_pkg-one-py3-none-any.whl",  # invalid version
])
def test_parse_filename_rejects_malformed_wheel_names(filename: str) -> None:
    with pytest.raises(BadUpload, match="Invalid wheel file name"):
        parse_filename(filename)


@pytest.mark.parametrize(("filename", "match"), [
    ("demo.tar.gz", "expected NAME-VERSION.tar.gz"),
    ("demo-.zip", "expected NAME-VERSION.zip"),
    ("-1.0.tar.gz", "Invalid file name"),  # unsafe: does not start with a letter or digit
    ("demo-abc.tar.gz", "Invalid version"),
    ("demo_-1.0.tar.gz", "Invalid package name"),
])
def test_parse_filename_rejects_malformed_sdist_names(filename: str, match: str) -> None:
    with pytest.raises(BadUpload, match=match):
        parse_filename(filename)


@pytest.mark.parametrize("filename", [
    "../demo-1.0.tar.gz",
    "dist/demo-1.0.tar.gz",
    "dist\\demo-1.0.tar.gz",
    "C:\\demo-1.0.tar.gz",
    "demo..pkg-1.0.tar.gz",
    "demo-1.0.tar.gz\x00.txt",
    "demo-1.0\x00.tar.gz",
    "demo\n-1.0.tar.gz",
    "demo\r-1.0.tar.gz",
    "demo\t-1.0.tar.gz",
    "demo\x1b-1.0.tar.gz",
    "demo\x7f-1.0.tar.gz",
    "demo pkg-1.0.tar.gz",
    " demo-1.0.tar.gz",
    ".demo-1.0.tar.gz",
    ".whl",
    "",
    "d" * 248 + "-1.0.zip",  # 256 characters
    "démo-1.0.tar.gz",
    "demo-1.0.tar.gz/",
])
def test_unsafe_filenames_are_rejected(filename: str) -> None:
    assert not is_safe_basename(filename)
    with pytest.raises(BadUpload, match="Invalid file name"):
        parse_filename(filename)


def test_filename_of_exactly_255_characters_is_accepted() -> None:
    assert is_safe_basename("d" * 247 + "-1.0.zip")
    # 200: the longest name; a real (compressed) platform tag fills the rest.
    filename = "d" * 200 + "-1.0-py3-none-macosx_10_10_x86_64.macosx_11_0_arm64.whl"
    assert len(filename) == 255
    assert is_safe_basename(filename)
    assert parse_filename(filename).name == "d" * 200


def test_is_safe_basename_rejects_a_trailing_newline() -> None:
    assert not is_safe_basename("demo-1.0.tar.gz\n")


@st.composite
def text_with_an_unsafe_char(draw: st.DrawFn) -> str:
    before = draw(st.text(max_size=40))
    after = draw(st.text(max_size=40))
    return before + draw(st.sampled_from(UNSAFE_CHARS)) + after


@deterministic
@given(text_with_an_unsafe_char())
@example("demo-1.0.tar.gz\n")
def test_is_safe_basename_rejects_any_separator_nul_or_control_char(filename: str) -> None:
    assert not is_safe_basename(filename)


@deterministic
@given(text_with_an_unsafe_char())
@example("demo-1.0.tar.gz\n")
@example("demo-1.0-py3-none-any.whl\n")
def test_parse_filename_rejects_any_separator_nul_or_control_char(filename: str) -> None:
    with pytest.raises(BadUpload):
        parse_filename(filename)


FILENAME_ALPHABET = string.ascii_letters + string.digits + "._-+!"


@deterministic
@given(st.one_of(
    st.text(),
    st.text(alphabet=FILENAME_ALPHABET),
    st.builds(lambda stem, ext: stem + ext, st.text(alphabet=FILENAME_ALPHABET),
              st.sampled_from([".whl", ".tar.gz", ".zip", ".ZIP", "-1.0.tar.gz"])),
))
def test_parse_filename_raises_only_bad_upload(filename: str) -> None:
    try:
        dist = parse_filename(filename)
    except BadUpload:
        return
    assert is_safe_basename(filename)
    assert dist.filename == filename
    assert dist.packagetype in ("bdist_wheel", "sdist")


# == upload rules =============================================================

WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SDIST = "demo_pkg-1.0.tar.gz"
CONTENT = b"pretend this is a wheel"
SHA256 = hashlib.sha256(CONTENT).hexdigest()
MD5 = hashlib.md5(CONTENT).hexdigest()  # the legacy form field
BLAKE2 = hashlib.blake2b(CONTENT, digest_size=32).hexdigest()
DIGESTS = Digests(size=len(CONTENT), sha256=SHA256, md5=MD5, blake2_256=BLAKE2)


def form(**fields: str | None) -> dict[str, list[str]]:
    """A form as the multipart reader produces it; None drops a field."""
    base: dict[str, str | None] = {
        ":action": "file_upload", "protocol_version": "1", "name": "demo-pkg",
        "version": "1.0", "filetype": "bdist_wheel", "pyversion": "py3",
        "metadata_version": "2.1",
    }
    base.update(fields)
    return {k: [v] for k, v in base.items() if v is not None}


def rejected(form_: Mapping[str, Sequence[str]], filename: str | None = WHEEL) -> str:
    with pytest.raises(BadUpload) as info:
        check_form(form_, filename)
    return info.value.reason


def meta(name: str | None = "demo-pkg", version: str | None = "1.0",
         requires_python: str | None = None) -> CoreMetadata:
    return CoreMetadata(metadata_version="2.1", name=name, version=version, summary=None,
                        requires_python=requires_python, raw=b"")


def claim(**fields: Any) -> UploadClaim:
    return check_form(form(**fields), WHEEL)


def test_check_form_accepts_a_twine_form() -> None:
    result = check_form(form(sha256_digest=SHA256), WHEEL)
    assert result.name == "demo-pkg"
    assert result.version == Version("1.0")
    assert result.dist == parse_filename(WHEEL)
    assert result.form_sha256 == SHA256
    assert result.form_md5 is None
    assert result.form_blake2_256 is None


def test_check_form_accepts_an_sdist() -> None:
    result = check_form(form(filetype="sdist", pyversion="source"), SDIST)
    assert result.dist.packagetype == "sdist"


def test_check_form_optional_fields_may_be_absent() -> None:
    minimal = {"name": ["demo-pkg"], "version": ["1.0"]}
    assert check_form(minimal, WHEEL).name == "demo-pkg"


@pytest.mark.parametrize("name", [None, ""])
def test_missing_name_is_refused(name: str | None) -> None:
    assert rejected(form(name=name)) == (
        "Missing form field 'name': the package name is required.")


def test_invalid_name_is_refused() -> None:
    assert "Invalid package name '-demo'" in rejected(form(name="-demo"))


@pytest.mark.parametrize("version", [None, ""])
def test_missing_version_is_refused(version: str | None) -> None:
    assert rejected(form(version=version)) == (
        "Missing form field 'version': the package version is required.")


def test_invalid_version_is_refused() -> None:
    assert "Invalid version 'one.two'" in rejected(form(version="one.two"))


def test_missing_file_is_refused() -> None:
    assert "form field named 'content'" in rejected(form(), None)


def test_bad_filename_is_refused_by_check_form() -> None:
    assert "Invalid file name" in rejected(form(), "../" + WHEEL)
    assert "are accepted" in rejected(form(), "demo_pkg-1.0.exe")


@pytest.mark.parametrize("name", ["Demo.Pkg", "DEMO_PKG", "demo__pkg", "demo-pkg"])
def test_name_matches_file_name_after_pep_503_normalisation(name: str) -> None:
    assert check_form(form(name=name), WHEEL).name == name


def test_name_mismatch_with_file_name_is_refused() -> None:
    reason = rejected(form(name="other-pkg"))
    assert reason == (f"The file name {WHEEL!r} is for package 'demo-pkg', but the form says "
                      "'other-pkg'.")


@pytest.mark.parametrize("version", ["1.0.0", "1.0", "1", "01.0", "1.0.0.0"])
def test_version_matches_file_name_per_pep_440(version: str) -> None:
    assert check_form(form(version=version), WHEEL).version == Version("1.0")


def test_version_mismatch_with_file_name_is_refused() -> None:
    reason = rejected(form(version="1.1"))
    assert reason == f"The file name {WHEEL!r} is for version 1.0, but the form says 1.1."


def test_filetype_mismatch_with_file_name_is_refused() -> None:
    assert rejected(form(filetype="sdist")) == (
        f"filetype 'sdist' does not match the file name {WHEEL!r}.")
    assert rejected(form(filetype="bdist_wheel"), SDIST) == (
        f"filetype 'bdist_wheel' does not match the file name {SDIST!r}.")


@pytest.mark.parametrize("filetype", ["bdist_egg", "bdist_wininst", "", "SDIST"])
def test_unknown_filetype_is_refused(filetype: str) -> None:
    assert rejected(form(filetype=filetype)) == (
        f"Unsupported filetype {filetype!r}; only bdist_wheel and sdist are accepted.")


@pytest.mark.parametrize("action", ["submit", "doc_upload", "remove_pkg", ""])
def test_bad_action_is_refused(action: str) -> None:
    assert rejected(form(**{":action": action})) == (
        f"Unsupported :action {action!r}; only file_upload is supported.")


@pytest.mark.parametrize("protocol", ["2", "0", "", "1.0"])
def test_bad_protocol_version_is_refused(protocol: str) -> None:
    assert rejected(form(protocol_version=protocol)) == (
        f"Unsupported protocol_version {protocol!r}; only 1 is supported.")


def test_action_is_checked_before_name() -> None:
    assert "Unsupported :action" in rejected(form(**{":action": "submit"}, name=None))


@pytest.mark.parametrize(("key", "length"), [
    ("sha256_digest", 64), ("md5_digest", 32), ("blake2_256_digest", 64),
])
@pytest.mark.parametrize("bad", ["abc", "g" * 64, "g" * 32, "0" * 65, "0" * 31, "z" + "0" * 63])
def test_malformed_digest_is_refused(key: str, length: int, bad: str) -> None:
    assert rejected(form(**{key: bad})) == (
        f"Invalid {key}: expected {length} hexadecimal characters.")


def test_digests_are_normalised_to_lower_case_without_spaces() -> None:
    result = claim(sha256_digest=f"  {SHA256.upper()} ", md5_digest=MD5.upper(),
                   blake2_256_digest=BLAKE2)
    assert (result.form_sha256, result.form_md5, result.form_blake2_256) == (SHA256, MD5, BLAKE2)


def test_empty_digest_fields_are_treated_as_absent() -> None:
    result = claim(sha256_digest="", md5_digest="", blake2_256_digest="")
    assert (result.form_sha256, result.form_md5, result.form_blake2_256) == (None, None, None)


@pytest.mark.parametrize("spec", [">=3.9", ">=3.8,<4", "", "~=3.10"])
def test_valid_form_requires_python_is_accepted(spec: str) -> None:
    claim(requires_python=spec)


@pytest.mark.parametrize("spec", ["3.9+", ">= three", "python>=3"])
def test_invalid_form_requires_python_is_refused(spec: str) -> None:
    assert rejected(form(requires_python=spec)) == (
        f"Invalid Requires-Python {spec!r}: use a PEP 440 specifier such as '>=3.9'.")


def test_check_digests_accepts_matching_digests() -> None:
    check_digests(claim(sha256_digest=SHA256, md5_digest=MD5, blake2_256_digest=BLAKE2), DIGESTS)
    check_digests(claim(), DIGESTS)  # no digest sent: nothing to compare


@pytest.mark.parametrize("key", ["sha256_digest", "md5_digest", "blake2_256_digest"])
def test_each_digest_mismatch_is_refused(key: str) -> None:
    good = {"sha256_digest": SHA256, "md5_digest": MD5, "blake2_256_digest": BLAKE2}
    wrong = "0" * len(good[key])
    good[key] = wrong
    with pytest.raises(BadUpload) as info:
        check_digests(claim(**good), DIGESTS)
    assert info.value.reason.startswith(f"The {key} sent does not match the uploaded file")


def test_empty_file_is_refused() -> None:
    empty = Digests(size=0, sha256=hashlib.sha256(b"").hexdigest(),
                    md5=hashlib.md5(b"").hexdigest(),
                    blake2_256=hashlib.blake2b(b"", digest_size=32).hexdigest())
    with pytest.raises(BadUpload) as info:
        check_digests(claim(sha256_digest=empty.sha256), empty)
    assert info.value.reason == f"{WHEEL} is empty."


def test_check_metadata_accepts_matching_metadata() -> None:
    check_metadata(claim(), meta())
    check_metadata(claim(), meta(name="Demo.Pkg", version="1.0.0", requires_python=">=3.8"))


def test_metadata_without_name_is_refused() -> None:
    with pytest.raises(BadUpload, match=f"^The metadata in {WHEEL} has no Name field"):
        check_metadata(claim(), meta(name=None))


def test_metadata_name_mismatch_is_refused() -> None:
    with pytest.raises(BadUpload) as info:
        check_metadata(claim(), meta(name="other"))
    assert info.value.reason == (
        f"The metadata in {WHEEL} is for package 'other', but the form says 'demo-pkg'.")


def test_metadata_without_version_is_refused() -> None:
    with pytest.raises(BadUpload, match=f"^The metadata in {WHEEL} has no Version field"):
        check_metadata(claim(), meta(version=None))


def test_metadata_invalid_version_is_refused() -> None:
    with pytest.raises(BadUpload, match="has an invalid Version 'one'"):
        check_metadata(claim(), meta(version="one"))


def test_metadata_version_mismatch_is_refused() -> None:
    with pytest.raises(BadUpload) as info:
        check_metadata(claim(), meta(version="2.0"))
    assert info.value.reason == (
        f"The metadata in {WHEEL} is for version 2.0, but the form says 1.0.")


def test_metadata_invalid_requires_python_is_refused() -> None:
    with pytest.raises(BadUpload, match=r"^Invalid Requires-Python '>=3\.x'"):
        check_metadata(claim(), meta(requires_python=">=3.x"))
