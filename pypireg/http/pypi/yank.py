"""Yanking releases over the API (PEP 592), for write tokens.

HTTP layer.
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypireg.domain.errors import BadRequest, NotFound
from pypireg.domain.names import is_valid_name, normalize_name, parse_version
from pypireg.http.page_cache import PackageCaches
from pypireg.http.scopes import RequestAccess, request_actor
from pypireg.storage import packages as package_store
from pypireg.storage.database import Database

_log = Logger()


def _yank_reason(body: bytes) -> str | None:
    if not body.strip():
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('The body must be JSON such as {"reason": "broken build"}.') from None
    reason = document.get("reason") if isinstance(document, dict) else None
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise BadRequest("reason must be a string of at most 1000 characters.")
    return reason


class YankRoutes:
    def __init__(self, db: Database, access: RequestAccess, caches: PackageCaches) -> None:
        self._db = db
        self._access = access
        self._caches = caches

    async def yank(self, request: IRequest, project: str, name: str, version: str) -> bytes:
        """PUT yanks a release (JSON body {"reason": "..."} optional), DELETE unyanks it."""
        grant = await self._access.maintain(request, project)
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        parsed = str(parse_version(version))
        yanked = request.method == b"PUT"
        reason = _yank_reason(request.content.read() if request.content else b"") if yanked \
            else None
        changed = await package_store.set_yanked(
            self._db, grant.project.id, normalize_name(name), parsed, yanked=yanked,
            reason=reason, actor=request_actor(request, grant.token))
        self._caches.wrote_packages()
        if not changed:
            raise NotFound(f"No release {name} {version} in this project.")
        _log.info("{action} {name} {version} in project {project}",
                  action="yanked" if yanked else "unyanked", name=name, version=parsed,
                  project=grant.project.path)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"name": normalize_name(name), "version": parsed, "yanked": yanked,
                           "yanked_reason": reason, "files": changed}).encode()
