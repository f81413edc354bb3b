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
    parse_vin_reply,
)
from firmware_protocols.identifiers import is_vin
from simulators.clock import SimClock
from simulators.gps import ROAD_LOOP, ROAD_SPEEDS, RouteDriver
from simulators.vehicle import IDLE_RPM, Elm327Emulator, driver_signals, engine_rpm, fleet_vin, vin_check_digit


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
            assert (off.rpm, off.speed_kmh) == (0.0, None)  # an ECU that does not answer gives no speed
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


# -- the VIN (mode 09 PID 02) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["can", "iso9141"])
@pytest.mark.parametrize(("headers", "spaces"), [(False, False), (False, True), (True, False), (True, True)])
def test_emulator_vin_replies_read_back_in_every_format(protocol: str, headers: bool, spaces: bool) -> None:
    emu = Elm327Emulator(Car(), vin=fleet_vin(7), protocol=protocol)
    try:
        emu.headers, emu.spaces = headers, spaces
        lines = emu.reply("0902")
        assert len(lines) == (5 if protocol == "iso9141" else 3 if headers else 4)
        assert parse_vin_reply("\r".join(lines)) == fleet_vin(7)
        emu.vin = None
        assert emu.reply("0902") == ["NO DATA"]
    finally:
        emu.stop()


def test_fleet_vins_are_distinct_and_well_formed() -> None:
    vins = [fleet_vin(n) for n in range(1, 50)]
    assert len(set(vins)) == len(vins) and all(is_vin(v) for v in vins)
    assert all(vin_check_digit(v) == v[8] for v in vins)
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"  # the check-digit example of 49 CFR 565


def test_vin_read_once_per_connection_and_carried_in_every_reading() -> None:
    sink = SignalSink()
    with Elm327Emulator(Car(), vin=fleet_vin(1)) as emu:
        vehicle = Elm327Vehicle(emu.path, poll_interval_s=0.01, on_signals=sink)
        vehicle.start()
        try:
            sink.wait_for(lambda s: len(sink.items) >= 5)
            assert all(s.vin == fleet_vin(1) for s in sink.items)
            assert vehicle.vin == fleet_vin(1)
            assert emu.commands.count("0902") == 1
            assert emu.commands.index("0902") > emu.commands.index("ATSP0")
        finally:
            vehicle.stop()


def test_box_moved_to_another_car_across_an_ignition_cycle_reads_the_new_vin() -> None:
    car = Car()
    sink = SignalSink()
    with Elm327Emulator(car, vin=fleet_vin(1)) as emu:
        vehicle = Elm327Vehicle(emu.path, poll_interval_s=0.01, on_signals=sink)
        vehicle.start()
        try:
            sink.wait_for(lambda s: s.vin == fleet_vin(1))
            car.state = (False, 0, 0.0)
            sink.wait_for(lambda s: not s.ignition)
            emu.vin = fleet_vin(2)  # the box now sits in another car
            car.state = (True, 900, 0.0)
            s = sink.wait_for(lambda s: s.ignition and s.rpm == 900.0)
            assert s.vin == fleet_vin(2)
            assert emu.commands.count("0902") == 2  # once per ignition cycle, not once per poll
        finally:
            vehicle.stop()


def test_a_car_without_a_vin_answers_no_data_and_signals_go_on(caplog: pytest.LogCaptureFixture) -> None:
    sink = SignalSink()
    with caplog.at_level("INFO", logger="agent.vehicle"), Elm327Emulator(Car(), vin=None) as emu:
        vehicle = Elm327Vehicle(emu.path, poll_interval_s=0.01, on_signals=sink)
        vehicle.start()
        try:
            sink.wait_for(lambda s: len(sink.items) >= 3)
            assert all(s.vin is None and s.rpm == 1726.0 for s in sink.items)
            assert emu.commands.count("0902") == 1
        finally:
            vehicle.stop()
    assert "gives no VIN" in caplog.text


@pytest.mark.parametrize("protocol", ["can", "iso9141"])
def test_a_garbled_vin_is_unknown_logged_and_never_a_crash(protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    sink = SignalSink()
    with caplog.at_level("WARNING", logger="agent.vehicle"), \
            Elm327Emulator(Car(), vin="1D4GP00R55B1234O6", protocol=protocol) as emu:  # fmt: skip
        vehicle = Elm327Vehicle(emu.path, poll_interval_s=0.01, on_signals=sink)
        vehicle.start()
        try:
            sink.wait_for(lambda s: len(sink.items) >= 3)
            assert all(s.vin is None and s.ignition for s in sink.items)
            assert vehicle.stats.failures == 0  # the link was not dropped over it
        finally:
            vehicle.stop()
    assert "not a VIN" in caplog.text
