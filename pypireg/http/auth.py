"""The token check: who is calling, and may they read or write this project.

HTTP layer. Credentials come as HTTP Basic (password = token, user name
ignored, as GitLab does for personal tokens) or a `PRIVATE-TOKEN` header.

Answers are chosen so that nothing leaks: an anonymous caller gets 401 for
any project that is not public (existing or not), so pip prompts for a
token; a caller with a valid token for another project gets 404 for a
private project, exactly as for one that does not exist.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from pypireg.errors import Forbidden, NotFound, Unauthorized
from pypireg.http.rate_limit import FailureLimiter
from pypireg.storage import groups as group_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.database import Database
from pypireg.storage.groups import Group
from pypireg.storage.projects import Project
from pypireg.storage.tokens import TokenRecord
from pypireg.tokens import looks_like_token

_log = Logger()
Access = Literal["read", "write"]
LAST_USED_FLUSH_SECONDS = 30.0


@dataclass(frozen=True)
class GroupGrant:
    """Read access to a group's index: the projects in it the caller may read."""

    group: Group
    projects: list[Project]


@dataclass(frozen=True)
class Grant:
    """A successful access check."""

    project: Project
    token: TokenRecord | None


def credentials_from(authorization: bytes | None, private_token: bytes | None) -> str | None:
    """The token the client presented, or None if it presented none.

    Raises Unauthorized for credentials that cannot be parsed.
    """
    if private_token:
        try:
            return private_token.decode("ascii").strip()
        except UnicodeDecodeError:
            raise Unauthorized("Invalid PRIVATE-TOKEN header.") from None
    if not authorization:
        return None
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() == b"bearer":
        try:
            return value.decode("ascii").strip()
        except UnicodeDecodeError:
            raise Unauthorized("Invalid Bearer credentials.") from None
    if scheme.lower() != b"basic":
        raise Unauthorized("Unsupported authorization scheme: use Basic with a token.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Invalid Basic credentials.") from None
    _user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("Invalid Basic credentials.")
    return password


def client_address(request: IRequest) -> str:
    """The peer's address, the key for rate limiting."""
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def request_credentials(headers: Headers) -> str | None:
    """The token presented in a request's headers (see credentials_from)."""
    return credentials_from(
        headers.getRawHeaders(b"authorization", [None])[0],
        headers.getRawHeaders(b"private-token", [None])[0],
    )


class Authorizer:
    """Checks tokens against projects and batches `last_used_at` updates."""

    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._used: set[int] = set()
        self._failures = FailureLimiter(clock)
        self._flusher = LoopingCall(self.flush_last_used)
        self._flusher.clock = clock

    def start(self) -> None:
        self._flusher.start(LAST_USED_FLUSH_SECONDS, now=False)

    async def stop(self) -> None:
        if self._flusher.running:
            self._flusher.stop()
        await self.flush_last_used()

    async def flush_last_used(self) -> None:
        used, self._used = self._used, set()
        try:
            await token_store.touch_tokens(self._db, used)
        except Exception:
            _log.failure("could not record token use for {count} tokens", count=len(used))

    async def authenticate(self, secret: str | None, client: str = "") -> TokenRecord | None:
        if secret is None:
            return None
        token = None
        if looks_like_token(secret):
            token = await token_store.find_live_token(self._db, secret)
        if token is None:
            self._failures.record_failure(client)
            raise Unauthorized("Invalid, expired or revoked token.")
        self._used.add(token.id)
        return token

    async def authorize(self, project_ref: str, secret: str | None, access: Access,
                        client: str = "") -> Grant:
        """Return the grant for *access* to *project_ref*, or raise the right error."""
        token = await self.authenticate(secret, client)
        project = await project_store.get_project(self._db, project_ref)
        own = project is not None and token is not None and token.project_id == project.id
        if project is None or not (own or (project.public and access == "read")):
            if token is None:
                raise Unauthorized()
            if not own and (project is None or not project.public):
                raise NotFound("Project not found.")
            if access == "write":
                raise Forbidden("This token may not change this project (uploads, yanks, deletes).")
        assert project is not None
        if access == "write" and token is not None and own and token.scope != "write":
            raise Forbidden(
                "This token has read scope; uploads, yanks and deletes need a write token.")
        if access == "write" and token is None:
            raise Unauthorized()
        if not project.packages_enabled:
            if access == "write" and own:
                raise Forbidden("The package registry is disabled for this project.")
            raise NotFound("The package registry is disabled for this project.")
        return Grant(project, token)

    async def authorize_group(self, group_ref: str, secret: str | None, client: str = ""
                              ) -> GroupGrant:
        """Read access to a group: its public projects, plus the caller's own project.

        A private group is visible only to tokens of a project inside it;
        anonymous callers get 401 and other tokens 404, as for projects.
        """
        token = await self.authenticate(secret, client)
        group = await group_store.get_group(self._db, group_ref)
        projects = await group_store.projects_in_group(self._db, group) if group else []
        own = token is not None and any(p.id == token.project_id for p in projects)
        if group is None or not (group.public or own):
            if token is None:
                raise Unauthorized()
            raise NotFound("Group not found.")
        readable = [
            p for p in projects
            if p.packages_enabled and (p.public or (token is not None
                                                    and token.project_id == p.id))
        ]
        return GroupGrant(group, readable)
