"""A bounded, streaming multipart/form-data reader for the upload form.

HTTP layer, sans-I/O. One typed wrapper around `multipart`'s
PushMultipartParser (chosen over python-multipart: it raises on truncated
bodies and on every limit instead of silently accepting them; see
bench/multipart_parsers.py). The file part is handed chunk by chunk to a
sink; the small fields are kept in memory with bounds on their number and
size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote

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


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def content_disposition(value: str) -> tuple[str, dict[str, str]]:
    """The disposition and parameters of a part's Content-Disposition header.

    Parsed here rather than by `multipart`, which keeps the last of repeated
    parameters and cuts a Windows path off a file name: a repeated
    parameter makes the header invalid (RFC 7578 §4.2, RFC 6266 §4.1), and a
    file name is refused, never rewritten (see _start). `filename*`
    (RFC 5987, UTF-8) stands for `filename` when given.
    """
    position = 0

    def fail() -> BadUpload:
        return BadUpload("Malformed upload form: invalid Content-Disposition "
                         f"{value[:100]!r}.")

    def skip_space() -> None:
        nonlocal position
        while position < len(value) and value[position] in " \t":
            position += 1

    def token() -> str:
        nonlocal position
        match = _TOKEN.match(value, position)
        if match is None:
            raise fail()
        position = match.end()
        return match.group()

    def quoted() -> str:
        nonlocal position
        out: list[str] = []
        position += 1  # the opening quote
        while position < len(value):
            char = value[position]
            if char == "\\" and position + 1 < len(value):
                out.append(value[position + 1])
                position += 2
            elif char == '"':
                position += 1
                return "".join(out)
            else:
                out.append(char)
                position += 1
        raise fail()

    skip_space()
    disposition = token().lower()
    params: dict[str, str] = {}
    while True:
        skip_space()
        if position == len(value):
            break
        if value[position] != ";":
            raise fail()
        position += 1
        skip_space()
        if position == len(value):
            break  # a trailing ";" is harmless
        key = token().lower()
        skip_space()
        if position == len(value) or value[position] != "=":
            raise fail()
        position += 1
        skip_space()
        text = quoted() if position < len(value) and value[position] == '"' else token()
        if key in params:
            raise BadUpload(f"Malformed upload form: the Content-Disposition parameter "
                            f"{key!r} is repeated; send it once.")
        params[key] = text
    if "filename*" in params:
        charset, _, encoded = params.pop("filename*").partition("'")
        _, _, encoded = encoded.partition("'")
        if charset.lower() != "utf-8":
            raise BadUpload("Malformed upload form: filename* must be UTF-8 (RFC 5987).")
        try:
            params["filename"] = unquote(encoded, errors="strict")
        except UnicodeDecodeError:
            raise fail() from None
    return disposition, params


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
        self._name = ""
        self._is_file = False
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
        headers = [v for k, v in segment.headerlist if k == "Content-Disposition"]
        if len(headers) != 1:
            raise BadUpload("Malformed upload form: every part needs exactly one "
                            "'Content-Disposition: form-data; name=...'.")
        disposition, params = content_disposition(headers[0])
        name = params.get("name", "")
        if disposition != "form-data" or not name:
            raise BadUpload("Malformed upload form: every part needs "
                            "'Content-Disposition: form-data; name=...'.")
        filename = params.get("filename")
        self._segment = segment
        self._name, self._is_file = name, filename is not None
        if name == FILE_FIELD:
            if self.filename is not None:
                raise BadUpload("Malformed upload form: more than one 'content' file.")
            if not filename:
                raise BadUpload("The 'content' part must be a file with a file name.")
            if "/" in filename or "\\" in filename:
                raise BadUpload(f"Invalid file name {filename!r}: send the file's own name, "
                                "without any folder (no '/' or '\\').")
            self.filename = filename
            self._sink = self._open_file(filename)
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
        assert self._segment is not None
        self._segment = None
        if self._sink is not None:
            self._sink = None
            return
        assert self._buffer is not None
        raw, self._buffer = bytes(self._buffer), None
        if self._is_file:
            # Other file parts (e.g. the obsolete gpg_signature) are ignored.
            return
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadUpload(f"Form field {self._name!r} is not valid UTF-8.") from None
        self.fields.setdefault(self._name, []).append(value)
