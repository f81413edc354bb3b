"""The server's tables (SQLAlchemy 2, typed): raw signed records (immutable) and what is derived from them.

Raw records are the evidence and are never updated; chains, sessions, minutes with their verdicts, hour totals and
stage reviews are derived and can be recomputed from them. Every time column holds aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
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


class Minute(Base):
    __tablename__ = "minutes"
    __table_args__ = (Index("ix_minutes_student_part", "student_id", "part"),)
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
