"""The project's certificate authority: the broker's server certificate, terminals' and workers' client certificates.

Pure functions over ``cryptography`` objects, plus :class:`CertificateAuthority` which keeps the CA key and
certificate in a directory (key owner-only). TLS keys are ECDSA P-256 (what every MQTT stack and OpenSSL build
speaks); the records' signing keys are a different key (Ed25519, :mod:`agent.keys`) and never leave the terminal.

Identities: a terminal's client certificate has CN = its 16-character terminal id, which the broker takes as the
MQTT username (``use_identity_as_username``) for the per-terminal ACL; server workers have CNs that cannot be
terminal ids (``jiapei-server``…). The CA refuses to issue a terminal certificate whose CSR names anything else.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
CRL_FILE = "crl.pem"

TERMINAL_CERT_DAYS = 397
WORKER_CERT_DAYS = 397
CA_DAYS = 3650


class CertificateError(ValueError):
    """A CSR or certificate we refuse, with a short machine-readable reason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret owner-only (0600), atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def check_private_file(path: Path) -> None:
    """Refuse a secret that others can read (a key copied around with the wrong mode)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def parse_csr(pem: str | bytes, expected_cn: str) -> x509.CertificateSigningRequest:
    """A CSR whose self-signature verifies and whose only subject is ``CN=expected_cn``."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate request: {exc}", "bad_csr") from exc
    if not csr.is_signature_valid:
        raise CertificateError("the CSR's signature does not verify", "bad_csr")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != expected_cn or len(csr.subject) != 1:
        raise CertificateError(f"the CSR must name exactly CN={expected_cn}", "csr_identity_mismatch")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CertificateError("the CSR's key must be ECDSA P-256", "bad_csr_key")
    return csr


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    serial: int
    not_after: datetime
    pem: bytes


class CertificateAuthority:
    """The CA key and certificate in ``directory`` (``ca.key`` 0600, ``ca.crt``)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, directory: Path) -> None:
        self.key, self.cert, self.directory = key, cert, directory

    @classmethod
    def create(cls, directory: Path, name: str = "jiapei CA", now: datetime | None = None) -> CertificateAuthority:
        now = now or datetime.now(UTC)
        if (directory / CA_KEY_FILE).exists():
            raise FileExistsError(f"{directory / CA_KEY_FILE} exists: refusing to replace a CA")
        key = new_tls_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)  # fmt: skip
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(directory / CA_KEY_FILE, key_pem(key))
        write_public(directory / CA_CERT_FILE, cert_pem(cert))
        return cls(key, cert, directory)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        key_path = directory / CA_KEY_FILE
        check_private_file(key_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an ECDSA key")
        cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        return cls(key, cert, directory)

    @property
    def cert_file(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def crl_file(self) -> Path:
        return self.directory / CRL_FILE

    def _builder(self, cn: str, public_key: ec.EllipticCurvePublicKey, days: int, now: datetime,
                 not_before: datetime | None = None) -> x509.CertificateBuilder:  # fmt: skip
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )

    def issue_client(self, cn: str, public_key: ec.EllipticCurvePublicKey, *, days: int = TERMINAL_CERT_DAYS,
                     now: datetime | None = None, not_before: datetime | None = None) -> IssuedCertificate:  # fmt: skip
        now = now or datetime.now(UTC)
        cert = (
            self._builder(cn, public_key, days, now, not_before)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(cert.serial_number, cert.not_valid_after_utc, cert_pem(cert))

    def issue_server(self, hostnames: list[str], *, days: int = WORKER_CERT_DAYS,
                     now: datetime | None = None) -> tuple[bytes, bytes]:  # fmt: skip
        """A broker's server certificate for these names/addresses: (key PEM, certificate PEM)."""
        now = now or datetime.now(UTC)
        key = new_tls_key()
        alt: list[x509.GeneralName] = []
        for h in hostnames:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                alt.append(x509.DNSName(h))
        cert = (
            self._builder(hostnames[0], key.public_key(), days, now)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return key_pem(key), cert_pem(cert)

    def sign_csr(self, csr_pem: str | bytes, expected_cn: str, *, days: int = TERMINAL_CERT_DAYS,
                 now: datetime | None = None) -> IssuedCertificate:  # fmt: skip
        csr = parse_csr(csr_pem, expected_cn)
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # noqa: S101 - parse_csr checked it
        return self.issue_client(expected_cn, key, days=days, now=now)

    def crl(self, revoked: list[tuple[int, datetime]], now: datetime | None = None) -> bytes:
        """A CRL naming these (serial, revoked at) pairs, valid for a week (re-issued on every revocation)."""
        now = now or datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + timedelta(days=7))
        )
        for serial, at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def write_crl(self, revoked: list[tuple[int, datetime]], now: datetime | None = None) -> Path:
        write_public(self.crl_file, self.crl(revoked, now))
        return self.crl_file

