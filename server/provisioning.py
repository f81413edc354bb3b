"""Terminal provisioning and revocation: one-time enrolment tokens → a registered terminal with a client certificate.

The flow (``deploy/README.md`` gives it step by step):

1. an operator issues a one-time token for one car (:func:`issue_token`), naming the car's VIN when the office knows
   it (the terminal is then bound to that car from the start: :mod:`server.car_binding`); only its SHA-256 is stored;
2. the terminal, holding its own signing key and TLS key, sends an :class:`EnrolmentRequest` signed by the signing
   key, carrying the token, its public key and a CSR for ``CN=<terminal>`` (:func:`provision`);
3. in ONE transaction the token is spent, the terminal is bound to its car and school, its key is recorded as the
   key of its chains from chain 1, and the CA's certificate for it is stored; the answer is built after COMMIT.

Crash safety: before COMMIT nothing is spent or registered (the terminal retries with the same token); after
COMMIT a retry of the same token by the same signing key and TLS key gets the stored certificate back (the answer was
lost, not the enrolment); anyone else presenting a spent token is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from firmware_protocols import envelope
from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import check_national_id, is_vin
from firmware_protocols.messages import EnrolmentRequest
from server.models import (
    TERMINAL_ACTIVE,
    TERMINAL_REVOKED,
    EnrolmentToken,
    School,
    Terminal,
    TerminalCertificate,
    TerminalKey,
)
from server.pki import CertificateAuthority, CertificateError, parse_csr

MAX_TOKEN_TTL = timedelta(days=7)
#: A request stamped further than this from the server's clock is refused (a captured request cannot be kept).
MAX_REQUEST_SKEW = timedelta(hours=1)


class ProvisioningRefused(Exception):
    """A request we refuse: ``reason`` is the machine-readable code, ``status`` the HTTP status to answer."""

    def __init__(self, reason: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


@dataclass(frozen=True, slots=True)
class Provisioned:
    terminal: str
    key_id: str
    certificate: str
    certificate_serial: str
    not_after: datetime
    replayed: bool = False  # the same enrolment asked again after its answer was lost


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def issue_token(s: Session, *, terminal: str, car_plate: str, school: str, ttl: timedelta,
                now: datetime, vin: str | None = None) -> tuple[str, EnrolmentToken]:  # fmt: skip
    """A fresh one-time token for one car (shown once; only its hash is kept); ``vin``: the car's VIN if known."""
    check_national_id(terminal, "terminal")
    if vin is not None and not is_vin(vin):
        raise ProvisioningRefused("bad_vin", f"{vin!r} is not a VIN (17 characters 0-9A-Z without I, O, Q)", 422)
    if not timedelta(minutes=1) <= ttl <= MAX_TOKEN_TTL:
        raise ProvisioningRefused("bad_ttl", f"a token lives between 1 minute and {MAX_TOKEN_TTL}", 422)
    if s.get(School, school) is None:
        raise ProvisioningRefused("unknown_school", f"no school {school}", 404)
    existing = s.get(Terminal, terminal)
    if existing is not None:
        raise ProvisioningRefused("terminal_exists", f"terminal {terminal} is already registered", 409)
    token = secrets.token_urlsafe(24)
    row = EnrolmentToken(token_sha256=token_hash(token), terminal_id=terminal, car_plate=car_plate, school_id=school,
                         created_at=now, expires_at=now + ttl, used_at=None, vin=vin)  # fmt: skip
    s.add(row)
    return token, row


