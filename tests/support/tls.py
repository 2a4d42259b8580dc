"""TLS material for tests: a throw-away CA and a certificate for 127.0.0.1 it signed."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl


def certificate_files(folder: Path) -> tuple[Path, Path]:
    """(server.pem: the key and certificate for 127.0.0.1, ca.pem: the CA that signed it)."""
    now = datetime.now(UTC)

    def builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + timedelta(days=1))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypireg test CA")])
    ca = (builder(ca_name, ca_name, ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                    ca_name, key)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    server = folder / "server.pem"
    server.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()) + leaf.public_bytes(pem))
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    return server, ca_file


def certificates(folder: Path) -> tuple[Any, Path]:
    """Server TLS options for 127.0.0.1 and the PEM file of the CA that signed them."""
    server, ca_file = certificate_files(folder)
    return ssl.PrivateCertificate.loadPEM(server.read_bytes()).options(), ca_file
