"""Ingest of the national protocol (2016 training extension of JT/T 808): authenticate terminals, store their signed
training envelopes as records of the same pipeline as our agent's, and derive sessions and minutes from them.

One envelope is handled in ONE database transaction; the gateway answers the terminal "stored" (0x8001 result 0)
only after COMMIT returned. Nothing is trusted without the terminal's RSA signature verifying against the key an
operator registered for it (:mod:`server.api_national`); refusals bump a counter, and tampering raises an alarm.

How national envelopes map onto ``raw_records`` (the evidence table):

- ``raw`` is the envelope exactly as received (fields + the 256-byte signature), ``hash`` its SHA-256, ``prev`` empty:
  national records have no hash chain (domain.md, "Decisions"), each signature is verified on its own;
- chain 1 holds the 0x0203 minute records with ``seq = Beijing date ordinal × 10000 + daily sequence`` from the
  26-character record number: the record number *is* the terminal's sequence, so dedupe, gap detection (0x8205) and
  the ledger's backdating check along the chain work on it unchanged. (The envelope's packet counter is a WORD that
  wraps and restarts with a connection: kept in ``national_envelopes``, not used as a sequence.)
- chain 2 holds every other training message (logins, logouts, photos, replies) in arrival order (``seq`` = the
  terminal's next number there); they are deduped on their digest (``national_envelopes``).

Kinds are the contract's (``student_login``, ``minute``, ``face_check`` for a 0x0305 photo, ``event`` for the rest),
and the bodies carry the fields the ledger reads, so validation judges national minutes like our agent's. Facts the
national record does not carry: the fix count (a 0x0203 holds one GNSS block; a normal record from a certified
terminal with a fixed block counts as fully sampled, :data:`NATIONAL_FIX_COUNT`, an abnormal or unfixed one as 0),
and the face result at the minute (None: the rule is not applied; the photos' own face checks feed the session
rules). The face confidence of a 0x0305 is the terminal's own claim and is marked ``self_reported``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from firmware_protocols import envelope as jws
from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import BEIJING, CourseCode, RecordNumber
from firmware_protocols.jt808.base import TrainingMessage
from firmware_protocols.jt808.location import SATELLITES, Location
from firmware_protocols.jt808.signing import verify_digest, verify_timestamp
from firmware_protocols.jt808.training import (
    PHOTO_COACH_LOGIN,
    PHOTO_COACH_LOGOUT,
    CoachLogin,
    CoachLogout,
    MinuteRecord,
    PhotoData,
    PhotoInit,
    ReuploadReply,
    StudentLogin,
    StudentLogout,
    TrainingUnknown,
    decode_training,
)
from firmware_protocols.jt808.training_platform import HASH_SHA256, SIGNATURE_SIZE, TrainingEnvelope
from firmware_protocols.records import RecordKind, format_time
from server.clock import Clock
from server.db import SessionFactory
from server.ingest import _bump, _session_row
from server.models import (
    TERMINAL_ACTIVE,
    TERMINAL_REVOKED,
    Alarm,
    Minute,
    NationalEnvelope,
    NationalTerminal,
    RawRecord,
    Rejection,
    Terminal,
    TrainingSession,
)

log = logging.getLogger(__name__)

MINUTE_CHAIN = 1
EVENT_CHAIN = 2
#: Minutes per Beijing day that a record number can number (its daily sequence is 4 digits).
DAY_STRIDE = 10_000
#: A normal 0x0203 record of a certified terminal rests on a GNSS fix every second (JT/T 1302.1).
NATIONAL_FIX_COUNT = 60
#: 0x0203 record status: 1 normal (2 abnormal).
MINUTE_STATUS_NORMAL = 1
#: The terminal's face-match confidence (0-100) at or above which its photo counts as a passing face check.
FACE_PASS_CONFIDENCE = 80
#: An authentication timestamp further than this from the server's clock is refused (a captured 0x0102 ages out).
MAX_AUTH_SKEW = timedelta(minutes=5)
MAX_TX_ATTEMPTS = 3

STORED = "stored"
DUPLICATE = "duplicate"
REFUSED = "refused"

ALARM_BAD_SIGNATURE = "bad_signature"
ALARM_FOREIGN_PUBLISH = "foreign_publish"
ALARM_DUPLICATE_RECORD_NO = "duplicate_record_no"
ALARM_AUTH_MISMATCH = "terminal_certificate_mismatch"

#: Training ids only the platform sends: never accepted uplink.
DOWNLINK_IDS = frozenset({0x8205, 0x8501, 0x8502})


@dataclass(frozen=True, slots=True)
class NationalIdentity:
    """A registered national terminal as the gateway needs it."""

    terminal: str
    phone: str
    school: str
    car_plate: str
    status: str
    key: RSAPublicKey


@dataclass(frozen=True, slots=True)
class Gap:
    """Minute records missing below a stored one: ask for them with 0x8205 (times are aware UTC)."""

    start: datetime
    end: datetime
    count: int


@dataclass(frozen=True, slots=True)
class EnvelopeOutcome:
    """What ingest did with one envelope: ``stored`` / ``duplicate`` (answer OK) or ``refused`` with a reason."""

    status: str
    reason: str | None = None
    kind: str | None = None
    alarm: str | None = None
    gap: Gap | None = None
    sessions: frozenset[int] = field(default_factory=frozenset)

    @property
    def ok(self) -> bool:
        return self.status in (STORED, DUPLICATE)


class NationalIngestor:
    """Authenticates national terminals and turns their signed training envelopes into stored records."""

    def __init__(
        self,
        session_factory: SessionFactory,
        clock: Clock,
        *,
        after_commit: Callable[[set[int]], object] | None = None,
        max_auth_skew: timedelta = MAX_AUTH_SKEW,
    ) -> None:
        self._sf = session_factory
        self._clock = clock
        self._after_commit = after_commit
        self.max_auth_skew = max_auth_skew

    # ------------------------------------------------------------------ identities
    def identity(self, phone: str) -> NationalIdentity | None:
        """The registered terminal whose frame headers carry ``phone`` (None: not registered here)."""
        with self._sf() as s:
            return _identity(s, phone)

    def authenticate(self, phone: str, timestamp: int, ciphertext: bytes) -> tuple[NationalIdentity | None, str]:
        """Check a 0x0102: (identity, "ok") or (identity or None, the reason it is refused). Commits the timestamp."""
        now = self._clock()
        with self._sf() as s, s.begin():
            ident = _identity(s, phone)
            if ident is None:
                _bump(s, "unknown_terminal")
                return None, "unknown_terminal"
            if ident.status != TERMINAL_ACTIVE:
                reason = "terminal_revoked" if ident.status == TERMINAL_REVOKED else "unknown_terminal"
                _bump(s, reason)
                return ident, reason
            row = s.get(NationalTerminal, ident.terminal)
            assert row is not None
            if abs(now.timestamp() - timestamp) > self.max_auth_skew.total_seconds():
                _bump(s, "stale_authentication")
                return ident, "stale_authentication"
            if row.last_auth_timestamp is not None and timestamp <= row.last_auth_timestamp:
                _bump(s, "replayed_authentication")
                self._alarm(
                    s,
                    ident.terminal,
                    "replayed_authentication",
                    {"timestamp": timestamp, "last": row.last_auth_timestamp},
                )
                return ident, "replayed_authentication"
            try:
                verify_timestamp(timestamp, ciphertext, ident.key)
            except ProtocolError as exc:
                _bump(s, ALARM_AUTH_MISMATCH)
                self._alarm(
                    s,
                    ident.terminal,
                    ALARM_AUTH_MISMATCH,
                    {"phone": phone, "error": str(exc), "what": "0x0102 not signed by the registered key"},
                )
                return ident, ALARM_AUTH_MISMATCH
            row.last_auth_timestamp = timestamp
            terminal = s.get(Terminal, ident.terminal)
            if terminal is not None:
                terminal.last_seen_at = now
        return ident, "ok"

    # ------------------------------------------------------------------ envelopes
    def ingest(self, terminal_id: str, raw: bytes) -> EnvelopeOutcome:
        """One signed envelope (the 0x0900 body after its type byte, exactly as received) of an authenticated
        terminal. The outcome exists only after COMMIT returned."""
        for attempt in range(1, MAX_TX_ATTEMPTS + 1):
            try:
                with self._sf() as s, s.begin():
                    outcome = self._ingest(s, terminal_id, raw)
                break
            except (IntegrityError, OperationalError) as exc:
                if attempt == MAX_TX_ATTEMPTS:
                    raise
                log.info("envelope of %s retried after %s", terminal_id, type(exc).__name__)
        if outcome.sessions and self._after_commit is not None:
            try:
                self._after_commit(set(outcome.sessions))
            except Exception:  # noqa: BLE001 - derived data is recomputed later; the records are safe
                log.exception("re-judging sessions %s failed", sorted(outcome.sessions))
        return outcome

    def _ingest(self, s: Session, terminal_id: str, raw: bytes) -> EnvelopeOutcome:
        now = self._clock()

        def refuse(reason: str, alarm: str | None = None, **detail: Any) -> EnvelopeOutcome:
            _bump(s, reason)
            if alarm is not None:
                self._alarm(
                    s, terminal_id, alarm, {"reason": reason, "sha256": hashlib.sha256(raw).hexdigest(), **detail}
                )
            return EnvelopeOutcome(REFUSED, reason, alarm=alarm)

        try:
            env = TrainingEnvelope.decode(raw, signed=True)
        except ProtocolError as exc:
            return refuse(exc.reason)
        if env.terminal != terminal_id:
            return refuse("terminal_mismatch", ALARM_FOREIGN_PUBLISH, claims=env.terminal)
        terminal = s.get(Terminal, terminal_id)
        if terminal is None or s.get(NationalTerminal, terminal_id) is None:
            return refuse("unknown_terminal")
        if terminal.status != TERMINAL_ACTIVE:
            return refuse("terminal_revoked" if terminal.status == TERMINAL_REVOKED else "unknown_terminal")
        if env.hash_algorithm != HASH_SHA256:
            return refuse("unsupported_hash", hash=env.hash_algorithm)
        key = jws.public_key_from_pem(terminal.public_key)
        if not isinstance(key, RSAPublicKey):
            return refuse("bad_key")
        try:  # the digest of the bytes as received, not of a re-encoding
            verify_digest(hashlib.sha256(raw[:-SIGNATURE_SIZE]).digest(), raw[-SIGNATURE_SIZE:], key)
        except ProtocolError as exc:
            return refuse(exc.reason, ALARM_BAD_SIGNATURE, msg_id=f"0x{env.msg_id:04x}", counter=env.counter)
        digest = hashlib.sha256(raw).hexdigest()
        if (
            s.scalar(
                select(NationalEnvelope.id).where(
                    NationalEnvelope.terminal_id == terminal_id, NationalEnvelope.sha256 == digest
                )
            )
            is not None
        ):
            _bump(s, "replayed_envelope")
            return EnvelopeOutcome(DUPLICATE, "replayed_envelope")
        if env.msg_id in DOWNLINK_IDS:
            return refuse("downlink_id_uplink", msg_id=f"0x{env.msg_id:04x}")
        try:
            message = decode_training(env.msg_id, env.data)
        except ProtocolError as exc:
            return refuse(exc.reason)
        if isinstance(message, TrainingUnknown):
            return refuse("unsupported_training_id")

        sessions: set[int] = set()
        gap: Gap | None = None
        record_no: str | None = None
        if isinstance(message, MinuteRecord):
            try:
                number = RecordNumber.parse(message.record_no)
                CourseCode.parse(message.course)
            except ProtocolError as exc:
                return refuse(exc.reason)
            if number.terminal != terminal_id:
                return refuse("record_no_terminal_mismatch", ALARM_FOREIGN_PUBLISH, record_no=message.record_no)
            record_no = message.record_no
            other = s.scalar(select(Minute).where(Minute.record_no == record_no))
            if other is not None:
                if _same_minute(s, other, message):  # re-sent (e.g. answering 0x8205): already counted
                    _bump(s, "duplicate_record_no_resent")
                    return EnvelopeOutcome(DUPLICATE, "duplicate_record_no_resent", kind=str(RecordKind.MINUTE))
                return refuse("duplicate_record_no", ALARM_DUPLICATE_RECORD_NO, record_no=record_no)
            chain, seq = MINUTE_CHAIN, number.day.toordinal() * DAY_STRIDE + number.sequence
        else:
            chain = EVENT_CHAIN
            seq = (
                s.scalar(
                    select(func.max(RawRecord.seq)).where(
                        RawRecord.terminal_id == terminal_id, RawRecord.chain == EVENT_CHAIN
                    )
                )
                or 0
            ) + 1
        kind, at, body = _record_of(s, terminal_id, message, now)
        body["envelope"] = {"msg_id": f"0x{env.msg_id:04x}", "counter": env.counter, "backfill": env.backfill}
        row = RawRecord(
            terminal_id=terminal_id,
            chain=chain,
            seq=seq,
            hash=digest,
            prev="",
            kind=kind,
            at=at,
            body=body,
            raw=raw,
            received_at=now,
        )
        s.add(row)
        s.flush()
        s.add(
            NationalEnvelope(
                terminal_id=terminal_id,
                sha256=digest,
                raw_record_id=row.id,
                msg_id=env.msg_id,
                counter=env.counter,
                backfill=env.backfill,
                record_no=record_no,
                received_at=now,
            )
        )
        self._derive(s, terminal_id, message, kind, body, row, sessions)
        if isinstance(message, MinuteRecord):
            gap = _gap_below(s, terminal_id, seq, at)
        terminal.last_seen_at = now
        _bump(s, "national_stored")
        return EnvelopeOutcome(STORED, kind=kind, gap=gap, sessions=frozenset(sessions))

    def _derive(
        self,
        s: Session,
        terminal: str,
        message: TrainingMessage,
        kind: str,
        body: dict[str, Any],
        row: RawRecord,
        sessions: set[int],
    ) -> None:
        """Sessions and minutes, as :meth:`server.ingest.Ingestor._derive` makes them for our agent's records."""
        session = body.get("session")
        if not isinstance(session, str):
            return
        ts = _session_row(s, terminal, session)
        if isinstance(message, StudentLogin):
            ts.student_id, ts.coach_id, ts.course = message.student, message.coach, message.course
            ts.login_chain, ts.login_seq, ts.started_at = row.chain, row.seq, row.at
        elif isinstance(message, StudentLogout):
            ts.student_id = ts.student_id or message.student
            ts.logout_chain, ts.logout_seq, ts.ended_at = row.chain, row.seq, row.at
            ts.declared_minutes = message.minutes
        elif isinstance(message, MinuteRecord):
            if ts.student_id is None:
                ts.student_id, ts.coach_id, ts.course = message.student, message.coach, message.course
            ts.minutes_count += 1
            s.add(
                Minute(
                    record_no=message.record_no,
                    terminal_id=terminal,
                    chain=row.chain,
                    seq=row.seq,
                    session_id=ts.id,
                    student_id=message.student,
                    coach_id=message.coach,
                    course=message.course,
                    part=CourseCode.parse(message.course).part,
                    start=row.at,
                    facts=minute_facts(message),
                    track_hash=None,  # a 0x0203 record has one fix (second 30), no samples: no track fingerprint
                    valid=None,
                    reasons=[],
                    judged_at=None,
                )
            )
        sessions.add(ts.id)

    # ------------------------------------------------------------------ counters and alarms
    def bump(self, counts: Mapping[str, int]) -> None:
        """Add the gateway's refusal counters (frames, floods, deadlines) to the server's, for /metrics."""
        if not counts:
            return
        with self._sf() as s, s.begin():
            for reason, n in counts.items():
                row = s.get(Rejection, reason)
                if row is None:
                    s.add(Rejection(reason=reason, count=n))
                else:
                    row.count += n

    def alarm(self, terminal: str | None, kind: str, detail: dict[str, Any]) -> None:
        with self._sf() as s, s.begin():
            self._alarm(s, terminal, kind, detail)

    def _alarm(self, s: Session, terminal: str | None, kind: str, detail: dict[str, Any]) -> None:
        log.warning("alarm %s on national terminal %s: %s", kind, terminal, str(detail)[:300])
        s.add(Alarm(kind=kind, terminal_id=terminal, detail=detail, at=self._clock(), acknowledged=False))


