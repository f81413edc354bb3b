"""The session audit's photo rules: the server's own face re-check, reused photos, the sign-in and sign-out photos.
Each rule caught, none raised on a good session, and the same verdicts whatever the order of photos and links."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.policy import DUPLICATE_KINDS, PolicyError, load_builtin_policy, policy_from_mapping
from server.validation import Fix30, MinuteFacts, Reason
from server.validation.reasons import REVIEW_REASONS
from server.validation.session import (
    CHECK,
    SIGN_IN,
    SIGN_OUT,
    Photo,
    PhotoCopy,
    SessionFacts,
    SessionVerdict,
    copied_refs,
    judge_session,
)

POLICY = load_builtin_policy("national-2016")
MINUTES = 40
ME = "T000000000000001"
OTHER = "T000000000000002"
#: 10:00 Beijing = 02:00 UTC: inside the practical window.
T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def minute(i: int) -> MinuteFacts:
    """A valid minute ``i`` minutes after T0, on the training ground at 30 km/h."""
    fix = Fix30(lat_e6=35_416_000 + 10 * i, lon_e6=119_527_000, mode=3, satellites=9, hdop10=9, speed_dkmh=300)
    return MinuteFacts(record_no=f"{ME}261127{i + 1:04d}", terminal=ME, student="P000000000000001",
                       coach="C000000000000001", course="1212130000", session="S1", start=T0 + timedelta(minutes=i),
                       max_speed_dkmh=300, distance_m=400, fix_count=60, fix30=fix, rpm=1800,
                       face_result="pass")  # fmt: skip


def at(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def ref(seq: int, terminal: str = ME) -> str:
    return f"{terminal}/1/{seq}"


def minutes(n: int = MINUTES) -> list[MinuteFacts]:
    return [minute(i) for i in range(n)]


def good_photos() -> list[Photo]:
    """As our agent records a session: the sign-in face check and the login's face (one photo, named twice), a
    re-check in each 15-minute window, the sign-out face check and the logout's face; all re-checked as a match."""
    return [
        Photo(at(0), True, SIGN_IN, "match", ref(1)),
        Photo(at(0), True, SIGN_IN, "match", ref(1)),
        Photo(at(10), True, CHECK, "match", ref(5)),
        Photo(at(25), True, CHECK, "match", ref(20)),
        Photo(at(MINUTES), True, SIGN_OUT, "match", ref(50)),
        Photo(at(MINUTES), True, SIGN_OUT, "match", ref(50)),
    ]


def good_session(**changes: object) -> SessionFacts:
    base = SessionFacts(at(0), tuple(good_photos()), at(MINUTES))
    return replace(base, **changes)  # type: ignore[arg-type]


def judge(session: SessionFacts, policy: object = POLICY) -> SessionVerdict:
    return judge_session(minutes(), session, policy)  # type: ignore[arg-type]


def every_minute_has(verdict: SessionVerdict, code: str) -> bool:
    return all(code in v.reasons and not v.valid for v in verdict.minutes) and code in verdict.reasons


def with_photo(session: SessionFacts, index: int, **changes: object) -> SessionFacts:
    photos = list(session.photos)
    photos[index] = replace(photos[index], **changes)  # type: ignore[arg-type]
    return replace(session, photos=tuple(photos))


# -- a good session ----------------------------------------------------------------------------------------------


def test_a_good_session_breaks_no_photo_rule() -> None:
    verdict = judge(good_session())
    assert verdict.reasons == () and all(v.valid for v in verdict.minutes)


def test_a_session_without_server_findings_is_judged_as_before() -> None:
    """Photos not re-checked yet (or no photo bytes at all, as national terminals' photos): nothing is assumed."""
    plain = tuple(replace(p, server_verdict=None, ref=None) for p in good_photos())
    assert judge(good_session(photos=plain)).reasons == ()


# -- the server's own face re-check ------------------------------------------------------------------------------


@pytest.mark.parametrize("found", ["mismatch", "no_face", "several_faces"])
def test_a_passed_photo_the_server_rejects_fails_the_session(found: str) -> None:
    verdict = judge(with_photo(good_session(), 3, server_verdict=found))
    assert verdict.reasons == (Reason.SERVER_FACE_MISMATCH,)
    assert every_minute_has(verdict, Reason.SERVER_FACE_MISMATCH)
    assert Reason.SERVER_FACE_MISMATCH in REVIEW_REASONS


