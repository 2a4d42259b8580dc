"""End to end with installers: pip and uv against the real daemon.

Yanked releases, Requires-Python, PEP 658 metadata-only resolution, the
JSON index, `pip index versions` and `uv publish`; the upload URLs clients
are configured with, and what the registry tells them when they are
wrong; re-uploads to a project that rejects duplicates, with the advice
its refusal gives tried out with each client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributions import upload_form, wheel_bytes, wheel_filename, write
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


def _project(daemon: Daemon, name: str, *options: str) -> tuple[str, str]:
    """A new project (id) and a write token for it."""
    project = daemon.cli("project", "create", name).stdout.strip()
    if options:
        daemon.cli("project", "update", name, *options)
    token = daemon.cli("token", "create", "--project", project, "--scope", "write"
                       ).stdout.splitlines()[-1]
    return project, token


def test_twine_with_the_upload_url_and_a_trailing_slash(registry: tuple[Daemon, str, str, str],
                                                        tmp_path: Path) -> None:
    daemon = registry[0]
    project, token = _project(daemon, "slash")
    wheel = write(tmp_path, wheel_filename("slash-demo", "1.0"), wheel_bytes("slash-demo", "1.0"))
    result = twine(daemon, project, token, wheel, repository=daemon.api(project) + "/")
    assert result.returncode == 0, result.stdout + result.stderr
    result = pip("download", "--no-deps", "--index-url", daemon.index(project, token),
                 "-d", str(tmp_path / "dl"), "slash-demo")
    assert result.returncode == 0, result.stderr
    assert list((daemon.folder / "data" / "tmp").iterdir()) == []


def test_twine_to_the_index_url_is_told_the_upload_url(registry: tuple[Daemon, str, str, str],
                                                       tmp_path: Path) -> None:
    daemon = registry[0]
    project, token = _project(daemon, "misdirected")
    # Bigger than any small body the site reads for other routes (64 KiB).
    wheel = write(tmp_path, wheel_filename("lost-demo", "1.0"),
                  wheel_bytes("lost-demo", "1.0", payload=os.urandom(200 * 1024)))
    for url in (daemon.api(project) + "/simple", daemon.api(project) + "/simple/"):
        result = twine(daemon, project, token, wheel, repository=url)
        assert result.returncode != 0
        output = " ".join((result.stdout + result.stderr).split())  # rich wraps lines
        assert f"HTTPError: 405 Method Not Allowed from {url} This is the project's index URL " \
               f"(for pip and uv), not its upload URL: upload to {daemon.api(project)}" in output
    assert list((daemon.folder / "data" / "tmp").iterdir()) == []


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    assert UV is not None
    env = {**os.environ, "UV_NO_CACHE": "1", "UV_PYTHON": sys.executable}
    return subprocess.run([UV, *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.skipif(UV is None or PDM is None, reason="uv and pdm come with the test extras")
def test_the_advice_for_re_uploads_works(registry: tuple[Daemon, str, str, str],
                                         tmp_path: Path) -> None:
    daemon = registry[0]
    project, token = _project(daemon, "strict", "--reject-duplicates")
    first = write(tmp_path, wheel_filename("strict-demo", "1.0"),
                  wheel_bytes("strict-demo", "1.0"))
    assert twine(daemon, project, token, first).returncode == 0

    # Again: twine shows the reason, and the advice in it.
    result = twine(daemon, project, token, first)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert f"HTTPError: 400 Bad Request from {daemon.api(project)} File already exists " \
           "('strict_demo-1.0-py3-none-any.whl'); this project rejects duplicate uploads." in output
    assert "twine's --skip-existing works only with the public index, so use uv publish " \
           "--check-url" in output
    assert output.endswith("or pdm publish --skip-existing."), output  # the advice whole
    # As the advice says: twine refuses --skip-existing for any other repository.
    result = twine(daemon, project, token, first, options=("--skip-existing",))
    assert result.returncode != 0
    assert "UnsupportedConfiguration" in result.stdout + result.stderr
    assert "--skip-existing" in result.stdout + result.stderr

    # The check URL as the registry gives it (the body, in full), with the token put in.
    code, text, reason = _raw_upload(daemon, project, token, first)
    assert code == 400 and reason == text.strip()
    match = re.search(r"uv publish --check-url (\S+) or pdm publish --skip-existing", text)
    assert match is not None, text
    check_url = match[1].replace("<token>", token)
    assert check_url == daemon.index(project, token) + "/"
    second = write(tmp_path, wheel_filename("strict-demo", "1.1"),
                   wheel_bytes("strict-demo", "1.1"))
    result = _uv("publish", "--publish-url", daemon.api(project), "--username", "__token__",
                 "--password", token, "--check-url", check_url, str(first), str(second))
    assert result.returncode == 0, result.stderr
    assert "strict_demo-1.0-py3-none-any.whl already exists, skipping" in result.stderr
    # The check compares hashes: other bytes under a name the index has are an error.
    (tmp_path / "changed").mkdir()
    changed = write(tmp_path / "changed", first.name,
                    wheel_bytes("strict-demo", "1.0", payload=b"VALUE = 2\n"))
    result = _uv("publish", "--publish-url", daemon.api(project), "--username", "__token__",
                 "--password", token, "--check-url", check_url, str(changed))
    assert result.returncode != 0
    assert "Local file and index file do not match" in result.stderr

    app = tmp_path / "app"
    (app / "dist").mkdir(parents=True)
    shutil.copy(first, app / "dist")
    write(app / "dist", wheel_filename("strict-demo", "1.2"), wheel_bytes("strict-demo", "1.2"))
    env = {**os.environ, "PDM_HOME": str(tmp_path / "pdm-home"), "PDM_CHECK_UPDATE": "false",
           "PDM_CACHE_DIR": str(tmp_path / "pdm-cache"), "PDM_IGNORE_SAVED_PYTHON": "1"}
    env.pop("VIRTUAL_ENV", None)
    assert PDM is not None
    result = subprocess.run(
        [PDM, "publish", "--no-build", "--skip-existing", "--repository", daemon.api(project),
         "--username", "__token__", "--password", token],
        cwd=app, capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Skipping strict_demo-1.0-py3-none-any.whl because it appears to already exist" \
        in " ".join((result.stdout + result.stderr).split())

    result = pip("index", "versions", "--index-url", daemon.index(project, token), "strict-demo")
    assert "strict-demo (1.2)" in result.stdout and "1.2, 1.1, 1.0" in result.stdout
    assert list((daemon.folder / "data" / "tmp").iterdir()) == []


def _raw_upload(daemon: Daemon, project: str, token: str, wheel: Path
                ) -> tuple[int, str, str]:
    """POST *wheel* with the standard library: (status, body, reason phrase)."""
    import base64
    import http.client

    name, version = wheel.name.split("-")[:2]
    ctype, body = upload_form(name, version, wheel.name, wheel.read_bytes())
    auth = base64.b64encode(f"__token__:{token}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        conn.request("POST", f"/api/v4/projects/{project}/packages/pypi", body=body,
                     headers={"Content-Type": ctype.decode(), "Authorization": f"Basic {auth}"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.reason
    finally:
        conn.close()


def test_pip_shows_the_registrys_reason_only_when_very_verbose(
        registry: tuple[Daemon, str, str, str], tmp_path: Path) -> None:
    # What the README tells users: pip turns a refusal into "no matching
    # distribution" and keeps the reason for its debug output.
    daemon = registry[0]
    project, token = _project(daemon, "switched-off", "--packages-disabled")
    reason = "The package registry is disabled for this project."
    args = ("download", "--no-deps", "--index-url", daemon.index(project, token),
            "-d", str(tmp_path), "pypireg-nothing-here")
    quiet, verbose, debug = pip(*args), pip("-v", *args), pip("-vv", *args)
    assert all(r.returncode != 0 for r in (quiet, verbose, debug))
    assert "No matching distribution found for pypireg-nothing-here" in quiet.stderr
    assert reason not in quiet.stdout + quiet.stderr
    assert reason not in verbose.stdout + verbose.stderr
    assert f"404 Client Error: {reason}" in debug.stdout + debug.stderr