def _identity(s: Session, phone: str) -> NationalIdentity | None:
    row = s.execute(
        select(NationalTerminal, Terminal)
        .join(Terminal, Terminal.id == NationalTerminal.terminal_id)
        .where(NationalTerminal.phone == phone)
    ).first()
    if row is None:
        return None
    national, terminal = row
    key = jws.public_key_from_pem(terminal.public_key)
    if not isinstance(key, RSAPublicKey):
        return None
    return NationalIdentity(terminal.id, national.phone, terminal.school_id, terminal.car_plate, terminal.status, key)


def _time_or(t: datetime | None, now: datetime) -> datetime:
    return t.astimezone(UTC) if t is not None else now


def _fix(gnss: Location) -> dict[str, Any]:
    sats = gnss.extra(SATELLITES)  # noqa: S610 - an additional-information item, not Django
    return {
        "lat": round(gnss.lat * 1e6),
        "lon": round(gnss.lon * 1e6),
        "mode": 3 if gnss.fixed else 1,
        "sats": int.from_bytes(sats, "big") if sats else None,
        "hdop": None,
        "speed": round(gnss.speed_kmh * 10),
        **({"t": format_time(gnss.time)} if gnss.time is not None else {}),
    }


def minute_facts(m: MinuteRecord) -> dict[str, Any]:
    """The facts the minute audit needs, in the shape of :func:`server.ingest.minute_facts_json`."""
    normal = m.status == MINUTE_STATUS_NORMAL and m.gnss.fixed
    return {
        "max_speed": round(m.max_speed_kmh * 10),
        "distance_m": round(m.distance_km * 1000),
        "fix_count": NATIONAL_FIX_COUNT if normal else 0,
        "fix30": _fix(m.gnss),
        "rpm": m.gnss.rpm,
        "face_result": None,
    }


