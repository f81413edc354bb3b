"""Car scenarios (simulators.fraud_car) through real ingest and ledger on SQLite: a terminal moved into another car is
caught by its VIN (``foreign_car``) and queued for review; the terminal in its own car, or in a car that gives no VIN,
raises nothing; a terminal enrolled without a VIN is bound on first sight with an alarm, and a regulator corrects a
wrong binding through the API."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_fraud_scenarios import enrol as enrol_people
from test_fraud_scenarios import feed as feed_records
from test_fraud_scenarios import fresh_db, in_arrival_order

from firmware_protocols import envelope
from firmware_protocols.messages import EnrolmentRequest
from server.car_binding import ALARM_VIN_BOUND, ALARM_VIN_CORRECTED
from server.models import Alarm, Minute, ReviewItem, School, Terminal, TrainingSession
from server.policy import load_builtin_policy
from simulators.fraud import SCHOOL
from simulators.fraud_car import CAR_A, CAR_B, CAR_SCENARIOS, CarScenario

POLICY = load_builtin_policy("national-2016")


def enrol(sf: Any, scenario: CarScenario) -> None:
    """People and terminals as the office enrols them; a terminal's VIN when the scenario names one."""
    enrol_people(sf, scenario, scenario.vins)


def feed(sf: Any, batches: list[tuple[datetime, str, list[bytes]]]) -> None:
    feed_records(sf, batches, POLICY)


def run(tmp_path: Path, scenario: CarScenario, batches: list[tuple[datetime, str, list[bytes]]] | None = None) -> Any:
    sf = fresh_db(tmp_path / "server.db")
    enrol(sf, scenario)
    feed(sf, in_arrival_order(scenario.uploads) if batches is None else batches)
    return sf


def verdicts(sf: Any) -> dict[str, tuple[bool | None, tuple[str, ...], str]]:
    with sf() as s:
        return {m.record_no: (m.valid, tuple(m.reasons), m.status) for m in s.scalars(select(Minute))}


def alarms(sf: Any, kind: str) -> list[Alarm]:
    with sf() as s:
        return list(s.scalars(select(Alarm).where(Alarm.kind == kind)))


def test_the_box_moved_into_another_car_is_caught_and_queued_for_review(tmp_path: Path) -> None:
    scenario = CAR_SCENARIOS["terminal_swapped"]()
    sf = run(tmp_path, scenario)
    got = verdicts(sf)
    assert len(got) == 80 and len(scenario.suspects) == 40
    for no, (valid, reasons, status) in got.items():
        if no in scenario.suspects:  # the afternoon, in car B
            # (the whole session is invalid, so it is also too low on valid minutes)
            assert (valid, reasons, status) == (False, ("foreign_car", "session_low_valid"), "under_review"), no
        else:  # the morning, in its own car A
            assert (valid, reasons, status) == (True, (), "auto_passed"), no
    with sf() as s:
        (item,) = s.scalars(select(ReviewItem))
        assert item.status == "open" and item.reasons == ["foreign_car"] and set(item.records) == scenario.suspects
        assert s.scalar(select(Terminal.vin)) == CAR_A  # the binding named at enrolment stays
    assert alarms(sf, ALARM_VIN_BOUND) == []


@pytest.mark.parametrize("name", ["terminal_own_car", "car_without_vin"])
def test_own_car_and_a_car_without_vin_raise_nothing(tmp_path: Path, name: str) -> None:
    scenario = CAR_SCENARIOS[name]()
    sf = run(tmp_path, scenario)
    got = verdicts(sf)
    assert len(got) == 80 and all(v == (True, (), "auto_passed") for v in got.values())
    with sf() as s:
        assert list(s.scalars(select(ReviewItem))) == []
        assert all(ts.valid_minutes == 40 for ts in s.scalars(select(TrainingSession)))
    assert alarms(sf, ALARM_VIN_BOUND) == []


def test_no_vin_anywhere_binds_nothing(tmp_path: Path) -> None:
    """A terminal enrolled without a VIN in a car that gives none: not bound, no alarm, no finding."""
    scenario = CAR_SCENARIOS["car_without_vin"]()
    scenario.vins.clear()
    sf = run(tmp_path, scenario)
    assert all(v[0] for v in verdicts(sf).values())
    with sf() as s:
        assert s.scalar(select(Terminal.vin)) is None
    assert alarms(sf, ALARM_VIN_BOUND) == []


def test_enrolled_without_vin_bound_on_first_sight_with_an_alarm_then_caught(tmp_path: Path) -> None:
    scenario = CAR_SCENARIOS["swapped_after_first_sight"]()
    assert scenario.vins == {}
    sf = run(tmp_path, scenario)
    got = verdicts(sf)
    assert {no for no, v in got.items() if "foreign_car" in v[1]} == scenario.suspects
    assert all(v[0] for no, v in got.items() if no not in scenario.suspects)
    with sf() as s:
        assert s.scalar(select(Terminal.vin)) == CAR_A
        first = s.scalar(select(Minute.record_no).order_by(Minute.start).limit(1))
    (alarm,) = alarms(sf, ALARM_VIN_BOUND)
    assert alarm.detail["vin"] == CAR_A and alarm.detail["record_no"] == first
    assert alarm.terminal_id == next(iter(scenario.terminals))


