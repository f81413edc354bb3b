"""Vehicle signals (ignition, engine rpm, speed): the ``VehiclePort`` protocol and its backends.

- ``NoVehicleSignal``: a car without an OBD link; ``read()`` is always None ("no vehicle signal").
- ``Elm327Vehicle``: an ELM327 OBD-II adapter on a serial port (the only pyserial user for it). A daemon thread
  initialises the adapter (``ATZ``, ``ATE0``, ``ATL0``, ``ATS0``, ``ATSP0``) and polls ``010C`` (rpm) and
  ``010D`` (speed); ``read()`` returns the latest reading while it is fresher than ``stale_after_s``, else None.
  An ECU that does not answer (``NO DATA``, ``UNABLE TO CONNECT`` ...) means ignition off. A missing or vanished
  port is logged once per outage and retried with capped exponential backoff.

The ELM327 text parsing (``parse_pid_reply``, ``decode_rpm``, ``decode_speed_kmh``) is pure and tested alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import serial

from agent.serial_link import RETRY_INITIAL_S, RETRY_MAX_S, SerialLink

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1  # serial read timeout inside one command's deadline
COMMAND_TIMEOUT_S = 3.0  # an ELM327 answers within ~1 s (ATZ, protocol search); longer means it is gone
POLL_INTERVAL_S = 0.5  # between rpm+speed polls
STALE_AFTER_S = 3.0  # a reading older than this is not a reading
MAX_REPLY_BYTES = 1024  # an ELM327 reply to one command is a few lines; more is a babbling device
PROMPT = b">"
NO_ANSWER = ("NO DATA", "UNABLE TO CONNECT", "STOPPED", "CAN ERROR", "BUS INIT", "ERROR", "?")
INIT_COMMANDS = ("ATZ", "ATE0", "ATL0", "ATS0", "ATSP0")


@dataclass(frozen=True)
class VehicleSignals:
    ignition: bool
    rpm: float
    speed_kmh: float
    at: datetime  # when it was read (aware UTC)


class VehiclePort(Protocol):
    def read(self) -> VehicleSignals | None:
        """The latest fresh reading, or None when there is none."""
        ...


class NoVehicleSignal:
    """No vehicle signal: a car without an OBD adapter. Always None."""

    def read(self) -> VehicleSignals | None:
        return None


class Elm327Error(Exception):
    """The adapter did not answer as an ELM327 does (timeout, no prompt, overlong reply)."""


# --- pure ELM327 text handling -------------------------------------------------------------------------------


def parse_pid_reply(reply: str, mode: int, pid: int) -> bytes | None:
    """Data bytes of the first ``41 PID ...`` line of a reply (echo, ``SEARCHING...`` and spaces tolerated);
    None when the ECU did not answer."""
    want = f"{mode + 0x40:02X}{pid:02X}"
    for raw_line in reply.replace("\n", "\r").split("\r"):
        line = raw_line.replace(" ", "").strip().upper()
        if line.startswith(want):
            try:
                return bytes.fromhex(line[len(want) :])
            except ValueError:
                return None
    return None


def decode_rpm(data: bytes) -> float | None:
    """PID 0x0C: (256 A + B) / 4 rpm."""
    return (256 * data[0] + data[1]) / 4 if len(data) >= 2 else None


def decode_speed_kmh(data: bytes) -> float | None:
    """PID 0x0D: A km/h."""
    return float(data[0]) if data else None


class Elm327Vehicle(SerialLink):
    """An ELM327 adapter on ``port``; ``start()`` the poller, ``read()`` the latest fresh signals."""

    what = "OBD adapter"
    lost_errors = (serial.SerialException, OSError, Elm327Error)

    def __init__(
        self,
        port: str,
        baudrate: int = 38400,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        stale_after_s: float = STALE_AFTER_S,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        monotonic: Callable[[], float] = time.monotonic,
        on_signals: Callable[[VehicleSignals], None] | None = None,
    ) -> None:
        super().__init__(port, baudrate, READ_TIMEOUT_S, retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
                         log=log)  # fmt: skip
        self.poll_interval_s = poll_interval_s
        self.stale_after_s = stale_after_s
        self.monotonic = monotonic
        self.on_signals = on_signals
        self._lock = threading.Lock()
        self._latest: tuple[float, VehicleSignals] | None = None

    def read(self) -> VehicleSignals | None:
        with self._lock:
            latest = self._latest
        if latest is None or self.monotonic() - latest[0] > self.stale_after_s:
            return None
        return latest[1]

    # --- the dialogue ---

    @staticmethod
    def _command(ser: serial.Serial, command: str) -> str:
        """Send one command, return the reply up to the ``>`` prompt (without it)."""
        ser.reset_input_buffer()
        ser.write(command.encode("ascii") + b"\r")
        reply = bytearray()
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not reply.endswith(PROMPT):
            if time.monotonic() > deadline:
                raise Elm327Error(f"no prompt after {command!r}")
            if len(reply) > MAX_REPLY_BYTES:
                raise Elm327Error(f"reply to {command!r} over {MAX_REPLY_BYTES} bytes")
            reply += ser.read(max(1, ser.in_waiting))
        return reply[:-1].decode("ascii", "replace")

    def _poll_once(self, ser: serial.Serial) -> VehicleSignals:
        rpm_data = parse_pid_reply(self._command(ser, "010C"), 0x01, 0x0C)
        speed_data = parse_pid_reply(self._command(ser, "010D"), 0x01, 0x0D)
        rpm = decode_rpm(rpm_data) if rpm_data is not None else None
        speed = decode_speed_kmh(speed_data) if speed_data is not None else None
        ignition = rpm is not None
        return VehicleSignals(ignition, rpm or 0.0, speed or 0.0, datetime.now(UTC))

    def _session(self, ser: serial.Serial) -> None:
        for command in INIT_COMMANDS:
            self._command(ser, command)
        self._ready()
        while not self._stop.is_set():
            signals = self._poll_once(ser)
            with self._lock:
                self._latest = (self.monotonic(), signals)
            if self.on_signals is not None:
                try:
                    self.on_signals(signals)
                except Exception:
                    log.exception("vehicle signal consumer failed; polling goes on")
            self._stop.wait(self.poll_interval_s)
