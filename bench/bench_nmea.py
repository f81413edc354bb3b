"""Sentences per second through the GPS reader, bytes to fixes.

    .venv/bin/python bench/bench_nmea.py [--seconds 20000] [--repeat 3]

Three figures, one line each (best of ``--repeat``):

1. the decoder alone (``NmeaDecoder``: line buffer, checksum, pynmea2, epoch assembly) on the simulator's stream
   (RMC+GGA+GSA, 3 sentences an epoch);
2. the decoder alone on gpsd's real receiver logs (``../shared/testdata/nmea/gpsd``; skipped when absent), counting
   every ``$`` line as a sentence: GSV and proprietary sentences are parsed, checksummed and ignored;
3. the whole reader: ``GpsPty`` bytes written into a real pty, ``SerialGpsReader`` (pyserial) reading, decoding and
   handing fixes on, timed from the first byte written to the last fix received.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import tty
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from agent.gps import SerialGpsReader
from firmware_protocols.nmea import GpsFix, NmeaDecoder
from simulators.clock import SimClock
from simulators.gps import ROAD_LOOP, ROAD_SPEEDS, GpsPty, RouteDriver

T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
SHARED_LOGS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "nmea" / "gpsd"


def simulated(seconds: int) -> bytes:
    pty = GpsPty(RouteDriver(ROAD_LOOP, ROAD_SPEEDS), SimClock(T0, factor=1.0))
    try:
        return b"".join(pty._epoch_bytes(T0 + timedelta(seconds=s)) for s in range(seconds))
    finally:
        pty.stop()


def decode_all(data: bytes, min_date: date | None = None) -> int:
    d = NmeaDecoder(comments=True) if min_date is None else NmeaDecoder(comments=True, min_date=min_date)
    n = 0
    for i in range(0, len(data), 4096):  # serial-sized reads
        d.receive_data(data[i : i + 4096])
        while d.next_event() is not None:
            n += 1
    d.receive_data(b"")
    while d.next_event() is not None:
        n += 1
    return n


def best(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def through_reader(data: bytes, epochs: int) -> float:
    master, slave = os.openpty()
    tty.setraw(slave)
    got = threading.Event()
    count = 0

    def on_fix(_: GpsFix) -> None:
        nonlocal count
        count += 1
        if count >= epochs:
            got.set()

    reader = SerialGpsReader(os.ttyname(slave), 115200, on_fix)
    reader.start()
    try:
        assert reader.connected.wait(5)
        t = time.perf_counter()
        view = memoryview(data)
        while view:
            view = view[os.write(master, view[:65536]) :]
        assert got.wait(120), f"only {count} of {epochs} fixes"
        return time.perf_counter() - t
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20_000, help="simulated epochs (3 sentences each)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sim = simulated(args.seconds)
    sentences = sim.count(b"$")
    dt = best(args.repeat, lambda: decode_all(sim))
    print(f"decoder, simulated RMC+GGA+GSA: {sentences / dt:,.0f} sentences/s ({args.seconds / dt:,.0f} fixes/s)")
    if SHARED_LOGS.is_dir():
        logs = b"".join(p.read_bytes() for p in sorted(SHARED_LOGS.glob("*.log"))) * 5
        n = logs.count(b"$")
        dt = best(args.repeat, lambda: decode_all(logs, date(2000, 1, 1)))
        print(f"decoder, gpsd real logs x5 ({n} sentences, GSV and proprietary included): {n / dt:,.0f} sentences/s")
    else:
        print(f"decoder, real logs: skipped ({SHARED_LOGS} not found)")
    dt = min(through_reader(sim, args.seconds) for _ in range(args.repeat))
    print(f"whole reader (pty -> pyserial -> decoder -> on_fix): {sentences / dt:,.0f} sentences/s "
          f"({args.seconds / dt:,.0f} fixes/s)")  # fmt: skip


if __name__ == "__main__":
    main()
