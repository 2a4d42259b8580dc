"""Audit events: who did what to which project, from where; what an event may hold.

Domain layer, no I/O. Storage writes an `Event` with its `Actor` in the
transaction of the change it records (storage/audit.py); the HTTP layer
builds the actor of a request from its token and client address, the
admin command one for the operating-system user running it.

What an event never holds: a token's secret, its hash or more of it than
`pypireg token list` shows, a password, an upstream's credentials. The
builders below take only ids, names and settings, so there is nothing of
that kind to leak; `details` is checked once more by `check_details`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

ActorKind = Literal["token", "admin", "system", "anonymous", "publisher"]

# What an event may record, by name (the `action` column), and the
# sentence GitLab's API shows for it (`details.custom_message`).
ACTIONS: dict[str, str] = {
    "package_file.upload": "Uploaded package file",
    "package_file.delete": "Deleted package file",
    "package_file.cleanup": "Removed duplicate package files (cleanup policy)",
    "package_file.repair": "Removed package files whose blob is missing or corrupt (fsck)",
    "release.delete": "Deleted package",
    "release.yank": "Yanked release",
    "release.unyank": "Unyanked release",
    "token.create": "Created token",
    "token.revoke": "Revoked token",
    "member.add": "Added member",
    "member.update": "Changed member's role",
    "member.remove": "Removed member",
    "project.create": "Created project",
    "project.update": "Changed project settings",
    "group.create": "Created group",
    "group.update": "Changed group settings",
    "user.create": "Created user",
    "user.block": "Blocked user",
    "user.unblock": "Unblocked user",
    "name.reserve": "Reserved package name",
    "name.claim": "Claimed package name",
    "namespace.grant": "Granted namespace",
    "namespace.revoke": "Revoked namespace",
    "upstream.block": "Blocked upstream release",
    "upstream.unblock": "Unblocked upstream release",
    "upstream.purge": "Purged upstream cache",
    "trusted_publisher.add": "Added trusted publisher",
    "trusted_publisher.remove": "Removed trusted publisher",
}

# Keys a `details` mapping may never carry, at any depth (a guard against
# a future caller passing a whole record through).
_FORBIDDEN_KEYS = frozenset({"token", "secret", "token_hash", "hash", "password", "headers",
                             "credentials", "authorization"})


class UnsafeDetails(ValueError):
    """An event's details carry a key that names a secret."""


def check_details(details: Mapping[str, Any]) -> None:
    """Raise UnsafeDetails if *details* (nested included) has a key naming a secret."""
    for key, value in details.items():
        if key.lower() in _FORBIDDEN_KEYS:
            raise UnsafeDetails(f"audit details may not hold {key!r}")
        if isinstance(value, Mapping):
            check_details(value)


@dataclass(frozen=True)
class Actor:
    """Who made a change, and from where.

    Attributes:
        kind: 'token' for an API request, 'admin' for the admin command,
            'system' for the daemon's own jobs (the hourly cleanup),
            'publisher' for a CI job exchanging its OIDC ID token (trusted
            publishing; *name* says which publisher and job).
        token_id, token_kind, user_id: The request's token (none for the
            admin command and the daemon).
        name: A personal token's user name (filled in from the user row
            when None), a deploy token's user name, or the OS user.
        client: The client's address after trusted proxies.
    """

    kind: ActorKind
    token_id: int | None = None
    token_kind: str | None = None
    user_id: int | None = None
    name: str | None = None
    client: str | None = None

    @staticmethod
    def admin(os_user: str | None) -> Actor:
        """The admin command, run by *os_user* (None if the OS cannot say)."""
        return Actor("admin", name=os_user)

    @property
    def description(self) -> str:
        """One phrase for tables and GitLab's `author_name`."""
        if self.kind == "token":
            who = f"{self.token_kind} token {self.token_id}"
            return f"{who} ({self.name})" if self.name else who
        if self.kind == "admin":
            return f"admin command ({self.name})" if self.name else "admin command"
        if self.kind == "publisher":
            return f"trusted publisher ({self.name})" if self.name else "trusted publisher"
        return self.kind


SYSTEM = Actor("system", name="pypireg daemon")


@dataclass(frozen=True)
class Event:
    """One change to record (the actor and time are added by storage).

    A project's path and a group's path are looked up by their ids when
    not given, so they name the place even after it is deleted.
    """

    action: str
    target_type: str
    target_id: int | None = None
    target_details: str = ""
    project_id: int | None = None
    group_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")
        check_details(self.details)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that differ, as {name: {"from": old, "to": new}} (GitLab's change/from/to)."""
    return {key: {"from": before.get(key), "to": value} for key, value in after.items()
            if before.get(key) != value}


_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from *now* ("7d", "12h", "30m"), a date or an ISO time.

    A date is its midnight UTC; a time without a zone is UTC.

    Raises:
        ValueError: With the message to show.
    """
    text = text.strip()
    unit = text[-1:].lower()
    if unit in _UNITS and text[:-1].isascii() and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * _UNITS[unit])
    moment = parse_time(text)
    if moment is None:
        raise ValueError(f"{text!r} is neither a duration (7d, 12h, 30m) nor a date or ISO time "
                         "(2026-12-01, 2026-12-01T08:00:00Z)")
    return moment


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 date or time (a trailing Z allowed; no zone is UTC), None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
