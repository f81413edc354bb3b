"""Derived data after ingest: minute verdicts per session, hour totals per student and part, stage-review notices.

Everything here is recomputed from stored rows (idempotent): re-running it for any session or student changes
nothing unless the records or the policy changed. The rules themselves are the pure cores in
:mod:`server.validation` and :mod:`server.hours`; which stage review to send, and what an exam-side rejection sends
back to review, is :mod:`server.stage_reviews`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from firmware_protocols.errors import MalformedMessage
from firmware_protocols.identifiers import CourseCode
from firmware_protocols.records import RecordKind, parse_time
from server.car_binding import bind_on_first_sight, minute_vin
from server.clock import Clock
from server.db import SessionFactory
from server.face_evidence import Finding, photo_kind, session_findings
from server.hours import apply_daily_cap, progress
from server.models import (
    ITEM_FAILED,
    ITEM_OPEN,
    ITEM_PASSED,
    ITEM_RESOLVED,
    MINUTE_AUTO_FAILED,
    MINUTE_AUTO_PASSED,
    MINUTE_MANUAL_FAILED,
    MINUTE_MANUAL_PASSED,
    MINUTE_UNDER_REVIEW,
    REVIEW_ACCEPTED,
    Coach,
    HourTotal,
    Minute,
    RawRecord,
    ReviewItem,
    StageReview,
    Student,
    Terminal,
    TrainingSession,
)
from server.policy import DUPLICATE_KINDS, Policy, PolicyError, policy_in_force
from server.review import latest_decisions_at, session_target
from server.stage_reviews import decided_since, exam_rejections, new_stage_review, next_notice_id, rejected_records
from server.validation.cross import OVERLAP, MinuteSlot, backdated, overlaps
from server.validation.minutes import Fix30, MinuteFacts
from server.validation.reasons import REVIEW_REASONS, Reason
from server.validation.session import SIGN_IN, SIGN_OUT, Photo, SessionFacts, judge_session
from server.validation.track import TrackMinute, replayed

log = logging.getLogger(__name__)

PRACTICAL_MODE = 1


def facts_of(m: Minute, session: str, **context: Any) -> MinuteFacts:
    """The audit's view of a stored minute; ``context`` sets the facts that come from other rows (school, arrival,
    the coach's classes...)."""
    try:  # loaded columns live in the instance's dict: read there, they skip the ORM's attribute access (~1/3 of this)
        d = m.__dict__
        f = d["facts"]
        record_no, terminal, student, coach = d["record_no"], d["terminal_id"], d["student_id"], d["coach_id"]
        course, start = d["course"], d["start"]
    except KeyError:  # a column not loaded (expired, deferred): through the ORM
        f = m.facts
        record_no, terminal, student, coach = m.record_no, m.terminal_id, m.student_id, m.coach_id
        course, start = m.course, m.start
    fix = f.get("fix30")
    fix30 = None
    fix30_time = None
    if isinstance(fix, dict):
        get = fix.get
        fix30 = Fix30(
            int(get("lat", 0)),  # lat_e6
            int(get("lon", 0)),  # lon_e6
            int(get("mode") or 0),  # mode
            _int_or_none(get("sats")),  # satellites
            _int_or_none(get("hdop")),  # hdop10
            int(get("speed") or 0),  # speed_dkmh
        )
        if "t" in fix:
            try:
                fix30_time = parse_time(fix["t"])
            except MalformedMessage:
                fix30_time = None
    # positional in MinuteFacts' field order (cheaper than keywords, once per minute re-judged)
    return MinuteFacts(
        record_no,
        terminal,
        student,
        coach,
        course,
        session,
        start,
        int(f["max_speed"]),  # max_speed_dkmh
        int(f["distance_m"]),
        int(f["fix_count"]),
        fix30,
        _int_or_none(f.get("rpm")),
        f.get("face_result"),
        fix30_time,
        vin=f["vin"] if isinstance(f.get("vin"), str) else None,
        vehicle_speed_dkmh=_int_or_none(f.get("vehicle_speed")),
        speed_readings=_int_or_none(f.get("speed_readings")),
        **context,
    )


def _int_or_none(x: Any) -> int | None:
    return x if type(x) is int or (isinstance(x, int) and not isinstance(x, bool)) else None


