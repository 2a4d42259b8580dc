"""End to end: CI jobs publish to the real daemon over TLS with no stored secret.

The daemon listens on an `ssl:` endpoint with a leaf of a test CA (made
here: uv's TLS stack refuses a self-signed leaf), which the clients trust
through SSL_CERT_FILE (uv, the mint script) or `--cert` (twine). The OIDC
issuer and GitHub Actions' ID-token endpoint are tests/support/oidc.py's,
in this process: the clients run as child processes of the reactor
(`getProcessOutputAndValue`), so it keeps answering the daemon's key
fetches and the clients' token requests meanwhile.

- unmodified `uv publish --trusted-publishing always` in a "GitHub
  Actions" job (GITHUB_ACTIONS, ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN);
- the same in a "GitLab CI" job (GITLAB_CI, PYPIREG_ID_TOKEN);
- twine with a token minted by docs/mint-token.py.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from tests.distributions import wheel_bytes, wheel_filename, write
from tests.support.daemon import BIN, Daemon, running_daemon
from tests.support.oidc import (
    REQUEST_TOKEN,
    LocalIssuer,
    TlsFiles,
    github_claims,
    gitlab_claims,
    start_issuer,
    tls_files,
)

pytestmark = pytest.mark.e2e
UV = shutil.which("uv", path=str(BIN)) or shutil.which("uv")
MINT_SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "mint-token.py"
# What a CI runner's environment must not leak into the clients.
_CLEARED = ("UV_PUBLISH_TOKEN", "UV_PUBLISH_PASSWORD", "UV_PUBLISH_USERNAME", "UV_PUBLISH_URL",
            "GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "GITLAB_CI", "PYPIREG_ID_TOKEN", "TWINE_USERNAME", "TWINE_PASSWORD",
            # requests lets these override twine's --cert (its trust_env merge).
            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(scope="module")
def issuers() -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    github, gitlab = start_issuer(), start_issuer()
    yield github, gitlab
    pytest_twisted.blockon(Deferred.fromCoroutine(github.stop()))
    pytest_twisted.blockon(Deferred.fromCoroutine(gitlab.stop()))


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsFiles]:
    folder = Path(tempfile.mkdtemp(prefix="pypireg-e2e-tls-"))
    yield tls_files(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(issuers: tuple[LocalIssuer, LocalIssuer], tls: TlsFiles) -> Iterator[Daemon]:
    github, gitlab = issuers

    def configure(daemon: Daemon) -> None:
        with daemon.config.open("a") as f:
            f.write("[trusted_publishing]\n"
                    f'[[trusted_publishing.issuers]]\nurl = "{github.url}"\nkind = "github"\n'
                    f'[[trusted_publishing.issuers]]\nurl = "{gitlab.url}"\nkind = "gitlab"\n')

    with running_daemon("pypireg-e2e-tp-", configure, tls=tls) as started:
        started.cli("project", "create", "acme/tools")
        started.cli("trusted-publisher", "add", "--project", "acme/tools", "--issuer",
                    github.url, "--github", "acme/tools", "--workflow", "release.yml",
                    "--environment", "pypi")
        started.cli("trusted-publisher", "add", "--project", "acme/tools", "--issuer",
                    gitlab.url, "--gitlab", "acme/tools")
        yield started


def _env(tls: TlsFiles, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    return {**env, "SSL_CERT_FILE": str(tls.ca), **extra}


async def _run(executable: str, *args: str, env: dict[str, str]) -> tuple[int, str]:
    out, err, code = await getProcessOutputAndValue(executable, args, env=env)
    return code, (out + err).decode(errors="replace")


def _package(daemon: Daemon, tls: TlsFiles, name: str) -> dict[str, Any]:
    """The packages API's entry for *name*, read over TLS with the CLI's read token."""
    read = daemon.cli("token", "create", "--project", "acme/tools", "--scope", "read"
                      ).stdout.splitlines()[-1]
    request = urllib.request.Request(
        f"{daemon.url}/api/v4/projects/acme%2Ftools/packages?package_name={name}",
        headers={"PRIVATE-TOKEN": read})
    context = ssl.create_default_context(cafile=str(tls.ca))
    with urllib.request.urlopen(request, context=context, timeout=30) as answer:
        [package] = json.load(answer)
    return dict(package)


def _trusted_tokens(daemon: Daemon) -> list[dict[str, Any]]:
    listing = json.loads(daemon.cli("--json", "token", "list", "--project", "acme/tools").stdout)
    return [t for t in listing if t["kind"] == "trusted"]


def _github_env(tls: TlsFiles, github: LocalIssuer, **extra: str) -> dict[str, str]:
    """A GitHub Actions job's environment, with `id-token: write`."""
    return _env(tls, ACTIONS_ID_TOKEN_REQUEST_URL=github.ci_token_url,
                ACTIONS_ID_TOKEN_REQUEST_TOKEN=REQUEST_TOKEN, **extra)


