"""The platform's API (issue 13): school offers, enrolment and escrow, bank callbacks and reconciliation, booking,
ratings, complaints and exam results. Roles and tenancy as in the operator API (:mod:`server.auth`):

=============================================  =================================================================
endpoint                                       who
=============================================  =================================================================
``GET /api/offers``                            every role (prices are public)
``PUT /api/schools/{id}/offers/{class}``       regulator, the school's admin
``POST /api/student-enrolments``               a student (enrols themself); ``GET``: student own, school own,
                                               regulator, market regulation
``POST /api/student-enrolments/{id}/payments`` the student: the bank collects the fee into escrow
``POST /api/student-enrolments/{id}/withdraw`` the student, the regulator: refund of what was not released
``GET /api/escrow/students/{id}``              the student, their school, regulator, market regulation
``GET /api/escrow/entries``                    regulator, market regulation, school admin (own school)
``POST /api/bank/callbacks``                   the bank only (HMAC-SHA256 of the body, ``X-Bank-Signature``)
``POST|GET /api/escrow/reconciliations``       regulator, market regulation
``POST /api/slots``, ``GET /api/slots``        school admin (own), regulator; students see their school's
``POST /api/slots/{id}/bookings``              a student; ``DELETE /api/bookings/{id}``: cancel (policy)
``POST /api/sessions/{id}/rating``             the student who trained in the session, once
``GET /api/ratings``                           every role (per school and coach)
``POST /api/complaints`` …                     student files; regulator assigns; school answers; student or
                                               regulator closes; market regulation reads
``GET /api/exam-results``                      regulator, police, exam clerk, school admin (own)
=============================================  =================================================================
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api_deps import DB, Page, RowId, not_found, own_school_only, paginate, people_changed, visible_student
from server.auth import (
    AnyRole,
    ComplaintParty,
    Market,
    Principal,
    Regulator,
    Staff,
    StaffOrStudent,
    require,
)
from server.auth import Student as StudentOnly
from server.clock import utcnow
from server.escrow import core
from server.escrow.bank import BankClient, RemoteCallbackError, verify_callback
from server.escrow.service import EscrowRefused, EscrowService
from server.models import (
    ROLE_EXAM_CLERK,
    ROLE_MARKET,
    ROLE_POLICE,
    ROLE_REGULATOR,
    ROLE_SCHOOL_ADMIN,
    ROLE_STUDENT,
    BankInstruction,
    Booking,
    Complaint,
    Enrolment,
    EscrowEntry,
    ExamResult,
    Rating,
    Reconciliation,
    School,
    SchoolOffer,
    Slot,
    Student,
)
from server.platform import (
    PlatformRefused,
    book,
    booked_count,
    cancel_booking,
    complaint_deadlines,
    complaint_step,
    create_slot,
    file_complaint,
    rate_session,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["platform"])
StaffOrStudentOrMarket = Annotated[Principal,
                                   Depends(require(ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_STUDENT, ROLE_MARKET))]
RegulatorOrStudent = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_STUDENT))]
MoneyReader = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_MARKET, ROLE_SCHOOL_ADMIN))]
ExamReader = Annotated[Principal, Depends(require(ROLE_REGULATOR, ROLE_SCHOOL_ADMIN, ROLE_POLICE, ROLE_EXAM_CLERK))]


def escrow_service(request: Request) -> EscrowService:
    """The app's escrow service, made at first use (tests and the demo may set ``app.state.bank`` first)."""
    st = request.app.state
    if getattr(st, "escrow", None) is None:
        bank = getattr(st, "bank", None) or BankClient(st.settings.bank_url)
        st.escrow = EscrowService(st.session_factory, st.policy, bank, utcnow)
    service: EscrowService = st.escrow
    return service


def refused(exc: EscrowRefused | PlatformRefused) -> HTTPException:
    status = exc.status if isinstance(exc, PlatformRefused) else 409
    return HTTPException(status, {"reason": exc.reason, "message": str(exc)})


# ---------------------------------------------------------------------------------------------- schemas
class OfferPublic(BaseModel):
    school: str
    school_name: str
    licence_class: str
    price_fen: int


