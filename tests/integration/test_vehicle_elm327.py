"""Elm327Vehicle (pyserial, agent) <-> Elm327Emulator (pty, simulator): the real AT/PID dialogue."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from agent.vehicle import (
    Elm327Vehicle,
    NoVehicleSignal,
    VehiclePort,
    VehicleSignals,
    decode_rpm,
    decode_speed_kmh,
    parse_pid_reply,
)
from simulators.clock import SimClock
from simulators.gps import ROAD_LOOP, ROAD_SPEEDS, RouteDriver
from simulators.vehicle import IDLE_RPM, Elm327Emulator, driver_signals, engine_rpm


class SignalSink:
    def __init__(self) -> None:
        self.items: list[VehicleSignals] = []
        self._cond = threading.Condition()

    def __call__(self, s: VehicleSignals) -> None:
        with self._cond:
            self.items.append(s)
            self._cond.notify_all()

    def wait_for(self, pred, timeout: float = 5.0) -> VehicleSignals:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(pred(s) for s in self.items), timeout)
            assert ok, f"no matching signals in {self.items[-3:]}"
            return next(s for s in self.items if pred(s))


class Car:
    def __init__(self) -> None:
        self.state = (True, 1726, 42.0)

    def __call__(self) -> tuple[bool, int, float]:
        return self.state


def test_parse_pid_reply_variants() -> None:
    assert parse_pid_reply("41 0C 1A F8 \r", 1, 0x0C) == bytes([0x1A, 0xF8])
    assert parse_pid_reply("010C\rSEARCHING...\r410C1AF8\r\r", 1, 0x0C) == bytes([0x1A, 0xF8])
    assert parse_pid_reply("NO DATA\r", 1, 0x0D) is None
    assert decode_rpm(bytes([0x1A, 0xF8])) == 1726.0
    assert decode_speed_kmh(bytes([42])) == 42.0
    assert decode_rpm(b"\x01") is None


def test_no_vehicle_signal() -> None:
    port: VehiclePort = NoVehicleSignal()
    assert port.read() is None


def test_dialogue_rpm_speed_ignition_and_staleness() -> None:
    car = Car()
    now = [0.0]
    sink = SignalSink()
    with Elm327Emulator(car) as emu:
        vehicle = Elm327Vehicle(
            emu.path, poll_interval_s=0.01, stale_after_s=1.0, monotonic=lambda: now[0], on_signals=sink
        )
        vehicle.start()
        try:
            s = sink.wait_for(lambda s: s.ignition)
            assert (s.rpm, s.speed_kmh) == (1726.0, 42.0)
            assert s.at.tzinfo is not None
            assert vehicle.read() is not None
            assert emu.commands[:5] == ["ATZ", "ATE0", "ATL0", "ATS0", "ATSP0"]
            assert not emu.echo and not emu.spaces  # the adapter was configured as the agent asked
            car.state = (False, 0, 0.0)
            off = sink.wait_for(lambda s: not s.ignition)
            assert (off.rpm, off.speed_kmh) == (0.0, 0.0)
            now[0] += 5.0  # no fresh reading counted within stale_after_s of this fake clock
            vehicle.stop()
            assert vehicle.read() is None
        finally:
            vehicle.stop()


def test_missing_adapter_retried_then_connects(tmp_path) -> None:
    link = tmp_path / "ttyOBD"
    sink = SignalSink()
    vehicle = Elm327Vehicle(str(link), poll_interval_s=0.01, retry_initial_s=0.02, retry_max_s=0.05, on_signals=sink)
    vehicle.start()
    try:
        assert not vehicle.connected.wait(0.1)
        with Elm327Emulator(Car()) as emu:
            link.symlink_to(emu.path)
            sink.wait_for(lambda s: s.rpm == 1726.0)
    finally:
        vehicle.stop()


def test_emulator_unknown_pid_and_at() -> None:
    emu = Elm327Emulator(Car())
    try:
        assert emu.reply("0105") == ["NO DATA"]
        assert emu.reply("ATXYZ") == ["?"]
        assert emu.reply("010D") == ["41 0D 2A"]
    finally:
        emu.stop()


@pytest.mark.parametrize("kmh", [0.0, 5.0, 14.0, 16.0, 29.0, 31.0, 50.0])
def test_engine_rpm_idles_and_rises(kmh: float) -> None:
    rpm = engine_rpm(kmh)
    assert IDLE_RPM <= rpm <= 3000
    if kmh == 0:
        assert rpm == IDLE_RPM


def test_driver_signals_follow_route() -> None:
    clock = SimClock(datetime(2024, 5, 1, tzinfo=UTC), factor=60)
    ignition, rpm, kmh = driver_signals(RouteDriver(ROAD_LOOP, ROAD_SPEEDS), clock)()
    assert ignition and rpm >= IDLE_RPM and 0 <= kmh <= 50