@pytest.mark.parametrize("found", ["match", "no_template", "unreadable", None])
def test_other_server_verdicts_do_not(found: str | None) -> None:
    assert judge(with_photo(good_session(), 3, server_verdict=found)).reasons == ()


def test_a_photo_the_terminal_failed_is_not_a_server_mismatch() -> None:
    """The terminal said so itself: its face rules (face_failed, face_overdue) judge that photo."""
    verdict = judge(with_photo(good_session(), 3, passed=False, server_verdict="mismatch"))
    assert Reason.SERVER_FACE_MISMATCH not in verdict.reasons


def test_a_photo_the_server_rejects_is_no_passing_face_check() -> None:
    """Photos at 0, 20 and 40: minute 36 needs a pass since minute 10; only the one at 20 gives it."""
    photos = (Photo(at(0), True, SIGN_IN, "match", ref(1)), Photo(at(20), True, CHECK, "match", ref(9)),
              Photo(at(MINUTES), True, SIGN_OUT, "match", ref(50)))  # fmt: skip
    honest = judge(good_session(photos=photos))
    assert honest.reasons == () and all(v.valid for v in honest.minutes)
    rejected = judge(good_session(photos=tuple(replace(p, server_verdict="mismatch") if p.at == at(20) else p
                                               for p in photos)))  # fmt: skip
    overdue = [v.record_no for v in rejected.minutes if Reason.FACE_OVERDUE in v.reasons]
    assert minute(36).record_no in overdue and minute(5).record_no not in overdue


# -- reused photos -----------------------------------------------------------------------------------------------


def test_a_copy_of_a_photo_taken_elsewhere_before_fails_the_session() -> None:
    earlier = PhotoCopy(ref(20), at(25), ref(7, OTHER), at(-24 * 60), "phash")
    verdict = judge(good_session(copies=(earlier,)))
    assert verdict.reasons == (Reason.DUPLICATE_PHOTO,) and every_minute_has(verdict, Reason.DUPLICATE_PHOTO)
    assert Reason.DUPLICATE_PHOTO in REVIEW_REASONS


def test_the_original_is_not_the_copy_whichever_the_server_checked_first() -> None:
    """The other session's photo (taken the day after) was checked first: the link points from ours to it. Ours is
    the original; the other photo is the copy."""
    later_elsewhere = PhotoCopy(ref(20), at(25), ref(7, OTHER), at(24 * 60), "near")
    assert judge(good_session(copies=(later_elsewhere,))).reasons == ()
    reversed_link = PhotoCopy(ref(7, OTHER), at(24 * 60), ref(20), at(25), "near")
    assert judge(good_session(copies=(reversed_link,))).reasons == ()
    assert copied_refs([later_elsewhere], DUPLICATE_KINDS) == copied_refs([reversed_link], DUPLICATE_KINDS)


def test_a_copy_within_the_session_counts() -> None:
    """The re-check at 25 is the sign-in photo again (an emulator's one picture)."""
    verdict = judge(good_session(copies=(PhotoCopy(ref(20), at(25), ref(1), at(0), "exact"),)))
    assert verdict.reasons == (Reason.DUPLICATE_PHOTO,)


def test_only_the_policys_decisive_kinds_count() -> None:
    near = good_session(copies=(PhotoCopy(ref(20), at(25), ref(1), at(0), "near"),))
    exact_only = replace(POLICY, decisive_duplicates=frozenset({"exact"}))
    assert judge(near, exact_only).reasons == ()
    assert judge(near).reasons == (Reason.DUPLICATE_PHOTO,)


def test_a_copy_the_terminal_failed_does_not_count() -> None:
    """An empty seat or a dark frame looks like the one before; it claims nobody's hours."""
    copied = good_session(copies=(PhotoCopy(ref(20), at(25), ref(7, OTHER), at(-60), "phash"),))
    assert Reason.DUPLICATE_PHOTO not in judge(with_photo(copied, 3, passed=False)).reasons


