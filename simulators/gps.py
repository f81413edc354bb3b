"""Simulated GPS receiver: routes near Rizhao, a driver that follows them, and a pty speaking NMEA.

- ``Route``: a closed loop of waypoints given in metres east/north of an origin (flat-earth, fine for a few km).
  ``TRAINING_GROUND`` is a field-course loop of ~700 m at the training ground (35.42 N, 119.52 E);
  ``ROAD_LOOP`` a ~4.5 km road loop nearby.
- ``RouteDriver``: position, speed and course at any simulated second, in closed form (deterministic, no state):
  drive cycles of accelerate - cruise - brake - stop, cruise speed taken in turn from ``SpeedProfile``.
- ``GpsPty``: a pseudo-terminal whose slave path a ``SerialGpsReader`` opens like a real receiver; a thread
  writes RMC+GGA+GSA for each simulated second of a ``SimClock``, in order, without gaps or duplicates.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from firmware_protocols.nmea import GpsFix, nmea_sentences
from simulators.clock import SimClock
from simulators.pty_device import PtyDevice

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)

#: Bytes of NMEA waiting for a reader; past this whole epochs are dropped (and counted) rather than blocking
#: the simulator or growing memory when nobody reads the pty. ~64 KiB is ~5 minutes of simulated output.
MAX_PENDING_BYTES = 64 * 1024
#: Simulated seconds encoded per write when catching up, so one write stays small.
MAX_EPOCHS_PER_WRITE = 120
#: Longest real sleep between checks, so ``stop()`` is prompt even at slow clock factors.
MAX_IDLE_S = 0.2


@dataclass(frozen=True)
class Route:
    """A closed loop around ``origin`` (lat, lon); ``points_m`` are (east, north) metres, first != last."""

    name: str
    origin: tuple[float, float]
    points_m: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points_m) < 3:
            raise ValueError("a route loop needs at least 3 points")

    @cached_property
    def _cumulative(self) -> tuple[float, ...]:
        """Distance from the first point to each point, closing the loop at the end."""
        out = [0.0]
        for i, (e0, n0) in enumerate(self.points_m):
            e1, n1 = self.points_m[(i + 1) % len(self.points_m)]
            out.append(out[-1] + math.hypot(e1 - e0, n1 - n0))
        return tuple(out)

    @property
    def length_m(self) -> float:
        return self._cumulative[-1]

    def to_latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        lat0, lon0 = self.origin
        lat = lat0 + math.degrees(north_m / EARTH_RADIUS_M)
        lon = lon0 + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
        return lat, lon

    def at_distance(self, distance_m: float) -> tuple[float, float, float]:
        """(lat, lon, course in degrees true) after driving ``distance_m`` from the first point (wraps)."""
        cumulative = self._cumulative
        d = distance_m % self.length_m
        i = min(bisect.bisect_right(cumulative, d) - 1, len(self.points_m) - 1)
        e0, n0 = self.points_m[i]
        e1, n1 = self.points_m[(i + 1) % len(self.points_m)]
        seg = cumulative[i + 1] - cumulative[i]
        f = (d - cumulative[i]) / seg if seg > 0 else 0.0
        lat, lon = self.to_latlon(e0 + (e1 - e0) * f, n0 + (n1 - n0) * f)
        course = math.degrees(math.atan2(e1 - e0, n1 - n0)) % 360.0
        return lat, lon, course


RIZHAO_TRAINING_GROUND = (35.4200, 119.5200)

#: Field-course loop of the training ground: straights, a hairpin end and a chicane; ~700 m.
TRAINING_GROUND = Route(
    "training-ground",
    RIZHAO_TRAINING_GROUND,
    ((0, 0), (180, 0), (220, 30), (220, 90), (180, 120), (100, 120), (80, 140), (40, 140), (0, 100), (-20, 50)),
)

#: Road loop on public roads east of the ground; ~4.5 km.
ROAD_LOOP = Route(
    "road-loop",
    (35.4150, 119.5250),
    ((0, 0), (1200, 0), (1350, 150), (1350, 900), (900, 1150), (200, 1150), (0, 900), (-100, 400)),
)


@dataclass(frozen=True)
class SpeedProfile:
    """Drive cycles: accelerate at ``accel_mps2`` to a cruise speed (in turn from ``cruise_kmh``), hold it
    ``cruise_s`` seconds, brake at ``accel_mps2`` to a stop, stand ``stop_s`` seconds."""

    cruise_kmh: tuple[float, ...]
    cruise_s: float
    stop_s: float
    accel_mps2: float = 1.0

    def __post_init__(self) -> None:
        if not self.cruise_kmh or min(self.cruise_kmh) <= 0 or self.accel_mps2 <= 0:
            raise ValueError("SpeedProfile needs positive cruise speeds and acceleration")


TRAINING_SPEEDS = SpeedProfile(cruise_kmh=(12.0, 18.0, 8.0, 20.0, 15.0), cruise_s=40.0, stop_s=8.0, accel_mps2=0.8)
ROAD_SPEEDS = SpeedProfile(cruise_kmh=(40.0, 50.0, 30.0, 45.0, 25.0), cruise_s=90.0, stop_s=20.0, accel_mps2=1.2)


@dataclass(frozen=True)
class DriveState:
    lat: float
    lon: float
    speed_mps: float
    course_deg: float
    distance_m: float


class RouteDriver:
    """Where the car is ``t`` seconds after it set off from the route's first point, in closed form."""

    def __init__(self, route: Route, profile: SpeedProfile) -> None:
        self.route = route
        self.profile = profile
        # One cycle per cruise speed: (duration_s, distance_m, cruise_mps); they repeat as a super-cycle.
        self._cycles: list[tuple[float, float, float]] = []
        for kmh in profile.cruise_kmh:
            v = kmh / 3.6
            ramp = v / profile.accel_mps2
            self._cycles.append((2 * ramp + profile.cruise_s + profile.stop_s, v * ramp + v * profile.cruise_s, v))
        self._super_s = sum(c[0] for c in self._cycles)
        self._super_m = sum(c[1] for c in self._cycles)

    def state_at(self, t: float) -> DriveState:
        t = max(0.0, t)
        laps, tau = divmod(t, self._super_s)
        distance = laps * self._super_m
        speed = 0.0
        a = self.profile.accel_mps2
        for duration, cycle_m, v in self._cycles:
            if tau >= duration:
                tau -= duration
                distance += cycle_m
                continue
            ramp = v / a
            if tau < ramp:  # accelerating
                speed, distance = a * tau, distance + 0.5 * a * tau * tau
            elif tau < ramp + self.profile.cruise_s:  # cruising
                speed, distance = v, distance + 0.5 * v * ramp + v * (tau - ramp)
            elif tau < 2 * ramp + self.profile.cruise_s:  # braking
                tb = tau - ramp - self.profile.cruise_s
                speed = v - a * tb
                distance += 0.5 * v * ramp + v * self.profile.cruise_s + v * tb - 0.5 * a * tb * tb
            else:  # stopped
                distance += cycle_m
            break
        lat, lon, course = self.route.at_distance(distance)
        return DriveState(lat, lon, max(0.0, speed), course, distance)

    def fix_at(self, t: float, when: datetime) -> GpsFix:
        """A valid 3D fix for second ``t`` of the drive, stamped ``when`` (aware UTC)."""
        s = self.state_at(t)
        return GpsFix(
            time=when,
            lat=s.lat,
            lon=s.lon,
            alt_m=12.0,
            speed_mps=s.speed_mps,
            track_deg=s.course_deg,
            mode=3,
            satellites=14,
            hdop=0.8,
            valid=True,
        )


