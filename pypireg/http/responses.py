"""Writing responses: redirects, conditional answers, API JSON and absolute URLs, in one style.

Errors are written by http/errors.py.

HTTP layer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.web.iweb import IRequest

from pypireg.http.front_door import valid_host


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


def origin(request: IRequest, base_url: str | None) -> str:
    """`scheme://host[:port]` (or base_url) for absolute URLs a client is told to use.

    From `server.base_url` when it is set (behind a proxy that is the only
    right answer); else as the client addressed us. The site refused a
    malformed Host already; an HTTP/1.0 request may send none, and then the
    address it reached stands in.
    """
    if base_url:
        return base_url
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if not valid_host(host):
        address: Any = request.getHost()
        name = str(getattr(address, "host", ""))
        host = (f"[{name}]" if ":" in name else name) + f":{getattr(address, 'port', 0)}"
    return f"{scheme}://{host}"


def pypi_url(origin_url: str, project_ref: str) -> str:
    """A project's `…/packages/pypi` URL (its upload URL; the index is below it).

    The reference is encoded whole, so a path with slashes stays one
    segment, as GitLab's URLs expect.
    """
    return f"{origin_url}/api/v4/projects/{quote(project_ref, safe='')}/packages/pypi"
