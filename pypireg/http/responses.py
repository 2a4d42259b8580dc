"""Writing responses: redirects, conditional answers and API JSON, all in one style.

Errors are written by http/errors.py.

HTTP layer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from twisted.web.iweb import IRequest


def redirect(request: IRequest, location: str, code: int = 301) -> bytes:
    """Redirect to *location*: an absolute URL from base_url, or a path on our origin.

    A path never leaves our origin: leading slashes (and backslashes, which
    browsers read as slashes) are folded into one, so no request can turn
    it into a protocol-relative `//elsewhere` URL. Redirects depend on the
    request, so no cache keeps them.
    """
    if not location.startswith(("http://", "https://")):
        location = "/" + location.lstrip("/\\")
    request.setResponseCode(code)
    request.setHeader(b"Location", location.encode("utf-8"))
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return f"Moved to {location}\n".encode()


def not_modified(request: IRequest, etag: bytes) -> bool:
    """Set a strong ETag; if If-None-Match matches it, set 304 and return True."""
    request.setHeader(b"ETag", etag)
    header = request.getHeader(b"if-none-match")
    if header is not None:
        candidates = {c.strip().removeprefix(b"W/") for c in header.split(b",")}
        if etag in candidates or b"*" in candidates:
            request.setResponseCode(304)
            return True
    return False


def api_json(request: IRequest, document: Any) -> bytes:
    """A GitLab-style API answer."""
    request.setHeader(b"Content-Type", b"application/json")
    # Answers depend on the token and change with every write.
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(document).encode("utf-8")


def gitlab_time(moment: datetime) -> str:
    """GitLab's timestamps: ISO 8601 in UTC, milliseconds, Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
