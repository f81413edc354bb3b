"""Track fingerprints and replayed tracks (server.validation.track), and the simulators' cars never matching."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from agent.session import EmitRecord, FaceOutcome, TrainingSession
from firmware_protocols.records import RecordKind
from server.validation.track import FINGERPRINT_LENGTH, TrackMinute, replayed, track_fingerprint
from simulators.clock import SimClock
from simulators.fleet import car_seed
from simulators.gps import TRAINING_GROUND, TRAINING_SPEEDS, GpsPty, RouteDriver

T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
#: A minute of driving east: [second, lat_e6, lon_e6, speed 0.1 km/h] every 10 s.
DRIVE = [[s, 35_420_000 + s // 7, 119_520_000 + 4 * s, 150] for s in range(0, 60, 10)]


def test_fingerprint_is_a_sha256_of_positions_only() -> None:
    fp = track_fingerprint(DRIVE, 250)
    assert fp is not None and len(fp) == FINGERPRINT_LENGTH and int(fp, 16) >= 0
    # a replay shifted in time (other seconds, same order), with other speeds: the same fingerprint
    shifted = [[s + 3, lat, lon, 90] for s, lat, lon, _ in DRIVE]
    assert track_fingerprint(shifted, 180) == fp
    # the order of the samples in the list does not matter, the order of their seconds does
    assert track_fingerprint(list(reversed(DRIVE)), 250) == fp
    # one micro-degree off in one sample: another track
    moved = [list(x) for x in DRIVE]
    moved[3][2] += 1
    assert track_fingerprint(moved, 250) != fp
    # the same positions in another order: another track
    swapped = [[s, lat, lon, v] for (s, _, _, v), (_, lat, lon, _) in zip(DRIVE, reversed(DRIVE), strict=True)]
    assert track_fingerprint(swapped, 250) != fp


def test_parked_minutes_have_no_fingerprint() -> None:
    parked = [[s, 35_420_000, 119_520_000, 0] for s in range(0, 60, 10)]
    assert track_fingerprint(parked, 0) is None
    assert track_fingerprint(DRIVE, 0) is None  # no distance: parked whatever the positions say
    two = [[s, 35_420_000, 119_520_000 + (s >= 30), 10] for s in range(0, 60, 10)]
    assert track_fingerprint(two, 5) is None  # fewer than 3 distinct positions
    assert track_fingerprint(DRIVE[:3], 50) is not None


@pytest.mark.parametrize("fixes", [None, [], "junk", {"a": 1}, [[0, 1.5, 2, 0]] * 6])
def test_no_samples_no_fingerprint(fixes: object) -> None:
    assert track_fingerprint(fixes, 250) is None
    assert track_fingerprint(DRIVE, None) is None and track_fingerprint(DRIVE, True) is None


def test_malformed_samples_are_skipped() -> None:
    junk = [*DRIVE, "x", [70], [80, "a", 1, 0], [True, 1, 2, 3]]
    assert track_fingerprint(junk, 250) == track_fingerprint(DRIVE, 250)


def minute(no: str, start_min: int, fp: str = "a" * 64) -> TrackMinute:
    return TrackMinute(no, T0 + timedelta(minutes=start_min), fp)


def test_the_earlier_minute_is_the_original_whatever_the_order() -> None:
    original = minute("T2-0005", 0)  # a higher record number, but earlier
    copies = [minute("T1-0001", 60), minute("T3-0009", 24 * 60)]
    other = minute("T1-0002", 61, "b" * 64)  # another track
    for order in itertools.permutations([original, *copies, other]):
        assert replayed(order) == {"T1-0001", "T3-0009"}
    assert replayed([original]) == set() and replayed([original, original]) == set()


def test_on_the_same_start_the_greater_record_number_is_the_copy() -> None:
    a, b = minute("T1-0001", 0), minute("T2-0001", 0)
    assert replayed([b, a]) == replayed([a, b]) == {"T2-0001"}


def test_groups_are_judged_apart() -> None:
    rng = random.Random(7)
    minutes = [minute(f"R{n:03d}", rng.randrange(1000), f"{n % 5:064x}") for n in range(50)]
    expected = {m.record_no for m in minutes} - {
        min((m.start, m.record_no) for m in minutes if m.fingerprint == f"{g:064x}")[1] for g in range(5)
    }
    for _ in range(5):
        rng.shuffle(minutes)
        assert replayed(minutes) == expected


# -- the simulators' cars ----------------------------------------------------------------------------------------


def drive(pty: GpsPty, start: datetime, minutes: int) -> list[dict[str, object]]:
    """The minute records' bodies of a session driven with ``pty``'s fixes through the terminal's session machine."""
    ok = FaceOutcome("pass", "C", 0.3)
    m = TrainingSession("T" * 16, rng=random.Random(1))
    m.coach_login("C", ok, start)
    m.student_login("P", "1212130000", FaceOutcome("pass", "P", 0.3), start, next_seq=3, chain=1)
    out = []
    for s in range(minutes * 60):
        out += m.on_fix(pty.fix_for(start + timedelta(seconds=s)))
    return [a.body for a in out if isinstance(a, EmitRecord) and a.kind is RecordKind.MINUTE]


def fingerprints(noise_m: float | None) -> list[list[str | None]]:
    """Two demo cars (same route, same driver, same clock), 90 minutes each: each car's minutes' fingerprints."""
    clock = SimClock(start=T0, factor=60)
    out = []
    for i in range(2):
        kw = {} if noise_m is None else {"noise_m": noise_m}
        pty = GpsPty(RouteDriver(TRAINING_GROUND, TRAINING_SPEEDS), clock, seed=car_seed(i, clock), **kw)
        try:
            out.append([track_fingerprint(b["fixes"], b["distance_m"]) for b in drive(pty, T0, 90)])
        finally:
            pty.stop()
    return out


def test_demo_cars_on_one_route_never_repeat_a_track() -> None:
    """Two demo cars drive the training ground on one clock, lap after lap: no minute's track repeats another's."""
    cars = fingerprints(None)
    moving = [fp for car in cars for fp in car if fp is not None]
    assert len(moving) >= 2 * 80, "the cars drive (stops of a few seconds leave the minutes moving)"
    assert len(set(moving)) == len(moving)


def test_without_receiver_noise_the_demo_cars_would_look_replayed() -> None:
    """The reason for the noise: exact routes give the two cars the same tracks, minute for minute."""
    first, second = fingerprints(0.0)
    assert first == second and any(first)