@pytest.mark.parametrize("seed", [1, 2])
def test_verdicts_do_not_depend_on_arrival_order_or_batching(tmp_path: Path, seed: int) -> None:
    """With the VIN bound at enrolment, the finding is the same whatever order and batches the records come in."""
    scenario = CAR_SCENARIOS["terminal_swapped"]()
    (tmp_path / "ordered").mkdir()
    (tmp_path / "shuffled").mkdir()
    expected = verdicts(run(tmp_path / "ordered", scenario))
    rng = random.Random(seed)
    ups = list(scenario.uploads)
    rng.shuffle(ups)
    size = rng.randint(1, 30)
    arrive = max(u.arrive_at for u in ups)
    batches = [(arrive, ups[0].terminal, [u.raw for u in ups[i : i + size]]) for i in range(0, len(ups), size)]
    assert verdicts(run(tmp_path / "shuffled", scenario, batches)) == expected


def test_a_regulator_corrects_a_wrong_first_sight_binding(tmp_path: Path) -> None:
    """The box was in car B when it first reported (the afternoon arrived first): bound to B, with an alarm. The
    regulator checks the car's papers and corrects the binding to A: the verdicts follow."""
    from fastapi.testclient import TestClient

    from server.api import create_app
    from server.settings import Settings

    scenario = CAR_SCENARIOS["swapped_after_first_sight"]()
    terminal = next(iter(scenario.terminals))
    arrive = max(u.arrive_at for u in scenario.uploads)
    afternoon_first = sorted(scenario.uploads, key=lambda u: u.arrive_at, reverse=True)
    sf = run(tmp_path, scenario, [(arrive, terminal, [u.raw]) for u in afternoon_first])
    got = verdicts(sf)
    assert {no for no, v in got.items() if "foreign_car" in v[1]} == set(got) - scenario.suspects  # the morning
    assert alarms(sf, ALARM_VIN_BOUND)[0].detail["vin"] == CAR_B
    app = create_app(Settings(admin_token="t0ken", database_url=f"sqlite:///{tmp_path / 'server.db'}"),  # noqa: S106
                     session_factory=sf, policy=POLICY)  # fmt: skip
    admin = {"Authorization": "Bearer t0ken"}
    body = {"vin": CAR_A, "reason": "registration papers of 鲁L0000学 checked: VIN " + CAR_A}
    with TestClient(app) as api:
        assert api.post(f"/api/terminals/{terminal}/vin", json=body).status_code == 401
        assert api.post(f"/api/terminals/{terminal}/vin", json={**body, "vin": "LFVBA24K5NR00000O"},
                        headers=admin).status_code == 422  # fmt: skip
        assert api.post(f"/api/terminals/{'T' * 16}/vin", json=body, headers=admin).status_code == 404
        r = api.post(f"/api/terminals/{terminal}/vin", json=body, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json() == {"terminal": terminal, "vin": CAR_A, "old_vin": CAR_B, "sessions_judged": 2}
        assert api.get(f"/api/terminals/{terminal}", headers=admin).json()["vin"] == CAR_A
        codes = {c["code"] for i in api.get("/api/review/items", headers=admin).json() for c in i["reasons"]}
        assert codes == {"foreign_car"}
        # the office names the VIN of a new terminal's car at enrolment; a malformed one is refused
        enrolment = {"terminal": "3710000000000899", "car_plate": "鲁L0899学", "school": SCHOOL, "vin": CAR_B}
        assert api.post("/api/enrolments", json=enrolment, headers=admin).status_code == 201
        bad = {**enrolment, "terminal": "3710000000000898", "vin": CAR_B.lower()}
        assert api.post("/api/enrolments", json=bad, headers=admin).status_code == 422
    got = verdicts(sf)
    assert {no for no, v in got.items() if "foreign_car" in v[1]} == scenario.suspects  # now the afternoon
    (corrected,) = alarms(sf, ALARM_VIN_CORRECTED)
    assert corrected.detail["old_vin"] == CAR_B and corrected.detail["vin"] == CAR_A


def test_enrolment_names_the_vin_and_provisioning_binds_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.pki import CertificateAuthority, make_csr, new_tls_key
    from server.provisioning import ProvisioningRefused, issue_token, provision

    sf = fresh_db(tmp_path / "server.db")
    now = datetime.now(UTC).replace(microsecond=0)
    terminal = "3710000000000801"
    with sf() as s, s.begin():
        s.add(School(id=SCHOOL, name="s", created_at=now))
        s.flush()
        with pytest.raises(ProvisioningRefused) as exc:
            issue_token(s, terminal=terminal, car_plate="x", school=SCHOOL, ttl=timedelta(hours=1), now=now,
                        vin="NOT-A-VIN")  # fmt: skip
        assert exc.value.reason == "bad_vin"
        token, _row = issue_token(s, terminal=terminal, car_plate="x", school=SCHOOL, ttl=timedelta(hours=1),
                                  now=now, vin=CAR_A)  # fmt: skip
    ca = CertificateAuthority.create(tmp_path / "pki")
    key = Ed25519PrivateKey.generate()
    request = EnrolmentRequest(terminal, token, envelope.public_key_to_pem(key.public_key()),
                               make_csr(new_tls_key(), terminal).decode(), now).sign(key)  # fmt: skip
    with sf() as s, s.begin():
        provision(s, ca, request, now)
    with sf() as s:
        assert s.get(Terminal, terminal).vin == CAR_A
