"""The session audit: rules that judge a minute by the rest of its session, and the session as a whole. Pure.

Minute rules (on top of :func:`server.validation.minutes.judge_minutes`):

=====================  ====================================================================================
``teleport``           the implied speed between this minute's second-30 fix and the previous fix of the session
                       (GNSS times, else second 30 of each minute) is above ``policy.max_implied_speed_kmh``
``face_overdue``       no passing face check of the student (sign-in, re-check) since the start of the previous
                       re-check window (windows of ``policy.recheck_interval_minutes`` from the sign-in), minus
                       ``policy.recheck_grace_minutes``
``photo_missing``      the minute's photo window (``policy.photo_window_minutes`` from the sign-in) holds no photo
                       (while the student has not signed out, the window of the latest minute is still open and
                       not judged: its photo may yet come)
=====================  ====================================================================================

Session rules (every minute of the session gets the code):

==========================  ===============================================================================
``session_photos_missing``  ``policy.void_after_missing_windows`` photo windows in a row hold no photo
``session_too_short``       the minutes cover less than ``policy.min_session_distance_m`` metres
``session_low_valid``       fewer than ``policy.min_valid_percent`` % of the minutes are valid by the minute rules
==========================  ===============================================================================

Photo rules (session rules on the photos and on the server's own findings about them, :mod:`server.photos`):

===========================  ==============================================================================
``server_face_mismatch``     a photo the terminal passed is, by the server's own re-check, someone else's face, no
                             face or several faces (the terminal's confidence is its own word); such a photo is no
                             passing face check for ``face_overdue`` either
``duplicate_photo``          a photo the terminal passed is a copy (``policy.decisive_duplicates``: exact bytes, the
                             same face image, the same picture) of a photo taken before it, in another session or
                             earlier in this one. Copies form groups; the earliest photo of a group (photo time,
                             then place) is the original, so which copy the server checked first does not matter
``first_photo_not_sign_in``  once the sign-in record is there: no photo at the session's earliest photo time is a
                             sign-in photo (or there is no sign-in photo at all)
``last_photo_not_sign_out``  once the sign-out record is there: no photo at the session's latest photo time is a
                             sign-out photo. A session still in progress (no sign-out yet) is not judged on it; its
                             minutes are judged again when the sign-out arrives
===========================  ==============================================================================

A photo is what a face check takes (any result but ``camera_error``) and the sign-in and sign-out photos: "a
face-check event the chain vouches for"; its bytes travel apart (``up/photos``), and what the server found in them
comes with it once they have been re-checked. Verdicts depend only on the sets of minutes, photos and findings, never
on their order.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from server.policy import Policy
from server.validation.geo import EARTH_RADIUS_M
from server.validation.minutes import FIX30_OFFSET, MinuteFacts, Verdict, judged_minutes
from server.validation.reasons import Reason

#: Metres per second in one km/h.
KMH = 1000 / 3600
ONE_MINUTE = timedelta(minutes=1)


#: What a photo was taken for (:attr:`Photo.kind`).
SIGN_IN, SIGN_OUT, CHECK = "sign_in", "sign_out", "check"
#: The server's re-check verdicts (:class:`server.models.FaceVerdict`) that contradict a terminal's "pass".
SERVER_REJECTS = frozenset({"mismatch", "no_face", "several_faces"})


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo of the session's student: a face check, the sign-in or the sign-out (``passed``: the terminal said
    the face matched).

    ``kind``: :data:`SIGN_IN`, :data:`SIGN_OUT` or :data:`CHECK`; ``server_verdict``: the server's own re-check
    (None: not re-checked, or not yet); ``ref``: the place of the face check that names the photo,
    ``terminal/chain/seq`` as in :class:`PhotoCopy` (None: unknown)."""

    at: datetime
    passed: bool
    kind: str = CHECK
    server_verdict: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class PhotoCopy:
    """The server found photo ``ref`` (taken at ``at``) a copy of photo ``of`` (taken at ``of_at``): ``kind``
    ``exact`` (the same JPEG), ``near`` (the same face image) or ``phash`` (the same picture)."""

    ref: str
    at: datetime
    of: str
    of_at: datetime
    kind: str


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the session audit needs besides the minutes: when the student signed in, and the photos."""

    started_at: datetime | None  # the sign-in (None: not arrived yet; the first minute or photo stands in)
    photos: tuple[Photo, ...] = ()
    ended_at: datetime | None = None  # the sign-out (None: not arrived yet, the sign-out photo rule waits)
    copies: tuple[PhotoCopy, ...] = ()  # the copy links of the groups the session's photos belong to


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
    session_reasons: set[str] = photo_evidence_reasons(session, policy) if ordered else set()
    session = _as_rechecked(session)
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
    # The partial minute the student signed in during belongs to the first window (its photo is the sign-in's).
    minute_windows = {m.record_no: _index(max(m.start, origin), origin, window) for m in ordered}
    last = max(minute_windows.values())
    first = min(0, *minute_windows.values())
    # While the student has not signed out, the window the latest minute lies in may still get its photo: it is
    # judged once a later minute or the sign-out closes it (else live sessions flap invalid, then valid again).
    latest_end = max(m.start for m in ordered) + timedelta(minutes=1)
    still_open = last if session.ended_at is None and origin + window * (last + 1) > latest_end else None
    run = 0
    for k in range(first, last + 1):
        run = 0 if k in with_photo or k == still_open else run + 1
        if run >= policy.void_after_missing_windows:
            session_reasons.add(Reason.SESSION_PHOTOS_MISSING)
    passes = sorted(p.at for p in session.photos if p.passed)
    first_pass: dict[int, datetime | None] = {}  # re-check window -> the first pass from its ``since``
    out: dict[str, set[str]] = {}  # only the minutes with a code
    for m in ordered:
        codes: set[str] = set()
        if minute_windows[m.record_no] not in with_photo and minute_windows[m.record_no] != still_open:
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


def photo_evidence_reasons(session: SessionFacts, policy: Policy) -> set[str]:
    """The photo rules of the session (module docstring): server re-checks, copies, sign-in and sign-out photos."""
    out: set[str] = set()
    photos = session.photos
    if any(p.passed and p.server_verdict in SERVER_REJECTS for p in photos):
        out.add(Reason.SERVER_FACE_MISMATCH)
    copies = copied_refs(session.copies, policy.decisive_duplicates)
    if any(p.passed and p.ref is not None and p.ref in copies for p in photos):
        out.add(Reason.DUPLICATE_PHOTO)
    if session.started_at is not None:
        first = min((p.at for p in photos), default=None)
        if not any(p.kind == SIGN_IN and p.at == first for p in photos):
            out.add(Reason.FIRST_PHOTO_NOT_SIGN_IN)
    if session.ended_at is not None:
        last = max((p.at for p in photos), default=None)
        if not any(p.kind == SIGN_OUT and p.at == last for p in photos):
            out.add(Reason.LAST_PHOTO_NOT_SIGN_OUT)
    return out


def copied_refs(copies: Iterable[PhotoCopy], kinds: Iterable[str]) -> set[str]:
    """The photos that copy an earlier one: every member of a group of copies (joined by links of ``kinds``) but the
    group's earliest, by (photo time, ref). The same links in any order, or found in either direction, give the same
    answer."""
    wanted = set(kinds)
    parent: dict[str, str] = {}
    taken: dict[str, datetime] = {}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for c in copies:
        if c.kind not in wanted or c.ref == c.of:
            continue
        for ref, at in ((c.ref, c.at), (c.of, c.of_at)):
            parent.setdefault(ref, ref)
            taken[ref] = at
        a, b = root(c.ref), root(c.of)
        if a != b:
            parent[max(a, b)] = min(a, b)
    earliest: dict[str, tuple[datetime, str]] = {}
    for ref in parent:
        key, group = (taken[ref], ref), root(ref)
        if group not in earliest or key < earliest[group]:
            earliest[group] = key
    return {ref for ref in parent if earliest[root(ref)][1] != ref}


def _as_rechecked(session: SessionFacts) -> SessionFacts:
    """The session with the photos that the server's re-check contradicts no longer counted as passing."""
    if not any(p.passed and p.server_verdict in SERVER_REJECTS for p in session.photos):
        return session
    photos = tuple(replace(p, passed=False) if p.server_verdict in SERVER_REJECTS else p for p in session.photos)
    return replace(session, photos=photos)