def _face_result(confidence: int) -> str:
    if confidence >= FACE_PASS_CONFIDENCE:
        return "pass"
    return "fail" if confidence > 0 else "unchecked"


def _record_of(
    s: Session, terminal: str, message: TrainingMessage, now: datetime
) -> tuple[str, datetime, dict[str, Any]]:
    """(kind, at, body) of a training message, the body in the contract's field names."""
    if isinstance(message, MinuteRecord):
        body: dict[str, Any] = {
            "record_no": message.record_no,
            "report_type": message.report_type,
            "student": message.student,
            "coach": message.coach,
            "course": message.course,
            "session": str(message.class_id),
            "status": message.status,
            **minute_facts(message),
            "vehicle": None
            if message.gnss.rpm is None
            else {"rpm": message.gnss.rpm, "speed": round((message.gnss.vehicle_speed_kmh or 0) * 10)},
            "face": None,
        }
        return str(RecordKind.MINUTE), message.start, body
    if isinstance(message, StudentLogin):
        return (
            str(RecordKind.STUDENT_LOGIN),
            _time_or(message.gnss.time, now),
            {
                "student": message.student,
                "coach": message.coach,
                "course": message.course,
                "session": str(message.class_id),
                "face": None,
                "fix": _fix(message.gnss),
            },
        )
    if isinstance(message, StudentLogout):
        coach = s.scalar(
            select(TrainingSession.coach_id).where(
                TrainingSession.terminal_id == terminal, TrainingSession.session == str(message.class_id)
            )
        )
        return (
            str(RecordKind.STUDENT_LOGOUT),
            _time_or(message.time or message.gnss.time, now),
            {
                "student": message.student,
                "coach": coach or "",
                "session": str(message.class_id),
                "minutes": message.minutes,
                "distance_m": round(message.distance_km * 1000),
                "face": None,
                "fix": _fix(message.gnss),
            },
        )
    if isinstance(message, CoachLogin):
        return (
            str(RecordKind.COACH_LOGIN),
            _time_or(message.gnss.time, now),
            {"coach": message.coach, "car_class": message.car_class, "face": None, "fix": _fix(message.gnss)},
        )
    if isinstance(message, CoachLogout):
        return (
            str(RecordKind.COACH_LOGOUT),
            _time_or(message.gnss.time, now),
            {"coach": message.coach, "fix": _fix(message.gnss)},
        )
    if isinstance(message, PhotoInit):
        coach_photo = message.event in (PHOTO_COACH_LOGIN, PHOTO_COACH_LOGOUT)
        return (
            str(RecordKind.FACE_CHECK),
            _time_or(message.gnss.time, now),
            {
                "person": message.person,
                "role": "coach" if coach_photo else "student",
                "result": _face_result(message.face_confidence),
                "confidence": message.face_confidence,
                "self_reported": True,
                "session": None if coach_photo else str(message.class_id),
                "event": message.event,
                "photo_no": message.photo_no,
                "photo_bytes": message.photo_bytes,
                "packages": message.packages,
                "camera": message.camera,
                "fix": _fix(message.gnss),
            },
        )
    if isinstance(message, PhotoData):
        return (
            str(RecordKind.EVENT),
            now,
            {
                "event": "photo_data",
                "photo_no": message.photo_no,
                "bytes": len(message.data),
                "sha256": hashlib.sha256(message.data).hexdigest(),
            },
        )
    if isinstance(message, ReuploadReply):
        return str(RecordKind.EVENT), now, {"event": "reupload_reply", "result": message.result}
    return str(RecordKind.EVENT), now, {"event": message.name.replace(" ", "_"), "msg_id": f"0x{message.msg_id:04x}"}


