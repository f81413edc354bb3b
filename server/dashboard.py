"""The operators' dashboard: server-rendered pages (Jinja2), assets shipped in ``server/static`` (no CDN, no tiles).

Pages (``/dashboard/…``), each checked for role and tenancy exactly as the API is (:mod:`server.auth`):

=======================  =====================================================  ===============================
page                     shows                                                  roles
=======================  =====================================================  ===============================
``fleet``                cars in training on a vector map (teaching areas,      regulator, school admin (own)
                         tracks from recent minutes' second-30 fixes), live
``review``               the anomaly queue                                      regulator, school admin (own)
``review/{id}``          evidence side by side: track, faces, minute table;     regulator decides; school admin
                         the decision form                                      reads its own
``students/{id}``        progress per part (chart), hours over time, sessions   regulator, school admin, exam
                                                                                clerk, the student
``schools/{id}``         hours, anomaly rate, evaluation score, students        regulator, exam clerk, own admin
``ranking``              the red/black list (formula: :mod:`server.figures`)    every role
``eligibility``          stage reviews and parts complete                       regulator, exam clerk, own admin
=======================  =====================================================  ===============================

Login puts the access token in an HttpOnly, SameSite=Strict cookie scoped to ``/dashboard``; every form also carries
a CSRF token equal to a second cookie (double submit).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.api_deps import RowId, get_db, not_found, visible_session, visible_student
from server.auth import Principal, TokenIssuer, login, principal_from_token
from server.clock import utcnow
from server.figures import BLACK_MAX_SCORE, MIN_JUDGED_MINUTES, RED_MIN_SCORE, ranked, school_figures
from server.mapview import Viewport
from server.models import (
    ITEM_OPEN,
    ROLE_EXAM_CLERK,
    ROLE_REGULATOR,
    ROLE_SCHOOL_ADMIN,
    ROLE_STUDENT,
    Coach,
    Minute,
    ReviewItem,
    School,
    StageReview,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import Policy
from server.validation.reasons import REASONS

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"
SESSION_COOKIE = "jiapei_session"
CSRF_COOKIE = "jiapei_csrf"
BEIJING = ZoneInfo("Asia/Shanghai")
#: Minutes of track drawn behind each car on the fleet map, and how recent a car's last minute must be for it to
#: count as "training" (a minute record arrives every 60 s; three missed ones and the car is shown as gone quiet).
FLEET_TRACK_MINUTES = 15
FLEET_LIVE_MINUTES = 3
MAX_QUEUE_ROWS = 200
MAX_FLEET_TERMINALS = 500

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _bj(t: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return t.astimezone(BEIJING).strftime(fmt) if t else "—"


def _reason_label(code: str) -> str:
    en, zh = REASONS.get(code, (code, code))
    return f"{zh} · {en}"


templates.env.filters["bj"] = _bj
templates.env.filters["reason"] = _reason_label
templates.env.filters["reason_zh"] = lambda code: REASONS.get(code, (code, code))[1]
templates.env.filters["reason_en"] = lambda code: REASONS.get(code, (code, code))[0]
templates.env.globals["ROLE_NAMES"] = {ROLE_REGULATOR: "监管 regulator", ROLE_SCHOOL_ADMIN: "驾校 school admin",
                                       ROLE_EXAM_CLERK: "考试 exam clerk", ROLE_STUDENT: "学员 student",
                                       "police": "公安交管 police",
                                       "market_regulator": "市场监管 market regulation"}  # fmt: skip


# ---------------------------------------------------------------------------------------------- auth
def dashboard_principal(request: Request) -> Principal:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise HTTPException(401, "log in")
    with request.app.state.session_factory() as db:
        p = principal_from_token(request, db, token)
    if p.account_id is None:  # the bootstrap admin token is for the API, not a browser session
        raise HTTPException(401, "log in with an account")
    return p


Viewer = Annotated[Principal, Depends(dashboard_principal)]
DB = Annotated[Session, Depends(get_db)]


def need(p: Principal, *roles: str) -> None:
    if p.role not in roles:
        raise HTTPException(403, f"role {p.role} may not see this page")


def check_csrf(request: Request, token: str) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), token.encode()):
        raise HTTPException(403, "the form is stale (CSRF check failed): reload the page and try again")


def render(request: Request, name: str, p: Principal | None, status: int = 200, **context: Any) -> HTMLResponse:
    context.update(p=p, csrf=request.cookies.get(CSRF_COOKIE, ""), path=request.url.path)
    return templates.TemplateResponse(request, name, context, status_code=status)


def home_of(p: Principal) -> str:
    if p.role == ROLE_STUDENT:
        return f"/dashboard/students/{p.student}"
    if p.role == ROLE_SCHOOL_ADMIN:
        return f"/dashboard/schools/{p.school}"
    if p.role == ROLE_EXAM_CLERK:
        return "/dashboard/eligibility"
    return "/dashboard/fleet"


@router.get("/login")
def login_page(request: Request, next: str = "") -> HTMLResponse:
    return render(request, "login.html", None, next=next if next.startswith("/dashboard") else "")


@router.post("/login")
def login_submit(request: Request, db: DB, username: Annotated[str, Form(max_length=64)],
                 password: Annotated[str, Form(max_length=256)],
                 next: Annotated[str, Form(max_length=300)] = "") -> Response:  # fmt: skip
    try:
        account = login(request, db, username, password)
    except HTTPException as exc:
        message = "用户名或密码错误 · wrong username or password" if exc.status_code == 401 else str(exc.detail)
        return render(request, "login.html", None, status=exc.status_code, error=message, next=next, username=username)
    account.last_login_at = utcnow()
    db.commit()
    tokens: TokenIssuer = request.app.state.tokens
    from server.auth import principal_of

    target = next if next.startswith("/dashboard/") and "//" not in next else home_of(principal_of(account))
    r = RedirectResponse(target, status_code=303)
    secure = bool(request.app.state.settings.dashboard_cookie_secure)
    age = int(tokens.lifetime.total_seconds())
    r.set_cookie(SESSION_COOKIE, tokens.issue(account), max_age=age, path="/dashboard", httponly=True,
                 samesite="strict", secure=secure)  # fmt: skip
    r.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), max_age=age, path="/dashboard", httponly=True,
                 samesite="strict", secure=secure)  # fmt: skip
    log.info("%s logged in to the dashboard", account.username)
    return r


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    r = RedirectResponse("/dashboard/login", status_code=303)
    r.delete_cookie(SESSION_COOKIE, path="/dashboard")
    r.delete_cookie(CSRF_COOKIE, path="/dashboard")
    return r


@router.get("/")
def home(p: Viewer) -> Response:
    return RedirectResponse(home_of(p), status_code=303)


# ---------------------------------------------------------------------------------------------- fleet map
def _areas(policy: Policy, schools: set[str] | None) -> list[Any]:
    return [a for a in policy.teaching_areas if schools is None or a.school in schools]


def _fix(m: Minute) -> tuple[float, float] | None:
    fix = m.facts.get("fix30") if isinstance(m.facts, dict) else None
    if isinstance(fix, dict) and isinstance(fix.get("lat"), int) and isinstance(fix.get("lon"), int):
        return fix["lat"] / 1e6, fix["lon"] / 1e6
    return None


def fleet_view(db: Session, policy: Policy, p: Principal, at: datetime) -> dict[str, Any]:
    """Cars with minutes in the ``FLEET_TRACK_MINUTES`` before ``at``: track, last position, status; teaching areas."""
    tq = select(Terminal).order_by(Terminal.id).limit(MAX_FLEET_TERMINALS)
    if p.school_scope() is not None:
        tq = tq.where(Terminal.school_id == p.school_scope())
    terminals = {t.id: t for t in db.scalars(tq)}
    since = at - timedelta(minutes=FLEET_TRACK_MINUTES)
    minutes = db.scalars(select(Minute).where(Minute.terminal_id.in_(list(terminals)), Minute.start > since,
                                              Minute.start <= at).order_by(Minute.start))  # fmt: skip
    by_terminal: dict[str, list[Minute]] = defaultdict(list)
    for m in minutes:
        by_terminal[m.terminal_id].append(m)
    schools = None if p.school_scope() is None else {p.school_scope() or ""}
    areas = _areas(policy, schools)
    cars: list[dict[str, Any]] = []
    for tid, ms in by_terminal.items():
        track = [f for f in (_fix(m) for m in ms) if f is not None]
        if not track:
            continue
        last = ms[-1]
        live = last.start > at - timedelta(minutes=FLEET_LIVE_MINUTES)
        flagged = [m for m in ms if m.valid is False]
        cars.append({"terminal": tid, "plate": terminals[tid].car_plate, "track": track, "last": track[-1],
                     "student": last.student_id, "coach": last.coach_id, "course": last.course, "at": last.start,
                     "status": "training" if live else "quiet", "flagged": len(flagged),
                     "speed": (last.facts.get("max_speed") or 0) / 10,
                     "session": last.session_id})  # fmt: skip
    # the view holds the teaching areas and where the cars are now; a track that leaves it (a GPS jump) is clipped
    vp = Viewport.fit([pt for a in areas for pt in a.polygon] + [c["last"] for c in cars])
    names = {s.id: s.name for s in db.scalars(select(Student).where(Student.id.in_({c["student"] for c in cars})))}
    for c in cars:
        c["student_name"] = names.get(c["student"], "")
        c["d"] = vp.path(c["track"])
        c["x"], c["y"] = vp.xy(*c["last"])
    _place_labels(cars)
    idle = [t for tid, t in terminals.items() if tid not in {c["terminal"] for c in cars}]
    bar = vp.scale_bar()
    return {"vp": vp, "cars": sorted(cars, key=lambda c: c["terminal"]), "idle": idle, "bar": bar,
            "areas": [{"name": a.name, "school": a.school, "parts": sorted(a.parts), "d": vp.path(a.polygon, True),
                       "label": vp.xy(*_north_west(a.polygon))} for a in areas], "at": at}  # fmt: skip


LABEL_W, LABEL_H = 74.0, 16.0  # a plate's label on the map, SVG units


def _place_labels(cars: list[dict[str, Any]]) -> None:
    """Labels beside their cars, moved down until no two overlap (cars training close together)."""
    placed: list[tuple[float, float]] = []
    for c in sorted(cars, key=lambda c: (c["y"], c["x"])):
        lx, ly = c["x"] + 13, c["y"] + 4
        while any(abs(lx - px) < LABEL_W and abs(ly - py) < LABEL_H for px, py in placed):
            ly += LABEL_H
        placed.append((lx, ly))
        c["lx"], c["ly"] = round(lx - c["x"], 1), round(ly - c["y"], 1)


def _north_west(polygon: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    return max(q[0] for q in polygon), min(q[1] for q in polygon)


def _at(at: str | None) -> tuple[datetime, bool]:
    if not at:
        return utcnow(), True
    try:
        t = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(422, "at: an ISO 8601 time") from exc
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC), False


@router.get("/fleet")
def fleet(request: Request, p: Viewer, db: DB, at: str | None = None) -> HTMLResponse:
    need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN)
    when, live = _at(at)
    return render(request, "fleet.html", p, live=live, at_param=at or "",
                  **fleet_view(db, request.app.state.policy, p, when))  # fmt: skip


@router.get("/fleet/map")
def fleet_map(request: Request, p: Viewer, db: DB, at: str | None = None) -> HTMLResponse:
    """The map alone (what the page's script swaps in every few seconds)."""
    need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN)
    when, _live = _at(at)
    return render(request, "fleet_map.html", p, **fleet_view(db, request.app.state.policy, p, when))


