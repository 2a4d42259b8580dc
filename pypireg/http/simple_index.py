"""Rendering the PEP 503 simple index pages.

HTTP layer, pure functions from rows to bytes. Links are relative unless
`server.base_url` is set, so the same pages work behind any host name.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from pypireg.storage.packages import PackageFile, PackageSummary

REPOSITORY_VERSION = "1.0"
_HEAD = (
    "<!DOCTYPE html>\n<html>\n<head>\n"
    f'<meta name="pypi:repository-version" content="{REPOSITORY_VERSION}">\n'
    "<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
)
_TAIL = "</body>\n</html>\n"


def project_page(packages: Sequence[PackageSummary], prefix: str = "") -> bytes:
    """The list of packages; *prefix* is the absolute simple/ URL or ''."""
    parts = [_HEAD.format(title="Simple index")]
    for p in packages:
        href = f"{prefix}{quote(p.name)}/"
        parts.append(f'<a href="{escape(href)}">{escape(p.name)}</a><br>\n')
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


def _sort_key(f: PackageFile) -> tuple[int, Version | str, str]:
    try:
        return (0, Version(f.version), f.filename)
    except InvalidVersion:
        return (1, f.version, f.filename)


def package_page(name: str, files: Sequence[PackageFile], files_prefix: str = "../../files/"
                 ) -> bytes:
    """The links of one package; *files_prefix* leads to the files/ route."""
    parts = [_HEAD.format(title=f"Links for {escape(name)}")]
    for f in sorted(files, key=_sort_key):
        href = f"{files_prefix}{f.sha256}/{quote(f.filename)}#sha256={f.sha256}"
        attrs = f'href="{escape(href)}"'
        if f.requires_python:
            attrs += f' data-requires-python="{escape(f.requires_python)}"'
        parts.append(f"<a {attrs}>{escape(f.filename)}</a><br>\n")
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")
