"""Every error answer, written one way.

HTTP layer. `error_response` decides the shape of every error answer: the
reason in the status line (twine prints it) and in a plain-text body,
`Cache-Control: no-store`, and the error's own headers (401's
`WWW-Authenticate`, 429's and 503's `Retry-After`). It is written through
the request by `render_error` (routes, via `ErrorFunnel`; the download fast
path, via `ErrorFunnel.answer`; the site's non-UTF-8 path check), or as raw
bytes by `error_bytes` where no request can answer (the site's early
refusals, before the body is read, and its 431 for an over-long header).
All of them go through the site's access log and request metrics
(RegistrySite.log); anything that is not a RegistryError is logged with
its traceback and answered 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from pypireg.domain.errors import MethodNotAllowed, NotFound, RegistryError
from pypireg.http.responses import redirect

_log = Logger()
# Long enough for a reason that carries its advice whole (a URL to use, a
# command to run): twine shows the reason phrase and nothing else. Clients
# take far longer status lines (http.client 64 KiB, h11 16 KiB).
_MAX_PHRASE = 1024
INTERNAL_ERROR = ("Internal server error; it was logged. Please report it to the registry's "
                  "operator.")


@dataclass(frozen=True)
class ErrorResponse:
    code: int
    phrase: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def error_response(error: RegistryError) -> ErrorResponse:
    """The status, reason phrase, headers and body that answer *error*."""
    phrase = " ".join(error.reason.split())[:_MAX_PHRASE].encode("latin-1", "replace")
    headers = (
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Cache-Control", b"no-store"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()),
    )
    return ErrorResponse(error.code, phrase, headers, (error.reason + "\n").encode("utf-8"))


def render_error(request: IRequest, error: RegistryError) -> bytes:
    """Set *error*'s status and headers on *request*; return the body to write."""
    response = error_response(error)
    request.setResponseCode(response.code, response.phrase)
    for key, value in response.headers:
        request.setHeader(key, value)
    return response.body


def error_bytes(error: RegistryError) -> bytes:
    """*error* as a whole HTTP/1.1 response that closes the connection."""
    response = error_response(error)
    headers = (*response.headers, (b"Content-Length", b"%d" % len(response.body)),
               (b"Connection", b"close"))
    head = [b"HTTP/1.1 %d %s" % (response.code, response.phrase)]
    head += [key + b": " + value for key, value in headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + response.body


class ErrorFunnel:
    """Klein's error handlers: typed errors, routing errors, cancellations, the rest."""

    def __init__(self, base_url: str | None) -> None:
        self._base_url = base_url

    def answer(self, request: IRequest, failure: Failure) -> bytes:
        """The body answering *failure* (for handlers called outside Klein)."""
        if failure.check(RegistryError):
            return self.registry_error(request, failure)
        return self.unexpected_error(request, failure)

    def registry_error(self, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(failure.value, RegistryError)
        return render_error(request, failure.value)

    def routing_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        if isinstance(error, RequestRedirect):
            # Werkzeug's trailing-slash redirect; keep it host-relative so it
            # is right behind a proxy (or absolute from base_url).
            parts = urlsplit(error.new_url)
            location = (self._base_url or "") + parts.path + (
                f"?{parts.query}" if parts.query else "")
            return redirect(request, location, 301 if request.method in (b"GET", b"HEAD") else 308)
        if error.code == 405:
            return render_error(request, MethodNotAllowed("Method not allowed on this URL."))
        return render_error(request, NotFound("No such URL on this registry."))

    def cancelled(self, request: IRequest, failure: Failure) -> bytes:
        # Klein cancels the handler when the client goes away.
        return b""

    def unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        _log.failure(
            "internal error on {method} {uri}", failure,
            method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"),
        )
        return render_error(request, RegistryError(INTERNAL_ERROR))
