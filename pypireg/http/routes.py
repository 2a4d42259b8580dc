"""The registry's HTTP routes (GitLab's PyPI API layout), combined.

HTTP layer. Each concern has its module; all register on `app.routes`.

    POST       /api/v4/projects/<project>/packages/pypi                 upload_route
    GET        /api/v4/projects/<project>/packages/pypi/simple/         index_routes
    GET        /api/v4/projects/<project>/packages/pypi/simple/<name>/  index_routes
    GET/HEAD   /api/v4/projects/<project>/packages/pypi/files/<sha256>/<filename>[.metadata]
                                                                         file_routes
    PUT/DELETE /api/v4/projects/<project>/packages/pypi/<name>/<version>/yank  yank_routes
    GET        /-/health, /-/ready, /-/metrics                          ops_routes
    GET/HEAD   /api/v4/projects/<project>/packages/pypi/pypi/<name>[/<version>]/json
                                                                         json_api_routes
    GET        /api/v4/projects/<project>/packages                      packages_api_routes
    GET/DELETE /api/v4/projects/<project>/packages/<package_id>         packages_api_routes
    GET        /api/v4/projects/<project>/packages/<package_id>/package_files
                                                                         packages_api_routes
    DELETE     /api/v4/projects/<project>/packages/<package_id>/package_files/<file_id>
                                                                         packages_api_routes
    GET/POST   /api/v4/projects/<project>/deploy_tokens                 deploy_tokens_routes
    GET/DELETE /api/v4/projects/<project>/deploy_tokens/<token_id>      deploy_tokens_routes
    GET        /<project path>/-/packages[/<name>]                     ui_routes (web pages)
    GET        /groups/<group path>/-/packages                          ui_routes (web pages)
"""

from __future__ import annotations

from pypireg.http.errors import ErrorFunnel
from pypireg.http.gitlab.deploy_tokens import DeployTokensRoutes
from pypireg.http.gitlab.packages_api import PackagesApiRoutes
from pypireg.http.ops import OpsRoutes
from pypireg.http.pypi.files import FileRoutes
from pypireg.http.pypi.json_api import JsonApiRoutes
from pypireg.http.pypi.simple import IndexRoutes
from pypireg.http.pypi.upload import UploadRoute
from pypireg.http.pypi.yank import YankRoutes
from pypireg.http.web.routes import UiRoutes


class RegistryApp(UploadRoute, IndexRoutes, FileRoutes, YankRoutes, JsonApiRoutes,
                  PackagesApiRoutes, DeployTokensRoutes, OpsRoutes, UiRoutes, ErrorFunnel):
    """All routes over one set of dependencies (see app.RouteContext)."""
