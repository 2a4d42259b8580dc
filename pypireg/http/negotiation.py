"""Choosing the simple API's format from `Accept` (PEP 691).

HTTP layer, pure functions.
"""

from __future__ import annotations

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# Offers in the order preferred on a tie: plain HTML first, so that a
# browser or curl sending */* gets a page.
_OFFERS = (TEXT_HTML, HTML_V1, JSON_V1)
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for item in header.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((_ALIASES.get(media, media), max(0.0, min(q, 1.0))))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific range matching *offer* (RFC 9110 12.5.1)."""
    best: tuple[int, float] | None = None
    kind = offer.split("/")[0]
    for media, q in ranges:
        if media == offer:
            specificity = 2
        elif media == f"{kind}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return best[1] if best else 0.0


def choose_format(accept: str | None, format_param: str | None = None) -> str | None:
    """The media type to answer with, or None when nothing acceptable is offered (406)."""
    if format_param:
        # An unencoded "+" in the query string arrives as a space.
        param = format_param.strip().lower().replace(" ", "+")
        wanted = _ALIASES.get(param, param)
        return wanted if wanted in _OFFERS else None
    if not accept or not accept.strip():
        return TEXT_HTML
    ranges = _parse_accept(accept)
    scored = [(_quality(offer, ranges), -i, offer) for i, offer in enumerate(_OFFERS)]
    q, _, offer = max(scored)
    return offer if q > 0 else None


def content_type_header(media: str) -> bytes:
    return f"{media}; charset=utf-8".encode() if media == TEXT_HTML else media.encode()
