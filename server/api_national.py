"""National-protocol terminals in the operator API: register one (terminal ↔ car ↔ school ↔ RSA certificate), read it,
re-verify its stored envelopes.

Trust: a JT/T 808 training terminal counts nothing until an operator has registered it here with its X.509
certificate (or bare RSA-2048 public key) in PEM, made on the terminal: ``POST /api/national-terminals`` (admin).
The gateway then answers its 0x0100 register (the header's number must be registered, the plate must be the car's)
and its 0x0102 authentication (the timestamp signed with that key), and verifies every training envelope against it.
A certificate whose subject does not name the terminal number is refused: the number the terminal uses and the key
that signs for it are bound once, by a person, here. The same ``terminals`` / ``terminal_keys`` rows as our own
agents' hold the binding, so every view, revocation and the ledger treat both kinds of terminal alike.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from firmware_protocols import envelope
from firmware_protocols.errors import MalformedMessage, ProtocolError
from firmware_protocols.identifiers import check_national_id
from firmware_protocols.jt808.signing import verify_digest
from firmware_protocols.jt808.training_platform import SIGNATURE_SIZE
from server.clock import utcnow
from server.models import (
    KEY_FROM_TERMINAL,
    TERMINAL_ACTIVE,
    NationalEnvelope,
    NationalTerminal,
    RawRecord,
    School,
    Terminal,
    TerminalKey,
)

log = logging.getLogger(__name__)

#: The training protocol signs with RSA-2048 (256-byte signatures); nothing else is registered.
RSA_BITS = 8 * SIGNATURE_SIZE
#: Header numbers are BCD[8]: at most 16 decimal digits, kept left-padded with zeros.
PHONE_DIGITS = 16
MAX_FAILURES_LISTED = 100


class NationalRefused(Exception):
    """A registration we refuse: ``reason`` is the machine-readable code, ``status`` the HTTP status."""

    def __init__(self, reason: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


@dataclass(frozen=True, slots=True)
class RegisteredNational:
    terminal: str
    phone: str
    key_id: str
    certificate_subject: str | None
    key_origin: str


def normalise_phone(phone: str) -> str:
    """The header number as the codec shows it: 16 hex digits of the BCD bytes (decimal digits, left-padded)."""
    if not phone.isdigit() or not 1 <= len(phone) <= PHONE_DIGITS:
        raise NationalRefused("bad_phone", f"header number must be 1-{PHONE_DIGITS} digits, got {phone!r}")
    return phone.rjust(PHONE_DIGITS, "0")


def load_terminal_key(pem: str, terminal: str, now: datetime) -> tuple[rsa.RSAPublicKey, str | None, str | None]:
    """(RSA public key, certificate PEM or None, certificate subject or None) from a certificate or key PEM.

    A certificate must name ``terminal`` in its subject (CN or serialNumber) and be valid at ``now``."""
    text = pem.strip()
    if "BEGIN CERTIFICATE" in text:
        try:
            cert = x509.load_pem_x509_certificate(text.encode())
        except ValueError as exc:
            raise NationalRefused("bad_certificate", f"not a PEM X.509 certificate: {exc}") from exc
        names = [
            str(a.value)
            for oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER)
            for a in cert.subject.get_attributes_for_oid(oid)
        ]
        if terminal not in names:
            raise NationalRefused(
                "certificate_terminal_mismatch", f"the certificate names {names or 'nobody'}, not terminal {terminal}"
            )
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise NationalRefused("certificate_expired", "the certificate is not valid now")
        key: Any = cert.public_key()
        subject: str | None = cert.subject.rfc4514_string()
        cert_pem: str | None = text + "\n"
    else:
        try:
            key = envelope.public_key_from_pem(text)
        except ProtocolError as exc:
            raise NationalRefused("bad_public_key", f"not a PEM public key: {exc}") from exc
        subject = cert_pem = None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RSA_BITS:
        raise NationalRefused("bad_key", f"the training protocol needs an RSA-{RSA_BITS} key")
    return key, cert_pem, subject


def register_national(
    s: Session, *, terminal: str, phone: str, car_plate: str, school: str, pem: str, now: datetime
) -> RegisteredNational:
    """Bind a national terminal to its car, school and key in ONE transaction (the caller commits, then answers)."""
    try:
        check_national_id(terminal, "terminal")
    except MalformedMessage as exc:
        raise NationalRefused("bad_terminal_id", str(exc)) from exc
    phone = normalise_phone(phone)
    key, cert_pem, subject = load_terminal_key(pem, terminal, now)
    if s.get(School, school) is None:
        raise NationalRefused("unknown_school", f"no school {school}", 404)
    if s.get(Terminal, terminal) is not None:
        raise NationalRefused("terminal_exists", f"terminal {terminal} is already registered", 409)
    if s.scalar(select(NationalTerminal.terminal_id).where(NationalTerminal.phone == phone)) is not None:
        raise NationalRefused("phone_exists", f"header number {phone} belongs to another terminal", 409)
    key_pem = envelope.public_key_to_pem(key)
    key_id = envelope.key_id(key)
    s.add(
        Terminal(
            id=terminal,
            car_plate=car_plate,
            school_id=school,
            public_key=key_pem,
            key_id=key_id,
            status=TERMINAL_ACTIVE,
            registered_at=now,
            last_seen_at=None,
        )
    )
    s.flush()
    s.add(TerminalKey(terminal_id=terminal, key_id=key_id, public_key=key_pem, from_chain=1, added_at=now))
    s.add(
        NationalTerminal(
            terminal_id=terminal,
            phone=phone,
            certificate=cert_pem,
            key_origin=KEY_FROM_TERMINAL,
            last_auth_timestamp=None,
            registered_at=now,
        )
    )
    return RegisteredNational(terminal, phone, key_id, subject, KEY_FROM_TERMINAL)


def audit_national(s: Session, terminal_id: str) -> dict[str, Any] | None:
    """Re-verify the RSA signature of every stored envelope of a national terminal against its registered key."""
    terminal = s.get(Terminal, terminal_id)
    national = s.get(NationalTerminal, terminal_id)
    if terminal is None or national is None:
        return None
    key = envelope.public_key_from_pem(terminal.public_key)
    failures: list[dict[str, Any]] = []
    total = verified = 0
    rows = s.execute(
        select(RawRecord.chain, RawRecord.seq, RawRecord.raw, RawRecord.hash)
        .join(NationalEnvelope, NationalEnvelope.raw_record_id == RawRecord.id)
        .where(RawRecord.terminal_id == terminal_id)
        .order_by(RawRecord.id)
    )
    for chain, seq, raw, digest in rows:
        total += 1
        problem = None
        if hashlib.sha256(raw).hexdigest() != digest:
            problem = "hash_mismatch"
        elif not isinstance(key, rsa.RSAPublicKey) or len(raw) <= SIGNATURE_SIZE:
            problem = "bad_signature"
        else:
            try:
                verify_digest(hashlib.sha256(raw[:-SIGNATURE_SIZE]).digest(), raw[-SIGNATURE_SIZE:], key)
            except ProtocolError as exc:
                problem = exc.reason
        if problem is None:
            verified += 1
        elif len(failures) < MAX_FAILURES_LISTED:
            failures.append({"chain": chain, "seq": seq, "problem": problem})
    return {
        "terminal": terminal_id,
        "status": terminal.status,
        "phone": national.phone,
        "key_origin": national.key_origin,
        "envelopes": total,
        "verified": verified,
        "failures": failures,
    }


class NationalCreate(BaseModel):
    terminal: str = Field(min_length=16, max_length=16, description="16-character national terminal number")
    phone: str | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="the number in its frame headers (default: the terminal number)",
    )
    car_plate: str = Field(min_length=1, max_length=32)
    school: str = Field(min_length=1, max_length=16)
    certificate: str = Field(
        min_length=1,
        max_length=16 * 1024,
        description="the terminal's X.509 certificate (or RSA-2048 public key) in PEM",
    )


class NationalPublic(BaseModel):
    terminal: str
    phone: str
    car_plate: str
    school: str
    key_id: str
    key_origin: str
    certificate_subject: str | None
    status: str
    registered_at: datetime
    last_seen_at: datetime | None


def _public(t: Terminal, n: NationalTerminal, subject: str | None) -> NationalPublic:
    return NationalPublic(
        terminal=t.id,
        phone=n.phone,
        car_plate=t.car_plate,
        school=t.school_id,
        key_id=t.key_id,
        key_origin=n.key_origin,
        certificate_subject=subject,
        status=t.status,
        registered_at=t.registered_at,
        last_seen_at=t.last_seen_at,
    )


def _subject(n: NationalTerminal) -> str | None:
    if not n.certificate:
        return None
    return x509.load_pem_x509_certificate(n.certificate.encode()).subject.rfc4514_string()


def register(admin_dependency: Any) -> APIRouter:
    """The router, with the app's admin dependency for writes."""
    router = APIRouter(prefix="/api")

    @router.post("/national-terminals", status_code=201, dependencies=[admin_dependency])
    def create_national(body: NationalCreate, request: Request) -> NationalPublic:
        now = utcnow()
        try:
            with request.app.state.session_factory() as s, s.begin():
                done = register_national(
                    s,
                    terminal=body.terminal,
                    phone=body.phone or body.terminal,
                    car_plate=body.car_plate,
                    school=body.school,
                    pem=body.certificate,
                    now=now,
                )
            # COMMIT returned: the gateway accepts the terminal from now on.
        except NationalRefused as exc:
            log.warning("national terminal %s refused: %s (%s)", body.terminal, exc.reason, exc)
            raise HTTPException(exc.status, {"reason": exc.reason, "message": str(exc)}) from exc
        log.info(
            "national terminal %s registered (header number %s, car %s, school %s, key %s)",
            done.terminal,
            done.phone,
            body.car_plate,
            body.school,
            done.key_id,
        )
        with request.app.state.session_factory() as s:
            t, n = s.get(Terminal, done.terminal), s.get(NationalTerminal, done.terminal)
            assert t is not None and n is not None
            return _public(t, n, done.certificate_subject)

    @router.get("/national-terminals")
    def list_national(request: Request) -> list[NationalPublic]:
        with request.app.state.session_factory() as s:
            rows = s.execute(
                select(Terminal, NationalTerminal)
                .join(NationalTerminal, NationalTerminal.terminal_id == Terminal.id)
                .order_by(Terminal.id)
            ).all()
            return [_public(t, n, _subject(n)) for t, n in rows]

    @router.get("/national-terminals/{terminal_id}")
    def get_national(terminal_id: str, request: Request) -> NationalPublic:
        with request.app.state.session_factory() as s:
            t, n = s.get(Terminal, terminal_id), s.get(NationalTerminal, terminal_id)
            if t is None or n is None:
                raise HTTPException(404, "no such national terminal")
            return _public(t, n, _subject(n))

    @router.get("/national-terminals/{terminal_id}/audit")
    def audit(terminal_id: str, request: Request) -> dict[str, Any]:
        with request.app.state.session_factory() as s:
            report = audit_national(s, terminal_id)
        if report is None:
            raise HTTPException(404, "no such national terminal")
        return report

    return router
