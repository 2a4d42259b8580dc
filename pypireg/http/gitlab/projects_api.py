"""GitLab's projects API, the part a registry has: `GET /api/v4/projects/<id or path>`.

HTTP layer. The answer is GitLab's project shape reduced to what pypireg
knows (id, names, visibility, creation, whether packages are enabled);
with `?statistics=true` it carries GitLab's `statistics` object, whose
`packages_size` is the bytes of the project's package files, duplicates
included, as GitLab counts stored files (storage/usage.py says what is not
counted). Access is that of the project's other API routes: a read grant.

GitLab shows statistics to reporters and above only; here a caller who may
read the project sees them, since a public project's index already lists
every file's size to anyone.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from pypireg.domain.errors import BadRequest
from pypireg.http.responses import api_json, gitlab_time
from pypireg.http.scopes import RequestAccess
from pypireg.storage import usage as usage_store
from pypireg.storage.database import Database
from pypireg.storage.projects import Project

# The spellings GitLab's API (Grape) accepts for a Boolean parameter.
_TRUE = frozenset({b"true", b"t", b"1", b"yes", b"y", b"on"})
_FALSE = frozenset({b"false", b"f", b"0", b"no", b"n", b"off"})


def _flag(request: IRequest, key: str) -> bool:
    """A Boolean query parameter (absent or empty: false); 400 for anything else."""
    values = request.args.get(key.encode("ascii"))
    if not values or values[-1] == b"":
        return False
    value = values[-1].lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    shown = values[-1].decode("utf-8", "replace")
    raise BadRequest(f"{key} must be true or false; got {shown!r}.")


def _project(project: Project) -> dict[str, Any]:
    # GitLab's path is the last segment, path_with_namespace the whole path;
    # pypireg names projects by path only, so the names repeat the paths.
    path = project.path.rsplit("/", 1)[-1]
    return {
        "id": project.id,
        "name": path,
        "path": path,
        "name_with_namespace": project.path.replace("/", " / "),
        "path_with_namespace": project.path,
        "visibility": "public" if project.public else "private",
        "created_at": gitlab_time(project.created_at),
        "packages_enabled": project.packages_enabled,
    }


class ProjectsApiRoutes:
    def __init__(self, db: Database, access: RequestAccess) -> None:
        self._db = db
        self._access = access

    async def gitlab_project(self, request: IRequest, project: str) -> bytes:
        """One project; `statistics=true` adds its storage usage."""
        grant = await self._access.read(request, project)
        statistics = _flag(request, "statistics")
        document = _project(grant.project)
        if statistics:
            size = await usage_store.packages_size(self._db, grant.project.id)
            # storage_size is GitLab's sum over every kind of storage; a
            # registry stores packages only.
            document["statistics"] = {"packages_size": size, "storage_size": size}
        return api_json(request, document)
