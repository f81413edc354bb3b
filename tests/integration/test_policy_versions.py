"""Policy versions: each minute is judged by the policy in force on its Beijing day, not by whichever is configured
last; a stricter rule from tomorrow on leaves today's hours as they were."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_fraud_scenarios import POLICY, Clock, enrol, fresh_db, in_arrival_order

from firmware_protocols import topics
from firmware_protocols.messages import RecordBatch
from server.app import load_configured_policies, load_configured_policy
from server.ingest import Ingestor
from server.ledger import Ledger
from server.models import Minute
from server.policy import Policy, PolicyError
from simulators.fraud import clean_fleet

#: The clean fleet trains 08:00-08:40 and 14:00-14:40 Beijing time on 2026-11-27.
DAY = date(2026, 11, 27)
MORNINGS_ONLY = replace(POLICY, name="mornings-only", practical_window=(time(8, 0), time(12, 0)))


def judge(tmp_path: Path, policies: list[Policy]) -> dict[int, tuple[int, set[str]]]:
    """Beijing hour of the session → (valid minutes, reasons of the invalid ones)."""
    scenario = clean_fleet(cars=1)
    sf = fresh_db(tmp_path / "server.db")
    enrol(sf, scenario)
    feed_all(sf, scenario, policies)
    out: dict[int, tuple[int, set[str]]] = {}
    with sf() as s:
        for m in s.scalars(select(Minute)):
            hour = (m.start.hour + 8) % 24
            valid, reasons = out.get(hour, (0, set()))
            out[hour] = (valid + bool(m.valid), reasons | set(m.reasons))
    return {h: (v, r) for h, (v, r) in sorted(out.items())}


def feed_all(sf: Any, scenario: Any, policies: list[Policy]) -> None:
    """test_fraud_scenarios.feed with every policy version given to the ledger."""
    clock = Clock()
    ledger = Ledger(sf, policies, clock)
    ingestor = Ingestor(sf, clock, after_commit=ledger.after_ingest)
    for n, (at, terminal, raws) in enumerate(in_arrival_order(scenario.uploads)):
        clock.t = at
        batch = RecordBatch(terminal, f"b{n}", tuple(raws)).encode()
        ack, _ = ingestor.handle_batch(topics.up_records(terminal), batch)
        assert ack is not None and ack.error is None


def test_a_rule_in_force_from_today_judges_today(tmp_path: Path) -> None:
    stricter = replace(MORNINGS_ONLY, effective_from=DAY)
    assert judge(tmp_path, [POLICY, stricter]) == {
        8: (40, set()),
        14: (0, {"outside_time_window", "session_low_valid"}),
    }


def test_a_rule_in_force_from_tomorrow_leaves_today_alone(tmp_path: Path) -> None:
    tomorrow = replace(MORNINGS_ONLY, effective_from=date(2026, 11, 28))
    assert judge(tmp_path, [tomorrow, POLICY]) == {8: (40, set()), 14: (40, set())}  # order of the list is irrelevant


def test_each_day_takes_its_own_daily_cap(tmp_path: Path) -> None:
    capped_today = replace(POLICY, name="cap-50", effective_from=DAY, daily_cap_minutes_practical=50)
    got = judge(tmp_path, [POLICY, capped_today])
    assert got[8] == (40, set()) and got[14] == (10, {"daily_cap"})
    later = replace(capped_today, effective_from=date(2026, 11, 28))
    assert judge(tmp_path / "later", [POLICY, later]) == {8: (40, set()), 14: (40, set())}


def test_the_configuration_names_several_versions() -> None:
    both = load_configured_policies("national-2016, demo")
    assert [p.name for p in both] == ["national-2016", "demo"]
    assert load_configured_policy("national-2016").name == "national-2016"
    with pytest.raises(PolicyError):
        load_configured_policies(" , ")
    with pytest.raises(PolicyError, match="no built-in policy"):
        load_configured_policies("national-2016,nowhere-2030")


def test_the_hours_a_part_needs_follow_the_policy_in_force_now() -> None:
    from datetime import UTC, datetime

    future = replace(POLICY, name="more-hours-2030", effective_from=date(2030, 1, 1),
                     part_hours={"C1": {1: 20, 2: 20, 3: 30, 4: 20}})  # fmt: skip
    ledger = Ledger(None, [future, POLICY], lambda: datetime(2026, 11, 27, tzinfo=UTC))  # type: ignore[arg-type]
    assert ledger.policy_at(datetime(2026, 11, 27, tzinfo=UTC)) is POLICY
    assert ledger.policy_at(datetime(2030, 1, 1, tzinfo=UTC)) is future
    assert ledger.policy_at(datetime(2015, 1, 1, tzinfo=UTC)) is POLICY  # before any: the oldest
    with pytest.raises(ValueError, match="at least one policy"):
        Ledger(None, [], lambda: datetime(2026, 11, 27, tzinfo=UTC))  # type: ignore[arg-type]
