"""GitLab's offset pagination and query parameters, shared by the listing APIs.

HTTP layer. `page`/`per_page` from the query (per_page above 100 counts as
100, as in GitLab), and the answer's `X-Total`, `X-Total-Pages`, `X-Page`,
`X-Per-Page`, `X-Next-Page`, `X-Prev-Page` headers with an RFC 8288 Link
header (prev, next, first, last), as the packages and audit events APIs
send them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from pypireg.domain.errors import BadRequest
from pypireg.http.responses import origin

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
# page and per_page: anything an OFFSET can hold comfortably.
_MAX_NUMBER = 2**31 - 1


def query_arg(request: IRequest, key: str) -> str | None:
    """The last value of query parameter *key*, None if absent; 400 if not UTF-8."""
    values = request.args.get(key.encode("ascii"))
    if not values:
        return None
    try:
        return str(values[-1].decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(f"{key} must be UTF-8 text.") from None


def choice(request: IRequest, key: str, allowed: Sequence[str], default: str) -> str:
    value = query_arg(request, key)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise BadRequest(f"{key} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _positive_int(request: IRequest, key: str, default: int) -> int:
    value = query_arg(request, key)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= _MAX_NUMBER:
        raise BadRequest(f"{key} must be an integer from 1 to {_MAX_NUMBER}; got {value!r}.")
    return int(value)


def pagination(request: IRequest) -> tuple[int, int]:
    """(page, per_page) from the query; per_page above 100 counts as 100, as in GitLab."""
    page = _positive_int(request, "page", 1)
    return page, min(_positive_int(request, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)


def _prev_page(page: int, total_pages: int) -> int | None:
    # As GitLab (Kaminari): a page past the end has neither prev nor next.
    return page - 1 if 1 < page <= total_pages else None


def _next_page(page: int, total_pages: int) -> int | None:
    return page + 1 if page < total_pages else None


def _page_links(page_url: str, query: list[tuple[bytes, bytes]], page: int, per_page: int,
                total_pages: int) -> str:
    """The RFC 8288 Link header GitLab sends: prev, next (when they exist), first, last."""

    def url(number: int) -> str:
        pairs = [*query, (b"page", str(number).encode()), (b"per_page", str(per_page).encode())]
        return f"{page_url}?{urlencode(pairs)}"

    links = []
    if _prev_page(page, total_pages):
        links.append(f'<{url(page - 1)}>; rel="prev"')
    if _next_page(page, total_pages):
        links.append(f'<{url(page + 1)}>; rel="next"')
    links.append(f'<{url(1)}>; rel="first"')
    links.append(f'<{url(total_pages)}>; rel="last"')
    return ", ".join(links)


def paginate(request: IRequest, base_url: str | None, total: int, page: int, per_page: int
             ) -> None:
    """GitLab's offset pagination headers, with absolute links."""
    # An empty listing still has one (empty) page, the target of "first" and "last".
    total_pages = max(1, math.ceil(total / per_page))
    prev_page, next_page = _prev_page(page, total_pages), _next_page(page, total_pages)
    request.setHeader(b"X-Total", str(total).encode())
    request.setHeader(b"X-Total-Pages", str(total_pages).encode())
    request.setHeader(b"X-Page", str(page).encode())
    request.setHeader(b"X-Per-Page", str(per_page).encode())
    request.setHeader(b"X-Page-Type", b"offset")
    request.setHeader(b"X-Next-Page", str(next_page).encode() if next_page else b"")
    request.setHeader(b"X-Prev-Page", str(prev_page).encode() if prev_page else b"")
    query = [(key, value) for key, values in request.args.items()
             if key not in (b"page", b"per_page") for value in values]
    page_url = origin(request, base_url).rstrip("/") + request.path.decode("latin-1")
    request.setHeader(b"Link", _page_links(page_url, query, page, per_page,
                                           total_pages).encode("latin-1"))

