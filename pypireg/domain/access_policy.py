"""Who may do what to a project: levels, roles, scopes and which refusal to give.

Domain layer, no I/O: the Authorizer (pypireg/access.py) looks the caller,
the project and the caller's roles up and asks these functions.

Levels: read (the index and files), write (uploads) and maintain (yanks and
deletes). Project and deploy tokens reach their one project: read scope
reads, write scope does everything; a trusted publisher's minted token
reaches its one project for uploads only. Personal tokens reach the projects
their user is a member of: the role caps the level (reporter reads,
developer uploads, maintainer maintains) and read_api scope caps it at read.

Answers are chosen so that nothing leaks: an anonymous caller gets 401 for
any project that is not public (existing or not), so pip prompts for a
token; a caller with a valid token for another project gets 404 for a
private project, exactly as for one that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from pypireg.domain.errors import Forbidden, NotFound, Unauthorized

Access = Literal["read", "write", "maintain"]
LEVELS: dict[Access, int] = {"read": 1, "write": 2, "maintain": 3}
ROLE_LEVELS: dict[str, int] = {"reporter": 1, "developer": 2, "maintainer": 3}


@dataclass(frozen=True)
class Credentials:
    """What a client presented: a token, and for Basic auth the user name."""

    secret: str
    username: str | None = None


class Caller(Protocol):
    """The facts about a valid token that the policy needs."""

    @property
    def kind(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def scope_name(self) -> str: ...
    @property
    def project_id(self) -> int | None: ...
    @property
    def username(self) -> str | None: ...


class Target(Protocol):
    """The facts about a project that the policy needs."""

    @property
    def id(self) -> int: ...
    @property
    def public(self) -> bool: ...
    @property
    def packages_enabled(self) -> bool: ...


P = TypeVar("P", bound=Target)


def presented_by_owner(token: Caller, credentials: Credentials) -> bool:
    """A deploy token works only with its own user name (GitLab's rule)."""
    return token.kind != "deploy" or token.username == credentials.username


def levels(token: Caller | None, projects: Sequence[Target], roles: Mapping[int, str]
           ) -> dict[int, int]:
    """The level *token* has in each project (absent: none).

    *roles* are the token's user's roles by project id (personal tokens only).
    """
    if token is None:
        return {}
    scope_cap = LEVELS["read"] if token.scope == "read" else LEVELS["maintain"]
    if token.kind == "trusted":
        # A CI job's minted token uploads; it never yanks or deletes.
        scope_cap = min(scope_cap, LEVELS["write"])
    if token.kind == "personal":
        return {p.id: min(ROLE_LEVELS[roles[p.id]], scope_cap) for p in projects
                if p.id in roles}
    return {p.id: scope_cap for p in projects if p.id == token.project_id}


def check_project_access(token: Caller | None, project: Target | None, level: int,
                         access: Access) -> None:
    """Raise the refusal for *access* to *project* at *level*, or return if allowed."""
    if project is None or not (level or project.public):
        if token is None:
            raise Unauthorized()
        raise NotFound("Project not found.")
    if access != "read":
        if token is None:
            raise Unauthorized()
        if level < LEVELS[access]:
            raise Forbidden(_refusal(token, level, access))
    if not project.packages_enabled:
        if access != "read":
            raise Forbidden("The package registry is disabled for this project.")
        raise NotFound("The package registry is disabled for this project.")


def readable_in_group(token: Caller | None, group_public: bool | None, projects: Sequence[P],
                      group_levels: Mapping[int, int]) -> list[P]:
    """The group's projects the caller may read; raises if the group is hidden.

    *group_public* is None when the group does not exist. A private group is
    visible only to callers who reach a project inside it.
    """
    if group_public is None or not (group_public or group_levels):
        if token is None:
            raise Unauthorized()
        raise NotFound("Group not found.")
    return [p for p in projects
            if p.packages_enabled and (p.public or group_levels.get(p.id, 0))]


def readable_projects(projects: Sequence[P], project_levels: Mapping[int, int]) -> list[P]:
    """The projects a caller may read, for a listing: public ones and those it reaches.

    *project_levels* are the caller's levels by project id (empty when
    anonymous). Projects with packages disabled are left out: every read of
    them answers 404.
    """
    return [p for p in projects
            if p.packages_enabled and (p.public or project_levels.get(p.id, 0))]


def check_may_manage_tokens(token: Caller | None, what: str = "deploy tokens") -> None:
    """Only a maintainer's personal token may mint or revoke a project's tokens.

    A deploy or project token cannot make more tokens, so one leaked token
    cannot make itself permanent; the same goes for registering trusted
    publishers (*what*), which mint tokens. The caller must already hold
    maintain access to the project.
    """
    if token is None or token.kind != "personal":
        raise Forbidden(f"Managing {what} needs the personal access token (api "
                        "scope) of a maintainer of this project.")


def _refusal(token: Caller, level: int, access: Access) -> str:
    what = {"write": "uploads", "maintain": "yanks and deletes"}[access]
    if level == 0:
        return f"This token does not reach this project for {what}."
    if token.kind == "trusted":
        return (f"A trusted publisher's token only uploads; {what} need a maintainer's or a "
                "write token.")
    if token.kind == "personal" and token.scope == "write":
        needed = "developer" if access == "write" else "maintainer"
        return f"{what.capitalize()} need the {needed} role in this project."
    return (f"This token has {token.scope_name} scope; {what} need a token with write "
            "access.")
