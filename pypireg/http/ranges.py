"""Taming Range headers before a body is sent (RFC 9110 §14.2).

HTTP layer, pure. `bytes=0-,0-,0-…` asks for the whole file once per range:
200 of them on a 20 MiB file would send 4 GiB. Ranges are resolved against
the file's size, sorted, and overlapping or adjacent ones merged into one;
a set that is still larger than MAX_RANGES, or that cannot be parsed, is
ignored and the whole file is sent once (both are what §14.2 allows).
"""

from __future__ import annotations

import re

MAX_RANGES = 16
# A few more than MAX_RANGES before merging; anything longer is noise.
_MAX_SPECS = 100
_SPEC = re.compile(rb"\s*(\d*)\s*-\s*(\d*)\s*\Z")


def tame_range(header: bytes, size: int) -> bytes | None:
    """The Range header to honour for a body of *size* bytes, or None to send it whole.

    Unsatisfiable sets are returned as they came, for the 416 they deserve.
    """
    unit, eq, specs_text = header.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes":
        return None
    specs = specs_text.split(b",")
    if len(specs) > _MAX_SPECS:
        return None
    spans: list[tuple[int, int]] = []
    for spec in specs:
        match = _SPEC.match(spec)
        if match is None or (not match[1] and not match[2]):
            return None
        first, last = match[1], match[2]
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if last and int(last) < start:
                return None  # invalid, not merely unsatisfiable
        else:
            start, end = max(size - int(last), 0), size - 1
        if start <= end and start < size:
            spans.append((start, end))
    if not spans:
        return header
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end + 1:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    if len(merged) > MAX_RANGES:
        return None
    return b"bytes=" + b",".join(b"%d-%d" % span for span in merged)


def starts_at_first_byte(tamed: bytes) -> bool:
    """Whether a Range header `tame_range` returned asks for the body from byte 0.

    Its ranges are sorted and merged, so the first one starts lowest.
    """
    return tamed.startswith(b"bytes=0-")
