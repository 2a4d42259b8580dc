"""The access policy on its own: no database, no HTTP (domain/access_policy.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pypireg.domain import access_policy as policy
from pypireg.domain.access_policy import Credentials
from pypireg.domain.errors import Forbidden, NotFound, RegistryError, Unauthorized


@dataclass(frozen=True)
class Token:
    kind: str = "project"
    scope: str = "write"
    scope_name: str = "write"
    project_id: int | None = 1
    username: str | None = None


@dataclass(frozen=True)
class Project:
    id: int = 1
    public: bool = False
    packages_enabled: bool = True


def refusal(token: Token | None, project: Project | None, access: policy.Access,
            roles: dict[int, str] | None = None) -> tuple[int, str] | None:
    level = policy.levels(token, [project] if project else [], roles or {}).get(
        project.id if project else 0, 0)
    try:
        policy.check_project_access(token, project, level, access)
    except RegistryError as e:
        return e.code, e.reason
    return None


def test_anonymous_callers_get_401_for_anything_not_public() -> None:
    assert refusal(None, Project(public=False), "read")[0] == 401  # type: ignore[index]
    assert refusal(None, None, "read")[0] == 401  # type: ignore[index]
    assert refusal(None, Project(public=True), "read") is None
    assert refusal(None, Project(public=True), "write")[0] == 401  # type: ignore[index]


def test_another_projects_token_sees_404_as_for_a_missing_project() -> None:
    other = Token(project_id=2)
    assert refusal(other, Project(), "read") == refusal(other, None, "read")
    assert refusal(other, None, "read") == (404, "Project not found.")
    assert refusal(other, Project(public=True), "read") is None
    assert refusal(other, Project(public=True), "write") == (
        403, "This token does not reach this project for uploads.")


@pytest.mark.parametrize(("scope", "access", "allowed"), [
    ("read", "read", True), ("read", "write", False), ("read", "maintain", False),
    ("write", "read", True), ("write", "write", True), ("write", "maintain", True),
])
def test_project_and_deploy_tokens_by_scope(scope: str, access: policy.Access,
                                            allowed: bool) -> None:
    for kind in ("project", "deploy"):
        answer = refusal(Token(kind=kind, scope=scope), Project(), access)
        assert (answer is None) is allowed, (kind, scope, access, answer)
        if not allowed:
            assert answer is not None and answer[0] == 403
            assert "need a token with write access" in answer[1]


@pytest.mark.parametrize(("role", "scope", "level"), [
    ("reporter", "write", 1), ("developer", "write", 2), ("maintainer", "write", 3),
    ("maintainer", "read", 1), ("developer", "read", 1),
])
def test_personal_tokens_take_the_lower_of_role_and_scope(role: str, scope: str,
                                                          level: int) -> None:
    token = Token(kind="personal", scope=scope, project_id=None)
    assert policy.levels(token, [Project(id=7)], {7: role}) == {7: level}
    assert policy.levels(token, [Project(id=8)], {7: role}) == {}


def test_personal_refusals_name_the_role_needed() -> None:
    token = Token(kind="personal", scope="write", scope_name="api", project_id=None)
    assert refusal(token, Project(), "write", {1: "reporter"}) == (
        403, "Uploads need the developer role in this project.")
    assert refusal(token, Project(), "maintain", {1: "developer"}) == (
        403, "Yanks and deletes need the maintainer role in this project.")
    assert refusal(token, Project(), "maintain", {1: "maintainer"}) is None


def test_disabled_packages_hide_reads_and_forbid_writes() -> None:
    disabled = Project(packages_enabled=False)
    assert refusal(Token(), disabled, "read")[0] == 404  # type: ignore[index]
    assert refusal(Token(), disabled, "write")[0] == 403  # type: ignore[index]


def test_group_visibility() -> None:
    public, private, off = Project(1, True), Project(2, False), Project(3, True, False)
    projects = [public, private, off]
    assert policy.readable_in_group(None, True, projects, {}) == [public]
    with pytest.raises(Unauthorized):
        policy.readable_in_group(None, False, projects, {})
    with pytest.raises(NotFound):
        policy.readable_in_group(Token(project_id=9), False, projects, {})
    with pytest.raises(NotFound):
        policy.readable_in_group(Token(), None, [], {})
    # A private group is visible to a caller who reaches a project in it.
    assert policy.readable_in_group(Token(project_id=2), False, projects, {2: 3}) == [
        public, private]


def test_listed_projects() -> None:
    public, private, off, reached = (Project(1, True), Project(2, False), Project(3, True, False),
                                     Project(4, False))
    projects = [public, private, off, reached]
    assert policy.readable_projects(projects, {}) == [public]
    assert policy.readable_projects(projects, {4: 1, 3: 3}) == [public, reached]


def test_deploy_tokens_need_their_own_user_name() -> None:
    deploy = Token(kind="deploy", username="ci-bot")
    assert policy.presented_by_owner(deploy, Credentials("s", "ci-bot"))
    assert not policy.presented_by_owner(deploy, Credentials("s", "__token__"))
    assert not policy.presented_by_owner(deploy, Credentials("s"))
    assert policy.presented_by_owner(Token(), Credentials("s", "anyone"))


def test_only_personal_tokens_manage_tokens() -> None:
    policy.check_may_manage_tokens(Token(kind="personal", project_id=None))
    for token in (None, Token(kind="project"), Token(kind="deploy")):
        with pytest.raises(Forbidden, match="personal access token"):
            policy.check_may_manage_tokens(token)