# ---------------------------------------------------------------------------------------------- review
def _items_query(p: Principal, status: str | None) -> Any:
    q = select(ReviewItem).order_by(ReviewItem.id).limit(MAX_QUEUE_ROWS)
    if status:
        q = q.where(ReviewItem.status == status)
    if p.school_scope() is not None:
        school = p.school_scope() or ""
        q = q.where(or_(ReviewItem.terminal_id.in_(select(Terminal.id).where(Terminal.school_id == school)),
                        ReviewItem.student_id.in_(select(Student.id).where(Student.school_id == school))))  # fmt: skip
    return q


@router.get("/review")
def review_queue(request: Request, p: Viewer, db: DB, status: str = ITEM_OPEN,
                 done: int | None = None) -> HTMLResponse:
    need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN)
    items = list(db.scalars(_items_query(p, status or None)))
    names = {s.id: s.name for s in db.scalars(select(Student).where(Student.id.in_({i.student_id for i in items})))}
    return render(request, "review_queue.html", p, items=items, names=names, tab=status, done=done)


@router.get("/review/{item_id}")
def review_item(request: Request, item_id: RowId, p: Viewer, db: DB) -> HTMLResponse:
    need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN)
    from server.api import visible_item

    item = visible_item(db, p, item_id)
    ts = db.scalar(select(TrainingSession).where(TrainingSession.terminal_id == item.terminal_id,
                                                 TrainingSession.session == item.session))  # fmt: skip
    minutes = list(db.scalars(select(Minute).where(Minute.session_id == ts.id).order_by(Minute.start, Minute.seq))
                   ) if ts else []  # fmt: skip
    flagged = set(item.records)
    student = db.get(Student, item.student_id)
    coach = db.get(Coach, ts.coach_id) if ts and ts.coach_id else None
    terminal = db.get(Terminal, item.terminal_id)
    school = terminal.school_id if terminal else (student.school_id if student else None)
    areas = _areas(request.app.state.policy, {school} if school else set())
    fixes = [(m, _fix(m)) for m in minutes]
    track_pts = [f for _m, f in fixes if f]
    # the view holds the track (the teaching area is drawn, clipped, behind it)
    vp = Viewport.fit(track_pts or [pt for a in areas for pt in a.polygon], 560, 440)
    dots = [{"x": vp.xy(*f)[0], "y": vp.xy(*f)[1], "bad": m.record_no in flagged or m.valid is False,
             "no": m.record_no, "t": _bj(m.start, "%H:%M")} for m, f in fixes if f]  # fmt: skip
    faces = [{"t": _bj(m.start, "%H:%M"), "result": (m.facts or {}).get("face_result")} for m in minutes]
    from server.api_people import latest_photo

    photos = {"student": bool(student and latest_photo(db, "student", student.id)),
              "coach": bool(coach and latest_photo(db, "coach", coach.id))}  # fmt: skip
    return render(request, "review_item.html", p, item=item, ts=ts, minutes=minutes, flagged=flagged, student=student,
                  coach=coach, terminal=terminal, vp=vp, track=vp.path([f for _m, f in fixes if f]), dots=dots,
                  areas=[{"d": vp.path(a.polygon, True), "name": a.name} for a in areas], bar=vp.scale_bar(),
                  faces=faces, photos=photos,
                  can_decide=p.role == ROLE_REGULATOR and item.status == ITEM_OPEN)  # fmt: skip


