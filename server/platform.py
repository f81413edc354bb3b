"""The platform around the hours (issue 13): booking slots, ratings, complaints, exam results and no-shows.

Database functions shared by the API (:mod:`server.api_platform`), the student pages (:mod:`server.student_pages`),
the roster builder (:mod:`server.mqtt_consumer`) and the worker (:class:`PlatformWorker`). Rules come from the
policy (``[booking]``, ``[complaints]``); refusals are :class:`PlatformRefused` with a stable reason code.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmware_protocols.identifiers import BEIJING
from server.clock import Clock
from server.db import SessionFactory
from server.models import (
    BOOKING_ATTENDED,
    BOOKING_BOOKED,
    BOOKING_CANCELLED,
    BOOKING_NO_SHOW,
    COMPLAINT_ANSWERED,
    COMPLAINT_ASSIGNED,
    COMPLAINT_CLOSED,
    COMPLAINT_FILED,
    ENROLMENT_ACTIVE,
    Booking,
    Coach,
    Complaint,
    Enrolment,
    ExamResult,
    Minute,
    Rating,
    Reconciliation,
    Slot,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import Policy

log = logging.getLogger(__name__)

MAX_TEXT = 2000
#: Longest slot: a half day (a booking is for a lesson, not a week).
MAX_SLOT = timedelta(hours=4)


class PlatformRefused(Exception):
    def __init__(self, reason: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


def beijing_day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), BEIJING)
    return start, start + timedelta(days=1)


def active_enrolment(db: Session, student: str) -> Enrolment | None:
    return db.scalar(select(Enrolment).where(Enrolment.student_id == student, Enrolment.status == ENROLMENT_ACTIVE))


# ---------------------------------------------------------------------------------------------- booking
def create_slot(db: Session, policy: Policy, *, school: str, coach: str, terminal: str, starts_at: datetime,
                ends_at: datetime, capacity: int, now: datetime) -> Slot:  # fmt: skip
    c, t = db.get(Coach, coach), db.get(Terminal, terminal)
    if c is None or c.school_id != school or t is None or t.school_id != school:
        raise PlatformRefused("other_school", "the coach and the car must be the school's own", 422)
    if not starts_at < ends_at <= starts_at + MAX_SLOT:
        raise PlatformRefused("bad_times", f"a slot ends after it starts, within {MAX_SLOT}", 422)
    if not 1 <= capacity <= policy.booking.max_capacity:
        raise PlatformRefused("bad_capacity", f"capacity is 1-{policy.booking.max_capacity} (policy)", 422)
    clash = db.scalar(select(Slot.id).where(Slot.terminal_id == terminal, Slot.starts_at < ends_at,
                                            Slot.ends_at > starts_at))  # fmt: skip
    if clash is not None:
        raise PlatformRefused("slot_overlaps", f"the car already has slot {clash} then")
    slot = Slot(school_id=school, coach_id=coach, terminal_id=terminal, starts_at=starts_at, ends_at=ends_at,
                capacity=capacity, coach_no_show=False, created_at=now)  # fmt: skip
    db.add(slot)
    db.flush()
    return slot


def booked_count(db: Session, slot_id: int) -> int:
    return db.scalar(select(func.count()).where(Booking.slot_id == slot_id,
                                                Booking.status == BOOKING_BOOKED)) or 0  # fmt: skip


def book(db: Session, policy: Policy, student: str, slot_id: int, now: datetime) -> Booking:
    slot = db.scalar(select(Slot).where(Slot.id == slot_id).with_for_update())
    st = db.get(Student, student)
    if slot is None or st is None or slot.school_id != st.school_id:
        raise PlatformRefused("not_found", "no such slot", 404)
    e = active_enrolment(db, student)
    if e is None or e.school_id != slot.school_id:
        raise PlatformRefused("not_enrolled", "enrol at this school first")
    if e.confirmed_at is None:
        raise PlatformRefused("fee_not_paid", "pay the fee into escrow before booking (先培后付: the bank holds it)")
    if slot.starts_at <= now:
        raise PlatformRefused("slot_started", "the slot has started")
    if booked_count(db, slot.id) >= slot.capacity:
        raise PlatformRefused("slot_full", "the slot is full")
    mine = db.scalar(select(Booking).join(Slot, Slot.id == Booking.slot_id).where(
        Booking.student_id == student, Booking.status == BOOKING_BOOKED, Slot.starts_at < slot.ends_at,
        Slot.ends_at > slot.starts_at))  # fmt: skip
    if mine is not None:
        raise PlatformRefused("double_booked", "you have another booking at that time")
    old = db.scalar(select(Booking).where(Booking.slot_id == slot.id, Booking.student_id == student))
    if old is not None:  # booked, cancelled, booked again: one row per student and slot
        old.status, old.updated_at = BOOKING_BOOKED, now
        return old
    b = Booking(slot_id=slot.id, student_id=student, status=BOOKING_BOOKED, created_at=now, updated_at=now)
    db.add(b)
    db.flush()
    return b


def cancel_booking(db: Session, policy: Policy, booking: Booking, now: datetime) -> Booking:
    slot = db.get(Slot, booking.slot_id)
    assert slot is not None
    if booking.status != BOOKING_BOOKED:
        raise PlatformRefused("not_booked", f"the booking is {booking.status}")
    if slot.starts_at - now < timedelta(minutes=policy.booking.cancel_before_minutes):
        minutes = policy.booking.cancel_before_minutes
        raise PlatformRefused("too_late", f"cancel at least {minutes} min before the start")
    booking.status, booking.updated_at = BOOKING_CANCELLED, now
    return booking


@dataclass(frozen=True)
class RosterBookingRow:
    student: str
    coach: str
    starts_at: datetime
    ends_at: datetime


def roster_bookings(db: Session, terminal: str, now: datetime) -> list[RosterBookingRow]:
    """Today's (Beijing) booked students of ``terminal``, for the roster it receives."""
    start, end = beijing_day_bounds(now.astimezone(BEIJING).date())
    rows = db.execute(select(Booking.student_id, Slot.coach_id, Slot.starts_at, Slot.ends_at)
                      .join(Slot, Slot.id == Booking.slot_id)
                      .where(Slot.terminal_id == terminal, Booking.status == BOOKING_BOOKED, Slot.starts_at >= start,
                             Slot.starts_at < end).order_by(Slot.starts_at, Booking.student_id)).all()  # fmt: skip
    return [RosterBookingRow(*r) for r in rows]


