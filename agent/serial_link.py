"""A serial device kept open by a daemon thread: open, talk, and on failure log once and retry with backoff.

The life cycle shared by the GNSS receiver (``agent.gps``) and the OBD-II adapter (``agent.vehicle``): pyserial is
used only by these. A missing or vanished device is logged once per outage (WARNING), then retried with capped
exponential backoff; reconnects are logged at INFO. Never a traceback for a device problem.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import serial

RETRY_INITIAL_S = 0.5  # first wait after the port fails to open or vanishes
RETRY_MAX_S = 30.0  # backoff cap: a device plugged back in is picked up within this


@dataclass
class LinkStats:
    connects: int = 0
    failures: int = 0  # failed opens and lost connections


class SerialLink:
    """Subclasses name the device (``what``) and implement :meth:`_session`, which talks to an open port until
    it fails (raising one of :attr:`lost_errors`) or ``self._stop`` is set."""

    what = "serial device"
    lost_errors: tuple[type[BaseException], ...] = (serial.SerialException, OSError)

    def __init__(self, port: str, baudrate: int, read_timeout_s: float, *, retry_initial_s: float = RETRY_INITIAL_S,
                 retry_max_s: float = RETRY_MAX_S, log: logging.Logger | None = None,
                 stats: LinkStats | None = None) -> None:  # fmt: skip
        self.port = port
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.log = log or logging.getLogger(__name__)
        self.connected = threading.Event()
        self.stats = stats or LinkStats()
        self.state = "starting"  # then connected, unavailable (cannot open), lost (failed while open)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.what} {self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _session(self, ser: serial.Serial) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        self._delay, self._outage_logged = self.retry_initial_s, False
        while not self._stop.is_set():
            try:
                # serial_for_url: a device path, a pty, or pyserial URLs (loop://, spy://PATH, socket://HOST:PORT)
                ser = serial.serial_for_url(self.port, self.baudrate, timeout=self.read_timeout_s)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._failed("unavailable", exc)
                continue
            try:
                self._session(ser)
            except self.lost_errors as exc:
                self._failed("lost", exc)
            finally:
                self.connected.clear()
                ser.close()

    def _failed(self, how: str, exc: BaseException) -> None:
        self.stats.failures += 1
        self.state = how
        if not self._outage_logged:
            self.log.warning("%s %s %s (%s); retrying in the background", self.what, self.port, how, exc)
            self._outage_logged = True
        else:
            self.log.debug("%s %s still %s: %s", self.what, self.port, how, exc)
        self._stop.wait(self._delay)
        self._delay = min(self._delay * 2, self.retry_max_s)

    def _ready(self, state: str = "ready") -> None:
        """The device answers: say so, and start the next outage's log line and backoff afresh."""
        self.stats.connects += 1
        self.log.info("%s %s %s", self.what, self.port, state)
        self._delay, self._outage_logged = self.retry_initial_s, False
        self.state = "connected"
        self.connected.set()