class Ledger:
    """Re-judges sessions, recomputes hour totals, keeps the review queue and enqueues stage reviews."""

    def __init__(self, session_factory: SessionFactory, policy: Policy | Sequence[Policy], clock: Clock) -> None:
        """``policy``: one policy, or every version in force over time (each judges the minutes of the Beijing days
        from its ``effective_from``; the one in force now sets the hours a part needs)."""
        self._sf = session_factory
        self.policies = tuple(sorted([policy] if isinstance(policy, Policy) else policy,
                                     key=lambda p: (p.effective_from, p.name)))  # fmt: skip
        if not self.policies:
            raise ValueError("the ledger needs at least one policy")
        self.policy = self.policies[-1]  # the newest: what a single-policy caller configured
        self._clock = clock

    def policy_at(self, at: datetime) -> Policy:
        """The policy in force on ``at``'s Beijing day (the oldest one before any is in force)."""
        if len(self.policies) == 1:
            return self.policy
        try:
            return policy_in_force(self.policies, at)
        except PolicyError:
            return self.policies[0]

    def after_ingest(self, session_ids: Iterable[int]) -> list[str]:
        """Hook for :class:`server.ingest.Ingestor`: returns the notice ids of stage reviews created.

        Besides the sessions the batch touched, the sessions whose verdicts depend on them are re-judged: the same
        student's or coach's sessions on other terminals around the same minutes (overlaps), the later minutes
        of the same chain (backdating) and the sessions with a minute of the same track fingerprint (replayed
        tracks). So late records give the verdicts that the same records in order give.
        """
        students = self.rejudge_sessions(self.affected_sessions(session_ids))
        return self.recompute_students(students)

    def affected_sessions(self, session_ids: Iterable[int]) -> set[int]:
        touched = set(session_ids)
        out = set(touched)
        with self._sf() as s:
            for sid in sorted(touched):
                rows = s.execute(select(Minute.terminal_id, Minute.chain, Minute.seq, Minute.start, Minute.student_id,
                                        Minute.coach_id).where(Minute.session_id == sid)).all()  # fmt: skip
                if not rows:
                    continue
                terminal = rows[0].terminal_id
                first, last = min(r.start for r in rows), max(r.start for r in rows)
                for chain in {r.chain for r in rows}:
                    low = min(r.seq for r in rows if r.chain == chain)
                    out.update(s.scalars(select(Minute.session_id).distinct().where(
                        Minute.terminal_id == terminal, Minute.chain == chain, Minute.seq > low,
                        Minute.start < last)))  # fmt: skip
                people = or_(Minute.student_id.in_({r.student_id for r in rows}),
                             Minute.coach_id.in_({r.coach_id for r in rows}))  # fmt: skip
                out.update(s.scalars(select(Minute.session_id).distinct().where(
                    Minute.terminal_id != terminal, Minute.start > first - OVERLAP, Minute.start < last + OVERLAP,
                    people)))  # fmt: skip
            out |= _sessions_sharing_tracks(s, touched)
        return out

    def rejudge_sessions(self, session_ids: Iterable[int]) -> set[str]:
        """Judge all minutes of each session at once; returns the students whose minutes were judged."""
        students: set[str] = set()
        now = self._clock()
        ids = sorted(set(session_ids))
        with self._sf() as s, s.begin():
            people = _People(s)
            # the sessions, their minutes and the people they name: one query each per chunk, not per session
            for i in range(0, len(ids), REJUDGE_CHUNK):
                chunk = ids[i : i + REJUDGE_CHUNK]
                sessions = _sessions_by_id(s, chunk)
                minutes = _minutes_by_session(s, chunk)
                people.prefetch(sessions.values(), (m for ms in minutes.values() for m in ms))
                for sid in chunk:
                    ts = sessions.get(sid)
                    if ts is not None:
                        students |= self._rejudge(s, ts, people, now, minutes.get(sid, []))
        return students

    def _rejudge(
        self, s: Session, ts: TrainingSession, people: _People, now: datetime, minutes: list[Minute] | None = None
    ) -> set[str]:
        if minutes is None:
            minutes = list(s.scalars(select(Minute).where(Minute.session_id == ts.id).order_by(Minute.id)))
        school = people.terminal_school(ts.terminal_id)
        bound_vin = people.terminal_vin(ts.terminal_id, minutes, now)
        arrivals = _arrivals(s, minutes)
        facts = []
        for m in minutes:
            coach = people.coach(m.coach_id)
            facts.append(facts_of(m, ts.session, received_at=arrivals.get((m.chain, m.seq)), school=school,
                                  student_school=people.student_school(m.student_id),
                                  coach_school=coach[0] if coach else None,
                                  coach_classes=coach[1] if coach else (), bound_vin=bound_vin))  # fmt: skip
        extra = _cross_reasons(s, ts, minutes)
        policy = self.policy_at(min(m.start for m in minutes)) if minutes else self.policy
        verdict = judge_session(facts, _session_facts(s, ts, policy.decisive_duplicates), policy, extra)
        by_no = {m.record_no: m for m in minutes}
        target = session_target(ts.terminal_id, ts.session)
        manual = latest_decisions_at(s, [target, *by_no])
        rejected = exam_rejections(s, {m.student_id for m in minutes})
        suspicious: dict[str, set[str]] = {}
        for v in verdict.minutes:
            m = by_no[v.record_no]
            capped = Reason.DAILY_CAP in (m.reasons or [])
            reasons = set(v.reasons)
            decided = manual.get(m.record_no) or manual.get(target)
            decision = decided[0] if decided else None
            rejected_at = rejected.get(m.record_no)
            if rejected_at is not None and not decided_since(decided, rejected_at):
                decision = None  # the exam side sent it back: only a decision made after that counts
                reasons.add(Reason.EXAM_REJECTED)
            if decision == "pass":
                status = MINUTE_MANUAL_PASSED
            elif decision == "fail":
                status, reasons = MINUTE_MANUAL_FAILED, reasons | {str(Reason.MANUAL_FAILED)}
            elif reasons & REVIEW_REASONS:
                status = MINUTE_UNDER_REVIEW
                suspicious[m.record_no] = reasons & REVIEW_REASONS
            else:
                status = MINUTE_AUTO_FAILED if reasons else MINUTE_AUTO_PASSED
            m.status = status
            m.reasons = sorted(reasons | ({str(Reason.DAILY_CAP)} if capped else set()))
            m.valid = status in (MINUTE_AUTO_PASSED, MINUTE_MANUAL_PASSED) and not capped
            m.judged_at = now
        ts.minutes_count = len(minutes)
        ts.valid_minutes = sum(1 for m in minutes if m.valid)
        ts.distance_m = verdict.distance_m
        ts.reasons = list(verdict.reasons)
        self._queue(s, ts, minutes, suspicious, now)
        return {m.student_id for m in minutes}

    def _queue(self, s: Session, ts: TrainingSession, minutes: list[Minute], suspicious: dict[str, set[str]],
               now: datetime) -> None:  # fmt: skip
        """Open, update or resolve the session's review item."""
        key = f"session:{session_target(ts.terminal_id, ts.session)}"
        item = s.scalar(select(ReviewItem).where(ReviewItem.key == key))
        if not suspicious:
            if item is not None and item.status == ITEM_OPEN:
                decided = {m.status for m in minutes} & {MINUTE_MANUAL_PASSED, MINUTE_MANUAL_FAILED}
                item.status = (ITEM_FAILED if MINUTE_MANUAL_FAILED in decided else ITEM_PASSED) if decided \
                    else ITEM_RESOLVED  # fmt: skip
                item.updated_at = now
            return
        records = sorted(suspicious)
        reasons = sorted({r for codes in suspicious.values() for r in codes})
        parts = sorted({m.part for m in minutes if m.record_no in suspicious})
        if item is None:
            item = ReviewItem(key=key, kind="session", terminal_id=ts.terminal_id, session=ts.session, record_no=None,
                              student_id=ts.student_id or minutes[0].student_id, parts=parts, reasons=reasons,
                              records=records, status=ITEM_OPEN, created_at=now, updated_at=now)  # fmt: skip
            s.add(item)
        elif (item.status, item.reasons, item.records, item.parts) != (ITEM_OPEN, reasons, records, parts):
            item.status, item.reasons, item.records, item.parts, item.updated_at = (
                ITEM_OPEN, reasons, records, parts, now)  # fmt: skip

    def recompute_students(self, students: Iterable[str]) -> list[str]:
        created: list[str] = []
        for student in sorted(set(students)):
            try:
                created.extend(self._recompute_student(student))
            except IntegrityError:  # another worker enqueued the same stage review first: recompute once more
                created.extend(self._recompute_student(student))
        return created

    def _recompute_student(self, student_id: str) -> list[str]:
        now = self._clock()
        created: list[str] = []
        with self._sf() as s, s.begin():
            student = s.get(Student, student_id)
            minutes = list(s.scalars(select(Minute).where(Minute.student_id == student_id, Minute.valid.is_not(None))))
            self._apply_daily_cap(s, minutes)
            self._flag_flips(s, student_id, minutes, now)
            if student is None:
                log.info("minutes of unenrolled student %s: no hour totals", student_id)
                return []
            valid_by_part: dict[int, int] = defaultdict(int)
            mileage_by_part: dict[int, int] = defaultdict(int)
            for m in minutes:
                if m.valid:
                    valid_by_part[m.part] += 1
                    mileage_by_part[m.part] += int(m.facts.get("distance_m") or 0)
            blocked = _parts_under_review(s, student_id)
            current = self.policy_at(now)
            for p in progress(student_id, student.licence_class, valid_by_part, current, mileage_by_part):
                row = s.get(HourTotal, (student_id, p.part))
                if row is None:
                    row = HourTotal(student_id=student_id, part=p.part)
                    s.add(row)
                row.licence_class, row.valid_minutes = p.licence_class, p.valid_minutes
                row.required_minutes, row.complete, row.updated_at = p.required_minutes, p.complete, now
                if p.complete and p.required_minutes > 0 and p.part not in blocked:
                    notice_id = next_notice_id(s, student_id, p.part)
                    if notice_id is not None:
                        records = sorted(m.record_no for m in minutes if m.valid and m.part == p.part)
                        s.add(new_stage_review(student, p.part, p.valid_minutes, records, now, notice_id,
                                               mileage_by_part[p.part], current))  # fmt: skip
                        created.append(notice_id)
        return created

    def after_exam_reply(self, notice_ids: Iterable[str]) -> list[str]:
        """Hook for :class:`server.forwarder.Forwarder`: the exam side rejected these notices, so the sessions of the
        records they name are judged again (their minutes go back to review). Idempotent."""
        records: set[str] = set()
        with self._sf() as s:
            for review in s.scalars(select(StageReview).where(StageReview.notice_id.in_(sorted(set(notice_ids))))):
                records |= rejected_records(review)
            wanted = sorted(records)
            sessions: set[int] = set()
            for i in range(0, len(wanted), IN_CHUNK):
                sessions.update(s.scalars(select(Minute.session_id).distinct()
                                          .where(Minute.record_no.in_(wanted[i : i + IN_CHUNK]))))  # fmt: skip
        return self.after_ingest(sessions)

    def _apply_daily_cap(self, s: Session, minutes: list[Minute]) -> None:
        """Practical and classroom minutes each against their own cap, per Beijing day (valid before the cap:
        auto- or manually passed)."""
        groups: dict[bool, list[Minute]] = {True: [], False: []}
        for m in minutes:
            groups[_is_practical(m.course)].append(m)
        for practical, group in groups.items():
            judged = [(m.record_no, m.start, m.status in (MINUTE_AUTO_PASSED, MINUTE_MANUAL_PASSED)) for m in group]
            by_policy: dict[int, list[tuple[str, datetime, bool]]] = defaultdict(list)
            for j in judged:  # each day's cap is the one in force that day (a day never spans two policies)
                by_policy[self.policies.index(self.policy_at(j[1]))].append(j)
            over: set[str] = set()
            for index, days in by_policy.items():
                policy = self.policies[index]
                cap = policy.daily_cap_minutes_practical if practical else policy.daily_cap_minutes_classroom
                over |= apply_daily_cap(days, policy, cap)
            for m, (_no, _start, ok) in zip(group, judged, strict=True):
                reasons = sorted(
                    {r for r in m.reasons if r != Reason.DAILY_CAP}
                    | ({str(Reason.DAILY_CAP)} if m.record_no in over else set())
                )
                if reasons != m.reasons:
                    m.reasons = reasons
                capped_valid = ok and m.record_no not in over
                if m.valid != capped_valid:  # assigned only when it changes: an unchanged minute stays clean
                    m.valid = capped_valid
        # A session's count is what its minutes say after the cap (the cap may move across sessions of a day).
        counts: dict[int, int] = defaultdict(int)
        for m in minutes:
            counts[m.session_id] += 1 if m.valid else 0
        sessions = _sessions_by_id(s, counts)  # one query per chunk, not one per session (each after a flush)
        for session_id, valid in counts.items():
            ts = sessions.get(session_id)
            if ts is not None and ts.valid_minutes != valid:
                ts.valid_minutes = valid

    def _flag_flips(self, s: Session, student_id: str, minutes: list[Minute], now: datetime) -> None:
        """A minute inside an accepted stage review that is no longer valid is never changed silently: review item.
        The item closes by itself when the minute is valid again (its photo came late, an operator passed it) and
        opens again if it flips once more."""
        accepted = s.scalars(select(StageReview).where(StageReview.student_id == student_id,
                                                       StageReview.status == REVIEW_ACCEPTED))  # fmt: skip
        sent = {no for r in accepted for no in r.notice.get("records", [])}
        if not sent:
            return
        items = {i.key: i for i in s.scalars(select(ReviewItem).where(ReviewItem.student_id == student_id,
                                                                      ReviewItem.kind == "minute"))}  # fmt: skip
        for m in minutes:
            if m.record_no not in sent:
                continue
            key = f"minute:{m.record_no}"
            item = items.get(key)
            if m.valid:
                if item is not None and item.status == ITEM_OPEN:
                    item.status, item.updated_at = ITEM_RESOLVED, now
            elif item is None:
                s.add(ReviewItem(key=key, kind="minute", terminal_id=m.terminal_id, session=str(m.session_id),
                                 record_no=m.record_no, student_id=student_id, parts=[m.part],
                                 reasons=["accepted_minute_flipped", *m.reasons], records=[m.record_no],
                                 status=ITEM_OPEN, created_at=now, updated_at=now))  # fmt: skip
            elif item.status == ITEM_RESOLVED:
                item.status, item.updated_at = ITEM_OPEN, now
                item.reasons = ["accepted_minute_flipped", *m.reasons]

