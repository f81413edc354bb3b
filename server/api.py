"""The operator API (FastAPI): schools, terminals, sessions with minute verdicts and tracks, alarms, stage reviews,
the review queue and its decisions, and the app factory that joins every router with the dashboard.

Built by :func:`create_app` from settings and (optionally) a session factory; nothing is created at import time.
Every route but ``/api/health``, ``/metrics``, ``/api/auth/token`` and ``/api/provision`` needs a bearer token and
checks role and tenancy (:mod:`server.auth`); people and photos are in :mod:`server.api_people`, accounts in
:mod:`server.api_operators`, terminal trust in :mod:`server.api_trust`. Errors are RFC 9457 problem details
(:mod:`server.problems`); lists are paginated (:mod:`server.api_deps`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.api_deps import (
    DB,
    Page,
    PeopleChanged,
    RowId,
    check_id,
    not_found,
    paginate,
    visible_session,
    visible_terminal,
)
from server.api_national import register as register_national
from server.api_schemas import (
    AlarmPublic,
    DecisionCreate,
    DecisionLogPublic,
    DecisionPublic,
    MinutePublic,
    ReasonPublic,
    ReviewItemPublic,
    SchoolCreate,
    SchoolFiguresPublic,
    SchoolPublic,
    SessionPublic,
    StageReviewPublic,
    TerminalPublic,
    TrackPoint,
)
from server.api_trust import Trust
from server.api_trust import register as register_trust
from server.auth import (
    BEARER_FAILURE_LIMIT,
    LOGIN_FAILURE_LIMIT,
    AnyRole,
    Eligibility,
    Principal,
    Regulator,
    Staff,
    StaffOrStudent,
    TokenIssuer,
    load_signing_key,
    require,
)
from server.clock import utcnow
from server.db import SessionFactory, make_engine, make_session_factory
from server.figures import school_figures
from server.models import (
    REVIEW_PENDING,
    ROLE_REGULATOR,
    ROLE_SCHOOL_ADMIN,
    ROLE_STUDENT,
    Alarm,
    Minute,
    RawRecord,
    Rejection,
    ReviewDecision,
    ReviewItem,
    School,
    StageReview,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import Policy
from server.review import append_decision, verify_log
from server.settings import Settings
from server.validation.reasons import REASONS
from webguard import RateLimiter, SecurityHeaders

log = logging.getLogger(__name__)

API_DESCRIPTION = ("Operator API of the jiapei timing system. Log in with POST /api/auth/token (OAuth2 password "
                   "flow), then send the access token as a bearer token. Errors are RFC 9457 problem details; lists "
                   "take limit/offset and answer X-Total-Count.")
#: The bootstrap admin token and any regulator: what the trust and national routers call "admin".
require_admin = require(ROLE_REGULATOR)
Admin = Regulator


# ---------------------------------------------------------------------------------------------- helpers
def terminal_public(t: Terminal) -> TerminalPublic:
    return TerminalPublic(id=t.id, car_plate=t.car_plate, school=t.school_id, key_id=t.key_id, status=t.status,
                          registered_at=t.registered_at, last_seen_at=t.last_seen_at, revoked_at=t.revoked_at,
                          revoke_reason=t.revoke_reason, vin=t.vin)  # fmt: skip


def reasons_public(codes: list[str]) -> list[ReasonPublic]:
    return [ReasonPublic(code=c, en=REASONS.get(c, (c, c))[0], zh=REASONS.get(c, (c, c))[1]) for c in codes]


def session_public(t: TrainingSession) -> SessionPublic:
    return SessionPublic(id=t.id, terminal=t.terminal_id, session=t.session, student=t.student_id, coach=t.coach_id,
                         course=t.course, started_at=t.started_at, ended_at=t.ended_at,
                         declared_minutes=t.declared_minutes, minutes_count=t.minutes_count,
                         valid_minutes=t.valid_minutes)  # fmt: skip


def minute_public(m: Minute) -> MinutePublic:
    return MinutePublic(record_no=m.record_no, chain=m.chain, seq=m.seq, course=m.course, part=m.part, start=m.start,
                        valid=m.valid, reasons=reasons_public(m.reasons), facts=m.facts)  # fmt: skip


def item_public(i: ReviewItem) -> ReviewItemPublic:
    return ReviewItemPublic(id=i.id, key=i.key, kind=i.kind, terminal=i.terminal_id, session=i.session,
                            record_no=i.record_no, student=i.student_id, parts=i.parts,
                            reasons=reasons_public(i.reasons), records=i.records, status=i.status,
                            created_at=i.created_at, updated_at=i.updated_at)  # fmt: skip


def track_points(minutes: list[Minute]) -> list[TrackPoint]:
    """The second-30 fixes of ``minutes`` (those that have one), in time order."""
    out: list[TrackPoint] = []
    for m in minutes:
        fix = m.facts.get("fix30") if isinstance(m.facts, dict) else None
        if not isinstance(fix, dict) or not isinstance(fix.get("lat"), int) or not isinstance(fix.get("lon"), int):
            continue
        speed = fix.get("speed")
        out.append(TrackPoint(record_no=m.record_no, start=m.start, lat=fix["lat"] / 1e6, lon=fix["lon"] / 1e6,
                              speed_kmh=(speed / 10 if isinstance(speed, int) else 0.0), valid=m.valid,
                              reasons=list(m.reasons), face_result=m.facts.get("face_result")))  # fmt: skip
    return out


def session_minutes_of(db: Session, session_id: int) -> list[Minute]:
    return list(db.scalars(select(Minute).where(Minute.session_id == session_id).order_by(Minute.start, Minute.seq)))


def _school_terminals(school: str) -> Any:
    return select(Terminal.id).where(Terminal.school_id == school)


def _school_students(school: str) -> Any:
    return select(Student.id).where(Student.school_id == school)


def visible_item(db: Session, p: Principal, item_id: int) -> ReviewItem:
    i = db.get(ReviewItem, item_id)
    if i is None:
        raise not_found("review item")
    if p.role == ROLE_SCHOOL_ADMIN:
        t, s = db.get(Terminal, i.terminal_id), db.get(Student, i.student_id)
        if not ((t and t.school_id == p.school) or (s and s.school_id == p.school)):
            raise not_found("review item")
    return i


def decide(db: Session, request: Request, p: Principal, body: DecisionCreate) -> ReviewDecision:
    """Log one decision (as ``p``) and recompute what it touches; shared by the API and the dashboard."""
    from server.ledger import Ledger

    if body.target_kind == "minute":
        minute = db.scalar(select(Minute).where(Minute.record_no == body.target))
        if minute is None:
            raise not_found("minute")
        session_id = minute.session_id
    else:
        terminal, _sep, name = body.target.partition("/")
        ts = db.scalar(select(TrainingSession).where(TrainingSession.terminal_id == terminal,
                                                     TrainingSession.session == name))  # fmt: skip
        if ts is None:
            raise not_found("session (target is {terminal}/{session})")
        session_id = ts.id
    operator = p.name if p.account_id is not None or not body.operator else f"{body.operator} ({p.name})"
    try:
        row = append_decision(db, target_kind=body.target_kind, target=body.target, decision=body.decision,
                              reason=body.reason.strip(), operator=operator[:64], at=utcnow())  # fmt: skip
    except ValueError as exc:
        raise HTTPException(422, {"reason": "bad_decision", "message": str(exc)}) from exc
    db.commit()
    log.info("review decision %s on %s %s by %s", body.decision, body.target_kind, body.target, operator)
    ledger = Ledger(request.app.state.session_factory, request.app.state.policies, utcnow)
    ledger.recompute_students(ledger.rejudge_sessions(ledger.affected_sessions({session_id})))
    return row


def decision_public(d: ReviewDecision) -> DecisionPublic:
    return DecisionPublic(id=d.id, target_kind=d.target_kind, target=d.target, decision=d.decision, reason=d.reason,
                          operator=d.operator, at=d.at, prev_hash=d.prev_hash, hash=d.hash)  # fmt: skip


# ---------------------------------------------------------------------------------------------- routes
api = APIRouter(prefix="/api")


@api.get("/health", tags=["operations"])
def health(db: DB) -> dict[str, Any]:
    db.execute(select(1))
    return {"status": "ok", "time": utcnow().isoformat()}


@api.get("/schools", tags=["schools"])
def list_schools(db: DB, p: Eligibility, page: Page, request: Request, response: Response) -> list[SchoolPublic]:
    """Every school (regulator, exam clerk); a school admin sees their own."""
    q = select(School).order_by(School.id)
    if p.school_scope() is not None:
        q = q.where(School.id == p.school_scope())
    return [SchoolPublic(id=s.id, name=s.name) for s in paginate(db, q, page, request, response)]


@api.get("/schools/{school_id}", tags=["schools"])
def get_school(school_id: str, db: DB, p: Eligibility) -> SchoolPublic:
    s = db.get(School, school_id)
    if s is None or not p.sees_school(s.id):
        raise not_found("school")
    return SchoolPublic(id=s.id, name=s.name)


@api.get("/schools/{school_id}/figures", tags=["schools"])
def get_school_figures(school_id: str, request: Request, db: DB, p: Eligibility) -> SchoolFiguresPublic:
    """Hours, anomaly rate and evaluation score of one school (formula: ``docs/dashboard.md``)."""
    s = db.get(School, school_id)
    if s is None or not p.sees_school(s.id):
        raise not_found("school")
    return school_figures(db, request.app.state.policy, [s.id])[0]


@api.get("/ranking", tags=["schools"])
def ranking(request: Request, db: DB, _p: AnyRole) -> list[SchoolFiguresPublic]:
    """The red/black list: every school ranked by evaluation score (public to every role, as in the Rizhao model)."""
    from server.figures import ranked

    return ranked(school_figures(db, request.app.state.policy, None))


@api.post("/schools", status_code=201, tags=["schools"])
def create_school(body: SchoolCreate, db: DB, _p: Regulator) -> SchoolPublic:
    check_id(body.id, "school")
    if db.get(School, body.id) is not None:
        raise HTTPException(409, {"reason": "exists", "message": "school exists"})
    db.add(School(id=body.id, name=body.name, created_at=utcnow()))
    db.commit()
    return SchoolPublic(id=body.id, name=body.name)


@api.get("/terminals", tags=["terminals"])
def list_terminals(db: DB, p: Staff, page: Page, request: Request, response: Response,
                   school: str | None = None, status: str | None = None) -> list[TerminalPublic]:  # fmt: skip
    q = select(Terminal).order_by(Terminal.id)
    if p.school_scope() is not None:
        q = q.where(Terminal.school_id == p.school_scope())
    if school:
        q = q.where(Terminal.school_id == school)
    if status:
        q = q.where(Terminal.status == status)
    return [terminal_public(t) for t in paginate(db, q, page, request, response)]


@api.get("/terminals/{terminal_id}", tags=["terminals"])
def get_terminal(terminal_id: str, db: DB, p: Staff) -> TerminalPublic:
    return terminal_public(visible_terminal(db, p, terminal_id))


@api.get("/sessions", tags=["sessions"])
def list_sessions(db: DB, p: StaffOrStudent, page: Page, request: Request, response: Response,
                  student: str | None = None, terminal: str | None = None, coach: str | None = None,
                  since: datetime | None = None, until: datetime | None = None) -> list[SessionPublic]:  # fmt: skip
    """Training sessions, newest first; a student sees only their own, a school admin those of its cars or students."""
    q = select(TrainingSession).order_by(TrainingSession.id.desc())
    if p.role == ROLE_STUDENT:
        q = q.where(TrainingSession.student_id == p.student)
    elif p.school_scope() is not None:
        school = p.school_scope() or ""
        q = q.where(or_(TrainingSession.terminal_id.in_(_school_terminals(school)),
                        TrainingSession.student_id.in_(_school_students(school))))  # fmt: skip
    if student:
        q = q.where(TrainingSession.student_id == student)
    if terminal:
        q = q.where(TrainingSession.terminal_id == terminal)
    if coach:
        q = q.where(TrainingSession.coach_id == coach)
    if since:
        q = q.where(TrainingSession.started_at >= _aware(since))
    if until:
        q = q.where(TrainingSession.started_at < _aware(until))
    return [session_public(t) for t in paginate(db, q, page, request, response)]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@api.get("/sessions/{session_id}", tags=["sessions"])
def get_session(session_id: RowId, db: DB, p: StaffOrStudent) -> SessionPublic:
    return session_public(visible_session(db, p, session_id))


@api.get("/sessions/{session_id}/minutes", tags=["sessions"])
def session_minutes(session_id: RowId, db: DB, p: StaffOrStudent) -> list[MinutePublic]:
    """Every minute of a session with its verdict and reasons (at most a session's length: not paginated)."""
    visible_session(db, p, session_id)
    return [minute_public(m) for m in session_minutes_of(db, session_id)]


@api.get("/sessions/{session_id}/track", tags=["sessions"])
def session_track(session_id: RowId, db: DB, p: StaffOrStudent) -> list[TrackPoint]:
    """The session's track: each minute's second-30 fix, with the minute's verdict."""
    visible_session(db, p, session_id)
    return track_points(session_minutes_of(db, session_id))


@api.get("/alarms", tags=["operations"])
def list_alarms(db: DB, p: Staff, page: Page, request: Request, response: Response,
                terminal: str | None = None, kind: str | None = None) -> list[AlarmPublic]:  # fmt: skip
    q = select(Alarm).order_by(Alarm.id.desc())
    if p.school_scope() is not None:
        q = q.where(Alarm.terminal_id.in_(_school_terminals(p.school_scope() or "")))
    if terminal:
        q = q.where(Alarm.terminal_id == terminal)
    if kind:
        q = q.where(Alarm.kind == kind)
    return [AlarmPublic(id=a.id, kind=a.kind, terminal=a.terminal_id, detail=a.detail, at=a.at,
                        acknowledged=a.acknowledged) for a in paginate(db, q, page, request, response)]  # fmt: skip


@api.get("/stage-reviews", tags=["eligibility"])
def list_stage_reviews(db: DB, p: Eligibility, page: Page, request: Request, response: Response,
                       status: str | None = None, student: str | None = None,
                       part: Annotated[int | None, Query(ge=1, le=4)] = None) -> list[StageReviewPublic]:  # fmt: skip
    """Stage-review notices (阶段报审) to the exam system and its answers (exam clerk, regulator, own school)."""
    q = select(StageReview).order_by(StageReview.id)
    if p.school_scope() is not None:
        q = q.where(StageReview.student_id.in_(_school_students(p.school_scope() or "")))
    if status:
        q = q.where(StageReview.status == status)
    if student:
        q = q.where(StageReview.student_id == student)
    if part:
        q = q.where(StageReview.part == part)
    return [StageReviewPublic(notice_id=r.notice_id, student=r.student_id, part=r.part, status=r.status,
                              attempts=r.attempts, next_attempt_at=r.next_attempt_at, last_error=r.last_error,
                              reply=r.reply, notice=r.notice)
            for r in paginate(db, q, page, request, response)]  # fmt: skip


@api.get("/reasons", tags=["review"])
def list_reasons() -> list[dict[str, Any]]:
    """Every reason code a verdict can carry, with its English and Chinese text, and whether it queues for review."""
    from server.validation.reasons import REASONS, REVIEW_REASONS

    return [{"code": str(code), "en": en, "zh": zh, "review": code in REVIEW_REASONS}
            for code, (en, zh) in REASONS.items()]  # fmt: skip


@api.get("/stage-reviews/key", tags=["eligibility"])
def stage_review_key(request: Request) -> dict[str, str]:
    """The public key the server signs stage-review notices with (for the exam side; public, no login)."""
    signer = getattr(request.app.state, "notice_signer", None)
    if signer is None:
        raise HTTPException(404, "this server signs no stage reviews (no forwarder configured)")
    return {"alg": "Ed25519", "kid": signer.key_id, "public_key_pem": signer.public_pem,
            "typ": "jiapei-stage-review+jws"}  # fmt: skip


@api.get("/review/items", tags=["review"])
def list_review_items(db: DB, p: Staff, page: Page, request: Request, response: Response,
                      status: str | None = "open", student: str | None = None, terminal: str | None = None,
                      reason: str | None = None) -> list[ReviewItemPublic]:  # fmt: skip
    """The review queue (``status=open`` by default; ``status=`` empty for every item); ``reason`` filters by code."""
    q = select(ReviewItem).order_by(ReviewItem.id)
    if p.school_scope() is not None:
        school = p.school_scope() or ""
        q = q.where(or_(ReviewItem.terminal_id.in_(_school_terminals(school)),
                        ReviewItem.student_id.in_(_school_students(school))))  # fmt: skip
    if status:
        q = q.where(ReviewItem.status == status)
    if student:
        q = q.where(ReviewItem.student_id == student)
    if terminal:
        q = q.where(ReviewItem.terminal_id == terminal)
    rows = paginate(db, q, page, request, response)
    return [item_public(i) for i in rows if not reason or reason in i.reasons]


@api.get("/review/items/{item_id}", tags=["review"])
def get_review_item(item_id: RowId, db: DB, p: Staff) -> ReviewItemPublic:
    return item_public(visible_item(db, p, item_id))


@api.get("/review/log", tags=["review"])
def review_log(db: DB, _p: Regulator, page: Page, request: Request, response: Response) -> DecisionLogPublic:
    """The hash-chained log of manual decisions, oldest first, with the result of re-verifying the whole chain."""
    check = verify_log(db)
    rows = paginate(db, select(ReviewDecision).order_by(ReviewDecision.id), page, request, response)
    return DecisionLogPublic(**check, decisions=[decision_public(d) for d in rows])


@api.post("/review/decisions", status_code=201, tags=["review"])
def post_decision(body: DecisionCreate, request: Request, db: DB, p: Regulator) -> DecisionPublic:
    """Pass or fail a minute or a session (regulator); the decision is logged under the caller's name, then the
    session and its student are recomputed (the decision overrides the automatic verdict from now on)."""
    return decision_public(decide(db, request, p, body))


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
    face_engine: Any = None,
) -> FastAPI:
    """The API app and the dashboard. Without ``session_factory`` an engine is made from ``settings.database_url``
    (here, not at import); without ``policy`` the one named by ``settings.policy`` is loaded; without
    ``face_engine`` (a :class:`biometrics.engine.FaceEngine` or a fake) one is made at the first photo enrolment."""
    from fastapi.staticfiles import StaticFiles

    from server import dashboard, problems, student_pages
    from server.api_operators import router as operators_router
    from server.api_people import router as people_router
    from server.api_platform import router as platform_router
    from server.api_supervision import router as supervision_router

    if session_factory is None:
        session_factory = make_session_factory(make_engine(settings.database_url))
    if policy is None:
        from server.app import load_configured_policies, load_configured_policy

        policy = load_configured_policy(settings.policy)
        policies: Sequence[Policy] = load_configured_policies(settings.policy)
    else:
        policies = (policy,)
    app = FastAPI(title="jiapei server", version="1", description=API_DESCRIPTION)
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.policy = policy
    app.state.policies = policies  # every version, for judging (run_server passes the same list)
    app.state.on_people_change = on_people_change
    app.state.trust = trust
    app.state.face_engine = face_engine
    app.state.bearer_failures = RateLimiter(*BEARER_FAILURE_LIMIT)
    app.state.login_failures = RateLimiter(*LOGIN_FAILURE_LIMIT)
    app.state.tokens = TokenIssuer(load_signing_key(settings), timedelta(minutes=settings.access_token_minutes),
                                   utcnow)  # fmt: skip
    app.include_router(api)
    app.include_router(operators_router)
    app.include_router(people_router)
    app.include_router(register_trust(Depends(require_admin)))
    app.include_router(register_national(Depends(require_admin)), dependencies=[Depends(require_admin)])
    app.include_router(dashboard.router)
    app.include_router(platform_router)
    app.include_router(supervision_router)
    app.include_router(student_pages.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders)
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=PlainTextResponse, tags=["operations"])
    problems.install(app)
    return app
