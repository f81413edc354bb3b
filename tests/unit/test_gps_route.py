"""Routes and the route driver of the GPS simulator: geometry, speeds, stops, continuity; the receiver's noise."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from agent.odometry import Odometer
from firmware_protocols.nmea import GpsFix
from simulators.gps import (
    NOISE_SIGMA_M,
    ROAD_LOOP,
    ROAD_SPEEDS,
    TRAINING_GROUND,
    TRAINING_SPEEDS,
    ReceiverNoise,
    Route,
    RouteDriver,
    SpeedProfile,
)

T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = math.radians(b[0] - a[0])
    dlon = math.radians(b[1] - a[1]) * math.cos(math.radians(a[0]))
    return 6_371_008.8 * math.hypot(dlat, dlon)


def test_routes_are_near_rizhao_and_sized() -> None:
    assert 300 <= TRAINING_GROUND.length_m <= 1000
    assert 2000 <= ROAD_LOOP.length_m <= 8000
    for route in (TRAINING_GROUND, ROAD_LOOP):
        for d in range(0, int(route.length_m), 25):
            lat, lon, _ = route.at_distance(d)
            assert abs(lat - 35.42) < 0.05 and abs(lon - 119.52) < 0.05


def test_loop_closes_and_course_follows_segments() -> None:
    start = TRAINING_GROUND.at_distance(0)
    again = TRAINING_GROUND.at_distance(TRAINING_GROUND.length_m)
    assert start[:2] == pytest.approx(again[:2])
    assert TRAINING_GROUND.at_distance(10)[2] == pytest.approx(90.0)  # first leg runs due east
    square = Route("sq", (35.0, 119.0), ((0, 0), (0, 100), (100, 100), (100, 0)))
    assert [square.at_distance(d)[2] for d in (50, 150, 250, 350)] == pytest.approx([0, 90, 180, 270])


@pytest.mark.parametrize(
    ("route", "profile", "lo_kmh", "hi_kmh"),
    [(TRAINING_GROUND, TRAINING_SPEEDS, 5, 20), (ROAD_LOOP, ROAD_SPEEDS, 20, 50)],
)
def test_speeds_in_range_with_stops(route: Route, profile: SpeedProfile, lo_kmh: float, hi_kmh: float) -> None:
    driver = RouteDriver(route, profile)
    speeds = [driver.state_at(t).speed_mps * 3.6 for t in range(0, 1800)]
    assert max(speeds) <= hi_kmh + 1e-9
    assert any(s == 0 for s in speeds[10:]), "the driver makes stops"
    cruising = [s for s in speeds if s > 0.99 * min(profile.cruise_kmh)]
    assert cruising and min(cruising) >= lo_kmh
    assert len({round(s) for s in speeds}) > 5, "speed varies"


def test_motion_is_continuous_and_matches_speed() -> None:
    driver = RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS)
    prev = driver.state_at(0)
    for t10 in range(1, 6000):
        cur = driver.state_at(t10 / 10)
        step = cur.distance_m - prev.distance_m
        assert 0 <= step <= 20 / 3.6 / 10 + 1e-9
        assert abs(cur.speed_mps - prev.speed_mps) <= TRAINING_SPEEDS.accel_mps2 / 10 + 1e-9
        # straight-line jump never exceeds the distance driven
        assert metres((prev.lat, prev.lon), (cur.lat, cur.lon)) <= step + 0.01
        prev = cur


def test_deterministic_and_fix_is_valid() -> None:
    a = RouteDriver(ROAD_LOOP, ROAD_SPEEDS)
    b = RouteDriver(ROAD_LOOP, ROAD_SPEEDS)
    assert a.state_at(12345.5) == b.state_at(12345.5)
    fix = a.fix_at(100, datetime(2024, 5, 1, tzinfo=UTC))
    assert fix.valid and fix.mode == 3 and fix.speed_mps == a.state_at(100).speed_mps


# -- receiver noise ------------------------------------------------------------------------------------------


def noisy_fixes(seed: int, seconds: int, sigma_m: float = NOISE_SIGMA_M) -> list[GpsFix]:
    driver, noise = RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), ReceiverNoise(seed, sigma_m)
    return [noise.apply(driver.fix_at(t, T0 + timedelta(seconds=t))) for t in range(seconds)]


def test_receiver_noise_is_a_metre_or_so_and_wanders_slowly() -> None:
    noise = ReceiverNoise(3)
    offsets = [noise.offset_m(T0 + timedelta(seconds=t)) for t in range(40_000)]
    for axis in (0, 1):
        values = [o[axis] for o in offsets]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        assert 0.8 * NOISE_SIGMA_M < sd < 1.25 * NOISE_SIGMA_M
    steps = sorted(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(offsets, offsets[1:], strict=False))
    assert steps[int(0.99 * len(steps))] < 0.8, "consecutive epochs move centimetres, not metres"


def test_receiver_noise_is_seeded_per_car_and_reproducible() -> None:
    a, again, b = noisy_fixes(1, 600), noisy_fixes(1, 600), noisy_fixes(2, 600)
    assert [(f.lat, f.lon) for f in a] == [(f.lat, f.lon) for f in again]
    exact = noisy_fixes(1, 600, sigma_m=0.0)
    assert exact == [RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS).fix_at(t, T0 + timedelta(seconds=t))
                     for t in range(600)]  # fmt: skip
    same = sum((round(x.lat * 1e6), round(x.lon * 1e6)) == (round(y.lat * 1e6), round(y.lon * 1e6))  # type: ignore[operator]
               for x, y in zip(a, b, strict=True))  # fmt: skip
    assert same <= 6, "two cars' errors cross now and then, never for long"
    for x, e in zip(a, exact, strict=True):
        assert metres((x.lat, x.lon), (e.lat, e.lon)) < 6 * NOISE_SIGMA_M  # type: ignore[arg-type]
        assert (x.speed_mps, x.time) == (e.speed_mps, e.time)


def test_receiver_noise_adds_no_distance_to_the_odometer() -> None:
    def driven(fixes: list[GpsFix]) -> float:
        odo = Odometer()
        for f in fixes:
            odo.feed(f)
        assert odo.jumps == 0
        return odo.total_m

    exact, noisy = driven(noisy_fixes(5, 3600, sigma_m=0.0)), driven(noisy_fixes(5, 3600))
    assert exact > 1000 and abs(noisy - exact) < 0.02 * exact