@router.post("/review/{item_id}/decide")
def review_decide(request: Request, item_id: RowId, p: Viewer, db: DB, decision: Annotated[str, Form(max_length=8)],
                  reason: Annotated[str, Form(max_length=2000)],
                  csrf: Annotated[str, Form(max_length=100)] = "") -> Response:  # fmt: skip
    need(p, ROLE_REGULATOR)
    check_csrf(request, csrf)
    from server.api import decide, visible_item
    from server.api_schemas import DecisionCreate

    item = visible_item(db, p, item_id)
    if decision not in ("pass", "fail") or not reason.strip():
        raise HTTPException(422, "choose pass or fail and give a reason")
    target_kind = "minute" if item.kind == "minute" and item.record_no else "session"
    target = item.record_no if target_kind == "minute" and item.record_no else f"{item.terminal_id}/{item.session}"
    decide(db, request, p, DecisionCreate(target_kind=target_kind, target=target, decision=decision, reason=reason))
    return RedirectResponse(f"/dashboard/review?done={item_id}", status_code=303)


@router.get("/photos/{kind}/{person_id}")
def photo(kind: str, person_id: str, p: Viewer, db: DB) -> Response:
    """An enrolment photo for the evidence view (same rules as the API's photo routes)."""
    from server.api_deps import visible_coach
    from server.api_people import _photo_response

    if kind == "student":
        need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_STUDENT)
        visible_student(db, p, person_id)
    elif kind == "coach":
        need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN)
        visible_coach(db, p, person_id)
    else:
        raise not_found("photo")
    return _photo_response(db, kind, person_id, p)


