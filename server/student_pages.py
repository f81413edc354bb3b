"""The student's journey (学员端): mobile web pages in zh-CN, server-rendered (Jinja2), assets in ``server/static``.

Laid out for a phone (375×667 and up). Public: ``/student/`` (choose a school: price, evaluation score, pass rates,
red/black status) and ``/student/enrol`` (register and enrol). Logged in as a student (cookie scoped to ``/student``,
HttpOnly, SameSite=Strict; forms carry a double-submit CSRF token): ``home`` (fee, escrow, next booking), ``pay``
(the bank collects the fee into escrow), ``book`` (slots of the school, book and cancel), ``hours`` (per part, each
session's verdicts), ``sessions/{id}`` (why a minute did not count; rate the session), ``complaints`` (file and
follow), ``withdraw`` (refund of what was not released).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from firmware_protocols.errors import ProtocolError
from firmware_protocols.identifiers import check_national_id
from server.api_deps import get_db
from server.api_platform import escrow_service, escrow_view
from server.auth import (
    Principal,
    TokenIssuer,
    check_password_rules,
    hash_password,
    login,
    principal_from_token,
)
from server.clock import utcnow
from server.dashboard import _bj, templates
from server.escrow.service import EscrowRefused
from server.figures import ranked, school_figures
from server.models import (
    BOOKING_BOOKED,
    ROLE_STUDENT,
    Booking,
    Complaint,
    Enrolment,
    Minute,
    OperatorAccount,
    Rating,
    School,
    SchoolOffer,
    Slot,
    Student,
    TrainingSession,
)
from server.platform import PlatformRefused, active_enrolment, book, booked_count, cancel_booking, complaint_deadlines
from server.platform import file_complaint as file_complaint_row
from server.platform import rate_session as rate_session_row

log = logging.getLogger(__name__)
router = APIRouter(prefix="/student", include_in_schema=False)
COOKIE = "jiapei_student"
CSRF = "jiapei_student_csrf"
#: Slots shown on the booking page: the next days of the school's slots.
BOOKING_DAYS = 7
EVENT_ZH = {"enrolment_confirmed": "报名确认", "part_1_accepted": "科目一通过审核", "part_2_accepted": "科目二通过审核",
            "part_3_accepted": "科目三通过审核", "part_4_accepted": "科目四通过审核"}  # fmt: skip
STATUS_ZH = {"waiting_funds": "待资金到账", "ready": "待发送", "sent": "银行处理中", "settled": "已完成",
             "failed": "失败(重试)", "cancelled": "已取消", "booked": "已预约", "cancelled_b": "已取消",
             "attended": "已到训", "no_show": "缺席", "filed": "已提交", "assigned": "已受理", "answered": "驾校已答复",
             "closed": "已关闭", "active": "在训", "withdrawn": "已退学", "transferred": "已转校"}  # fmt: skip
LIST_ZH = {"red": "红榜", "black": "黑榜", "none": "—", "insufficient_data": "数据不足"}


def yuan(fen: int | None) -> str:
    """Fen as yuan for people: ``123456`` → ``¥1,234.56`` (display only; money stays integer fen)."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


templates.env.filters["yuan"] = yuan
templates.env.globals["STATUS_ZH"] = STATUS_ZH
templates.env.globals["EVENT_ZH"] = EVENT_ZH
templates.env.globals["LIST_ZH"] = LIST_ZH
DB = Annotated[Session, Depends(get_db)]


def student_principal(request: Request) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token:
        raise HTTPException(401, "log in")
    with request.app.state.session_factory() as db:
        p = principal_from_token(request, db, token)
    if p.role != ROLE_STUDENT or not p.student:
        raise HTTPException(403, "学员页面仅限学员账号 · student accounts only")
    return p


Me = Annotated[Principal, Depends(student_principal)]


def check_csrf(request: Request, token: str) -> None:
    cookie = request.cookies.get(CSRF, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), token.encode()):
        raise HTTPException(403, "页面已过期，请刷新后重试 · the form is stale (CSRF)")


