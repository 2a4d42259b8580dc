"""End to end with installers: pip and uv against the real daemon.

Yanked releases, Requires-Python, PEP 658 metadata-only resolution, the
JSON index, `pip index versions` and `uv publish`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributions import wheel_bytes, wheel_filename, write
from tests.support.daemon import BIN, Daemon, running_daemon, twine

pytestmark = pytest.mark.e2e
UV = shutil.which("uv", path=str(BIN)) or shutil.which("uv")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str, str, str]]:
    with running_daemon("pypireg-e2e-clients-") as daemon:
        project = daemon.cli("project", "create", "clients").stdout.strip()
        write_token = daemon.cli("token", "create", "--project", project, "--scope", "write"
                                 ).stdout.splitlines()[-1]
        read_token = daemon.cli("token", "create", "--project", project, "--scope", "read"
                                ).stdout.splitlines()[-1]
        dists = tmp_path_factory.mktemp("dists")
        files = [
            write(dists, wheel_filename("yank-demo", v), wheel_bytes("yank-demo", v))
            for v in ("1.0", "2.0")
        ] + [
            write(dists, wheel_filename("rp-demo", "1.0"),
                  wheel_bytes("rp-demo", "1.0", requires_python=">=3")),
            write(dists, wheel_filename("rp-demo", "2.0"),
                  wheel_bytes("rp-demo", "2.0", requires_python=">=4")),
            write(dists, wheel_filename("meta-demo", "1.0"), wheel_bytes("meta-demo", "1.0")),
        ]
        result = twine(daemon, project, write_token, *files)
        assert result.returncode == 0, result.stdout + result.stderr
        daemon.cli("yank", project, "yank-demo", "2.0", "--reason", "broken")
        yield daemon, project, write_token, read_token


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", *args],
        capture_output=True, text=True, timeout=180,
    )


def downloaded(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_pip_skips_yanked_unless_pinned(registry: tuple[Daemon, str, str, str],
                                        tmp_path: Path) -> None:
    daemon, project, _, read = registry
    index = daemon.index(project, read)
    out = tmp_path / "a"
    result = pip("download", "--no-deps", "--index-url", index, "-d", str(out), "yank-demo")
    assert result.returncode == 0, result.stderr
    assert downloaded(out) == ["yank_demo-1.0-py3-none-any.whl"]
    out = tmp_path / "b"
    result = pip("download", "--no-deps", "--index-url", index, "-d", str(out),
                 "yank-demo==2.0")
    assert result.returncode == 0, result.stderr
    assert downloaded(out) == ["yank_demo-2.0-py3-none-any.whl"]
    assert "broken" in result.stdout + result.stderr  # pip shows the yank reason


def test_pip_honours_requires_python(registry: tuple[Daemon, str, str, str],
                                     tmp_path: Path) -> None:
    daemon, project, _, read = registry
    result = pip("download", "--no-deps", "--index-url", daemon.index(project, read),
                 "-d", str(tmp_path), "rp-demo")
    assert result.returncode == 0, result.stderr
    assert downloaded(tmp_path) == ["rp_demo-1.0-py3-none-any.whl"]


def test_pip_index_versions(registry: tuple[Daemon, str, str, str]) -> None:
    daemon, project, _, read = registry
    result = pip("index", "versions", "--index-url", daemon.index(project, read), "rp-demo")
    assert result.returncode == 0, result.stderr
    assert "rp-demo (1.0)" in result.stdout


def test_pip_resolves_through_core_metadata(registry: tuple[Daemon, str, str, str],
                                            tmp_path: Path) -> None:
    daemon, project, _, read = registry
    before = daemon.log.read_text()
    report = tmp_path / "report.json"
    result = pip("install", "--dry-run", "--ignore-installed", "--no-deps", "--report",
                 str(report), "--index-url", daemon.index(project, read), "meta-demo")
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["install"][0]["metadata"]["name"] == "meta-demo"
    log = daemon.log.read_text()[len(before):]
    assert "meta_demo-1.0-py3-none-any.whl.metadata HTTP/1.1\" 200" in log
    assert "meta_demo-1.0-py3-none-any.whl HTTP/1.1\"" not in log  # the wheel was not fetched


@pytest.mark.skipif(UV is None, reason="uv is installed with the test extras")
def test_uv_install_and_publish(registry: tuple[Daemon, str, str, str], tmp_path: Path) -> None:
    daemon, project, write_token, read = registry
    assert UV is not None
    env = {**os.environ, "UV_NO_CACHE": "1", "UV_PYTHON": sys.executable}
    result = subprocess.run(
        [UV, "pip", "install", "--index-url", daemon.index(project, read), "--target",
         str(tmp_path / "target"), "meta-demo"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "target" / "meta_demo" / "__init__.py").exists()

    wheel = write(tmp_path, wheel_filename("uv-demo", "0.1"), wheel_bytes("uv-demo", "0.1"))
    result = subprocess.run(
        [UV, "publish", "--publish-url", daemon.api(project), "--username", "__token__",
         "--password", write_token, str(wheel)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr
    result = pip("download", "--no-deps", "--index-url", daemon.index(project, read),
                 "-d", str(tmp_path / "dl"), "uv-demo")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dl" / wheel.name).read_bytes() == wheel.read_bytes()


PDM = shutil.which("pdm", path=str(BIN)) or shutil.which("pdm")


@pytest.mark.skipif(PDM is None, reason="pdm is installed with the test extras")
def test_pdm_publish_and_add(registry: tuple[Daemon, str, str, str], tmp_path: Path) -> None:
    daemon, project, write_token, read = registry
    assert PDM is not None
    env = {**os.environ, "PDM_HOME": str(tmp_path / "pdm-home"), "PDM_CHECK_UPDATE": "false",
           "PDM_CACHE_DIR": str(tmp_path / "pdm-cache"), "PDM_IGNORE_SAVED_PYTHON": "1"}
    env.pop("VIRTUAL_ENV", None)
    app = tmp_path / "app"
    (app / "dist").mkdir(parents=True)
    write(app / "dist", wheel_filename("pdm-demo", "0.2"), wheel_bytes("pdm-demo", "0.2"))
    result = subprocess.run(
        [PDM, "publish", "--no-build", "--repository", daemon.api(project), "--username",
         "__token__", "--password", write_token],
        cwd=app, capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # A pdm project whose only source ("pypi", replacing the default) is pypireg.
    (app / "pyproject.toml").write_text(
        '[project]\nname = "consumer"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        "dependencies = []\n\n[tool.pdm]\ndistribution = false\n\n"
        f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{daemon.index(project, read)}"\n'
    )
    result = subprocess.run(
        [PDM, "add", "--no-self", "-v", "pdm-demo", "meta-demo"],
        cwd=app, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lock = (app / "pdm.lock").read_text()
    assert 'name = "pdm-demo"' in lock and 'name = "meta-demo"' in lock
    site = list(app.glob(".venv/lib/python*/site-packages"))
    assert site and (site[0] / "pdm_demo" / "__init__.py").exists()
