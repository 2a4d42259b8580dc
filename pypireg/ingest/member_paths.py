"""The member path rule: which names an archive member (or RECORD line) may have.

Pure; wheels, zip sdists, RECORD (archives.py) and
tarballs (tar_checks.py) all use it.
"""

from __future__ import annotations

import re

_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_problem(name: str) -> str | None:
    """What makes *name* unsafe as a member path (zip, RECORD or tar), or None.

    A relative POSIX path of plain names: nothing an installer on any OS
    could resolve outside its target folder, and one spelling per path, so
    exact comparison finds duplicates. One trailing '/' marks a folder.
    """
    problem = spelling_problem(name)
    if problem is not None:
        return problem
    parts = name.removesuffix("/").split("/")
    if "" in parts:
        return "has an empty segment ('//')"
    if ".." in parts:
        return "has a '..' segment"
    if "." in parts:
        return "has a '.' segment"
    return None


def spelling_problem(path: str) -> str | None:
    """The part of `path_problem` that also applies to symlink targets (which may use '..')."""
    if not path:
        return "is empty"
    if _CONTROL.search(path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(path):
        return "starts with a drive letter"
    return None


def is_top_level(member: str, leaf: str) -> bool:
    """`<dir>/<leaf>` with a real directory name (not "", "." or "..")."""
    parts = member.split("/")
    return len(parts) == 2 and parts[1] == leaf and parts[0] not in ("", ".", "..")