# ---------------------------------------------------------------------------------------------- students, schools
def _progress_chart(hours: list[Any]) -> list[dict[str, Any]]:
    """Bars of the progress chart: per part, valid and required minutes scaled to the longest."""
    top = max([h.required_minutes for h in hours] + [h.valid_minutes for h in hours] + [1])
    return [{"part": h.part, "valid": h.valid_minutes, "required": h.required_minutes, "complete": h.complete,
             "w_valid": round(320 * min(h.valid_minutes, top) / top, 1),
             "w_req": round(320 * h.required_minutes / top, 1),
             "pct": min(100, round(100 * h.valid_minutes / h.required_minutes)) if h.required_minutes else 100}
            for h in hours]  # fmt: skip


def _cumulative(db: Session, student_id: str) -> dict[str, Any]:
    """Valid minutes over time per part: polylines for the chart of hours over days."""
    rows = db.execute(select(Minute.start, Minute.part).where(Minute.student_id == student_id, Minute.valid.is_(True))
                      .order_by(Minute.start)).all()  # fmt: skip
    if not rows:
        return {"lines": [], "days": [], "max": 0}
    t0, t1 = rows[0][0], rows[-1][0]
    span = max((t1 - t0).total_seconds(), 3600.0)
    counts: dict[int, int] = defaultdict(int)
    series: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for start, part in rows:
        counts[part] += 1
        series[part].append(((start - t0).total_seconds() / span, counts[part]))
    top = max(counts.values())
    lines = [{"part": part, "d": "M" + " L".join(f"{40 + 400 * x:.1f},{170 - 150 * n / top:.1f}" for x, n in pts),
              "n": counts[part]} for part, pts in sorted(series.items())]  # fmt: skip
    return {"lines": lines, "start": t0, "end": t1, "max": top}