def settle_bookings(db: Session, policy: Policy, now: datetime) -> int:
    """Bookings whose no-show time has passed become ``attended`` (a session of the student on that car inside the
    slot) or ``no_show``; a slot with bookings and no session at all on its car marks the coach's no-show."""
    cutoff = now - timedelta(minutes=policy.booking.no_show_after_minutes)
    early = timedelta(minutes=policy.booking.sign_in_early_minutes)
    changed = 0
    for b, slot in db.execute(select(Booking, Slot).join(Slot, Slot.id == Booking.slot_id)
                              .where(Booking.status == BOOKING_BOOKED, Slot.starts_at <= cutoff)).all():  # fmt: skip
        session = db.scalar(select(TrainingSession).where(
            TrainingSession.terminal_id == slot.terminal_id, TrainingSession.student_id == b.student_id,
            TrainingSession.started_at >= slot.starts_at - early,
            TrainingSession.started_at < slot.ends_at))  # fmt: skip
        if session is not None:
            b.status, b.session_id = BOOKING_ATTENDED, session.id
        else:
            b.status = BOOKING_NO_SHOW
            any_session = db.scalar(select(TrainingSession.id).where(
                TrainingSession.terminal_id == slot.terminal_id, TrainingSession.started_at >= slot.starts_at - early,
                TrainingSession.started_at < slot.ends_at))  # fmt: skip
            slot.coach_no_show = any_session is None
        b.updated_at = now
        changed += 1
    return changed


# ---------------------------------------------------------------------------------------------- ratings
def rate_session(db: Session, student: str, session_id: int, stars: int, text: str, now: datetime) -> Rating:
    ts = db.get(TrainingSession, session_id)
    if ts is None or ts.student_id != student:
        raise PlatformRefused("not_found", "no such session of yours", 404)
    if ts.ended_at is None:
        raise PlatformRefused("not_finished", "a session is rated after it ends")
    if not 1 <= stars <= 5:
        raise PlatformRefused("bad_stars", "1 to 5 stars", 422)
    if db.scalar(select(Rating.id).where(Rating.session_id == session_id)) is not None:
        raise PlatformRefused("already_rated", "this session is rated already")
    t = db.get(Terminal, ts.terminal_id)
    r = Rating(session_id=session_id, student_id=student, coach_id=ts.coach_id, school_id=t.school_id if t else "",
               stars=stars, text=text.strip()[:MAX_TEXT], created_at=now)  # fmt: skip
    db.add(r)
    db.flush()
    return r


# ---------------------------------------------------------------------------------------------- complaints
def file_complaint(db: Session, policy: Policy, student: str, subject: str, body: str, now: datetime) -> Complaint:
    st = db.get(Student, student)
    if st is None:
        raise PlatformRefused("not_found", "no such student", 404)
    rules = policy.complaints
    c = Complaint(student_id=student, school_id=st.school_id, subject=subject.strip()[:200],
                  body=body.strip()[:MAX_TEXT], status=COMPLAINT_FILED, filed_at=now,
                  assign_due_at=now + timedelta(hours=rules.assign_within_hours),
                  answer_due_at=now + timedelta(hours=rules.answer_within_hours))  # fmt: skip
    db.add(c)
    db.flush()
    return c