def test_a_group_of_copies_has_one_original_however_it_is_linked() -> None:
    """Three copies of one picture, A (earliest) < B < C: every way the server may have linked them (each photo
    linked to one checked before it, in any checking order) gives B and C as copies."""
    times = {"A": at(0), "B": at(60), "C": at(120)}
    for order in itertools.permutations("ABC"):
        for targets in itertools.product(*[order[:i] for i in range(1, 3)]):
            links = [PhotoCopy(order[i + 1], times[order[i + 1]], t, times[t], "near") for i, t in enumerate(targets)]
            assert copied_refs(links, DUPLICATE_KINDS) == {"B", "C"}, (order, targets)


def test_equal_times_are_settled_by_place() -> None:
    link = PhotoCopy(ref(3, OTHER), at(0), ref(3), at(0), "exact")
    assert copied_refs([link], DUPLICATE_KINDS) == {ref(3, OTHER)}
    assert copied_refs([PhotoCopy(ref(3), at(0), ref(3, OTHER), at(0), "exact")], DUPLICATE_KINDS) == {ref(3, OTHER)}


# -- the sign-in and sign-out photos ------------------------------------------------------------------------------


def test_a_first_photo_that_is_not_the_sign_in_fails_the_session() -> None:
    before = Photo(at(-1), True, CHECK, "match", ref(0))
    verdict = judge(good_session(photos=(before, *good_photos())))
    assert verdict.reasons == (Reason.FIRST_PHOTO_NOT_SIGN_IN,)
    assert every_minute_has(verdict, Reason.FIRST_PHOTO_NOT_SIGN_IN)
    assert Reason.FIRST_PHOTO_NOT_SIGN_IN not in REVIEW_REASONS  # a rule of the record, not a sign of fraud


def test_no_sign_in_photo_at_all_fails_the_session() -> None:
    """A sign-in without its photo (a national terminal's 0x0201 with no event-17 photo)."""
    photos = tuple(p for p in good_photos() if p.kind != SIGN_IN)
    assert Reason.FIRST_PHOTO_NOT_SIGN_IN in judge(good_session(photos=photos)).reasons


def test_the_sign_in_rule_waits_for_the_sign_in_record() -> None:
    photos = tuple(p for p in good_photos() if p.kind != SIGN_IN)
    assert Reason.FIRST_PHOTO_NOT_SIGN_IN not in judge(good_session(photos=photos, started_at=None)).reasons


def test_a_last_photo_that_is_not_the_sign_out_fails_the_session() -> None:
    after = Photo(at(MINUTES + 1), True, CHECK, "match", ref(60))
    verdict = judge(good_session(photos=(*good_photos(), after)))
    assert verdict.reasons == (Reason.LAST_PHOTO_NOT_SIGN_OUT,)
    assert every_minute_has(verdict, Reason.LAST_PHOTO_NOT_SIGN_OUT)
    no_sign_out = tuple(p for p in good_photos() if p.kind != SIGN_OUT)
    assert judge(good_session(photos=no_sign_out)).reasons == (Reason.LAST_PHOTO_NOT_SIGN_OUT,)


def test_a_session_in_progress_is_not_judged_on_its_sign_out_photo() -> None:
    """No sign-out record yet: the latest photo is a re-check, as it is during training."""
    running = tuple(p for p in good_photos() if p.kind != SIGN_OUT)
    assert judge_session(minutes(30), good_session(photos=running, ended_at=None), POLICY).reasons == ()


def test_a_sign_out_photo_in_the_same_second_as_a_re_check_is_the_last() -> None:
    same_second = Photo(at(MINUTES), True, CHECK, "match", ref(49))
    assert judge(good_session(photos=(same_second, *good_photos()))).reasons == ()


def test_a_failed_sign_out_face_check_is_still_the_sign_out_photo() -> None:
    photos = tuple(replace(p, passed=False) if p.kind == SIGN_OUT else p for p in good_photos())
    assert Reason.LAST_PHOTO_NOT_SIGN_OUT not in judge(good_session(photos=photos)).reasons


# -- order independence ------------------------------------------------------------------------------------------

_variants = st.sampled_from(["good", "mismatch", "copy", "copy_reversed", "no_sign_in", "late_check", "running"])


