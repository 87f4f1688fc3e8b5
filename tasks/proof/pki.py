"""The certificates and keys of a local Kubernetes API server, made fresh for each server.

One certificate authority signs the server's certificate (its addresses as IP SANs, and the names
a Pod uses for the API: ``kubernetes``, ``kubernetes.default``, ...), the admin's client certificate
(``system:masters``, which RBAC lets do anything) and, for the controller manager, its own client
certificate. A separate RSA key pair signs service-account tokens. Nothing here is kept: the files
live in the server's temporary directory and go with it.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=1)  # a proof's server lives for minutes
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                 "localhost")


@dataclass(frozen=True)
class Pki:
    """The files of one server's PKI (PEM)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path  # verifies service-account tokens
    sa_private: Path  # signs them


def _name(common: str, org: str = "") -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _issue(
    *, subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
    usage: Sequence[x509.ObjectIdentifier] = (), sans: Sequence[x509.GeneralName] = (), ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=not ca, key_cert_sign=ca, crl_sign=ca,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path, addresses: Sequence[str]) -> Pki:
    """A fresh CA, server certificate for ``addresses`` (IPs), admin client certificate and
    service-account key pair, written under ``directory`` (keys readable by this user only)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fma-release proof CA")
    ca = _issue(subject=ca_name, key=ca_key, issuer=ca_name, issuer_key=ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVICE_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)]
    server = _issue(subject=_name("kube-apiserver"), key=server_key, issuer=ca_name, issuer_key=ca_key,
                    usage=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans)
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(subject=_name("fma-release-admin", "system:masters"), key=admin_key, issuer=ca_name,
                   issuer_key=ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_public = sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    return Pki(
        ca_cert=_write(directory / "ca.crt", _pem(ca), 0o644),
        ca_key=_write(directory / "ca.key", _pem_key(ca_key)),
        server_cert=_write(directory / "apiserver.crt", _pem(server), 0o644),
        server_key=_write(directory / "apiserver.key", _pem_key(server_key)),
        admin_cert=_write(directory / "admin.crt", _pem(admin), 0o644),
        admin_key=_write(directory / "admin.key", _pem_key(admin_key)),
        sa_public=_write(directory / "sa.pub", sa_public, 0o644),
        sa_private=_write(directory / "sa.key", _pem_key(sa_key)),
    )