#: The complaint workflow as a table: (status, action) → next status.
COMPLAINT_FLOW = {
    (COMPLAINT_FILED, "assign"): COMPLAINT_ASSIGNED,
    (COMPLAINT_ASSIGNED, "answer"): COMPLAINT_ANSWERED,
    (COMPLAINT_ANSWERED, "close"): COMPLAINT_CLOSED,
}


def complaint_step(c: Complaint, action: str, who: str, now: datetime, *, text: str | None = None) -> Complaint:
    nxt = COMPLAINT_FLOW.get((c.status, action))
    if nxt is None:
        raise PlatformRefused("bad_step", f"a {c.status} complaint cannot be {action}ed")
    if action == "assign":
        c.assigned_to, c.assigned_at = who[:64], now
    elif action == "answer":
        if not text or not text.strip():
            raise PlatformRefused("empty_answer", "an answer needs a text", 422)
        c.answer, c.answered_at = text.strip()[:MAX_TEXT], now
    else:
        c.closed_at, c.closed_by = now, who[:64]
    c.status = nxt
    return c


def complaint_deadlines(c: Complaint, now: datetime) -> dict[str, Any]:
    """Whether each deadline is met, open or overdue."""

    def state(done: datetime | None, due: datetime) -> str:
        if done is not None:
            return "met" if done <= due else "late"
        return "overdue" if now > due else "open"

    return {"assign": state(c.assigned_at, c.assign_due_at), "answer": state(c.answered_at, c.answer_due_at)}


# ---------------------------------------------------------------------------------------------- exam results
def coach_of_part(db: Session, student: str, part: int) -> str | None:
    """The coach who taught most of the student's valid minutes of ``part``."""
    q = select(Minute.coach_id, func.count()).where(Minute.student_id == student, Minute.part == part,
                                                    Minute.valid.is_(True)).group_by(Minute.coach_id)  # fmt: skip
    counts = Counter(dict(db.execute(q).all()))
    return counts.most_common(1)[0][0] if counts else None


def store_exam_results(db: Session, results: list[dict[str, Any]], now: datetime) -> int:
    """Results from the exam side's feed (``seq``, ``student``, ``part``, ``passed``, ``sat_at``), once each."""
    stored = 0
    for r in results:
        seq = int(r["seq"])
        if db.scalar(select(ExamResult.id).where(ExamResult.source_seq == seq)) is not None:
            continue
        st = db.get(Student, str(r["student"]))
        part = int(r["part"])
        db.add(ExamResult(source_seq=seq, student_id=str(r["student"]), school_id=st.school_id if st else None,
                          coach_id=coach_of_part(db, str(r["student"]), part), part=part, passed=bool(r["passed"]),
                          sat_at=datetime.fromisoformat(str(r["sat_at"])), received_at=now))  # fmt: skip
        stored += 1
    db.flush()
    return stored


# ---------------------------------------------------------------------------------------------- worker
class PlatformWorker:
    """The platform's background passes: escrow (releases, funding, bank calls), exam results, no-shows."""

    def __init__(self, session_factory: SessionFactory, policy: Policy, clock: Clock, *, escrow: Any = None,
                 exam_results: Any = None, poll_seconds: float = 2.0) -> None:  # fmt: skip
        self._sf, self.policy, self._clock = session_factory, policy, clock
        self.escrow, self.exam_results, self.poll_seconds = escrow, exam_results, poll_seconds

    def run_once(self) -> None:
        if self.exam_results is not None:
            with self._sf() as s, s.begin():
                after = s.scalar(select(func.coalesce(func.max(ExamResult.source_seq), 0))) or 0
            try:
                results = self.exam_results(after)
            except Exception as exc:  # noqa: BLE001 - the exam side being down must not stop escrow; next pass
                log.info("exam results not fetched: %s", exc)
                results = []
            if results:
                with self._sf() as s, s.begin():
                    store_exam_results(s, results, self._clock())
        with self._sf() as s, s.begin():
            settle_bookings(s, self.policy, self._clock())
        if self.escrow is not None:
            self.escrow.run_once()
            self.reconcile_yesterday()

    def reconcile_yesterday(self) -> bool:
        """The daily reconciliation: once the Beijing day has turned, yesterday's ledger against the bank's statement
        (once; a day whose statement was unavailable is tried again on the next pass). True when one ran."""
        if self.escrow is None:
            return False
        day = (self._clock().astimezone(BEIJING) - timedelta(days=1)).date()
        with self._sf() as s:
            reports = s.scalars(select(Reconciliation.differences).where(Reconciliation.day == day.isoformat()))
            done = any(all(d.get("kind") != "statement_unavailable" for d in diffs) for diffs in reports)
        if done:
            return False
        self.escrow.reconcile(day)
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup: the next pass retries
                log.exception("platform pass failed")
            stop.wait(self.poll_seconds)
