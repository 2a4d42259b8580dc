"""The token check: who is calling, and what may they do to this project.

HTTP layer. Credentials come as HTTP Basic (password = token) or a
`PRIVATE-TOKEN` header. As in GitLab, the Basic user name is ignored for
project and personal tokens and must match for deploy tokens.

Levels: read (the index and files), write (uploads) and maintain (yanks
and deletes). Project and deploy tokens reach their one project: read scope
reads, write scope does everything. Personal tokens reach the projects
their user is a member of: the role caps the level (reporter reads,
developer uploads, maintainer maintains) and read_api scope caps it at read.

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

from pypireg.cache import Cache
from pypireg.domain.errors import Forbidden, NotFound, Unauthorized
from pypireg.domain.tokens import hash_token, looks_like_token
from pypireg.http.rate_limit import FailureLimiter
from pypireg.storage import groups as group_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage import users as user_store
from pypireg.storage.changes import EVERYTHING, ChangeListener
from pypireg.storage.database import Database
from pypireg.storage.groups import Group
from pypireg.storage.projects import Project
from pypireg.storage.tokens import TokenRecord

_log = Logger()
Access = Literal["read", "write", "maintain"]
_LEVEL: dict[str, int] = {"read": 1, "write": 2, "maintain": 3}
_ROLE_LEVEL: dict[str, int] = {"reporter": 1, "developer": 2, "maintainer": 3}
LAST_USED_FLUSH_SECONDS = 30.0
# A safety net only: cached entries are dropped on change notifications.
CACHE_TTL = 60.0


@dataclass(frozen=True)
class Credentials:
    secret: str
    username: str | None = None


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


class Authorizer:
    """Checks tokens against projects and batches `last_used_at` updates."""

    def __init__(self, db: Database, clock: IReactorTime,
                 changes: ChangeListener | None = None) -> None:
        self._db = db
        self._clock = clock
        self._changes = changes
        # Caches of what the token check reads, dropped on every committed
        # change to their tables (any process; see storage/changes.py) and
        # bypassed while change notifications are not arriving.
        self._tokens: Cache[bytes, TokenRecord] = Cache(clock, 10_000, CACHE_TTL)
        self._projects: Cache[str, Project | None] = Cache(clock, 10_000, CACHE_TTL)
        self._roles: Cache[tuple[int, int], str | None] = Cache(clock, 50_000, CACHE_TTL)
        self._blocked: Cache[int, bool] = Cache(clock, 10_000, CACHE_TTL)
        if changes is not None:
            changes.subscribe(self._changed)
        self._used: set[int] = set()
        self.failures = FailureLimiter(clock)
        self._flusher = LoopingCall(self.flush_last_used)
        self._flusher.clock = clock

    def start(self) -> None:
        self._flusher.start(LAST_USED_FLUSH_SECONDS, now=False)

    async def stop(self) -> None:
        if self._flusher.running:
            self._flusher.stop()
        await self.flush_last_used()

    def _changed(self, table: str) -> None:
        if table in ("tokens", "users", EVERYTHING):
            self._tokens.clear()
        if table in ("projects", EVERYTHING):
            self._projects.clear()
        if table in ("members", "users", "projects", EVERYTHING):
            self._roles.clear()
        if table in ("users", EVERYTHING):
            self._blocked.clear()

    @property
    def _caching(self) -> bool:
        return self._changes is not None and self._changes.live

    async def _find_token(self, secret: str) -> TokenRecord | None:
        key = hash_token(secret)
        token = self._tokens.get(key) if self._caching else None
        if token is None:
            token = await token_store.find_live_token(self._db, secret)
            if token is not None and self._caching:
                self._tokens.put(key, token)
        if token is not None and token.expires_at is not None and (
                token.expires_at.timestamp() <= self._clock.seconds()):
            return None
        return token

    async def _find_project(self, ref: str) -> Project | None:
        key = ref.lower()
        if self._caching:
            cached = self._projects.get(key)
            if cached is not None:
                return cached
        project = await project_store.get_project(self._db, ref)
        if project is not None and self._caching:
            self._projects.put(key, project)
        return project

    async def _user_blocked(self, user_id: int) -> bool:
        cached = self._blocked.get(user_id) if self._caching else None
        if cached is None:
            cached = await user_store.is_blocked(self._db, user_id)
            if self._caching:
                self._blocked.put(user_id, cached)
        return cached

    async def _roles_of(self, user_id: int, project_ids: list[int]) -> dict[int, str]:
        if self._caching and len(project_ids) == 1:
            key = (user_id, project_ids[0])
            cached = self._roles.get(key)
            if cached is not None:
                return {project_ids[0]: cached} if cached else {}
            roles = await user_store.roles_of(self._db, user_id, project_ids)
            self._roles.put(key, roles.get(project_ids[0], ""))
            return dict(roles)
        return dict(await user_store.roles_of(self._db, user_id, project_ids))

    async def flush_last_used(self) -> None:
        used, self._used = self._used, set()
        try:
            await token_store.touch_tokens(self._db, used)
        except Exception:
            _log.failure("could not record token use for {count} tokens", count=len(used))

    async def authenticate(self, credentials: Credentials | str | None, client: str = ""
                           ) -> TokenRecord | None:
        if credentials is None:
            return None
        if isinstance(credentials, str):
            credentials = Credentials(credentials)
        token = None
        if looks_like_token(credentials.secret):
            token = await self._find_token(credentials.secret)
        if token is not None and token.kind == "deploy" and token.username != credentials.username:
            token = None  # a deploy token only works with its own user name
        if token is not None and token.user_id is not None and await self._user_blocked(
                token.user_id):
            token = None
        if token is None:
            self.failures.record_failure(client)
            raise Unauthorized("Invalid, expired or revoked token (deploy tokens also need "
                               "their own user name).")
        self._used.add(token.id)
        return token

    async def _levels(self, token: TokenRecord | None, projects: list[Project]
                      ) -> dict[int, int]:
        """The level the token grants in each of these projects (absent: none)."""
        if token is None or not projects:
            return {}
        scope_cap = _LEVEL["read"] if token.scope == "read" else _LEVEL["maintain"]
        if token.kind == "personal":
            assert token.user_id is not None
            roles = await self._roles_of(token.user_id, [p.id for p in projects])
            return {pid: min(_ROLE_LEVEL[role], scope_cap) for pid, role in roles.items()}
        return {p.id: scope_cap for p in projects if p.id == token.project_id}

    async def authorize(self, project_ref: str, credentials: Credentials | str | None,
                        access: Access, client: str = "") -> Grant:
        """Return the grant for *access* to *project_ref*, or raise the right error."""
        token = await self.authenticate(credentials, client)
        project = await self._find_project(project_ref)
        levels = await self._levels(token, [project] if project else [])
        level = levels.get(project.id, 0) if project else 0
        if project is None or not (level or project.public):
            if token is None:
                raise Unauthorized()
            raise NotFound("Project not found.")
        if access != "read":
            if token is None:
                raise Unauthorized()
            if level < _LEVEL[access]:
                raise Forbidden(_refusal(token, level, access))
        if not project.packages_enabled:
            if access != "read":
                raise Forbidden("The package registry is disabled for this project.")
            raise NotFound("The package registry is disabled for this project.")
        return Grant(project, token)

    async def authorize_group(self, group_ref: str, credentials: Credentials | str | None,
                              client: str = "") -> GroupGrant:
        """Read access to a group: its public projects, plus those the token reaches.

        A private group is visible only to callers who reach a project inside
        it; anonymous callers get 401 and others 404, as for projects.
        """
        token = await self.authenticate(credentials, client)
        group = await group_store.get_group(self._db, group_ref)
        projects = await group_store.projects_in_group(self._db, group) if group else []
        levels = await self._levels(token, projects)
        if group is None or not (group.public or levels):
            if token is None:
                raise Unauthorized()
            raise NotFound("Group not found.")
        readable = [p for p in projects
                    if p.packages_enabled and (p.public or levels.get(p.id, 0))]
        return GroupGrant(group, readable)


def _refusal(token: TokenRecord, level: int, access: Access) -> str:
    what = {"write": "uploads", "maintain": "yanks and deletes"}[access]
    if level == 0:
        return f"This token does not reach this project for {what}."
    if token.kind == "personal" and token.scope == "write":
        needed = "developer" if access == "write" else "maintainer"
        return f"{what.capitalize()} need the {needed} role in this project."
    return (f"This token has {token.scope_name} scope; {what} need a token with write "
            "access.")
