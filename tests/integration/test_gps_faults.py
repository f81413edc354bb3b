"""Every fault of the GPS simulator against the agent's reader (real ptys, pyserial): what each must cause.

Waits are on conditions (fixes arriving, counters moving), never fixed sleeps; retry, silence and stale limits are
patched small. At clock factor 60 the simulator sends 60 epochs a real second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.gnss_time import GnssClock
from agent.gps import SerialGpsReader
from agent.odometry import Odometer
from firmware_protocols.nmea import GpsFix
from simulators.clock import SimClock
from simulators.gps import (
    FIGURE_EIGHT,
    REVERSING_BAYS,
    ROAD_LOOP,
    ROAD_SPEEDS,
    TRAINING_SPEEDS,
    GpsFault,
    GpsPty,
    RouteDriver,
)

START = datetime(2026, 5, 1, 8, 0, 0, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.fixes: list[GpsFix] = []
        self._cond = threading.Condition()

    def __call__(self, fix: GpsFix) -> None:
        with self._cond:
            self.fixes.append(fix)
            self._cond.notify_all()

    def until(self, pred: Callable[[list[GpsFix]], bool], what: str, timeout: float = 5.0) -> list[GpsFix]:
        with self._cond:
            assert self._cond.wait_for(lambda: pred(self.fixes), timeout), f"timed out: {what}"
            return list(self.fixes)

    def more(self, n: int) -> list[GpsFix]:
        have = len(self.fixes)
        return self.until(lambda f: len(f) >= have + n, f"{n} more fixes")[have:]


def until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        threading.Event().wait(0.01)  # polling another thread's counters


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., tuple[GpsPty, SerialGpsReader, Sink]]]:
    made: list[tuple[GpsPty, SerialGpsReader]] = []

    def make(route=ROAD_LOOP, speeds=ROAD_SPEEDS, talker="GN", rate_hz=1.0, factor=60.0, **reader_kw):  # type: ignore[no-untyped-def]
        link = tmp_path / "ttyGPS"
        pty = GpsPty(RouteDriver(route, speeds), SimClock(START, factor=factor), talker, rate_hz=rate_hz, link=link)
        sink = Sink()
        kw = {"retry_initial_s": 0.02, "retry_max_s": 0.1, "silence_s": 0.5, "stale_s": 0.3, **reader_kw}
        reader = SerialGpsReader(str(link), 9600, sink, **kw)
        pty.start()
        reader.start()
        made.append((pty, reader))
        return pty, reader, sink

    yield make
    for pty, reader in made:
        reader.stop()
        pty.stop()


def test_beidou_talker_at_10_hz_with_time_acceleration(rig) -> None:  # type: ignore[no-untyped-def]
    _, reader, sink = rig(route=FIGURE_EIGHT, speeds=TRAINING_SPEEDS, talker="BD", rate_hz=10, factor=10)
    got = sink.until(lambda f: len(f) >= 60, "60 BeiDou fixes")
    times = [f.time for f in got if f.time is not None]
    assert all(b - a == timedelta(milliseconds=100) for a, b in zip(times, times[1:], strict=False))
    assert all(f.valid and f.mode == 3 for f in got) and reader.stats.rejected == 0


def test_reversing_bays_route_drives_slowly() -> None:
    d = RouteDriver(REVERSING_BAYS, TRAINING_SPEEDS)
    assert max(d.state_at(t).speed_mps for t in range(600)) <= 20 / 3.6 + 1e-9
    assert REVERSING_BAYS.length_m > 50 and FIGURE_EIGHT.length_m > 250


def test_no_fix_is_a_lost_gps_then_back(rig) -> None:  # type: ignore[no-untyped-def]
    pty, reader, sink = rig()
    sink.until(lambda f: any(x.valid for x in f), "a first fix")
    pty.fault = GpsFault.NO_FIX
    until(lambda: reader.stats.gps_lost >= 1, "the GPS declared lost")
    assert reader.status()["fix_lost"] and not sink.fixes[-1].valid and sink.fixes[-1].mode == 1
    pty.fault = None
    sink.until(lambda f: f[-1].valid, "a valid fix again")
    assert not reader.status()["fix_lost"]


def test_cold_start_placeholders_are_refused_then_first_fix(rig) -> None:  # type: ignore[no-untyped-def]
    pty, reader, sink = rig()
    pty.fault = GpsFault.COLD_START
    until(lambda: reader.stats.rejected >= 5, "placeholder sentences refused")
    assert "placeholder position" in (reader.stats.last_reject or "")
    assert not any(f.valid and f.lat is not None and f.lat > 89 for f in sink.fixes)
    pty.fault = None
    first = sink.until(lambda f: any(x.valid for x in f), "the first fix")[-1]
    assert first.lat is not None and 35 < first.lat < 36


def test_garbage_bytes_are_refused_and_fixes_go_on(rig) -> None:  # type: ignore[no-untyped-def]
    pty, reader, sink = rig()
    sink.until(lambda f: len(f) >= 2, "fixes")
    pty.fault = GpsFault.GARBAGE
    got = sink.more(60)
    assert reader.stats.rejected > 0
    assert sum(f.valid for f in got) >= 55  # every epoch still has a good copy
    assert all(f.lat is not None and 35 < f.lat < 36 for f in got if f.valid)


def test_teleport_is_marked_not_added(rig) -> None:  # type: ignore[no-untyped-def]
    pty, _, sink = rig()
    sink.until(lambda f: len(f) >= 20, "fixes")
    pty.fault = GpsFault.TELEPORT
    sink.until(lambda f: f[-1].lat is not None and f[-1].lat > 35.45, "a teleported fix")
    pty.fault = None
    sink.until(lambda f: f[-1].lat is not None and f[-1].lat < 35.45 and len(f) > 60, "back on the road")
    odo = Odometer()
    for f in sink.fixes:
        odo.feed(f)
    span = (sink.fixes[-1].time - sink.fixes[0].time).total_seconds()  # type: ignore[operator]
    assert odo.jumps >= 2 and odo.total_m <= span * 50 / 3.6 + 1  # never more than driven at 50 km/h


def test_clock_rollover_keeps_position_refuses_time(rig) -> None:  # type: ignore[no-untyped-def]
    pty, _, sink = rig()
    sink.until(lambda f: len(f) >= 2, "fixes")
    pty.fault = GpsFault.ROLLOVER
    sink.until(lambda f: not f[-1].time_plausible, "a rolled-over date")
    got = sink.more(5)
    assert all(f.time is None and not f.time_plausible and f.valid for f in got)
    clock = GnssClock()
    wall = datetime.now(UTC)
    events = [e.name for f in sink.fixes for e in clock.on_fix(f, wall, 0.0)]
    assert events == ["gnss_time_refused"]


def test_parked_drift_adds_no_metres(rig) -> None:  # type: ignore[no-untyped-def]
    pty, _, sink = rig()
    sink.until(lambda f: len(f) >= 2, "fixes")
    pty.fault = GpsFault.PARKED_DRIFT
    sink.until(lambda f: f[-1].speed_mps is not None and f[-1].speed_mps < 0.5, "parked")
    parked = sink.more(120)
    odo = Odometer()
    for f in parked:
        odo.feed(f)
    spread = max(abs(a.lat - b.lat) for a, b in zip(parked, parked[1:], strict=False))  # type: ignore[operator]
    assert spread > 0 and odo.total_m == 0.0 and odo.jumps == 0


def test_unplug_and_replug(rig) -> None:  # type: ignore[no-untyped-def]
    pty, reader, sink = rig()
    sink.until(lambda f: len(f) >= 3, "fixes")
    pty.unplug()
    until(lambda: reader.stats.failures >= 1 and reader.state in ("lost", "unavailable"), "the loss seen")
    n = len(sink.fixes)
    pty.replug()
    sink.until(lambda f: len(f) >= n + 3, "fixes after replug")
    assert reader.stats.connects == 2 and reader.status()["state"] == "connected"


def test_silent_port_is_reopened_and_counted(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a receiver that lost power behind a USB adapter still plugged in
    try:
        reader = SerialGpsReader(os.ttyname(slave), 9600, Sink(), silence_s=0.2, retry_initial_s=0.01)
        reader.start()
        until(lambda: reader.stats.silences >= 2 and reader.stats.connects >= 2, "silence seen and retried")
        reader.stop()
    finally:
        os.close(master)
        os.close(slave)


def test_url_ports_loop_and_spy(rig, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loop = SerialGpsReader("loop://", 9600, Sink(), silence_s=0.2, retry_initial_s=0.01)
    loop.start()
    until(lambda: loop.stats.connects >= 1 and loop.stats.silences >= 1, "loop:// opened, silent")
    loop.stop()
    pty, _, _ = rig()
    sink = Sink()
    spy = SerialGpsReader(f"spy://{pty.path}?file={tmp_path / 'spy.txt'}", 9600, sink)
    spy.start()
    try:
        sink.until(lambda f: len(f) >= 3, "fixes through spy://")
    finally:
        spy.stop()
    assert (tmp_path / "spy.txt").stat().st_size > 0
