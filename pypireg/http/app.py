"""Every URL of the registry, the handler that answers it, and the root resource.

HTTP layer. The route groups are plain classes built with what they need
(http/pypi, http/gitlab, http/web, http/ops.py); this module binds their
methods to URLs on one Klein app per registry, so the whole route table
reads in one place (as Warehouse's routes.py does), and errors from any of
them go through one ErrorFunnel (http/errors.py).

Downloads are the hottest route: `RegistryResource` sends GET and HEAD of
files straight to FileRoutes, because Klein's routing (werkzeug's matcher,
Deferred plumbing) was a fifth of a 1 MiB download's CPU. Those routes are
also in the Klein table, so it stays whole and other methods on file URLs
get Klein's 405.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from pypireg.domain.errors import RegistryError
from pypireg.http.errors import ErrorFunnel
from pypireg.http.gitlab.audit_events import AuditEventsRoutes
from pypireg.http.gitlab.deploy_tokens import DeployTokensRoutes
from pypireg.http.gitlab.packages_api import PackagesApiRoutes
from pypireg.http.gitlab.projects_api import ProjectsApiRoutes
from pypireg.http.gitlab.trusted_publishers import TrustedPublishersRoutes
from pypireg.http.ops import OpsRoutes
from pypireg.http.pypi.files import FileRoutes
from pypireg.http.pypi.json_api import JsonApiRoutes
from pypireg.http.pypi.oidc import OidcRoutes
from pypireg.http.pypi.simple import SimpleRoutes
from pypireg.http.pypi.upload import UploadRoutes
from pypireg.http.pypi.yank import YankRoutes
from pypireg.http.web.routes import PageRoutes

_log = Logger()
# Twisted has already percent-decoded each segment, so an encoded project
# path ("group%2Fproject") arrives with its slashes: match them.
PYPI = "/api/v4/projects/<path:project>/packages/pypi"
GROUP_PYPI = "/api/v4/groups/<path:group>/-/packages/pypi"
# Ids beyond a BIGINT match no route (404) instead of failing in the query.
_ID = "int(max=9223372036854775807)"
PACKAGES = "/api/v4/projects/<path:project>/packages"
PACKAGE = PACKAGES + f"/<{_ID}:package_id>"
DEPLOY_TOKENS = "/api/v4/projects/<path:project>/deploy_tokens"
AUDIT_EVENTS = "/api/v4/projects/<path:project>/audit_events"
TRUSTED_PUBLISHERS = "/api/v4/projects/<path:project>/trusted_publishers"
# The project itself; ProjectPathConverter says why its path is narrower.
PROJECT = "/api/v4/projects/<project_path:project>"
PROJECT_PAGES = "/<path:project>/-/packages"
GROUP_PAGES = "/groups/<path:group>/-/packages"
# GitLab's URL of a project or group: its path at the top level.
PATH_PAGE = "/<top_path:path>"
# The two file routes as werkzeug matches them (a path converter is
# "[^/].*?"), over the percent-decoded path.
_PROJECT_FILE = re.compile(rb"/api/v4/projects/([^/].*?)/packages/pypi/files/([^/]+)/([^/]+)\Z")
_GROUP_FILE = re.compile(rb"/api/v4/groups/([^/].*?)/-/packages/pypi/files/([^/]+)/([^/]+)\Z")
_READ = ["GET", "HEAD"]


class ProjectPathConverter(PathConverter):
    """A project path in the project's own URL, which prefixes every other project URL.

    With a plain path converter, `GET …/projects/1/packages/pypi` (an upload
    URL) would read as project "1/packages/pypi" and answer 401 or 404
    instead of 405, and so would any mistyped sub-resource. So no segment
    may be one of the sub-resources above, or GitLab's `-` separator; such
    a project ("acme/packages") was out of reach of those routes anyway. Nor
    may the path end in a slash or hold an empty segment.
    """

    regex = (r"(?!(?:[^/]+/)*(?:packages|deploy_tokens|audit_events|trusted_publishers|-)"
             r"(?:/|$))[^/]+(?:/[^/]+)*")


class TopLevelPath(PathConverter):
    """A project's or group's path as the whole URL: `/acme/tools`, `/acme/tools/`.

    Never one under a reserved first segment (`api`, `groups`, any case),
    and no segment is `-`, so no API or `/-/` URL is ever taken for one.
    Project paths cannot have such segments anyway (domain/names.py).
    """

    regex = r"(?!(?i:api|groups)(?:/|$))(?!-(?:/|$))[^/]+(?:/(?!-(?:/|$))[^/]+)*/?"


@dataclass(frozen=True)
class RouteGroups:
    uploads: UploadRoutes
    simple: SimpleRoutes
    files: FileRoutes
    yank: YankRoutes
    json_api: JsonApiRoutes
    packages_api: PackagesApiRoutes
    projects_api: ProjectsApiRoutes
    deploy_tokens: DeployTokensRoutes
    audit_events: AuditEventsRoutes
    pages: PageRoutes
    ops: OpsRoutes
    oidc: OidcRoutes
    trusted_publishers: TrustedPublishersRoutes


def route_table(groups: RouteGroups, errors: ErrorFunnel) -> Klein:
    """One Klein app with every route of *groups* and the funnel's error handlers."""
    app = Klein()
    app.url_map.converters["project_path"] = ProjectPathConverter
    app.url_map.converters["top_path"] = TopLevelPath

    def route(methods: list[str], url: str, handler: Callable[..., Any], **kw: Any) -> None:
        # The endpoint name must be unique in the app; the URL is.
        app.route(url, methods=methods, endpoint=f"{'/'.join(methods)} {url}", **kw)(handler)

    g = groups
    # The PyPI protocol: legacy upload, simple index, files, yank, JSON API.
    # With or without the trailing slash many .pypirc files carry (strict_slashes
    # does not make a rule with a path converter match both), exactly the URLs
    # the site streams as uploads (site.upload_project).
    route(["POST"], PYPI, g.uploads.upload)
    route(["POST"], PYPI + "/", g.uploads.upload)
    route(_READ, PYPI + "/simple/", g.simple.simple_root)
    route(_READ, PYPI + "/simple/<name>/", g.simple.simple_package)
    route(_READ, PYPI + "/files/<sha256>/<filename>", g.files.download)
    route(["PUT", "DELETE"], PYPI + "/<name>/<version>/yank", g.yank.yank)
    route(_READ, PYPI + "/pypi/<name>/json", g.json_api.pypi_json_project)
    route(_READ, PYPI + "/pypi/<name>/<version>/json", g.json_api.pypi_json_release)
    # The links flit and hatch print after an upload, to the package's page.
    # Werkzeug prefers static segments, so simple/ and files/ keep their
    # routes (and "…/pypi/simple" its redirect to "simple/").
    route(_READ, PYPI + "/<name>/", g.pages.pypi_package, strict_slashes=False)
    route(_READ, PYPI + "/<name>/<version>/", g.pages.pypi_release, strict_slashes=False)
    # A group's read-only index.
    route(_READ, GROUP_PYPI + "/simple/", g.simple.group_simple_root)
    route(_READ, GROUP_PYPI + "/simple/<name>/", g.simple.group_simple_package)
    route(_READ, GROUP_PYPI + "/files/<sha256>/<filename>", g.files.group_download)
    # GitLab's projects, packages and deploy tokens APIs.
    route(["GET"], PROJECT, g.projects_api.gitlab_project)
    route(["GET"], PACKAGES, g.packages_api.gitlab_packages)
    route(["GET"], PACKAGE, g.packages_api.gitlab_package)
    route(["DELETE"], PACKAGE, g.packages_api.gitlab_delete_package)
    route(["GET"], PACKAGE + "/package_files", g.packages_api.gitlab_package_files)
    route(["DELETE"], PACKAGE + f"/package_files/<{_ID}:file_id>",
          g.packages_api.gitlab_delete_package_file)
    route(["GET"], DEPLOY_TOKENS, g.deploy_tokens.list_deploy_tokens)
    route(["POST"], DEPLOY_TOKENS, g.deploy_tokens.create_deploy_token)
    route(["GET"], DEPLOY_TOKENS + f"/<{_ID}:token_id>", g.deploy_tokens.get_deploy_token)
    route(["DELETE"], DEPLOY_TOKENS + f"/<{_ID}:token_id>",
          g.deploy_tokens.revoke_deploy_token)
    route(["GET"], AUDIT_EVENTS, g.audit_events.list_audit_events)
    route(["GET"], AUDIT_EVENTS + f"/<{_ID}:event_id>", g.audit_events.get_audit_event)
    route(["GET"], TRUSTED_PUBLISHERS, g.trusted_publishers.list_publishers)
    route(["POST"], TRUSTED_PUBLISHERS, g.trusted_publishers.add_publisher)
    route(["DELETE"], TRUSTED_PUBLISHERS + f"/<{_ID}:publisher_id>",
          g.trusted_publishers.remove_publisher)
    # Trusted publishing, at the host root where clients of the public index look.
    route(["GET"], "/_/oidc/audience", g.oidc.audience)
    route(["POST"], "/_/oidc/mint-token", g.oidc.mint_token)
    route(["POST"], "/_/oidc/burn-token", g.oidc.burn_token)
    # Operations.
    route(_READ, "/-/health", g.ops.health)
    route(_READ, "/-/ready", g.ops.ready)
    route(["GET"], "/-/metrics", g.ops.metrics)
    # The web pages, at GitLab's web URLs.
    route(_READ, "/", g.pages.home)
    route(_READ, "/favicon.ico", g.pages.favicon)
    route(_READ, PROJECT_PAGES, g.pages.project_packages)
    route(_READ, PROJECT_PAGES + "/<name>", g.pages.package)
    route(_READ, GROUP_PAGES, g.pages.group_packages)
    # Every method: the handler answers others 404, as before this route.
    app.route(PATH_PAGE, endpoint=f"any {PATH_PAGE}")(g.pages.path_page)

    app.handle_errors(RegistryError)(errors.registry_error)
    app.handle_errors(HTTPException)(errors.routing_error)
    app.handle_errors(CancelledError)(errors.cancelled)
    app.handle_errors(Exception)(errors.unexpected_error)
    return app


