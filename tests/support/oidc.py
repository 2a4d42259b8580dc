"""A local OIDC issuer and a stand-in for GitHub Actions' ID-token endpoint, for trusted publishing.

`LocalIssuer` is a twisted.web Site on 127.0.0.1 serving, like a CI's issuer:

- `/.well-known/openid-configuration` (issuer, jwks_uri) and `/jwks` with the
  public halves of keys generated here (RSA and EC); `rotate()` replaces
  them, `down` makes both answer 500; every path fetched is recorded;
- `/_actions/token?api-version=2.0&audience=…`: GitHub Actions' protocol
  as uv speaks it (`ACTIONS_ID_TOKEN_REQUEST_URL` plus `&audience=`,
  `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answer
  `{"value": "<JWT>"}`), signing `job_claims` for the audience asked.

`token()` signs any claims with any of its keys, or with none (`alg: none`),
so tests can forge what an attacker would. `tls_files()` makes a test CA and
a leaf for 127.0.0.1 (`CA:FALSE`, an IP SAN), as uv's TLS stack wants.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support import reactor

REQUEST_TOKEN = "actions-request-token-for-tests"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        document: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**document, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return bytes(self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def new_key(algorithm: str = "RS256") -> SigningKey:
    private: Any = (ec.generate_private_key(ec.SECP256R1()) if algorithm.startswith("ES")
                    else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return SigningKey(uuid.uuid4().hex[:16], algorithm, private)


class _Answer(Resource):
    isLeaf = True

    def __init__(self, issuer: LocalIssuer) -> None:
        super().__init__()
        self._issuer = issuer

    def render_GET(self, request: Any) -> bytes:
        issuer = self._issuer
        path = request.path.decode()
        issuer.fetched.append(path)
        request.setHeader(b"Content-Type", b"application/json")
        if path == "/_actions/token":
            return self._ci_token(request)
        if issuer.down:
            request.setResponseCode(500)
            return b'{"error": "down"}'
        if path == "/.well-known/openid-configuration":
            return json.dumps({"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                               "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
                              ).encode()
        if path == "/jwks":
            return json.dumps({"keys": [k.jwk() for k in issuer.keys]}).encode()
        request.setResponseCode(404)
        return b"{}"

    def _ci_token(self, request: Any) -> bytes:
        issuer = self._issuer
        scheme, _, credential = (request.getHeader(b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or credential != REQUEST_TOKEN.encode() \
                or request.args.get(b"api-version") != [b"2.0"]:
            request.setResponseCode(401)
            return b'{"message": "bad request token"}'
        audience = request.args.get(b"audience", [b""])[0].decode()
        issuer.audiences.append(audience)
        # A fresh token each time, as a CI job gets (its own jti and times).
        now = int(time.time())
        claims = {**issuer.job_claims, "aud": audience, "jti": uuid.uuid4().hex, "iat": now,
                  "nbf": now, "exp": now + 300}
        return json.dumps({"value": issuer.token(claims)}).encode()


@dataclass
class LocalIssuer:
    port: Any = None
    keys: list[SigningKey] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    audiences: list[str] = field(default_factory=list)
    down: bool = False
    # What the CI stand-in signs (plus the audience the client asks for).
    job_claims: dict[str, Any] = field(default_factory=dict)

    url: str = ""

    @property
    def ci_token_url(self) -> str:
        """ACTIONS_ID_TOKEN_REQUEST_URL: with a query already, as GitHub's has."""
        return f"{self.url}/_actions/token?api-version=2.0"

    def rotate(self, algorithm: str = "RS256") -> SigningKey:
        """Replace every key by a new one (the old kid is no longer published)."""
        key = new_key(algorithm)
        self.keys[:] = [key]
        return key

    def token(self, claims: dict[str, Any], key: SigningKey | None = None,
              headers: dict[str, Any] | None = None) -> str:
        key = key or self.keys[0]
        return jwt.encode(claims, key.private, algorithm=key.algorithm,
                          headers={"kid": key.kid, **(headers or {})})

    def issuer_config(self, kind: str = "github") -> dict[str, Any]:
        return {"url": self.url, "kind": kind, "timeout": "5s"}

    def discoveries(self) -> int:
        return self.fetched.count("/.well-known/openid-configuration")

    async def stop(self) -> None:
        """Stop listening (then connections are refused); safe to call twice."""
        if self.port.connected:
            await self.port.stopListening()


