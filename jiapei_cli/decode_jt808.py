"""`jiapei decode jt808 FILE|-`: one JSON line per frame as the JT/T 808 codec sees it (decoded, or refused why).

Input is either hex text (one frame a line, spaces allowed, ``#`` comment lines and blank lines skipped; a line
that is not hex is fed to the codec as it is, which refuses it) or raw bytes as captured from a terminal's TCP
stream. Each hex line is decoded on its own; raw bytes are decoded as one stream.
"""

from __future__ import annotations

import dataclasses
import json
import string
import sys
from collections.abc import Iterator
from datetime import datetime, time
from typing import Any, BinaryIO, TextIO

from firmware_protocols.jt808 import Jt808Decoder, Location, PackageHeld, Packet, TrainingEnvelope
from firmware_protocols.jt808.codec import Event
from firmware_protocols.jt808.header import Header

READ_CHUNK = 65536  # bytes per read of a binary capture: the decoder's buffers stay bounded
#: Bytes that never occur in hex text: controls other than whitespace, and the 0x7e flag ("~").
_NOT_TEXT = frozenset(set(range(32)) - {9, 10, 13} | {0x7E, 0x7F})
_HEX = frozenset(string.hexdigits)


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, Location):
        return location_json(v)
    if isinstance(v, TrainingEnvelope):
        out = {f.name: _value(getattr(v, f.name)) for f in dataclasses.fields(v)}
        out["msg_id"] = f"0x{v.msg_id:04x}"
        out["backfill"], out["reply_wanted"], out["hash"] = v.backfill, v.reply_wanted, v.hash_algorithm
        return out
    if isinstance(v, tuple | list):
        return [_value(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return body_json(v)
    return v


def location_json(loc: Location) -> dict[str, Any]:
    """A location in the vocabulary of convention 16 (lat, lon, speed_kmh, course, alt, time, alarm, status)."""
    out: dict[str, Any] = {
        "lat": loc.lat,
        "lon": loc.lon,
        "speed_kmh": loc.speed_kmh,
        "course": loc.course,
        "alt": loc.altitude,
        "time": _value(loc.time),
        "alarm": loc.alarm,
        "status": loc.status,
    }
    if loc.vehicle_speed_kmh is not None:
        out["vehicle_speed_kmh"] = loc.vehicle_speed_kmh
    out.update(loc.extra_values())
    if loc.extras:
        out["extras"] = {f"0x{k:02x}": v.hex() for k, v in loc.extras}
    if loc.extra_tail:
        out["extra_tail"] = loc.extra_tail.hex()
    return out


def body_json(message: Any) -> dict[str, Any]:
    if isinstance(message, Location):
        return location_json(message)
    out: dict[str, Any] = {}
    if hasattr(message, "msg_id") and not isinstance(message, TrainingEnvelope):
        out["msg_id"] = f"0x{message.msg_id:04x}"
        out["name"] = message.name
    for f in dataclasses.fields(message):
        out[f.name] = _value(getattr(message, f.name))
    return out


def _header_json(h: Header) -> dict[str, Any]:
    out: dict[str, Any] = {
        "msg_id": f"0x{h.msg_id:04x}",
        "version": h.version.value,
        "terminal": h.terminal,
        "serial": h.serial,
    }
    if h.package_count:
        out["package"] = [h.package_index, h.package_count]
    return out


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, Packet):
        out = _header_json(event.header)
        out["name"] = event.message.name
        out["body"] = body_json(event.message)
        return out
    if isinstance(event, PackageHeld):
        out = _header_json(event.header)
        out["held"] = "package kept until the others arrive"
        return out
    out = _header_json(event.header) if event.header is not None else {}
    out.update({"error": event.reason, "detail": event.detail, "data": event.data.hex()})
    return out


def _emit(decoder: Jt808Decoder, out: TextIO, extra: dict[str, Any]) -> None:
    while (event := decoder.next_event()) is not None:
        out.write(json.dumps({**extra, **event_json(event)}, ensure_ascii=False) + "\n")


def _hex_lines(first: bytes, src: BinaryIO) -> Iterator[tuple[int, bytes]]:
    pending = first
    number = 0
    while True:
        while (nl := pending.find(b"\n")) >= 0:
            number += 1
            yield number, pending[:nl]
            pending = pending[nl + 1 :]
        chunk = src.read(READ_CHUNK)
        if not chunk:
            break
        pending += chunk
    if pending:
        yield number + 1, pending


def decode_stream(src: BinaryIO, out: TextIO) -> None:
    first = src.read(READ_CHUNK)
    if first and _NOT_TEXT.isdisjoint(first):
        for number, raw in _hex_lines(first, src):
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            text = line.decode("ascii", "replace").replace(" ", "")
            frame = bytes.fromhex(text) if len(text) % 2 == 0 and _HEX.issuperset(text) else line
            decoder = Jt808Decoder()
            decoder.receive_data(frame)
            decoder.receive_data(b"")
            _emit(decoder, out, {"line": number})
        return
    decoder = Jt808Decoder()
    chunk = first
    while chunk:
        decoder.receive_data(chunk)
        _emit(decoder, out, {})
        chunk = src.read(READ_CHUNK)
    decoder.receive_data(b"")
    _emit(decoder, out, {})


def run(path: str) -> int:
    """Decode ``path`` ("-" for stdin). Returns 0, or 1 when the file cannot be read (reported as an error line)."""
    out = sys.stdout
    try:
        if path == "-":
            decode_stream(sys.stdin.buffer, out)
        else:
            with open(path, "rb") as src:
                decode_stream(src, out)
    except BrokenPipeError:  # pragma: no cover - `| head` closed the pipe
        return 0
    except OSError as exc:
        out.write(json.dumps({"error": "cannot_read", "detail": f"cannot read {path}: {exc.strerror or exc}"}) + "\n")
        return 1
    out.flush()
    return 0
