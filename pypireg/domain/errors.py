"""Typed errors raised anywhere and turned into HTTP responses in one place.

Domain layer. The reason is shown to the client both in the status line and
in the body, as PyPI does, because twine prints the status line.
"""

from __future__ import annotations

REALM = "pypireg"


class RegistryError(Exception):
    """An error with an HTTP status and a human-readable reason."""

    code: int = 500

    def __init__(self, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(RegistryError):
    code = 400


class BadUpload(BadRequest):
    """The upload is refused; nothing was stored."""


class UploadAbandoned(BadUpload):
    """The client went away while its finished upload was being stored."""


# Where a message names a project's index without knowing this registry's URL.
SOME_INDEX_URL = "<the project's index URL, …/packages/pypi/simple/>"


class FileExists(BadUpload):
    """The project rejects duplicate uploads and already has a file of this name.

    400 with "already exists" in the reason, as the public index answers:
    what `pdm publish --skip-existing` (and twine, where it allows
    --skip-existing) takes for "skip this file". twine 7 refuses
    --skip-existing before it sends anything to any repository but the
    public index, so the message offers what works here instead.
    """

    def __init__(self, filename: str, check_url: str = SOME_INDEX_URL) -> None:
        """*check_url* is the project's index URL, for `uv publish --check-url`."""
        self.filename = filename
        super().__init__(
            f"File already exists ({filename!r}); this project rejects duplicate uploads. "
            "Bump the version, or skip the files the index already has: twine's "
            "--skip-existing works only with the public index, so use "
            f"uv publish --check-url {check_url} or pdm publish --skip-existing."
        )


class Unauthorized(RegistryError):
    code = 401

    def __init__(self, reason: str = "Authentication required: use a token of this project "
                 "as the password (user __token__).") -> None:
        super().__init__(reason, headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


class Forbidden(RegistryError):
    code = 403


class NotFound(RegistryError):
    code = 404

    def __init__(self, reason: str = "Not found.") -> None:
        super().__init__(reason)


class MethodNotAllowed(RegistryError):
    code = 405


class NotTheUploadUrl(MethodNotAllowed):
    """A POST to a project's index (…/pypi/simple, …/pypi/simple/…), mistaken for its upload URL."""

    def __init__(self, upload_url: str) -> None:
        """*upload_url* is the URL the client should have posted to."""
        # RFC 9110 §15.5.6: a 405 lists the methods the target does allow.
        super().__init__(
            "This is the project's index URL (for pip and uv), not its upload URL: "
            f"upload to {upload_url}",
            headers={"Allow": "GET, HEAD"},
        )


class Conflict(RegistryError):
    """The request contradicts what is recorded (a name's origin, a namespace)."""

    code = 409


class RequestTimeout(RegistryError):
    code = 408


class NotAcceptable(RegistryError):
    code = 406


class TooLarge(RegistryError):
    code = 413


class HeaderTooLarge(RegistryError):
    code = 431


class TooManyRequests(RegistryError):
    code = 429

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason, headers={"Retry-After": str(retry_after)})


class BadGateway(RegistryError):
    """An upstream index failed to answer usefully, and nothing cached can stand in."""

    code = 502


class GatewayTimeout(RegistryError):
    code = 504


class ServiceUnavailable(RegistryError):
    code = 503

    def __init__(self, reason: str = "The database is unavailable; retry shortly.") -> None:
        super().__init__(reason, headers={"Retry-After": "5"})


class InsufficientStorage(RegistryError):
    code = 507
