"""A project's trusted publishers over HTTP, in the style of GitLab's project APIs.

HTTP layer; the checks are pypireg/oidc/publishers.py's. As with deploy
tokens (domain/access_policy.check_may_manage_tokens), only a maintainer's
personal access token with `api` scope may list, add or remove them: a
publisher mints upload tokens, so a leaked upload token must not be able
to register one.

    GET    /api/v4/projects/<project>/trusted_publishers
    POST   /api/v4/projects/<project>/trusted_publishers   JSON: issuer and
           github + workflow [+ environment, owner_id], or
           gitlab [+ ci_config_path, environment], or claims {NAME: VALUE}
    DELETE /api/v4/projects/<project>/trusted_publishers/<id>
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypireg.access import Grant
from pypireg.config import TrustedPublishingConfig
from pypireg.domain.errors import BadRequest, NotFound
from pypireg.http.responses import api_json
from pypireg.http.scopes import RequestAccess, request_actor
from pypireg.oidc.publishers import publisher_document, register_publisher
from pypireg.storage import trusted_publishing as store
from pypireg.storage.database import Database

_log = Logger()
_FIELDS = {"issuer", "github", "gitlab", "workflow", "ci_config_path", "environment",
           "owner_id", "claims"}


class TrustedPublishersRoutes:
    def __init__(self, db: Database, access: RequestAccess,
                 config: TrustedPublishingConfig) -> None:
        self._db = db
        self._access = access
        self._config = config

    async def list_publishers(self, request: IRequest, project: str) -> bytes:
        grant = await self._manage_access(request, project)
        publishers = await store.list_publishers(self._db, grant.project.id)
        return api_json(request, [publisher_document(p) for p in publishers])

    async def add_publisher(self, request: IRequest, project: str) -> bytes:
        grant = await self._manage_access(request, project)
        body = _json_body(request)
        text = {key: body.get(key) for key in _FIELDS - {"claims"}}
        for key, value in text.items():
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"{key} must be a string.")
        claims = body.get("claims")
        if claims is not None and not (isinstance(claims, dict) and all(
                isinstance(v, str) for v in claims.values())):
            raise BadRequest('claims must be an object of strings, e.g. {"sub": "…"}.')
        if not text["issuer"]:
            raise BadRequest("issuer is required: the URL of a configured OIDC issuer.")
        if text["github"] and text["gitlab"]:
            raise BadRequest("Give github or gitlab, not both.")
        try:
            publisher = await register_publisher(
                self._db, self._config, grant.project.id, text["issuer"] or "",
                "github" if text["github"] else "gitlab" if text["gitlab"] else "generic",
                repository=text["github"] or text["gitlab"],
                workflow=text["workflow"] or text["ci_config_path"],
                environment=text["environment"], owner_id=text["owner_id"], claims=claims,
                actor=request_actor(request, grant.token))
        except ValueError as e:
            raise BadRequest(_api_words(str(e)) + ".") from None
        _log.info("trusted publisher {publisher_id} added to project {project}: {what}",
                  publisher_id=publisher.id, project=grant.project.path,
                  what=publisher.describe())
        request.setResponseCode(201)
        return api_json(request, publisher_document(publisher))

    async def remove_publisher(self, request: IRequest, project: str, publisher_id: int
                               ) -> bytes:
        grant = await self._manage_access(request, project)
        publisher = await store.get_publisher(self._db, publisher_id)
        if publisher is None or publisher.project_id != grant.project.id:
            raise NotFound(f"No trusted publisher {publisher_id} in this project.")
        await store.remove_publisher(self._db, publisher_id,
                                     actor=request_actor(request, grant.token))
        _log.info("trusted publisher {publisher_id} removed from project {project}",
                  publisher_id=publisher_id, project=grant.project.path)
        request.setResponseCode(204)
        return b""

    async def _manage_access(self, request: IRequest, project: str) -> Grant:
        return await self._access.manage_tokens(request, project, "trusted publishers")


def _json_body(request: IRequest) -> dict[str, Any]:
    body = request.content.read() if request.content is not None else b""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        raise BadRequest('Send a JSON object, e.g. {"issuer": "https://token.actions.'
                         'githubusercontent.com", "github": "acme/tools", '
                         '"workflow": "release.yml"}.')
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}; known: {', '.join(sorted(_FIELDS))}.")
    return document


def _api_words(message: str) -> str:
    """The shared checks name the CLI's options; say the API's field names instead."""
    for option, field in (("--claim NAME=VALUE", "claims"), ("--claim", "claims"),
                          ("--ci-config-path", "ci_config_path"), ("--owner-id", "owner_id"),
                          ("--github", "github"), ("--gitlab", "gitlab"),
                          ("--workflow", "workflow"), ("--environment", "environment")):
        message = message.replace(option, field)
    return message[:1].upper() + message[1:]
