"""Rendered long descriptions (READMEs), cached by the hash of their source.

Storage layer. See schema/0010 for the key and what `how` means; the key is
computed and the rendering done in http/web/readme.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pypireg.storage.database import Database

How = Literal["rendered", "plain", "timeout", "too_large", "failed"]


@dataclass(frozen=True)
class RenderedDescription:
    """A description's HTML for the package page, and how it was made."""

    html: str
    how: How


async def get_rendered(db: Database, key: str) -> RenderedDescription | None:
    """The cached rendering of the description with *key*, if there is one."""
    row = await db.fetch_one(
        "SELECT html, how FROM rendered_descriptions WHERE description_key = %s", (key,))
    return RenderedDescription(row[0], row[1]) if row else None


async def put_rendered(db: Database, key: str, rendered: RenderedDescription) -> None:
    """Keep *rendered* under *key*.

    A key names one source, so whichever of two concurrent renders of it
    (two daemons on one database) commits first is as good as the other:
    the second insert does nothing.
    """
    await db.execute(
        "INSERT INTO rendered_descriptions (description_key, html, how) VALUES (%s, %s, %s)"
        " ON CONFLICT (description_key) DO NOTHING",
        (key, rendered.html, rendered.how),
    )
