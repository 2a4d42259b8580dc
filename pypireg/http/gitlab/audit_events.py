"""GitLab's project audit events API, for the project's maintainers.

HTTP layer. The events are storage's (storage/audit.py), rendered in the
shape of GitLab's project audit events: `entity_type` "Project", and in
`details` the author, the target, the client's address (`ip_address`) and
GitLab's `custom_message`, plus what pypireg recorded of the change.
Access is that of yanks and deletes (maintain); a developer, a reader or
another project's token gets the refusal those routes give.

    GET /api/v4/projects/<project>/audit_events       created_after, created_before,
                                                      page, per_page
    GET /api/v4/projects/<project>/audit_events/<id>

`author_id` is the user of a personal token, else -1 (GitLab's id for an
author that is not a user: a project or deploy token, the admin command).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from twisted.web.iweb import IRequest

from pypireg.domain.audit import ACTIONS, parse_time
from pypireg.domain.errors import BadRequest, NotFound
from pypireg.http.gitlab.pagination import paginate, pagination, query_arg
from pypireg.http.responses import api_json, gitlab_time
from pypireg.http.scopes import RequestAccess
from pypireg.storage import audit as audit_store
from pypireg.storage.audit import AuditRecord, EventFilter
from pypireg.storage.database import Database

NOT_A_USER = -1


class AuditEventsRoutes:
    def __init__(self, db: Database, access: RequestAccess) -> None:
        self._db = db
        self._access = access

    async def list_audit_events(self, request: IRequest, project: str) -> bytes:
        """The project's events, newest first, paginated as GitLab paginates."""
        grant = await self._access.maintain(request, project)
        wanted = EventFilter(project_id=grant.project.id,
                             since=_moment(request, "created_after"),
                             until=_moment(request, "created_before"))
        page, per_page = pagination(request)
        result = await audit_store.list_events(self._db, wanted, limit=per_page,
                                               offset=(page - 1) * per_page)
        paginate(request, self._access.base_url, result.total, page, per_page)
        return api_json(request, [gitlab_event(e) for e in result.items])

    async def get_audit_event(self, request: IRequest, project: str, event_id: int) -> bytes:
        grant = await self._access.maintain(request, project)
        event = await audit_store.get_event(self._db, grant.project.id, event_id)
        if event is None:
            raise NotFound(f"No audit event {event_id} in this project.")
        return api_json(request, gitlab_event(event))


def _moment(request: IRequest, key: str) -> datetime | None:
    text = query_arg(request, key)
    if not text:
        return None
    moment = parse_time(text)
    if moment is None:
        raise BadRequest(f"{key} must be an ISO 8601 time such as 2026-12-01T08:00:00Z; got "
                         f"{text!r}.")
    return moment


def gitlab_event(e: AuditRecord) -> dict[str, Any]:
    """One event in GitLab's shape; pypireg's own facts are extra keys of `details`."""
    a = e.actor
    return {
        "id": e.id,
        "author_id": a.user_id if a.user_id is not None else NOT_A_USER,
        "entity_id": e.project_id,
        "entity_type": "Project",
        "event_name": e.action,
        "details": {
            **e.details,
            "event_name": e.action,
            "custom_message": ACTIONS.get(e.action, e.action),
            "author_name": a.description,
            "author_class": {"token": "Token", "admin": "AdminCommand",
                             "system": "System"}.get(a.kind, "Anonymous"),
            "token_id": a.token_id,
            "token_kind": a.token_kind,
            "target_id": e.target_id,
            "target_type": e.target_type,
            "target_details": e.target_details,
            "ip_address": a.client,
            "entity_path": e.project_path,
        },
        "created_at": gitlab_time(e.created_at),
    }
