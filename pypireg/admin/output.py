"""How the admin command prints: text tables, JSON, timestamps, a progress bar.

Composition layer, shared by the subcommand modules. Text is for people
(columns padded, None blank); `--json` prints the same facts for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Left-aligned columns under *headers*, two spaces apart; None prints blank."""
    cells = [list(map(str, headers))] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def render(as_json: bool, data: Any, text: str) -> str:
    """*data* as JSON when `--json` was given, else *text*."""
    return json.dumps(data) if as_json else text


def record_table(record: dict[str, Any]) -> str:
    """One record as a one-row table whose headers are its keys."""
    return table([list(record.values())], list(record))


def visibility(public: bool) -> str:
    """The VISIBILITY column of projects and groups."""
    return "public" if public else "private"


def iso(value: datetime | None) -> str | None:
    """A timestamp to the second, or None."""
    return value.isoformat(timespec="seconds") if value is not None else None


_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def duration(seconds: float) -> str:
    """Seconds in the config's own notation ("10m", "90s", "1.5s"), so it reads back the same."""
    for unit, length in _DURATION_UNITS:
        if seconds >= length and seconds % length == 0:
            return f"{int(seconds // length)}{unit}"
    return f"{seconds:g}s"


_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB")


def size(count: int) -> str:
    """A byte count in IEC units ("512B", "1.5MiB", "50GiB"), as the config writes sizes."""
    if count < 1024:
        return f"{count}B"
    value = float(count)
    for unit in _SIZE_UNITS:
        value /= 1024
        if value < 1024 or unit == _SIZE_UNITS[-1]:
            break
    return f"{value:.1f}".removesuffix(".0") + unit


class TqdmProgress:
    """A progress bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._bar: Any = None

    def start(self, total: int) -> None:
        # Imported here: only `pypireg import` draws a bar.
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="file", file=sys.stderr,
                         disable=True if self._quiet else None)

    def advance(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(name[:40], refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