class OfferSet(BaseModel):
    price_fen: int = Field(gt=0, le=10**9)


class EnrolmentCreate(BaseModel):
    school: str = Field(min_length=16, max_length=16)


class EnrolmentPublic(BaseModel):
    id: int
    student: str
    school: str
    licence_class: str
    fee_fen: int
    allocation: dict[str, int]
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    ended_at: datetime | None
    outstanding_fen: int


class Withdrawal(BaseModel):
    reason: str = Field(min_length=1, max_length=500)
    transfer: bool = False


class InstructionPublic(BaseModel):
    key: str
    kind: str
    event: str | None
    amount_fen: int
    status: str
    attempt: int
    notice_id: str | None
    records_digest: str | None
    bank_txn: str | None
    last_error: str | None
    created_at: datetime


class EntryPublic(BaseModel):
    id: int
    key: str
    kind: str
    amount_fen: int
    student: str
    school: str | None
    enrolment: int | None
    event: str | None
    notice_id: str | None
    records_digest: str | None
    bank_txn: str | None
    at: datetime
    legs: dict[str, int] = {}


class EscrowPublic(BaseModel):
    student: str
    balances: dict[str, int]  # escrow, transit, refunded, paid (fen)
    released_by_school: dict[str, int]
    instructions: list[InstructionPublic]
    entries: list[EntryPublic]


class ReconcileCreate(BaseModel):
    day: date


class ReconciliationPublic(BaseModel):
    id: int
    day: str
    statement_lines: int
    ledger_lines: int
    differences: list[Any]
    ok: bool
    at: datetime


class SlotCreate(BaseModel):
    school: str = Field(min_length=16, max_length=16)
    coach: str = Field(min_length=16, max_length=16)
    terminal: str = Field(min_length=16, max_length=16)
    starts_at: datetime
    ends_at: datetime
    capacity: int = Field(default=1, ge=1, le=50)


class SlotPublic(BaseModel):
    id: int
    school: str
    coach: str
    terminal: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    booked: int
    coach_no_show: bool


class BookingPublic(BaseModel):
    id: int
    slot: int
    student: str
    status: str
    session: int | None
    starts_at: datetime
    ends_at: datetime
    terminal: str
    coach: str


class RatingCreate(BaseModel):
    stars: int = Field(ge=1, le=5)
    text: str = Field(default="", max_length=2000)


class RatingPublic(BaseModel):
    id: int
    session: int
    student: str
    coach: str | None
    school: str
    stars: int
    text: str
    created_at: datetime


class ComplaintCreate(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)


