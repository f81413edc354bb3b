"""NMEA decoder: whole, byte by byte, junk around, refusals, round trips, and real receiver logs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_protocols.nmea import (
    KNOT_MPS,
    MAX_NMEA_LINE,
    MIN_PLAUSIBLE_DATE,
    GpsFix,
    NmeaDecoder,
    NmeaRejected,
    build_gga,
    build_gsa,
    build_rmc,
    checksum,
    fix_to_tpv,
    nmea_sentences,
)

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
GPSD_LOGS = sorted((TESTDATA / "nmea" / "gpsd").glob("*.log"))

# One epoch of a u-blox NEO-M8N (from gpsd's neo-m8n.log), RMC - VTG - GGA - GSA - GSA order.
EPOCH = (
    b"$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n"
    b"$GNVTG,,T,,M,0.117,N,0.216,K,A*3F\r\n"
    b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44\r\n"
    b"$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15\r\n"
    b"$GNGSA,A,3,67,83,76,82,68,,,,,,,,1.56,0.91,1.27*1D\r\n"
)


#: The captures below are from 2005-2026; a live terminal refuses dates before ``MIN_PLAUSIBLE_DATE``, these tests
#: decode with this floor (still after the 1999 week-rollover dates of april6_2019.log).
CAPTURES_FLOOR = date(2000, 1, 1)


def decode(
    *chunks: bytes, eof: bool = True, comments: bool = False, min_date: date = CAPTURES_FLOOR
) -> list[GpsFix | NmeaRejected]:
    d = NmeaDecoder(comments=comments, min_date=min_date)
    out: list[GpsFix | NmeaRejected] = []
    for c in chunks:
        d.receive_data(c)
        while (e := d.next_event()) is not None:
            out.append(e)
    if eof:
        d.receive_data(b"")
        while (e := d.next_event()) is not None:
            out.append(e)
    return out


def fixes(events: list[GpsFix | NmeaRejected]) -> list[GpsFix]:
    return [e for e in events if isinstance(e, GpsFix)]


def rejected(events: list[GpsFix | NmeaRejected]) -> list[NmeaRejected]:
    return [e for e in events if isinstance(e, NmeaRejected)]


def check_plausible(fix: GpsFix) -> None:
    """Shared plausibility checks for every decoded fix (traccar-style)."""
    assert fix.mode in (1, 2, 3)
    if fix.lat is not None:
        assert -90 <= fix.lat <= 90
    if fix.lon is not None:
        assert -180 <= fix.lon <= 180
    if fix.time is not None:
        assert fix.time.tzinfo is not None and fix.time.utcoffset().total_seconds() == 0
        assert fix.time.date() >= CAPTURES_FLOOR
    if fix.speed_mps is not None:
        assert 0 <= fix.speed_mps < 600
    if fix.valid:
        assert fix.lat is not None and fix.lon is not None


EXPECTED = GpsFix(
    time=datetime(2015, 3, 18, 17, 19, 26, tzinfo=UTC),
    lat=pytest.approx(44 + 4.14063 / 60),  # type: ignore[arg-type]
    lon=pytest.approx(-(121 + 18.85478 / 60)),  # type: ignore[arg-type]
    alt_m=1147.2,
    speed_mps=pytest.approx(0.117 * KNOT_MPS),  # type: ignore[arg-type]
    track_deg=None,
    mode=3,
    satellites=12,
    hdop=0.91,
    valid=True,
)


def test_epoch_whole_is_one_fix_emitted_without_waiting() -> None:
    events = decode(EPOCH, eof=False)
    assert events == [EXPECTED]


def test_epoch_one_byte_at_a_time() -> None:
    events = decode(*(EPOCH[i : i + 1] for i in range(len(EPOCH))))
    assert events == [EXPECTED]


def test_junk_around_and_trailing_partial_line() -> None:
    events = decode(b"\x00\xb5b\x01\x07garbage\r\n" + b"\xff\xfe" + EPOCH + b"$GNRMC,1719")
    assert fixes(events) == [EXPECTED]
    reasons = [r.reason for r in rejected(events)]
    assert reasons[0] == "not an NMEA sentence" or reasons[0] == "junk before sentence"
    assert "junk before sentence" in reasons  # the \xff\xfe glued to the RMC
    assert reasons[-1] in ("malformed sentence", "missing checksum")  # the cut-off last line at end of data


def test_bad_checksum_is_refused_and_epoch_still_assembled() -> None:
    bad = EPOCH.replace(b"*44", b"*45")
    events = decode(bad)
    assert [r.reason for r in rejected(events)] == ["bad checksum"]
    (fix,) = fixes(events)
    assert fix.satellites is None and fix.lat == EXPECTED.lat and fix.valid


def test_missing_checksum_is_refused() -> None:
    events = decode(b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,\r\n")
    assert [r.reason for r in rejected(events)] == ["missing checksum"]


def test_overlong_line_refused_then_decoder_recovers() -> None:
    long_line = b"A" * (MAX_NMEA_LINE * 10)
    events = decode(long_line[:100], long_line[100:], b"\r\n", EPOCH)
    (rej,) = rejected(events)
    assert rej.reason.startswith("line too long") and len(rej.line) == MAX_NMEA_LINE
    assert fixes(events) == [EXPECTED]


def test_week_rollover_date_keeps_position_drops_time() -> None:
    line = b"$GPRMC,000231.42,A,4829.0005,N,00022.0016,E,0.16,212.28,220899,,,A*59\r\n"
    (fix,) = fixes(decode(line))
    assert fix.time is None and not fix.time_plausible
    assert fix.lat == pytest.approx(48.48334, abs=1e-5) and fix.valid
    assert "time" not in fix_to_tpv(fix)


def test_live_default_refuses_dates_before_this_software() -> None:
    (old,) = fixes(decode(EPOCH, min_date=MIN_PLAUSIBLE_DATE))  # 2015: a rolled-over receiver, not a live fix
    assert old.time is None and not old.time_plausible and old.valid
    t = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
    (now,) = fixes(decode(nmea_sentences(GpsFix(t, 35.4, 119.5, mode=3, valid=True)), min_date=MIN_PLAUSIBLE_DATE))
    assert now.time == t


def test_no_fix_cold_start_sentences_each_become_mode_1() -> None:
    cold = b"$GPRMC,,V,,,,,,,,,,N*53\r\n"
    events = decode(cold * 3)
    assert [f.mode for f in fixes(events)] == [1, 1, 1]
    assert all(not f.valid and f.lat is None for f in fixes(events))


def test_sirf_order_with_duplicate_talkers_is_one_fix_per_epoch() -> None:
    # SiRF: GPGGA + GLGGA (same time), GSA, then RMC last (from gpsd's sirfstarv-nmea.log).
    data = (
        b"$GPGGA,020935.000,4404.1351,N,12118.8556,W,1,08,0.9,1123.9,M,-19.6,M,,0000*5E\r\n"
        b"$GLGGA,020935.000,4404.1351,N,12118.8556,W,1,02,0.9,1123.9,M,-19.6,M,,0000*48\r\n"
        b"$GNGSA,A,3,15,17,30,28,01,19,24,11,,,,,1.8,0.9,1.5*2C\r\n"
        b"$GNRMC,020935.000,A,4404.1351,N,12118.8556,W,0.04,359.11,050219,,,A*6C\r\n"
    )
    (fix,) = decode(data, eof=False)
    assert isinstance(fix, GpsFix)
    assert fix.satellites == 8 and fix.mode == 3 and fix.track_deg == 359.11
    assert fix.time == datetime(2019, 2, 5, 2, 9, 35, tzinfo=UTC)


def test_epoch_without_gsa_is_emitted_when_time_changes() -> None:
    rmc1 = build_rmc(datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC), 35.42, 119.52, 5.0, 90.0)
    rmc2 = build_rmc(datetime(2024, 5, 1, 8, 0, 1, tzinfo=UTC), 35.42, 119.52, 5.0, 90.0)
    assert decode(rmc1, eof=False) == []
    events = decode(rmc1, rmc2)
    assert [f.time.second for f in fixes(events) if f.time] == [0, 1]
    assert all(f.mode == 2 for f in fixes(events))  # no GGA altitude, no GSA: 2D


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GPRMC,123519,A,9999.000,N,01131.000,E,022.4,084.4,230394,003.1,W", "RMC: bad latitude"),
        ("GNRMC,171926.00,A,4404.14063,Q,12118.85478,W,0.117,,180315,,,A", "RMC: bad latitude hemisphere"),
        ("GNRMC,171926.00,A,4404.14063,N,12118.85478,W,-1.0,,180315,,,A", "RMC: negative speed"),
        ("GNGGA,25xx26.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,", "GGA: bad time"),
        ("GNGGA,171926.00,4404.14063,N,12118.85478,W,1,x2,0.91,1147.2,M,-21.3,M,,", "GGA: bad satellites"),
        ("GNGSA,A,7,01,,,,,,,,,,,,1.56,0.91,1.27", "GSA: bad fix type"),
        ("GPXYZ,1,2,3", None),  # well-formed, a type we do not use: ignored, not refused
    ],
)
def test_malformed_fields_are_refused_with_reason(body: str, reason: str | None) -> None:
    line = f"${body}*{checksum(body):02X}\r\n".encode()
    events = decode(line)
    if reason is None:
        assert events == []
        return
    (rej,) = rejected(events)
    assert rej.reason.startswith(reason) and rej.line == line.strip()


def test_non_ascii_and_control_characters_refused() -> None:
    events = decode(b"$GPRMC,\xe4\xb8\xad*00\r\n$GPRMC,\x07*00\r\n")
    assert [r.reason for r in rejected(events)] == ["non-ASCII bytes in sentence", "control characters in sentence"]


def test_round_trip_build_then_decode() -> None:
    t = datetime(2024, 5, 1, 8, 30, 15, 250000, tzinfo=UTC)
    data = build_rmc(t, 35.4212345, 119.5198765, 5.5, 271.5) + build_gga(t, 35.4212345, 119.5198765, 12.3, 14, 0.8)
    data += build_gsa(3, hdop=0.8)
    (fix,) = decode(data, eof=False)
    assert isinstance(fix, GpsFix)
    assert fix.time == t and fix.valid and fix.mode == 3
    assert fix.lat == pytest.approx(35.4212345, abs=1e-6) and fix.lon == pytest.approx(119.5198765, abs=1e-6)
    assert fix.speed_mps == pytest.approx(5.5, abs=1e-3) and fix.track_deg == 271.5
    assert (fix.alt_m, fix.satellites, fix.hdop) == (12.3, 14, 0.8)


def test_round_trip_decode_then_build_is_byte_identical() -> None:
    t = datetime(2024, 5, 1, 8, 30, 15, tzinfo=UTC)
    canonical = nmea_sentences(
        GpsFix(
            t, 35.42, -119.52, alt_m=12.0, speed_mps=0.0, track_deg=90.0, mode=3, satellites=12, hdop=0.9, valid=True
        )
    )
    (fix,) = decode(canonical, eof=False)
    assert isinstance(fix, GpsFix)
    assert nmea_sentences(fix) == canonical


@settings(max_examples=200, deadline=None)
@given(
    # hypothesis takes naive bounds and attaches `timezones` itself
    st.datetimes(
        min_value=datetime(2010, 1, 1),  # noqa: DTZ001
        max_value=datetime(2079, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.floats(-89.9, 89.9),
    st.floats(-179.9, 179.9),
    st.floats(0, 80),
    st.floats(0, 359.99),
)
def test_round_trip_property(t: datetime, lat: float, lon: float, speed: float, track: float) -> None:
    t = t.replace(microsecond=t.microsecond // 10000 * 10000)
    if abs(lat) < 1e-6 and abs(lon) < 1e-6:
        lat = 0.5  # 0 N 0 E is the placeholder receivers print before a fix: refused (tested elsewhere)
    fix = GpsFix(t, lat, lon, alt_m=5.0, speed_mps=speed, track_deg=track, mode=3, satellites=9, hdop=1.1, valid=True)
    (back,) = decode(nmea_sentences(fix), eof=False)
    assert isinstance(back, GpsFix)
    check_plausible(back)
    assert back.time == t
    assert back.lat == pytest.approx(lat, abs=1e-6) and back.lon == pytest.approx(lon, abs=1e-6)
    assert back.speed_mps == pytest.approx(speed, abs=1e-3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(EPOCH.split(b"\n"))), max_size=30))
def test_any_bytes_never_raise(chunks: list[bytes]) -> None:
    for f in fixes(decode(*chunks)):
        check_plausible(f)


def test_tpv_vocabulary() -> None:
    (fix,) = decode(EPOCH)
    assert isinstance(fix, GpsFix)
    tpv = fix_to_tpv(fix)
    assert tpv["class"] == "TPV" and tpv["mode"] == 3 and tpv["time"] == "2015-03-18T17:19:26.000Z"
    assert tpv["alt"] == 1147.2 and "track" not in tpv
    assert fix_to_tpv(GpsFix(None, 1.0, 2.0)) == {"class": "TPV", "mode": 1}


# --- real receiver logs (gpsd regression suite) -------------------------------------------------------------


def _gpsd_has_fix(log: Path) -> bool:
    """gpsd's own oracle: does its .chk report any TPV with mode 2 or 3?"""
    chk = log.with_suffix(".log.chk")
    text = chk.read_text(errors="replace") if chk.exists() else ""
    return '"class":"TPV"' in text and ('"mode":2' in text or '"mode":3' in text)


