"""The local cluster's own certificate authority: one CA, and server certificates for its loopback APIs.

Built with `cryptography` (no hand-made ASN.1). The shape follows what a real API server's certificates look
like and what the clients insist on (see kubectl-fidelity.md §1): a CA with BasicConstraints CA:TRUE and
keyCertSign, and leaves for serverAuth whose SANs carry both `localhost` and the IP the URL names (Go's TLS
refuses a certificate that relies on its Common Name, and one without the IP SAN for an IP URL).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "runnerconf-local-ca"
# Go checks the validity window against the client's clock: start a little in the past.
_BACKDATE = datetime.timedelta(minutes=5)
_LIFETIME = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServerCert:
    """A server certificate and its key on disk (the key file is 0600)."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


@dataclass(frozen=True)
class LocalCA:
    """A CA whose certificate clients trust through a kubeconfig's certificate-authority-data or a CA file."""

    directory: Path
    _key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, directory: Path) -> LocalCA:
        """A fresh CA for one cluster start; its key never leaves this process (only the cert is written)."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, key, cert)
        _write(ca.cert_file, ca.pem, 0o644)
        return ca

    def issue(self, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> ServerCert:
        """A serverAuth certificate for `hosts` (DNS names and IP addresses), written as NAME.crt/NAME.key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        pair = ServerCert(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        _write(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write(pair.key_file, key_pem, 0o600)
        return pair


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
