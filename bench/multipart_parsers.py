"""Compare two streaming multipart/form-data parsers for the upload path.

Standalone benchmark, not part of the package. It feeds the same bodies to

* `multipart`'s PushMultipartParser (the `multipart` distribution), in
  strict mode as pypireg uses it and in lenient mode (strict=False), and
* python-multipart's MultipartParser (the `python-multipart` distribution,
  imported as `python_multipart`),

both configured with the limits the upload path wants (4 KiB header lines,
8 headers per part, 1000 parts where the parser has such a limit), and
reports

* throughput on one large file part fed in 64 KiB chunks, and
* for adversarial bodies, whether each parser raises, or accepts the body
  without any error (the caller would then store an incomplete or
  unbounded upload), and whether the data it hands out is byte-exact.

Run: python bench/multipart_parsers.py [--size-mib 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal, Protocol

import multipart
import python_multipart

BOUNDARY = b"----pypiregBench7MA4YWxkTrZu0gW"
CHUNK = 64 * 1024
MIB = 1024 * 1024
MAX_HEADER_SIZE = 4096
MAX_HEADER_COUNT = 8
MAX_PARTS = 1000
DEFAULT_SIZE_LIMIT = 1024 * MIB

# "either": invalid input that a parser may reject or pass through as data.
Expect = Literal["reject", "accept", "either"]


# --- body construction -------------------------------------------------------

def part(name: str, data: bytes, filename: str | None = None,
         extra_headers: Iterable[bytes] = ()) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = [disposition.encode()]
    if filename is not None:
        headers.append(b"Content-Type: application/octet-stream")
    headers.extend(extra_headers)
    return b"--" + BOUNDARY + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + data + b"\r\n"


def form(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (b"--" + BOUNDARY + b"--\r\n" if close else b"")


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def pseudo_random(n: int) -> bytes:
    """n incompressible-looking bytes, quickly (a 1 MiB random block, repeated)."""
    block = hashlib.shake_256(b"pypireg-bench").digest(MIB)
    return (block * (n // MIB + 1))[:n]


def upload_form(file_data: bytes) -> list[bytes]:
    """The parts twine sends, with *file_data* as the distribution file."""
    return [
        part(":action", b"file_upload"),
        part("protocol_version", b"1"),
        part("name", b"big-pkg"),
        part("version", b"1.0.0"),
        part("filetype", b"bdist_wheel"),
        part("content", file_data, filename="big_pkg-1.0.0-py3-none-any.whl"),
    ]


# --- parser adapters ---------------------------------------------------------

@dataclass
class Outcome:
    parts: int = 0
    completed_parts: int = 0
    data_bytes: int = 0
    ended: bool = False
    error: str | None = None
    error_at: str | None = None
    short_writes: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _hash: Any = field(default_factory=hashlib.sha256)

    @property
    def digest(self) -> str:
        return str(self._hash.hexdigest())


class StreamParser(Protocol):
    outcome: Outcome

    def feed(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...


class PushParser:
    """multipart.PushMultipartParser, strict mode, as pypireg configures it."""

    strict = True

    def __init__(self, *, size_limit: int, verify: bool) -> None:
        self.outcome = Outcome()
        self._verify = verify
        self._parser = multipart.PushMultipartParser(
            BOUNDARY, max_header_size=MAX_HEADER_SIZE, max_header_count=MAX_HEADER_COUNT,
            max_segment_count=MAX_PARTS, max_segment_size=size_limit, strict=self.strict,
        )

    def feed(self, chunk: bytes) -> None:
        out = self.outcome
        for event in self._parser.parse(chunk):
            if isinstance(event, multipart.MultipartSegment):
                out.parts += 1
            elif event is None:
                out.completed_parts += 1
            else:
                out.data_bytes += len(event)
                if self._verify:
                    out._hash.update(event)

    def close(self) -> None:
        self._parser.close(check_complete=True)
        self.outcome.ended = self._parser.closed and self._parser.error is None


class LenientPushParser(PushParser):
    """The same parser with strict=False, for comparison."""

    strict = False


class CallbackParser:
    """python_multipart.MultipartParser with callbacks; limits where it has them."""

    def __init__(self, *, size_limit: int, verify: bool) -> None:
        self.outcome = Outcome()
        out = self.outcome

        def on_part_begin() -> None:
            out.parts += 1

        def on_part_end() -> None:
            out.completed_parts += 1

        def on_part_data(data: bytes, start: int, end: int) -> None:
            out.data_bytes += end - start
            if verify:
                out._hash.update(data[start:end])

        def on_end() -> None:
            out.ended = True

        callbacks: Any = {"on_part_begin": on_part_begin, "on_part_end": on_part_end,
                          "on_part_data": on_part_data, "on_end": on_end}
        # It has no limit on the number of parts, and max_size bounds the
        # whole body rather than one part.
        self._parser = python_multipart.MultipartParser(
            BOUNDARY, callbacks, max_size=size_limit,
            max_header_count=MAX_HEADER_COUNT, max_header_size=MAX_HEADER_SIZE,
        )

    def feed(self, chunk: bytes) -> None:
        written = self._parser.write(chunk)
        if written != len(chunk):
            self.outcome.short_writes += 1

    def close(self) -> None:
        self._parser.finalize()


ParserFactory = Callable[..., StreamParser]
PARSERS: dict[str, ParserFactory] = {
    "multipart strict": PushParser,
    "multipart lenient": LenientPushParser,
    "python-multipart": CallbackParser,
}


class _Warnings(logging.Handler):
    """Collects what python-multipart logs (it logs instead of raising in places)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(factory: ParserFactory, chunks: list[bytes], *, size_limit: int = DEFAULT_SIZE_LIMIT,
        verify: bool = True) -> Outcome:
    parser = factory(size_limit=size_limit, verify=verify)
    out = parser.outcome
    collector = _Warnings()
    root = logging.getLogger()
    root.addHandler(collector)
    stage = "feed"
    start = time.perf_counter()
    try:
        for chunk in chunks:
            parser.feed(chunk)
        stage = "close"
        parser.close()
    except Exception as e:  # both libraries' errors, whatever their base class
        out.error = f"{type(e).__name__}: {e}"
        out.error_at = stage
    finally:
        out.seconds = time.perf_counter() - start
        root.removeHandler(collector)
    out.warnings = collector.messages[:3]
    return out


