"""GPS receiver on a serial port: a daemon thread feeding ``NmeaDecoder`` and handing each ``GpsFix`` on.

The only pyserial user for GPS. A port that is missing or vanishes is logged once (WARNING) per outage, then
retried with capped exponential backoff (``RETRY_INITIAL_S`` doubling up to ``RETRY_MAX_S``); reconnects are
logged at INFO, refused sentences counted in ``stats`` and logged as hex at DEBUG. Never a traceback for a
device problem; a bug in ``on_fix`` is logged with its traceback and reading goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import serial

from agent.serial_link import RETRY_INITIAL_S, RETRY_MAX_S, LinkStats, SerialLink
from firmware_protocols.nmea import GpsFix, NmeaDecoder, NmeaRejected

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2  # serial read timeout: how fast stop() is noticed
READ_SIZE = 4096  # bytes per read at most (a 9600-baud receiver sends ~960 bytes/s)


@dataclass
class GpsReaderStats(LinkStats):
    fixes: int = 0
    rejected: int = 0
    bytes_read: int = 0


class SerialGpsReader(SerialLink):
    """Reads NMEA from ``port`` at ``baudrate`` and calls ``on_fix`` (from the reader thread) for each fix."""

    what = "GPS receiver"
    stats: GpsReaderStats

    def __init__(self, port: str, baudrate: int, on_fix: Callable[[GpsFix], None], *,
                 retry_initial_s: float = RETRY_INITIAL_S, retry_max_s: float = RETRY_MAX_S) -> None:  # fmt: skip
        super().__init__(port, baudrate, READ_TIMEOUT_S, retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
                         log=log, stats=GpsReaderStats())  # fmt: skip
        self.on_fix = on_fix

    def _session(self, ser: serial.Serial) -> None:
        self._ready(f"connected at {self.baudrate} baud")
        self._read(ser)

    def _read(self, ser: serial.Serial) -> None:
        decoder = NmeaDecoder()  # a fresh one per connection: a half line from before is not glued on
        while not self._stop.is_set():
            data = ser.read(min(READ_SIZE, max(1, ser.in_waiting)))
            if not data:
                continue
            self.stats.bytes_read += len(data)
            decoder.receive_data(data)
            while (event := decoder.next_event()) is not None:
                if isinstance(event, NmeaRejected):
                    self.stats.rejected += 1
                    log.debug("GPS %s refused %s: %s", self.port, event.reason, event.line.hex())
                    continue
                self.stats.fixes += 1
                try:
                    self.on_fix(event)
                except Exception:
                    log.exception("GPS fix consumer failed; reading goes on")
