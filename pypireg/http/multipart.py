"""A bounded, streaming multipart/form-data reader for the upload form.

HTTP layer, sans-I/O. One typed wrapper around `multipart`'s
PushMultipartParser (chosen over python-multipart: it raises on truncated
bodies and on every limit instead of silently accepting them; see
bench/multipart_parsers.py). The file part is handed chunk by chunk to a
sink; the small fields are kept in memory with bounds on their number and
size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import multipart

from pypireg.domain.errors import BadUpload, TooLarge

MAX_PARTS = 1000
MAX_FIELD_BYTES = 4 * 1024 * 1024  # all text fields together (long descriptions)
FILE_FIELD = "content"
# Fields that may appear more than once in the legacy upload form.
MULTI_VALUED = frozenset({
    "classifiers", "platform", "supported_platform", "requires_dist", "provides_dist",
    "obsoletes_dist", "requires_external", "project_urls", "dynamic", "provides_extra",
    "provides_extras", "license_file", "license_files", "requires", "provides", "obsoletes",
    "keywords", "attestations", "import_name", "import_names", "import_namespace",
    "import_namespaces",
})


class FileSink(Protocol):
    def write(self, data: bytes) -> None: ...


def boundary_from(content_type: bytes | None) -> str:
    """The boundary of a multipart/form-data Content-Type, or BadUpload."""
    if not content_type:
        raise BadUpload("Missing Content-Type: send the upload as multipart/form-data.")
    try:
        text = content_type.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise BadUpload("Invalid Content-Type header.") from None
    mime, options = multipart.parse_options_header(text)
    if mime != "multipart/form-data":
        raise BadUpload(
            f"Unsupported Content-Type {mime!r}: send the upload as multipart/form-data."
        )
    boundary = options.get("boundary")
    if not boundary or len(boundary) > 200:
        raise BadUpload("The multipart/form-data Content-Type has no valid boundary.")
    return str(boundary)


class FormReader:
    """Feed it body chunks; it writes the file part to a sink and keeps the fields."""

    def __init__(self, boundary: str, *, max_file_size: int,
                 open_file: Callable[[str], FileSink]) -> None:
        self._parser = multipart.PushMultipartParser(
            boundary, max_header_size=4096, max_header_count=8, max_segment_count=MAX_PARTS,
            # Not strict: strict mode refuses the CRLF epilogue twine sends
            # after the closing boundary when it arrives in a later read.
            # Truncation and every limit are still errors (bench/RESULTS.md).
            strict=False,
        )
        self._max_file_size = max_file_size
        self._open_file = open_file
        self.fields: dict[str, list[str]] = {}
        self.filename: str | None = None
        self.file_size = 0
        self._field_bytes = 0
        self._segment: multipart.MultipartSegment | None = None
        self._buffer: bytearray | None = None
        self._sink: FileSink | None = None

    def feed(self, data: bytes) -> None:
        """Parse one chunk. Raises BadUpload or TooLarge; afterwards, feed no more."""
        try:
            for event in self._parser.parse(data):
                if isinstance(event, multipart.MultipartSegment):
                    self._start(event)
                elif event is None:
                    self._end()
                else:
                    self._data(event)
        except multipart.ParserLimitReached as e:
            raise BadUpload(f"Malformed upload form: {e}.") from None
        except multipart.MultipartError as e:
            raise BadUpload(f"Malformed multipart/form-data body: {e}.") from None

    def close(self) -> None:
        """Signal the end of the body; raises BadUpload if it was incomplete."""
        try:
            self._parser.close(check_complete=True)
        except multipart.MultipartError as e:
            raise BadUpload(f"Malformed multipart/form-data body: {e}.") from None
        if not self._parser.closed or self._segment is not None:
            raise BadUpload("Malformed multipart/form-data body: it ended before the last "
                            "boundary.")

    def _start(self, segment: multipart.MultipartSegment) -> None:
        name = segment.name
        # The lenient parser reports a missing name as "".
        if segment.disposition != "form-data" or not name:
            raise BadUpload("Malformed upload form: every part needs "
                            "'Content-Disposition: form-data; name=...'.")
        self._segment = segment
        if name == FILE_FIELD:
            if self.filename is not None:
                raise BadUpload("Malformed upload form: more than one 'content' file.")
            if not segment.filename:
                raise BadUpload("The 'content' part must be a file with a file name.")
            self.filename = segment.filename
            self._sink = self._open_file(segment.filename)
            return
        if name in self.fields and name not in MULTI_VALUED:
            raise BadUpload(f"Malformed upload form: duplicate field {name!r}.")
        self._buffer = bytearray()

    def _data(self, chunk: bytes | bytearray) -> None:
        if self._sink is not None:
            self.file_size += len(chunk)
            if self.file_size > self._max_file_size:
                raise TooLarge(
                    f"File too large: the limit is {self._max_file_size} bytes "
                    "(uploads.max_size)."
                )
            self._sink.write(bytes(chunk))
            return
        assert self._buffer is not None
        self._field_bytes += len(chunk)
        if self._field_bytes > MAX_FIELD_BYTES:
            raise BadUpload(
                f"Malformed upload form: the text fields exceed {MAX_FIELD_BYTES} bytes."
            )
        self._buffer += chunk

    def _end(self) -> None:
        segment = self._segment
        assert segment is not None and segment.name is not None
        self._segment = None
        if self._sink is not None:
            self._sink = None
            return
        assert self._buffer is not None
        raw, self._buffer = bytes(self._buffer), None
        if segment.filename is not None:
            # Other file parts (e.g. the obsolete gpg_signature) are ignored.
            return
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadUpload(f"Form field {segment.name!r} is not valid UTF-8.") from None
        self.fields.setdefault(segment.name, []).append(value)
