"""Policies (TOML files) and hour totals: required minutes, 学时 credited, progress per part, the daily cap."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocols.errors import MalformedMessage
from server.hours import PartProgress, apply_daily_cap, credited_xueshi, part_of_course, progress
from server.policy import (
    BUILTIN_DIR,
    Policy,
    PolicyError,
    builtin_policy_names,
    load_builtin_policy,
    load_policy,
    policy_in_force,
)

NATIONAL = load_builtin_policy("national-2016")
DEMO = load_builtin_policy("demo")


# -- policies -----------------------------------------------------------------------------------------------------


def test_national_2016_holds_the_domain_figures() -> None:
    p = NATIONAL
    assert p.name == "national-2016"
    assert p.effective_from == date(2016, 1, 1)
    assert (p.minutes_per_xueshi, p.min_effective_per_xueshi) == (60, 45)
    assert p.practical_window == (time(7, 0), time(21, 0))
    assert p.daily_cap_minutes_practical == 240
    assert p.stationary_limit_minutes == 2
    assert p.min_fixes_per_minute == 6
    assert p.part_hours == {"C1": {1: 12, 2: 16, 3: 24, 4: 10}, "C2": {1: 12, 2: 14, 3: 24, 4: 10}}
    assert p.required_minutes("C1", 2) == 16 * 60
    assert p.required_minutes("C2", 2) == 14 * 60


def test_demo_completes_a_part_in_10_to_15_minutes() -> None:
    assert DEMO.minutes_per_xueshi == 5
    for cls in ("C1", "C2"):
        assert [DEMO.required_minutes(cls, part) for part in (1, 2, 3, 4)] == [10, 15, 15, 10]
    assert DEMO.practical_window == NATIONAL.practical_window
    assert DEMO.stationary_limit_minutes == NATIONAL.stationary_limit_minutes


def test_builtin_names_and_unknown_name() -> None:
    assert builtin_policy_names() == ["demo", "national-2016"]
    with pytest.raises(PolicyError, match="no built-in policy 'beijing'"):
        load_builtin_policy("beijing")


def test_every_value_in_the_builtin_files_has_a_source_comment() -> None:
    """Each value line sits in a block of value lines (or a table) that starts with a comment naming its source."""
    for path in BUILTIN_DIR.glob("*.toml"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "=" not in line or line.lstrip().startswith("#"):
                continue
            j = i - 1
            while j >= 0 and "=" in lines[j] and not lines[j].lstrip().startswith("#"):
                j -= 1  # a value line of the same block
            if j >= 0 and lines[j].startswith("[part_hours."):
                j -= 1  # part rows: the comment sits above their table
            assert j >= 0 and lines[j].lstrip().startswith("#"), f"{path.name}:{i + 1} has no source comment"


def test_required_minutes_of_an_unknown_class_or_part() -> None:
    with pytest.raises(PolicyError, match="licence class 'B2'"):
        NATIONAL.required_minutes("B2", 1)
    with pytest.raises(PolicyError, match="part 5"):
        NATIONAL.required_minutes("C1", 5)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = (BUILTIN_DIR / "national-2016.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("minutes_per_xueshi = 60", "minutes_per_xueshi = 0", "xueshi.minutes_per_xueshi must be positive"),
        ("minutes_per_xueshi = 60", "minutes_per_xueshi = '60'", "xueshi.minutes_per_xueshi must be a int"),
        ("min_effective_per_xueshi = 45", "min_effective_per_xueshi = 61", "must not exceed"),
        ("window_end = 21:00:00", "window_end = 07:00:00", "must differ"),
        ("window_end = 21:00:00", "", "practical.window_end is missing"),
        ("daily_cap_minutes = 240", "daily_cap_minutes = -1", "must not be negative"),
        ("effective_from = 2016-01-01", "effective_from = 2016-01-01T00:00:00Z", "must be a date"),
        ('name = "national-2016"', "", "name is missing"),
        ("[minute_audit]", "[audit]", r"\[minute_audit\] table is missing"),
        ("4 = 10\n\n#", "5 = 10\n\n#", "has part '5'"),
        ("4 = 10\n\n#", "\n#", "part_hours.C1 lacks part"),
        (
            "stationary_limit_minutes = 2",
            "stationary_limit_minutes = 2\nstationary_limit_minutes = 3",
            "not valid TOML",
        ),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(PolicyError, match=message) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")


def test_a_copy_loads_from_str_path(tmp_path: Path) -> None:
    assert load_policy(str(_write(tmp_path, GOOD))) == NATIONAL


def test_policy_in_force_by_beijing_day(tmp_path: Path) -> None:
    newer = Policy(**{**NATIONAL.__dict__, "name": "newer", "effective_from": date(2027, 1, 1)})
    last_2026 = datetime(2026, 12, 31, 15, 59, tzinfo=UTC)  # 23:59 Beijing on 31 Dec
    first_2027 = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # 00:00 Beijing on 1 Jan
    assert policy_in_force([newer, NATIONAL], last_2026) is NATIONAL
    assert policy_in_force([newer, NATIONAL], first_2027) is newer
    with pytest.raises(PolicyError, match="no policy in force"):
        policy_in_force([newer], last_2026)


# -- hours ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("course", "part"), [("1212130000", 2), ("1211110000", 1), ("1223210000", 3), ("2214110000", 4)]
)
def test_part_of_course(course: str, part: int) -> None:
    assert part_of_course(course) == part


def test_part_of_a_bad_course() -> None:
    with pytest.raises(MalformedMessage):
        part_of_course("12121")


@pytest.mark.parametrize(("minutes", "expected"), [(0, (0, 0)), (59, (0, 59)), (60, (1, 0)), (961, (16, 1))])
def test_credited_xueshi(minutes: int, expected: tuple[int, int]) -> None:
    assert credited_xueshi(minutes, NATIONAL) == expected


def test_credited_xueshi_demo_and_negative() -> None:
    assert credited_xueshi(12, DEMO) == (2, 2)
    with pytest.raises(ValueError, match="negative"):
        credited_xueshi(-1, NATIONAL)


def test_progress_of_all_four_parts() -> None:
    got = progress("S000000000000001", "C1", {1: 720, 2: 959, 3: 2000}, NATIONAL)
    assert got == [
        PartProgress("S000000000000001", "C1", 1, 720, 720, True),
        PartProgress("S000000000000001", "C1", 2, 959, 960, False),
        PartProgress("S000000000000001", "C1", 3, 2000, 1440, True),
        PartProgress("S000000000000001", "C1", 4, 0, 600, False),
    ]


def test_progress_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="parts are 1-4"):
        progress("S", "C1", {5: 10}, NATIONAL)
    with pytest.raises(PolicyError):
        progress("S", "A1", {}, NATIONAL)


# -- daily cap ------------------------------------------------------------------------------------------------------

#: 07:00 Beijing on 27 Nov 2026.
DAY_START = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)


def _minutes(n: int, start: datetime, prefix: str = "A") -> list[tuple[str, datetime, bool]]:
    return [(f"{prefix}{i:04d}", start + timedelta(minutes=i), True) for i in range(n)]


def test_under_the_cap_nothing_is_cut() -> None:
    assert apply_daily_cap(_minutes(240, DAY_START), NATIONAL) == set()


def test_the_latest_minutes_over_the_cap_are_cut() -> None:
    ms = _minutes(250, DAY_START)
    assert apply_daily_cap(ms, NATIONAL) == {r for r, _, _ in ms[240:]}


def test_invalid_minutes_do_not_use_the_cap() -> None:
    ms = [(r, t, i >= 10) for i, (r, t, _) in enumerate(_minutes(250, DAY_START))]
    assert apply_daily_cap(ms, NATIONAL) == set()


def test_the_cap_resets_at_beijing_midnight_not_utc() -> None:
    # 20:00–23:59 Beijing (12:00–15:59 UTC) is one Beijing day; 00:00 Beijing onwards is the next
    evening = _minutes(240, datetime(2026, 11, 27, 12, 0, tzinfo=UTC), "E")
    after_midnight = _minutes(10, datetime(2026, 11, 27, 16, 0, tzinfo=UTC), "M")
    assert apply_daily_cap(evening + after_midnight, NATIONAL) == set()
    one_more_evening = [("E9999", datetime(2026, 11, 27, 15, 59, 30, tzinfo=UTC), True)]
    assert apply_daily_cap(evening + one_more_evening + after_midnight, NATIONAL) == {"E9999"}


def test_duplicates_count_once() -> None:
    ms = _minutes(240, DAY_START)
    assert apply_daily_cap(ms + ms[:5], NATIONAL) == set()


@settings(max_examples=100, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 3 * 24 * 60), min_size=0, max_size=600, unique=True),
    valid=st.lists(st.booleans(), min_size=600, max_size=600),
    seed=st.randoms(use_true_random=False),
)
def test_daily_cap_is_order_independent(offsets: list[int], valid: list[bool], seed: random.Random) -> None:
    small_cap = Policy(**{**DEMO.__dict__, "daily_cap_minutes_practical": 30})
    ms = [(f"R{o:06d}", DAY_START + timedelta(minutes=o), v) for o, v in zip(offsets, valid, strict=False)]
    shuffled = ms[:]
    seed.shuffle(shuffled)
    cut = apply_daily_cap(ms, small_cap)
    assert apply_daily_cap(shuffled, small_cap) == cut
    assert all(v for r, _, v in ms if r in cut)
