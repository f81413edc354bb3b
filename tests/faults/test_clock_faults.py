"""The terminal's clock set back an hour in the middle of training: hours follow GNSS time, nothing counts twice.

The real TerminalRuntime (its loop thread, GnssClock, the session machine and the store) runs here with its wall
clock shifted by a test-controlled offset (the machine's own clock cannot be changed); GNSS fixes arrive as from the
receiver. The records then go through the TLS broker to the server, and the invariant checker compares both ends.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker, TestTerminal

from agent import runtime as runtime_module
from agent.runtime import TerminalRuntime
from agent.session import FaceOutcome, TrainingSession
from agent.store import RecordStore
from agent.sync import RecordSync
from faults.harness import ServerStack, finish, wait_for
from firmware_protocols.nmea import GpsFix
from firmware_protocols.records import parse_record

COACH, STUDENT = "3711020000000201", "3711020000000101"
T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 10:00 Beijing


class ShiftedClock(datetime):
    """``datetime`` whose ``now()`` is the real time plus an offset the test moves (the terminal's RTC)."""

    offset = timedelta(0)

    @classmethod
    def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
        return datetime.now(tz) + cls.offset


def _fix(t: datetime, i: int) -> GpsFix:
    return GpsFix(t, 35.42, 119.52 + i * 4e-5, 10.0, 4.0, 90.0, 3, 9, 0.9, True)


def test_terminal_clock_set_back_an_hour(tmp_path: Path, broker: Broker, enrolled: Any, terminal: TestTerminal,
                                         monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:  # fmt: skip
    started = time.monotonic()
    monkeypatch.setattr(runtime_module, "datetime", ShiftedClock)
    store = RecordStore(tmp_path / "agent" / "records.sqlite", terminal.id, terminal.key, tmp_path / "agent" / "chain")
    machine = TrainingSession(terminal.id, rng=random.Random(7))
    rt = TerminalRuntime(terminal.id, store, machine, None, tmp_path / "agent")
    rt.start()
    try:
        store.ensure_genesis(T0)
        machine.coach_login(COACH, FaceOutcome("pass", COACH, 0.3), T0)
        machine.student_login(STUDENT, "1212130000", FaceOutcome("pass", STUDENT, 0.3), T0, 1, 1)
        for s in range(0, 4 * 60):  # four minutes of fixes
            rt.on_fix(_fix(T0 + timedelta(seconds=s), s))
        wait_for("three minutes stored", lambda: store.counts().get("minute", 0) >= 3, 20)
        ShiftedClock.offset = -timedelta(hours=1)  # someone sets the terminal's clock back an hour
        wait_for("the jump seen", lambda: rt.clock.jumps >= 1, 10)
        for s in range(4 * 60, 8 * 60):  # training goes on; GNSS time goes on
            rt.on_fix(_fix(T0 + timedelta(seconds=s), s))
        wait_for("seven minutes stored", lambda: store.counts().get("minute", 0) >= 7, 20)
    finally:
        rt.stop()
        ShiftedClock.offset = timedelta(0)
    rows = store.pending(1000)
    minutes = [parse_record(r.raw) for r in rows if r.kind == "minute"]
    starts = [m.at for m in minutes]
    assert starts == [T0 + timedelta(minutes=i) for i in range(len(starts))]  # GNSS minutes, no hour repeated
    numbers = [m.body["record_no"] for m in minutes]
    assert len(set(numbers)) == len(numbers) and numbers == sorted(numbers)
    jumps = [parse_record(r.raw).body for r in rows if r.kind == "event"]
    assert any(b.get("event") == "clock_jump" and int(b.get("by_ms", 0)) <= -3_590_000 for b in jumps), jumps

    server = ServerStack(enrolled, broker.port, broker.pki).start()
    sync = RecordSync(store, terminal.id, "127.0.0.1", broker.port, terminal.key, lambda r: None,
                      tls=broker.tls(terminal.id))  # fmt: skip
    sync.start()
    try:
        wait_for("everything acked", lambda: not store.pending(1), 60)
    finally:
        sync.stop()
        server.stop()
    finish("terminal clock set back an hour", 1, [store.path], enrolled, started,
           note=f"{len(minutes)} minutes, one clock_jump event")  # fmt: skip
    store.close()