def page(request: Request, name: str, p: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.update(p=p, csrf=request.cookies.get(CSRF, ""), path=request.url.path, bj=_bj)
    return templates.TemplateResponse(request, f"student/{name}", ctx, status_code=status)


def _session_cookie(request: Request, r: Response, account: OperatorAccount) -> Response:
    tokens: TokenIssuer = request.app.state.tokens
    age = int(tokens.lifetime.total_seconds())
    secure = bool(request.app.state.settings.dashboard_cookie_secure)
    r.set_cookie(COOKIE, tokens.issue(account), max_age=age, path="/student", httponly=True, samesite="strict",
                 secure=secure)  # fmt: skip
    r.set_cookie(CSRF, secrets.token_urlsafe(24), max_age=age, path="/student", httponly=True, samesite="strict",
                 secure=secure)  # fmt: skip
    return r


def go(url: str, msg: str = "") -> RedirectResponse:
    from urllib.parse import quote

    return RedirectResponse(url + (f"?msg={quote(msg)}" if msg else ""), status_code=303)


# ---------------------------------------------------------------------------------------------- public
def school_cards(db: Session, policy: Any) -> list[dict[str, Any]]:
    figures = {f.school: f for f in ranked(school_figures(db, policy, None))}
    offers: dict[str, dict[str, int]] = {}
    for o in db.scalars(select(SchoolOffer)):
        offers.setdefault(o.school_id, {})[o.licence_class] = o.price_fen
    cards = [{"f": f, "offers": offers.get(f.school, {})} for f in figures.values()]
    return sorted(cards, key=lambda c: (c["f"].rank is None, c["f"].rank or 0, c["f"].school))


@router.get("/")
def choose_school(request: Request, db: DB, msg: str = "") -> HTMLResponse:
    return page(request, "schools.html", None, cards=school_cards(db, request.app.state.policy), msg=msg)


@router.get("/enrol")
def enrol_form(request: Request, db: DB, school: str = "") -> HTMLResponse:
    s = db.get(School, school)
    offers = list(db.scalars(select(SchoolOffer).where(SchoolOffer.school_id == school))) if s else []
    return page(request, "enrol.html", None, school=s, offers=offers)


@router.post("/enrol")
def enrol_submit(request: Request, db: DB, school: Annotated[str, Form(max_length=16)],
                 id: Annotated[str, Form(max_length=16)], name: Annotated[str, Form(min_length=1, max_length=200)],
                 licence_class: Annotated[str, Form(max_length=4)],
                 username: Annotated[str, Form(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")],
                 password: Annotated[str, Form(max_length=256)],
                 consent: Annotated[bool, Form()] = False) -> Response:  # fmt: skip
    """Register (a student record and a student account) and enrol at the chosen school in one step; the school
    takes the enrolment photo at its office (face template), as registration does today."""
    s = db.get(School, school)
    offers = list(db.scalars(select(SchoolOffer).where(SchoolOffer.school_id == school))) if s else []

    def again(error: str) -> HTMLResponse:
        return page(request, "enrol.html", None, status=422, school=s, offers=offers, error=error,
                    form={"id": id, "name": name, "username": username, "licence_class": licence_class})  # fmt: skip

    if s is None:
        return again("请选择驾校")
    try:
        check_national_id(id, "student")
        check_password_rules(password)
    except (ProtocolError, ValueError) as exc:
        return again(f"信息有误：{exc}")
    if not consent:
        return again("请阅读并同意个人信息处理规则（人脸信息属于敏感个人信息）")
    taken = db.scalar(select(OperatorAccount.id).where(OperatorAccount.username == username))
    if db.get(Student, id) is not None or taken is not None:
        return again("该证件号或用户名已注册，请直接登录")
    now = utcnow()
    st = Student(id=id, name=name, school_id=school, licence_class=licence_class, face_template="", photo_sha256=None,
                 created_at=now)  # fmt: skip
    account = OperatorAccount(username=username, password_hash=hash_password(password), role=ROLE_STUDENT,
                              school_id=school, student_id=id, created_at=now)  # fmt: skip
    db.add(st)
    db.flush()
    db.add(account)
    try:
        escrow_service(request).enrol(db, st, school)
    except EscrowRefused as exc:
        db.rollback()
        return again(str(exc))
    db.commit()
    log.info("student %s registered and enrolled at %s online", id, school)
    return _session_cookie(request, go("/student/home", "报名成功！请缴纳学费到银行监管账户。"), account)


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html", None)


@router.post("/login")
def login_submit(request: Request, db: DB, username: Annotated[str, Form(max_length=64)],
                 password: Annotated[str, Form(max_length=256)]) -> Response:  # fmt: skip
    try:
        account = login(request, db, username, password)
    except HTTPException as exc:
        return page(request, "login.html", None, status=exc.status_code, error="用户名或密码错误", username=username)
    if account.role != ROLE_STUDENT:
        return page(request, "login.html", None, status=403, error="请使用学员账号登录", username=username)
    account.last_login_at = utcnow()
    db.commit()
    return _session_cookie(request, go("/student/home"), account)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    r = go("/student/")
    r.delete_cookie(COOKIE, path="/student")
    r.delete_cookie(CSRF, path="/student")
    return r


# ---------------------------------------------------------------------------------------------- logged in
def _me(db: Session, p: Principal) -> Student:
    st = db.get(Student, p.student or "")
    if st is None:
        raise HTTPException(404, "no such student")
    return st


@router.get("/home")
def home(request: Request, p: Me, db: DB, msg: str = "") -> HTMLResponse:
    st = _me(db, p)
    svc = escrow_service(request)
    e = active_enrolment(db, st.id)
    last = e or db.scalar(select(Enrolment).where(Enrolment.student_id == st.id).order_by(Enrolment.id.desc()))
    upcoming = db.execute(select(Booking, Slot).join(Slot, Slot.id == Booking.slot_id).where(
        Booking.student_id == st.id, Booking.status == BOOKING_BOOKED, Slot.ends_at > utcnow())
        .order_by(Slot.starts_at).limit(3)).all()  # fmt: skip
    return page(request, "home.html", p, st=st, school=db.get(School, st.school_id), e=last,
                outstanding=svc.outstanding(db, e) if e else 0, money=escrow_view(db, svc, st.id),
                upcoming=upcoming, msg=msg)  # fmt: skip


@router.post("/pay")
def pay(request: Request, p: Me, db: DB, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    e = active_enrolment(db, p.student or "")
    if e is None:
        return go("/student/home", "没有在训的报名")
    enrolment_id = e.id
    db.rollback()  # the service writes in its own transactions (SQLite has one writer); e is expired now
    try:
        escrow_service(request).request_payment(enrolment_id)
    except EscrowRefused as exc:
        return go("/student/home", str(exc))
    return go("/student/home", "已提交银行扣款，到账后资金由银行监管，按培训进度拨付驾校。")


@router.get("/book")
def booking_page(request: Request, p: Me, db: DB, msg: str = "") -> HTMLResponse:
    st = _me(db, p)
    now = utcnow()
    slots = list(db.scalars(select(Slot).where(Slot.school_id == st.school_id, Slot.starts_at > now,
                                               Slot.starts_at < now + timedelta(days=BOOKING_DAYS))
                            .order_by(Slot.starts_at)))  # fmt: skip
    mine = {b.slot_id: b for b in db.scalars(select(Booking).where(Booking.student_id == st.id))}
    from server.models import Coach, Terminal

    coaches = {c.id: c.name for c in db.scalars(select(Coach).where(Coach.school_id == st.school_id))}
    cars = {t.id: t.car_plate for t in db.scalars(select(Terminal).where(Terminal.school_id == st.school_id))}
    rows = [{"slot": s, "booked": booked_count(db, s.id), "mine": mine.get(s.id), "coach": coaches.get(s.coach_id),
             "car": cars.get(s.terminal_id)} for s in slots]  # fmt: skip
    history = db.execute(select(Booking, Slot).join(Slot, Slot.id == Booking.slot_id)
                         .where(Booking.student_id == st.id, Slot.starts_at <= now)
                         .order_by(Slot.starts_at.desc()).limit(10)).all()  # fmt: skip
    return page(request, "book.html", p, rows=rows, history=history, msg=msg,
                policy=request.app.state.policy.booking)  # fmt: skip


@router.post("/book")
def booking_submit(request: Request, p: Me, db: DB, slot: Annotated[int, Form(ge=1)],
                   action: Annotated[str, Form(pattern="^(book|cancel)$")],
                   csrf: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf)
    policy = request.app.state.policy
    try:
        if action == "book":
            book(db, policy, p.student or "", slot, utcnow())
            msg = "预约成功"
        else:
            b = db.scalar(select(Booking).where(Booking.slot_id == slot, Booking.student_id == p.student))
            if b is None:
                return go("/student/book", "没有这个预约")
            cancel_booking(db, policy, b, utcnow())
            msg = "已取消预约"
    except PlatformRefused as exc:
        return go("/student/book", REFUSAL_ZH.get(exc.reason, str(exc)))
    db.commit()
    s = db.get(Slot, slot)
    from server.api_deps import people_changed

    if s is not None:
        people_changed(request, s.school_id)
    return go("/student/book", msg)


REFUSAL_ZH = {"fee_not_paid": "请先缴费（资金由银行监管）再预约", "slot_full": "该时段已约满",
              "too_late": "开训前2小时内不能取消", "double_booked": "您在该时段已有预约",
              "slot_started": "该时段已开始", "not_enrolled": "请先报名",
              "already_rated": "这次培训已评价过", "not_finished": "培训结束后才能评价"}  # fmt: skip


@router.get("/hours")
def hours_page(request: Request, p: Me, db: DB) -> HTMLResponse:
    from server.api_people import hours_of

    st = _me(db, p)
    sessions = list(db.scalars(select(TrainingSession).where(TrainingSession.student_id == st.id)
                               .order_by(TrainingSession.started_at.desc()).limit(100)))  # fmt: skip
    rated = set(db.scalars(select(Rating.session_id).where(Rating.student_id == st.id)))
    from server.models import StageReview

    reviews = {r.part: r for r in db.scalars(select(StageReview).where(StageReview.student_id == st.id))}
    return page(request, "hours.html", p, st=st, hours=hours_of(db, st, request.app.state.policy),
                sessions=sessions, rated=rated, reviews=reviews)  # fmt: skip


@router.get("/sessions/{session_id}")
def session_page(request: Request, session_id: int, p: Me, db: DB, msg: str = "") -> HTMLResponse:
    ts = db.get(TrainingSession, session_id)
    if ts is None or ts.student_id != p.student:
        raise HTTPException(404, "no such session")
    minutes = list(db.scalars(select(Minute).where(Minute.session_id == ts.id).order_by(Minute.start, Minute.seq)))
    rating = db.scalar(select(Rating).where(Rating.session_id == ts.id))
    return page(request, "session.html", p, ts=ts, minutes=minutes, rating=rating, msg=msg)


@router.post("/sessions/{session_id}/rate")
def rate(request: Request, session_id: int, p: Me, db: DB, stars: Annotated[int, Form(ge=1, le=5)],
         text: Annotated[str, Form(max_length=2000)] = "", csrf: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf)
    try:
        rate_session_row(db, p.student or "", session_id, stars, text, utcnow())
    except PlatformRefused as exc:
        return go(f"/student/sessions/{session_id}", REFUSAL_ZH.get(exc.reason, str(exc)))
    db.commit()
    return go(f"/student/sessions/{session_id}", "感谢评价！")


@router.get("/complaints")
def complaints_page(request: Request, p: Me, db: DB, msg: str = "") -> HTMLResponse:
    rows = list(db.scalars(select(Complaint).where(Complaint.student_id == p.student).order_by(Complaint.id.desc())))
    now = utcnow()
    return page(request, "complaints.html", p, rows=[(c, complaint_deadlines(c, now)) for c in rows], msg=msg)


@router.post("/complaints")
def complaints_submit(request: Request, p: Me, db: DB, subject: Annotated[str, Form(min_length=1, max_length=200)],
                      body: Annotated[str, Form(min_length=1, max_length=2000)],
                      csrf: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf)
    file_complaint_row(db, request.app.state.policy, p.student or "", subject, body, utcnow())
    db.commit()
    return go("/student/complaints", "投诉已提交，监管部门将转驾校限期答复。")


@router.post("/complaints/{complaint_id}/close")
def complaint_close(request: Request, complaint_id: int, p: Me, db: DB, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    from server.platform import complaint_step

    c = db.get(Complaint, complaint_id)
    if c is None or c.student_id != p.student:
        raise HTTPException(404, "no such complaint")
    try:
        complaint_step(c, "close", p.name, utcnow())
    except PlatformRefused as exc:
        return go("/student/complaints", str(exc))
    db.commit()
    return go("/student/complaints", "投诉已关闭")


@router.get("/withdraw")
def withdraw_page(request: Request, p: Me, db: DB, msg: str = "") -> HTMLResponse:
    st = _me(db, p)
    svc = escrow_service(request)
    return page(request, "withdraw.html", p, e=active_enrolment(db, st.id), money=escrow_view(db, svc, st.id), msg=msg)


@router.post("/withdraw")
def withdraw_submit(request: Request, p: Me, db: DB, reason: Annotated[str, Form(min_length=1, max_length=500)],
                    transfer: Annotated[bool, Form()] = False,
                    csrf: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf)
    e = active_enrolment(db, p.student or "")
    if e is None:
        return go("/student/withdraw", "没有在训的报名")
    enrolment_id = e.id
    db.rollback()  # the service writes in its own transactions (SQLite has one writer); e is expired now
    try:
        escrow_service(request).withdraw(enrolment_id, reason, transfer=transfer)
    except EscrowRefused as exc:
        return go("/student/withdraw", str(exc))
    return go("/student/withdraw", "已办理，未拨付给驾校的学费将原路退回。")
