"""The operator API (FastAPI): terminals, people, sessions, minutes with verdicts, hours, alarms, stage reviews.

Built by :func:`create_app` from settings and (optionally) a session factory; nothing is created at import time.
Reads are open; writes need ``Authorization: Bearer <JIAPEI_ADMIN_TOKEN>`` (wrong tokens are rate-limited per
address). Terminals enrol through :mod:`server.api_trust`. Bad requests get 4xx with a reason.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import CLASS_CODES, check_national_id
from server.api_trust import Trust
from server.api_trust import register as register_trust
from server.clock import utcnow
from server.db import SessionFactory, make_engine, make_session_factory
from server.hours import progress
from server.models import (
    REVIEW_PENDING,
    Alarm,
    Coach,
    HourTotal,
    Minute,
    RawRecord,
    Rejection,
    School,
    StageReview,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import Policy
from server.settings import Settings
from server.validation.reasons import REASONS
from webguard import RateLimiter, SecurityHeaders

log = logging.getLogger(__name__)

#: Called with a school id after its terminals or people changed (publishes the retained rosters).
PeopleChanged = Callable[[str], object]
MAX_LIST = 500


# ---------------------------------------------------------------------------------------------- dependencies
def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as s:
        yield s


DB = Annotated[Session, Depends(get_db)]


#: Wrong admin tokens per client address (10 per 5 minutes) before it must wait: guessing is slow.
ADMIN_FAILURE_LIMIT = (10, 300.0)


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token: str | None = request.app.state.settings.admin_token
    limiter: RateLimiter = request.app.state.admin_failures
    who = request.client.host if request.client else "unknown"
    wait = limiter.blocked(who)
    if wait:
        raise HTTPException(429, "too many failed admin logins; try later", headers={"Retry-After": str(int(wait) + 1)})
    given = authorization.removeprefix("Bearer ").strip() if authorization else ""
    if not token or not authorization or not hmac.compare_digest(given.encode(), token.encode()):
        if authorization:  # a missing header is a client that does not know; a wrong one is a guess
            limiter.hit(who)
        raise HTTPException(401, "admin bearer token required", headers={"WWW-Authenticate": "Bearer"})


Admin = Annotated[None, Depends(require_admin)]


def _people_changed(request: Request, school: str) -> None:
    hook: PeopleChanged | None = request.app.state.on_people_change
    if hook is not None:
        try:
            hook(school)
        except Exception:  # noqa: BLE001 - the roster is republished on the next change; the write stands
            log.exception("publishing rosters of school %s failed", school)


# ---------------------------------------------------------------------------------------------- schemas
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


# ---------------------------------------------------------------------------------------------- helpers
def _check_id(value: str, what: str) -> str:
    try:
        return check_national_id(value, what)
    except ProtocolError as exc:
        raise HTTPException(422, f"{what}: {exc}") from exc


def _check_classes(classes: list[str]) -> None:
    unknown = [c for c in classes if c not in CLASS_CODES]
    if unknown:
        raise HTTPException(422, f"unknown licence classes {unknown}")


def _check_template(text: str) -> None:
    from biometrics.errors import TemplateDecodeError
    from biometrics.templates import decode_template

    try:
        decode_template(text)
    except (TemplateDecodeError, ValueError) as exc:
        raise HTTPException(422, f"face_template: {exc}") from exc


def _school_exists(db: Session, school: str) -> None:
    if db.get(School, school) is None:
        raise HTTPException(422, f"unknown school {school!r}")


def _terminal_public(t: Terminal) -> TerminalPublic:
    return TerminalPublic(
        id=t.id,
        car_plate=t.car_plate,
        school=t.school_id,
        key_id=t.key_id,
        status=t.status,
        registered_at=t.registered_at,
        last_seen_at=t.last_seen_at,
        revoked_at=t.revoked_at,
        revoke_reason=t.revoke_reason,
    )


def _hours(db: Session, student: Student, policy: Policy) -> list[PartProgressPublic]:
    rows = {h.part: h for h in db.scalars(select(HourTotal).where(HourTotal.student_id == student.id))}
    valid = {p: h.valid_minutes for p, h in rows.items()}
    return [
        PartProgressPublic(
            part=p.part,
            valid_minutes=p.valid_minutes,
            required_minutes=p.required_minutes,
            complete=p.complete,
            xueshi=p.valid_minutes // policy.minutes_per_xueshi,
        )
        for p in progress(student.id, student.licence_class, valid, policy)
    ]


def _student_public(db: Session, s: Student, policy: Policy) -> StudentPublic:
    return StudentPublic(
        id=s.id,
        name=s.name,
        school=s.school_id,
        classes=[s.licence_class],
        licence_class=s.licence_class,
        photo_sha256=s.photo_sha256,
        hours=_hours(db, s, policy),
    )


def _reasons(codes: list[str]) -> list[ReasonPublic]:
    return [ReasonPublic(code=c, en=REASONS.get(c, (c, c))[0], zh=REASONS.get(c, (c, c))[1]) for c in codes]


# ---------------------------------------------------------------------------------------------- routers
read = APIRouter(prefix="/api")
write = APIRouter(prefix="/api")


@read.get("/health")
def health(db: DB) -> dict[str, Any]:
    db.execute(select(1))
    return {"status": "ok", "time": utcnow().isoformat()}


@read.get("/terminals")
def list_terminals(db: DB) -> list[TerminalPublic]:
    return [_terminal_public(t) for t in db.scalars(select(Terminal).order_by(Terminal.id).limit(MAX_LIST))]


@read.get("/terminals/{terminal_id}")
def get_terminal(terminal_id: str, db: DB) -> TerminalPublic:
    t = db.get(Terminal, terminal_id)
    if t is None:
        raise HTTPException(404, "no such terminal")
    return _terminal_public(t)


@read.get("/students")
def list_students(request: Request, db: DB) -> list[StudentPublic]:
    policy = request.app.state.policy
    return [_student_public(db, s, policy) for s in db.scalars(select(Student).order_by(Student.id).limit(MAX_LIST))]


@read.get("/students/{student_id}")
def get_student(student_id: str, request: Request, db: DB) -> StudentPublic:
    s = db.get(Student, student_id)
    if s is None:
        raise HTTPException(404, "no such student")
    return _student_public(db, s, request.app.state.policy)


@read.get("/students/{student_id}/hours")
def get_student_hours(student_id: str, request: Request, db: DB) -> list[PartProgressPublic]:
    s = db.get(Student, student_id)
    if s is None:
        raise HTTPException(404, "no such student")
    return _hours(db, s, request.app.state.policy)


@read.get("/sessions")
def list_sessions(db: DB, student: str | None = None, terminal: str | None = None) -> list[SessionPublic]:
    q = select(TrainingSession).order_by(TrainingSession.id.desc()).limit(MAX_LIST)
    if student:
        q = q.where(TrainingSession.student_id == student)
    if terminal:
        q = q.where(TrainingSession.terminal_id == terminal)
    return [
        SessionPublic(
            id=t.id,
            terminal=t.terminal_id,
            session=t.session,
            student=t.student_id,
            coach=t.coach_id,
            course=t.course,
            started_at=t.started_at,
            ended_at=t.ended_at,
            declared_minutes=t.declared_minutes,
            minutes_count=t.minutes_count,
            valid_minutes=t.valid_minutes,
        )
        for t in db.scalars(q)
    ]


@read.get("/sessions/{session_id}/minutes")
def session_minutes(session_id: int, db: DB) -> list[MinutePublic]:
    if db.get(TrainingSession, session_id) is None:
        raise HTTPException(404, "no such session")
    minutes = db.scalars(select(Minute).where(Minute.session_id == session_id).order_by(Minute.start, Minute.seq))
    return [
        MinutePublic(
            record_no=m.record_no,
            chain=m.chain,
            seq=m.seq,
            course=m.course,
            part=m.part,
            start=m.start,
            valid=m.valid,
            reasons=_reasons(m.reasons),
            facts=m.facts,
        )
        for m in minutes
    ]


@read.get("/alarms")
def list_alarms(db: DB, terminal: str | None = None, kind: str | None = None) -> list[AlarmPublic]:
    q = select(Alarm).order_by(Alarm.id.desc()).limit(MAX_LIST)
    if terminal:
        q = q.where(Alarm.terminal_id == terminal)
    if kind:
        q = q.where(Alarm.kind == kind)
    return [
        AlarmPublic(id=a.id, kind=a.kind, terminal=a.terminal_id, detail=a.detail, at=a.at, acknowledged=a.acknowledged)
        for a in db.scalars(q)
    ]


@read.get("/stage-reviews")
def list_stage_reviews(db: DB, status: str | None = None) -> list[StageReviewPublic]:
    q = select(StageReview).order_by(StageReview.id).limit(MAX_LIST)
    if status:
        q = q.where(StageReview.status == status)
    return [
        StageReviewPublic(
            notice_id=r.notice_id,
            student=r.student_id,
            part=r.part,
            status=r.status,
            attempts=r.attempts,
            next_attempt_at=r.next_attempt_at,
            last_error=r.last_error,
            reply=r.reply,
            notice=r.notice,
        )
        for r in db.scalars(q)
    ]


@write.post("/schools", status_code=201)
def create_school(body: SchoolCreate, db: DB, _: Admin) -> SchoolPublic:
    _check_id(body.id, "school")
    if db.get(School, body.id) is not None:
        raise HTTPException(409, "school exists")
    db.add(School(id=body.id, name=body.name, created_at=utcnow()))
    db.commit()
    return SchoolPublic(id=body.id, name=body.name)


@write.post("/coaches", status_code=201)
def create_coach(body: CoachCreate, request: Request, db: DB, _: Admin) -> PersonPublic:
    _check_id(body.id, "coach")
    _school_exists(db, body.school)
    _check_classes(body.classes)
    _check_template(body.face_template)
    if db.get(Coach, body.id) is not None:
        raise HTTPException(409, "coach exists")
    db.add(
        Coach(
            id=body.id,
            name=body.name,
            school_id=body.school,
            classes=body.classes,
            face_template=body.face_template,
            photo_sha256=body.photo_sha256,
            created_at=utcnow(),
        )
    )
    db.commit()
    _people_changed(request, body.school)
    return PersonPublic(
        id=body.id, name=body.name, school=body.school, classes=body.classes, photo_sha256=body.photo_sha256
    )


@write.post("/students", status_code=201)
def create_student(body: StudentCreate, request: Request, db: DB, _: Admin) -> StudentPublic:
    _check_id(body.id, "student")
    _school_exists(db, body.school)
    _check_classes([body.licence_class])
    _check_template(body.face_template)
    if db.get(Student, body.id) is not None:
        raise HTTPException(409, "student exists")
    s = Student(
        id=body.id,
        name=body.name,
        school_id=body.school,
        licence_class=body.licence_class,
        face_template=body.face_template,
        photo_sha256=body.photo_sha256,
        created_at=utcnow(),
    )
    db.add(s)
    db.commit()
    _people_changed(request, body.school)
    return _student_public(db, s, request.app.state.policy)


def metrics(request: Request) -> PlainTextResponse:
    lines: list[str] = []
    with request.app.state.session_factory() as db:
        records = db.scalar(select(func.count()).select_from(RawRecord)) or 0
        lines += ["# TYPE jiapei_records_stored_total counter", f"jiapei_records_stored_total {records}"]
        lines.append("# TYPE jiapei_minutes_total gauge")
        for valid, n in db.execute(select(Minute.valid, func.count()).group_by(Minute.valid)).all():
            verdict = "unjudged" if valid is None else ("valid" if valid else "invalid")
            lines.append(f'jiapei_minutes_total{{verdict="{verdict}"}} {n}')
        lines.append("# TYPE jiapei_rejections_total counter")
        for r in db.scalars(select(Rejection).order_by(Rejection.reason)):
            lines.append(f'jiapei_rejections_total{{reason="{_esc(r.reason)}"}} {r.count}')
        lines.append("# TYPE jiapei_terminal_last_seen_seconds gauge")
        for t in db.scalars(select(Terminal).where(Terminal.last_seen_at.is_not(None)).order_by(Terminal.id)):
            assert t.last_seen_at is not None
            lines.append(f'jiapei_terminal_last_seen_seconds{{terminal="{_esc(t.id)}"}} {t.last_seen_at.timestamp()}')
        pending = db.scalar(select(func.count()).select_from(StageReview).where(StageReview.status == REVIEW_PENDING))
        oldest = db.scalar(select(func.min(StageReview.created_at)).where(StageReview.status == REVIEW_PENDING))
        alarms = db.scalar(select(func.count()).select_from(Alarm).where(Alarm.acknowledged.is_(False))) or 0
    age = 0.0
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        age = max(0.0, (utcnow() - oldest).total_seconds())
    lines += [
        "# TYPE jiapei_outbox_pending gauge",
        f"jiapei_outbox_pending {pending or 0}",
        "# TYPE jiapei_outbox_oldest_age_seconds gauge",
        f"jiapei_outbox_oldest_age_seconds {age}",
        "# TYPE jiapei_alarms_open gauge",
        f"jiapei_alarms_open {alarms}",
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---------------------------------------------------------------------------------------------- factory
def create_app(
    settings: Settings,
    *,
    session_factory: SessionFactory | None = None,
    policy: Policy | None = None,
    on_people_change: PeopleChanged | None = None,
    trust: Trust | None = None,
) -> FastAPI:
    """The API app. Without ``session_factory`` an engine is made from ``settings.database_url`` (here, not at
    import); without ``policy`` the one named by ``settings.policy`` is loaded."""
    if session_factory is None:
        session_factory = make_session_factory(make_engine(settings.database_url))
    if policy is None:
        from server.app import load_configured_policy

        policy = load_configured_policy(settings.policy)
    app = FastAPI(title="jiapei server", version="1")
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.policy = policy
    app.state.on_people_change = on_people_change
    app.state.trust = trust
    app.state.admin_failures = RateLimiter(*ADMIN_FAILURE_LIMIT)
    app.include_router(read)
    app.include_router(write)
    app.include_router(register_trust(Depends(require_admin)))
    app.add_middleware(SecurityHeaders)
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=PlainTextResponse)
    app.add_exception_handler(IntegrityError, _conflict)
    return app


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"conflicts with stored data: {type(exc).__name__}"}, status_code=409)
