"""GPS receiver on a serial port: a daemon thread feeding ``NmeaDecoder`` and handing each ``GpsFix`` on.

The only pyserial user for GPS. A port that is missing or vanishes is logged once (WARNING) per outage, then
retried with capped exponential backoff (``RETRY_INITIAL_S`` doubling up to ``RETRY_MAX_S``); reconnects are
logged at INFO, refused sentences counted in ``stats`` and logged as hex at DEBUG. Never a traceback for a
device problem; a bug in ``on_fix`` is logged with its traceback and reading goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import serial

from firmware_protocols.nmea import GpsFix, NmeaDecoder, NmeaRejected

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.5  # first wait after the port fails to open or vanishes
RETRY_MAX_S = 30.0  # backoff cap: a receiver plugged back in is picked up within this
READ_TIMEOUT_S = 0.2  # serial read timeout: how fast stop() is noticed
READ_SIZE = 4096  # bytes per read at most (a 9600-baud receiver sends ~960 bytes/s)


@dataclass
class GpsReaderStats:
    fixes: int = 0
    rejected: int = 0
    bytes_read: int = 0
    connects: int = 0
    failures: int = 0  # failed opens and lost connections


class SerialGpsReader:
    """Reads NMEA from ``port`` at ``baudrate`` and calls ``on_fix`` (from the reader thread) for each fix."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        on_fix: Callable[[GpsFix], None],
        *,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.on_fix = on_fix
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stats = GpsReaderStats()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"gps {self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        delay = self.retry_initial_s
        outage_logged = False
        while not self._stop.is_set():
            try:
                ser = serial.Serial(self.port, self.baudrate, timeout=READ_TIMEOUT_S)
            except (serial.SerialException, OSError, ValueError) as exc:
                self.stats.failures += 1
                if not outage_logged:
                    log.warning("GPS receiver %s unavailable (%s); retrying in the background", self.port, exc)
                    outage_logged = True
                else:
                    log.debug("GPS receiver %s still unavailable: %s", self.port, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.stats.connects += 1
            log.info("GPS receiver %s connected at %d baud", self.port, self.baudrate)
            outage_logged = False
            delay = self.retry_initial_s
            self.connected.set()
            try:
                self._read(ser)
            except (serial.SerialException, OSError) as exc:
                self.stats.failures += 1
                log.warning("GPS receiver %s lost (%s); retrying in the background", self.port, exc)
                outage_logged = True
                self._stop.wait(delay)
            finally:
                self.connected.clear()
                ser.close()

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
