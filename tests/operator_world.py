"""A server database for the operator API and dashboard tests: two schools, their cars, people, sessions with real
signed records through real ingest (so verdicts, review items and hours are the server's own), and one account per
role. Used by ``tests/integration/test_api_roles.py`` and ``tests/browser/test_dashboard.py``.

School A (``simulators.fraud.SCHOOL``): an honest fleet of two cars plus the overlapping-student, teleport and parked
tricks, so its review queue has items. School B: the honest fleet's third car, its coach and student.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from firmware_protocols import envelope, topics
from firmware_protocols.messages import RecordBatch
from server import db
from server.auth import hash_password
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import (
    Coach,
    EnrolmentPhoto,
    Minute,
    OperatorAccount,
    ReviewItem,
    School,
    StageReview,
    Student,
    Terminal,
    TerminalKey,
    TrainingSession,
)
from server.policy import Policy, TeachingArea, load_builtin_policy
from simulators.fraud import DAY0, SCHOOL, TEACHING_AREA, clean_fleet, overlapping_student, parked, teleport

SCHOOL_B = "3711020000000002"
#: School B's teaching area: a larger square around the same training ground (the schools share it).
AREA_B = tuple((lat + (0.002 if lat > 35.42 else -0.002), lon + (0.003 if lon > 119.52 else -0.003))
               for lat, lon in TEACHING_AREA)


def free_port_number() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCHOOL_A = SCHOOL
PASSWORD = "correct horse battery"  # noqa: S105 - test accounts only
FACES = Path(__file__).resolve().parents[1] / "simulators" / "data" / "faces"
POLICY: Policy = replace(
    load_builtin_policy("national-2016"),
    teaching_areas=(TeachingArea(SCHOOL_A, frozenset({2, 3}), "日照训练场 Rizhao training ground", TEACHING_AREA),
                    TeachingArea(SCHOOL_B, frozenset({2, 3}), "东港驾校场地 Donggang ground", AREA_B)),
)  # fmt: skip
#: A moment while the morning sessions run (08:30 Beijing): the fleet map at this time shows them training.
MORNING = DAY0 + timedelta(minutes=30)
NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周杰", "吴婷", "徐明", "孙丽"]


@dataclass
class World:
    sf: Any
    url: str
    policy: Policy
    accounts: dict[str, str] = field(default_factory=dict)  # role key → username
    ids: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.t = DAY0

    def __call__(self) -> datetime:
        return self.t


def _feed(sf: Any, clock: Clock, uploads: list[tuple[datetime, str, bytes]]) -> None:
    ledger = Ledger(sf, POLICY, clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    groups: dict[tuple[datetime, str], list[bytes]] = {}
    for at, terminal, raw in uploads:
        groups.setdefault((at, terminal), []).append(raw)
    for n, ((at, terminal), raws) in enumerate(sorted(groups.items(), key=lambda kv: kv[0])):
        clock.t = at
        batch = RecordBatch(terminal, f"b{n}", tuple(raws)).encode()
        ack, _ = ingestor.handle_batch(topics.up_records(terminal), batch)
        assert ack is not None and ack.error is None, ack


def build_world(directory: Path) -> World:
    url = f"sqlite:///{directory / 'server.db'}"
    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    scenarios = [clean_fleet(3), overlapping_student(), teleport(), parked()]
    fleet = scenarios[0]
    in_b = {fleet.students[2], fleet.coaches[2], list(fleet.terminals)[2]}  # the third honest car is school B's

    def school_of(x: str) -> str:
        return SCHOOL_B if x in in_b else SCHOOL_A

    now = DAY0 - timedelta(days=30)
    names = itertools.cycle(NAMES)
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL_A, name="日照市阳光驾校 Sunshine Driving School", created_at=now))
        s.add(School(id=SCHOOL_B, name="日照市东港驾校 Donggang Driving School", created_at=now))
        s.flush()
        plate = 0
        for sc in scenarios:
            for c in sc.coaches:
                s.add(Coach(id=c, name=f"{next(names)}教练", school_id=school_of(c), classes=["C1", "C2"],
                            face_template="fr1:x", created_at=now))  # fmt: skip
            for p in sc.students:
                s.add(Student(id=p, name=next(names), school_id=school_of(p), licence_class="C1", face_template="fr1:y",
                              created_at=now))  # fmt: skip
            for t, pem in sc.terminals.items():
                plate += 1
                kid = envelope.key_id(envelope.public_key_from_pem(pem))
                s.add(Terminal(id=t, car_plate=f"鲁L{plate:04d}学", school_id=school_of(t), public_key=pem, key_id=kid,
                               status="active", registered_at=now))  # fmt: skip
                s.flush()
                s.add(TerminalKey(terminal_id=t, key_id=kid, public_key=pem, from_chain=1, added_at=now))
    clock = Clock()
    uploads = [(u.arrive_at, u.terminal, u.raw) for sc in scenarios for u in sc.uploads]
    _feed(sf, clock, uploads)

    student_a = overlapping_student().students[0]
    student_b, coach_b, terminal_b = fleet.students[2], fleet.coaches[2], list(fleet.terminals)[2]
    with sf() as s, s.begin():
        item = s.scalar(select(ReviewItem).where(ReviewItem.student_id == student_a).order_by(ReviewItem.id))
        assert item is not None, "the overlapping student must be in the review queue"
        session_a = s.scalar(select(TrainingSession).where(TrainingSession.student_id == student_a))
        session_b = s.scalar(select(TrainingSession).where(TrainingSession.student_id == student_b))
        assert session_a is not None and session_b is not None
        coach_a = session_a.coach_id
        # enrolment photos (the demo people's, see simulators/data/faces/PROVENANCE.md) for the evidence view
        for kind, pid, who in (("student", student_a, "biden"), ("coach", coach_a, "obama")):
            data = (FACES / f"{who}_enrol.jpg").read_bytes()
            import hashlib

            s.add(EnrolmentPhoto(person_kind=kind, person_id=pid, sha256=hashlib.sha256(data).hexdigest(),
                                 media_type="image/jpeg", data=data, width=0, height=0, face_box=[0, 0, 0, 0],
                                 consent=True, uploaded_by="test", created_at=now))  # fmt: skip
        # a part the exam side first rejected (three records back to review), then accepted when sent again
        first = fleet.students[0]
        records = sorted(s.scalars(select(Minute.record_no).where(Minute.student_id == first, Minute.valid.is_(True))))
        for suffix, status, reply in (
            ("", "rejected", {"status": "rejected", "reasons": ["photo_check_failed"],
                              "rejected_records": dict.fromkeys(records[:3], "photo_check_failed")}),
            ("-2", "accepted", {"status": "accepted", "reasons": [], "rejected_records": {}}),
        ):  # fmt: skip
            notice = {"notice_id": f"{first}-2{suffix}", "student": first, "part": 2, "valid_minutes": len(records),
                      "xueshi": len(records) // 45, "mileage_m": 250 * len(records), "records": records}  # fmt: skip
            s.add(StageReview(notice_id=notice["notice_id"], student_id=first, part=2, notice=notice, status=status,
                              attempts=1, next_attempt_at=now, last_error=None, reply=reply, created_at=now,
                              updated_at=now))  # fmt: skip
        other_student_a = next(p for p in teleport().students)
        accounts = {
            "regulator": ("reg", "regulator", None, None),
            "admin_a": ("admin.a", "school_admin", SCHOOL_A, None),
            "admin_b": ("admin.b", "school_admin", SCHOOL_B, None),
            "clerk": ("clerk", "exam_clerk", None, None),
            "student_a": ("student.a", "student", SCHOOL_A, student_a),
            "student_a2": ("student.a2", "student", SCHOOL_A, other_student_a),
            "student_b": ("student.b", "student", SCHOOL_B, student_b),
        }
        hashed = hash_password(PASSWORD)
        for username, role, school, student in accounts.values():
            s.add(OperatorAccount(username=username, password_hash=hashed, role=role, school_id=school,
                                  student_id=student, disabled=False, created_at=datetime.now(UTC)))  # fmt: skip
        ids = {"school_a": SCHOOL_A, "school_b": SCHOOL_B, "student_a": student_a, "student_a2": other_student_a,
               "student_b": student_b, "session_a": session_a.id, "session_b": session_b.id, "item_a": item.id,
               "item_target": f"{item.terminal_id}/{item.session}", "terminal_a": session_a.terminal_id,
               "terminal_b": terminal_b, "coach_a": coach_a, "coach_b": coach_b}  # fmt: skip
    return World(sf=sf, url=url, policy=POLICY, accounts={k: v[0] for k, v in accounts.items()}, ids=ids)
