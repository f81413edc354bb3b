"""The server's tables (SQLAlchemy 2, typed): raw signed records (immutable) and what is derived from them.

Raw records are the evidence and are never updated; chains, sessions, minutes with their verdicts, hour totals and
stage reviews are derived and can be recomputed from them. Every time column holds aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TERMINAL_ACTIVE = "active"
TERMINAL_REVOKED = "revoked"

REVIEW_PENDING = "pending"
REVIEW_SENT = "sent"
REVIEW_ACCEPTED = "accepted"
REVIEW_REJECTED = "rejected"

# Minute.status: what decided the verdict (domain.md "Approval").
MINUTE_UNJUDGED = "unjudged"
MINUTE_AUTO_PASSED = "auto_passed"
MINUTE_AUTO_FAILED = "auto_failed"
MINUTE_UNDER_REVIEW = "under_review"
MINUTE_MANUAL_PASSED = "manual_passed"
MINUTE_MANUAL_FAILED = "manual_failed"

# ReviewItem.status
ITEM_OPEN = "open"
ITEM_PASSED = "passed"
ITEM_FAILED = "failed"
ITEM_RESOLVED = "resolved"  # the anomaly went away on recomputation (late records) before anyone decided


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out; SQLite (no time zones) stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: jiapei stores aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class School(Base):
    __tablename__ = "schools"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Terminal(Base):
    __tablename__ = "terminals"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    car_plate: Mapped[str] = mapped_column(String(32))
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=TERMINAL_ACTIVE)
    registered_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]  # records received from this moment on are refused
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    vin: Mapped[str | None] = mapped_column(String(17))  # the car's VIN (server.car_binding); None: not bound yet


class TerminalKey(Base):
    """Every signing key a terminal has had, and the first chain it signs: old records stay verifiable forever."""

    __tablename__ = "terminal_keys"
    __table_args__ = (UniqueConstraint("terminal_id", "key_id", name="uq_terminal_keys_terminal_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)
    from_chain: Mapped[int]
    added_at: Mapped[datetime]
    vouch: Mapped[str | None] = mapped_column(Text)  # the old key's signed statement for a rotated key


class TerminalCertificate(Base):
    """An MQTT client certificate issued to a terminal by the project's CA (serial as lower-case hex)."""

    __tablename__ = "terminal_certificates"
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"), index=True)
    pem: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime]
    not_after: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class EnrolmentToken(Base):
    """A one-time token an operator issues for one car; only its SHA-256 is kept."""

    __tablename__ = "enrolment_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    terminal_id: Mapped[str] = mapped_column(String(16), index=True)
    car_plate: Mapped[str] = mapped_column(String(32))
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_key_id: Mapped[str | None] = mapped_column(String(16))
    certificate_serial: Mapped[str | None] = mapped_column(String(40))
    vin: Mapped[str | None] = mapped_column(String(17))  # the car's VIN when the office knows it


class Coach(Base):
    __tablename__ = "coaches"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    classes: Mapped[list[Any]]
    face_template: Mapped[str] = mapped_column(Text)
    photo_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class Student(Base):
    __tablename__ = "students"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    licence_class: Mapped[str] = mapped_column(String(4))
    face_template: Mapped[str] = mapped_column(Text)
    photo_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class RawRecord(Base):
    """A signed record exactly as received. Immutable: inserted once, never updated."""

    __tablename__ = "raw_records"
    __table_args__ = (UniqueConstraint("terminal_id", "chain", "seq", name="uq_raw_records_terminal_chain_seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"))
    chain: Mapped[int]
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))
    prev: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    body: Mapped[dict[str, Any]]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime]


