"""JT/T 808 codec on frames captured from real terminals (Traccar's test corpus, ../shared/testdata/jt808/).

Every frame either decodes with the values the file's independent oracle gives (header fields, and for locations
alarm, status, position, altitude, speed, course and time), or is refused with a specific reason; every decoded
frame encodes back to the same bytes; the whole corpus as one stream gives the same events whole, byte by byte
and with junk around it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from firmware_protocols.identifiers import BEIJING
from firmware_protocols.jt808 import Jt808Decoder, Location, LocationBatch, Packet, Refused, encode_packet
from firmware_protocols.jt808.codec import Event

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
ORACLE = TESTDATA / "jt808" / "traccar" / "jt808_frames_traccar.jsonl"
HEX = TESTDATA / "jt808" / "traccar" / "jt808_frames_traccar.hex"

#: Reasons a refusal may give (framing, header, body): anything else would be a vague refusal.
SPECIFIC = {
    "bad_checksum",
    "bad_escape",
    "frame_too_short",
    "frame_too_large",
    "junk",
    "truncated",
    "length_mismatch",
    "header_too_short",
    "encrypted_body",
    "body_too_short",
    "body_too_long",
    "bad_bcd",
    "bad_time",
    "bad_text",
    "unknown_vendor_id",
}

#: Frames the oracle reads as whole although a 0x7e flag stands unescaped inside them (the device did not escape
#: it): on a stream that flag ends the frame, so a stream decoder sees two bad frames; refused, as Traccar's own
#: frame decoder would split them too.
UNESCAPED_FLAG_INSIDE = 3


def _rows() -> list[dict[str, Any]]:
    if not ORACLE.exists():
        return []
    return [r for r in map(json.loads, ORACLE.read_text(encoding="utf-8").splitlines()) if "hex" in r]


ROWS = _rows()
#: Without the captures, one placeholder case that skips naming the missing file.
CASES = ROWS or [{"source_file": "missing", "line": 0}]


def _need_testdata() -> None:
    if not ORACLE.exists():
        pytest.skip(f"real JT/T 808 frames not found: {ORACLE} is missing")


def decode_all(*chunks: bytes) -> list[Event]:
    d = Jt808Decoder()
    out: list[Event] = []
    for c in chunks:
        d.receive_data(c)
        out += d.events()
    d.receive_data(b"")
    return out + d.events()


def oracle_ok(parsed: dict[str, Any]) -> bool:
    return bool(
        parsed.get("kind") == "jt808"
        and parsed["checksum_ok"]
        and parsed["body_len_declared"] == parsed["body_len_actual"]
        and parsed["encrypted"] == 0
    )


_LOC = re.compile(
    r"alarm=0x(?P<alarm>[0-9a-f]+) status=0x(?P<status>[0-9a-f]+)\S* lat=(?P<lat>[\d.]+)(?P<ns>[NS]) "
    r"lon=(?P<lon>[\d.]+)(?P<ew>[EW]) alt=(?P<alt>\d+)m speed=(?P<speed>[\d.]+)km/h course=(?P<course>\d+) "
    r"time\(GMT\+8\)=(?P<time>[\d-]+ [\d:]+)"
)


def check_location(loc: Location, summary: str) -> None:
    m = _LOC.search(summary)
    assert m is not None, summary
    assert loc.alarm == int(m["alarm"], 16)
    assert loc.status == int(m["status"], 16)
    assert loc.lat == pytest.approx(float(m["lat"]) * (-1 if m["ns"] == "S" else 1), abs=1e-6)
    assert loc.lon == pytest.approx(float(m["lon"]) * (-1 if m["ew"] == "W" else 1), abs=1e-6)
    assert loc.alt == int(m["alt"])
    assert loc.speed_kmh == pytest.approx(float(m["speed"]))
    assert loc.course == int(m["course"])
    expected = datetime.strptime(m["time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    assert loc.time == expected
    check_plausible(loc)


def check_plausible(loc: Location) -> None:
    """Shared plausibility checks (traccar-style) for every decoded position."""
    assert -90 <= loc.lat <= 90 and -180 <= loc.lon <= 180
    assert 0 <= loc.speed_kmh < 6553.6 and 0 <= loc.course <= 360
    if loc.time is not None:
        offset = loc.time.utcoffset()
        assert offset is not None and offset.total_seconds() == 0
        assert datetime(2000, 1, 1, tzinfo=UTC) <= loc.time <= datetime(2100, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("row", CASES, ids=[f"{Path(r['source_file']).stem}:{r['line']}" for r in CASES])
def test_each_frame_decodes_as_the_oracle_says_or_is_refused(row: dict[str, Any]) -> None:
    _need_testdata()
    wire = bytes.fromhex(row["hex"])
    events = decode_all(wire)
    packets = [e for e in events if isinstance(e, Packet)]
    parsed = row["parsed"]
    if oracle_ok(parsed) and len(packets) == 1 and len(events) == 1:
        h = packets[0].header
        assert f"0x{h.msg_id:04x}" == parsed["msg_id"]
        assert h.version.value == {"2011/2013": "2013", "2019": "2019"}[parsed["version"]]
        assert h.terminal == parsed["phone"]
        assert h.serial == parsed["serial"]
        assert h.body_length == parsed["body_len_declared"]
        if parsed["proto_ver"] is not None:
            assert h.protocol_version == parsed["proto_ver"]
        message = packets[0].message
        if parsed["msg_id"] == "0x0200":
            assert isinstance(message, Location)
            check_location(message, parsed["decoded"])
        elif parsed["msg_id"] == "0x0704":
            assert isinstance(message, LocationBatch)
            count = int(re.search(r"count=(\d+)", parsed["decoded"])[1])  # type: ignore[index]
            assert len(message.locations) == count
            assert message.backfill == ("blind-area" in parsed["decoded"])
            check_location(message.locations[0], parsed["decoded"].split("first:")[1])
        # encode(decode(b)) == b on what real terminals sent
        assert encode_packet(h, message) == wire
        return
    if oracle_ok(parsed):
        # the only oracle-good frames a stream decoder refuses: an unescaped flag inside
        assert wire[1:-1].count(b"\x7e") >= 1, row["summary"]
    assert not packets, row["summary"]
    reasons = [e.reason for e in events if isinstance(e, Refused)]
    assert reasons and set(reasons) <= SPECIFIC, reasons


def test_corpus_totals() -> None:
    """What the corpus gives, counted (a change here is a change of behaviour on real frames)."""
    _need_testdata()
    decoded = refused = 0
    reasons: dict[str, int] = {}
    unescaped = 0
    for row in ROWS:
        events = decode_all(bytes.fromhex(row["hex"]))
        if any(isinstance(e, Packet) for e in events):
            decoded += 1
            continue
        refused += 1
        if oracle_ok(row["parsed"]):
            unescaped += 1
        first = next(e.reason for e in events if isinstance(e, Refused))
        reasons[first] = reasons.get(first, 0) + 1
    assert unescaped == UNESCAPED_FLAG_INSIDE
    assert (decoded, refused) == (94, 29)
    assert reasons == {"bad_checksum": 12, "bad_escape": 3, "frame_too_short": 4, "junk": 4, "length_mismatch": 6}


def _stream() -> bytes:
    if not HEX.exists():
        pytest.skip(f"real JT/T 808 frames not found: {HEX} is missing")
    return b"".join(bytes.fromhex(line) for line in HEX.read_text().split())


def _key(events: list[Event]) -> list[tuple[Any, ...]]:
    return [("packet", e) if isinstance(e, Packet) else ("other", e) for e in events]


def test_stream_whole_and_byte_by_byte_agree() -> None:
    stream = _stream()
    whole = decode_all(stream)
    one_by_one = [e for line in HEX.read_text().split() for e in decode_all(bytes.fromhex(line))]
    # frames run together lose nothing that each decoded alone gave
    assert [e for e in whole if isinstance(e, Packet)] == [e for e in one_by_one if isinstance(e, Packet)]
    bytewise = decode_all(*(stream[i : i + 1] for i in range(len(stream))))
    assert _key(bytewise) == _key(whole)
    odd = decode_all(*(stream[i : i + 7] for i in range(0, len(stream), 7)))
    assert _key(odd) == _key(whole)


def test_stream_with_junk_around_keeps_every_frame() -> None:
    stream = _stream()
    whole = [e for e in decode_all(stream) if isinstance(e, Packet)]
    junk = b"AT+CSQ\r\n\x00\xff" * 3
    framed = junk + stream + junk
    events = decode_all(framed)
    assert [e for e in events if isinstance(e, Packet)] == whole
    assert isinstance(events[0], Refused) and events[0].reason == "junk"
    assert isinstance(events[-1], Refused) and events[-1].reason == "junk"
    bytewise = decode_all(*(framed[i : i + 1] for i in range(len(framed))))
    assert _key(bytewise) == _key(events)
