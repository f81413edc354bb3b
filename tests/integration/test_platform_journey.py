"""One student's journey end to end, on SQLite and PostgreSQL, with the real bank and exam simulators over HTTP:
enrol, pay (the bank's callbacks come over HTTP, duplicated), book, train (signed records through real ingest, the
roster admitting only the booked student), stage reviews accepted by the exam side, releases to the school (a bank
timeout retried under the same key), exam results back, a rating, the ranking, the supervision views and the
day's reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from conftest import COACH, SCHOOL, STUDENT, TestTerminal, enrol
from fastapi.testclient import TestClient
from platform_world import serve, wait_for
from sqlalchemy import select

from firmware_protocols import topics
from firmware_protocols.identifiers import BEIJING
from server import db
from server.api import create_app
from server.auth import hash_password
from server.escrow import core
from server.escrow.bank import BankClient
from server.escrow.service import EscrowService
from server.exam_client import ExamClient
from server.forwarder import Forwarder
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import (
    BankInstruction,
    Booking,
    ExamResult,
    OperatorAccount,
    SchoolOffer,
    StageReview,
    TrainingSession,
)
from server.mqtt_consumer import build_roster
from server.platform import PlatformWorker
from server.policy import load_builtin_policy
from server.settings import Settings
from simulators.bank import create_app as bank_app
from simulators.exam import create_app as exam_app

PRICE = 500_000  # ¥5,000.00
SECRET = "bank-callback-secret-for-tests"  # noqa: S105
PASSWORD = "correct horse battery"  # noqa: S105
COURSES = {1: "1211110000", 2: "1212130000", 3: "1213210000"}


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def test_the_journey(db_url: str) -> None:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    sf = db.make_session_factory(engine)
    policy = load_builtin_policy("demo")
    policy = policy.__class__(**{**policy.__dict__, "booking": policy.booking.__class__(walk_ins=False)})
    terminal = TestTerminal()
    enrol(sf, terminal)
    now = datetime.now(UTC)
    with sf() as s, s.begin():
        s.add(SchoolOffer(school_id=SCHOOL, licence_class="C1", price_fen=PRICE, updated_at=now))
        s.add(OperatorAccount(username="li", password_hash=hash_password(PASSWORD), role="student", school_id=SCHOOL,
                              student_id=STUDENT, created_at=now))  # fmt: skip
        s.add(OperatorAccount(username="school", password_hash=hash_password(PASSWORD), role="school_admin",
                              school_id=SCHOOL, created_at=now))  # fmt: skip
        s.add(OperatorAccount(username="market", password_hash=hash_password(PASSWORD), role="market_regulator",
                              created_at=now))  # fmt: skip
    settings = Settings(database_url=db_url, jwt_key="k" * 48, bank_secret=SECRET, admin_token="admin-" + "x" * 20)
    app = create_app(settings, session_factory=sf, policy=policy, face_engine=object())
    with serve(app) as server_url, serve(bank_app(f"{server_url}/api/bank/callbacks", SECRET)) as bank_url, \
            serve(exam_app(None)) as exam_url, TestClient(app) as api:  # fmt: skip
        bank = BankClient(bank_url, timeout=0.5)
        escrow = EscrowService(sf, policy, bank, lambda: datetime.now(UTC))
        app.state.escrow = escrow
        tokens = {who: {"Authorization": "Bearer " + api.post("/api/auth/token", data={
            "username": who, "password": PASSWORD}).json()["access_token"]}
            for who in ("li", "school", "market")}  # fmt: skip
        me, school, market = tokens["li"], tokens["school"], tokens["market"]

        # enrol and pay: the bank collects, its callback (sent twice) reaches the server over HTTP
        httpx.post(f"{bank_url}/admin/faults", json={"duplicate_next": 1})
        r = api.post("/api/student-enrolments", json={"school": SCHOOL}, headers=me)
        assert r.status_code == 201, r.text
        enrolment = r.json()
        assert enrolment["fee_fen"] == PRICE and sum(enrolment["allocation"].values()) == PRICE
        assert api.post(f"/api/student-enrolments/{enrolment['id']}/payments", headers=me).status_code == 202
        wait_for(lambda: api.get(f"/api/escrow/students/{STUDENT}", headers=me).json()["balances"]["paid"] == PRICE,
                 what="the payment callback")  # fmt: skip
        escrow.run_once()  # enrolment confirmed: 10 % goes to the school
        wait_for(lambda: _released(api, me) == 50_000, what="the enrolment release")

        # book tomorrow 10:00-12:00 Beijing; the roster of the car admits the booked student only
        day = (datetime.now(BEIJING) + timedelta(days=1)).date()
        start = datetime.combine(day, datetime.min.time(), BEIJING).replace(hour=10).astimezone(UTC)
        r = api.post("/api/slots", headers=school, json={"school": SCHOOL, "coach": COACH, "terminal": terminal.id,
                     "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat()})  # fmt: skip
        assert r.status_code == 201, r.text
        slot = r.json()["id"]
        assert api.post(f"/api/slots/{slot}/bookings", headers=me).status_code == 201
        roster = build_roster(sf, terminal.id, start, policy)
        assert roster is not None and roster.walk_ins is False and roster.bookings
        assert roster.admits(STUDENT, start) and not roster.admits("P000000000000002", start)

        # train parts 1-3 in the slot: signed records through ingest; stage reviews to the exam simulator
        clock = Clock(start)
        ledger = Ledger(sf, policy, clock)
        ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
        records = [terminal.genesis(start)]
        for i, part in enumerate((1, 2, 3)):
            t = start + timedelta(minutes=25 * i)
            records += terminal.session(t, 20, session=f"S{part}", course=COURSES[part])
        for n in range(0, len(records), 50):
            clock.t = start + timedelta(hours=1, minutes=n)
            ack, _ = ingestor.handle_batch(topics.up_records(terminal.id), terminal.batch(records[n:n + 50]))
            assert ack is not None and ack.error is None
        with ExamClient(exam_url) as exam:
            Forwarder(sf, exam, lambda: start + timedelta(days=1)).run_once()
            with sf() as s:
                assert {r.part: r.status for r in s.scalars(select(StageReview))} == {1: "accepted", 2: "accepted",
                                                                                      3: "accepted"}  # fmt: skip
            # releases: the first transfer times out at the client (the bank executes it) and is retried
            httpx.post(f"{bank_url}/admin/faults", json={"timeout_next": 1, "timeout_seconds": 1.0,
                                                         "duplicate_next": 2})  # fmt: skip
            worker = PlatformWorker(sf, policy, lambda: datetime.now(UTC), escrow=escrow, exam_results=exam.results)
            worker.run_once()
            with sf() as s, s.begin():  # the retry is due at once (the test does not wait out the backoff)
                for ins in s.scalars(select(BankInstruction)):
                    ins.next_attempt_at = datetime.now(UTC)
            escrow.send_due()
            wait_for(lambda: _released(api, me) == PRICE, what="all releases")
            money = api.get(f"/api/escrow/students/{STUDENT}", headers=me).json()
            assert money["balances"] == {"paid": PRICE, "escrow": 0, "transit": 0, "released": PRICE, "refunded": 0}
            releases = [e for e in money["entries"] if e["kind"] == "release"]
            assert sorted(e["event"] for e in releases) == ["enrolment_confirmed", "part_1_accepted",
                                                             "part_2_accepted", "part_3_accepted"]  # fmt: skip
            with sf() as s:
                digests = {r.notice_id: r.notice["records_digest"] for r in s.scalars(select(StageReview))}
            assert all(digests[e["notice_id"]] == e["records_digest"] for e in releases if e["notice_id"])

            # exam results back: parts 1 and 2 passed, part 3 failed once then passed
            for part, passed in ((1, True), (2, True), (3, False), (3, True)):
                assert httpx.post(f"{exam_url}/api/v1/results", json={"student": STUDENT, "part": part,
                                                                      "passed": passed}).status_code == 200  # fmt: skip
            worker.run_once()
            with sf() as s:
                results = list(s.scalars(select(ExamResult)))
                assert len(results) == 4 and {r.coach_id for r in results} == {COACH}

        # the booking was attended; the student rates the first session
        with sf() as s, s.begin():
            from server.platform import settle_bookings

            settle_bookings(s, policy, start + timedelta(hours=3))
        with sf() as s:
            assert s.scalar(select(Booking.status)) == "attended"
            session_id = s.scalar(select(TrainingSession.id).where(TrainingSession.session == "S1"))
        r = api.post(f"/api/sessions/{session_id}/rating", headers=me, json={"stars": 5, "text": "耐心细致"})
        assert r.status_code == 201, r.text
        assert api.post(f"/api/sessions/{session_id}/rating", headers=me, json={"stars": 1}).status_code == 409

        # ranking and joint supervision
        ranking = {f["school"]: f for f in api.get("/api/ranking", headers=me).json()}[SCHOOL]
        assert ranking["score"] is not None and ranking["exams"] == 4 and ranking["pass_rate"] == 0.75
        assert ranking["ratings"] == 1 and "pass_rate" in ranking["terms"] and "evaluation" not in ranking["terms"]
        view = {v["school"]: v for v in api.get("/api/supervision/market", headers=market).json()}[SCHOOL]
        assert view["escrow_fen"]["released"] == PRICE and view["prices_fen"] == {"C1": PRICE}
        assert api.get("/api/supervision/transport", headers=market).status_code == 403
        r = api.post("/api/escrow/reconciliations", headers=market,
                     json={"day": datetime.now(BEIJING).date().isoformat()})  # fmt: skip
        assert r.status_code == 201 and r.json()["ok"], r.json()
        with sf() as s:
            assert escrow.check(s) == [] and escrow.balance(s, core.school_account(SCHOOL)) == PRICE
        bank.close()
    engine.dispose()


def _released(api: Any, headers: dict[str, str]) -> int:
    return int(api.get(f"/api/escrow/students/{STUDENT}", headers=headers).json()["balances"]["released"])
