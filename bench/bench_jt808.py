"""JT/T 808 decode throughput on one core: 0x0200 and 0x0203 frames through the whole path
(deframe + header + body), against a minimal hand-written decoder of the same 0x0200 frames.

Run: python bench/bench_jt808.py [N]
"""

from __future__ import annotations

import struct
import sys
import time
from datetime import UTC, datetime, timedelta

from firmware_protocols.identifiers import BEIJING
from firmware_protocols.jt808 import (
    Header,
    Jt808Decoder,
    Location,
    MinuteRecord,
    Packet,
    TrainingEnvelope,
    TrainingUplink,
    Version,
    encode_packet,
)

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def location_frames(n: int) -> bytes:
    out = []
    for i in range(n):
        loc = Location(
            0,
            0x000C0003,
            35.416 + i * 1e-6,
            119.527 + i * 1e-6,
            (i % 600) / 10,
            i % 360,
            T0 + timedelta(seconds=10 * i),
            42,
            None,
            ((0x01, (1000 + i).to_bytes(4, "big")), (0x30, b"\x1f"), (0x31, b"\x0c")),
        )
        out.append(encode_packet(Header(0x0200, "013511221122", i & 0xFFFF, Version.V2013), loc))
    return b"".join(out)


def minute_frames(n: int) -> bytes:
    out = []
    for i in range(n):
        gnss = Location(
            0, 3, 35.416, 119.527, 30.0, 90, T0 + timedelta(minutes=i), None, 29.5,
            ((0x01, (1000 + i).to_bytes(4, "big")), (0x05, (1800).to_bytes(2, "big"))),
        )  # fmt: skip
        record = MinuteRecord(
            f"T000000000000001261127{1 + i % 9999:04d}", 1, "P000000000000001", "C000000000000001", 7,
            (T0 + timedelta(minutes=i)).time(), "1212130000", 1, 42.5, 0.5, gnss,
        )  # fmt: skip
        env = TrainingEnvelope.of(record, "T000000000000001", counter=i & 0xFFFF)
        env = TrainingEnvelope(env.msg_id, env.attributes, env.counter, env.terminal, env.data, bytes(256))
        h = Header(0x0900, "0000000000000001", i & 0xFFFF, Version.TRAINING)
        out.append(encode_packet(h, TrainingUplink.of(env)))
    return b"".join(out)


def full_path(stream: bytes) -> int:
    d = Jt808Decoder()
    d.receive_data(stream)
    d.receive_data(b"")
    return sum(1 for e in d.events() if type(e) is Packet)


_HEAD = struct.Struct(">HH6sH")
_BLOCK = struct.Struct(">IIIIHHH6s")


def minimal(stream: bytes) -> int:
    """What a hand-written reader of only these frames does: split, unescape, XOR, header, block, time."""
    n = 0
    pos = 0
    find = stream.find
    while (start := find(b"\x7e", pos)) >= 0:
        end = find(b"\x7e", start + 1)
        if end < 0:
            break
        raw = stream[start + 1 : end]
        if b"\x7d" in raw:
            raw = raw.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
        x = 0
        for b in raw:
            x ^= b
        if x == 0:
            _msg_id, _attrs, _phone, _serial = _HEAD.unpack_from(raw)
            _alarm, status, lat, lon, _alt, speed, _course, t = _BLOCK.unpack_from(raw, 12)
            d = t.hex()
            datetime(2000 + int(d[0:2]), int(d[2:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]),
                     tzinfo=BEIJING)  # fmt: skip
            n += 1
        pos = end + 1
    return n


def rate(fn: object, stream: bytes, frames: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = fn(stream)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
        assert got == frames, (got, frames)
    return frames / best


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 50_000
    locations = location_frames(n)
    minutes = minute_frames(n // 5)
    full_0200 = rate(full_path, locations, n)
    mini_0200 = rate(minimal, locations, n)
    full_0203 = rate(full_path, minutes, n // 5)
    print(f"0x0200 full path (deframe + header + body): {full_0200:,.0f} frames/s on one core")
    print(f"0x0200 minimal hand-written decode:         {mini_0200:,.0f} frames/s")
    print(f"ratio full / minimal:                        {full_0200 / mini_0200:.2f}")
    print(f"0x0203 in its signed envelope, full path:   {full_0203:,.0f} frames/s on one core")


if __name__ == "__main__":
    main(sys.argv[1:])
