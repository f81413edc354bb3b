"""The national-protocol gateway with real parts: a gateway on a free port, a real SQLite server database, and the
national terminal simulator over TCP. Its hours reach the database as judged minutes, like our agent's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import COACH, COURSE_C1_PART2, STUDENT
from gateway_helpers import NATIONAL, PHONE, RunningGateway, register, start_gateway, training_start
from sqlalchemy import func, select

from firmware_protocols.jt808 import StudentLogin
from server.models import Minute, NationalEnvelope, RawRecord, Rejection, TrainingSession


@pytest.fixture
def gw(enrolled: Any) -> Iterator[RunningGateway]:
    register(enrolled)
    running = start_gateway(enrolled)
    yield running
    running.stop()


def _count(sf: Any, model: Any, *where: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_a_session_reaches_the_database_as_judged_minutes(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal()
    sim.start()
    assert sim.heartbeat() == 0
    start = training_start()
    assert sim.position(start) == 0
    sim.session(COACH, STUDENT, COURSE_C1_PART2, start, 20)
    sim.drop()
    assert all(result == 0 for _, result in sim.results), sim.results
    with enrolled() as s:
        minutes = list(s.scalars(select(Minute).where(Minute.terminal_id == NATIONAL).order_by(Minute.start)))
        assert len(minutes) == 20
        assert all(m.judged_at is not None for m in minutes)
        assert [m.valid for m in minutes] == [True] * 20, [m.reasons for m in minutes]
        assert minutes[0].start == start and minutes[0].record_no.startswith(NATIONAL)
        assert minutes[0].chain == 1 and minutes[1].seq == minutes[0].seq + 1
        ts = s.scalar(select(TrainingSession).where(TrainingSession.terminal_id == NATIONAL))
        assert ts is not None and ts.valid_minutes == 20 and ts.declared_minutes == 20 and ts.started_at == start
        kinds = dict(s.execute(select(RawRecord.kind, func.count()).where(RawRecord.terminal_id == NATIONAL)
                               .group_by(RawRecord.kind)).all())  # fmt: skip
    # 20 minutes; logins/logouts; photos: coach in/out, student in/out, one during training (init + data each)
    assert kinds == {"minute": 20, "coach_login": 1, "coach_logout": 1, "student_login": 1, "student_logout": 1,
                     "face_check": 5, "event": 5}  # fmt: skip
    assert _count(enrolled, NationalEnvelope) == 34


def test_the_raw_column_keeps_the_exact_signed_envelope(gw: RunningGateway, enrolled: Any) -> None:
    from gateway_helpers import rsa_key

    from firmware_protocols.jt808 import TrainingEnvelope
    from firmware_protocols.jt808.signing import verify_envelope

    sim = gw.terminal()
    sim.start()
    sim.minute(STUDENT, COACH, COURSE_C1_PART2, training_start())
    with enrolled() as s:
        raw = s.scalar(select(RawRecord.raw).where(RawRecord.kind == "minute"))
    env = TrainingEnvelope.decode(raw, signed=True)
    verify_envelope(env, rsa_key(0).public_key())  # a third party with the certificate can check it alone
    assert env.terminal == NATIONAL and env.msg_id == 0x0203


def test_lost_link_backfill_and_reconnect(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal()
    sim.start()
    start = training_start()
    sim.session(COACH, STUDENT, COURSE_C1_PART2, start, 12, drop_at=4, back_at=9)
    assert not sim.store
    with enrolled() as s:
        envs = list(s.scalars(select(NationalEnvelope).where(NationalEnvelope.msg_id == 0x0203)))
        minutes = list(s.scalars(select(Minute).order_by(Minute.start)))
    assert len(minutes) == 12 and all(m.valid for m in minutes), [m.reasons for m in minutes]
    assert sum(e.backfill for e in envs) == 5  # minutes 4..8 were sent late with the backfill bit
    assert gw.gateway.counters["disconnected"] >= 1 or gw.gateway.counters["connection_lost"] >= 1


def test_a_gap_is_asked_for_with_0x8205_and_filled(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal(lose_minutes={3})
    sim.start()
    start = training_start()
    for i in range(6):
        sim.minute(STUDENT, COACH, COURSE_C1_PART2, start + timedelta(minutes=i))
    assert gw.wait_for("reupload_requested")
    assert sim.heartbeat() == 0  # the 0x8205 is in the stream before this answer: the terminal serves it
    with enrolled() as s:
        numbers = sorted(s.scalars(select(Minute.record_no)))
    assert [n[-4:] for n in numbers] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    # the re-sent copies of records already stored are answered OK and stored once
    assert _count(enrolled, Minute) == 6


def test_a_replayed_envelope_is_answered_but_stored_once(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal()
    sim.start()
    start = training_start()
    env = sim.envelope(StudentLogin(STUDENT, COACH, COURSE_C1_PART2, 1, sim.gnss(start)))
    assert sim.send_envelope(env) == 0
    before = _count(enrolled, RawRecord)
    assert sim.send_envelope(env) == 0  # the very same bytes again
    assert gw.wait_for("replayed_envelope")
    assert _count(enrolled, RawRecord) == before
    with enrolled() as s:
        assert s.get(Rejection, "replayed_envelope").count == 1


def test_register_answers_and_states(gw: RunningGateway, enrolled: Any) -> None:
    sim = gw.terminal()
    sim.connect()
    assert sim.register() == 0
    assert sim.authenticate() == 0
    assert sim.heartbeat() == 0
    # a terminal registered before connects again: authentication alone
    sim.drop()
    sim.connect()
    assert sim.authenticate() == 0
    assert gw.gateway.authenticated == 1
    assert PHONE in {c.phone for c in gw.gateway.connections}


def test_operator_registers_a_national_terminal_through_the_api(enrolled: Any) -> None:
    from fastapi import Depends, FastAPI, Header, HTTPException
    from gateway_helpers import certificate_pem, rsa_key
    from starlette.testclient import TestClient

    from server.api_national import register as national_router

    def admin(authorization: str | None = Header(default=None)) -> None:  # what server.api.require_admin checks
        if authorization != "Bearer t0ken":
            raise HTTPException(401, "admin bearer token required")

    app = FastAPI()  # the router alone: server.api's create_app includes it with the real admin dependency
    app.state.session_factory = enrolled
    app.include_router(national_router(Depends(admin)))
    client = TestClient(app)
    body = {"terminal": "N000000000000005", "phone": "13912345005", "car_plate": "鲁L00005学",
            "school": "S000000000000001", "certificate": certificate_pem(rsa_key(0), "N000000000000005")}  # fmt: skip
    assert client.post("/api/national-terminals", json=body).status_code == 401
    auth = {"Authorization": "Bearer t0ken"}
    r = client.post("/api/national-terminals", json=body, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["phone"] == "0000013912345005" and r.json()["certificate_subject"] == "CN=N000000000000005"
    assert client.post("/api/national-terminals", json=body, headers=auth).status_code == 409
    wrong = {**body, "terminal": "N000000000000006", "phone": "6"}
    r = client.post("/api/national-terminals", json=wrong, headers=auth)
    assert r.status_code == 422 and r.json()["detail"]["reason"] == "certificate_terminal_mismatch"
    assert client.get("/api/national-terminals/N000000000000005").json()["car_plate"] == "鲁L00005学"
    audit = client.get("/api/national-terminals/N000000000000005/audit").json()
    assert audit["envelopes"] == 0 and audit["failures"] == []


def test_audit_reverifies_every_stored_envelope(gw: RunningGateway, enrolled: Any) -> None:
    from server.api_national import audit_national

    sim = gw.terminal()
    sim.start()
    sim.session(COACH, STUDENT, COURSE_C1_PART2, training_start(), 3)
    with enrolled() as s:
        report = audit_national(s, NATIONAL)
    assert report is not None and report["envelopes"] == report["verified"] > 0 and not report["failures"]



def test_the_simulated_national_car_stays_on_the_training_ground() -> None:
    """Found in the demo: the simulated car drove north 44 m a minute for ever and left the demo's teaching area
    after ~40 minutes, so its later minutes were (rightly) invalid `outside_teaching_area`."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from server.gateway.demo_support import TERMINAL
    from server.policy import load_builtin_policy
    from server.validation.geo import inside_polygon
    from simulators.national_terminal import NationalTerminal

    areas = load_builtin_policy("demo").areas_for("3711020000000001", 2)
    car = NationalTerminal(TERMINAL, "0013910000000901", rsa.generate_private_key(65537, 2048), "鲁L0901学")
    for _ in range(8 * 60):  # a long day of training
        car.drive_one_minute()
        assert any(inside_polygon(car.lat, car.lon, a.polygon) for a in areas), (car.lat, car.lon)