# --- throughput --------------------------------------------------------------

def throughput(size_mib: int, repeat: int) -> list[tuple[str, float, float, bool]]:
    """(parser, best MB/s, median MB/s, data complete) for one file part of size_mib."""
    file_data = pseudo_random(size_mib * MIB)
    chunks = chunked(form(*upload_form(file_data)), CHUNK)
    del file_data
    total = sum(len(c) for c in chunks)
    rows = []
    for name, factory in PARSERS.items():
        rates = []
        complete = True
        for _ in range(repeat):
            out = run(factory, chunks, verify=False)
            complete = complete and out.error is None and out.data_bytes >= size_mib * MIB
            rates.append(total / out.seconds / 1e6)
        rows.append((name, max(rates), statistics.median(rates), complete))
    return rows


# --- adversarial cases -------------------------------------------------------

@dataclass
class Case:
    title: str
    expect: Expect
    chunks: Callable[[], list[bytes]]
    size_limit: int = DEFAULT_SIZE_LIMIT
    # For "accept" cases: the concatenated payload of all parts, to check
    # the parser hands out exactly the bytes that were sent.
    payload: Callable[[], bytes] | None = None
    note: str = ""


def _near_boundary_payload() -> bytes:
    return b"\r\n--" * (8 * MIB // 4)


def _almost_delimiters_payload() -> bytes:
    unit = b"\r\n--" + BOUNDARY[:-1] + b"X"
    return unit * (8 * MIB // len(unit))


def _crlf_dash_tail_payload() -> bytes:
    # Chunk-aligned so that every 64 KiB chunk ends in the middle of a
    # delimiter prefix, and the next one does not complete it.
    unit = pseudo_random(CHUNK - 8) + b"\r\n--" + BOUNDARY[:4]
    return unit * 64


def _small_form() -> list[bytes]:
    return [part("name", b"big-pkg"), part("version", b"1.0.0"),
            part("content", b"\r\n--" + BOUNDARY[:10] + b"\r\r\n\n--" + b"x" * 300,
                 filename="a.whl")]


def _payload_of(parts: list[bytes]) -> bytes:
    return b"".join(_part_body(p) for p in parts)


def _part_body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1][:-2]


def cases() -> list[Case]:
    one_mib_file = pseudo_random(MIB)
    full = form(*upload_form(one_mib_file))
    second_part_at = full.index(b"--" + BOUNDARY, 10)
    many_parts = [part(f"f{i}", b"x") for i in range(100_000)]

    def full_payload() -> bytes:
        return _payload_of(upload_form(one_mib_file))

    return [
        Case("truncated inside the file data (70 % of the body, no closing boundary)",
             "reject", lambda: chunked(full[: len(full) * 7 // 10], CHUNK)),
        Case("truncated inside a part header", "reject",
             lambda: chunked(full[: second_part_at + 30], CHUNK)),
        Case("truncated right after a delimiter, before the closing '--'", "reject",
             lambda: chunked(full[: -len(b"--\r\n")], CHUNK)),
        Case("empty body", "reject", lambda: []),
        Case("100 000 parts (limit 1000 parts)", "reject",
             lambda: chunked(form(*many_parts), CHUNK),
             note="python-multipart has no part-count limit"),
        Case("64 KiB header line (limit 4 KiB)", "reject",
             lambda: chunked(form(part("name", b"v", extra_headers=[b"X-Pad: " + b"a" * 65536])),
                             CHUNK)),
        Case("100 headers in one part (limit 8)", "reject",
             lambda: chunked(form(part("name", b"v", extra_headers=[
                 f"X-H{i}: v".encode() for i in range(100)])), CHUNK)),
        Case("2 MiB file part, size limit 1 MiB", "reject",
             lambda: chunked(form(*upload_form(pseudo_random(2 * MIB))), CHUNK),
             size_limit=MIB,
             note="python-multipart: max_size caps the whole body"),
        Case("10 MiB preamble, no boundary", "reject",
             lambda: chunked(b"a" * (10 * MIB), CHUNK)),
        Case("LF-only line endings", "reject",
             lambda: [form(part("name", b"v")).replace(b"\r\n", b"\n")]),
        Case("8 MiB file of b'\\r\\n--' fragments", "accept",
             lambda: chunked(form(part("content", _near_boundary_payload(), "a.whl")), CHUNK),
             payload=_near_boundary_payload),
        Case("8 MiB file of delimiters missing their last byte", "accept",
             lambda: chunked(form(part("content", _almost_delimiters_payload(), "a.whl")),
                             CHUNK),
             payload=_almost_delimiters_payload),
        Case("4 MiB file, every chunk ends in a delimiter prefix", "accept",
             lambda: _realigned(form(part("content", _crlf_dash_tail_payload(), "a.whl"))),
             payload=_crlf_dash_tail_payload),
        Case("valid form, closing delimiter's trailing CRLF in the next chunk", "accept",
             lambda: [full[:-2], full[-2:]], payload=full_payload,
             note="requests/urllib3 end the body with --boundary--CRLF"),
        Case("valid form, closing delimiter's CR and LF in separate chunks", "accept",
             lambda: [full[:-1], full[-1:]], payload=full_payload),
        Case("full delimiter followed by junk inside the file data", "either",
             lambda: chunked(form(part("content", b"abc\r\n--" + BOUNDARY + b"junk" + b"x" * 100,
                                       "a.whl")), CHUNK),
             note="RFC 2046 forbids the delimiter inside a part"),
        Case("small form fed 1 byte at a time", "accept",
             lambda: chunked(form(*_small_form()), 1),
             payload=lambda: _payload_of(_small_form())),
        Case("small form fed 7 bytes at a time", "accept",
             lambda: chunked(form(*_small_form()), 7),
             payload=lambda: _payload_of(_small_form())),
    ]


def _realigned(body: bytes) -> list[bytes]:
    # Cut so the file data's 64 KiB units line up with the chunk boundaries.
    head = body.index(b"\r\n\r\n") + 4
    return [body[:head], *chunked(body[head:], CHUNK)]


def verdict(case: Case, out: Outcome) -> tuple[str, str]:
    """(short verdict, detail) for one parser on one case."""
    if out.error is not None:
        detail = f"raises at {out.error_at}: {out.error}"
        if case.expect == "either":
            return "-", detail
        return ("OK" if case.expect == "reject" else "FALSE ERROR"), detail
    facts = f"{out.parts} parts, {out.data_bytes} data bytes"
    if out.short_writes:
        facts += f", {out.short_writes} short write() results"
    if out.warnings:
        facts += f", logged {out.warnings[0][:60]!r}…"
    if case.expect == "either":
        return "-", f"accepts: {facts}" + ("" if out.ended else "; never saw the end")
    if case.expect == "reject":
        ending = "saw the end" if out.ended else "never saw the end, no error"
        return "SILENT", f"accepts: {facts}; {ending}"
    assert case.payload is not None
    exact = out.digest == hashlib.sha256(case.payload()).hexdigest()
    if not out.ended:
        return "INCOMPLETE", f"{facts}; never saw the end"
    if not exact:
        return "WRONG DATA", f"accepts: {facts}; data differs from what was sent"
    return "OK", f"accepts: {facts}; data exact"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=200, help="file part size for throughput")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per parser")
    args = parser.parse_args(argv)
    # python-multipart logs its warnings; keep them off the console.
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger().handlers.clear()

    print(f"Python {platform.python_version()}, multipart {version('multipart')}, "
          f"python-multipart {version('python-multipart')}")
    print()
    print(f"Throughput: one {args.size_mib} MiB file part (plus the usual form fields), "
          f"{CHUNK // 1024} KiB chunks, {args.repeat} runs, MB = 10^6 bytes")
    print()
    rows = [[name, f"{best:.0f}", f"{median:.0f}", "yes" if ok else "NO"]
            for name, best, median, ok in throughput(args.size_mib, args.repeat)]
    print(_table(rows, ["parser", "best MB/s", "median MB/s", "all data out"]))
    print()
    print("Adversarial and edge-case bodies")
    print()
    rows = []
    for case in cases():
        chunks = case.chunks()
        for name, factory in PARSERS.items():
            out = run(factory, chunks, size_limit=case.size_limit)
            short, detail = verdict(case, out)
            rows.append([case.title, case.expect, name, short, f"{out.seconds * 1000:.0f}",
                         detail])
        sys.stdout.flush()
    print(_table(rows, ["body", "expected", "parser", "verdict", "ms", "what happened"]))


if __name__ == "__main__":
    main()
