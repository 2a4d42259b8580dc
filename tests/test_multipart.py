"""Unit tests for pypireg.http.multipart: the bounded streaming form reader.

Everything here is sans-I/O: bodies are built in memory and pushed into a
FormReader in chunks; the file part goes to an in-memory sink.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pypireg.domain.errors import BadUpload, TooLarge
from pypireg.http.multipart import MAX_FIELD_BYTES, MAX_PARTS, FormReader, boundary_from
from tests.distributions import upload_form, wheel_bytes, wheel_filename

# Deterministic: the same examples on every run, nothing written to .hypothesis/.
deterministic = settings(derandomize=True, database=None, max_examples=150,
                         suppress_health_check=[HealthCheck.too_slow])

BOUNDARY = "pypiregboundary"
FILENAME = wheel_filename("demo-pkg", "1.0")
WHEEL = wheel_bytes("demo-pkg", "1.0")
CONTENT_TYPE, BODY = upload_form("demo-pkg", "1.0", FILENAME, WHEEL,
                                 extra={"summary": "A tést pâckage ✓"})
EXPECTED_FIELDS = {
    ":action": ["file_upload"], "protocol_version": ["1"], "name": ["demo-pkg"],
    "version": ["1.0"], "filetype": ["bdist_wheel"], "pyversion": ["py3"],
    "metadata_version": ["2.1"], "sha256_digest": [hashlib.sha256(WHEEL).hexdigest()],
    "md5_digest": [hashlib.md5(WHEEL).hexdigest()],
    "blake2_256_digest": [hashlib.blake2b(WHEEL, digest_size=32).hexdigest()],
    "summary": ["A tést pâckage ✓"],
}


class Sink:
    """Collects what the reader writes for the file part."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.chunks.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class Harness:
    """A FormReader plus the sinks it opened."""

    def __init__(self, *, boundary: str = BOUNDARY, max_file_size: int = 10 * 1024 * 1024
                 ) -> None:
        self.opened: list[tuple[str, Sink]] = []
        self.reader = FormReader(boundary, max_file_size=max_file_size, open_file=self._open)

    def _open(self, filename: str) -> Sink:
        sink = Sink()
        self.opened.append((filename, sink))
        return sink

    def feed_all(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.reader.feed(chunk)
        self.reader.close()


def split(data: bytes, points: Iterable[int]) -> list[bytes]:
    """*data* cut at *points* (those inside it), as non-empty chunks."""
    cuts = [0, *sorted({p for p in points if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def read(body: bytes, points: Iterable[int] = (), *, boundary: str = BOUNDARY,
         max_file_size: int = 10 * 1024 * 1024) -> Harness:
    harness = Harness(boundary=boundary, max_file_size=max_file_size)
    harness.feed_all(split(body, points))
    return harness


def part(name: str, value: bytes | str, *, filename: str | None = None,
         disposition: str | None = None, extra_headers: Sequence[str] = ()) -> bytes:
    if disposition is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
    headers = [f"Content-Disposition: {disposition}", *extra_headers]
    if isinstance(value, str):
        value = value.encode()
    return (f"--{BOUNDARY}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode() \
        + value + b"\r\n"


def body_of(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def basic_parts() -> list[bytes]:
    return [part("name", "demo-pkg"), part("version", "1.0")]


def content_part(data: bytes = b"wheel bytes", filename: str = FILENAME) -> bytes:
    return part("content", data, filename=filename,
                extra_headers=["Content-Type: application/octet-stream"])


def refused(body: bytes, points: Iterable[int] = ()) -> str:
    with pytest.raises(BadUpload) as info:
        read(body, points)
    return info.value.reason


# -- boundary_from ------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "expected"), [
    (b"multipart/form-data; boundary=pypiregboundary", "pypiregboundary"),
    (b'multipart/form-data; boundary="quoted boundary"', "quoted boundary"),
    (b"Multipart/Form-Data; BOUNDARY=abc", "abc"),
    (b"multipart/form-data; charset=utf-8; boundary=abc", "abc"),
    (b"multipart/form-data; boundary=" + b"x" * 200, "x" * 200),
])
def test_boundary_from_reads_the_boundary(content_type: bytes, expected: str) -> None:
    assert boundary_from(content_type) == expected


@pytest.mark.parametrize("content_type", [None, b""])
def test_missing_content_type_is_refused(content_type: bytes | None) -> None:
    with pytest.raises(BadUpload, match="Missing Content-Type"):
        boundary_from(content_type)


@pytest.mark.parametrize("content_type", [
    b"text/plain", b"application/x-www-form-urlencoded", b"multipart/mixed; boundary=abc",
    b"application/octet-stream; boundary=abc",
])
def test_other_content_types_are_refused(content_type: bytes) -> None:
    with pytest.raises(BadUpload, match="Unsupported Content-Type"):
        boundary_from(content_type)


@pytest.mark.parametrize("content_type", [
    b"multipart/form-data",
    b"multipart/form-data;",
    b"multipart/form-data; boundary=",
    b'multipart/form-data; boundary=""',
    b"multipart/form-data; charset=utf-8",
    b"multipart/form-data; boundary=" + b"x" * 201,
])
def test_missing_or_bad_boundary_is_refused(content_type: bytes) -> None:
    with pytest.raises(BadUpload, match="no valid boundary"):
        boundary_from(content_type)


@deterministic
@given(st.binary(max_size=300).filter(lambda b: b"\n" not in b))
def test_boundary_from_raises_only_bad_upload(content_type: bytes) -> None:
    # (A header value never contains LF: HTTP splits header lines on it.)
    try:
        boundary = boundary_from(content_type)
    except BadUpload:
        return
    assert 0 < len(boundary) <= 200
    FormReader(boundary, max_file_size=1, open_file=lambda name: Sink())


# -- a valid body, however it is chunked --------------------------------------


def assert_read_correctly(harness: Harness) -> None:
    reader = harness.reader
    assert reader.fields == EXPECTED_FIELDS
    assert reader.filename == FILENAME
    assert reader.file_size == len(WHEEL)
    assert [name for name, _ in harness.opened] == [FILENAME]
    assert harness.opened[0][1].data == WHEEL


def test_valid_body_in_one_chunk() -> None:
    assert_read_correctly(read(BODY))


def test_valid_body_one_byte_at_a_time() -> None:
    assert_read_correctly(read(BODY, range(1, len(BODY))))


@deterministic
@given(st.lists(st.integers(min_value=1, max_value=len(BODY) - 1), max_size=40))
@example([len(BODY) - 1])
@example([len(BODY) - 2])
@example([len(BODY) - 3])
@example([len(BODY) - len(f"\r\n--{BOUNDARY}--\r\n")])
def test_valid_body_gives_the_same_fields_and_file_at_any_chunking(points: list[int]) -> None:
    assert_read_correctly(read(BODY, points))


@pytest.mark.parametrize("cut_from_end", [1, 2])
def test_final_crlf_in_its_own_chunk_is_accepted(cut_from_end: int) -> None:
    # twine ends the body with "--boundary--\r\n"; the CRLF may come in a later read.
    assert_read_correctly(read(BODY, [len(BODY) - cut_from_end]))


def test_epilogue_after_the_closing_boundary_is_ignored() -> None:
    body = body_of(*basic_parts())
    harness = read(body + b"an epilogue\r\n", [len(body)])
    assert harness.reader.fields == {"name": ["demo-pkg"], "version": ["1.0"]}


@deterministic
@given(st.binary(max_size=3000).filter(lambda b: f"\r\n--{BOUNDARY}".encode() not in b),
       st.lists(st.integers(min_value=1, max_value=4000), max_size=20))
@example(f"\r\n--{BOUNDARY[:-1]}\r\n--\r\r\n-".encode(), [])
@example(f"\r\n--{BOUNDARY[:-1]}\r\n--\r\r\n-".encode(), list(range(1, 200)))
@example(b"\r", [])
@example(b"", [])
def test_any_file_bytes_survive_any_chunking(content: bytes, points: list[int]) -> None:
    body = body_of(*basic_parts(), content_part(content))
    harness = read(body, points)
    assert harness.reader.fields == {"name": ["demo-pkg"], "version": ["1.0"]}
    assert harness.reader.file_size == len(content)
    assert harness.opened[0][1].data == content


def test_repeated_multi_valued_fields_are_all_kept_in_order() -> None:
    classifiers = ["Programming Language :: Python", "License :: OSI Approved", "Typing :: Typed"]
    body = body_of(*basic_parts(), *(part("classifiers", c) for c in classifiers),
                   part("requires_dist", "attrs"), part("requires_dist", "twisted>=24"),
                   content_part())
    fields = read(body).reader.fields
    assert fields["classifiers"] == classifiers
    assert fields["requires_dist"] == ["attrs", "twisted>=24"]


def test_other_file_parts_are_ignored() -> None:
    body = body_of(*basic_parts(), part("gpg_signature", b"\xff\xfe sig", filename="x.asc"),
                   content_part())
    harness = read(body)
    assert "gpg_signature" not in harness.reader.fields
    assert [name for name, _ in harness.opened] == [FILENAME]


def test_empty_field_value_is_kept() -> None:
    body = body_of(*basic_parts(), part("summary", ""), content_part())
    assert read(body).reader.fields["summary"] == [""]


@pytest.mark.parametrize("points", [(), range(3, 200, 3)])
def test_preamble_before_the_first_boundary_is_ignored(points: Iterable[int]) -> None:
    body = b"this is a preamble\r\n" + body_of(*basic_parts(), content_part())
    assert read(body, points).reader.fields["name"] == ["demo-pkg"]


def test_body_without_a_file_reads_fields_only() -> None:
    harness = read(body_of(*basic_parts()))
    assert harness.reader.filename is None
    assert harness.reader.file_size == 0
    assert harness.opened == []


# -- truncated and malformed bodies -------------------------------------------


def test_empty_body_is_refused_on_close() -> None:
    harness = Harness()
    with pytest.raises(BadUpload, match="Malformed multipart/form-data body"):
        harness.reader.close()


@deterministic
@given(st.integers(min_value=0, max_value=len(BODY) - 3), st.integers(min_value=1))
@example(len(BODY) - 3, 1)
@example(len(BODY) - len(f"--{BOUNDARY}--\r\n"), 1)
@example(len(WHEEL) // 2 + 500, 1)
def test_truncated_body_is_refused(length: int, chunk_size: int) -> None:
    body = BODY[:length]
    harness = Harness()
    with pytest.raises(BadUpload, match="Malformed multipart/form-data body"):
        for start in range(0, len(body), chunk_size):
            harness.reader.feed(body[start:start + chunk_size])
        harness.reader.close()


def test_truncated_body_refusal_happens_on_close() -> None:
    harness = Harness()
    harness.reader.feed(BODY[:-20])  # the file part is open, nothing wrong so far
    with pytest.raises(BadUpload, match="Malformed multipart/form-data body"):
        harness.reader.close()


def test_body_with_another_boundary_is_refused() -> None:
    with pytest.raises(BadUpload):
        read(BODY, boundary="someotherboundary")


def test_part_header_line_over_4_kib_is_refused() -> None:
    long_name = "x" * 5000
    body = body_of(part("name", "demo-pkg"), content_part(filename=long_name))
    assert "Malformed upload form" in refused(body)


def test_part_header_line_over_4_kib_is_refused_when_it_trickles_in() -> None:
    body = body_of(part("summary", "s", extra_headers=["X-Padding: " + "p" * 5000]))
    assert "Malformed upload form" in refused(body, range(100, len(body), 100))


def test_folded_part_header_over_4_kib_is_refused() -> None:
    folded = ["X-Padding: start", *(" " + "p" * 1000 for _ in range(5))]
    assert "Malformed" in refused(body_of(part("summary", "s", extra_headers=folded)))


def test_part_header_line_of_exactly_4_kib_is_accepted() -> None:
    header = "X-Padding: " + "p" * (4096 - len("X-Padding: "))
    assert len(header) == 4096
    body = body_of(part("summary", "s", extra_headers=[header]))
    assert read(body).reader.fields == {"summary": ["s"]}


def test_more_than_8_headers_in_a_part_is_refused() -> None:
    headers = [f"X-H{i}: v" for i in range(8)]
    assert "Malformed upload form" in refused(body_of(part("summary", "s",
                                                            extra_headers=headers)))


def test_more_than_1000_parts_is_refused() -> None:
    body = body_of(*(part("classifiers", f"c{i}") for i in range(MAX_PARTS + 1)))
    assert "Malformed upload form" in refused(body)


def test_exactly_1000_parts_are_accepted() -> None:
    body = body_of(*(part("classifiers", f"c{i}") for i in range(MAX_PARTS - 1)),
                   content_part())
    harness = read(body)
    assert len(harness.reader.fields["classifiers"]) == MAX_PARTS - 1
    assert harness.reader.filename == FILENAME


@pytest.mark.parametrize("field", ["name", "version", ":action", "sha256_digest", "summary"])
def test_duplicate_single_valued_field_is_refused(field: str) -> None:
    body = body_of(part(field, "one"), part(field, "two"), content_part())
    assert refused(body) == f"Malformed upload form: duplicate field {field!r}."


def test_two_content_files_are_refused() -> None:
    body = body_of(*basic_parts(), content_part(b"one"), content_part(b"two"))
    assert refused(body) == "Malformed upload form: more than one 'content' file."


@pytest.mark.parametrize("content", [
    part("content", b"wheel bytes"),
    part("content", b"wheel bytes", filename=""),
])
def test_content_part_without_file_name_is_refused(content: bytes) -> None:
    body = body_of(*basic_parts(), content)
    assert refused(body) == "The 'content' part must be a file with a file name."


@pytest.mark.parametrize("disposition", ['attachment; name="name"', 'inline; name="x"'])
def test_part_that_is_not_form_data_is_refused(disposition: str) -> None:
    body = body_of(part("name", "demo-pkg", disposition=disposition))
    assert "Malformed" in refused(body)


@pytest.mark.parametrize("disposition", ["form-data", 'form-data; filename="x"'])
def test_part_without_a_name_is_refused(disposition: str) -> None:
    body = body_of(part("name", "demo-pkg"), part("", "value", disposition=disposition))
    assert refused(body) == ("Malformed upload form: every part needs "
                             "'Content-Disposition: form-data; name=...'.")


def test_part_without_content_disposition_is_refused() -> None:
    raw = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nvalue\r\n--{BOUNDARY}--\r\n"
    assert "Malformed" in refused(raw.encode())


def test_text_fields_over_4_mib_in_total_are_refused() -> None:
    half = MAX_FIELD_BYTES // 2 + 1
    body = body_of(*basic_parts(), part("description", "d" * half), part("summary", "s" * half),
                   content_part())
    assert refused(body) == (
        f"Malformed upload form: the text fields exceed {MAX_FIELD_BYTES} bytes.")


def test_text_fields_of_exactly_4_mib_in_total_are_accepted() -> None:
    used = len("demo-pkg") + len("1.0")
    body = body_of(*basic_parts(), part("description", "d" * (MAX_FIELD_BYTES - used)),
                   content_part())
    assert len(read(body).reader.fields["description"][0]) == MAX_FIELD_BYTES - used


def test_ignored_file_parts_count_towards_the_text_limit() -> None:
    body = body_of(*basic_parts(),
                   part("gpg_signature", b"s" * (MAX_FIELD_BYTES + 1), filename="x.asc"))
    assert "text fields exceed" in refused(body)


def test_non_utf8_field_value_is_refused() -> None:
    body = body_of(*basic_parts(), part("summary", b"caf\xe9"), content_part())
    assert refused(body) == "Form field 'summary' is not valid UTF-8."


def test_non_utf8_part_header_is_refused() -> None:
    raw = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; "
           f"filename=\"caf").encode() + b"\xe9" + f"\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    assert "Malformed" in refused(raw)


def test_file_over_max_file_size_is_too_large() -> None:
    body = body_of(*basic_parts(), content_part(b"x" * 1001))
    harness = Harness(max_file_size=1000)
    with pytest.raises(TooLarge) as info:
        harness.feed_all(split(body, range(64, len(body), 64)))
    assert info.value.code == 413
    assert "uploads.max_size" in info.value.reason
    assert len(harness.opened[0][1].data) <= 1000  # nothing past the limit reached the sink


def test_file_of_exactly_max_file_size_is_accepted() -> None:
    body = body_of(*basic_parts(), content_part(b"x" * 1000))
    assert read(body, max_file_size=1000).reader.file_size == 1000


# -- nothing but BadUpload / TooLarge escapes ---------------------------------


def feed_hostile(body: bytes, points: Iterable[int], max_file_size: int = 4096) -> None:
    """Feed and close; only the two documented errors may come out."""
    harness = Harness(max_file_size=max_file_size)
    try:
        harness.feed_all(split(body, points))
    except (BadUpload, TooLarge):
        pass


@deterministic
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=1, max_value=2000), max_size=8))
@example(b"--" + BOUNDARY.encode() + b"\r\n\r\n\r\n--" + BOUNDARY.encode() + b"--", [])
@example(b"--" + BOUNDARY.encode() + b"--\r\n", [])
@example(b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=x\r\n\r\n", [5])
def test_random_bytes_raise_only_bad_upload_or_too_large(data: bytes, points: list[int]
                                                          ) -> None:
    feed_hostile(data, points)


SMALL_BODY = body_of(part("name", "demo-pkg"), part("classifiers", "a"),
                     part("classifiers", "b"), content_part(b"0123456789" * 30))


@st.composite
def mutated_body(draw: st.DrawFn) -> bytes:
    data = bytearray(SMALL_BODY)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "splice"]))
        if op == "replace" and at < len(data):
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from([
                b"\r\n", b"\n", b"\r", b"--", b"\x00", b"\xff", b'"', b";", b":",
                f"\r\n--{BOUNDARY}\r\n".encode(), f"\r\n--{BOUNDARY}--".encode(),
                b'Content-Disposition: form-data; name="content"; filename="x.whl"\r\n',
                b'Content-Disposition: form-data; name="name"\r\n',
            ]))
        elif op == "delete":
            del data[at:at + draw(st.integers(min_value=1, max_value=40))]
        else:  # duplicate a stretch of the body elsewhere
            start = draw(st.integers(min_value=0, max_value=len(SMALL_BODY) - 1))
            data[at:at] = SMALL_BODY[start:start + draw(st.integers(1, 120))]
    return bytes(data)


@deterministic
@given(mutated_body(), st.lists(st.integers(min_value=1, max_value=800), max_size=8),
       st.sampled_from([100, 300, 4096]))
def test_mutated_bodies_raise_only_bad_upload_or_too_large(
        body: bytes, points: list[int], max_file_size: int) -> None:
    feed_hostile(body, points, max_file_size)
