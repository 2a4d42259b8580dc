"""What every request must get right before anything else looks at it.

HTTP layer, pure functions over header bytes; the site's channel and
request (site.py) apply them as the request line and headers arrive, and
refuse with 400 and a closed connection.

- Framing (RFC 9112 §6.1): the only transfer coding a request may carry is
  one `chunked`, and never together with Content-Length. Anything else is
  how request smuggling starts, so the connection is never reused.
- Host (RFC 9112 §3.2, RFC 3986 §3.2.2): exactly one on HTTP/1.1, at most
  one on HTTP/1.0, and a well-formed host with an optional port. Links and
  redirects are only ever built from a Host that passed this check (or
  from `server.base_url`).
- Absolute-form targets (RFC 9112 §3.2.2): `GET http://host/path` is served
  as `/path` with the target's authority as its Host.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address

_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_REG_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_ABSOLUTE_FORM = re.compile(rb"(?i)https?://([^/?#]*)([^#]*)\Z")
MAX_HOST = 255


def framing_problem(transfer_codings: list[bytes], content_lengths: int) -> str | None:
    """Why a request with these Transfer-Encoding codings and Content-Length headers is refused.

    *transfer_codings* are the comma-separated codings of every
    Transfer-Encoding header so far, in order, lower-cased and stripped.
    """
    if not transfer_codings:
        return None
    if transfer_codings != [b"chunked"]:
        shown = ", ".join(c.decode("latin-1") for c in transfer_codings)
        return (f"Unsupported Transfer-Encoding {shown!r}: a request body may only be sent "
                "with Content-Length or as 'Transfer-Encoding: chunked'.")
    if content_lengths:
        return ("A request must not carry both Transfer-Encoding and Content-Length; "
                "send one of them.")
    return None


def codings(value: bytes) -> list[bytes]:
    """The transfer codings listed in one Transfer-Encoding header value."""
    return [c.strip().lower() for c in value.split(b",")]


def valid_host(value: str) -> bool:
    """Whether *value* is `host[:port]` with a DNS name, an IPv4 or a bracketed IPv6 address."""
    if not value or len(value) > MAX_HOST or not value.isascii():
        return False
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket:
            return False
        try:
            IPv6Address(address)
        except ValueError:
            return False
        return rest == "" or (rest.startswith(":") and _valid_port(rest[1:]))
    host, colon, port = value.partition(":")
    if colon and not _valid_port(port):
        return False
    # A dotted quad also matches the name rule; both are fine.
    return _REG_NAME.match(host) is not None


def _valid_port(port: str) -> bool:
    return _PORT.match(port) is not None and 0 < int(port) <= 65535


def host_problem(hosts: list[bytes], version: bytes) -> str | None:
    """Why a request with these Host header values is refused, or None."""
    if len(hosts) > 1:
        return "More than one Host header: send exactly one."
    if not hosts:
        if version == b"HTTP/1.1":
            return "Missing Host header: HTTP/1.1 requests must send one."
        return None
    try:
        host = hosts[0].decode("ascii")
    except UnicodeDecodeError:
        host = ""
    if not valid_host(host):
        return "Malformed Host header: send a host name or address, and optionally :port."
    return None


def split_absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, origin-form target) for an absolute-form target, else None."""
    match = _ABSOLUTE_FORM.match(target)
    if match is None:
        return None
    authority, rest = match.group(1), match.group(2)
    if b"@" in authority:  # userinfo has no place in a request target
        authority = b""
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    return authority, rest
