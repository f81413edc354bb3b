"""Simulated ELM327 OBD-II adapter on a pty, answering from a ``signals()`` callback.

Answers what the agent asks (``ATZ``, ``ATE0/1``, ``ATL0/1``, ``ATS0/1``, ``ATSP0``, ``ATH0/1``, ``ATRV``; PIDs
``0100``, ``010C`` rpm, ``010D`` speed) and ``NO DATA`` for other PIDs, ``?`` for other commands. With the
ignition off every PID gets ``UNABLE TO CONNECT``. Echo is on after reset, as on a real ELM327.
``driver_signals`` drives it from the same ``RouteDriver`` and clock as the GPS simulator.
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

    def __init__(self, signals: Callable[[], Signals]) -> None:
        self.signals = signals
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
