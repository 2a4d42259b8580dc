"""Ordering versions and choosing the latest release, as PyPI does.

Domain layer, no I/O. Uploads only accept PEP 440 versions; anything else
(rows from before, or imports) sorts below every valid version.
"""

from __future__ import annotations

from collections.abc import Mapping

from packaging.version import InvalidVersion, Version


def version_key(version: str) -> tuple[int, Version | str]:
    """A sort key: PEP 440 order, invalid versions lowest."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def is_prerelease(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return True


def latest_version(yanked: Mapping[str, bool]) -> str:
    """PyPI's choice of "latest": *yanked* maps each version to whether it is yanked.

    The highest final release that is not yanked; failing that the highest
    release that is not yanked (a pre-release); failing that the highest.
    """
    ordered = sorted(yanked, key=version_key, reverse=True)
    live = [v for v in ordered if not yanked[v]]
    final = [v for v in live if not is_prerelease(v)]
    return (final or live or ordered)[0]
