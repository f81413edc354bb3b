"""Distance from fixes: a parked car adds nothing, driving adds what was driven, impossible jumps are marked."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from agent.odometry import JITTER_M, MAX_PLAUSIBLE_SPEED_MPS, Odometer, haversine_m
from firmware_protocols.nmea import GpsFix

T0 = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
LAT0, LON0 = 35.42, 119.52
M_PER_DEG_LAT = 111_195.0


def fix(s: float, north_m: float = 0.0, east_m: float = 0.0, speed: float | None = 0.0, valid: bool = True) -> GpsFix:
    lat = LAT0 + north_m / M_PER_DEG_LAT
    lon = LON0 + east_m / (M_PER_DEG_LAT * math.cos(math.radians(LAT0)))
    return GpsFix(T0 + timedelta(seconds=s), lat, lon, speed_mps=speed, mode=3, satellites=9, hdop=1.0, valid=valid)


def test_parked_receiver_wandering_adds_nothing_in_an_hour() -> None:
    rng = random.Random(7)
    odo = Odometer()
    n = e = 0.0
    for s in range(3600):  # a random walk pulled back to the parking spot, as receivers drift
        n = 0.9 * n + rng.gauss(0, 1.0)
        e = 0.9 * e + rng.gauss(0, 1.0)
        step = odo.feed(fix(s, n, e, speed=abs(rng.gauss(0, 0.1))))
        assert step.metres == 0.0
    assert odo.total_m == 0.0 and odo.jumps == 0


def test_driving_adds_the_distance_driven() -> None:
    odo = Odometer()
    for s in range(121):
        odo.feed(fix(s, north_m=10.0 * s, speed=10.0))
    assert odo.total_m == pytest.approx(1200.0, rel=2e-3)


def test_implied_speed_between_fixes() -> None:
    odo = Odometer()
    odo.feed(fix(0))
    step = odo.feed(fix(2, east_m=30.0, speed=15.0))
    assert step.implied_mps == pytest.approx(15.0, rel=2e-3) and step.metres == pytest.approx(30.0, rel=2e-3)


def test_teleport_is_marked_not_added_and_distance_goes_on_from_there() -> None:
    odo = Odometer()
    odo.feed(fix(0, speed=5.0))
    odo.feed(fix(1, north_m=5.0, speed=5.0))
    away = odo.feed(fix(2, north_m=5_000.0, speed=5.0))  # 5 km in a second
    assert away.jump and away.metres == 0.0 and away.implied_mps is not None
    assert away.implied_mps > MAX_PLAUSIBLE_SPEED_MPS
    back = odo.feed(fix(3, north_m=15.0, speed=5.0))
    assert back.jump and odo.jumps == 2
    odo.feed(fix(4, north_m=20.0, speed=5.0))
    assert odo.total_m == pytest.approx(10.0, rel=1e-2)


def test_receiver_speed_beyond_any_car_is_a_jump() -> None:
    odo = Odometer()
    odo.feed(fix(0))
    assert odo.feed(fix(1, north_m=3.0, speed=500.0)).jump


def test_creeping_below_the_moving_speed_counts_once_past_the_jitter_radius() -> None:
    odo = Odometer()
    for s in range(61):
        odo.feed(fix(s, east_m=0.3 * s, speed=0.3))  # 18 m at 1 km/h
    assert JITTER_M < odo.total_m <= 18.5


def test_invalid_repeated_or_backwards_fixes_add_nothing() -> None:
    odo = Odometer()
    odo.feed(fix(0, speed=10.0))
    assert odo.feed(fix(1, north_m=500.0, speed=10.0, valid=False)).metres == 0.0
    assert odo.feed(fix(0, north_m=10.0, speed=10.0)).metres == 0.0  # same time again
    assert odo.feed(fix(-5, north_m=10.0, speed=10.0)).metres == 0.0  # GNSS time going backwards
    assert odo.feed(fix(1, north_m=10.0, speed=10.0)).metres == pytest.approx(10.0, rel=1e-2)
    assert odo.jumps == 0


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(35.0, 119.0, 36.0, 119.0) == pytest.approx(111_195, rel=1e-4)
