"""The error funnel: typed errors become responses, everything else a logged 500.

HTTP layer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from pypireg.domain.errors import MethodNotAllowed, NotFound, RegistryError
from pypireg.http.app import RouteContext, routes
from pypireg.http.responses import redirect, render_error

_log = Logger()


class ErrorFunnel(RouteContext):
    @routes.handle_errors(RegistryError)
    def _registry_error(self, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(failure.value, RegistryError)
        return render_error(request, failure.value)

    @routes.handle_errors(HTTPException)
    def _routing_error(self, request: IRequest, failure: Failure) -> bytes:
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

    @routes.handle_errors(CancelledError)
    def _cancelled(self, request: IRequest, failure: Failure) -> bytes:
        # Klein cancels the handler when the client goes away.
        return b""

    @routes.handle_errors(Exception)
    def _unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        _log.failure(
            "internal error on {method} {uri}", failure,
            method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"),
        )
        return render_error(request, RegistryError(
            "Internal server error; it was logged. Please report it to the registry's operator."
        ))