#: Ids per ``IN (…)`` when loading rows by id (well below every engine's limit on bound parameters).
IN_CHUNK = 500


def _sessions_by_id(s: Session, ids: Iterable[int]) -> dict[int, TrainingSession]:
    """The session rows with these ids (the ones already in the ORM session are returned as they are there)."""
    wanted = sorted(set(ids))
    out: dict[int, TrainingSession] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        out.update((ts.id, ts) for ts in s.scalars(select(TrainingSession).where(TrainingSession.id.in_(chunk))))
    return out


#: Sessions re-judged per chunk (their minutes are loaded together).
REJUDGE_CHUNK = 200


def _minutes_by_session(s: Session, ids: list[int]) -> dict[int, list[Minute]]:
    """The minutes of these sessions (at most ``IN_CHUNK``), per session, in id order."""
    out: dict[int, list[Minute]] = defaultdict(list)
    for m in s.scalars(select(Minute).where(Minute.session_id.in_(ids)).order_by(Minute.session_id, Minute.id)):
        out[m.session_id].append(m)
    return out


def _is_practical(course: str) -> bool:
    try:
        return CourseCode.parse(course).mode == PRACTICAL_MODE
    except MalformedMessage:
        return False


class _People:
    """Schools and licences looked up once per re-judging pass."""

    def __init__(self, s: Session) -> None:
        self._s = s
        self._terminals: dict[str, str | None] = {}
        self._students: dict[str, str | None] = {}
        self._coaches: dict[str, tuple[str, tuple[str, ...]] | None] = {}
        self._vins: dict[str, str | None] = {}

    def prefetch(self, sessions: Iterable[TrainingSession], minutes: Iterable[Minute]) -> None:
        """Look up at once the terminals of ``sessions`` and the students and coaches of ``minutes`` not known yet."""
        terminals = {ts.terminal_id for ts in sessions} - self._terminals.keys()
        students: set[str] = set()
        coaches: set[str] = set()
        for m in minutes:
            students.add(m.student_id)
            coaches.add(m.coach_id)
        students -= self._students.keys()
        coaches -= self._coaches.keys()
        for chunk in _chunks(terminals):
            self._terminals.update(dict.fromkeys(chunk))
            for t, school in self._s.execute(select(Terminal.id, Terminal.school_id).where(Terminal.id.in_(chunk))):
                self._terminals[t] = school
        for chunk in _chunks(students):
            self._students.update(dict.fromkeys(chunk))
            for p, school in self._s.execute(select(Student.id, Student.school_id).where(Student.id.in_(chunk))):
                self._students[p] = school
        for chunk in _chunks(coaches):
            self._coaches.update(dict.fromkeys(chunk))
            rows = self._s.execute(select(Coach.id, Coach.school_id, Coach.classes).where(Coach.id.in_(chunk)))
            for c, school, classes in rows:
                self._coaches[c] = (school, tuple(classes))

    def terminal_school(self, terminal: str) -> str | None:
        if terminal not in self._terminals:
            row = self._s.get(Terminal, terminal)
            self._terminals[terminal] = row.school_id if row is not None else None
        return self._terminals[terminal]

    def terminal_vin(self, terminal: str, minutes: list[Minute], now: datetime) -> str | None:
        """The VIN the terminal is bound to, looked up only when one of ``minutes`` reports a VIN (the rule needs
        both); a terminal without one is bound here on first sight (:mod:`server.car_binding`)."""
        if not any(minute_vin(m) for m in minutes):
            return None
        if self._vins.get(terminal) is None:
            self._vins[terminal] = bind_on_first_sight(self._s, terminal, minutes, now)
        return self._vins[terminal]

    def student_school(self, student: str) -> str | None:
        if student not in self._students:
            row = self._s.get(Student, student)
            self._students[student] = row.school_id if row is not None else None
        return self._students[student]

    def coach(self, coach: str) -> tuple[str, tuple[str, ...]] | None:
        """(school, licence classes), or None for a coach not registered."""
        if coach not in self._coaches:
            row = self._s.get(Coach, coach)
            self._coaches[coach] = (row.school_id, tuple(row.classes)) if row is not None else None
        return self._coaches[coach]


