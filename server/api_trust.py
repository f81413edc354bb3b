"""The trust endpoints of the operator API: enrolment tokens, terminal provisioning, revocation, chain audit.

``POST /api/enrolments`` (regulator, or a school admin for its own school's cars) issues a one-time token for one
car; ``POST /api/provision`` is what a terminal calls with it (no bearer: the token and the request's signature are
its credentials; failures are rate-limited per address); ``POST /api/terminals/{id}/revoke`` (regulator) revokes;
``POST /api/terminals/{id}/vin`` (regulator) corrects the VIN of the car a terminal is bound to (car_binding);
``GET /api/terminals/{id}/audit`` (regulator, the terminal's school admin) re-verifies every stored record of a
terminal against the key history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from server.api_deps import check_id, own_school_only, visible_terminal
from server.audit import audit_terminal
from server.auth import Regulator, Staff
from server.broker import BrokerControl
from server.car_binding import correct_vin
from server.clock import utcnow
from server.models import TrainingSession
from server.pki import CertificateAuthority
from server.provisioning import (
    ProvisioningRefused,
    issue_token,
    provision,
    revoke,
    revoked_certificates,
    revoked_terminals,
)
from webguard import RateLimiter

log = logging.getLogger(__name__)

#: ISO 3779: 17 characters, capital letters and digits without I, O, Q (``firmware_protocols.identifiers.is_vin``).
VIN_PATTERN = r"^[0-9A-HJ-NPR-Z]{17}$"
#: Refused enrolment attempts per address (10 per 5 minutes) before it must wait: token guessing is slow.
PROVISION_FAILURE_LIMIT = (10, 300.0)


@dataclass
class Trust:
    """What the trust endpoints need beyond the database (None: provisioning is not configured here)."""

    ca: CertificateAuthority
    broker: BrokerControl | None
    mqtt_host: str
    mqtt_port: int


class EnrolmentCreate(BaseModel):
    terminal: str = Field(min_length=16, max_length=16)
    car_plate: str = Field(min_length=1, max_length=32)
    school: str = Field(min_length=1, max_length=16)
    ttl_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    #: the car's VIN from its papers: binds the terminal to this car from the start (else bound on first sight)
    vin: str | None = Field(default=None, pattern=VIN_PATTERN)


class VinCorrection(BaseModel):
    vin: str = Field(pattern=VIN_PATTERN)
    reason: str = Field(min_length=1, max_length=500)


class VinCorrected(BaseModel):
    terminal: str
    vin: str
    old_vin: str | None
    sessions_judged: int


class EnrolmentIssued(BaseModel):
    token: str
    terminal: str
    expires_at: datetime


class ProvisionBody(BaseModel):
    request: str = Field(min_length=1, max_length=16 * 1024)


class ProvisionAnswer(BaseModel):
    terminal: str
    key_id: str
    certificate: str
    certificate_serial: str
    not_after: datetime
    ca_certificate: str
    mqtt_host: str
    mqtt_port: int


class RevokeBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class RevokeAnswer(BaseModel):
    terminal: str
    status: str
    revoked_at: datetime | None
    broker_reloaded: bool
    connection_closed: bool


def _trust(request: Request) -> Trust:
    trust: Trust | None = request.app.state.trust
    if trust is None:
        raise HTTPException(503, "provisioning is not configured on this server (set JIAPEI_PKI_DIR)")
    return trust


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def register(admin_dependency: Any) -> APIRouter:
    """A router for one app, with that app's admin dependency and its own failure counter."""
    router = APIRouter(prefix="/api")
    failures = RateLimiter(*PROVISION_FAILURE_LIMIT)

    @router.post("/enrolments", status_code=201, tags=["terminals"])
    def create_enrolment(body: EnrolmentCreate, request: Request, p: Staff) -> EnrolmentIssued:
        own_school_only(p, body.school)
        check_id(body.terminal, "terminal")
        now = utcnow()
        with request.app.state.session_factory() as s, s.begin():
            try:
                token, row = issue_token(s, terminal=body.terminal, car_plate=body.car_plate, school=body.school,
                                         ttl=timedelta(minutes=body.ttl_minutes), now=now, vin=body.vin)  # fmt: skip
            except ProvisioningRefused as exc:
                raise HTTPException(exc.status, {"reason": exc.reason, "message": str(exc)}) from exc
            except ValueError as exc:
                raise HTTPException(422, {"reason": "bad_terminal_id", "message": str(exc)}) from exc
            expires = row.expires_at
        log.info("enrolment token issued for terminal %s (%s), expires %s", body.terminal, body.car_plate, expires)
        return EnrolmentIssued(token=token, terminal=body.terminal, expires_at=expires)

    @router.post("/provision", status_code=201, tags=["terminals"])
    def provision_terminal(body: ProvisionBody, request: Request) -> ProvisionAnswer:
        trust = _trust(request)
        who = _client(request)
        wait = failures.blocked(who)
        if wait:
            raise HTTPException(429, {"reason": "rate_limited", "message": "too many refused enrolments"},
                                headers={"Retry-After": str(int(wait) + 1)})  # fmt: skip
        try:
            with request.app.state.session_factory() as s, s.begin():
                done = provision(s, trust.ca, body.request, utcnow())
            # COMMIT returned: the terminal exists and its certificate is stored; only now is it answered.
        except ProvisioningRefused as exc:
            failures.hit(who)
            log.warning("enrolment refused from %s: %s (%s)", who, exc.reason, exc)
            raise HTTPException(exc.status, {"reason": exc.reason, "message": str(exc)}) from exc
        log.info("terminal %s provisioned (key %s, certificate %s)%s", done.terminal, done.key_id,
                 done.certificate_serial, " again: answer re-sent" if done.replayed else "")  # fmt: skip
        hook = request.app.state.on_people_change
        if hook is not None and not done.replayed:
            with request.app.state.session_factory() as s:
                from server.models import Terminal

                t = s.get(Terminal, done.terminal)
                school = t.school_id if t else None
            if school:
                try:
                    hook(school)
                except Exception:  # noqa: BLE001 - the roster is republished on the next change
                    log.exception("publishing rosters of school %s failed", school)
        return ProvisionAnswer(terminal=done.terminal, key_id=done.key_id, certificate=done.certificate,
                               certificate_serial=done.certificate_serial, not_after=done.not_after,
                               ca_certificate=trust.ca.cert_file.read_text(), mqtt_host=trust.mqtt_host,
                               mqtt_port=trust.mqtt_port)  # fmt: skip

    @router.post("/terminals/{terminal_id}/revoke", dependencies=[admin_dependency], tags=["terminals"])
    def revoke_terminal(terminal_id: str, body: RevokeBody, request: Request) -> RevokeAnswer:
        with request.app.state.session_factory() as s, s.begin():
            try:
                t = revoke(s, terminal_id, body.reason, utcnow())
            except ProvisioningRefused as exc:
                raise HTTPException(exc.status, {"reason": exc.reason, "message": str(exc)}) from exc
            status, revoked_at = t.status, t.revoked_at
        # COMMIT returned: ingest refuses its records from here on. Now the broker (re-done at every start).
        log.warning("terminal %s revoked: %s", terminal_id, body.reason)
        reloaded, kicked = sync_broker(request.app.state.session_factory, request.app.state.trust, kick=terminal_id)
        return RevokeAnswer(terminal=terminal_id, status=status, revoked_at=revoked_at, broker_reloaded=reloaded,
                            connection_closed=kicked)  # fmt: skip

    @router.post("/terminals/{terminal_id}/vin", tags=["terminals"])
    def correct_terminal_vin(terminal_id: str, body: VinCorrection, request: Request, p: Regulator) -> VinCorrected:
        """Correct the car a terminal is bound to (a first-sight binding found wrong); every session of the terminal
        is judged again. Not for moving a box to another car: that is a new registration."""
        from server.ledger import Ledger  # as server.api.decide does

        with request.app.state.session_factory() as s, s.begin():
            try:
                old = correct_vin(s, terminal_id, body.vin, body.reason.strip(), p.name[:64], utcnow())
            except LookupError as exc:
                raise HTTPException(404, {"reason": "unknown_terminal", "message": str(exc)}) from exc
            sessions = set(s.scalars(select(TrainingSession.id).where(TrainingSession.terminal_id == terminal_id)))
        # COMMIT returned: the new binding holds; now the verdicts follow it.
        ledger = Ledger(request.app.state.session_factory, request.app.state.policy, utcnow)
        ledger.recompute_students(ledger.rejudge_sessions(sessions))
        return VinCorrected(terminal=terminal_id, vin=body.vin, old_vin=old, sessions_judged=len(sessions))

    @router.get("/terminals/{terminal_id}/audit", tags=["terminals"])
    def audit(terminal_id: str, request: Request, p: Staff) -> dict[str, Any]:
        with request.app.state.session_factory() as s:
            visible_terminal(s, p, terminal_id)
            report = audit_terminal(s, terminal_id)
        if report is None:
            raise HTTPException(404, "no such terminal")
        return report

    return router


def sync_broker(session_factory: Any, trust: Trust | None, kick: str | None = None) -> tuple[bool, bool]:
    """Make the broker's CRL and ACL say what the database says; optionally close one identity's connection."""
    if trust is None or trust.broker is None:
        return False, False
    with session_factory() as s:
        certs, terminals = revoked_certificates(s), revoked_terminals(s)
    reloaded = trust.broker.apply(certs, terminals)
    kicked = trust.broker.kick(kick) if kick and reloaded else False
    return reloaded, kicked
