"""The server's storage on SQLite and PostgreSQL: migrations, ingest to stage review, the forwarder and the API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import SCHOOL, STUDENT, T0, TestPki, TestTerminal, enrol, enrolment_request
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from firmware_protocols import topics
from firmware_protocols.messages import AckStatus
from server import db
from server.api import create_app
from server.api_trust import Trust
from server.exam_client import ExamRefused, ExamReply, ExamUnavailable, StageReviewNotice
from server.forwarder import Forwarder
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import Base, HourTotal, Minute, RawRecord, StageReview
from server.policy import load_builtin_policy
from server.settings import Settings

TOKEN = "test-admin-token"  # noqa: S105


@pytest.fixture
def sf(db_url: str) -> Iterator[Any]:
    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    yield db.make_session_factory(engine)
    engine.dispose()


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def test_migrations_match_the_models(db_url: str) -> None:
    db.upgrade(db_url)
    db.upgrade(db_url)  # idempotent
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_ingest_to_stage_review_and_forwarding(sf: Any) -> None:
    terminal = TestTerminal()
    enrol(sf, terminal)
    clock = FakeClock()
    ledger = Ledger(sf, load_builtin_policy("demo"), clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    records = [terminal.genesis(), *terminal.session(T0, 16)]
    payload = terminal.batch(records)
    ack, _ = ingestor.handle_batch(topics.up_records(terminal.id), payload)
    assert ack is not None and {r.status for r in ack.results} == {AckStatus.STORED}
    again, _ = ingestor.handle_batch(topics.up_records(terminal.id), payload)
    assert again is not None and {r.status for r in again.results} == {AckStatus.DUPLICATE}
    with sf() as s:
        assert [r.raw for r in s.scalars(select(RawRecord).order_by(RawRecord.seq))] == records
        assert s.scalar(select(RawRecord.at).limit(1)).tzinfo is not None  # aware UTC back
        total = s.get(HourTotal, (STUDENT, 2))
        assert total is not None and total.valid_minutes == 16 and total.required_minutes == 15 and total.complete
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == "pending"
        valid = sorted(s.scalars(select(Minute.record_no).where(Minute.valid.is_(True))))
        assert review.notice["records"] == valid
        assert review.notice["records_digest"] == StageReviewNotice.digest_of(valid)

    class FlakyExam:
        def __init__(self) -> None:
            self.calls: list[StageReviewNotice] = []

        def submit(self, notice: StageReviewNotice) -> ExamReply:
            self.calls.append(notice)
            if len(self.calls) == 1:
                raise ExamUnavailable("connection refused")
            return ExamReply("accepted", ())

    exam = FlakyExam()
    fw = Forwarder(sf, exam, clock)
    assert fw.run_once() == 1
    with sf() as s:
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == "pending" and review.attempts == 1
        assert review.next_attempt_at > clock() and review.last_error
    assert fw.run_once() == 0  # not due yet
    clock.t += timedelta(hours=1)
    # a new forwarder (a restart) picks the notice up from the database
    assert Forwarder(sf, exam, clock).run_once() == 1
    with sf() as s:
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == "accepted" and review.attempts == 2
    assert exam.calls[1].records == tuple(sorted(exam.calls[1].records)) and len(exam.calls[1].records) == 16


def test_refused_notice_is_not_retried(sf: Any) -> None:
    terminal = TestTerminal()
    enrol(sf, terminal)
    clock = FakeClock()
    ledger = Ledger(sf, load_builtin_policy("demo"), clock)
    Ingestor(sf, clock, after_commit=ledger.after_ingest).handle_batch(
        topics.up_records(terminal.id), terminal.batch([terminal.genesis(), *terminal.session(T0, 15)])
    )

    class RefusingExam:
        def submit(self, notice: StageReviewNotice) -> ExamReply:
            raise ExamRefused("bad notice", 422, ("bad_digest",))

    fw = Forwarder(sf, RefusingExam(), clock)
    assert fw.run_once() == 1
    clock.t += timedelta(days=1)
    assert fw.run_once() == 0
    with sf() as s:
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == "rejected" and review.reply["reasons"] == ["bad_digest"]


def test_no_transaction_is_open_while_the_exam_side_answers(sf: Any, db_url: str) -> None:
    """Regression: the forwarder held its write transaction across the HTTP call, so a slow exam system stalled
    every ingest write (SQLite) or held a row lock (PostgreSQL). Here the exam side itself writes to the database."""
    terminal = TestTerminal()
    enrol(sf, terminal)
    clock = FakeClock()
    ledger = Ledger(sf, load_builtin_policy("demo"), clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    ingestor.handle_batch(
        topics.up_records(terminal.id), terminal.batch([terminal.genesis(), *terminal.session(T0, 15)])
    )
    # Another writer that gives up after 0.3 s instead of waiting (SQLite busy timeout, PostgreSQL lock timeout).
    wait_limit = {"timeout": 0.3} if db_url.startswith("sqlite") else {"options": "-c lock_timeout=300"}
    other = create_engine(db_url, connect_args=wait_limit)

    class WritingExam:
        def submit(self, notice: StageReviewNotice) -> ExamReply:
            with other.begin() as conn:  # a writer elsewhere (ingest) must not wait for this call
                conn.execute(text("UPDATE stage_reviews SET last_error = 'touched' WHERE notice_id = :n"),
                             {"n": notice.notice_id})  # fmt: skip
            return ExamReply("accepted", ())

    assert Forwarder(sf, WritingExam(), clock).run_once() == 1
    other.dispose()
    with sf() as s:
        review = s.scalar(select(StageReview))
        assert review is not None and review.status == "accepted" and review.attempts == 1


def _template() -> str:
    from biometrics.templates import FaceTemplate, encode_template

    return encode_template(FaceTemplate(np.linspace(-0.2, 0.2, 128, dtype=np.float32)))


def test_api_admin_writes_and_reads(sf: Any, tmp_path: Path) -> None:
    changed: list[str] = []
    settings = Settings(admin_token=TOKEN, database_url="sqlite://")
    trust = Trust(TestPki(tmp_path / "pki").ca, None, "127.0.0.1", 8883)
    app = create_app(settings, session_factory=sf, policy=load_builtin_policy("demo"), on_people_change=changed.append,
                     trust=trust)  # fmt: skip
    auth = {"Authorization": f"Bearer {TOKEN}"}
    terminal = TestTerminal()
    with TestClient(app) as client:
        assert client.get("/api/health").json()["status"] == "ok"
        assert client.post("/api/schools", json={"id": SCHOOL, "name": "Test school"}).status_code == 401
        assert (
            client.post(
                "/api/schools", json={"id": SCHOOL, "name": "x"}, headers={"Authorization": "Bearer no"}
            ).status_code
            == 401
        )
        assert client.post("/api/schools", json={"id": SCHOOL, "name": "Test school"}, headers=auth).status_code == 201
        assert client.post("/api/schools", json={"id": SCHOOL, "name": "again"}, headers=auth).status_code == 409
        assert client.post("/api/schools", json={"id": "short", "name": "x"}, headers=auth).status_code == 422
        car = {"terminal": terminal.id, "car_plate": "鲁L12345学", "school": SCHOOL}
        assert client.post("/api/enrolments", json=car).status_code == 401
        token = client.post("/api/enrolments", headers=auth, json=car).json()["token"]
        r = client.post("/api/provision", json={"request": enrolment_request(terminal, token)[0]})
        assert r.status_code == 201 and r.json()["key_id"] == terminal.key_id
        assert client.get(f"/api/terminals/{terminal.id}", headers=auth).json()["key_id"] == terminal.key_id
        assert client.post("/api/provision", json={"request": "not a request"}).json()["detail"]["reason"]
        coach = {
            "id": "C000000000000001",
            "name": "Wang",
            "school": SCHOOL,
            "classes": ["C1"],
            "face_template": _template(),
        }
        assert client.post("/api/coaches", headers=auth, json=coach).status_code == 201
        student = {"id": STUDENT, "name": "Li", "school": SCHOOL, "class": "C1", "face_template": _template()}
        assert client.post("/api/students", headers=auth, json=student).status_code == 201
        bad_face = {**student, "id": "P000000000000002", "face_template": "fr1:nope"}
        assert client.post("/api/students", headers=auth, json=bad_face).status_code == 422
        assert (
            client.post(
                "/api/students", headers=auth, json={**student, "id": "P000000000000003", "school": "S999999999999999"}
            ).status_code
            == 422
        )
        assert changed == [SCHOOL, SCHOOL, SCHOOL]

        clock = FakeClock()
        ledger = Ledger(sf, load_builtin_policy("demo"), clock)
        ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
        records = [
            terminal.genesis(),
            *terminal.session(T0, 3),
            *terminal.session(T0 + timedelta(hours=1), 2, session="S2", rpm=0),
        ]
        ingestor.handle_batch(topics.up_records(terminal.id), terminal.batch(records))
        ingestor.handle_batch(
            topics.up_records("T999999999999999"),
            TestTerminal(id="T999999999999999").batch([TestTerminal(id="T999999999999999").genesis()]),
        )

        assert [t["id"] for t in client.get("/api/terminals", headers=auth).json()] == [terminal.id]
        assert client.get(f"/api/terminals/{terminal.id}", headers=auth).json()["last_seen_at"] is not None
        assert client.get("/api/terminals/NOPE", headers=auth).status_code == 404
        st = client.get(f"/api/students/{STUDENT}", headers=auth).json()
        assert st["licence_class"] == "C1" and st["hours"][1]["valid_minutes"] == 3
        assert st["hours"][1]["required_minutes"] == 15
        assert client.get(f"/api/students/{STUDENT}/hours", headers=auth).json()[1]["complete"] is False
        assert len(client.get("/api/students", headers=auth).json()) == 1
        sessions = client.get("/api/sessions", params={"student": STUDENT}, headers=auth).json()
        assert len(sessions) == 2 and client.get("/api/sessions", params={"terminal": "X"}, headers=auth).json() == []
        s2 = next(x for x in sessions if x["session"] == "S2")
        minutes = client.get(f"/api/sessions/{s2['id']}/minutes", headers=auth).json()
        assert [m["valid"] for m in minutes] == [False, False]
        assert minutes[0]["reasons"][0]["code"] == "engine_off" and minutes[0]["reasons"][0]["zh"]
        assert client.get("/api/sessions/99999/minutes", headers=auth).status_code == 404
        assert [a["kind"] for a in client.get("/api/alarms", headers=auth).json()] == ["unknown_terminal"]
        assert client.get("/api/stage-reviews", headers=auth).json() == []
        metrics = client.get("/metrics").text
        assert f"jiapei_records_stored_total {len(records)}" in metrics
        assert 'jiapei_rejections_total{reason="unknown_terminal"} 1' in metrics
        assert f'jiapei_terminal_last_seen_seconds{{terminal="{terminal.id}"}}' in metrics
        assert "jiapei_outbox_pending 0" in metrics


def test_create_app_without_session_factory_builds_its_own(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    db.upgrade(url)
    app = create_app(Settings(database_url=url, policy="demo"))
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        assert (
            client.post(
                "/api/schools", json={"id": SCHOOL, "name": "x"}, headers={"Authorization": "Bearer x"}
            ).status_code
            == 401
        )  # admin token unset
    assert datetime.now(UTC).tzinfo is not None