def start_issuer() -> LocalIssuer:
    issuer = LocalIssuer(keys=[new_key()])
    issuer.port = reactor.listenTCP(0, Site(_Answer(issuer)), interface="127.0.0.1")
    issuer.url = f"http://127.0.0.1:{issuer.port.getHost().port}"
    return issuer


def github_claims(issuer: LocalIssuer, *, repository: str = "acme/tools",
                  workflow: str = "release.yml", ref: str = "refs/tags/v1.0",
                  environment: str | None = None, audience: str = "pypireg",
                  now: float | None = None, lifetime: int = 300, **extra: Any
                  ) -> dict[str, Any]:
    """The claims of a GitHub Actions job's ID token, as GitHub issues them."""
    now = time.time() if now is None else now
    claims = {
        "iss": issuer.url, "aud": audience, "jti": uuid.uuid4().hex,
        "iat": int(now), "nbf": int(now), "exp": int(now) + lifetime,
        "sub": f"repo:{repository}:ref:{ref}", "repository": repository,
        "repository_owner": repository.split("/")[0], "repository_owner_id": "4242",
        "job_workflow_ref": f"{repository}/.github/workflows/{workflow}@{ref}",
        "workflow_ref": f"{repository}/.github/workflows/{workflow}@{ref}",
        "ref": ref, "sha": "0123456789abcdef0123456789abcdef01234567",
        "run_id": "987654", "run_attempt": "1", "event_name": "push",
    }
    if environment is not None:
        claims["environment"] = environment
    return {**claims, **extra}


def gitlab_claims(issuer: LocalIssuer, *, project_path: str = "acme/tools",
                  ci_config_path: str = ".gitlab-ci.yml", ref: str = "v1.0",
                  environment: str | None = None, audience: str = "pypireg",
                  now: float | None = None, lifetime: int = 300, **extra: Any
                  ) -> dict[str, Any]:
    """The claims of a GitLab CI job's ID token (`id_tokens:`)."""
    now = time.time() if now is None else now
    host = issuer.url.split("://", 1)[1]
    claims = {
        "iss": issuer.url, "aud": audience, "jti": uuid.uuid4().hex,
        "iat": int(now), "nbf": int(now), "exp": int(now) + lifetime,
        "sub": f"project_path:{project_path}:ref_type:tag:ref:{ref}",
        "project_path": project_path, "namespace_path": project_path.rsplit("/", 1)[0],
        "ci_config_ref_uri": f"{host}/{project_path}//{ci_config_path}@refs/tags/{ref}",
        "ref": ref, "ref_type": "tag", "sha": "fedcba9876543210fedcba9876543210fedcba98",
        "pipeline_id": "4711", "job_id": "99",
    }
    if environment is not None:
        claims["environment"] = environment
    return {**claims, **extra}


@dataclass(frozen=True)
class TlsFiles:
    ca: Path      # the test CA's certificate: SSL_CERT_FILE, twine's --cert
    cert: Path    # the leaf for 127.0.0.1 (CA:FALSE, IP SAN)
    key: Path

    def listen(self, port: int) -> str:
        """A Twisted `ssl:` endpoint string serving the leaf on 127.0.0.1."""
        return (f"ssl:{port}:interface=127.0.0.1:privateKey={self.key}:"
                f"certKey={self.cert}")


def tls_files(folder: Path) -> TlsFiles:
    """A CA and a leaf it signed for 127.0.0.1 and localhost, made here for one test run."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypireg test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return files