@router.get("/students/{student_id}")
def student_page(request: Request, student_id: str, p: Viewer, db: DB) -> HTMLResponse:
    from server.api_people import hours_of

    s = visible_student(db, p, student_id)
    hours = hours_of(db, s, request.app.state.policy)
    sessions = []
    if p.role != ROLE_EXAM_CLERK:
        sessions = list(db.scalars(select(TrainingSession).where(TrainingSession.student_id == s.id)
                                   .order_by(TrainingSession.started_at.desc()).limit(100)))  # fmt: skip
    reviews = list(db.scalars(select(StageReview).where(StageReview.student_id == s.id).order_by(StageReview.part)))
    school = db.get(School, s.school_id)
    return render(request, "student.html", p, s=s, school=school, hours=hours, bars=_progress_chart(hours),
                  cum=_cumulative(db, s.id), sessions=sessions, reviews=reviews,
                  policy=request.app.state.policy)  # fmt: skip


@router.get("/sessions/{session_id}")
def session_page(request: Request, session_id: RowId, p: Viewer, db: DB) -> HTMLResponse:
    need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_STUDENT)
    ts = visible_session(db, p, session_id)
    minutes = list(db.scalars(select(Minute).where(Minute.session_id == ts.id).order_by(Minute.start, Minute.seq)))
    fixes = [f for f in (_fix(m) for m in minutes) if f]
    vp = Viewport.fit(fixes, 560, 380)
    dots = [{"x": vp.xy(*f)[0], "y": vp.xy(*f)[1], "bad": m.valid is False} for m in minutes if (f := _fix(m))]
    return render(request, "session.html", p, ts=ts, minutes=minutes, track=vp.path(fixes), dots=dots, vp=vp,
                  bar=vp.scale_bar())  # fmt: skip


@router.get("/schools/{school_id}")
def school_page(request: Request, school_id: str, p: Viewer, db: DB) -> HTMLResponse:
    need(p, ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_EXAM_CLERK)
    school = db.get(School, school_id)
    if school is None or not p.sees_school(school.id):
        raise not_found("school")
    policy = request.app.state.policy
    figures = school_figures(db, policy, [school.id])[0]
    from server.api_people import hours_of

    students = [(s, hours_of(db, s, policy)) for s in db.scalars(select(Student).where(Student.school_id == school.id)
                                                                  .order_by(Student.id).limit(200))]  # fmt: skip
    terminals = list(db.scalars(select(Terminal).where(Terminal.school_id == school.id).order_by(Terminal.id)))
    coaches = list(db.scalars(select(Coach).where(Coach.school_id == school.id).order_by(Coach.id).limit(200)))
    return render(request, "school.html", p, school=school, f=figures, students=students, terminals=terminals,
                  coaches=coaches)  # fmt: skip


@router.get("/ranking")
def ranking_page(request: Request, p: Viewer, db: DB) -> HTMLResponse:
    rows = ranked(school_figures(db, request.app.state.policy, None))
    return render(request, "ranking.html", p, rows=rows, red_min=RED_MIN_SCORE, black_max=BLACK_MAX_SCORE,
                  min_minutes=MIN_JUDGED_MINUTES)  # fmt: skip


@router.get("/eligibility")
def eligibility_page(request: Request, p: Viewer, db: DB) -> HTMLResponse:
    need(p, ROLE_REGULATOR, ROLE_EXAM_CLERK, ROLE_SCHOOL_ADMIN)
    q = select(StageReview).order_by(StageReview.id.desc()).limit(MAX_QUEUE_ROWS)
    sq = select(Student).order_by(Student.id).limit(MAX_QUEUE_ROWS)
    if p.school_scope() is not None:
        q = q.where(StageReview.student_id.in_(select(Student.id).where(Student.school_id == p.school_scope())))
        sq = sq.where(Student.school_id == p.school_scope())
    from server.api_people import hours_of

    policy = request.app.state.policy
    students = [(s, hours_of(db, s, policy)) for s in db.scalars(sq)]
    return render(request, "eligibility.html", p, reviews=list(db.scalars(q)), students=students)
