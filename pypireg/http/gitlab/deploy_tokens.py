"""GitLab's project deploy tokens API: maintainers manage tokens over HTTP.

HTTP layer. As in GitLab (the rule is domain/access_policy.check_may_manage_tokens),
only a maintainer's personal access token with
`api` scope may list, create or revoke a project's deploy tokens: a deploy
or project token cannot mint more tokens, so one leaked token cannot make
itself permanent. A new token's secret is in the creation's answer only;
like every token it is stored as a hash. Revocation reaches every daemon
through the tokens table's change notifications.

    GET    /api/v4/projects/<project>/deploy_tokens
    POST   /api/v4/projects/<project>/deploy_tokens      name, scopes, expires_at, username
    GET    /api/v4/projects/<project>/deploy_tokens/<id>
    DELETE /api/v4/projects/<project>/deploy_tokens/<id>
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypireg.access import Grant
from pypireg.domain.errors import BadRequest, NotFound
from pypireg.domain.tokens import SCOPE_NAMES, Scope
from pypireg.http.responses import api_json, gitlab_time
from pypireg.http.scopes import RequestAccess, request_actor
from pypireg.storage import tokens as token_store
from pypireg.storage.database import Database
from pypireg.storage.tokens import TokenRecord

_log = Logger()

_SCOPES: dict[str, Scope] = {name: scope for scope, name in SCOPE_NAMES["deploy"].items()}
# GitLab's rule for deploy token user names.
_USERNAME = re.compile(r"[A-Za-z0-9._+-]{1,255}\Z")
_MAX_NAME = 255


class DeployTokensRoutes:
    def __init__(self, db: Database, access: RequestAccess) -> None:
        self._db = db
        self._access = access

    async def list_deploy_tokens(self, request: IRequest, project: str) -> bytes:
        grant = await self._manage_tokens_access(request, project)
        tokens = await token_store.list_tokens(self._db, grant.project.id)
        return api_json(request, [_document(t) for t in tokens if t.kind == "deploy"])

    async def get_deploy_token(self, request: IRequest, project: str, token_id: int) -> bytes:
        grant = await self._manage_tokens_access(request, project)
        return api_json(request, _document(await self._deploy_token(grant, token_id)))

    async def create_deploy_token(self, request: IRequest, project: str) -> bytes:
        grant = await self._manage_tokens_access(request, project)
        params = _parameters(request)
        name = _one(params, "name")
        if not name or len(name) > _MAX_NAME:
            raise BadRequest(f"name is required: 1 to {_MAX_NAME} characters.")
        scope = _scope(params.get("scopes", []))
        username = _one(params, "username") or None
        if username is not None and not _USERNAME.match(username):
            raise BadRequest("username may use letters, digits and . _ + - (at most 255).")
        expires_at = _expiry(_one(params, "expires_at"))
        record, secret = await token_store.create_token(
            self._db, grant.project.id, scope, kind="deploy", description=name,
            username=username, expires_at=expires_at, actor=request_actor(request, grant.token))
        _log.info("deploy token {token_id} ({scope}) created in project {project} by token "
                  "{creator}", token_id=record.id, scope=record.scope_name,
                  project=grant.project.path, creator=grant.token.id if grant.token else None)
        request.setResponseCode(201)
        return api_json(request, {**_document(record), "token": secret})

    async def revoke_deploy_token(self, request: IRequest, project: str, token_id: int
                                  ) -> bytes:
        grant = await self._manage_tokens_access(request, project)
        token = await self._deploy_token(grant, token_id)
        await token_store.revoke_token(self._db, token.id,
                                       actor=request_actor(request, grant.token))
        _log.info("deploy token {token_id} revoked in project {project}", token_id=token.id,
                  project=grant.project.path)
        request.setResponseCode(204)
        return b""

    async def _manage_tokens_access(self, request: IRequest, project: str) -> Grant:
        return await self._access.manage_tokens(request, project, "deploy tokens")

    async def _deploy_token(self, grant: Grant, token_id: int) -> TokenRecord:
        for token in await token_store.list_tokens(self._db, grant.project.id):
            if token.id == token_id and token.kind == "deploy":
                return token
        raise NotFound(f"No deploy token {token_id} in this project.")


def _parameters(request: IRequest) -> dict[str, list[str]]:
    """The query's parameters, then the body's (JSON or a form), as GitLab takes them."""
    params: dict[str, list[str]] = {}

    def add(key: str, value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f"{key} must be text or a list of text.")
        params.setdefault(key.removesuffix("[]"), []).extend(values)

    try:
        for key, values in request.args.items():
            for value in values:
                add(key.decode("utf-8"), value.decode("utf-8"))
        body = request.content.read() if request.content is not None else b""
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if body and ctype == b"application/json":
            document = json.loads(body)
            if not isinstance(document, dict):
                raise BadRequest("The JSON body must be an object.")
            for key, value in document.items():
                add(key, value)
        elif body:
            for key, values in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                add(key, values)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("Send the parameters as a JSON object or a form, in UTF-8.") from None
    return params


def _one(params: dict[str, list[str]], key: str) -> str:
    values = params.get(key, [])
    return values[-1].strip() if values else ""


def _scope(names: list[str]) -> Scope:
    unknown = [n for n in names if n not in _SCOPES]
    if not names or unknown:
        raise BadRequest(
            "scopes must name read_package_registry and/or write_package_registry"
            + (f"; pypireg has no {', '.join(unknown)}." if unknown else ".")
        )
    return "write" if "write_package_registry" in names else "read"


def _expiry(text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"expires_at must be an ISO 8601 date or time; got {text!r}.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment <= datetime.now(UTC):
        raise BadRequest("expires_at must be in the future.")
    return moment


def _document(token: TokenRecord) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": token.id,
        "name": token.description,
        "username": token.username,
        "expires_at": gitlab_time(token.expires_at) if token.expires_at else None,
        "scopes": [token.scope_name],
        "revoked": token.revoked_at is not None,
        "expired": token.expires_at is not None and token.expires_at <= now,
    }