def provision(s: Session, ca: CertificateAuthority, raw_request: str | bytes, now: datetime) -> Provisioned:
    """Check an enrolment request and register the terminal (caller commits, then answers)."""
    try:
        request = EnrolmentRequest.parse_and_verify(raw_request)
    except ProtocolError as exc:
        raise ProvisioningRefused(exc.reason, f"enrolment request refused: {exc}", 422) from exc
    if abs(request.at - now) > MAX_REQUEST_SKEW:
        raise ProvisioningRefused("stale_request", "the request's time is too far from the server's clock", 422)
    row = s.get(EnrolmentToken, token_hash(request.token))
    if row is None:
        raise ProvisioningRefused("unknown_token", "no such enrolment token", 403)
    if row.terminal_id != request.terminal:
        raise ProvisioningRefused("terminal_mismatch", "the token was issued for another terminal", 403)
    key = envelope.public_key_from_pem(request.public_key)
    key_id = envelope.key_id(key)
    try:
        csr = parse_csr(request.csr, request.terminal)
    except CertificateError as exc:
        raise ProvisioningRefused(exc.reason, str(exc), 422) from exc
    if row.used_at is not None:
        return _replayed(s, row, key_id, csr)
    if row.expires_at <= now:
        raise ProvisioningRefused("token_expired", "the enrolment token has expired", 403)
    if s.get(Terminal, request.terminal) is not None:
        raise ProvisioningRefused("terminal_exists", f"terminal {request.terminal} is already registered", 409)

    issued = ca.sign_csr(request.csr, request.terminal, now=now)
    serial = serial_hex(issued.serial)
    spent = s.execute(
        update(EnrolmentToken)
        .where(EnrolmentToken.token_sha256 == row.token_sha256, EnrolmentToken.used_at.is_(None))
        .values(used_at=now, used_key_id=key_id, certificate_serial=serial)
    )
    if getattr(spent, "rowcount", 1) != 1:  # another request spent it between our read and this write
        raise ProvisioningRefused("token_used", "the enrolment token has been used", 409)
    pem = envelope.public_key_to_pem(key)
    s.add(Terminal(id=request.terminal, car_plate=row.car_plate, school_id=row.school_id, public_key=pem,
                   key_id=key_id, status=TERMINAL_ACTIVE, registered_at=now, last_seen_at=None,
                   vin=row.vin))  # fmt: skip
    s.flush()
    s.add(TerminalKey(terminal_id=request.terminal, key_id=key_id, public_key=pem, from_chain=1, added_at=now))
    s.add(TerminalCertificate(serial=serial, terminal_id=request.terminal, pem=issued.pem.decode(), issued_at=now,
                              not_after=issued.not_after, revoked_at=None))  # fmt: skip
    return Provisioned(request.terminal, key_id, issued.pem.decode(), serial, issued.not_after)


def _replayed(s: Session, row: EnrolmentToken, key_id: str, csr: x509.CertificateSigningRequest) -> Provisioned:
    cert_row = s.get(TerminalCertificate, row.certificate_serial) if row.certificate_serial else None
    if cert_row is None or row.used_key_id != key_id or cert_row.revoked_at is not None:
        raise ProvisioningRefused("token_used", "the enrolment token has been used", 409)
    cert = x509.load_pem_x509_certificate(cert_row.pem.encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != csr.public_key().public_bytes(*spki):
        raise ProvisioningRefused("token_used", "the enrolment token has been used", 409)
    return Provisioned(row.terminal_id, key_id, cert_row.pem, cert_row.serial, cert_row.not_after, replayed=True)


def revoke(s: Session, terminal_id: str, reason: str, now: datetime) -> Terminal:
    """Revoke a terminal: its certificates join the CRL and its records are refused from ``now`` on."""
    t = s.get(Terminal, terminal_id)
    if t is None:
        raise ProvisioningRefused("unknown_terminal", f"no terminal {terminal_id}", 404)
    if t.status != TERMINAL_REVOKED:
        t.status, t.revoked_at, t.revoke_reason = TERMINAL_REVOKED, now, reason
    for cert in s.scalars(select(TerminalCertificate).where(TerminalCertificate.terminal_id == terminal_id)):
        if cert.revoked_at is None:
            cert.revoked_at = now
    return t


def revoked_certificates(s: Session) -> list[tuple[int, datetime]]:
    rows = s.execute(
        select(TerminalCertificate.serial, TerminalCertificate.revoked_at).where(
            TerminalCertificate.revoked_at.is_not(None)
        )
    ).all()
    return [(int(serial, 16), at) for serial, at in rows if at is not None]


def revoked_terminals(s: Session) -> list[str]:
    return list(s.scalars(select(Terminal.id).where(Terminal.status == TERMINAL_REVOKED).order_by(Terminal.id)))
