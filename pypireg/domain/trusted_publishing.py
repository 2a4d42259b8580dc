"""Trusted publishing: publishers, and which CI job each one is.

Domain layer, no I/O. The exchange (pypireg/oidc/exchange.py) has the ID
token checked first (domain/id_tokens.py: issuer, signature, registered
claims), then asks `choose_publisher` which publisher the job is, with
the claims the public index checks for each kind of CI (GitHub Actions,
GitLab CI, generic), and `job_facts` / `published_by` what to show of the
job. `publisher_spec` checks a publisher before it is registered.

Every refusal is a `TrustedPublishingError` whose description says which
check failed; none quotes the token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

ErrorCode = Literal["invalid-payload", "invalid-token", "invalid-publisher",
                    "invalid-reuse-token", "not-enabled", "issuer-unavailable", "rate-limited"]
IssuerKind = Literal["github", "gitlab", "generic"]
ISSUER_KINDS: tuple[IssuerKind, ...] = ("github", "gitlab", "generic")
# Asymmetric signatures only: a verifier that let the header choose HS256
# would take the issuer's *public* key for the HMAC secret.
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY_SECONDS = 30
MINTED_TOKEN_SECONDS = 15 * 60
DEFAULT_AUDIENCE = "pypireg"
# GitLab's ID tokens live as long as the job's timeout (an hour by default).
DEFAULT_MAX_LIFETIME = 2 * 3600.0
# GitLab CI's default configuration file, when a publisher names none.
DEFAULT_GITLAB_CI_CONFIG = ".gitlab-ci.yml"
MAX_TOKEN_LENGTH = 16 * 1024
_GITHUB_ISSUER_HOST = "token.actions.githubusercontent.com"


class TrustedPublishingError(Exception):
    """A refused exchange, in the public index's shape: a code and a description."""

    def __init__(self, code: ErrorCode, description: str, *, status: int = 422,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def document(self) -> dict[str, Any]:
        return {"message": "Token request failed",
                "errors": [{"code": self.code, "description": self.description}]}


@dataclass(frozen=True)
class Publisher:
    """A project's trusted publisher (one `trusted_publishers` row)."""

    id: int
    project_id: int
    issuer: str
    kind: IssuerKind
    # github: OWNER/REPO; gitlab: NAMESPACE/PROJECT; generic: None.
    repository: str | None
    # github: the workflow's file name; gitlab: the CI config path.
    workflow: str | None
    environment: str | None
    # github: repository_owner_id, pinned when given or at the first use.
    owner_id: str | None
    claims: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for listings: what a job must be to match."""
        if self.kind == "generic":
            return ", ".join(f"{k}={v}" for k, v in sorted(self.claims.items()))
        what = "workflow" if self.kind == "github" else "ci config"
        text = f"{self.repository} {what} {self.workflow}"
        if self.environment:
            text += f" environment {self.environment}"
        return text


@dataclass(frozen=True)
class JobFacts:
    """What the page and the packages API show of the job that published."""

    repository: str | None
    workflow: str | None
    ref: str | None
    sha: str | None
    run_id: str | None
    web_url: str | None

    def claims(self) -> dict[str, str]:
        return {k: v for k, v in (("repository", self.repository),
                                  ("workflow", self.workflow), ("ref", self.ref),
                                  ("sha", self.sha), ("run_id", self.run_id)) if v}


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def issuer_host(issuer: str) -> str:
    """The issuer URL without its scheme or trailing slash: `gitlab.example.com/sub`."""
    parts = urlsplit(issuer)
    return (parts.netloc + parts.path).rstrip("/").lower()


def publisher_mismatch(publisher: Publisher, claims: Mapping[str, Any]) -> str | None:
    """Why the job of *claims* is not *publisher* (None: it is), as the public index checks."""
    if publisher.kind == "github":
        return _github_mismatch(publisher, claims)
    if publisher.kind == "gitlab":
        return _gitlab_mismatch(publisher, claims)
    for name, expected in sorted(publisher.claims.items()):
        value = claims.get(name)
        if value is None or (str(value).lower() if isinstance(value, bool) else str(value)
                             ) != expected:
            return f"claim {name} is {json.dumps(value)[:100]}, expected {expected!r}"
    return None


def _github_mismatch(publisher: Publisher, claims: Mapping[str, Any]) -> str | None:
    repository = _claim(claims, "repository") or ""
    assert publisher.repository is not None and publisher.workflow is not None
    if repository.lower() != publisher.repository.lower():
        return f"repository is {repository!r}, expected {publisher.repository!r}"
    owner_id = _claim(claims, "repository_owner_id")
    if publisher.owner_id is not None and owner_id != publisher.owner_id:
        return (f"repository_owner_id is {owner_id!r}, expected {publisher.owner_id!r} "
                "(the owner was deleted and re-created?)")
    # OWNER/REPO/.github/workflows/FILE@REF
    workflow_ref = _claim(claims, "job_workflow_ref") or ""
    head, at, _ = workflow_ref.partition("@")
    repo_part, marker, workflow = head.partition("/.github/workflows/")
    if not (at and marker and repo_part.lower() == publisher.repository.lower()
            and workflow == publisher.workflow):
        return (f"job_workflow_ref is {workflow_ref[:200]!r}, expected "
                f"{publisher.repository}/.github/workflows/{publisher.workflow}@…")
    return _environment_mismatch(publisher, claims, case_sensitive=False)


def _gitlab_mismatch(publisher: Publisher, claims: Mapping[str, Any]) -> str | None:
    path = _claim(claims, "project_path") or ""
    assert publisher.repository is not None and publisher.workflow is not None
    if path.lower() != publisher.repository.lower():
        return f"project_path is {path!r}, expected {publisher.repository!r}"
    # HOST/NAMESPACE/PROJECT//PATH@REF, HOST being the issuer's (self-managed too)
    config_ref = _claim(claims, "ci_config_ref_uri") or ""
    head, at, _ = config_ref.partition("@")
    location, marker, path = head.partition("//")
    expected = f"{issuer_host(publisher.issuer)}/{publisher.repository}"
    if not (at and marker and location.lower() == expected.lower()
            and path == publisher.workflow):
        return (f"ci_config_ref_uri is {config_ref[:200]!r}, expected "
                f"{expected}//{publisher.workflow}@…")
    return _environment_mismatch(publisher, claims, case_sensitive=True)


def _environment_mismatch(publisher: Publisher, claims: Mapping[str, Any], *,
                          case_sensitive: bool) -> str | None:
    if publisher.environment is None:
        return None
    environment = _claim(claims, "environment")
    same = (environment == publisher.environment if case_sensitive
            else (environment or "").lower() == publisher.environment.lower())
    if environment is None or not same:
        return f"environment is {environment!r}, expected {publisher.environment!r}"
    return None


def choose_publisher(publishers: Sequence[Publisher], claims: Mapping[str, Any]) -> Publisher:
    """The one publisher the job is; refuses none, and matches in several projects."""
    matching = [p for p in publishers if publisher_mismatch(p, claims) is None]
    projects = {p.project_id for p in matching}
    if len(projects) > 1:
        raise TrustedPublishingError(
            "invalid-publisher", "This job matches trusted publishers of several projects; a "
            "minted token reaches one project: make the publishers more specific (an "
            "environment, say).")
    if matching:
        return matching[0]
    if not publishers:
        raise TrustedPublishingError(
            "invalid-publisher", "No project has a trusted publisher for this issuer.")
    reasons = "; ".join(
        f"publisher {p.id}: {publisher_mismatch(p, claims)}" for p in publishers[:5])
    raise TrustedPublishingError(
        "invalid-publisher", f"The job matches no trusted publisher ({reasons}).")


def job_facts(kind: IssuerKind, issuer: str, claims: Mapping[str, Any]) -> JobFacts:
    """The job behind *claims*: repository, workflow, ref, sha, run or pipeline id, link."""
    ref = _short_ref(_claim(claims, "ref"))
    sha = _claim(claims, "sha")
    if kind == "github":
        repository = _claim(claims, "repository")
        workflow = _between(_claim(claims, "job_workflow_ref"), "/.github/workflows/", "@")
        run_id = _claim(claims, "run_id")
        server = ("https://github.com" if issuer_host(issuer) == _GITHUB_ISSUER_HOST
                  else _origin(issuer))
        url = f"{server}/{repository}/actions/runs/{run_id}" if repository and run_id else None
        return JobFacts(repository, workflow, ref, sha, run_id, url)
    if kind == "gitlab":
        repository = _claim(claims, "project_path")
        workflow = _between(_claim(claims, "ci_config_ref_uri"), "//", "@")
        run_id = _claim(claims, "pipeline_id")
        url = (f"{issuer.rstrip('/')}/{repository}/-/pipelines/{run_id}"
               if repository and run_id else None)
        return JobFacts(repository, workflow, ref, sha, run_id, url)
    return JobFacts(_claim(claims, "repository") or _claim(claims, "sub"),
                    _claim(claims, "workflow"), ref, sha,
                    _claim(claims, "run_id") or _claim(claims, "pipeline_id"), None)


def published_by(kind: IssuerKind, facts: JobFacts) -> str:
    """"OWNER/REPO@REF via WORKFLOW (run N)", as much of it as the job told."""
    text = facts.repository or "a CI job"
    if facts.ref:
        text += f"@{facts.ref}"
    if facts.workflow:
        text += f" via {facts.workflow}"
    if facts.run_id:
        text += f" ({'pipeline' if kind == 'gitlab' else 'run'} {facts.run_id})"
    return text


def _short_ref(ref: str | None) -> str | None:
    if ref is None:
        return None
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def _between(text: str | None, start: str, end: str) -> str | None:
    if not text or start not in text:
        return None
    rest = text.split(start, 1)[1]
    return rest.split(end, 1)[0] if end in rest else rest


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class PublisherSpec:
    """A publisher to register, checked (the CLI and the HTTP API both make one)."""

    kind: IssuerKind
    repository: str | None = None
    workflow: str | None = None
    environment: str | None = None
    owner_id: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)


_GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")
_GITLAB_PATH = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.][A-Za-z0-9_.-]*)+\Z")
_WORKFLOW_FILE = re.compile(r"[A-Za-z0-9_.-]{1,200}\.ya?ml\Z")
_CI_CONFIG_PATH = re.compile(r"[\x21-\x3f\x41-\x7e]{1,500}\Z")  # visible ASCII but @
_CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}\Z")
_OWNER_ID = re.compile(r"[0-9]{1,20}\Z")


def publisher_spec(kind: IssuerKind, *, repository: str | None = None,
                   workflow: str | None = None, environment: str | None = None,
                   owner_id: str | None = None, claims: Mapping[str, str] | None = None
                   ) -> PublisherSpec:
    """Check a publisher for an issuer of *kind*; ValueError says what to fix.

    The messages name the CLI's options; the HTTP API takes the same names.
    """
    claims = dict(claims or {})
    if kind == "generic":
        if repository or workflow or environment or owner_id:
            raise ValueError("a generic issuer's publisher is only claims: --claim NAME=VALUE")
        if not claims:
            raise ValueError("give at least one --claim NAME=VALUE (all must match), e.g. "
                             "--claim sub=repo:acme/tools")
        for name, value in claims.items():
            if not _CLAIM_NAME.match(name) or name in ("iss", "aud", "exp", "iat", "nbf",
                                                       "jti"):
                raise ValueError(f"claim name {name[:100]!r}: letters, digits and _ . : - (at "
                                 "most 100), not a registered claim the registry checks itself")
            if not value or len(value) > 1000 or not value.isprintable():
                raise ValueError(f"claim {name}: the value must be 1 to 1000 printable "
                                 "characters")
        return PublisherSpec(kind, claims=claims)
    if claims:
        raise ValueError(f"a {kind} issuer's publisher takes no --claim")
    if kind == "github":
        if not repository or not _GITHUB_REPOSITORY.match(repository):
            raise ValueError("--github must be OWNER/REPO, e.g. acme/tools")
        if not workflow or not _WORKFLOW_FILE.match(workflow):
            raise ValueError("--workflow must be the workflow's file name in "
                             ".github/workflows/, e.g. release.yml")
        if owner_id is not None and not _OWNER_ID.match(owner_id):
            raise ValueError("--owner-id must be the owner's numeric GitHub id")
    else:
        if not repository or not _GITLAB_PATH.match(repository) or ".." in repository:
            raise ValueError("--gitlab must be NAMESPACE/PROJECT, e.g. acme/tools")
        workflow = workflow or DEFAULT_GITLAB_CI_CONFIG
        if (not _CI_CONFIG_PATH.match(workflow) or workflow.startswith("/")
                or ".." in workflow.split("/")):
            raise ValueError("--ci-config-path must be a relative path in the repository "
                             f"without '@', e.g. {DEFAULT_GITLAB_CI_CONFIG}")
        if owner_id is not None:
            raise ValueError("--owner-id is for GitHub publishers")
    if environment is not None and (not environment or len(environment) > 255
                                    or not environment.isprintable()):
        raise ValueError("--environment must be 1 to 255 printable characters")
    return PublisherSpec(kind, repository, workflow, environment or None, owner_id)
