"""Vehicle signals (ignition, engine rpm, speed): the ``VehiclePort`` protocol and its backends.

- ``NoVehicleSignal``: a car without an OBD link; ``read()`` is always None ("no vehicle signal").
- ``Elm327Vehicle``: an ELM327 OBD-II adapter on a serial port (the only pyserial user for it). A daemon thread
  initialises the adapter (``ATZ``, ``ATE0``, ``ATL0``, ``ATS0``, ``ATSP0``) and polls ``010C`` (rpm) and
  ``010D`` (speed); ``read()`` returns the latest reading while it is fresher than ``stale_after_s``, else None.
  An ECU that does not answer (``NO DATA``, ``UNABLE TO CONNECT`` ...) means ignition off. A missing or vanished
  port is logged once per outage and retried with capped exponential backoff. The car's VIN (``0902``, mode 09
  PID 02) is read once per connection, at the first poll the ECU answers, and again after each ignition cycle (a box
  moved into another car without the link dropping); it rides in every reading as ``VehicleSignals.vin``. A car that
  answers ``NO DATA`` (or a negative response) has no VIN (None); a reply that is not a well-formed VIN is logged and
  the VIN is unknown (None): it is never guessed or repaired.

The ELM327 text parsing (``parse_pid_reply``, ``decode_rpm``, ``decode_speed_kmh``, ``parse_vin_reply``) is pure and
tested alone.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import serial

from agent.serial_link import RETRY_INITIAL_S, RETRY_MAX_S, SerialLink
from firmware_protocols.identifiers import is_vin

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1  # serial read timeout inside one command's deadline
COMMAND_TIMEOUT_S = 3.0  # an ELM327 answers within ~1 s (ATZ, protocol search); longer means it is gone
POLL_INTERVAL_S = 0.5  # between rpm+speed polls
STALE_AFTER_S = 3.0  # a reading older than this is not a reading
MAX_REPLY_BYTES = 1024  # an ELM327 reply to one command is a few lines; more is a babbling device
PROMPT = b">"
NO_ANSWER = ("NO DATA", "UNABLE TO CONNECT", "STOPPED", "CAN ERROR", "BUS INIT", "ERROR", "?")
INIT_COMMANDS = ("ATZ", "ATE0", "ATL0", "ATS0", "ATSP0")
VIN_COMMAND = "0902"  # mode 09 (vehicle information), PID 02: the VIN, a multi-frame answer


@dataclass(frozen=True)
class VehicleSignals:
    ignition: bool
    rpm: float
    speed_kmh: float | None  # None: the car does not report its speed (PID 0D unanswered)
    at: datetime  # when it was read (aware UTC)
    vin: str | None = None  # the car's VIN as it reported it (well-formed), None when it gives none


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


class GarbledVin(ValueError):
    """The car answered ``0902`` with data that is not a VIN (the VIN stays unknown; the link is fine)."""


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


#: A CAN frame line after the ELM327's formatting, spaces removed: ``N:`` line number (headers off, multi-frame).
_LINE_NUMBER = re.compile(r"([0-9A-F]):([0-9A-F]*)")
#: The byte count line before the numbered lines of one multi-frame message (``014`` = 20 bytes).
_BYTE_COUNT = re.compile(r"[0-9A-F]{3}")
#: Headers shown with ``ATH1``: CAN 11-bit (``7E8``: an odd number of digits on the line), CAN 29-bit
#: (``18DAF110``), legacy ISO 9141/KWP/J1850 (``486B10``: priority, target, source; the line ends with a checksum).
_CAN11 = re.compile(r"(7E[8-F])((?:[0-9A-F]{2})+)")
_CAN29 = re.compile(r"(18DAF1[0-9A-F]{2})((?:[0-9A-F]{2})+)")
_LEGACY_HEADER = re.compile(r"(?:48|41|68)6B[0-9A-F]{2}((?:[0-9A-F]{2})+)")
_HEX = re.compile(r"[0-9A-F]+")  # a data line ("NO DATA", "CAN ERROR", "STOPPED", "?" ... all have other letters)
_VIN_ANSWER = bytes([0x49, 0x02])  # the positive answer to mode 09 PID 02
_NEGATIVE = bytes([0x7F, 0x09])  # ISO 15765 negative response to mode 09


def parse_vin_reply(reply: str, command: str = VIN_COMMAND) -> str | None:
    """The VIN in an ELM327's reply to ``0902``, or None when the car gives none (``NO DATA``, ``UNABLE TO
    CONNECT``, a negative response ``7F 09 ..``). Raises :class:`GarbledVin` when data came back that is not a VIN.

    Reads the common reply formats, with or without spaces, echo and ``SEARCHING...``:

    - ISO 15765 (CAN), headers off: a byte count line and numbered lines, ``014`` / ``0: 49 02 01 31 44 34`` /
      ``1: 47 50 30 30 52 35 35`` / ``2: 42 31 32 33 34 35 36``;
    - CAN, headers on (``ATH1``) or raw frames (``ATCAF0``): ISO-TP frames ``7E8 10 14 49 02 01 31 44 34`` /
      ``7E8 21 ...`` / ``7E8 22 ...`` (11- or 29-bit ids; the first ECU that answers with a VIN is taken);
    - legacy ISO 9141 / KWP2000 / J1850: five messages ``49 02 01 00 00 00 31`` ... ``49 02 05 33 34 35 36``, each
      with a sequence number and four bytes (with headers: ``48 6B 10 49 02 01 00 00 00 31 xx``, xx a checksum).
    """
    lines = []
    for raw_line in reply.replace("\n", "\r").split("\r"):
        line = raw_line.replace(" ", "").strip().upper().lstrip(">")
        if line and line != command and not line.startswith(("SEARCHING", "BUSINIT")):
            lines.append(line)
    data = [ln for ln in lines if _HEX.fullmatch(ln) or _LINE_NUMBER.fullmatch(ln)]
    if not data:
        return None  # NO DATA, UNABLE TO CONNECT, CAN ERROR, ?: the car gives no VIN
    messages = _messages(data)
    for message in messages:
        if message.startswith(_VIN_ANSWER):
            return _vin_of(message[2:])
    if any(message.startswith(_NEGATIVE) for message in messages):
        return None  # "service not supported" and the like, from every ECU that answered
    raise GarbledVin(f"no 49 02 answer in {reply[:120]!r}")


def _hex(text: str) -> bytes:
    if len(text) % 2:
        raise GarbledVin(f"odd number of hex digits in {text!r}")
    return bytes.fromhex(text)


def _messages(lines: list[str]) -> list[bytes]:
    """The messages of a reply, each as the bytes of an OBD answer (``49 02 ...``), in order of appearance."""
    if any(_LINE_NUMBER.fullmatch(ln) for ln in lines):
        return _numbered(lines)
    for header in (_CAN11, _CAN29):
        frames = [header.fullmatch(ln) for ln in lines]
        if all(frames):
            return _iso_tp([(m[1], _hex(m[2])) for m in frames if m])
    if lines[0][:1] == "1" and lines[0][4:8] == "4902":
        return _iso_tp([("", _hex(ln)) for ln in lines])  # raw frames without a header (ATCAF0)
    return _legacy(lines)


def _numbered(lines: list[str]) -> list[bytes]:
    """ELM327-formatted CAN multi-frame messages: ``[count]`` then ``0:`` ``1:`` ... (``F:`` wraps to ``0:``)."""
    messages: list[tuple[int | None, bytearray]] = []
    for ln in lines:
        m = _LINE_NUMBER.fullmatch(ln)
        if m is None:
            if _BYTE_COUNT.fullmatch(ln):
                messages.append((int(ln, 16), bytearray()))
            else:  # a single-frame answer of another ECU between messages
                messages.append((None, bytearray(_hex(ln))))
            continue
        if not messages or (m[1] == "0" and messages[-1][1]):
            messages.append((None, bytearray()))  # a new message without a count line
        messages[-1][1].extend(_hex(m[2]))
    return [bytes(body[:count] if count is not None else body) for count, body in messages]


def _iso_tp(frames: list[tuple[str, bytes]]) -> list[bytes]:
    """Reassemble ISO 15765-2 frames (single, first, consecutive) per sender id."""
    done: list[bytes] = []
    partial: dict[str, tuple[int, int, bytearray]] = {}  # sender → (length, next sequence number, bytes so far)
    for sender, frame in frames:
        if not frame:
            continue
        kind, low = frame[0] >> 4, frame[0] & 0x0F
        if kind == 0:  # single frame
            done.append(frame[1 : 1 + low])
        elif kind == 1 and len(frame) >= 2:  # first frame: 12-bit length
            partial[sender] = ((low << 8) | frame[1], 1, bytearray(frame[2:]))
        elif kind == 2 and sender in partial:  # consecutive frame
            length, seq, body = partial[sender]
            if low != seq:
                raise GarbledVin(f"consecutive frame {low} where {seq} was due")
            body.extend(frame[1:])
            if len(body) >= length:
                done.append(bytes(body[:length]))
                del partial[sender]
            else:
                partial[sender] = (length, (seq + 1) & 0x0F, body)
    return done


def _legacy(lines: list[str]) -> list[bytes]:
    """ISO 9141 / KWP2000 / J1850: one ``49 02 NN b1 b2 b3 b4`` message per line (after an optional 3-byte header
    and before its checksum), put together in the order of ``NN``."""
    parts: dict[int, bytes] = {}
    for ln in lines:
        header = _LEGACY_HEADER.fullmatch(ln)
        body = _hex(header[1])[:-1] if header else _hex(ln)
        if body.startswith(_NEGATIVE):
            return [body]
        if len(body) >= 7 and body.startswith(_VIN_ANSWER):
            parts.setdefault(body[2], body[3:7])
    if not parts:
        return []
    return [_VIN_ANSWER + b"".join(parts[n] for n in sorted(parts))]


def _vin_of(data: bytes) -> str:
    """The 17 characters of a VIN from the bytes after ``49 02`` (a leading data-item count ``01`` and NUL padding
    dropped)."""
    if data[:1] == b"\x01":  # CAN: the number of data items (never a VIN character)
        data = data[1:]
    data = data.strip(b"\x00")
    if not all(0x20 < b < 0x7F for b in data):
        raise GarbledVin(f"non-printable bytes in the VIN answer: {data.hex(' ')}")
    text = data.decode("ascii")
    if not is_vin(text):
        raise GarbledVin(f"{text!r} is not a VIN (17 characters 0-9A-Z without I, O, Q)")
    return text


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
        self.vin: str | None = None  # the connected car's VIN, once read (None: unknown or none)
        self._vin_due = True  # read at the first poll the ECU answers, and again after each ignition cycle

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
        if not ignition:
            self._vin_due = True  # the car may be another one when the ignition comes on again
        elif self._vin_due:
            self._vin_due = False
            self.vin = self._read_vin(ser)
        # A car that does not answer PID 0D gives no speed: None, never an invented 0 (which reads as "wheels still").
        return VehicleSignals(ignition, rpm or 0.0, speed, datetime.now(UTC), self.vin)

    def _read_vin(self, ser: serial.Serial) -> str | None:
        reply = self._command(ser, VIN_COMMAND)
        try:
            vin = parse_vin_reply(reply)
        except GarbledVin as exc:
            log.warning("%s %s: the car's VIN answer is not a VIN, VIN unknown (%s)", self.what, self.port, exc)
            return None
        if vin is None:
            log.info("%s %s: the car gives no VIN (%s)", self.what, self.port, " ".join(reply.split())[:60])
        elif vin != self.vin:
            log.info("%s %s: car VIN %s", self.what, self.port, vin)
        return vin

    def _session(self, ser: serial.Serial) -> None:
        self.vin, self._vin_due = None, True  # a new connection may be another car
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
