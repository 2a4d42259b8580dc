"""Trusted publishing: every check of an ID token, the minted token, and the routes.

The issuer is tests/support/oidc.py's, on 127.0.0.1 with keys made here.
The exchange is driven directly with a task.Clock (expiry, the refetch
limit, the minted token's 15 minutes); the routes go through the real
site (StubTreq, and the real port for uploads).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pypireg.access import Authorizer, FailureLimiter
from pypireg.config import parse_config
from pypireg.domain.errors import Forbidden, NotFound, Unauthorized
from pypireg.domain.trusted_publishing import MINTED_TOKEN_SECONDS, TrustedPublishingError
from pypireg.oidc.exchange import TokenExchange
from pypireg.oidc.keys import IssuerKeys, default_client
from pypireg.storage import projects as project_store
from pypireg.storage import trusted_publishing as store
from pypireg.storage.database import Database
from tests.distributions import wheel_bytes, wheel_filename
from tests.support import reactor
from tests.support.http import start_registry, upload
from tests.support.oidc import (
    LocalIssuer,
    SigningKey,
    github_claims,
    gitlab_claims,
    new_key,
    start_issuer,
)


@pytest_twisted.async_yield_fixture()
async def issuer() -> Any:
    started = start_issuer()
    yield started
    await started.stop()


@dataclass
class Setup:
    db: Database
    issuer: LocalIssuer
    clock: Clock
    exchange: TokenExchange
    project: Any

    def claims(self, **kw: Any) -> dict[str, Any]:
        return github_claims(self.issuer, now=self.clock.seconds(), **kw)

    async def mint(self, claims: dict[str, Any] | None = None, token: str | None = None,
                   client: str = "10.0.0.1") -> Any:
        return await self.exchange.mint(token or self.issuer.token(claims or self.claims()),
                                        client)

    async def refused(self, claims: dict[str, Any] | None = None, token: str | None = None
                      ) -> TrustedPublishingError:
        try:
            await self.mint(claims, token)
        except TrustedPublishingError as e:
            return e
        raise AssertionError("the token was accepted")


def exchange_for(db: Database, clock: Clock, issuers: list[dict[str, Any]],
                 limit: int = 20) -> TokenExchange:
    config = parse_config({"trusted_publishing": {"issuers": issuers}}).trusted_publishing
    return TokenExchange(db, clock, config, IssuerKeys(db, clock, default_client(reactor)),
                         FailureLimiter(clock, limit=limit))


def real_time_clock() -> Clock:
    clock = Clock()
    clock.advance(time.time())
    return clock


@pytest_twisted.async_fixture()
async def setup(db: Database, issuer: LocalIssuer) -> Setup:
    clock = real_time_clock()
    project = await project_store.create_project(db, "acme/tools")
    await store.add_publisher(db, project.id, issuer.url, "github", repository="acme/tools",
                              workflow="release.yml")
    return Setup(db, issuer, clock, exchange_for(db, clock, [issuer.issuer_config()]), project)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


@pytest_twisted.ensureDeferred
async def test_a_matching_job_gets_a_15_minute_write_token_of_its_project(setup: Setup) -> None:
    minted = await setup.mint()
    assert minted.token.startswith("pypireg_")
    assert minted.expires == int(setup.clock.seconds()) + MINTED_TOKEN_SECONDS
    authorizer = Authorizer(setup.db, setup.clock)
    grant = await authorizer.authorize("acme/tools", minted.token, "write")
    assert grant.token is not None and grant.token.kind == "trusted"
    assert grant.token.description == "acme/tools@v1.0 via release.yml (run 987654)"
    # Upload only: no yanks or deletes.
    with pytest.raises(Forbidden, match="only uploads"):
        await authorizer.authorize("acme/tools", minted.token, "maintain")
    # Another project: as for any token of another project.
    await project_store.create_project(setup.db, "acme/other")
    with pytest.raises(NotFound):
        await authorizer.authorize("acme/other", minted.token, "write")
    # 15 minutes later it is refused (the authorizer's clock decides).
    setup.clock.advance(MINTED_TOKEN_SECONDS)
    with pytest.raises(Unauthorized):
        await authorizer.authorize("acme/tools", minted.token, "write")


@pytest_twisted.ensureDeferred
async def test_the_minted_token_records_the_publisher_and_the_job(setup: Setup) -> None:
    await setup.mint(setup.claims(ref="refs/heads/main"))
    rows = await setup.db.fetch_all(
        "SELECT m.publisher_id, m.repository, m.workflow, m.ref, m.sha, m.run_id, m.web_url,"
        " m.claims FROM minted_tokens m")
    [(publisher_id, repository, workflow, ref, sha, run_id, web_url, claims)] = rows
    [publisher] = await store.list_publishers(setup.db, setup.project.id)
    assert (publisher_id, repository, workflow, ref, run_id) == (
        publisher.id, "acme/tools", "release.yml", "main", "987654")
    assert sha == "0123456789abcdef0123456789abcdef01234567"
    assert web_url == f"{setup.issuer.url}/acme/tools/actions/runs/987654"
    assert claims["run_id"] == "987654"
    # The first use pins the GitHub owner's id: a re-created owner is refused.
    assert publisher.owner_id == "4242"
    error = await setup.refused(setup.claims(repository_owner_id="31337"))
    assert error.code == "invalid-publisher" and "repository_owner_id" in error.description


def _hmac_with_public_key(setup: Setup) -> str:
    key = setup.issuer.keys[0]
    head = _b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(setup.claims()).encode())
    mac = hmac.new(key.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


REFUSALS: dict[str, tuple[Any, str, str]] = {
    # name: (token maker, code, what the description says)
    "bad signature": (
        lambda s: s.issuer.token(s.claims(), key=SigningKey(
            s.issuer.keys[0].kid, "RS256", new_key().private)), "invalid-token", "Bad signature"),
    "alg none": (
        lambda s: _unsigned(s.claims(), {"alg": "none", "kid": s.issuer.keys[0].kid}),
        "invalid-token", "'none' is not accepted"),
    "HMAC with the public key": (_hmac_with_public_key, "invalid-token", "'HS256' is not"),
    "a key of another type": (
        lambda s: s.issuer.token(s.claims(), key=SigningKey(
            s.issuer.keys[0].kid, "ES256", new_key("ES256").private)),
        "invalid-token", "its key"),
    "not a JWT": (lambda s: "not.a.jwt", "invalid-token", "well-formed"),
    "wrong audience": (lambda s: s.issuer.token(s.claims(audience="pypi")), "invalid-token",
                       "Wrong audience"),
    "expired": (lambda s: s.issuer.token(github_claims(
        s.issuer, now=s.clock.seconds() - 400, lifetime=300)), "invalid-token", "expired"),
    "not yet valid": (lambda s: s.issuer.token(s.claims(nbf=int(s.clock.seconds()) + 120)),
                      "invalid-token", "not valid yet"),
    "issued in the future": (lambda s: s.issuer.token(github_claims(
        s.issuer, now=s.clock.seconds() + 120)), "invalid-token", "issued in the future"),
    "too long a lifetime": (lambda s: s.issuer.token(s.claims(lifetime=3 * 3600)),
                            "invalid-token", "lifetime"),
    "no jti": (lambda s: s.issuer.token({k: v for k, v in s.claims().items() if k != "jti"}),
               "invalid-token", "jti"),
    "unknown issuer": (lambda s: s.issuer.token(s.claims(iss="https://ci.example")),
                       "invalid-token", "Unknown issuer"),
    "wrong repository": (lambda s: s.issuer.token(s.claims(repository="evil/tools")),
                         "invalid-publisher", "repository is 'evil/tools'"),
    "wrong workflow": (lambda s: s.issuer.token(s.claims(workflow="other.yml")),
                       "invalid-publisher", "job_workflow_ref"),
}


@pytest_twisted.ensureDeferred
async def test_minting_burning_and_publishers_are_audited_without_a_secret(setup: Setup
                                                                          ) -> None:
    from pypireg.domain.audit import Actor
    from pypireg.storage import audit as audit_store

    admin = Actor.admin("ops")
    publisher = await store.add_publisher(setup.db, setup.project.id, setup.issuer.url,
                                          "github", repository="acme/other",
                                          workflow="ci.yml", actor=admin)
    minted = await setup.mint()
    await setup.exchange.burn(minted.token, "10.0.0.2")
    await store.remove_publisher(setup.db, publisher.id, actor=admin)
    events = (await audit_store.list_events(setup.db, audit_store.EventFilter(
        project_id=setup.project.id), limit=10)).items
    by_action = {e.action: e for e in events}
    assert sorted(by_action) == ["token.create", "token.revoke", "trusted_publisher.add",
                                 "trusted_publisher.remove"]
    created = by_action["token.create"]
    assert created.actor.kind == "publisher" and created.actor.client == "10.0.0.1"
    assert "acme/tools@v1.0 via release.yml (run 987654)" in (created.actor.name or "")
    assert created.details["repository"] == "acme/tools"
    assert created.details["kind"] == "trusted"
    burned = by_action["token.revoke"]
    assert (burned.target_id, burned.actor.kind, burned.actor.token_kind,
            burned.actor.client) == (created.target_id, "token", "trusted", "10.0.0.2")
    assert by_action["trusted_publisher.add"].details["repository"] == "acme/other"
    assert by_action["trusted_publisher.remove"].target_id == publisher.id
    text = repr(events)
    assert minted.token not in text and minted.token[:20] not in text


@pytest.mark.parametrize("case", list(REFUSALS))
@pytest_twisted.ensureDeferred
async def test_every_refusal_says_which_check_failed(setup: Setup, case: str) -> None:
    make, code, words = REFUSALS[case]
    error = await setup.refused(token=make(setup))
    assert (error.code, error.status) == (code, 422), error.description
    assert words in error.description, error.description
    assert not await setup.db.fetch_all("SELECT * FROM minted_tokens")


@pytest_twisted.ensureDeferred
async def test_the_checks_can_pass(setup: Setup) -> None:
    # The valid token the refusals are variations of is accepted, leeway included.
    claims = setup.claims()
    setup.clock.advance(claims["exp"] - setup.clock.seconds() + 29)
    await setup.mint(claims)


@pytest_twisted.ensureDeferred
async def test_an_environment_must_match_when_the_publisher_names_one(setup: Setup) -> None:
    await setup.db.execute("UPDATE trusted_publishers SET environment = 'pypi'")
    error = await setup.refused(setup.claims(environment="staging"))
    assert error.code == "invalid-publisher" and "environment is 'staging'" in error.description
    assert "environment is None" in (await setup.refused(setup.claims())).description
    await setup.mint(setup.claims(environment="PyPI"))  # GitHub's are case-insensitive


@pytest_twisted.ensureDeferred
async def test_a_jti_is_used_once(setup: Setup) -> None:
    token = setup.issuer.token(setup.claims())
    await setup.mint(token=token)
    error = await setup.refused(token=token)
    assert error.code == "invalid-reuse-token"


@pytest_twisted.ensureDeferred
async def test_an_unknown_kid_refetches_at_most_once_a_minute(setup: Setup) -> None:
    await setup.mint()
    assert setup.issuer.discoveries() == 1
    # A forged kid right after: refused without asking the issuer again.
    error = await setup.refused(token=setup.issuer.token(setup.claims(), key=new_key()))
    assert "Unknown signing key" in error.description
    assert setup.issuer.discoveries() == 1
    # The issuer rotates its keys; a minute on, the new kid is fetched and accepted.
    old = setup.issuer.keys[0]
    new = setup.issuer.rotate()
    setup.clock.advance(61)
    await setup.mint(token=setup.issuer.token(setup.claims(), key=new))
    assert setup.issuer.discoveries() == 2
    error = await setup.refused(token=setup.issuer.token(setup.claims(), key=old))
    assert "Unknown signing key" in error.description
    assert setup.issuer.discoveries() == 2


@pytest_twisted.ensureDeferred
async def test_an_issuer_that_fails_is_a_502_and_one_unreachable_a_503(setup: Setup) -> None:
    setup.issuer.down = True
    error = await setup.refused()
    assert (error.code, error.status) == ("issuer-unavailable", 502)
    assert "answered 500" in error.description and error.headers["Retry-After"] == "60"
    # Within the minute, the issuer is not asked again.
    assert (await setup.refused()).status == 503
    assert setup.issuer.discoveries() == 1
    await setup.issuer.stop()
    setup.clock.advance(61)
    error = await setup.refused()
    assert (error.code, error.status) == ("issuer-unavailable", 503), error.description
    assert "cannot reach" in error.description


@pytest_twisted.ensureDeferred
async def test_failed_exchanges_are_rate_limited_like_failed_logins(db: Database,
                                                                    issuer: LocalIssuer) -> None:
    clock = real_time_clock()
    exchange = exchange_for(db, clock, [issuer.issuer_config()], limit=3)
    for _ in range(3):
        with pytest.raises(TrustedPublishingError, match="well-formed"):
            await exchange.mint("garbage", "10.0.0.9")
    with pytest.raises(TrustedPublishingError) as limited:
        await exchange.mint("garbage", "10.0.0.9")
    assert (limited.value.code, limited.value.status) == ("rate-limited", 429)
    assert limited.value.headers["Retry-After"] == "60"
    # Another address is not slowed.
    with pytest.raises(TrustedPublishingError, match="well-formed"):
        await exchange.mint("garbage", "10.0.0.10")


@pytest_twisted.ensureDeferred
async def test_gitlab_publishers_check_the_project_and_the_ci_config(db: Database,
                                                                     issuer: LocalIssuer) -> None:
    clock = real_time_clock()
    project = await project_store.create_project(db, "acme/tools")
    await store.add_publisher(db, project.id, issuer.url, "gitlab", repository="acme/tools",
                              workflow=".gitlab-ci.yml", environment="production")
    exchange = exchange_for(db, clock, [issuer.issuer_config("gitlab")])

    def token(**kw: Any) -> str:
        return issuer.token(gitlab_claims(issuer, now=clock.seconds(), **kw))

    for kw, words in (({"environment": "production", "project_path": "acme/evil"},
                       "project_path"),
                      ({"environment": "production", "ci_config_path": "ci/other.yml"},
                       "ci_config_ref_uri"),
                      ({"environment": "Production"}, "environment")):
        with pytest.raises(TrustedPublishingError, match=words):
            await exchange.mint(token(**kw), "10.0.0.1")
    minted = await exchange.mint(token(environment="production"), "10.0.0.1")
    [(description, web_url)] = await db.fetch_all(
        "SELECT t.description, m.web_url FROM tokens t JOIN minted_tokens m ON"
        " m.token_id = t.id")
    assert description == "acme/tools@v1.0 via .gitlab-ci.yml (pipeline 4711)"
    assert web_url == f"{issuer.url}/acme/tools/-/pipelines/4711"
    assert minted.project_id == project.id


@pytest_twisted.ensureDeferred
async def test_generic_publishers_match_every_listed_claim(db: Database,
                                                           issuer: LocalIssuer) -> None:
    clock = real_time_clock()
    project = await project_store.create_project(db, "acme/tools")
    await store.add_publisher(db, project.id, issuer.url, "generic",
                              claims={"sub": "job:deploy", "team": "infra"})
    exchange = exchange_for(db, clock, [issuer.issuer_config("generic")])
    base = github_claims(issuer, now=clock.seconds(), sub="job:deploy")
    with pytest.raises(TrustedPublishingError, match="claim team is null"):
        await exchange.mint(issuer.token(base), "10.0.0.1")
    await exchange.mint(issuer.token({**base, "jti": "two", "team": "infra"}), "10.0.0.1")


@pytest_twisted.ensureDeferred
async def test_a_job_matching_publishers_of_two_projects_is_refused(setup: Setup) -> None:
    other = await project_store.create_project(setup.db, "acme/mirror")
    await store.add_publisher(setup.db, other.id, setup.issuer.url, "github",
                              repository="acme/tools", workflow="release.yml")
    error = await setup.refused()
    assert error.code == "invalid-publisher" and "several projects" in error.description


@pytest_twisted.ensureDeferred
async def test_not_enabled_without_issuers(db: Database) -> None:
    exchange = exchange_for(db, real_time_clock(), [])
    with pytest.raises(TrustedPublishingError) as refused:
        await exchange.mint("x.y.z", "10.0.0.1")
    assert refused.value.code == "not-enabled"


# The routes, through the real site.

async def _post(reg: Any, path: str, body: Any) -> tuple[int, Any, Any]:
    resp = await reg.stub.post(f"{reg.url}{path}", data=json.dumps(body).encode(),
                               headers={b"Content-Type": [b"application/json"]})
    return resp.code, json.loads(await resp.content()), resp


@pytest_twisted.async_yield_fixture()
async def site(db: Database, issuer: LocalIssuer, tmp_path: Path) -> Any:
    reg = await start_registry(db, tmp_path, trusted_publishing={
        "audience": "registry.test", "issuers": [issuer.issuer_config()]})
    project = await project_store.create_project(db, "acme/tools")
    await store.add_publisher(db, project.id, issuer.url, "github", repository="acme/tools",
                              workflow="release.yml")
    yield reg
    await reg.stop()


@pytest_twisted.ensureDeferred
async def test_a_minted_token_uploads_and_the_upload_shows_its_job(site: Any,
                                                                   issuer: LocalIssuer) -> None:
    resp = await site.stub.get(f"{site.url}/_/oidc/audience")
    assert (resp.code, json.loads(await resp.content())) == (200, {"audience": "registry.test"})
    code, answer, _ = await _post(site, "/_/oidc/mint-token", {
        "token": issuer.token(github_claims(issuer, audience="registry.test"))})
    assert code == 200 and answer["success"] is True, answer
    assert answer["expires"] - time.time() == pytest.approx(MINTED_TOKEN_SECONDS, abs=60)
    code, text, _ = await upload(site, "acme%2Ftools", answer["token"],
                                 wheel_filename("demo-pkg", "1.0"), wheel_bytes("demo-pkg", "1.0"))
    assert code == 201, text
    page = await site.stub.get(f"{site.url}/acme/tools/-/packages/demo-pkg", headers={
        b"PRIVATE-TOKEN": [answer["token"].encode()]})
    html = (await page.content()).decode()
    assert "published by acme/tools@v1.0 via release.yml (run 987654)" in html
    # The packages API shows the job as GitLab shows a pipeline.
    packages = json.loads(await (await site.stub.get(
        f"{site.url}/api/v4/projects/1/packages", headers={
            b"PRIVATE-TOKEN": [answer["token"].encode()]})).content())
    [package] = packages
    pipeline = package["pipeline"]
    assert pipeline["id"] == 987654 and pipeline["ref"] == "v1.0"
    assert pipeline["sha"] == "0123456789abcdef0123456789abcdef01234567"
    assert pipeline["web_url"] == f"{issuer.url}/acme/tools/actions/runs/987654"
    assert pipeline["published_by"] == "acme/tools@v1.0 via release.yml (run 987654)"
    assert package["pipelines"] == [pipeline]
    files = json.loads(await (await site.stub.get(
        f"{site.url}/api/v4/projects/1/packages/{package['id']}/package_files", headers={
            b"PRIVATE-TOKEN": [answer["token"].encode()]})).content())
    assert files[0]["pipelines"] == [pipeline]
    # uv burns the token after its upload: it stops working at once.
    code, _, _ = await _post(site, "/_/oidc/burn-token", {"token": answer["token"]})
    assert code == 202
    code, _, _ = await upload(site, "acme%2Ftools", answer["token"],
                              wheel_filename("demo-pkg", "1.1"), wheel_bytes("demo-pkg", "1.1"),
                              version="1.1")
    assert code == 401


@pytest_twisted.ensureDeferred
async def test_route_refusals_are_json_in_the_public_index_shape(site: Any,
                                                                 issuer: LocalIssuer) -> None:
    code, answer, _ = await _post(site, "/_/oidc/mint-token", {"tok": "x"})
    assert code == 422 and answer["errors"][0]["code"] == "invalid-payload"
    code, answer, _ = await _post(site, "/_/oidc/mint-token", {
        "token": issuer.token(github_claims(issuer))})  # audience "pypireg", not ours
    assert code == 422
    [error] = answer["errors"]
    assert error["code"] == "invalid-token" and "'registry.test'" in error["description"]


@pytest_twisted.ensureDeferred
async def test_an_issuer_down_is_a_clear_502_at_the_route(site: Any, issuer: LocalIssuer
                                                          ) -> None:
    issuer.down = True
    code, answer, resp = await _post(site, "/_/oidc/mint-token", {
        "token": issuer.token(github_claims(issuer, audience="registry.test"))})
    assert code == 502 and answer["errors"][0]["code"] == "issuer-unavailable"
    assert resp.headers.getRawHeaders(b"retry-after") == [b"60"]


@pytest_twisted.ensureDeferred
async def test_routes_without_issuers_say_not_enabled(registry: Any) -> None:
    resp = await registry.stub.get(f"{registry.url}/_/oidc/audience")
    assert resp.code == 404
    assert json.loads(await resp.content())["errors"][0]["code"] == "not-enabled"
    code, answer, _ = await _post(registry, "/_/oidc/mint-token", {"token": "a.b.c"})
    assert code == 404 and answer["errors"][0]["code"] == "not-enabled"


@pytest_twisted.ensureDeferred
async def test_past_the_failure_limit_the_route_answers_429(site: Any) -> None:
    for _ in range(20):
        code, _, _ = await _post(site, "/_/oidc/mint-token", {"token": "garbage"})
        assert code == 422
    code, answer, resp = await _post(site, "/_/oidc/mint-token", {"token": "garbage"})
    assert code == 429 and answer["errors"][0]["code"] == "rate-limited"
    assert resp.headers.getRawHeaders(b"retry-after") is not None


@pytest_twisted.ensureDeferred
async def test_two_daemons_share_the_keys_and_refuse_each_others_jti(
        site: Any, issuer: LocalIssuer, tmp_path: Path) -> None:
    other = await start_registry(site.db, tmp_path / "other", trusted_publishing={
        "audience": "registry.test", "issuers": [issuer.issuer_config()]})
    try:
        token = issuer.token(github_claims(issuer, audience="registry.test"))
        code, _, _ = await _post(site, "/_/oidc/mint-token", {"token": token})
        assert code == 200
        code, answer, _ = await _post(other, "/_/oidc/mint-token", {"token": token})
        assert code == 422 and answer["errors"][0]["code"] == "invalid-reuse-token"
        # The second daemon verified with the keys the first stored.
        assert issuer.discoveries() == 1
    finally:
        await other.stop()


@pytest_twisted.ensureDeferred
async def test_nothing_of_a_token_is_logged(site: Any, issuer: LocalIssuer) -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        token = issuer.token(github_claims(issuer, audience="registry.test"))
        _, answer, _ = await _post(site, "/_/oidc/mint-token", {"token": token})
        await _post(site, "/_/oidc/mint-token", {"token": token})  # refused: replay
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    logged = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "minted upload token" in logged
    assert token not in logged and answer["token"] not in logged
    assert token.split(".")[1] not in logged


def test_pyjwt_is_not_asked_to_verify_hmac_even_if_the_header_says_so() -> None:
    # The allow-list is ours, not the header's: PyJWT refuses HS256 with our list.
    key = new_key()
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(jwt.encode({"a": 1}, "secret", algorithm="HS256"), key.public_pem(),
                   algorithms=["RS256"])


@pytest_twisted.ensureDeferred
async def test_concurrent_exchanges_share_one_fetch_of_the_keys(setup: Setup) -> None:
    from twisted.internet.defer import DeferredList

    results = await DeferredList([Deferred.fromCoroutine(setup.mint()) for _ in range(4)],
                                 consumeErrors=True)
    assert [ok for ok, _ in results] == [True] * 4, results
    assert setup.issuer.discoveries() == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_exchanges_all_hear_that_the_issuer_is_down(setup: Setup) -> None:
    from twisted.internet.defer import DeferredList

    setup.issuer.down = True
    results = await DeferredList([Deferred.fromCoroutine(setup.refused()) for _ in range(3)],
                                 consumeErrors=True)
    assert [(ok, r.code) for ok, r in results] == [(True, "issuer-unavailable")] * 3
    assert setup.issuer.discoveries() == 1
