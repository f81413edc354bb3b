"""Distance driven from GNSS fixes: jitter filtered (a parked car adds no metres), impossible jumps marked, not added.

Pure: fed one fix at a time, it answers what that fix adds (a :class:`Step`). The rules, in order:

1. A fix that is not valid or lacks time or position adds nothing and is not remembered.
2. A fix not later than the previous one (a repeat, GNSS time going backwards) adds nothing.
3. **Jump**: the implied speed from the previous fix (great-circle metres / seconds) or the receiver's own speed is
   above ``max_mps``: nothing is added, the step is marked, and distance goes on from the new position (a teleport
   there and back is two marked jumps, never two long legs).
4. **Moving** (the receiver's speed, from Doppler, is at least ``moving_mps``): the metres from the *anchor* (the
   last position counted) to this fix are added and the fix becomes the anchor.
5. **Parked or creeping** (speed below ``moving_mps``, or no speed): the position only counts once it is more than
   ``jitter_m`` from the anchor. A parked receiver's position wanders a few metres at random; summing those steps
   is how a car standing still "drives" hundreds of metres an hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from firmware_protocols.nmea import GpsFix

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
#: A receiver's speed from this up means the car moves (1.8 km/h: slower than any manoeuvre in a reversing bay;
#: the Doppler speed of a parked receiver stays below ~0.3 m/s).
MOVING_MPS = 0.5
#: Radius of a parked receiver's wandering: positions within it of the last counted one add nothing. Open-sky
#: consumer receivers wander 2-5 m (CEP95); 10 m keeps urban multipath out too.
JITTER_M = 10.0
#: Faster than this (252 km/h) is not a training car: receiver noise, a cold-start jump or spoofing.
MAX_PLAUSIBLE_SPEED_MPS = 70.0


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Step:
    """What one fix adds: ``metres`` counted, ``implied_mps`` from the previous fix (None for the first),
    ``jump`` (an impossible speed: not counted), ``held`` (parked or creeping within the jitter radius)."""

    metres: float = 0.0
    implied_mps: float | None = None
    jump: bool = False
    held: bool = False


class Odometer:
    """Distance over a stream of fixes; ``total_m`` and ``jumps`` add up every :class:`Step` so far."""

    def __init__(
        self, *, moving_mps: float = MOVING_MPS, jitter_m: float = JITTER_M, max_mps: float = MAX_PLAUSIBLE_SPEED_MPS
    ) -> None:
        self.moving_mps, self.jitter_m, self.max_mps = moving_mps, jitter_m, max_mps
        self.total_m = 0.0
        self.jumps = 0
        self._last: GpsFix | None = None
        self._anchor: tuple[float, float] | None = None

    def feed(self, fix: GpsFix) -> Step:
        if not fix.valid or fix.time is None or fix.lat is None or fix.lon is None:
            return Step()
        last = self._last
        if last is None or last.time is None or last.lat is None or last.lon is None or self._anchor is None:
            self._last, self._anchor = fix, (fix.lat, fix.lon)
            return Step()
        dt = (fix.time - last.time).total_seconds()
        if dt <= 0:
            return Step()
        implied = haversine_m(last.lat, last.lon, fix.lat, fix.lon) / dt
        self._last = fix
        speed = fix.speed_mps
        if implied > self.max_mps or (speed is not None and speed > self.max_mps):
            self.jumps += 1
            self._anchor = (fix.lat, fix.lon)
            return Step(0.0, implied, jump=True)
        from_anchor = haversine_m(self._anchor[0], self._anchor[1], fix.lat, fix.lon)
        moving = speed is not None and speed >= self.moving_mps
        if not moving and from_anchor <= self.jitter_m:
            return Step(0.0, implied, held=True)
        self._anchor = (fix.lat, fix.lon)
        self.total_m += from_anchor
        return Step(from_anchor, implied)
