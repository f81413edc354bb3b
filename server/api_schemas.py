"""The operator API's request and response bodies (pydantic): ``…Create`` comes in, ``…Public`` goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class SchoolCreate(BaseModel):
    id: str = Field(min_length=16, max_length=16)
    name: str = Field(min_length=1, max_length=200)


class SchoolPublic(SchoolCreate):
    pass


class TerminalPublic(BaseModel):
    id: str
    car_plate: str
    school: str
    key_id: str
    status: str
    registered_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    vin: str | None = None  # the car the terminal is bound to (server.car_binding)


class PersonBase(BaseModel):
    id: str = Field(min_length=16, max_length=16)
    name: str = Field(min_length=1, max_length=200)
    school: str
    face_template: str = Field(min_length=1, max_length=4000)
    photo_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class CoachCreate(PersonBase):
    classes: list[str] = Field(min_length=1)


class StudentCreate(PersonBase):
    licence_class: str = Field(alias="class")
    model_config = {"populate_by_name": True}


class PersonPublic(BaseModel):
    id: str
    name: str
    school: str
    classes: list[str]
    photo_sha256: str | None


class PartProgressPublic(BaseModel):
    part: int
    valid_minutes: int
    required_minutes: int
    complete: bool
    xueshi: int


class StudentPublic(PersonPublic):
    licence_class: str
    hours: list[PartProgressPublic]


class SessionPublic(BaseModel):
    id: int
    terminal: str
    session: str
    student: str | None
    coach: str | None
    course: str | None
    started_at: datetime | None
    ended_at: datetime | None
    declared_minutes: int | None
    minutes_count: int
    valid_minutes: int


class ReasonPublic(BaseModel):
    code: str
    en: str
    zh: str


class MinutePublic(BaseModel):
    record_no: str
    chain: int
    seq: int
    course: str
    part: int
    start: datetime
    valid: bool | None
    reasons: list[ReasonPublic]
    facts: dict[str, Any]


class AlarmPublic(BaseModel):
    id: int
    kind: str
    terminal: str | None
    detail: dict[str, Any]
    at: datetime
    acknowledged: bool


class ReviewItemPublic(BaseModel):
    id: int
    key: str
    kind: str
    terminal: str
    session: str
    record_no: str | None
    student: str
    parts: list[int]
    reasons: list[ReasonPublic]
    records: list[str]
    status: str
    created_at: datetime
    updated_at: datetime


class DecisionCreate(BaseModel):
    """An operator passes or fails a minute (``target`` = record number) or a session (``target`` =
    ``{terminal}/{session}``), with a reason."""

    target_kind: str = Field(pattern=r"^(minute|session)$")
    target: str = Field(min_length=1, max_length=128)
    decision: str = Field(pattern=r"^(pass|fail)$")
    reason: str = Field(min_length=1, max_length=2000)
    operator: str | None = Field(default=None, max_length=64,
                                 description="a note of who decided; the log names the caller's account")


class DecisionPublic(BaseModel):
    id: int
    target_kind: str
    target: str
    decision: str
    reason: str
    operator: str
    at: datetime
    prev_hash: str
    hash: str


class DecisionLogPublic(BaseModel):
    entries: int
    ok: bool
    first_bad: int | None
    decisions: list[DecisionPublic]


class StageReviewPublic(BaseModel):
    notice_id: str
    student: str
    part: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    reply: dict[str, Any] | None
    notice: dict[str, Any]


class TrackPoint(BaseModel):
    """The second-30 fix of one minute (degrees) and the minute's verdict."""

    record_no: str
    start: datetime
    lat: float
    lon: float
    speed_kmh: float
    valid: bool | None
    reasons: list[str]
    face_result: str | None


class TokenAnswer(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    role: str


class PrincipalPublic(BaseModel):
    name: str
    role: str
    school: str | None
    student: str | None


class OperatorCreate(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=10, max_length=256)
    role: str = Field(pattern=r"^(regulator|school_admin|exam_clerk|student|police|market_regulator)$")
    school: str | None = Field(default=None, min_length=16, max_length=16)
    student: str | None = Field(default=None, min_length=16, max_length=16)


class OperatorPublic(BaseModel):
    id: int
    username: str
    role: str
    school: str | None
    student: str | None
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


class SchoolFiguresPublic(BaseModel):
    """A school's supervision figures (formula: :mod:`server.figures`)."""

    school: str
    name: str
    students: int
    sessions: int
    judged_minutes: int
    valid_minutes: int
    invalid_minutes: int
    xueshi: float
    anomaly_rate: float
    open_reviews: int
    failed_reviews: int
    progress: float
    score: float | None
    list: str  # "red" | "black" | "none" | "insufficient_data"
    rank: int | None = None
    fraud_rate: float = 0.0
    ratings: int = 0
    rating_mean: float | None = None  # stars, 1-5
    complaints: int = 0
    complaint_rate: float = 0.0
    exams: int = 0
    exams_passed: int = 0
    pass_rate: float | None = None
    pass_rates: dict[str, float] = {}  # part -> pass rate
    terms: dict[str, dict[str, float]] = {}  # the score explained: term -> value, weight (percent), points


class EnrolmentPhotoPublic(BaseModel):
    person_kind: str
    person_id: str
    sha256: str
    width: int
    height: int
    face_box: list[int]
    created_at: datetime
