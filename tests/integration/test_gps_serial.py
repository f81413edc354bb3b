"""GpsPty (simulated receiver on a real pty) -> SerialGpsReader (pyserial): consecutive fixes, reconnects."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.gps import SerialGpsReader
from firmware_protocols.nmea import GpsFix
from simulators.clock import SimClock
from simulators.gps import TRAINING_GROUND, TRAINING_SPEEDS, GpsPty, RouteDriver

START = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)


class FixSink:
    """Collects fixes; ``wait(n)`` blocks until n arrived (an event, not a sleep)."""

    def __init__(self) -> None:
        self.fixes: list[GpsFix] = []
        self._cond = threading.Condition()

    def __call__(self, fix: GpsFix) -> None:
        with self._cond:
            self.fixes.append(fix)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list[GpsFix]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.fixes) >= n, timeout), f"{len(self.fixes)} fixes of {n}"
            return list(self.fixes)


class LogEvent(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.records.append(record)
            self.seen.set()


@pytest.fixture
def log_event():
    handlers: list[tuple[logging.Logger, LogEvent]] = []

    def make(logger_name: str, needle: str) -> LogEvent:
        h = LogEvent(needle)
        logger = logging.getLogger(logger_name)
        logger.addHandler(h)
        logger.setLevel(logging.DEBUG)
        handlers.append((logger, h))
        return h

    yield make
    for logger, h in handlers:
        logger.removeHandler(h)


def test_reader_gets_consecutive_fixes_at_factor_60() -> None:
    clock = SimClock(START, factor=60)
    sink = FixSink()
    with GpsPty(RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), clock) as pty:
        reader = SerialGpsReader(pty.path, 9600, sink)
        reader.start()
        try:
            got = sink.wait(90)  # 1.5 real seconds at 60 epochs a second
        finally:
            reader.stop()
    times = [f.time for f in got]
    assert all(t is not None for t in times)
    assert all((b - a) == timedelta(seconds=1) for a, b in zip(times, times[1:], strict=False)), "gap or dup"
    assert all(f.valid and f.mode == 3 for f in got)
    assert {round(f.speed_mps or 0, 1) for f in got} != {0.0}, "the car moves"
    assert reader.stats.rejected == 0 and reader.stats.fixes >= 90
    assert pty.stats.epochs_dropped == 0


def test_reader_started_before_device_logs_once_then_connects(tmp_path: Path, log_event) -> None:
    unavailable = log_event("agent.gps", "unavailable")
    connected = log_event("agent.gps", "connected")
    link = tmp_path / "ttyGPS"
    sink = FixSink()
    reader = SerialGpsReader(str(link), 9600, sink, retry_initial_s=0.02, retry_max_s=0.05)
    reader.start()
    try:
        assert unavailable.seen.wait(2)
        # let it retry a few times: still logged once (at WARNING)
        for _ in range(200):
            if reader.stats.failures >= 4:
                break
            threading.Event().wait(0.01)
        assert len([r for r in unavailable.records if r.levelno >= logging.WARNING]) == 1
        assert all(r.exc_info is None for r in unavailable.records), "no traceback"
        with GpsPty(RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), SimClock(START, factor=60)) as pty:
            os.symlink(pty.path, link)
            assert connected.seen.wait(2)
            got = sink.wait(5)
            assert got[0].valid
    finally:
        reader.stop()


def test_vanished_device_is_logged_and_reader_reconnects(tmp_path: Path, log_event) -> None:
    lost = log_event("agent.gps", "lost")
    link = tmp_path / "ttyGPS"
    sink = FixSink()
    reader = SerialGpsReader(str(link), 9600, sink, retry_initial_s=0.02, retry_max_s=0.05)
    pty = GpsPty(RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), SimClock(START, factor=60)).start()
    os.symlink(pty.path, link)
    reader.start()
    try:
        sink.wait(3)
        pty.stop()
        link.unlink()
        assert lost.seen.wait(2)
        n = len(sink.fixes)
        with GpsPty(RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), SimClock(START, factor=60)) as pty2:
            link.symlink_to(pty2.path)
            sink.wait(n + 3)
        assert reader.stats.connects == 2
    finally:
        reader.stop()
        pty.stop()


def test_nobody_reading_never_blocks_the_simulator() -> None:
    clock = SimClock(START, factor=3000)  # ~3000 epochs a real second, ~600 KB/s into a pty nobody reads
    pty = GpsPty(RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), clock).start()
    try:
        tick = threading.Event()  # never set: wait() is a bounded pause between checks
        for _ in range(250):
            if pty.stats.epochs_dropped:
                break
            tick.wait(0.02)
        assert pty.stats.epochs_dropped > 0
        last = pty.stats.last_epoch
        for _ in range(100):  # still advancing (not stuck in a write)
            if pty.stats.last_epoch != last:
                break
            tick.wait(0.01)
        assert pty.stats.last_epoch != last
    finally:
        pty.stop()
