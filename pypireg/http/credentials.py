"""Reading credentials and the client's address from a request.

HTTP layer. Credentials come as HTTP Basic (password = token), a Bearer
token or a `PRIVATE-TOKEN` header. As in GitLab, the Basic user name is
ignored for project and personal tokens and must match for deploy tokens
(the policy in domain/access_policy.py decides that).
"""

from __future__ import annotations

import base64
import binascii

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from pypireg.domain.access_policy import Credentials
from pypireg.domain.errors import Unauthorized


def credentials_from(authorization: bytes | None, private_token: bytes | None
                     ) -> Credentials | None:
    """The token the client presented, or None if it presented none.

    Raises Unauthorized for credentials that cannot be parsed.
    """
    if private_token:
        try:
            return Credentials(private_token.decode("ascii").strip())
        except UnicodeDecodeError:
            raise Unauthorized("Invalid PRIVATE-TOKEN header.") from None
    if not authorization:
        return None
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() == b"bearer":
        try:
            return Credentials(value.decode("ascii").strip())
        except UnicodeDecodeError:
            raise Unauthorized("Invalid Bearer credentials.") from None
    if scheme.lower() != b"basic":
        raise Unauthorized("Unsupported authorization scheme: use Basic with a token.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Invalid Basic credentials.") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("Invalid Basic credentials.")
    return Credentials(password, user)


def client_address(request: IRequest) -> str:
    """The peer's address, the key for rate limiting."""
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def request_credentials(headers: Headers) -> Credentials | None:
    """The token presented in a request's headers (see credentials_from)."""
    return credentials_from(
        headers.getRawHeaders(b"authorization", [None])[0],
        headers.getRawHeaders(b"private-token", [None])[0],
    )