class Chain(Base):
    """What ingest knows of one chain of one terminal: its key, genesis and how far it is contiguous."""

    __tablename__ = "chains"
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"), primary_key=True)
    chain: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))
    genesis_hash: Mapped[str | None] = mapped_column(String(64))
    contiguous_seq: Mapped[int] = mapped_column(default=-1)  # highest seq with every seq ≤ it stored; -1: none
    max_seq: Mapped[int] = mapped_column(default=-1)
    gap_since: Mapped[datetime | None]  # set while a stored record has a missing (and not declared lost) one below it
    last_resend_at: Mapped[datetime | None]
    lost_ranges: Mapped[list[Any]]  # [[from_seq, to_seq], …] declared lost by a signed notice
    closed_after_seq: Mapped[int | None]  # a key rotation ended this chain here: later seqs are refused


class TrainingSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("terminal_id", "session", name="uq_sessions_terminal_session"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"))
    session: Mapped[str] = mapped_column(String(64))
    student_id: Mapped[str | None] = mapped_column(String(16), index=True)
    coach_id: Mapped[str | None] = mapped_column(String(16))
    course: Mapped[str | None] = mapped_column(String(10))
    login_chain: Mapped[int | None]
    login_seq: Mapped[int | None]
    logout_chain: Mapped[int | None]
    logout_seq: Mapped[int | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    declared_minutes: Mapped[int | None]  # what the logout record says
    minutes_count: Mapped[int] = mapped_column(default=0)  # minute records stored
    valid_minutes: Mapped[int] = mapped_column(default=0)
    distance_m: Mapped[int] = mapped_column(default=0)  # sum over its minutes
    reasons: Mapped[list[Any] | None]  # session rules broken (server.validation.session)


class Minute(Base):
    __tablename__ = "minutes"
    __table_args__ = (
        Index("ix_minutes_student_part", "student_id", "part"),
        Index("ix_minutes_terminal_chain_seq", "terminal_id", "chain", "seq"),  # backdating (ledger, 0009)
        Index("ix_minutes_coach_start", "coach_id", "start"),  # overlaps
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_no: Mapped[str] = mapped_column(String(26), unique=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"))
    chain: Mapped[int]
    seq: Mapped[int]
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    student_id: Mapped[str] = mapped_column(String(16))
    coach_id: Mapped[str] = mapped_column(String(16))
    course: Mapped[str] = mapped_column(String(10))
    part: Mapped[int]
    start: Mapped[datetime]
    facts: Mapped[dict[str, Any]]
    valid: Mapped[bool | None]
    reasons: Mapped[list[Any]]
    judged_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default=MINUTE_UNJUDGED)
    #: The fingerprint of the minute's sampled positions (server.validation.track), None when it does not move.
    track_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class Alarm(Base):
    __tablename__ = "alarms"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    terminal_id: Mapped[str | None] = mapped_column(String(64), index=True)  # may name an unregistered terminal
    detail: Mapped[dict[str, Any]]
    at: Mapped[datetime]
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)


class Rejection(Base):
    """How many records or messages were refused, by reason code (for /metrics)."""

    __tablename__ = "rejections"
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class HourTotal(Base):
    """Derived: valid minutes of one student in one part against the policy's requirement."""

    __tablename__ = "hour_totals"
    student_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    part: Mapped[int] = mapped_column(primary_key=True)
    licence_class: Mapped[str] = mapped_column(String(4))
    valid_minutes: Mapped[int]
    required_minutes: Mapped[int]
    complete: Mapped[bool]
    updated_at: Mapped[datetime]


class StageReview(Base):
    """The durable outbox of stage-review notices to the exam system."""

    __tablename__ = "stage_reviews"
    __table_args__ = (Index("ix_stage_reviews_status_next", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notice_id: Mapped[str] = mapped_column(String(64), unique=True)
    student_id: Mapped[str] = mapped_column(String(16))
    part: Mapped[int]
    notice: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=REVIEW_PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    reply: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ReviewItem(Base):
    """The review queue: a session (or a minute) whose anomalies an operator must judge. Derived: opened and resolved
    by recomputation, closed by a :class:`ReviewDecision`."""

    __tablename__ = "review_items"
    __table_args__ = (Index("ix_review_items_student_status", "student_id", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)  # "session:{terminal}/{session}" | "minute:{no}"
    kind: Mapped[str] = mapped_column(String(16))  # "session" | "minute"
    terminal_id: Mapped[str] = mapped_column(String(16))
    session: Mapped[str] = mapped_column(String(64))
    record_no: Mapped[str | None] = mapped_column(String(26))
    student_id: Mapped[str] = mapped_column(String(16))
    parts: Mapped[list[Any]]
    reasons: Mapped[list[Any]]
    records: Mapped[list[Any]]  # record numbers of the minutes concerned
    status: Mapped[str] = mapped_column(String(16), default=ITEM_OPEN)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ReviewDecision(Base):
    """Append-only, hash-chained log of manual decisions: each row's hash covers its fields and the previous hash.

    Never updated or deleted; :func:`server.review.verify_log` recomputes the chain. The latest decision on a minute
    or session overrides the automatic verdict, and survives every recomputation.
    """

    __tablename__ = "review_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target_kind: Mapped[str] = mapped_column(String(16))  # "minute" | "session"
    target: Mapped[str] = mapped_column(String(128), index=True)  # record number | "{terminal}/{session}"
    decision: Mapped[str] = mapped_column(String(8))  # "pass" | "fail"
    reason: Mapped[str] = mapped_column(Text)
    operator: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


KEY_FROM_TERMINAL = "terminal"  # the terminal made its key pair; the operator registered its certificate
KEY_PLATFORM_ISSUED = "platform_issued"  # the 2016 protocol's way (0x8100 hands out a PKCS#12): weaker trust


class NationalTerminal(Base):
    """A terminal that speaks the 2016 national protocol (JT/T 808 + training extension) through the gateway.

    Its ``terminals`` row binds it to car and school and holds its RSA key (``terminal_keys`` from chain 1); this row
    adds what the protocol needs: the number in its frame headers (BCD, 16 digits), the registered certificate, the
    key's origin and the newest authentication timestamp accepted (a replayed 0x0102 is refused)."""

    __tablename__ = "national_terminals"
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(16), unique=True)
    certificate: Mapped[str | None] = mapped_column(Text)  # X.509 PEM as registered (None: a bare public key)
    key_origin: Mapped[str] = mapped_column(String(16), default=KEY_FROM_TERMINAL)
    last_auth_timestamp: Mapped[int | None]
    registered_at: Mapped[datetime]


class NationalEnvelope(Base):
    """Every signed training envelope stored from a national terminal (its bytes are the ``raw_records`` row):
    dedupe by digest, and the envelope's own fields (message id, packet counter, backfill bit)."""

    __tablename__ = "national_envelopes"
    __table_args__ = (UniqueConstraint("terminal_id", "sha256", name="uq_national_envelopes_terminal_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    raw_record_id: Mapped[int] = mapped_column(ForeignKey("raw_records.id"), index=True)
    msg_id: Mapped[int]
    counter: Mapped[int]
    backfill: Mapped[bool] = mapped_column(Boolean, default=False)
    record_no: Mapped[str | None] = mapped_column(String(26))
    received_at: Mapped[datetime]


# Operator roles (domain.md "Roles"): what an operator account may see and do (server.auth).
ROLE_REGULATOR = "regulator"  # transport bureau: every school, read and review
ROLE_SCHOOL_ADMIN = "school_admin"  # one school: its people, cars, terminals
ROLE_EXAM_CLERK = "exam_clerk"  # police / exam: eligibility and stage reviews, read-only
ROLE_STUDENT = "student"  # one student: own hours and sessions
ROLE_POLICE = "police"  # traffic police (公安交管): eligibility and exam results of every school, read-only
ROLE_MARKET = "market_regulator"  # market regulation (市场监管): prices, complaints, escrow balances and releases
ROLES = (ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_EXAM_CLERK, ROLE_STUDENT, ROLE_POLICE, ROLE_MARKET)


class OperatorAccount(Base):
    """A person who logs in to the operator API or the dashboard. Only an Argon2id hash of the password is kept.

    ``school_id`` binds a school admin to their school, ``student_id`` a student account to its student."""

    __tablename__ = "operator_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    school_id: Mapped[str | None] = mapped_column(ForeignKey("schools.id"), index=True)
    student_id: Mapped[str | None] = mapped_column(ForeignKey("students.id"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class EnrolmentPhoto(Base):
    """A coach's or student's registration photo (re-encoded JPEG, metadata stripped) and where its face was found.

    Sensitive personal information: served only through the API to the roles allowed (server.api_people), every
    read logged. The newest row of a person is the one their ``face_template`` was computed from."""

    __tablename__ = "enrolment_photos"
    __table_args__ = (Index("ix_enrolment_photos_person", "person_kind", "person_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_kind: Mapped[str] = mapped_column(String(8))  # "coach" | "student"
    person_id: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int]
    height: Mapped[int]
    face_box: Mapped[list[Any]]  # [top, right, bottom, left] pixels
    consent: Mapped[bool] = mapped_column(Boolean)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


# CheckPhoto.status
PHOTO_PENDING = "pending"  # the record naming it has not arrived yet: held, not re-checked
PHOTO_STORED = "stored"


class CheckPhoto(Base):
    """The evidence photo (JPEG) of a face check, stored once by its SHA-256, as the terminal sent it; the
    ``face_check`` record at (terminal, chain, seq) names it, so the chain vouches for the bytes (server.photos).

    Sensitive personal information: no API serves it yet; whoever adds one logs every read, as for enrolment photos."""

    __tablename__ = "check_photos"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"), index=True)
    chain: Mapped[int]
    seq: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    taken_at: Mapped[datetime]
    received_at: Mapped[datetime]
    stored_at: Mapped[datetime | None]


class FaceVerdict(Base):
    """Derived: the server's own re-check of one ``face_check`` record's photo against the enrolment template of the
    person the record names (the terminal's word is not taken), with duplicate-photo findings. One row per record.

    ``verdict``: ``match`` / ``mismatch`` (one face, at or past the threshold) / ``no_face`` / ``several_faces`` /
    ``no_template`` (the person has no usable enrolment template) / ``unreadable`` (not a decodable image).
    Distances are ×1000 integers, like the records'. ``duplicate``: ``exact`` (the same JPEG named by another
    record), ``near`` (the same face image: encodings closer than server.photos.NEAR_DUPLICATE_DISTANCE) or
    ``phash`` (the same picture by its perceptual hash, server.photos.PHASH_DUPLICATE_BITS: also without a face)."""

    __tablename__ = "face_verdicts"
    __table_args__ = (
        UniqueConstraint("terminal_id", "chain", "seq", name="uq_face_verdicts_terminal_chain_seq"),
        Index("ix_face_verdicts_person", "person_id"),
        Index("ix_face_verdicts_session", "terminal_id", "session"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"))
    chain: Mapped[int]
    seq: Mapped[int]
    session: Mapped[str | None] = mapped_column(String(64))
    person_id: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(8))
    trigger: Mapped[str | None] = mapped_column(String(16))
    photo_sha256: Mapped[str] = mapped_column(String(64), index=True)
    terminal_result: Mapped[str | None] = mapped_column(String(16))
    terminal_distance: Mapped[int | None]
    verdict: Mapped[str] = mapped_column(String(16))
    distance: Mapped[int | None]
    other_person: Mapped[str | None] = mapped_column(String(16))  # the nearest other enrolled person of the school
    other_distance: Mapped[int | None]
    duplicate: Mapped[str | None] = mapped_column(String(8))
    duplicate_of: Mapped[str | None] = mapped_column(String(128))  # "{terminal}/{chain}/{seq}" of the earlier check
    duplicate_distance: Mapped[int | None]
    encoding: Mapped[str | None] = mapped_column(Text)  # the photo's face template (fr1:…), for near-duplicates
    phash: Mapped[str | None] = mapped_column(String(16))  # 64-bit perceptual hash of the frame (biometrics.phash), hex
    alarms: Mapped[list[Any]]  # alarm kinds raised for this check
    at: Mapped[datetime]  # the face_check record's time
    checked_at: Mapped[datetime]
    compute_ms: Mapped[int]


# ---------------------------------------------------------------------------------------------- platform (issue 13)
# Enrolment.status
ENROLMENT_ACTIVE = "active"
ENROLMENT_WITHDRAWN = "withdrawn"
ENROLMENT_TRANSFERRED = "transferred"


class SchoolOffer(Base):
    """What a school charges for a licence class (integer fen: 1 yuan = 100 fen, never a float)."""

    __tablename__ = "school_offers"
    __table_args__ = (CheckConstraint("price_fen > 0", name="price_positive"),)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    licence_class: Mapped[str] = mapped_column(String(4), primary_key=True)
    price_fen: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class Enrolment(Base):
    """A student's contract with a school: the fee (fen), its release allocation per event (policy), the status."""

    __tablename__ = "enrolments"
    __table_args__ = (CheckConstraint("fee_fen > 0", name="fee_positive"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    licence_class: Mapped[str] = mapped_column(String(4))
    fee_fen: Mapped[int] = mapped_column(BigInteger)
    allocation: Mapped[dict[str, Any]]  # event -> fen, summing to fee_fen (server.policy.EscrowSchedule.allocate)
    status: Mapped[str] = mapped_column(String(16), default=ENROLMENT_ACTIVE)
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]  # the whole fee reached escrow
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(Text)


class EscrowAccount(Base):
    """A ledger account and its balance (fen). Only ``external`` accounts (money from outside: what students paid)
    may go below zero; the database refuses any other negative balance."""

    __tablename__ = "escrow_accounts"
    __table_args__ = (CheckConstraint("kind = 'external' OR balance >= 0", name="not_negative"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "{kind}:{owner}"
    kind: Mapped[str] = mapped_column(String(16))  # external | escrow | transit | school | refund
    owner: Mapped[str] = mapped_column(String(16), index=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class EscrowEntry(Base):
    """One balanced journal entry (its legs sum to zero), posted once under its idempotency ``key``; never updated.
    ``notice_id``/``records_digest`` trace a release to the stage review and the signed records behind it."""

    __tablename__ = "escrow_entries"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    kind: Mapped[str] = mapped_column(String(24))
    amount: Mapped[int] = mapped_column(BigInteger)
    enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("enrolments.id"), index=True)
    student_id: Mapped[str] = mapped_column(String(16), index=True)
    school_id: Mapped[str | None] = mapped_column(String(16))
    event: Mapped[str | None] = mapped_column(String(32))
    instruction_key: Mapped[str | None] = mapped_column(String(160))
    notice_id: Mapped[str | None] = mapped_column(String(64))
    records_digest: Mapped[str | None] = mapped_column(String(64))
    bank_txn: Mapped[str | None] = mapped_column(String(64), index=True)
    at: Mapped[datetime]
    detail: Mapped[dict[str, Any]]


class EscrowLeg(Base):
    __tablename__ = "escrow_legs"
    __table_args__ = (CheckConstraint("amount <> 0", name="amount_nonzero"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("escrow_entries.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("escrow_accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)  # + into the account, - out of it


class BankInstruction(Base):
    """What the platform asked the bank to do (collect a payment, pay a release, pay a refund), under an
    idempotency key the bank dedupes on; its state follows the bank's answers and callbacks."""

    __tablename__ = "bank_instructions"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),
                      Index("ix_bank_instructions_status_next", "status", "next_attempt_at"))  # fmt: skip
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)  # release:{enrolment}:{event} | refund:… | pay:…
    kind: Mapped[str] = mapped_column(String(16))  # payment | release | refund
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolments.id"), index=True)
    student_id: Mapped[str] = mapped_column(String(16))
    school_id: Mapped[str] = mapped_column(String(16))
    event: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16))  # waiting_funds | reserved | sent | settled | failed | cancelled
    notice_id: Mapped[str | None] = mapped_column(String(64))
    records_digest: Mapped[str | None] = mapped_column(String(64))
    bank_txn: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BankEvent(Base):
    """Every bank callback (or statement line applied) once, by the bank's event id: duplicates change nothing."""

    __tablename__ = "bank_events"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str | None] = mapped_column(String(200))
    txn_id: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(24))  # applied | duplicate | ignored_stale | unmatched
    body: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class Reconciliation(Base):
    """A daily comparison of the ledger with the bank's statement: every difference listed."""

    __tablename__ = "reconciliations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10), index=True)  # Beijing day YYYY-MM-DD
    statement_lines: Mapped[int]
    ledger_lines: Mapped[int]
    differences: Mapped[list[Any]]
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]


# Booking.status
BOOKING_BOOKED = "booked"
BOOKING_CANCELLED = "cancelled"
BOOKING_ATTENDED = "attended"
BOOKING_NO_SHOW = "no_show"


class Slot(Base):
    """A training slot: one coach in one car (terminal) for a time, for up to ``capacity`` students."""

    __tablename__ = "slots"
    __table_args__ = (UniqueConstraint("terminal_id", "starts_at", name="uq_slots_terminal_start"),
                      CheckConstraint("capacity >= 1", name="capacity_positive"))  # fmt: skip
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    coach_id: Mapped[str] = mapped_column(ForeignKey("coaches.id"))
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    capacity: Mapped[int]
    coach_no_show: Mapped[bool] = mapped_column(Boolean, default=False)  # booked, and the car never trained
    created_at: Mapped[datetime]


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (UniqueConstraint("slot_id", "student_id", name="uq_bookings_slot_student"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=BOOKING_BOOKED)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Rating(Base):
    """The student's rating of one finished session they trained in: one per session, 1-5 stars and a text."""

    __tablename__ = "ratings"
    __table_args__ = (CheckConstraint("stars >= 1 AND stars <= 5", name="stars_1_to_5"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), unique=True)
    student_id: Mapped[str] = mapped_column(String(16), index=True)
    coach_id: Mapped[str | None] = mapped_column(String(16), index=True)
    school_id: Mapped[str] = mapped_column(String(16), index=True)
    stars: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


# Complaint.status: filed -> assigned -> answered -> closed
COMPLAINT_FILED = "filed"
COMPLAINT_ASSIGNED = "assigned"
COMPLAINT_ANSWERED = "answered"
COMPLAINT_CLOSED = "closed"


class Complaint(Base):
    __tablename__ = "complaints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[str] = mapped_column(String(16), index=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=COMPLAINT_FILED)
    assigned_to: Mapped[str | None] = mapped_column(String(64))
    answer: Mapped[str | None] = mapped_column(Text)
    filed_at: Mapped[datetime]
    assign_due_at: Mapped[datetime]
    answer_due_at: Mapped[datetime]
    assigned_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))


class ExamResult(Base):
    """A part's exam result as the exam side reported it (``source_seq``: its feed position, stored once)."""

    __tablename__ = "exam_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_seq: Mapped[int] = mapped_column(unique=True)
    student_id: Mapped[str] = mapped_column(String(16), index=True)
    school_id: Mapped[str | None] = mapped_column(String(16), index=True)
    coach_id: Mapped[str | None] = mapped_column(String(16), index=True)  # who taught most of that part's minutes
    part: Mapped[int]
    passed: Mapped[bool] = mapped_column(Boolean)
    sat_at: Mapped[datetime]
    received_at: Mapped[datetime]