@pytest.mark.parametrize("log", GPSD_LOGS or [None], ids=[p.name for p in GPSD_LOGS] or ["missing"])
def test_real_logs(log: Path | None) -> None:
    if log is None:
        pytest.skip(f"real NMEA captures not found under {TESTDATA / 'nmea' / 'gpsd'}")
    data = log.read_bytes()
    whole = decode(data, comments=True)
    for f in fixes(whole):
        check_plausible(f)
    if _gpsd_has_fix(log):
        assert any(f.valid and f.mode >= 2 for f in fixes(whole)), "gpsd finds fixes in this log, we found none"
    # Split at arbitrary points: same events.
    step = 97
    assert decode(*(data[i : i + step] for i in range(0, len(data), step)), comments=True) == whole


def test_real_log_beidou_shanghai_first_fix() -> None:
    log = TESTDATA / "nmea" / "gpsd" / "beidou-bd.log"
    if not log.exists():
        pytest.skip(f"{log} missing")
    first = next(f for f in fixes(decode(log.read_bytes(), comments=True)) if f.valid)
    assert first.time == datetime(2015, 2, 25, 7, 41, 55, 799000, tzinfo=UTC)
    assert first.lat == pytest.approx(31.24795, abs=1e-5) and first.lon == pytest.approx(121.587438, abs=1e-5)
    assert first.mode == 3


def test_real_log_week_rollover_april6_2019() -> None:
    log = TESTDATA / "nmea" / "gpsd" / "april6_2019.log"
    if not log.exists():
        pytest.skip(f"{log} missing")
    fs = fixes(decode(log.read_bytes(), comments=True))
    assert [f.mode for f in fs] == [1, 2, 2]  # as gpsd's .chk
    assert all(f.time is None for f in fs) and not fs[1].time_plausible and not fs[2].time_plausible


def test_cli_prints_tpv_and_error_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from jiapei_cli.decode_nmea import run

    f = tmp_path / "in.nmea"
    f.write_bytes(b"# comment\r\n" + EPOCH + b"\x00\xff junk\r\n" + EPOCH.replace(b"*44", b"*00") + bytes(range(256)))
    assert run(str(f), CAPTURES_FLOOR) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == fix_to_tpv(decode(EPOCH)[0])  # type: ignore[arg-type]
    assert {x["class"] for x in lines} == {"TPV", "ERROR"}
    assert any(x.get("reason") == "bad checksum" for x in lines)
    assert run(str(tmp_path / "missing")) == 1
    assert json.loads(capsys.readouterr().out)["class"] == "ERROR"
