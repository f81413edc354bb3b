"""Location reports: 0x0200 (with its extra items) and the 0x0704 batch; the training GNSS block is the same.

The 28-byte block: alarm DWORD, status DWORD, latitude and longitude DWORD (1e-6 degrees, sign in status bits 2
and 3), then in JT/T 808 altitude WORD (m) and speed WORD (0.1 km/h), in the training protocol the vehicle's own
speed WORD and the GNSS speed WORD (0.1 km/h), then course WORD (degrees) and time BCD[6] (Beijing).

Extra items follow as ``id BYTE | length BYTE | value``. They are kept in order as raw bytes (exact round trips);
``extra_values`` reads the ones we know. Bytes after the last whole item (vendors append blocks of their own that
do not follow the item layout) are kept in ``extra_tail``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from firmware_protocols.jt808.base import Message
from firmware_protocols.jt808.errors import BodyError, EncodeError
from firmware_protocols.jt808.fields import Reader, bcd_time, time_bcd
from firmware_protocols.jt808.header import Version

_BLOCK = struct.Struct(">IIIIHHH6s")
BLOCK_SIZE = _BLOCK.size  # 28
SOUTH = 0x04
WEST = 0x08
FIXED = 0x02
ACC_ON = 0x01

# extra item ids
MILEAGE = 0x01  # DWORD, 0.1 km
FUEL = 0x02  # WORD, 0.1 l
RECORDER_SPEED = 0x03  # JT/T 808: WORD, 0.1 km/h (speed from the tachograph)
TRAINING_ALTITUDE = 0x03  # training protocol: WORD, m
TRAINING_RPM = 0x05  # training protocol: WORD, rpm
SIGNAL = 0x30  # BYTE, network signal strength
SATELLITES = 0x31  # BYTE, GNSS satellites in use

Extras = tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Location(Message):
    """0x0200 location report (also the GNSS block of training messages, read with ``Version.TRAINING``)."""

    MSG_ID = 0x0200
    NAME = "location"

    alarm: int
    status: int
    lat: float
    lon: float
    speed_kmh: float
    course: int
    time: datetime | None
    alt: int | None = 0  # JT/T 808 block (m); None in the training block (its extra item 0x03 holds it)
    vehicle_speed_kmh: float | None = None  # training block only
    extras: Extras = ()
    extra_tail: bytes = b""

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        loc, _ = cls.decode_from(body, 0, len(body), version)
        return loc

    @classmethod
    def decode_from(cls, body: bytes, start: int, end: int, version: Version) -> tuple[Self, int]:
        if end - start < BLOCK_SIZE:
            raise BodyError(f"location block needs {BLOCK_SIZE} bytes, got {end - start}", "body_too_short")
        alarm, status, lat_raw, lon_raw, first, second, course, raw_time = _BLOCK.unpack_from(body, start)
        lat = lat_raw / 1e6
        lon = lon_raw / 1e6
        if status & SOUTH:
            lat = -lat
        if status & WEST:
            lon = -lon
        extras: list[tuple[int, bytes]] = []
        pos = start + BLOCK_SIZE
        while pos + 2 <= end:
            size = body[pos + 1]
            if pos + 2 + size > end:
                break
            extras.append((body[pos], body[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        tail = body[pos:end]
        when = bcd_time(raw_time)
        if version is Version.TRAINING:
            return cls(alarm, status, lat, lon, second / 10, course, when, None, first / 10, tuple(extras), tail), end
        return cls(alarm, status, lat, lon, second / 10, course, when, first, None, tuple(extras), tail), end

    def encode(self, version: Version) -> bytes:
        if version is Version.TRAINING:
            first = round((self.vehicle_speed_kmh or 0.0) * 10)
        else:
            first = self.alt or 0
        status = self.status  # the hemisphere bits follow the signs (kept as they are for a zero)
        if self.lat:
            status = status | SOUTH if self.lat < 0 else status & ~SOUTH
        if self.lon:
            status = status | WEST if self.lon < 0 else status & ~WEST
        try:
            block = _BLOCK.pack(
                self.alarm,
                status,
                round(abs(self.lat) * 1e6),
                round(abs(self.lon) * 1e6),
                first,
                round(self.speed_kmh * 10),
                self.course,
                time_bcd(self.time),
            )
        except struct.error as exc:
            raise EncodeError(f"location field out of range: {exc}", "value_out_of_range") from exc
        parts = [block]
        for item_id, value in self.extras:
            if not 0 <= item_id <= 0xFF or len(value) > 0xFF:
                raise EncodeError(f"extra item 0x{item_id:02x} of {len(value)} bytes", "value_out_of_range")
            parts.append(bytes((item_id, len(value))) + value)
        parts.append(self.extra_tail)
        return b"".join(parts)

    # --- what the extra items say ---------------------------------------------------------------------------

    def extra(self, item_id: int) -> bytes | None:
        for key, value in self.extras:
            if key == item_id:
                return value
        return None

    def _uint(self, item_id: int) -> int | None:
        value = self.extra(item_id)  # noqa: S610 - an additional-information item, not Django
        return int.from_bytes(value, "big") if value else None

    @property
    def mileage_km(self) -> float | None:
        raw = self._uint(MILEAGE)
        return None if raw is None else raw / 10

    @property
    def rpm(self) -> int | None:
        """Engine speed (training protocol item 0x05)."""
        return self._uint(TRAINING_RPM) if self.alt is None else None

    @property
    def altitude(self) -> int | None:
        """Metres: the block's in JT/T 808, extra item 0x03 in the training protocol."""
        return self._uint(TRAINING_ALTITUDE) if self.alt is None else self.alt

    @property
    def fixed(self) -> bool:
        return bool(self.status & FIXED)

    def extra_values(self) -> dict[str, float | int]:
        """The extra items we know, by name (training or JT/T 808 meaning of each id)."""
        out: dict[str, float | int] = {}
        training = self.alt is None
        for key, value in self.extras:
            if not value:
                continue
            n = int.from_bytes(value, "big")
            if key == MILEAGE and len(value) == 4:
                out["mileage_km"] = n / 10
            elif key == FUEL and len(value) == 2:
                out["fuel_l"] = n / 10
            elif key == 0x03 and len(value) == 2:
                out["alt_m" if training else "recorder_speed_kmh"] = n if training else n / 10
            elif key == TRAINING_RPM and training and len(value) == 2:
                out["rpm"] = n
            elif key == SIGNAL and len(value) == 1:
                out["signal"] = n
            elif key == SATELLITES and len(value) == 1:
                out["satellites"] = n
        return out


@dataclass(frozen=True, slots=True)
class LocationBatch(Message):
    """0x0704: stored locations sent together; ``kind`` 0 normal, 1 backfill of a blind area."""

    MSG_ID = 0x0704
    NAME = "location batch"

    kind: int
    locations: tuple[Location, ...]

    @property
    def backfill(self) -> bool:
        return self.kind == 1

    @classmethod
    def decode(cls, body: bytes, version: Version) -> Self:
        r = Reader(body)
        count = r.u16("count")
        kind = r.u8("type")
        items = []
        for i in range(count):
            size = r.u16(f"location {i} length")
            start = r.pos
            r.take(size, f"location {i}")
            loc, _ = Location.decode_from(body, start, start + size, version)
            items.append(loc)
        r.end("location batch")
        return cls(kind, tuple(items))

    def encode(self, version: Version) -> bytes:
        parts = [struct.pack(">HB", len(self.locations), self.kind)]
        for loc in self.locations:
            raw = loc.encode(version)
            parts.append(struct.pack(">H", len(raw)) + raw)
        return b"".join(parts)