class RegistryResource(resource.Resource):
    """The root: GET and HEAD of files straight to FileRoutes, the rest to Klein."""

    isLeaf = True

    def __init__(self, groups: RouteGroups, errors: ErrorFunnel) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._files = groups.files
        self._errors = errors
        self._klein = route_table(groups, errors).resource()

    def render(self, request: IRequest) -> Any:
        if request.method in (b"GET", b"HEAD"):
            # Twisted percent-decoded the segments into postpath, as Klein
            # sees them.
            path = b"/" + b"/".join(request.postpath)
            for pattern, route in ((_PROJECT_FILE, self._files.download),
                                   (_GROUP_FILE, self._files.group_download)):
                match = pattern.match(path)
                if match is not None:
                    try:
                        ref, sha256, filename = (g.decode("utf-8") for g in match.groups())
                    except UnicodeDecodeError:
                        break  # Klein answers it
                    return self._dispatch(request, route(request, ref, sha256, filename))
        return self._klein.render(request)

    def _dispatch(self, request: IRequest, handler: Coroutine[Any, Any, Any]) -> int:
        d = Deferred.fromCoroutine(handler)
        finished = request.notifyFinish()  # type: ignore[attr-defined]
        # As Klein does: a client that went away cancels the handler.
        finished.addErrback(lambda _: d.cancel())
        d.addCallbacks(lambda body: self._respond(request, body),
                       lambda failure: self._failed(request, failure))
        d.addErrback(self._unanswerable, request)
        return server.NOT_DONE_YET

    def _unanswerable(self, failure: Failure, request: IRequest) -> None:
        # Only if answering itself failed (the handler's errors are answered
        # above): the response cannot be completed, so log it and close the
        # connection rather than leave the client waiting.
        _log.failure("could not answer {method} {uri}", failure,
                     method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"))
        request.loseConnection()  # type: ignore[attr-defined]

    def _respond(self, request: IRequest, body: Any) -> None:
        if isinstance(body, bytes):
            request.write(body)
            request.finish()
        else:
            request.render(body)  # type: ignore[attr-defined]

    def _failed(self, request: IRequest, failure: Failure) -> None:
        if failure.check(CancelledError) or getattr(request, "_disconnected", False):
            # The client went away: there is nobody to answer.
            return
        self._respond(request, self._errors.answer(request, failure))
