"""Simulated GPS receiver: routes near Rizhao, a driver that follows them, and a pty speaking NMEA.

- ``Route``: a closed loop of waypoints given in metres east/north of an origin (flat-earth, fine for a few km).
  ``TRAINING_GROUND`` is a field-course loop of ~700 m at the training ground (35.42 N, 119.52 E);
  ``ROAD_LOOP`` a ~4.5 km road loop nearby.
- ``RouteDriver``: position, speed and course at any simulated second, in closed form (deterministic, no state):
  drive cycles of accelerate - cruise - brake - stop, cruise speed taken in turn from ``SpeedProfile``.
- ``ReceiverNoise``: the receiver's position error, ~1.2 m and wandering slowly (seeded: reproducible per car), so
  that two cars on one route, or one car's laps, never repeat positions to the micro-degree (the server takes an
  exact repeat for a replayed track: ``server.validation.track``).
- ``GpsPty``: a pseudo-terminal whose slave path a ``SerialGpsReader`` opens like a real receiver; a thread
  writes RMC+GGA+GSA for each epoch (1-10 Hz) of a ``SimClock`` (its factor is the time acceleration), in order,
  without gaps or duplicates, with the talker asked for (``GN``, ``BD``, ``GP``...).
- Faults (``GpsFault``, set with ``GpsPty.fault = ...`` while running): no fix, cold start (timeless sentences and
  placeholder positions dated 1980), garbage bytes (binary noise between and inside sentences), teleport (5.5 km
  off), clock rollover (dates 1024 weeks back), drift while parked (the car stops; its position wanders a few
  metres with a noise speed). ``unplug()`` / ``replug()`` close the pty and open a new one behind the same ``link``
  path, as a USB receiver pulled out and put back.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import random
import threading
import tty
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from firmware_protocols.nmea import GpsFix, checksum, nmea_sentences
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

#: Figure-eight of the training ground: two 25 m-radius circles touching at the origin, driven as one loop.
FIGURE_EIGHT = Route(
    "figure-eight",
    (35.4210, 119.5190),
    tuple(
        (25.0 * math.sin(a) * side, 25.0 - 25.0 * math.cos(a))
        if side > 0
        else (25.0 * math.sin(a) * side, -25.0 + 25.0 * math.cos(a))
        for side in (1, -1)
        for a in (math.radians(d) for d in range(0, 360, 15))
    ),
)

#: Reversing bays (倒车入库): a row of bays entered and left in turn, the lane between them and the bay ends.
REVERSING_BAYS = Route(
    "reversing-bays",
    (35.4195, 119.5215),
    ((0, 0), (8, 0), (8, -7), (10, -7), (10, 0), (18, 0), (18, -7), (20, -7), (20, 0), (30, 0), (30, 10), (0, 10)),
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


#: Receiver position error: standard deviation per axis (metres) and correlation time (seconds). Open-sky consumer
#: receivers are off by ~1-1.5 m (1 sigma), and the error drifts with the satellites, the atmosphere and multipath
#: rather than jumping each epoch.
NOISE_SIGMA_M, NOISE_TAU_S = 1.2, 60.0


class ReceiverNoise:
    """A receiver's position error: a first-order Gauss-Markov process per axis (north, east), seeded.

    Epochs must come in order (``apply`` moves the error on by the time since the previous call). The error moves
    a few centimetres between epochs at 1 Hz, so it neither adds distance to the odometer nor looks like a jump.
    ``sigma_m=0`` gives the route exactly.
    """

    def __init__(self, seed: int | str = 0, sigma_m: float = NOISE_SIGMA_M, tau_s: float = NOISE_TAU_S) -> None:
        if sigma_m < 0 or tau_s <= 0:
            raise ValueError("ReceiverNoise needs sigma_m >= 0 and tau_s > 0")
        self.sigma_m, self.tau_s = sigma_m, tau_s
        self._rng = random.Random(f"receiver-noise:{seed}")
        self._north, self._east = self._rng.gauss(0, sigma_m), self._rng.gauss(0, sigma_m)
        self._last: datetime | None = None

    def offset_m(self, when: datetime) -> tuple[float, float]:
        """(north, east) error in metres at ``when`` (not earlier than the previous call's)."""
        if self._last is not None and when > self._last:
            a = math.exp(-(when - self._last).total_seconds() / self.tau_s)
            k = self.sigma_m * math.sqrt(1 - a * a)
            self._north = a * self._north + k * self._rng.gauss(0, 1)
            self._east = a * self._east + k * self._rng.gauss(0, 1)
        self._last = when if self._last is None else max(self._last, when)
        return self._north, self._east

    def apply(self, fix: GpsFix) -> GpsFix:
        """``fix`` (time, lat and lon set) moved by the error at its time."""
        if self.sigma_m == 0 or fix.time is None or fix.lat is None or fix.lon is None:
            return fix
        north, east = self.offset_m(fix.time)
        lat = fix.lat + north / M_PER_DEG_LAT
        lon = fix.lon + east / (M_PER_DEG_LAT * math.cos(math.radians(fix.lat)))
        return replace(fix, lat=lat, lon=lon)


class GpsFault(StrEnum):
    NO_FIX = "no_fix"
    COLD_START = "cold_start"
    GARBAGE = "garbage"
    TELEPORT = "teleport"
    ROLLOVER = "rollover"
    PARKED_DRIFT = "parked_drift"


#: Teleport distance: 0.05 degree of latitude, ~5.5 km in one epoch (~20,000 km/h at 1 Hz).
TELEPORT_DEG = 0.05
#: GPS week-number rollover: the receiver's date is this much in the past.
ROLLOVER = timedelta(weeks=1024)
#: Parked drift: standard deviation of the position noise (metres) and of the noise speed (m/s).
DRIFT_SIGMA_M, DRIFT_SPEED_SIGMA_MPS = 2.0, 0.08
M_PER_DEG_LAT = 111_195.0


def _sentence(body: str) -> bytes:
    return f"${body}*{checksum(body):02X}\r\n".encode("ascii")


@dataclass
class GpsPtyStats:
    epochs_written: int = 0  # simulated seconds accepted for the pty (written or pending)
    epochs_dropped: int = 0  # simulated seconds dropped because nobody read the pty
    last_epoch: datetime | None = None


class GpsPty(PtyDevice):
    """A pty that behaves like a GPS receiver on a serial port, driven by ``clock``.

    The thread walks simulated seconds one by one from the first whole second after ``start()``: each
    gets RMC+GGA+GSA from ``driver.fix_at`` (drive time counted from ``clock.start``) moved by the receiver's
    noise (:class:`ReceiverNoise` seeded with ``seed``: give each car its own); it sleeps until the clock reaches the
    next second, and writes all seconds that are due in one batch (at factor 60: ~60 a real second).

    Writes are non-blocking. Bytes the pty would not take wait in a buffer of at most ``MAX_PENDING_BYTES``;
    an epoch that does not fit is dropped whole (never half a sentence) and counted in ``stats.epochs_dropped``.
    So a pty nobody reads never blocks the simulator nor grows memory.
    """

    thread_name = "gps-pty"

    def __init__(
        self,
        driver: RouteDriver,
        clock: SimClock,
        talker: str = "GN",
        *,
        rate_hz: float = 1.0,
        link: Path | None = None,
        seed: int = 0,
        noise_m: float = NOISE_SIGMA_M,
    ) -> None:
        if not 1.0 <= rate_hz <= 10.0:
            raise ValueError("receivers send 1 to 10 epochs a second")
        self.driver = driver
        self.clock = clock
        self.talker = talker
        self.rate_hz = rate_hz
        self.link = link
        self.fault: GpsFault | None = None
        self.stats = GpsPtyStats()
        self._rng = random.Random(seed)
        self.noise = ReceiverNoise(seed, noise_m)
        self._parked: GpsFix | None = None
        self._plug = threading.Lock()
        super().__init__()
        os.set_blocking(self._master, False)
        self._pending = bytearray()
        self._relink()

    # --- unplug / replug ---

    def _relink(self) -> None:
        if self.link is not None:
            self.link.unlink(missing_ok=True)
            self.link.symlink_to(self.path)

    def unplug(self) -> None:
        """The receiver is pulled out: its pty closes (a reader sees the device vanish) and ``link`` goes."""
        with self._plug:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1
            self._pending.clear()
            if self.link is not None:
                self.link.unlink(missing_ok=True)

    def replug(self) -> None:
        """Plugged back in: a new pty, and ``link`` points to it."""
        with self._plug:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.path = os.ttyname(self._slave)
            self._relink()

    def stop(self) -> None:
        super().stop()
        if self.link is not None:
            self.link.unlink(missing_ok=True)

    # --- epochs ---

    def fix_for(self, when: datetime) -> GpsFix:
        """The receiver's fix for epoch ``when`` without faults: the driver's position plus the receiver's noise
        (epochs in order: the noise moves on)."""
        return self.noise.apply(self.driver.fix_at((when - self.clock.start).total_seconds(), when))

    def _epoch_bytes(self, when: datetime) -> bytes:
        fix = self.fix_for(when)
        fault = self.fault
        if fault is not GpsFault.PARKED_DRIFT:
            self._parked = None
        if fault is None:
            return nmea_sentences(fix, self.talker)
        hms = f"{when:%H%M%S}.{when.microsecond // 10000:02d}"
        if fault is GpsFault.NO_FIX:
            tk = self.talker
            return (_sentence(f"{tk}RMC,{hms},V,,,,,,,{when:%d%m%y},,,N")
                    + _sentence(f"{tk}GGA,{hms},,,,,0,00,99.9,,,,,,")
                    + _sentence(f"{tk}GSA,A,1,,,,,,,,,,,,,99.9,99.9,99.9"))  # fmt: skip
        if fault is GpsFault.COLD_START:
            tk = self.talker
            return (_sentence(f"{tk}RMC,,V,,,,,,,,,,N")
                    + _sentence(f"{tk}GGA,{hms},8960.0000,N,00000.0000,E,0,0,,,M,,M,,")
                    + _sentence(f"{tk}RMC,{hms},V,8960.0000,N,00000.0000,E,0.0,0.0,060180,,,N"))  # fmt: skip
        if fault is GpsFault.GARBAGE:
            good = nmea_sentences(fix, self.talker)
            noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(5, 60)))
            cut = self._rng.randrange(1, 40)
            return noise + good[:cut] + noise[:7] + good[cut:] + noise + good  # a damaged copy, then a good one
        if fault is GpsFault.TELEPORT:
            return nmea_sentences(replace(fix, lat=(fix.lat or 0.0) + TELEPORT_DEG), self.talker)
        if fault is GpsFault.ROLLOVER:
            return nmea_sentences(replace(fix, time=when - ROLLOVER), self.talker)
        # parked drift: where the car stopped, plus noise
        if self._parked is None:
            self._parked = fix
        base = self._parked
        assert base.lat is not None and base.lon is not None
        n, e = self._rng.gauss(0, DRIFT_SIGMA_M), self._rng.gauss(0, DRIFT_SIGMA_M)
        lat = base.lat + n / M_PER_DEG_LAT
        lon = base.lon + e / (M_PER_DEG_LAT * math.cos(math.radians(base.lat)))
        speed = abs(self._rng.gauss(0, DRIFT_SPEED_SIGMA_MPS))
        drift = replace(fix, lat=lat, lon=lon, speed_mps=speed, track_deg=self._rng.uniform(0, 359))
        return nmea_sentences(drift, self.talker)

    def _run(self) -> None:
        step = timedelta(seconds=1.0 / self.rate_hz)
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
                nxt += step
                batch += 1
            self._flush()
            if batch == MAX_EPOCHS_PER_WRITE:
                continue  # still behind: encode the next batch at once
            wait = self.clock.real_seconds((nxt - self.clock.now()).total_seconds())
            self._stop.wait(min(MAX_IDLE_S, max(0.0, wait)))

    def _flush(self) -> None:
        with self._plug:
            if self._master < 0:
                self._pending.clear()  # unplugged: what the receiver says goes nowhere
                return
            self._write()

    def _write(self) -> None:
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
