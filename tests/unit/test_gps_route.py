"""Routes and the route driver of the GPS simulator: geometry, speeds, stops, continuity."""

from __future__ import annotations

import math

import pytest

from simulators.gps import (
    ROAD_LOOP,
    ROAD_SPEEDS,
    TRAINING_GROUND,
    TRAINING_SPEEDS,
    Route,
    RouteDriver,
    SpeedProfile,
)


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
    from datetime import UTC, datetime

    fix = a.fix_at(100, datetime(2024, 5, 1, tzinfo=UTC))
    assert fix.valid and fix.mode == 3 and fix.speed_mps == a.state_at(100).speed_mps