async def _uv_publish(daemon: Daemon, folder: Path, name: str, env: dict[str, str]
                      ) -> tuple[int, str]:
    """Unmodified `uv publish --trusted-publishing always` of a new wheel *name* 1.0."""
    wheel = write(folder, wheel_filename(name, "1.0"), wheel_bytes(name, "1.0"))
    assert UV is not None
    return await _run(UV, "publish", "--trusted-publishing", "always", "--publish-url",
                      daemon.api("acme%2Ftools"), str(wheel), env=env)


@pytest.mark.skipif(UV is None, reason="uv is installed with the test extras")
@pytest_twisted.ensureDeferred
async def test_uv_publishes_from_github_actions_with_no_secret(
        daemon: Daemon, issuers: tuple[LocalIssuer, LocalIssuer], tls: TlsFiles,
        tmp_path: Path) -> None:
    github, _ = issuers
    github.job_claims = github_claims(github, environment="pypi")
    before = {t["id"] for t in _trusted_tokens(daemon)}
    code, output = await _uv_publish(daemon, tmp_path, "gh-demo",
                                     _github_env(tls, github, GITHUB_ACTIONS="true"))
    assert code == 0, output
    # uv asked the registry's audience for its ID token.
    assert github.audiences[-1:] == ["pypireg"]
    pipeline = _package(daemon, tls, "gh-demo")["pipeline"]
    assert pipeline["published_by"] == "acme/tools@v1.0 via release.yml (run 987654)"
    assert pipeline["web_url"] == f"{github.url}/acme/tools/actions/runs/987654"
    # uv burned the minted token after the upload.
    [token] = [t for t in _trusted_tokens(daemon) if t["id"] not in before]
    assert token["revoked_at"] is not None and token["expires_at"] is not None
    # The test issuers are plain http: allowed on loopback, with a warning at start-up.
    assert f"the issuer {github.url} is plain http" in daemon.log.read_text()


@pytest.mark.skipif(UV is None, reason="uv is installed with the test extras")
@pytest_twisted.ensureDeferred
async def test_uv_publishes_from_gitlab_ci_with_no_secret(
        daemon: Daemon, issuers: tuple[LocalIssuer, LocalIssuer], tls: TlsFiles,
        tmp_path: Path) -> None:
    _, gitlab = issuers
    # GitLab sets the `id_tokens:` variable itself, for the audience the job names.
    code, output = await _uv_publish(daemon, tmp_path, "gl-demo", _env(
        tls, GITLAB_CI="true", PYPIREG_ID_TOKEN=gitlab.token(gitlab_claims(gitlab))))
    assert code == 0, output
    pipeline = _package(daemon, tls, "gl-demo")["pipeline"]
    assert pipeline["published_by"] == "acme/tools@v1.0 via .gitlab-ci.yml (pipeline 4711)"


@pytest.mark.skipif(UV is None, reason="uv is installed with the test extras")
@pytest_twisted.ensureDeferred
async def test_uv_from_a_job_no_publisher_matches_is_told_why(
        daemon: Daemon, issuers: tuple[LocalIssuer, LocalIssuer], tls: TlsFiles,
        tmp_path: Path) -> None:
    github, _ = issuers
    github.job_claims = github_claims(github, repository="evil/tools", environment="pypi")
    code, output = await _uv_publish(daemon, tmp_path, "gh-evil",
                                     _github_env(tls, github, GITHUB_ACTIONS="true"))
    assert code != 0
    assert "invalid-publisher" in output and "repository is 'evil/tools'" in output, output


@pytest_twisted.ensureDeferred
async def test_twine_publishes_with_a_token_from_the_mint_script(
        daemon: Daemon, issuers: tuple[LocalIssuer, LocalIssuer], tls: TlsFiles,
        tmp_path: Path) -> None:
    github, _ = issuers
    github.job_claims = github_claims(github, environment="pypi", ref="refs/tags/v2.0")
    code, output = await _run(
        str(BIN / "python"), str(MINT_SCRIPT), daemon.url, env=_github_env(tls, github))
    assert code == 0, output
    token = output.strip().splitlines()[-1]
    assert token.startswith("pypireg_")
    wheel = write(tmp_path, wheel_filename("tw-demo", "1.0"), wheel_bytes("tw-demo", "1.0"))
    code, output = await _run(
        str(BIN / "twine"), "upload", "--disable-progress-bar", "--non-interactive",
        "--repository-url", daemon.api("acme%2Ftools"), "--cert", str(tls.ca), str(wheel),
        env=_env(tls, TWINE_USERNAME="__token__", TWINE_PASSWORD=token))
    assert code == 0, output
    pipeline = _package(daemon, tls, "tw-demo")["pipeline"]
    assert pipeline["published_by"] == "acme/tools@v2.0 via release.yml (run 987654)"
