"""The Authorizer: who is calling, and what may they do to this project.

Between the HTTP layer and storage: it looks tokens, projects, groups and
roles up through storage (with caches dropped on every committed change,
see storage/changes.py), applies the policy of domain/access_policy.py and
rate-limits failed authentication per client address.

Only failures count and only failures are refused (429 instead of 401), so
a client with a valid token is never slowed down, even behind the same
address as one guessing tokens. Tokens have 256 bits of randomness, so the
limit is about noise and load, not about guessing succeeding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pypireg.batching import PendingCounts
from pypireg.cache import Cache
from pypireg.domain import access_policy as policy
from pypireg.domain.access_policy import Access, Credentials
from pypireg.domain.errors import TooManyRequests, Unauthorized
from pypireg.domain.tokens import hash_token, looks_like_token
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
LAST_USED_FLUSH_SECONDS = 30.0
# A safety net only: cached entries are dropped on change notifications.
CACHE_TTL = 60.0
FAILURES_PER_WINDOW = 20
WINDOW_SECONDS = 60.0
_MAX_TRACKED = 100_000


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


class FailureLimiter:
    def __init__(self, clock: IReactorTime, limit: int = FAILURES_PER_WINDOW,
                 window: float = WINDOW_SECONDS) -> None:
        self._clock = clock
        self.limit = limit
        self._window = window
        # client → (start of its current window, failures in it)
        self._windows: dict[str, tuple[float, int]] = {}

    def record_failure(self, client: str) -> None:
        """Count a failed attempt; raise TooManyRequests once over the limit."""
        now = self._clock.seconds()
        start, count = self._windows.get(client, (now, 0))
        if now - start >= self._window:
            start, count = now, 0
        count += 1
        if len(self._windows) >= _MAX_TRACKED and client not in self._windows:
            self._prune(now)
        self._windows[client] = (start, count)
        if count > self.limit:
            retry_after = max(1, math.ceil(start + self._window - now))
            raise TooManyRequests(
                f"Too many failed authentication attempts from {client}; retry in "
                f"{retry_after} seconds.", retry_after)

    def _prune(self, now: float) -> None:
        self._windows = {c: w for c, w in self._windows.items() if now - w[0] < self._window}


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
        # Token uses since the last flush (only the time is recorded).
        self._used: PendingCounts[int] = PendingCounts(
            lambda used: token_store.touch_tokens(db, [token_id for token_id, _ in used]),
            "token use")
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
        """Record the tokens used since the last flush; a failed flush is kept for the next."""
        await self._used.flush()

    async def authenticate(self, credentials: Credentials | str | None, client: str = ""
                           ) -> TokenRecord | None:
        if credentials is None:
            return None
        if isinstance(credentials, str):
            credentials = Credentials(credentials)
        token = None
        if looks_like_token(credentials.secret):
            token = await self._find_token(credentials.secret)
        if token is not None and not policy.presented_by_owner(token, credentials):
            token = None
        if token is not None and token.user_id is not None and await self._user_blocked(
                token.user_id):
            token = None
        if token is None:
            self.failures.record_failure(client)
            raise Unauthorized("Invalid, expired or revoked token (deploy tokens also need "
                               "their own user name).")
        self._used.add(token.id, 0)
        return token

    async def _levels(self, token: TokenRecord | None, projects: list[Project]
                      ) -> dict[int, int]:
        """The level the token grants in each of these projects (absent: none)."""
        if token is None or not projects:
            return {}
        roles: dict[int, str] = {}
        if token.kind == "personal":
            assert token.user_id is not None
            roles = await self._roles_of(token.user_id, [p.id for p in projects])
        return policy.levels(token, projects, roles)

    async def authorize(self, project_ref: str, credentials: Credentials | str | None,
                        access: Access, client: str = "") -> Grant:
        """Return the grant for *access* to *project_ref*, or raise the right error."""
        token = await self.authenticate(credentials, client)
        project = await self._find_project(project_ref)
        levels = await self._levels(token, [project] if project else [])
        level = levels.get(project.id, 0) if project else 0
        policy.check_project_access(token, project, level, access)
        assert project is not None
        return Grant(project, token)

    async def authorize_group(self, group_ref: str, credentials: Credentials | str | None,
                              client: str = "") -> GroupGrant:
        """Read access to a group: its public projects, plus those the token reaches."""
        token = await self.authenticate(credentials, client)
        group = await group_store.get_group(self._db, group_ref)
        projects = await group_store.projects_in_group(self._db, group) if group else []
        levels = await self._levels(token, projects)
        readable = policy.readable_in_group(token, group.public if group else None, projects,
                                            levels)
        assert group is not None
        return GroupGrant(group, readable)


    async def readable_projects(self, credentials: Credentials | str | None, client: str = ""
                                ) -> list[Project]:
        """Every project the caller may read, in id order: public ones, plus those it reaches.

        A bad token is refused (and counted) as everywhere else, rather than
        treated as anonymous: the caller should learn that it is wrong.
        """
        token = await self.authenticate(credentials, client)
        projects = await project_store.list_projects(self._db)
        return policy.readable_projects(projects, await self._levels(token, projects))
