"""What a request may read or change: the Authorizer asked with its credentials.

HTTP layer: it reads the credentials and client address off the request,
asks the Authorizer (pypireg/access.py) and turns a grant into the
ReadScope the index, file and page routes serve from. The URL prefixes that
links are built from live here too: absolute from `server.base_url`, else
paths on the request's own origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from twisted.web.iweb import IRequest

from pypireg.access import Authorizer, Grant
from pypireg.domain.access_policy import Access, check_may_manage_tokens
from pypireg.domain.audit import Actor
from pypireg.domain.errors import Forbidden
from pypireg.http.credentials import client_address, request_credentials
from pypireg.proxy.index import IndexRef
from pypireg.storage.projects import Project
from pypireg.storage.tokens import TokenRecord


@dataclass(frozen=True)
class ReadScope:
    """What a read request may see: one project, or a group's readable projects."""

    project_ids: list[int]
    public: bool
    # The ".../packages/pypi" URL prefix: absolute from base_url, else a path.
    prefix: str
    # Set for a group's index.
    group_id: int | None = None

    @property
    def index(self) -> IndexRef:
        """The index, as the upstream proxy knows it."""
        return IndexRef(tuple(self.project_ids), self.group_id)


@dataclass(frozen=True)
class ProjectListing:
    """The projects a request may see listed, and whether it presented a token."""

    signed_in: bool
    projects: list[Project]


def request_actor(request: IRequest, token: TokenRecord | None) -> Actor:
    """Who a request's audit events name: its token (and user), from its client's address.

    The address is the client's after trusted proxies (site.py's
    getClientAddress), as the access checks see it. A personal token's
    user name is filled in by storage from the user row.
    """
    client = client_address(request)
    if token is None:
        return Actor("anonymous", client=client)
    return Actor("token", token.id, token.kind, token.user_id,
                 token.username if token.kind == "deploy" else None, client)


class RequestAccess:
    """Access checks for requests, and the URL prefixes of what they reach."""

    def __init__(self, authorizer: Authorizer, base_url: str | None) -> None:
        self.authorizer = authorizer
        self.base_url = base_url

    async def read(self, request: IRequest, project: str) -> Grant:
        return await self._check(request, project, "read")

    async def maintain(self, request: IRequest, project: str) -> Grant:
        """Yanks, deletes and token management (uploads are checked by the site)."""
        return await self._check(request, project, "maintain")

    async def manage_tokens(self, request: IRequest, project: str, what: str) -> Grant:
        """Maintain access through a maintainer's personal token: for what mints tokens.

        *what* ("deploy tokens", "trusted publishers") names it in the refusal,
        which gives the rule rather than the role refusal to a developer's token.
        """
        try:
            grant = await self.maintain(request, project)
        except Forbidden:
            check_may_manage_tokens(None, what)
            raise
        check_may_manage_tokens(grant.token, what)
        return grant

    async def _check(self, request: IRequest, project: str, access: Access) -> Grant:
        return await self.authorizer.authorize(
            project, request_credentials(request.requestHeaders), access,
            client_address(request))

    async def project_scope(self, request: IRequest, project: str) -> ReadScope:
        grant = await self.read(request, project)
        return ReadScope([grant.project.id], grant.project.public, self.api_prefix(project))

    async def group_scope(self, request: IRequest, group: str) -> ReadScope:
        grant = await self.authorizer.authorize_group(
            group, request_credentials(request.requestHeaders), client_address(request))
        prefix = f"{self.base_url or ''}/api/v4/groups/{quote(group, safe='')}/-/packages/pypi"
        return ReadScope([p.id for p in grant.projects], grant.group.public, prefix,
                         grant.group.id)

    async def authenticate(self, request: IRequest) -> bool:
        """Whether the request carries a token; raises Unauthorized if it is not a valid one."""
        token = await self.authorizer.authenticate(request_credentials(request.requestHeaders),
                                                   client_address(request))
        return token is not None

    async def listing(self, request: IRequest) -> ProjectListing:
        """The projects the caller may read (public ones when anonymous)."""
        credentials = request_credentials(request.requestHeaders)
        projects = await self.authorizer.readable_projects(credentials, client_address(request))
        return ProjectListing(credentials is not None, projects)

    def api_prefix(self, project: str) -> str:
        """Absolute URL of the project's pypi API when base_url is set, else a path."""
        return f"{self.base_url or ''}/api/v4/projects/{quote(project, safe='')}/packages/pypi"
