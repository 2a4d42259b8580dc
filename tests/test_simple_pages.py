"""Unit tests for pypireg.domain.simple_pages: reading upstream PEP 503/691 project pages.

Pages come from three places: our own renderer (`project_detail`, so a
pypireg upstream round-trips), hand-written pages in the shapes pypiserver,
devpi and the public index write, and hostile input (garbage, wrong types,
huge lists, hostile file names, bad hashes), which must end in a typed error
or skipped entries and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypireg.domain.simple_pages import (
    ACCEPT,
    MAX_FILES,
    MAX_SKIPPED_EXAMPLES,
    ProjectPage,
    UpstreamFile,
    UpstreamPageError,
    page_format,
    parse_html_page,
    parse_json_page,
)
from pypireg.http.negotiation import HTML_V1, JSON_V1, TEXT_HTML
from pypireg.http.pypi.simple_index import ListedFile, project_detail
from pypireg.storage.packages import PackageFile

deterministic = settings(derandomize=True, database=None, deadline=None)
PAGE = "https://upstream.example/simple/demo-pkg/"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_M = "c" * 64


def json_page(files: list[Any], **top: Any) -> bytes:
    document: dict[str, Any] = {"meta": {"api-version": "1.1"}, "name": "demo-pkg",
                                "files": files, **top}
    return json.dumps(document).encode()


def json_file(**keys: Any) -> dict[str, Any]:
    entry = {"filename": "demo_pkg-1.0.tar.gz", "url": "demo_pkg-1.0.tar.gz",
             "hashes": {"sha256": SHA_A}}
    entry.update(keys)
    return entry


def html_page(*anchors: str, head: str = "") -> bytes:
    return (f"<!DOCTYPE html><html><head>{head}<title>Links for demo-pkg</title></head><body>"
            + "".join(anchors) + "</body></html>").encode()


# -- our own pages ------------------------------------------------------------


def package_file(filename: str, version: str, sha256: str, **changes: Any) -> PackageFile:
    base = PackageFile(
        id=1, package_id=1, name="demo-pkg", display_name="Demo.Pkg", version=version,
        filename=filename, packagetype="sdist", python_version="source", size=1234,
        sha256=sha256, md5=None, blake2_256=None, requires_python=None, summary=None,
        metadata_version="2.1", uploaded_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        uploaded_by_token_id=None, metadata_sha256=None, yanked=False, yanked_reason=None)
    return replace(base, **changes)


OURS = [ListedFile.of(f) for f in [
    package_file("demo_pkg-1.0.tar.gz", "1.0", SHA_A, requires_python=">=3.8,<4",
                 metadata_sha256=SHA_M),
    package_file("demo_pkg-2.0-py3-none-any.whl", "2.0", SHA_B, packagetype="bdist_wheel",
                 python_version="py3", yanked=True, yanked_reason="broken <build> & \"quoted\""),
    package_file("demo_pkg-2.0.tar.gz", "2.0", "d" * 64, yanked=True),
]]
SERVED = "https://registry.example/api/v4/projects/1/packages/pypi/simple/demo-pkg/"
FILES = "https://registry.example/api/v4/projects/1/packages/pypi/files/"


def test_our_json_page_reads_back_with_every_field() -> None:
    page = parse_json_page(project_detail("demo-pkg", OURS, JSON_V1), SERVED, name="demo-pkg")
    assert (page.name, page.api_version, page.versions, page.skipped) == (
        "demo-pkg", "1.4", ("1.0", "2.0"), 0)
    assert page.project_status == "active"
    first, wheel, sdist = page.files
    assert first == UpstreamFile(
        filename="demo_pkg-1.0.tar.gz", url=f"{FILES}{SHA_A}/demo_pkg-1.0.tar.gz",
        hashes={"sha256": SHA_A}, version="1.0", requires_python=">=3.8,<4", yanked=False,
        yanked_reason=None, size=1234, upload_time="2026-01-02T03:04:05.678901Z",
        core_metadata={"sha256": SHA_M}, provenance=None)
    assert first.sha256 == SHA_A
    assert (wheel.yanked, wheel.yanked_reason) == (True, 'broken <build> & "quoted"')
    assert (sdist.yanked, sdist.yanked_reason, sdist.core_metadata) == (True, None, False)


def test_our_html_page_reads_back_the_same_files_without_json_only_fields() -> None:
    from_json = parse_json_page(project_detail("demo-pkg", OURS, JSON_V1), SERVED)
    from_html = parse_html_page(project_detail("demo-pkg", OURS, TEXT_HTML), SERVED)
    assert from_html.api_version == "1.4" and from_html.project_status == "active"
    assert from_html.versions == from_json.versions
    # PEP 700's size and upload-time exist only in JSON.
    assert from_html.files == tuple(replace(f, size=None, upload_time=None)
                                    for f in from_json.files)


def test_an_empty_project_of_ours() -> None:
    page = parse_json_page(project_detail("demo-pkg", [], JSON_V1), SERVED)
    assert (page.files, page.versions) == ((), ())
    assert parse_html_page(project_detail("demo-pkg", [], TEXT_HTML), SERVED).files == ()


# -- pages as other servers write them ------------------------------------------


def test_a_pypiserver_page() -> None:
    # pypiserver: relative links to ../../packages/, hash in the fragment,
    # no repository version, requires-python entity-escaped.
    body = (b'<html><head><title>Links for demo-pkg</title></head><body>\n'
            b'<h1>Links for demo-pkg</h1>\n'
            b'<a href="../../packages/demo_pkg-1.0.tar.gz#sha256=' + SHA_A.upper().encode()
            + b'" data-requires-python="&gt;=3.8">demo_pkg-1.0.tar.gz</a><br>\n'
            b'<a href="../../packages/demo-pkg-0.9.zip#md5=' + b"0" * 32 + b'">'
            b'demo-pkg-0.9.zip</a><br>\n</body></html>\n')
    page = parse_html_page(body, "http://127.0.0.1:8080/simple/demo-pkg/")
    assert page.api_version is None and page.last_serial is None
    new, old = page.files
    assert new.url == "http://127.0.0.1:8080/packages/demo_pkg-1.0.tar.gz"
    assert new.hashes == {"sha256": SHA_A} and new.requires_python == ">=3.8"
    # No sha256: kept, but flagged for hashing before it is served.
    assert old.hashes == {"md5": "0" * 32} and old.sha256 is None
    assert page.versions == ("0.9", "1.0")


def test_a_devpi_page() -> None:
    # devpi: absolute +f/ links, data-yanked with and without a reason,
    # data-dist-info-metadata from before PEP 714, repeated links in other markup.
    body = html_page(
        '<a href="https://devpi.example/root/pypi/+f/aaa/demo_pkg-1.0-py3-none-any.whl'
        f'#sha256={SHA_A}" data-yanked="" data-dist-info-metadata="sha256={SHA_M}">x</a>',
        '<A HREF="https://devpi.example/root/pypi/+f/bbb/demo_pkg-1.1.tar.gz'
        f'#sha256={SHA_B}" DATA-YANKED="security: CVE-2026-1" data-requires-python=">=3.9">y</A>',
        '<a href="demo_pkg-1.2.tar.gz" data-yanked data-dist-info-metadata="true">z</a>',
        head='<meta name="pypi:repository-version" content="1.0">')
    page = parse_html_page(body, "https://devpi.example/root/pypi/+simple/demo-pkg/")
    a, b, c = page.files
    assert (a.yanked, a.yanked_reason, a.core_metadata) == (True, None, {"sha256": SHA_M})
    assert (b.yanked, b.yanked_reason, b.requires_python) == (True, "security: CVE-2026-1",
                                                              ">=3.9")
    assert (c.yanked, c.yanked_reason, c.core_metadata) == (True, None, True)
    assert c.url == "https://devpi.example/root/pypi/+simple/demo-pkg/demo_pkg-1.2.tar.gz"


def test_data_core_metadata_wins_over_the_old_name() -> None:
    body = html_page(f'<a href="demo_pkg-1.0.tar.gz" data-dist-info-metadata="true" '
                     f'data-core-metadata="sha256={SHA_M}">x</a>')
    assert parse_html_page(body, PAGE).files[0].core_metadata == {"sha256": SHA_M}


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("TRUE", True), (f"sha256={SHA_M}", {"sha256": SHA_M}),
    ("sha1=" + "0" * 40, True),  # there is metadata, with no hash we keep
    ("false", False), ("", False), ("sha256=", False), ("yes", False),
])
def test_html_core_metadata_values(value: str, expected: Any) -> None:
    body = html_page(f'<a href="demo_pkg-1.0.tar.gz" data-core-metadata="{value}">x</a>')
    assert parse_html_page(body, PAGE).files[0].core_metadata == expected


def test_a_base_href_and_public_index_extras() -> None:
    body = html_page(
        f'<a href="files/demo_pkg-1.0.tar.gz#sha256={SHA_A}" data-provenance="prov/1">x</a>'
        "<!--SERIAL 123456-->",
        head='<base href="https://files.example/root/"><base href="https://ignored.example/">'
             '<meta name="pypi:repository-version" content="1.3">'
             '<meta name="pypi:project-status" content="Archived">'
             '<meta name="pypi:project-status-reason" content="moved">')
    page = parse_html_page(body, PAGE)
    (f,) = page.files
    assert f.url == "https://files.example/root/files/demo_pkg-1.0.tar.gz"
    assert f.provenance == "https://files.example/root/prov/1"
    assert (page.last_serial, page.api_version) == (123456, "1.3")
    assert (page.project_status, page.project_status_reason) == ("archived", "moved")


def test_html_name_comes_from_the_argument_or_the_url() -> None:
    body = html_page('<a href="demo_pkg-1.0.tar.gz">x</a>')
    assert parse_html_page(body, "https://upstream.example/simple/Demo.Pkg/").name == "demo-pkg"
    assert parse_html_page(body, "https://upstream.example/x/", name="demo_pkg").name == "demo-pkg"
    with pytest.raises(UpstreamPageError):
        parse_html_page(body, "https://upstream.example/")


def test_json_page_of_the_public_index_shape() -> None:
    body = json_page(
        [json_file(url="https://files.example/packages/aa/bb/demo_pkg-1.0.tar.gz",
                   hashes={"sha256": SHA_A.upper(), "blake2b": "e" * 128, "sha1": "0" * 40},
                   **{"requires-python": ">=3.8", "core-metadata": {"sha256": SHA_M},
                      "data-dist-info-metadata": {"sha256": SHA_M}, "size": 10,
                      "upload-time": "2024-02-03T04:05:06.000007Z", "yanked": False,
                      "provenance": "https://upstream.example/integrity/demo-pkg/1.0/x/",
                      "gpg-sig": False, "_private": 1, "unknown-key": [1]}),
         json_file(filename="demo_pkg-1.1.tar.gz", url="/packages/demo_pkg-1.1.tar.gz",
                   yanked="broken", **{"dist-info-metadata": True, "size": 0})],
        versions=["1.0", "1.1", "1.2"],  # 1.2: a release without files
        meta={"api-version": "1.4", "_last-serial": 99})
    page = parse_json_page(body, PAGE, name="Demo_Pkg")
    a, b = page.files
    assert a.hashes == {"sha256": SHA_A, "blake2b": "e" * 128}  # sha1 is not kept
    assert (a.size, a.upload_time, a.core_metadata) == (10, "2024-02-03T04:05:06.000007Z",
                                                         {"sha256": SHA_M})
    assert a.provenance == "https://upstream.example/integrity/demo-pkg/1.0/x/"
    assert (b.url, b.yanked, b.yanked_reason, b.core_metadata, b.size) == (
        "https://upstream.example/packages/demo_pkg-1.1.tar.gz", True, "broken", True, 0)
    assert (page.versions, page.last_serial, page.api_version) == (("1.0", "1.1", "1.2"), 99,
                                                                   "1.4")


def test_json_versions_gain_what_the_files_imply() -> None:
    body = json_page([json_file(), json_file(filename="demo_pkg-3.0.tar.gz", url="x/3")],
                     versions=["1.0"])
    assert parse_json_page(body, PAGE).versions == ("1.0", "3.0")
    body = json_page([json_file(filename="demo_pkg-10.0.tar.gz", url="a"),
                      json_file(filename="demo_pkg-9.0.tar.gz", url="b")])
    assert parse_json_page(body, PAGE).versions == ("9.0", "10.0")  # PEP 440 order


@pytest.mark.parametrize(("yanked", "expected"), [
    (True, (True, None)), (False, (False, None)), ("why", (True, "why")),
    ("", (False, None)),  # PEP 691: a falsy value is not a yank
])
def test_json_yanked_values(yanked: Any, expected: tuple[bool, str | None]) -> None:
    (f,) = parse_json_page(json_page([json_file(yanked=yanked)]), PAGE).files
    assert (f.yanked, f.yanked_reason) == expected


@pytest.mark.parametrize(("keys", "expected"), [
    ({}, False), ({"core-metadata": False, "dist-info-metadata": True}, False),
    ({"dist-info-metadata": {"sha256": SHA_M}}, {"sha256": SHA_M}),
    ({"data-dist-info-metadata": True}, True),
    ({"core-metadata": {}}, True), ({"core-metadata": {"sha256": "zz"}}, True),
    ({"core-metadata": "yes"}, False),
])
def test_json_core_metadata_and_its_old_names(keys: dict[str, Any], expected: Any) -> None:
    (f,) = parse_json_page(json_page([json_file(**keys)]), PAGE).files
    assert f.core_metadata == expected


def test_a_fragment_hash_in_a_json_url_fills_a_missing_sha256() -> None:
    (f,) = parse_json_page(json_page([json_file(url=f"x.tar.gz#sha256={SHA_B}", hashes={})]),
                           PAGE).files
    assert f.url == "https://upstream.example/simple/demo-pkg/x.tar.gz"
    assert f.hashes == {"sha256": SHA_B}
    (f,) = parse_json_page(json_page([json_file(url=f"x#sha256={SHA_B}")]), PAGE).files
    assert f.hashes == {"sha256": SHA_A}  # the hashes object wins


def test_upload_times_that_are_not_iso_8601_are_dropped() -> None:
    for value, kept in [("2024-01-01T00:00:00Z", True), ("2024-01-01T00:00:00+00:00", True),
                        ("2024-01-01", False), ("yesterday", False), (5, False),
                        ("2024-01-01T00:00:00", False)]:
        (f,) = parse_json_page(json_page([json_file(**{"upload-time": value})]), PAGE).files
        assert f.upload_time == (value if kept else None), value


@pytest.mark.parametrize(("content_type", "expected"), [
    (JSON_V1, "json"), (f"{JSON_V1}; charset=utf-8", "json"),
    ("application/vnd.pypi.simple.latest+json", "json"), (HTML_V1, "html"),
    ("text/html; charset=utf-8", "html"), ("TEXT/HTML", "html"),
    ("application/json", None), ("text/plain", None), ("", None), (None, None),
])
def test_page_format(content_type: str | None, expected: str | None) -> None:
    assert page_format(content_type) == expected


def test_accept_prefers_json_then_html() -> None:
    assert ACCEPT == (f"{JSON_V1}, {HTML_V1};q=0.2, {TEXT_HTML};q=0.1")


# -- hostile and broken pages ---------------------------------------------------


@pytest.mark.parametrize("body", [
    b"", b"null", b"[]", b'"page"', b"{", b"\xff\xfe\x00", b'{"meta": 1, "files": []}',
    b'{"meta": {}, "name": "demo-pkg", "files": []}',
    b'{"meta": {"api-version": "1.0"}, "name": "demo-pkg"}',
    b'{"meta": {"api-version": "1.0"}, "name": "demo-pkg", "files": {}}',
    b'{"meta": {"api-version": "1.0"}, "name": "other", "files": []}',
    b'{"meta": {"api-version": "1.0"}, "name": "../etc", "files": []}',
    b'{"meta": {"api-version": "1.0"}, "name": 5, "files": []}',
    b'{"meta": {"api-version": "2.0"}, "name": "demo-pkg", "files": []}',
    b'{"meta": {"api-version": "1.0"}, "name": "demo-pkg", "files": [], "versions": "1.0"}',
    b'{"meta": {"api-version": "1.0"}, "name": "demo-pkg", "files": [], "versions": [1]}',
    b'{"meta": {"api-version": "1.0"}, "name": "demo-pkg", "files": [], "x": NaN}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' + b"9" * 5000 + b"}",
])
def test_garbage_json_is_a_typed_error(body: bytes) -> None:
    with pytest.raises(UpstreamPageError):
        parse_json_page(body, PAGE, name="demo-pkg")


def test_a_higher_major_repository_version_is_refused_in_html_too() -> None:
    with pytest.raises(UpstreamPageError, match=r"version 2\.1; only 1\.x"):
        parse_html_page(html_page(head='<meta name="pypi:repository-version" content="2.1">'),
                        PAGE)


@pytest.mark.parametrize(("entry", "reason"), [
    ("demo_pkg-1.0.tar.gz", "not an object"),
    (json_file(filename="../demo_pkg-1.0.tar.gz"), "not an accepted"),
    (json_file(filename="demo_pkg-1.0.tar.gz/../../x"), "not an accepted"),
    (json_file(filename="demo_pkg-1.0.exe"), "not an accepted"),
    (json_file(filename="demo_pkg-1.0-py2.7.egg"), "not an accepted"),
    (json_file(filename="demo_pkg-1.0-py3-none-lolcat.whl"), "not an accepted"),
    (json_file(filename="demo_pkg-1.0\n.tar.gz"), "not an accepted"),
    (json_file(filename="other-1.0.tar.gz"), "another project"),
    (json_file(filename=5), "must be strings"),
    (json_file(url=None), "must be strings"),
    (json_file(url="javascript:alert(1)"), "not http(s)"),
    (json_file(url="file:///etc/passwd"), "not http(s)"),
    (json_file(url="https://upstream.example:99999/x"), "not http(s)"),
    (json_file(url="https://upstream.example/" + "x" * 9000), "too long"),
    (json_file(url="https://upstream.example/a b"), "not http(s)"),
    (json_file(hashes=["sha256", SHA_A]), "hashes"),
    (json_file(**{"requires-python": 3.8}), "requires-python"),
    (json_file(**{"requires-python": ">=3\x00"}), "requires-python"),
    (json_file(**{"requires-python": ">=3" * 3000}), "requires-python"),
    (json_file(yanked=1), "yanked"),
    (json_file(yanked="x" * 5000), "yank reason"),
    (json_file(size=-1), "size"), (json_file(size="10"), "size"), (json_file(size=True), "size"),
])
def test_bad_entries_are_skipped_and_counted(entry: Any, reason: str) -> None:
    page = parse_json_page(json_page([entry, json_file(filename="demo_pkg-9.tar.gz", url="ok")]),
                           PAGE)
    assert [f.filename for f in page.files] == ["demo_pkg-9.tar.gz"]
    assert page.skipped == 1
    assert reason in page.skipped_examples[0]


def test_non_hex_or_unknown_hashes_are_dropped() -> None:
    hashes = {"sha256": "g" * 64, "md5": "0" * 31, "sha512": "F" * 128, "SHA384": "1" * 96,
              "crc32": "00000000", "blake2b": "2" * 64, 5: "x", "sha224": "3" * 56}
    (f,) = parse_json_page(json_page([json_file(hashes=hashes)]), PAGE).files
    assert f.hashes == {"sha512": "f" * 128, "sha384": "1" * 96}
    assert f.sha256 is None


HOSTILE_LINKS = {
    # href: why it is skipped
    "../x.whl": "not an accepted distribution file name",
    "../../etc/passwd": "not an accepted distribution file name",
    "javascript:alert(1)//demo_pkg-1.0.tar.gz": "the URL is not http(s) or too long",
    "demo_pkg-1.0.tar.gz%2F..%2F..%2Fx": "not an accepted distribution file name",
    "data:,x/demo_pkg-1.0.tar.gz": "the URL is not http(s) or too long",
    "ftp://h/demo_pkg-1.0.tar.gz": "the URL is not http(s) or too long",
    "file:///demo_pkg-1.0.tar.gz": "the URL is not http(s) or too long",
}


@pytest.mark.parametrize(("href", "reason"), list(HOSTILE_LINKS.items()))
def test_each_hostile_html_link_is_skipped_for_its_reason(href: str, reason: str) -> None:
    page = parse_html_page(html_page(f'<a href="{href}">x</a>'), PAGE)
    assert page.files == ()
    assert (page.skipped, page.skipped_examples) == (1, (f"{href!r}: {reason}",))


def test_hostile_html_links_are_skipped() -> None:
    body = html_page(*(f'<a href="{href}">x</a>' for href in HOSTILE_LINKS),
                     '<a href="demo_pkg-1.0.tar.gz#sha256=nothex">ok</a>',
                     '<a href="other/demo_pkg-1.0.tar.gz">dup</a>',
                     "<a>no href</a>", '<a href="">empty</a>')
    page = parse_html_page(body, PAGE)
    (f,) = page.files
    assert f.url == PAGE + "demo_pkg-1.0.tar.gz" and f.hashes == {}
    # Every hostile link and the repeat; anchors without an href are not entries.
    assert page.skipped == len(HOSTILE_LINKS) + 1
    assert len(page.skipped_examples) == MAX_SKIPPED_EXAMPLES
    assert page.skipped_examples == tuple(
        f"{href!r}: {reason}" for href, reason in HOSTILE_LINKS.items()
    )[:MAX_SKIPPED_EXAMPLES]


def test_a_repeated_file_name_is_skipped_as_a_repeat() -> None:
    page = parse_html_page(html_page('<a href="demo_pkg-1.0.tar.gz">a</a>',
                                     '<a href="other/demo_pkg-1.0.tar.gz">b</a>'), PAGE)
    assert [f.url for f in page.files] == [PAGE + "demo_pkg-1.0.tar.gz"]
    assert page.skipped_examples == ("'other/demo_pkg-1.0.tar.gz': a repeated file name",)


def test_markup_that_breaks_html_parser_is_a_typed_error_or_parses() -> None:
    for body in [b"<![x[", b"<![if !supportLists]>", b"<!", b"</", b"<a href='x", b"<<<>>>",
                 b"<a href=demo_pkg-1.0.tar.gz data-yanked>", b"&#xffffffff;"]:
        try:
            page = parse_html_page(body, PAGE)
        except UpstreamPageError:
            continue
        assert isinstance(page, ProjectPage)


def test_too_many_files_is_refused() -> None:
    with pytest.raises(UpstreamPageError, match="more than"):
        parse_json_page(json_page([{}] * (MAX_FILES + 1)), PAGE)
    with pytest.raises(UpstreamPageError, match="more than"):
        parse_html_page(b'<a href="x">x</a>' * (MAX_FILES + 1), PAGE)


def test_too_many_versions_is_refused() -> None:
    with pytest.raises(UpstreamPageError, match="versions"):
        parse_json_page(json_page([], versions=[str(i) for i in range(100_001)]), PAGE)


def test_skipped_examples_are_bounded() -> None:
    page = parse_json_page(json_page([{"filename": "x" * 1000}] * 50), PAGE)
    assert page.skipped == 50 and len(page.skipped_examples) == 5
    assert all(len(e) < 200 for e in page.skipped_examples)


@deterministic
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_but_a_page_error(body: bytes) -> None:
    for parse in (parse_json_page, parse_html_page):
        try:
            assert isinstance(parse(body, PAGE, name="demo-pkg"), ProjectPage)
        except UpstreamPageError:
            pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["demo_pkg-1.0.tar.gz", "1.0", "sha256", SHA_A, "https://x.example/a"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["filename", "url", "hashes", "sha256", "yanked", "size",
                                       "requires-python", "core-metadata", "upload-time",
                                       "dist-info-metadata", "provenance", "x"]),
                      children, max_size=6),
    max_leaves=20)


@deterministic
@given(files=st.lists(_json_values, max_size=5), versions=_json_values, meta=_json_values)
def test_arbitrary_json_structures_never_raise_anything_but_a_page_error(
        files: list[Any], versions: Any, meta: Any) -> None:
    for document in ({"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": files,
                      "versions": versions},
                     {"meta": meta, "name": "demo-pkg", "files": files}):
        try:
            page = parse_json_page(json.dumps(document).encode(), PAGE)
        except UpstreamPageError:
            continue
        for f in page.files:
            assert f.url.startswith(("http://", "https://")) and "#" not in f.url
            assert all(len(v) == {"sha256": 64, "sha384": 96, "sha512": 128, "blake2b": 128,
                                  "md5": 32}[k] for k, v in f.hashes.items())


@deterministic
@given(st.lists(st.sampled_from([
    '<a href="demo_pkg-1.0.tar.gz">', '<a href="', "data-yanked", '">', "</a>", "<!--", "-->",
    "<![", "[", "]>", "&gt;", "&#", "<meta name=pypi:repository-version content=", "1.0", "9.0",
    "<base href=", "//evil.example/", "'", '"', "<", ">", "SERIAL 5", "#sha256=" + SHA_A,
    "\x00", "\u212a", " ",
]), max_size=30).map("".join))
def test_arbitrary_markup_never_raises_anything_but_a_page_error(markup: str) -> None:
    try:
        page = parse_html_page(markup.encode(), PAGE)
    except UpstreamPageError:
        return
    assert all(f.filename == "demo_pkg-1.0.tar.gz" for f in page.files)