def _same_minute(s: Session, stored: Minute, message: MinuteRecord) -> bool:
    """The stored minute says what ``message`` says (its report type aside: 2 answers a re-upload request)."""
    raw = s.scalar(
        select(RawRecord.raw).where(
            RawRecord.terminal_id == stored.terminal_id, RawRecord.chain == stored.chain, RawRecord.seq == stored.seq
        )
    )
    if raw is None:
        return False
    try:
        env = TrainingEnvelope.decode(raw, signed=True)
        old = MinuteRecord.decode(env.data)
    except ProtocolError:
        return False
    return dataclasses.replace(old, report_type=message.report_type) == message


def _gap_below(s: Session, terminal: str, seq: int, at: datetime) -> Gap | None:
    """Minute records of the same Beijing day missing just below ``seq`` (None: none missing)."""
    base = seq - seq % DAY_STRIDE
    below = s.execute(
        select(RawRecord.seq, RawRecord.at)
        .where(
            RawRecord.terminal_id == terminal,
            RawRecord.chain == MINUTE_CHAIN,
            RawRecord.seq > base,
            RawRecord.seq < seq,
        )
        .order_by(RawRecord.seq.desc())
        .limit(1)
    ).first()
    previous = below.seq if below is not None else base
    missing = seq - previous - 1
    if missing <= 0:
        return None
    if below is not None:
        start = below.at + timedelta(minutes=1)
    else:
        start = datetime.combine(at.astimezone(BEIJING).date(), time(0, 0), tzinfo=BEIJING).astimezone(UTC)
    return Gap(start, at - timedelta(seconds=1), missing)
