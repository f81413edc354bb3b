"""The session audit: rules that judge a minute by the rest of its session, and the session as a whole. Pure.

Minute rules (on top of :func:`server.validation.minutes.judge_minutes`):

=====================  ====================================================================================
``teleport``           the implied speed between this minute's second-30 fix and the previous fix of the session
                       (GNSS times, else second 30 of each minute) is above ``policy.max_implied_speed_kmh``
``face_overdue``       no passing face check of the student (sign-in, re-check) since the start of the previous
                       re-check window (windows of ``policy.recheck_interval_minutes`` from the sign-in), minus
                       ``policy.recheck_grace_minutes``
``photo_missing``      the minute's photo window (``policy.photo_window_minutes`` from the sign-in) holds no photo
=====================  ====================================================================================

Session rules (every minute of the session gets the code):

==========================  ===============================================================================
``session_photos_missing``  ``policy.void_after_missing_windows`` photo windows in a row hold no photo
``session_too_short``       the minutes cover less than ``policy.min_session_distance_m`` metres
``session_low_valid``       fewer than ``policy.min_valid_percent`` % of the minutes are valid by the minute rules
==========================  ===============================================================================

A photo is what a face check takes (any result but ``camera_error``) and the sign-in and sign-out photos; v1 records
carry no photo bytes, so "photo" means "a face-check event the chain vouches for". Verdicts depend only on the sets
of minutes and photos, never on their order.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.policy import Policy
from server.validation.geo import EARTH_RADIUS_M
from server.validation.minutes import FIX30_OFFSET, MinuteFacts, Verdict, judged_minutes
from server.validation.reasons import Reason

#: Metres per second in one km/h.
KMH = 1000 / 3600
ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo of the session's student: a face check, the sign-in or the sign-out (``passed``: the face matched)."""

    at: datetime
    passed: bool


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the session audit needs besides the minutes: when the student signed in, and the photos."""

    started_at: datetime | None  # the sign-in (None: not arrived yet; the first minute or photo stands in)
    photos: tuple[Photo, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionVerdict:
    minutes: list[Verdict]  # ordered by (start, record number), as judge_minutes
    reasons: tuple[str, ...]  # session rules broken (sorted)
    distance_m: int


def judge_session(
    minutes: Sequence[MinuteFacts],
    session: SessionFacts,
    policy: Policy,
    extra: Mapping[str, Iterable[str]] | None = None,
) -> SessionVerdict:
    """Judge the minutes of ONE session; ``extra`` adds reasons found elsewhere (other terminals) by record number."""
    base = judged_minutes(minutes, policy)
    by_no = {m.record_no: m for m in minutes}
    ordered = [by_no[m.record_no] for m, _ in base]
    # a record number's minute-rule codes (the last of its verdicts, as for ``by_no``), then the codes added here
    own: dict[str, tuple[str, ...]] = {m.record_no: codes for m, codes in base}
    reasons: dict[str, set[str]] = {}
    for no in _teleports(ordered, policy):
        reasons.setdefault(no, set()).add(Reason.TELEPORT)
    session_reasons: set[str] = set()
    if ordered:
        origin = _origin(ordered, session)
        for no, photo_codes in _photo_reasons(ordered, session, origin, policy, session_reasons).items():
            reasons.setdefault(no, set()).update(photo_codes)
    for no, found in (extra or {}).items():
        if no in own:
            codes = set(found)
            if codes:
                reasons.setdefault(no, set()).update(codes)
    distance = sum(m.distance_m for m in ordered)
    if ordered and distance < policy.min_session_distance_m:
        session_reasons.add(Reason.SESSION_TOO_SHORT)
    valid = sum(1 for no, codes in own.items() if not codes and no not in reasons)
    if ordered and valid * 100 < policy.min_valid_percent * len(own):
        session_reasons.add(Reason.SESSION_LOW_VALID)
    verdicts = []
    for m, _ in base:
        no = m.record_no
        added = reasons.get(no)
        if added is None and not session_reasons:
            final = own[no]  # sorted distinct codes already
        else:
            final = tuple(sorted({str(r) for r in (*own[no], *(added or ()), *session_reasons)}))
        verdicts.append(Verdict(no, not final, final))
    return SessionVerdict(verdicts, tuple(sorted(str(r) for r in session_reasons)), distance)


def _origin(ordered: Sequence[MinuteFacts], session: SessionFacts) -> datetime:
    if session.started_at is not None:
        return session.started_at
    return min([ordered[0].start, *(p.at for p in session.photos)])


#: A fix for the teleport rule: (record number, time, lat, lon, lat in radians, its cosine).
_Point = tuple[str, datetime, float, float, float, float]


def _teleports(ordered: Sequence[MinuteFacts], policy: Policy) -> set[str]:
    """Record numbers of minutes whose fix lies too far from the previous fix of the session for the time between.

    A single outlier (a jump out and straight back, while its neighbours agree) flags only the outlier.
    """
    limit = policy.max_implied_speed_kmh * KMH
    # (record number, time, lat, lon, lat in radians, its cosine): each point's trigonometry once, not per pair
    points: list[_Point] = []
    for m in ordered:
        f = m.fix30
        if f is not None and f.mode >= 2:
            lat = f.lat_e6 / 1e6
            p = math.radians(lat)
            points.append((m.record_no, m.fix30_time or m.start + FIX30_OFFSET, lat, f.lon_e6 / 1e6, p, math.cos(p)))

    def jump(a: _Point, b: _Point) -> bool:
        seconds = max(1.0, abs((b[1] - a[1]).total_seconds()))
        # geo.distance_m(a[2], a[3], b[2], b[3]), the same arithmetic step by step
        dl = math.radians(b[3] - a[3])
        h = math.sin((b[4] - a[4]) / 2) ** 2 + a[5] * b[5] * math.sin(dl / 2) ** 2
        return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h))) / seconds > limit

    bad_in = [i > 0 and jump(points[i - 1], points[i]) for i in range(len(points))]
    out: set[str] = set()
    for i, bad in enumerate(bad_in):
        if not bad:
            continue
        came_back = i >= 2 and bad_in[i - 1] and not jump(points[i - 2], points[i])
        if came_back and points[i - 1][0] in out:
            continue  # the return from an outlier that is already flagged
        out.add(points[i][0])
    return out


def _photo_reasons(
    ordered: Sequence[MinuteFacts], session: SessionFacts, origin: datetime, policy: Policy, session_reasons: set[str]
) -> dict[str, set[str]]:
    window = timedelta(minutes=policy.photo_window_minutes)
    recheck = timedelta(minutes=policy.recheck_interval_minutes)
    grace = timedelta(minutes=policy.recheck_grace_minutes)
    with_photo = {_index(p.at, origin, window) for p in session.photos}
    minute_windows = {m.record_no: _index(m.start, origin, window) for m in ordered}
    last = max(minute_windows.values())
    first = min(0, *minute_windows.values())
    run = 0
    for k in range(first, last + 1):
        run = 0 if k in with_photo else run + 1
        if run >= policy.void_after_missing_windows:
            session_reasons.add(Reason.SESSION_PHOTOS_MISSING)
    passes = sorted(p.at for p in session.photos if p.passed)
    first_pass: dict[int, datetime | None] = {}  # re-check window -> the first pass from its ``since``
    out: dict[str, set[str]] = {}  # only the minutes with a code
    for m in ordered:
        codes: set[str] = set()
        if minute_windows[m.record_no] not in with_photo:
            codes.add(Reason.PHOTO_MISSING)
        k = _index(m.start, origin, recheck)
        if k not in first_pass:
            since = origin + recheck * max(0, k - 1) - grace
            i = bisect.bisect_left(passes, since)
            first_pass[k] = passes[i] if i < len(passes) else None
        passed = first_pass[k]  # a pass in [since, end] if any: the first one from since
        if passed is None or passed > m.start + ONE_MINUTE:
            codes.add(Reason.FACE_OVERDUE)
        if codes:
            out[m.record_no] = codes
    return out


def _index(t: datetime, origin: datetime, window: timedelta) -> int:
    return (t - origin) // window
