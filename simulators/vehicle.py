"""Simulated ELM327 OBD-II adapter on a pty, answering from a ``signals()`` callback.

Answers what the agent asks (``ATZ``, ``ATE0/1``, ``ATL0/1``, ``ATS0/1``, ``ATSP0``, ``ATH0/1``, ``ATRV``; PIDs
``0100``, ``010C`` rpm, ``010D`` speed; ``0902`` the VIN) and ``NO DATA`` for other PIDs, ``?`` for other commands.
With the ignition off every PID gets ``UNABLE TO CONNECT``. Echo is on after reset, as on a real ELM327.
``driver_signals`` drives it from the same ``RouteDriver`` and clock as the GPS simulator.

The VIN (``vin``, settable while running: a box moved into another car) is answered as a car on ``protocol``
answers it: ``can`` (ISO 15765, a multi-frame message: numbered lines with headers off, ISO-TP frames from ``7E8``
with ``ATH1``) or ``iso9141`` (five ``49 02 NN`` messages of four bytes; with ``ATH1`` the ``48 6B 10`` header and a
checksum). ``vin=None``: the car gives no VIN (``NO DATA``). Any string is sent as it is (a garbled VIN for tests).
``fleet_vin(n)`` makes the distinct, well-formed VINs (valid check digit) of the simulated fleet.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable

from simulators.clock import SimClock
from simulators.gps import RouteDriver
from simulators.pty_device import PtyDevice

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64  # an ELM327 command is a few characters; longer input is discarded as noise
IDLE_RPM = 800
#: (upper speed km/h, rpm per km/h) for gears 1..5: rpm rises with speed and drops at each shift.
GEARS = ((15.0, 110.0), (30.0, 65.0), (45.0, 45.0), (65.0, 34.0), (1e9, 27.0))

Signals = tuple[bool, int, float]  # ignition, rpm, speed km/h

#: ISO 3779 transliteration of VIN characters and the weights of the check digit (position 9).
_VIN_VALUES = {**{str(d): d for d in range(10)}, **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
               **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
               **dict(zip("STUVWXYZ", range(2, 10), strict=True))}  # fmt: skip
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
#: The response id of the engine ECU (11-bit CAN) and the legacy header (priority 48, to 6B, from ECU 10).
CAN_ECU_ID = "7E8"
LEGACY_HEADER = (0x48, 0x6B, 0x10)


def vin_check_digit(vin: str) -> str:
    """The check digit (position 9) of a 17-character VIN: weighted sum mod 11, 10 written ``X``."""
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    return "X" if total % 11 == 10 else str(total % 11)


def fleet_vin(n: int) -> str:
    """The VIN of simulated car ``n``: a Chinese-made car (WMI ``LFV``), model year 2022 (``N``), serial ``n``."""
    draft = f"LFVBA24K0NR{n:06d}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]


def engine_rpm(speed_kmh: float) -> int:
    """Idle when stopped; otherwise the rpm of the gear a driver would use at that speed."""
    for top, per_kmh in GEARS:
        if speed_kmh <= top:
            return max(IDLE_RPM, round(speed_kmh * per_kmh))
    return IDLE_RPM  # pragma: no cover - the last gear has no top


def driver_signals(driver: RouteDriver, clock: SimClock) -> Callable[[], Signals]:
    """A ``signals()`` callback following ``driver`` on ``clock`` (ignition on, engine idling at stops)."""

    def signals() -> Signals:
        t = (clock.now() - clock.start).total_seconds()
        kmh = driver.state_at(t).speed_mps * 3.6
        return True, engine_rpm(kmh), kmh

    return signals


class Elm327Emulator(PtyDevice):
    """An ELM327 behind a pty; ``path`` is what the agent opens."""

    thread_name = "elm327-sim"

    def __init__(self, signals: Callable[[], Signals], vin: str | None = None, protocol: str = "can") -> None:
        if protocol not in ("can", "iso9141"):
            raise ValueError(f"protocol must be can or iso9141, not {protocol!r}")
        self.signals = signals
        self.vin = vin
        self.protocol = protocol
        self.commands: list[str] = []  # every command received, for tests
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self.echo, self.linefeeds, self.spaces, self.headers = True, True, True, False
        self._last = ""

    def _run(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._master, 1024)
            except OSError:
                continue  # no slave open yet / reader went away: wait for the next one
            for byte in data:
                if byte == 0x0D:
                    self._answer(bytes(buf))
                    buf.clear()
                elif byte not in (0x0A, 0x00) and len(buf) < MAX_COMMAND_BYTES:
                    buf.append(byte)

    def _answer(self, raw: bytes) -> None:
        text = raw.decode("ascii", "replace")
        command = text.replace(" ", "").upper() or self._last
        self.commands.append(command)
        eol = "\r\n" if self.linefeeds else "\r"
        lines = self.reply(command)
        self._last = command
        out = (text + eol if self.echo else "") + "".join(line + eol for line in lines) + eol + ">"
        try:
            os.write(self._master, out.encode("ascii"))
        except OSError as exc:
            log.debug("elm327 emulator write failed: %s", exc)

    def reply(self, command: str) -> list[str]:
        """The reply lines to one command (prompt and line ends added by the caller)."""
        if command.startswith("AT"):
            at = command[2:]
            if at in ("Z", "WS"):
                self._reset()
                return ["", "ELM327 v1.5"]
            if at == "I":
                return ["ELM327 v1.5"]
            if at == "RV":
                return ["14.2V" if self.signals()[0] else "12.4V"]
            flags = {"E": "echo", "L": "linefeeds", "S": "spaces", "H": "headers"}
            if len(at) == 2 and at[0] in flags and at[1] in "01":
                setattr(self, flags[at[0]], at[1] == "1")
                return ["OK"]
            if at.startswith("SP") or at.startswith("AT") or at in ("D", "M0", "M1"):
                return ["OK"]
            return ["?"]
        ignition, rpm, speed = self.signals()
        if not all(c in "0123456789ABCDEF" for c in command) or len(command) < 4:
            return ["?"]
        if not ignition:
            return ["SEARCHING...", "UNABLE TO CONNECT"]
        if command == "0902":
            return self._vin_reply()
        if command[:2] != "01":
            return ["NO DATA"]
        pid = command[2:4]
        if pid == "00":
            data = [0x00, 0x18, 0x00, 0x00]  # PIDs 0C and 0D supported
        elif pid == "0C":
            value = max(0, min(0xFFFF, round(rpm * 4)))
            data = [value >> 8, value & 0xFF]
        elif pid == "0D":
            data = [max(0, min(255, round(speed)))]
        else:
            return ["NO DATA"]
        sep = " " if self.spaces else ""
        return [sep.join(f"{b:02X}" for b in [0x41, int(pid, 16), *data])]

    def _vin_reply(self) -> list[str]:
        """Mode 09 PID 02 as the car's protocol and the adapter's header and space settings show it."""
        if self.vin is None:
            return ["NO DATA"]
        sep = " " if self.spaces else ""

        def hexes(data: bytes | list[int]) -> str:
            return sep.join(f"{b:02X}" for b in data)

        text = self.vin.encode("ascii", "replace")
        if self.protocol == "iso9141":  # five messages of four bytes, the VIN right-aligned (NUL padded)
            padded = text.rjust(20, b"\x00")
            lines = []
            for n in range(len(padded) // 4):
                item = [0x49, 0x02, n + 1, *padded[4 * n : 4 * n + 4]]
                if self.headers:
                    framed = [*LEGACY_HEADER, *item]
                    lines.append(hexes([*framed, sum(framed) & 0xFF]))
                else:
                    lines.append(hexes(item))
            return lines
        message = bytes([0x49, 0x02, 0x01]) + text
        if self.headers:  # ISO-TP: a first frame (12-bit length), then consecutive frames numbered from 1
            frames = [bytes([0x10 | len(message) >> 8, len(message) & 0xFF]) + message[:6]]
            for n, i in enumerate(range(6, len(message), 7)):
                frames.append(bytes([0x20 | (n + 1) & 0x0F]) + message[i : i + 7].ljust(7, b"\x00"))
            return [f"{CAN_ECU_ID}{sep}{hexes(f)}" for f in frames]
        # headers off: the ELM327's byte count line and numbered lines (0: six bytes, then seven a line)
        lines = [f"{len(message):03X}", f"0:{sep}{hexes(message[:6])}"]
        for n, i in enumerate(range(6, len(message), 7)):
            lines.append(f"{(n + 1) & 0x0F:X}:{sep}{hexes(message[i : i + 7])}")
        return lines
