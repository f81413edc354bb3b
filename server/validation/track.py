"""Track continuity across minutes: a fingerprint of each minute's sampled positions, and replayed tracks. Pure.

==================  ========================================================================================
``replayed_track``  the minute's track fingerprint equals that of another minute (any terminal, any session)
                    that starts earlier; on the same start the minute with the greater record number is the copy
==================  ========================================================================================

The fingerprint (:func:`track_fingerprint`) is the SHA-256 of the minute's sample positions (``lat_e6``,
``lon_e6`` of the ``fixes`` samples, in the order of their seconds). Time and speed are left out, so a recorded drive
replayed an hour or a day later, on this terminal or another, gives the same fingerprints. Only minutes that move get
one: a declared distance above 0 and at least :data:`MIN_DISTINCT_POSITIONS` distinct sample positions. A parked
minute (its positions repeat, and ``stationary`` catches it) has none.

Why an exact repeat is evidence: a real receiver's position carries an error of a metre or two that wanders with the
satellites in view, the atmosphere and multipath, and 1e-6° is ~0.1 m. Two drives along the same line, even by the
same car on the same route, never give six positions equal to the last micro-degree; an emulator ("running horse")
box that replays a recorded drive gives them all. Lower-resolution receivers (NMEA with 4 decimals of minutes:
~0.2 m) keep the argument. What it does not catch: a replay moved off the minute's sample seconds (the box starts
mid-minute) or one with added noise; those are for other evidence (OBD speed against GNSS speed, faces, photos).

The original stays valid and only the copies are caught, and the answer depends only on the set of minutes, never on
the order in which they arrived (:func:`replayed` orders each group by start, then record number).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeGuard

#: Fewer distinct sample positions than this and the minute gets no fingerprint (a car standing or creeping).
MIN_DISTINCT_POSITIONS = 3
#: Prefix of the hashed text: a change to what is hashed makes a new version, never a silent mix of two.
FINGERPRINT_VERSION = "track1:"
#: Length of a fingerprint (hex SHA-256), the width of ``minutes.track_hash``.
FINGERPRINT_LENGTH = 64


@dataclass(frozen=True, slots=True)
class TrackMinute:
    """A minute's fingerprint and when it started: enough to find copies."""

    record_no: str
    start: datetime
    fingerprint: str


def track_fingerprint(fixes: object, distance_m: object) -> str | None:
    """The fingerprint of a minute record's ``fixes`` samples (``[second, lat_e6, lon_e6, speed, ...]``), or None.

    None when the minute does not move (``distance_m`` not above 0, fewer than :data:`MIN_DISTINCT_POSITIONS`
    distinct positions) or has no samples. Malformed samples are skipped: a junk entry does not change the
    fingerprint of the real ones.
    """
    if not _is_int(distance_m) or distance_m <= 0 or not isinstance(fixes, list):
        return None
    samples: list[tuple[int, int, int]] = []
    for sample in fixes:
        if isinstance(sample, list) and len(sample) >= 3 and all(_is_int(x) for x in sample[:3]):
            samples.append((sample[0], sample[1], sample[2]))
    positions = [(lat, lon) for _second, lat, lon in sorted(samples)]
    if len(set(positions)) < MIN_DISTINCT_POSITIONS:
        return None
    text = FINGERPRINT_VERSION + ";".join(f"{lat},{lon}" for lat, lon in positions)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def replayed(minutes: Iterable[TrackMinute]) -> set[str]:
    """Record numbers of the copies among ``minutes``: every minute but the first, by (start, record number), of
    each group with one fingerprint. A record number given twice counts once."""
    groups: dict[str, set[tuple[datetime, str]]] = defaultdict(set)
    for m in minutes:
        groups[m.fingerprint].add((m.start, m.record_no))
    copies: set[str] = set()
    for group in groups.values():
        original = min(group)
        copies.update(no for start, no in group if (start, no) != original and no != original[1])
    return copies


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)
