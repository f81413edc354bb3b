"""GPS receiver on a serial port: a daemon thread feeding ``NmeaDecoder`` and handing each ``GpsFix`` on.

The only pyserial user for GPS; the port is opened with ``serial_for_url``, so a device path, a pty, ``loop://``
and ``spy://PATH`` all work. A port that is missing or vanishes, or that stays open but sends nothing for
``SILENCE_S`` (a receiver that lost power on a USB adapter still plugged in), is logged once (WARNING) per outage,
counted, closed and retried with capped exponential backoff (``RETRY_INITIAL_S`` doubling up to ``RETRY_MAX_S``);
reconnects are logged at INFO. Refused sentences are counted in ``stats`` and logged as hex at DEBUG. No valid fix
for ``stale_s`` seconds is a lost GPS (``stats.gps_lost``). :meth:`SerialGpsReader.status` is what the coach
screen shows. Never a traceback for a device problem; a bug in ``on_fix`` is logged with its traceback and reading
goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import serial

from agent.gnss_time import GPS_STALE_S, FixWatch
from agent.serial_link import RETRY_INITIAL_S, RETRY_MAX_S, LinkStats, SerialLink
from firmware_protocols.nmea import GpsFix, NmeaDecoder, NmeaRejected

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2  # serial read timeout: how fast stop() is noticed
READ_SIZE = 4096  # bytes per read at most (a 9600-baud receiver sends ~960 bytes/s)
#: An open port that sends no byte for this long is treated as gone: closed and reopened (receivers talk every
#: second, even without a fix).
SILENCE_S = 5.0


class DeviceSilent(serial.SerialException):  # type: ignore[misc]  # pyserial has no type hints
    """The port is open but the receiver has sent nothing for ``SILENCE_S``."""


@dataclass
class GpsReaderStats(LinkStats):
    fixes: int = 0
    valid_fixes: int = 0
    rejected: int = 0
    bytes_read: int = 0
    silences: int = 0  # times the open port went silent for SILENCE_S
    gps_lost: int = 0  # times no valid fix came for stale_s
    last_reject: str | None = None


class SerialGpsReader(SerialLink):
    """Reads NMEA from ``port`` at ``baudrate`` and calls ``on_fix`` (from the reader thread) for each fix."""

    what = "GPS receiver"
    stats: GpsReaderStats

    def __init__(self, port: str, baudrate: int, on_fix: Callable[[GpsFix], None], *,
                 retry_initial_s: float = RETRY_INITIAL_S, retry_max_s: float = RETRY_MAX_S,
                 silence_s: float = SILENCE_S, stale_s: float = GPS_STALE_S,
                 decoder_factory: Callable[[], NmeaDecoder] = NmeaDecoder) -> None:  # fmt: skip
        super().__init__(port, baudrate, READ_TIMEOUT_S, retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
                         log=log, stats=GpsReaderStats())  # fmt: skip
        self.on_fix = on_fix
        self.silence_s = silence_s
        self.decoder_factory = decoder_factory
        self.watch = FixWatch(time.monotonic(), stale_s=stale_s)
        self.last_fix: GpsFix | None = None

    def status(self) -> dict[str, Any]:
        """Link state and counters for the coach screen (plain JSON values)."""
        self.check_stale()
        age = self.watch.age_s(time.monotonic())
        return {"port": self.port, "baud": self.baudrate, "state": self.state, "fix_lost": self.watch.lost,
                "fix_age_s": None if age is None else round(age, 1), **asdict(self.stats)}  # fmt: skip

    def check_stale(self) -> bool:
        """Is the GPS lost (no valid fix for ``stale_s``)? Counted and logged once per loss."""
        if self.watch.on_tick(time.monotonic(), datetime.now(UTC)):
            self.stats.gps_lost += 1
            log.warning("GPS %s: no valid fix for %.0f s", self.port, self.watch.stale_s)
        return self.watch.lost

    def _session(self, ser: serial.Serial) -> None:
        self._ready(f"connected at {self.baudrate} baud")
        self._read(ser)

    def _read(self, ser: serial.Serial) -> None:
        decoder = self.decoder_factory()  # a fresh one per connection: a half line from before is not glued on
        heard = time.monotonic()
        while not self._stop.is_set():
            data = ser.read(min(READ_SIZE, max(1, ser.in_waiting)))
            if not data:
                self.check_stale()
                if time.monotonic() - heard >= self.silence_s:
                    self.stats.silences += 1
                    raise DeviceSilent(f"no data for {self.silence_s:.0f} s")
                continue
            heard = time.monotonic()
            self.stats.bytes_read += len(data)
            decoder.receive_data(data)
            while (event := decoder.next_event()) is not None:
                if isinstance(event, NmeaRejected):
                    self.stats.rejected += 1
                    self.stats.last_reject = event.reason
                    log.debug("GPS %s refused %s: %s", self.port, event.reason, event.line.hex())
                    continue
                self.stats.fixes += 1
                self.last_fix = event
                self.stats.valid_fixes += event.valid
                for ev in self.watch.on_fix(event, time.monotonic(), datetime.now(UTC)):
                    if ev.name == "gps_back":
                        log.info("GPS %s: valid fix again", self.port)
                    else:
                        self.stats.gps_lost += 1
                        log.warning("GPS %s: no valid fix for %.0f s", self.port, self.watch.stale_s)
                try:
                    self.on_fix(event)
                except Exception:
                    log.exception("GPS fix consumer failed; reading goes on")