def _facts(variant: str) -> SessionFacts:
    s = good_session(copies=(PhotoCopy(ref(5), at(10), ref(9, OTHER), at(300), "near"),))
    if variant == "mismatch":
        return with_photo(s, 2, server_verdict="several_faces")
    if variant == "copy":
        return replace(s, copies=(*s.copies, PhotoCopy(ref(20), at(25), ref(9, OTHER), at(300), "near")))
    if variant == "copy_reversed":
        return replace(s, copies=(PhotoCopy(ref(9, OTHER), at(300), ref(5), at(10), "near"),
                                  PhotoCopy(ref(20), at(25), ref(5), at(10), "exact")))  # fmt: skip
    if variant == "no_sign_in":
        return replace(s, photos=tuple(p for p in s.photos if p.kind != SIGN_IN))
    if variant == "late_check":
        return replace(s, photos=(*s.photos, Photo(at(MINUTES + 2), True, CHECK, None, None)))
    if variant == "running":
        return replace(s, ended_at=None, photos=tuple(p for p in s.photos if p.kind != SIGN_OUT))
    return s


@settings(max_examples=40, deadline=None)
@given(variant=_variants, seed=st.randoms(use_true_random=False))
def test_the_order_of_photos_and_links_does_not_matter(variant: str, seed: random.Random) -> None:
    facts = _facts(variant)
    photos, copies, ms = list(facts.photos), list(facts.copies), minutes()
    seed.shuffle(photos)
    seed.shuffle(copies)
    seed.shuffle(ms)
    shuffled = replace(facts, photos=tuple(photos), copies=tuple(copies))
    assert judge_session(ms, shuffled, POLICY) == judge(facts)


# -- the policy's decisive kinds of copies -----------------------------------------------------------------------


def test_the_policy_names_the_decisive_kinds_of_copies() -> None:
    assert load_builtin_policy("national-2016").decisive_duplicates == DUPLICATE_KINDS
    assert load_builtin_policy("demo").decisive_duplicates == frozenset({"exact"})
    import tomllib

    from server.policy import BUILTIN_DIR

    data = tomllib.loads((BUILTIN_DIR / "national-2016.toml").read_text(encoding="utf-8"))
    del data["photos"]["decisive_duplicates"]
    assert policy_from_mapping(data).decisive_duplicates == DUPLICATE_KINDS  # optional: every kind
    data["photos"]["decisive_duplicates"] = ["exact", "similar"]
    with pytest.raises(PolicyError, match="unknown kind"):
        policy_from_mapping(data)
    data["photos"]["decisive_duplicates"] = "exact"
    with pytest.raises(PolicyError, match="list of strings"):
        policy_from_mapping(data)


# -- a session still in progress -------------------------------------------------------------------------------


def test_the_open_photo_window_of_a_live_session_waits_for_its_photo() -> None:
    """Found on the demo: 17 minutes into a live session the second window (15-29) had no photo yet, so its minutes
    were photo_missing, the session fell under 75 % valid and minutes already in an accepted stage review flipped."""
    photos = (Photo(at(0), True, SIGN_IN, "match", ref(1)), Photo(at(10), True, CHECK, "match", ref(5)))
    live = SessionFacts(at(0), photos, None)
    verdict = judge_session(minutes(17), live, POLICY)
    assert all(v.valid for v in verdict.minutes), [v.reasons for v in verdict.minutes if not v.valid]
    # the window closes with a later minute, or with the sign-out: then a missing photo counts
    later = judge_session(minutes(31), live, POLICY)
    assert {v.record_no for v in later.minutes if Reason.PHOTO_MISSING in v.reasons} == {
        minute(i).record_no for i in range(15, 30)
    }
    signed_out = judge_session(minutes(17), replace(live, ended_at=at(17)), POLICY)
    assert {v.record_no for v in signed_out.minutes if Reason.PHOTO_MISSING in v.reasons} == {
        minute(i).record_no for i in range(15, 17)
    }


def test_the_minute_the_student_signed_in_during_has_the_sign_in_photo() -> None:
    """Found on the demo: the minute starting at 10:00:00 with the sign-in at 10:00:20 fell in window -1, before the
    first window, so the first minute of every session was photo_missing."""
    signed_in = at(20 / 60)
    photos = (Photo(signed_in, True, SIGN_IN, "match", ref(1)), Photo(at(10), True, CHECK, "match", ref(5)),
              Photo(at(25), True, CHECK, "match", ref(20)), Photo(at(MINUTES), True, SIGN_OUT, "match", ref(50)))
    verdict = judge_session(minutes(), SessionFacts(signed_in, photos, at(MINUTES)), POLICY)
    assert [v.reasons for v in verdict.minutes if not v.valid] == []
