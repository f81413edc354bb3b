"""Joint supervision (联合监管): one view per department, each with the data it may see, all from the same records.

=========================================  ==================================================  =====================
view                                       holds                                               roles
=========================================  ==================================================  =====================
``GET /api/supervision/transport``         schools: hours, anomaly and fraud rates, open        regulator (transport
                                           reviews, unacknowledged alarms, the red/black list   bureau)
``GET /api/supervision/police``            per school and coach: parts accepted for the exam    police, exam clerk,
                                           (eligibility), exam results and pass rates           regulator
``GET /api/supervision/market``            per school: prices, complaints by status and         market regulation,
                                           overdue, escrow held / in transit / released /       regulator
                                           refunded, and the latest releases with their trace
=========================================  ==================================================  =====================
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from server.api_deps import DB
from server.auth import Market, Police, Regulator
from server.clock import utcnow
from server.figures import ranked, school_figures
from server.models import (
    REVIEW_ACCEPTED,
    Alarm,
    Complaint,
    EscrowAccount,
    EscrowEntry,
    ExamResult,
    School,
    SchoolOffer,
    StageReview,
    Student,
    Terminal,
)
from server.platform import complaint_deadlines

router = APIRouter(prefix="/api/supervision", tags=["supervision"])
#: Releases listed in the market view (newest first).
RECENT_RELEASES = 50


@router.get("/transport")
def transport_view(request: Request, db: DB, _p: Regulator) -> list[dict[str, Any]]:
    """Transport bureau: every school's hours, anomalies and list status."""
    alarms = dict(db.execute(select(Terminal.school_id, func.count()).join(Alarm, Alarm.terminal_id == Terminal.id)
                             .where(Alarm.acknowledged.is_(False)).group_by(Terminal.school_id)).all())  # fmt: skip
    out = []
    for f in ranked(school_figures(db, request.app.state.policy, None)):
        out.append({"school": f.school, "name": f.name, "students": f.students, "sessions": f.sessions,
                    "xueshi": f.xueshi, "valid_minutes": f.valid_minutes, "invalid_minutes": f.invalid_minutes,
                    "anomaly_rate": f.anomaly_rate, "fraud_rate": f.fraud_rate, "open_reviews": f.open_reviews,
                    "failed_reviews": f.failed_reviews, "open_alarms": alarms.get(f.school, 0), "score": f.score,
                    "list": f.list, "rank": f.rank, "terms": f.terms})  # fmt: skip
    return out


@router.get("/police")
def police_view(db: DB, _p: Police) -> list[dict[str, Any]]:
    """Traffic police: eligibility (parts accepted) and exam results per school and per coach."""
    accepted: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for sid, part, n in db.execute(select(Student.school_id, StageReview.part, func.count())
                                      .join(Student, Student.id == StageReview.student_id)
                                      .where(StageReview.status == REVIEW_ACCEPTED)
                                      .group_by(Student.school_id, StageReview.part)):  # fmt: skip
        accepted[sid][part] = n
    results: dict[str, dict[str, Any]] = {}
    for x in db.scalars(select(ExamResult).order_by(ExamResult.source_seq)):
        per = results.setdefault(x.school_id or "?", {"sat": 0, "passed": 0, "by_part": {}, "by_coach": {}})
        for bucket in (per, per["by_part"].setdefault(str(x.part), {"sat": 0, "passed": 0}),
                       per["by_coach"].setdefault(x.coach_id or "?", {"sat": 0, "passed": 0})):  # fmt: skip
            bucket["sat"] += 1
            bucket["passed"] += int(x.passed)
    out = []
    for s in db.scalars(select(School).order_by(School.id)):
        r = results.get(s.id, {"sat": 0, "passed": 0, "by_part": {}, "by_coach": {}})
        for bucket in (r, *r["by_part"].values(), *r["by_coach"].values()):
            bucket["pass_rate"] = round(bucket["passed"] / bucket["sat"], 4) if bucket["sat"] else None
        out.append({"school": s.id, "name": s.name,
                    "parts_accepted": {str(k): v for k, v in sorted(accepted.get(s.id, {}).items())},
                    "exams": r})  # fmt: skip
    return out


@router.get("/market")
def market_view(db: DB, _p: Market) -> list[dict[str, Any]]:
    """Market regulation: prices, complaints and escrow money per school (fen)."""
    now = utcnow()
    prices: dict[str, dict[str, int]] = defaultdict(dict)
    for o in db.scalars(select(SchoolOffer)):
        prices[o.school_id][o.licence_class] = o.price_fen
    complaints: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in db.scalars(select(Complaint)):
        complaints[c.school_id][c.status] += 1
        if "overdue" in complaint_deadlines(c, now).values():
            complaints[c.school_id]["overdue"] += 1
    held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for school, kind, total in db.execute(select(Student.school_id, EscrowAccount.kind, func.sum(EscrowAccount.balance))
                                          .join(Student, Student.id == EscrowAccount.owner)
                                          .where(EscrowAccount.kind.in_(["escrow", "transit", "refund"]))
                                          .group_by(Student.school_id, EscrowAccount.kind)):  # fmt: skip
        held[school][kind] = int(total or 0)
    released = {a.owner: a.balance for a in db.scalars(select(EscrowAccount).where(EscrowAccount.kind == "school"))}
    recent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in db.scalars(select(EscrowEntry).where(EscrowEntry.kind == "release").order_by(EscrowEntry.id.desc())
                        .limit(RECENT_RELEASES)):  # fmt: skip
        recent[e.school_id or "?"].append({"student": e.student_id, "event": e.event, "amount_fen": e.amount,
                                           "notice_id": e.notice_id, "records_digest": e.records_digest,
                                           "bank_txn": e.bank_txn, "at": e.at.isoformat()})  # fmt: skip
    return [{"school": s.id, "name": s.name, "prices_fen": prices.get(s.id, {}),
             "complaints": dict(complaints.get(s.id, {})),
             "escrow_fen": {"held": held[s.id].get("escrow", 0), "in_transit": held[s.id].get("transit", 0),
                            "released": released.get(s.id, 0), "refunded": held[s.id].get("refund", 0)},
             "recent_releases": recent.get(s.id, [])}
            for s in db.scalars(select(School).order_by(School.id))]  # fmt: skip