def _arrivals(s: Session, minutes: list[Minute]) -> dict[tuple[int, int], datetime]:
    """(chain, seq) → when the server stored the minute's raw record."""
    if not minutes:
        return {}
    terminal = minutes[0].terminal_id
    out: dict[tuple[int, int], datetime] = {}
    for chain in {m.chain for m in minutes}:
        seqs = [m.seq for m in minutes if m.chain == chain]
        rows = s.execute(select(RawRecord.seq, RawRecord.received_at).where(
            RawRecord.terminal_id == terminal, RawRecord.chain == chain,
            RawRecord.seq >= min(seqs), RawRecord.seq <= max(seqs)))  # fmt: skip
        out.update(((chain, seq), at) for seq, at in rows)
    return out


#: Face-check results that mean no photo was taken.
NO_PHOTO = frozenset({"camera_error"})


def _session_facts(s: Session, ts: TrainingSession, copy_kinds: Collection[str] = DUPLICATE_KINDS) -> SessionFacts:
    """The sign-in and sign-out times and the student's photos of a session (sign-in, face checks, sign-out), from
    raw records, with what the server's own re-check found about them (:mod:`server.face_evidence`)."""
    kinds = (str(RecordKind.STUDENT_LOGIN), str(RecordKind.STUDENT_LOGOUT), str(RecordKind.FACE_CHECK))
    rows = s.execute(select(RawRecord.kind, RawRecord.at, RawRecord.body, RawRecord.chain, RawRecord.seq).where(
        RawRecord.terminal_id == ts.terminal_id, RawRecord.kind.in_(kinds),
        RawRecord.body["session"].as_string() == ts.session))  # fmt: skip
    found = session_findings(s, ts.terminal_id, ts.session, copy_kinds)
    photos: list[Photo] = []
    started: datetime | None = None
    ended: datetime | None = None
    for kind, at, body, chain, seq in rows:
        if kind == RecordKind.STUDENT_LOGIN:
            started = at if started is None else min(started, at)
        elif kind == RecordKind.STUDENT_LOGOUT:
            ended = at if ended is None else max(ended, at)
        if kind == RecordKind.FACE_CHECK:
            if body.get("role") != "student" or body.get("result") in NO_PHOTO:
                continue
            photos.append(_photo(at, body.get("result"), photo_kind(body), found.at(chain, seq)))
        else:
            face = body.get("face")
            if isinstance(face, dict) and face.get("result") not in (None, *NO_PHOTO):
                taken_for = SIGN_IN if kind == RecordKind.STUDENT_LOGIN else SIGN_OUT
                photos.append(_photo(at, face.get("result"), taken_for, found.named(face.get("photo"))))
    photos.sort(key=lambda p: (p.at, p.passed, p.kind, p.server_verdict or "", p.ref or ""))
    return SessionFacts(started, tuple(photos), ended, found.copies)