class ComplaintAnswer(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class ComplaintPublic(BaseModel):
    id: int
    student: str
    school: str
    subject: str
    body: str
    status: str
    assigned_to: str | None
    answer: str | None
    filed_at: datetime
    assign_due_at: datetime
    answer_due_at: datetime
    assigned_at: datetime | None
    answered_at: datetime | None
    closed_at: datetime | None
    deadlines: dict[str, str]


class ExamResultPublic(BaseModel):
    student: str
    school: str | None
    coach: str | None
    part: int
    passed: bool
    sat_at: datetime


# ---------------------------------------------------------------------------------------------- converters
def enrolment_public(db: Session, svc: EscrowService, e: Enrolment) -> EnrolmentPublic:
    return EnrolmentPublic(id=e.id, student=e.student_id, school=e.school_id, licence_class=e.licence_class,
                           fee_fen=e.fee_fen, allocation={k: int(v) for k, v in e.allocation.items()},
                           status=e.status, created_at=e.created_at, confirmed_at=e.confirmed_at, ended_at=e.ended_at,
                           outstanding_fen=svc.outstanding(db, e) if e.status == "active" else 0)  # fmt: skip


def instruction_public(i: BankInstruction) -> InstructionPublic:
    return InstructionPublic(key=i.key, kind=i.kind, event=i.event, amount_fen=i.amount, status=i.status,
                             attempt=i.attempt, notice_id=i.notice_id, records_digest=i.records_digest,
                             bank_txn=i.bank_txn, last_error=i.last_error, created_at=i.created_at)  # fmt: skip


def entry_public(e: EscrowEntry, legs: dict[str, int] | None = None) -> EntryPublic:
    return EntryPublic(id=e.id, key=e.key, kind=e.kind, amount_fen=e.amount, student=e.student_id, school=e.school_id,
                       enrolment=e.enrolment_id, event=e.event, notice_id=e.notice_id,
                       records_digest=e.records_digest, bank_txn=e.bank_txn, at=e.at, legs=legs or {})  # fmt: skip


def escrow_view(db: Session, svc: EscrowService, student: str) -> EscrowPublic:
    from server.models import EscrowLeg

    entries = list(db.scalars(select(EscrowEntry).where(EscrowEntry.student_id == student).order_by(EscrowEntry.id)))
    legs: dict[int, dict[str, int]] = {}
    for leg in db.scalars(select(EscrowLeg).where(EscrowLeg.entry_id.in_([e.id for e in entries]))):
        legs.setdefault(leg.entry_id, {})[leg.account_id] = leg.amount
    released: dict[str, int] = {}
    for e in entries:
        if e.kind == "release" and e.school_id:
            released[e.school_id] = released.get(e.school_id, 0) + e.amount
    paid = sum(e.amount for e in entries if e.kind == "payment")
    refunded = sum(e.amount for e in entries if e.kind == "refund")
    instructions = db.scalars(select(BankInstruction).where(BankInstruction.student_id == student)
                              .order_by(BankInstruction.id))  # fmt: skip
    return EscrowPublic(student=student,
                        balances={"paid": paid, "escrow": svc.balance(db, core.escrow_of(student)),
                                  "transit": svc.balance(db, core.transit_of(student)),
                                  "released": sum(released.values()), "refunded": refunded},
                        released_by_school=released, instructions=[instruction_public(i) for i in instructions],
                        entries=[entry_public(e, legs.get(e.id)) for e in entries])  # fmt: skip


def slot_public(db: Session, s: Slot) -> SlotPublic:
    return SlotPublic(id=s.id, school=s.school_id, coach=s.coach_id, terminal=s.terminal_id, starts_at=s.starts_at,
                      ends_at=s.ends_at, capacity=s.capacity, booked=booked_count(db, s.id),
                      coach_no_show=s.coach_no_show)  # fmt: skip


def booking_public(b: Booking, s: Slot) -> BookingPublic:
    return BookingPublic(id=b.id, slot=s.id, student=b.student_id, status=b.status, session=b.session_id,
                         starts_at=s.starts_at, ends_at=s.ends_at, terminal=s.terminal_id,
                         coach=s.coach_id)  # fmt: skip


def rating_public(r: Rating) -> RatingPublic:
    return RatingPublic(id=r.id, session=r.session_id, student=r.student_id, coach=r.coach_id, school=r.school_id,
                        stars=r.stars, text=r.text, created_at=r.created_at)  # fmt: skip


def complaint_public(c: Complaint) -> ComplaintPublic:
    return ComplaintPublic(id=c.id, student=c.student_id, school=c.school_id, subject=c.subject, body=c.body,
                           status=c.status, assigned_to=c.assigned_to, answer=c.answer, filed_at=c.filed_at,
                           assign_due_at=c.assign_due_at, answer_due_at=c.answer_due_at, assigned_at=c.assigned_at,
                           answered_at=c.answered_at, closed_at=c.closed_at,
                           deadlines=complaint_deadlines(c, utcnow()))  # fmt: skip


def visible_enrolment(db: Session, p: Principal, enrolment_id: int) -> Enrolment:
    e = db.get(Enrolment, enrolment_id)
    if e is None:
        raise not_found("enrolment")
    if p.role == ROLE_STUDENT and e.student_id != p.student:
        raise not_found("enrolment")
    if p.role == ROLE_SCHOOL_ADMIN and e.school_id != p.school:
        raise not_found("enrolment")
    return e


# ---------------------------------------------------------------------------------------------- offers, enrolment
@router.get("/offers")
def list_offers(db: DB, _p: AnyRole, school: str | None = None) -> list[OfferPublic]:
    """Every school's price per licence class (fen), public as in the Rizhao model."""
    q = select(SchoolOffer, School.name).join(School, School.id == SchoolOffer.school_id).order_by(
        SchoolOffer.school_id, SchoolOffer.licence_class)  # fmt: skip
    if school:
        q = q.where(SchoolOffer.school_id == school)
    return [OfferPublic(school=o.school_id, school_name=name, licence_class=o.licence_class, price_fen=o.price_fen)
            for o, name in db.execute(q)]  # fmt: skip


@router.put("/schools/{school_id}/offers/{licence_class}")
def set_offer(school_id: str, licence_class: str, body: OfferSet, db: DB, p: Staff) -> OfferPublic:
    own_school_only(p, school_id)
    s = db.get(School, school_id)
    if s is None:
        raise not_found("school")
    if licence_class not in ("C1", "C2", "A1", "A2", "A3", "B1", "B2", "D", "E", "F", "C3", "C4", "C5"):
        raise HTTPException(422, {"reason": "bad_class", "message": f"unknown licence class {licence_class!r}"})
    o = db.get(SchoolOffer, (school_id, licence_class))
    if o is None:
        o = SchoolOffer(school_id=school_id, licence_class=licence_class, price_fen=body.price_fen, updated_at=utcnow())
        db.add(o)
    o.price_fen, o.updated_at = body.price_fen, utcnow()
    db.commit()
    return OfferPublic(school=school_id, school_name=s.name, licence_class=licence_class, price_fen=o.price_fen)


@router.post("/student-enrolments", status_code=201)
def create_enrolment(body: EnrolmentCreate, request: Request, db: DB, p: StudentOnly) -> EnrolmentPublic:
    """Enrol the calling student at a school (a transfer: withdraw from the current one first)."""
    svc = escrow_service(request)
    st = db.get(Student, p.student or "")
    if st is None or db.get(School, body.school) is None:
        raise not_found("school")
    try:
        e = svc.enrol(db, st, body.school)
    except EscrowRefused as exc:
        raise refused(exc) from exc
    moved = st.school_id != body.school
    st.school_id = body.school
    db.commit()
    if moved:
        people_changed(request, body.school)
    return enrolment_public(db, svc, e)


@router.get("/student-enrolments")
def list_enrolments(request: Request, db: DB, p: StaffOrStudentOrMarket, page: Page, response: Response,
                    school: str | None = None, status: str | None = None) -> list[EnrolmentPublic]:  # fmt: skip
    q = select(Enrolment).order_by(Enrolment.id)
    if p.role == ROLE_STUDENT:
        q = q.where(Enrolment.student_id == p.student)
    elif p.school_scope() is not None:
        q = q.where(Enrolment.school_id == p.school_scope())
    if school:
        q = q.where(Enrolment.school_id == school)
    if status:
        q = q.where(Enrolment.status == status)
    svc = escrow_service(request)
    return [enrolment_public(db, svc, e) for e in paginate(db, q, page, request, response)]


@router.post("/student-enrolments/{enrolment_id}/payments", status_code=202)
def pay(enrolment_id: RowId, request: Request, db: DB, p: StudentOnly) -> InstructionPublic:
    """Ask the bank to collect what is owed into escrow; the balance moves when the bank's callback arrives."""
    visible_enrolment(db, p, enrolment_id)
    db.rollback()  # end this read: the service writes in its own transactions (SQLite has one writer)
    try:
        ins = escrow_service(request).request_payment(enrolment_id)
    except EscrowRefused as exc:
        raise refused(exc) from exc
    db.expire_all()
    row = db.get(BankInstruction, ins.id)
    return instruction_public(row or ins)


@router.post("/student-enrolments/{enrolment_id}/withdraw")
def withdraw(enrolment_id: RowId, body: Withdrawal, request: Request, db: DB,
             p: RegulatorOrStudent) -> EnrolmentPublic:  # fmt: skip
    """Withdraw (or transfer): what escrow holds and no release has claimed is refunded to the student."""
    visible_enrolment(db, p, enrolment_id)
    db.rollback()  # end this read: the service writes in its own transactions (SQLite has one writer)
    svc = escrow_service(request)
    try:
        svc.withdraw(enrolment_id, body.reason, transfer=body.transfer)
    except EscrowRefused as exc:
        raise refused(exc) from exc
    db.expire_all()
    e = db.get(Enrolment, enrolment_id)
    assert e is not None
    return enrolment_public(db, svc, e)


@router.get("/escrow/students/{student_id}")
def student_escrow(student_id: str, request: Request, db: DB, p: StaffOrStudentOrMarket) -> EscrowPublic:
    """A student's escrow: balances (fen), releases per school, bank instructions and every entry with its legs;
    a release names the stage review (notice id) and the digest of the signed records behind it."""
    visible_student(db, p, student_id)
    return escrow_view(db, escrow_service(request), student_id)


@router.get("/escrow/entries")
def list_entries(db: DB, p: MoneyReader,
                 page: Page, request: Request, response: Response, kind: str | None = None,
                 school: str | None = None) -> list[EntryPublic]:  # fmt: skip
    q = select(EscrowEntry).order_by(EscrowEntry.id)
    if p.school_scope() is not None:
        q = q.where(EscrowEntry.student_id.in_(select(Student.id).where(Student.school_id == p.school_scope())))
    if kind:
        q = q.where(EscrowEntry.kind == kind)
    if school:
        q = q.where(EscrowEntry.school_id == school)
    return [entry_public(e) for e in paginate(db, q, page, request, response)]


@router.post("/bank/callbacks", include_in_schema=True)
async def bank_callback(request: Request,
                        x_bank_signature: Annotated[str | None, Header()] = None) -> dict[str, str]:  # fmt: skip
    """The bank's callbacks (signed with the shared secret); each is applied once, in any order."""
    secret = request.app.state.settings.bank_secret
    body = await request.body()
    if not secret:
        raise HTTPException(401, {"reason": "no_bank_secret", "message": "bank callbacks are off (JIAPEI_BANK_SECRET)"})
    try:
        cb = verify_callback(secret, body, x_bank_signature)
    except RemoteCallbackError as exc:
        log.warning("bank callback refused: %s", exc)
        raise HTTPException(401, {"reason": "bad_callback", "message": str(exc)}) from exc
    from starlette.concurrency import run_in_threadpool

    try:
        outcome = await run_in_threadpool(escrow_service(request).on_callback, cb)
    except core.LedgerError as exc:
        log.error("bank callback %s cannot be posted: %s", cb.event_id, exc)
        raise HTTPException(409, {"reason": "ledger_refused", "message": str(exc)}) from exc
    return {"event_id": cb.event_id, "outcome": outcome}


@router.post("/escrow/reconciliations", status_code=201)
def reconcile(body: ReconcileCreate, request: Request, _p: Market) -> ReconciliationPublic:
    """Reconcile the ledger with the bank's statement of a Beijing day; every difference is listed (a statement the
    bank cannot give is one: ``statement_unavailable``)."""
    r = escrow_service(request).reconcile(body.day)
    return ReconciliationPublic(id=r.id, day=r.day, statement_lines=r.statement_lines, ledger_lines=r.ledger_lines,
                                differences=r.differences, ok=r.ok, at=r.at)  # fmt: skip


@router.get("/escrow/reconciliations")
def list_reconciliations(db: DB, _p: Market, page: Page, request: Request,
                         response: Response) -> list[ReconciliationPublic]:  # fmt: skip
    q = select(Reconciliation).order_by(Reconciliation.id.desc())
    return [ReconciliationPublic(id=r.id, day=r.day, statement_lines=r.statement_lines, ledger_lines=r.ledger_lines,
                                 differences=r.differences, ok=r.ok, at=r.at)
            for r in paginate(db, q, page, request, response)]  # fmt: skip


# ---------------------------------------------------------------------------------------------- booking
@router.post("/slots", status_code=201)
def post_slot(body: SlotCreate, request: Request, db: DB, p: Staff) -> SlotPublic:
    own_school_only(p, body.school)
    try:
        s = create_slot(db, request.app.state.policy, school=body.school, coach=body.coach, terminal=body.terminal,
                        starts_at=body.starts_at, ends_at=body.ends_at, capacity=body.capacity,
                        now=utcnow())  # fmt: skip
    except PlatformRefused as exc:
        raise refused(exc) from exc
    db.commit()
    return slot_public(db, s)


@router.get("/slots")
def list_slots(db: DB, p: StaffOrStudent,
               page: Page, request: Request, response: Response, school: str | None = None,
               since: datetime | None = None, until: datetime | None = None) -> list[SlotPublic]:  # fmt: skip
    q = select(Slot).order_by(Slot.starts_at, Slot.id)
    if p.role == ROLE_STUDENT:
        st = db.get(Student, p.student or "")
        q = q.where(Slot.school_id == (st.school_id if st else ""))
    elif p.school_scope() is not None:
        q = q.where(Slot.school_id == p.school_scope())
    if school:
        q = q.where(Slot.school_id == school)
    if since:
        q = q.where(Slot.starts_at >= since)
    if until:
        q = q.where(Slot.starts_at < until)
    return [slot_public(db, s) for s in paginate(db, q, page, request, response)]


@router.post("/slots/{slot_id}/bookings", status_code=201)
def post_booking(slot_id: RowId, request: Request, db: DB, p: StudentOnly) -> BookingPublic:
    try:
        b = book(db, request.app.state.policy, p.student or "", slot_id, utcnow())
    except PlatformRefused as exc:
        raise refused(exc) from exc
    db.commit()
    slot = db.get(Slot, slot_id)
    assert slot is not None
    people_changed(request, slot.school_id)  # the car's roster lists today's bookings
    return booking_public(b, slot)


@router.delete("/bookings/{booking_id}")
def delete_booking(booking_id: RowId, request: Request, db: DB, p: StudentOnly) -> BookingPublic:
    b = db.get(Booking, booking_id)
    if b is None or b.student_id != p.student:
        raise not_found("booking")
    try:
        cancel_booking(db, request.app.state.policy, b, utcnow())
    except PlatformRefused as exc:
        raise refused(exc) from exc
    db.commit()
    slot = db.get(Slot, b.slot_id)
    assert slot is not None
    people_changed(request, slot.school_id)
    return booking_public(b, slot)


@router.get("/bookings")
def list_bookings(db: DB, p: StaffOrStudent,
                  page: Page, request: Request, response: Response,
                  status: str | None = None) -> list[BookingPublic]:  # fmt: skip
    """Bookings (student: own; school admin: its slots), with no-shows once their time has passed."""
    q = select(Booking, Slot).join(Slot, Slot.id == Booking.slot_id).order_by(Slot.starts_at, Booking.id)
    if p.role == ROLE_STUDENT:
        q = q.where(Booking.student_id == p.student)
    elif p.school_scope() is not None:
        q = q.where(Slot.school_id == p.school_scope())
    if status:
        q = q.where(Booking.status == status)
    total = q.order_by(None).subquery()
    from sqlalchemy import func

    response.headers["X-Total-Count"] = str(db.scalar(select(func.count()).select_from(total)) or 0)
    rows = db.execute(q.limit(page.limit).offset(page.offset)).all()
    return [booking_public(b, s) for b, s in rows]


# ---------------------------------------------------------------------------------------------- ratings
@router.post("/sessions/{session_id}/rating", status_code=201)
def post_rating(session_id: RowId, body: RatingCreate, db: DB, p: StudentOnly) -> RatingPublic:
    try:
        r = rate_session(db, p.student or "", session_id, body.stars, body.text, utcnow())
    except PlatformRefused as exc:
        raise refused(exc) from exc
    db.commit()
    return rating_public(r)


@router.get("/ratings")
def list_ratings(db: DB, _p: AnyRole, page: Page, request: Request, response: Response, school: str | None = None,
                 coach: str | None = None) -> list[RatingPublic]:  # fmt: skip
    """Session ratings, newest first (public per school and coach, as the Rizhao platform shows them)."""
    q = select(Rating).order_by(Rating.id.desc())
    if school:
        q = q.where(Rating.school_id == school)
    if coach:
        q = q.where(Rating.coach_id == coach)
    return [rating_public(r) for r in paginate(db, q, page, request, response)]


# ---------------------------------------------------------------------------------------------- complaints
def visible_complaint(db: Session, p: Principal, complaint_id: int) -> Complaint:
    c = db.get(Complaint, complaint_id)
    if c is None or (p.role == ROLE_STUDENT and c.student_id != p.student) or not (
            p.role == ROLE_STUDENT or p.sees_school(c.school_id)):  # fmt: skip
        raise not_found("complaint")
    return c


@router.post("/complaints", status_code=201)
def post_complaint(body: ComplaintCreate, request: Request, db: DB, p: StudentOnly) -> ComplaintPublic:
    try:
        c = file_complaint(db, request.app.state.policy, p.student or "", body.subject, body.body, utcnow())
    except PlatformRefused as exc:
        raise refused(exc) from exc
    db.commit()
    return complaint_public(c)


@router.get("/complaints")
def list_complaints(db: DB, p: ComplaintParty, page: Page, request: Request, response: Response,
                    status: str | None = None, school: str | None = None) -> list[ComplaintPublic]:  # fmt: skip
    q = select(Complaint).order_by(Complaint.id.desc())
    if p.role == ROLE_STUDENT:
        q = q.where(Complaint.student_id == p.student)
    elif p.school_scope() is not None:
        q = q.where(Complaint.school_id == p.school_scope())
    if status:
        q = q.where(Complaint.status == status)
    if school:
        q = q.where(Complaint.school_id == school)
    return [complaint_public(c) for c in paginate(db, q, page, request, response)]


@router.get("/complaints/{complaint_id}")
def get_complaint(complaint_id: RowId, db: DB, p: ComplaintParty) -> ComplaintPublic:
    return complaint_public(visible_complaint(db, p, complaint_id))


@router.post("/complaints/{complaint_id}/assign")
def assign_complaint(complaint_id: RowId, db: DB, p: Regulator) -> ComplaintPublic:
    """The regulator hands the complaint to the school to answer (by the policy's deadline)."""
    c = visible_complaint(db, p, complaint_id)
    return _step(db, c, "assign", f"school:{c.school_id} (by {p.name})")


@router.post("/complaints/{complaint_id}/answer")
def answer_complaint(complaint_id: RowId, body: ComplaintAnswer, db: DB, p: Staff) -> ComplaintPublic:
    c = visible_complaint(db, p, complaint_id)
    if p.role != ROLE_SCHOOL_ADMIN:
        raise HTTPException(403, {"reason": "forbidden_role", "message": "the school answers its complaints"})
    return _step(db, c, "answer", p.name, text=body.text)


@router.post("/complaints/{complaint_id}/close")
def close_complaint(complaint_id: RowId, db: DB,
                    p: RegulatorOrStudent) -> ComplaintPublic:  # fmt: skip
    return _step(db, visible_complaint(db, p, complaint_id), "close", p.name)


def _step(db: Session, c: Complaint, action: str, who: str, text: str | None = None) -> ComplaintPublic:
    try:
        complaint_step(c, action, who, utcnow(), text=text)
    except PlatformRefused as exc:
        raise refused(exc) from exc
    db.commit()
    return complaint_public(c)


# ---------------------------------------------------------------------------------------------- exam results
@router.get("/exam-results")
def list_exam_results(db: DB, p: ExamReader,
                      page: Page, request: Request, response: Response, school: str | None = None,
                      coach: str | None = None) -> list[ExamResultPublic]:  # fmt: skip
    q = select(ExamResult).order_by(ExamResult.source_seq)
    if p.school_scope() is not None:
        q = q.where(ExamResult.school_id == p.school_scope())
    if school:
        q = q.where(ExamResult.school_id == school)
    if coach:
        q = q.where(ExamResult.coach_id == coach)
    return [ExamResultPublic(student=r.student_id, school=r.school_id, coach=r.coach_id, part=r.part,
                             passed=r.passed, sat_at=r.sat_at)
            for r in paginate(db, q, page, request, response)]  # fmt: skip


__all__ = ["router"]