@dataclass
class GpsPtyStats:
    epochs_written: int = 0  # simulated seconds accepted for the pty (written or pending)
    epochs_dropped: int = 0  # simulated seconds dropped because nobody read the pty
    last_epoch: datetime | None = None


class GpsPty(PtyDevice):
    """A pty that behaves like a GPS receiver on a serial port, driven by ``clock``.

    The thread walks simulated seconds one by one from the first whole second after ``start()``: each
    gets RMC+GGA+GSA from ``driver.fix_at`` (drive time counted from ``clock.start``); it sleeps until the clock
    reaches the next second, and writes all seconds that are due in one batch (at factor 60: ~60 a real second).

    Writes are non-blocking. Bytes the pty would not take wait in a buffer of at most ``MAX_PENDING_BYTES``;
    an epoch that does not fit is dropped whole (never half a sentence) and counted in ``stats.epochs_dropped``.
    So a pty nobody reads never blocks the simulator nor grows memory.
    """

    thread_name = "gps-pty"

    def __init__(self, driver: RouteDriver, clock: SimClock, talker: str = "GN") -> None:
        self.driver = driver
        self.clock = clock
        self.talker = talker
        self.stats = GpsPtyStats()
        super().__init__()
        os.set_blocking(self._master, False)
        self._pending = bytearray()

    def _epoch_bytes(self, when: datetime) -> bytes:
        t = (when - self.clock.start).total_seconds()
        return nmea_sentences(self.driver.fix_at(t, when), self.talker)

    def _run(self) -> None:
        now = self.clock.now()
        nxt = now.replace(microsecond=0) + timedelta(seconds=1)
        while not self._stop.is_set():
            now = self.clock.now()
            batch = 0
            while nxt <= now and batch < MAX_EPOCHS_PER_WRITE:
                data = self._epoch_bytes(nxt)
                if len(self._pending) + len(data) <= MAX_PENDING_BYTES:
                    self._pending += data
                    self.stats.epochs_written += 1
                else:
                    self.stats.epochs_dropped += 1
                self.stats.last_epoch = nxt
                nxt += timedelta(seconds=1)
                batch += 1
            self._flush()
            if batch == MAX_EPOCHS_PER_WRITE:
                continue  # still behind: encode the next batch at once
            wait = self.clock.real_seconds((nxt - self.clock.now()).total_seconds())
            self._stop.wait(min(MAX_IDLE_S, max(0.0, wait)))

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            written = os.write(self._master, self._pending)
        except BlockingIOError:
            return  # pty full: keep (bounded) pending bytes for later
        except OSError as exc:  # pty closed under us
            log.debug("gps pty write failed: %s", exc)
            self._pending.clear()
            return
        del self._pending[:written]