def _photo(at: datetime, result: object, kind: str, check: Finding | None) -> Photo:
    """A photo of the session; ``check``: what the server found in its bytes (None: not re-checked yet)."""
    return Photo(at, result == "pass", kind, None if check is None else check.verdict,
                 None if check is None else check.ref)  # fmt: skip


def _cross_reasons(s: Session, ts: TrainingSession, minutes: list[Minute]) -> dict[str, set[str]]:
    """Overlaps with other terminals, and backdating along the chain, for the minutes of one session."""
    if not minutes:
        return {}
    first, last = min(m.start for m in minutes), max(m.start for m in minutes)
    people = or_(Minute.student_id.in_({m.student_id for m in minutes}),
                 Minute.coach_id.in_({m.coach_id for m in minutes}))  # fmt: skip
    rows = s.execute(select(Minute.record_no, Minute.terminal_id, Minute.student_id, Minute.coach_id, Minute.start)
                     .where(Minute.terminal_id != ts.terminal_id, Minute.start > first - OVERLAP,
                            Minute.start < last + OVERLAP, people))  # fmt: skip
    others = [MinuteSlot(*r) for r in rows]
    mine = [MinuteSlot(m.record_no, m.terminal_id, m.student_id, m.coach_id, m.start) for m in minutes]
    out: dict[str, set[str]] = defaultdict(set, overlaps(mine, others))
    for chain in {m.chain for m in minutes}:
        seqs = [m.seq for m in minutes if m.chain == chain]
        low, high = min(seqs), max(seqs)
        same_chain = (Minute.terminal_id == ts.terminal_id, Minute.chain == chain)
        floor = s.scalar(select(func.max(Minute.start)).where(*same_chain, Minute.seq < low))
        span = s.execute(select(Minute.seq, Minute.start, Minute.record_no).where(
            *same_chain, Minute.seq >= low, Minute.seq <= high)).all()  # fmt: skip
        for no in backdated([(r.seq, r.start, r.record_no) for r in span], floor):
            out[no].add(Reason.TIME_BACKWARDS)
    for no in _replayed_tracks(s, minutes):
        out[no].add(Reason.REPLAYED_TRACK)
    return dict(out)


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    """The distinct values, sorted, in bounded ``IN (…)`` lists."""
    wanted = sorted(set(values))
    for i in range(0, len(wanted), IN_CHUNK):
        yield wanted[i : i + IN_CHUNK]


