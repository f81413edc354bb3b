"""Trusted time and fix freshness from GNSS: pure, fed with fixes and the two terminal clocks, answering events.

- :class:`GnssClock` is the terminal's "now": GNSS time of the last fix carried forward by the monotonic clock while
  fixes are fresh, else the terminal's wall clock. It measures the wall clock's offset from GNSS (terminal minus
  GNSS, milliseconds) and turns what must never pass silently into :class:`TimeEvent` s:

  - ``clock_jump``: the wall clock moved unlike the monotonic clock between two looks (an NTP step, an operator
    setting the date, a dead RTC battery after power-up): ``by_ms``;
  - ``gnss_time_backwards``: a fix earlier than the last one (a receiver's week rollover, a reset): ``from``, ``to``.
    Now stays monotonic (the backwards time is not adopted until it passes the last one);
  - ``gnss_time_refused``: the receiver gives a position but a date the decoder refused (week rollover), once per run
    of such fixes.

- :class:`FixWatch` says when the GPS is lost: no valid fix for ``stale_s`` seconds (monotonic) is ``gps_lost``,
  the next valid fix ``gps_back`` (with ``lost_ms``, how long it was gone).

Events carry integers and strings only: they become signed ``event`` records (contract: no floats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from firmware_protocols.nmea import GpsFix

#: GNSS time older than this (monotonic seconds since its fix) is not used as "now": the wall clock is.
GNSS_FRESH_S = 10.0
#: A wall clock that moves this much more or less than the monotonic clock between two looks has jumped.
CLOCK_JUMP_S = 2.0
#: No valid fix for this long (monotonic seconds) is a lost GPS.
GPS_STALE_S = 10.0


@dataclass(frozen=True, slots=True)
class TimeEvent:
    name: str
    at: datetime
    details: dict[str, int | str] = field(default_factory=dict)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class GnssClock:
    def __init__(self, *, fresh_s: float = GNSS_FRESH_S, jump_s: float = CLOCK_JUMP_S) -> None:
        self.fresh_s, self.jump_s = fresh_s, jump_s
        self.offset_ms: int | None = None  # wall clock minus GNSS time at the last fix
        self.jumps = 0
        self.backwards = 0
        self._ref: tuple[datetime, float] | None = None  # (GNSS time, monotonic) of the newest fix
        self._look: tuple[datetime, float] | None = None  # (wall, monotonic) at the last look
        self._refusing = False
        self._behind = False

    def now(self, wall: datetime, mono: float) -> datetime:
        if self._ref is not None and mono - self._ref[1] < self.fresh_s:
            return self._ref[0] + timedelta(seconds=max(0.0, mono - self._ref[1]))
        return wall

    def gnss_fresh(self, mono: float) -> bool:
        return self._ref is not None and mono - self._ref[1] < self.fresh_s

    def on_fix(self, fix: GpsFix, wall: datetime, mono: float) -> list[TimeEvent]:
        events = self.on_tick(wall, mono)
        if fix.time is None:
            if not fix.time_plausible and fix.lat is not None and not self._refusing:
                self._refusing = True
                events.append(TimeEvent("gnss_time_refused", self.now(wall, mono)))
            return events
        self._refusing = False
        self.offset_ms = round((wall - fix.time).total_seconds() * 1000)
        if self._ref is not None and fix.time < self._ref[0] and self.gnss_fresh(mono):
            if not self._behind:  # one event per episode, not one per fix
                self._behind = True
                self.backwards += 1
                moved = {"from": _iso(self._ref[0]), "to": _iso(fix.time)}
                events.append(TimeEvent("gnss_time_backwards", self.now(wall, mono), dict(moved)))
            return events  # not adopted: now() goes on from the newer time until it is stale
        self._behind = False
        self._ref = (fix.time, mono)
        return events

    def on_tick(self, wall: datetime, mono: float) -> list[TimeEvent]:
        events: list[TimeEvent] = []
        if self._look is not None:
            drift = (wall - self._look[0]).total_seconds() - (mono - self._look[1])
            if abs(drift) >= self.jump_s:
                self.jumps += 1
                events.append(TimeEvent("clock_jump", self.now(wall, mono), {"by_ms": round(drift * 1000)}))
        self._look = (wall, mono)
        return events


class FixWatch:
    """GPS lost after ``stale_s`` seconds without a valid fix (counted from the start too), back at the next one."""

    def __init__(self, start_mono: float, *, stale_s: float = GPS_STALE_S) -> None:
        self.stale_s = stale_s
        self.lost = False
        self.lost_count = 0
        self.last_valid_mono: float | None = None
        self._since = start_mono  # monotonic time of the last valid fix, or of the start

    def on_fix(self, fix: GpsFix, mono: float, at: datetime) -> list[TimeEvent]:
        if not (fix.valid and fix.lat is not None and fix.lon is not None):
            return self.on_tick(mono, at)
        events: list[TimeEvent] = []
        if self.lost:
            self.lost = False
            events.append(TimeEvent("gps_back", at, {"lost_ms": round((mono - self._since) * 1000)}))
        self._since = self.last_valid_mono = mono
        return events

    def on_tick(self, mono: float, at: datetime) -> list[TimeEvent]:
        if self.lost or mono - self._since < self.stale_s:
            return []
        self.lost = True
        self.lost_count += 1
        return [TimeEvent("gps_lost", at, {"stale_ms": round((mono - self._since) * 1000)})]

    def age_s(self, mono: float) -> float | None:
        return None if self.last_valid_mono is None else mono - self.last_valid_mono
