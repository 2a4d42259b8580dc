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

from pypireg.http.deploy_tokens_routes import DeployTokensRoutes
from pypireg.http.error_funnel import ErrorFunnel
from pypireg.http.file_routes import FileRoutes
from pypireg.http.index_routes import IndexRoutes
from pypireg.http.json_api_routes import JsonApiRoutes
from pypireg.http.ops_routes import OpsRoutes
from pypireg.http.packages_api_routes import PackagesApiRoutes
from pypireg.http.ui_routes import UiRoutes
from pypireg.http.upload_route import UploadRoute
from pypireg.http.yank_routes import YankRoutes


class RegistryApp(UploadRoute, IndexRoutes, FileRoutes, YankRoutes, JsonApiRoutes,
                  PackagesApiRoutes, DeployTokensRoutes, OpsRoutes, UiRoutes, ErrorFunnel):
    """All routes over one set of dependencies (see app.RouteContext)."""