def _replayed_tracks(s: Session, minutes: list[Minute]) -> set[str]:
    """Record numbers of the session's minutes whose track fingerprint an earlier minute (any terminal) has."""
    found: list[TrackMinute] = []
    for chunk in _chunks(m.track_hash for m in minutes if m.track_hash is not None):
        rows = s.execute(select(Minute.record_no, Minute.start, Minute.track_hash).where(Minute.track_hash.in_(chunk)))
        found += [TrackMinute(no, start, h) for no, start, h in rows if h is not None]
    return replayed(found) & {m.record_no for m in minutes}


def _sessions_sharing_tracks(s: Session, session_ids: Iterable[int]) -> set[int]:
    """Sessions with a minute whose track fingerprint a minute of ``session_ids`` has (copies and originals)."""
    ids = sorted(set(session_ids))
    hashes: set[str] = set()
    for i in range(0, len(ids), IN_CHUNK):
        hashes.update(s.scalars(select(Minute.track_hash).distinct().where(
            Minute.session_id.in_(ids[i : i + IN_CHUNK]), Minute.track_hash.is_not(None))))  # fmt: skip
    out: set[int] = set()
    for chunk in _chunks(hashes):
        out.update(s.scalars(select(Minute.session_id).distinct().where(Minute.track_hash.in_(chunk))))
    return out


def _parts_under_review(s: Session, student_id: str) -> set[int]:
    items = s.scalars(select(ReviewItem).where(ReviewItem.student_id == student_id, ReviewItem.status == ITEM_OPEN))
    return {int(p) for item in items for p in item.parts}
