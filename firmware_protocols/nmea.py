"""NMEA 0183 GPS sentences: a sans-IO decoder from bytes to one ``GpsFix`` per epoch, and builders back.

Layers (conventions 1 and 2):

1. **Framing** - a bounded line buffer. Bytes are split on ``\\n`` (``\\r`` and blanks stripped). A line longer
   than ``MAX_NMEA_LINE`` is refused as a whole (``NmeaRejected("line too long")``) and the rest of it is
   discarded up to the next newline; memory never grows with a receiver that stops sending newlines.
2. **Sentences** - each line from its last ``$`` is checked and parsed by ``pynmea2.parse(line, check=True)``
   (a missing checksum is refused, not trusted). Bytes before that ``$`` (binary frames of a receiver that
   interleaves them, line noise) are refused as junk, and the sentence after them is still decoded. RMC, GGA,
   GNS, GSA and VTG of the GNSS talkers (``GNSS_TALKERS``: GP, GN, BD, GB, GL, GA, GI, GQ) are used; other
   well-formed sentences (GSV, ZDA, proprietary ``$P...``, other talkers) are counted in ``NmeaDecoder.ignored``.
3. **Epochs** - RMC (date, time, status, position, speed, track), GGA or GNS (quality, satellites, HDOP,
   altitude), GSA (2D/3D mode) and VTG (speed, track) of the same UTC time make one ``GpsFix``. A fix is emitted

   - as soon as its epoch holds an RMC, a GGA or GNS, and a GSA (the usual receiver cycle: no added latency); or
   - when a sentence with another UTC time arrives, or a second RMC/GGA/GNS in the same epoch (a receiver
     without GSA, or a cold-start receiver repeating timeless sentences): the open epoch is closed; or
   - at end of data, signalled by ``receive_data(b"")`` (as in h11).

   GSA and VTG have no time of their own: they belong to the open epoch; one arriving after that epoch was
   emitted (the second GSA of a multi-constellation receiver) is dropped.
4. **Plausibility** - refused with a reason, never passed on: placeholder positions that receivers print before
   their first fix (``8960.0000N`` = 90 N, ``0000.0000N 00000.0000E``), latitudes/longitudes, speeds, tracks,
   altitudes out of range. A date before ``min_date`` (a GPS week-number rollover moves it 1024 weeks back; the
   GPS epoch ``060180`` of a receiver without almanac) or an impossible one (``2208-1``) keeps the position but
   not the time: ``GpsFix.time`` is None and ``time_plausible`` False.

Never raises on input: every refusal is an ``NmeaRejected`` event with a reason and the offending bytes.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pynmea2

__all__ = [
    "GNSS_TALKERS",
    "KNOT_MPS",
    "MAX_NMEA_LINE",
    "MAX_SPEED_MPS",
    "MIN_PLAUSIBLE_DATE",
    "GpsFix",
    "NmeaDecoder",
    "NmeaEvent",
    "NmeaRejected",
    "build_gga",
    "build_gsa",
    "build_rmc",
    "checksum",
    "fix_to_tpv",
    "nmea_sentences",
]

#: Longest line accepted: bytes before the ``\n``, a ``\r`` included. NMEA 0183 caps a sentence at 82
#: characters, but receivers exceed it (RTK positions with 8 decimals, NMEA 4.1 extra fields, MediaTek's 206-byte
#: ``$PMTKCHN``); 256 keeps every real log we hold and still bounds what a babbling or mis-bauded device makes us
#: buffer.
MAX_NMEA_LINE = 256

#: Default ``NmeaDecoder(min_date=...)``: dates before this are refused as time (the position is kept). This
#: code did not run before it, so no live receiver can truly report an earlier date: one that does was hit by the
#: GPS week-number rollover (1999-08-21, 2019-04-06, or its own firmware's pivot) and reports a date 1024 weeks
#: (~19.6 years) in the past, or has no almanac yet and reports the GPS epoch (1980-01-06). Decoding old recorded
#: logs takes an earlier ``min_date``.
MIN_PLAUSIBLE_DATE = date(2024, 1, 1)

#: Talker ids of GNSS receivers: GPS, combined GNSS, BeiDou (Chinese TSCPB ``BD`` and NMEA 4.11 ``GB``), GLONASS,
#: Galileo, NavIC, QZSS. Sentences of other talkers (an echo sounder's ``SD``...) are ignored.
GNSS_TALKERS = frozenset({"GP", "GN", "BD", "GB", "GL", "GA", "GI", "GQ"})

#: Fastest ground speed accepted: 1000 knots (~515 m/s), the export-control limit above which receivers stop
#: reporting. Anything faster is a corrupted field.
MAX_SPEED_MPS = 1000 * 1852.0 / 3600.0
#: Altitude range accepted (metres): below the Dead Sea shore by a margin, up to the 18 km export-control ceiling.
MIN_ALT_M, MAX_ALT_M = -1_000.0, 18_000.0

#: One international knot in metres per second (1852 m per hour).
KNOT_MPS = 1852.0 / 3600.0

_YEAR_PIVOT = 80  # two-digit years from here are 19yy (GPS epoch 1980)

#: Framing tokens: a newline, a sentence start, or a run of anything else. Tokens are handled as if byte by
#: byte, so the events never depend on how the input was split into ``receive_data`` calls.
_TOKENS = re.compile(rb"\n|\$|[^\n$]+")

#: An epoch without RMC (a GGA alone, the last of a log) takes the date of the last dated epoch when it is at most
#: this much later, as gpsd does; older dates are not carried (a receiver silent for hours may have rolled over).
DATE_CARRY = timedelta(minutes=10)

_USED_TYPES = frozenset({"RMC", "GGA", "GNS", "GSA", "VTG"})
_QUALITY_TYPES = frozenset({"GGA", "GNS"})  # satellites, HDOP, altitude, fix quality
_TIMED_TYPES = frozenset({"RMC", "GGA", "GNS"})  # sentences that carry the epoch's time
_GNS_FIX_MODES = frozenset("ADPRF")  # GNS mode letters of a fix (N none, E estimated, M manual, S simulated)


@dataclass(frozen=True)
class GpsFix:
    """What the receiver said about one epoch (one UTC time).

    ``time`` is aware UTC, or None when the receiver gave no date/time, or gave one we refuse (then
    ``time_plausible`` is False: week-rollover dates before the decoder's ``min_date``, malformed dates); the
    position is kept either way. ``valid`` is the receiver's own verdict (RMC status ``A``, GGA quality > 0, GNS
    mode not ``N``) with a
    position present. ``mode`` follows gpsd: 1 no fix, 2 2D, 3 3D (from GSA when sent, else inferred).
    """

    time: datetime | None
    lat: float | None
    lon: float | None
    alt_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    mode: int = 1
    satellites: int | None = None
    hdop: float | None = None
    valid: bool = False
    time_plausible: bool = True


@dataclass(frozen=True)
class NmeaRejected:
    """Input refused: a bad checksum, garbage, an overlong line or a malformed field (``line`` holds the bytes)."""

    reason: str
    line: bytes


NmeaEvent = GpsFix | NmeaRejected


class _FieldError(ValueError):
    """A field of an otherwise well-formed sentence cannot be read."""


# --- field parsers (raw strings from the sentence; '' means "not given") -----------------------------------


def _opt_float(raw: str, name: str) -> float | None:
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _FieldError(f"bad {name} {raw!r}") from None
    if not math.isfinite(value):
        raise _FieldError(f"bad {name} {raw!r}")
    return value


def _opt_int(raw: str, name: str) -> int | None:
    if raw == "":
        return None
    if not raw.isdigit():
        raise _FieldError(f"bad {name} {raw!r}")
    return int(raw)


def _time_of_day(raw: str) -> time | None:
    """``hhmmss[.sss]`` -> time, '' -> None."""
    if raw == "":
        return None
    head, _, frac = raw.partition(".")
    if len(head) != 6 or not head.isdigit() or (frac and not frac.isdigit()):
        raise _FieldError(f"bad time {raw!r}")
    hh, mm, ss = int(head[0:2]), int(head[2:4]), int(head[4:6])
    if hh > 23 or mm > 59 or ss > 60:
        raise _FieldError(f"bad time {raw!r}")
    micro = int((frac + "000000")[:6]) if frac else 0
    # A leap second (ss == 60) is folded onto :59.999999 rather than refused.
    return time(hh, mm, min(ss, 59), 999999 if ss == 60 else micro, tzinfo=UTC)


def _date(raw: str) -> date | None:
    """``ddmmyy`` -> date; None when absent or impossible (caller marks the time implausible).

    Two-digit years pivot at ``_YEAR_PIVOT`` as gpsd does (GPS time starts in 1980): 80-99 are 19yy, so a
    week-rollover "99" is 1999 and refused by the decoder's ``min_date``, not read as 2099.
    """
    if len(raw) != 6 or not raw.isdigit():
        return None
    yy = int(raw[4:6])
    try:
        return date((1900 if yy >= _YEAR_PIVOT else 2000) + yy, int(raw[2:4]), int(raw[0:2]))
    except ValueError:
        return None


def _coordinate(raw: str, hemi: str, name: str, limit: float) -> float | None:
    """``dddmm.mmmm`` + hemisphere -> signed degrees; None when absent."""
    if raw == "" and hemi == "":
        return None
    positive, negative = ("N", "S") if name == "latitude" else ("E", "W")
    if hemi not in (positive, negative):
        raise _FieldError(f"bad {name} hemisphere {hemi!r}")
    whole, dot, frac = raw.partition(".")
    if len(whole) < 3 or not whole.isdigit() or (dot and frac and not frac.isdigit()):
        raise _FieldError(f"bad {name} {raw!r}")
    degrees = int(whole[:-2])
    minutes = float(whole[-2:] + (("." + frac) if frac else ""))
    if name == "latitude" and degrees == 89 and minutes == 60.0:
        raise _FieldError(f"placeholder position {raw!r}")  # MediaTek before its first fix: 8960.0000N
    if minutes >= 60.0:
        raise _FieldError(f"bad {name} {raw!r}")
    value = degrees + minutes / 60.0
    if value > limit:
        raise _FieldError(f"{name} out of range {raw!r}")
    return -value if hemi == negative else value


def _field(msg: Any, name: str) -> str:
    """The raw text of a named field (pynmea2 converts lazily and hides conversion errors; we do not)."""
    idx: int = type(msg).name_to_idx[name]
    data: list[str] = msg.data
    return data[idx].strip() if idx < len(data) else ""


# --- epoch assembly ------------------------------------------------------------------------------------------


@dataclass
class _Epoch:
    """The sentences of one UTC time seen so far."""

    tod: time | None = None
    seen: set[str] = field(default_factory=set)
    day: date | None = None
    date_refused: bool = False
    rmc_valid: bool | None = None
    gga_quality: int | None = None
    gns_valid: bool | None = None
    gsa_mode: int | None = None
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    satellites: int | None = None
    hdop: float | None = None

    def to_fix(self, min_date: date, dated: datetime | None) -> GpsFix:
        """The fix; ``dated`` is the last time an RMC dated, which dates an epoch without RMC just after it."""
        when: datetime | None = None
        plausible = not self.date_refused
        if self.day is not None and self.tod is not None:
            if self.day < min_date:
                plausible = False
            else:
                when = datetime.combine(self.day, self.tod)
        elif self.day is None and plausible and self.tod is not None and dated is not None:
            when = datetime.combine(dated.date(), self.tod)
            if when < dated - timedelta(hours=12):
                when += timedelta(days=1)  # past midnight since that RMC
            if not timedelta(0) < when - dated <= DATE_CARRY:
                when = None
        has_position = self.lat is not None and self.lon is not None
        gga_ok = None if self.gga_quality is None else self.gga_quality > 0
        verdicts = [v for v in (self.rmc_valid, gga_ok, self.gns_valid) if v is not None]
        valid = has_position and bool(verdicts) and all(verdicts)
        if not valid:
            mode = 1
        elif self.gsa_mode in (2, 3):
            mode = self.gsa_mode
        else:
            mode = 3 if self.alt_m is not None else 2
        return GpsFix(
            time=when,
            lat=self.lat,
            lon=self.lon,
            alt_m=self.alt_m,
            speed_mps=self.speed_mps,
            track_deg=self.track_deg,
            mode=mode,
            satellites=self.satellites,
            hdop=self.hdop,
            valid=valid,
            time_plausible=plausible,
        )


class NmeaDecoder:
    """Sans-IO NMEA decoder: ``receive_data(bytes)`` in, ``next_event()`` out (None = need more data).

    ``comments=True`` skips lines starting with ``#`` and gpsd JSON lines (``{``), as found in recorded test
    logs; a live receiver never sends them, so the default refuses them like any other garbage. ``min_date``:
    earlier dates are refused as time (see ``MIN_PLAUSIBLE_DATE``).
    """

    def __init__(self, *, comments: bool = False, min_date: date = MIN_PLAUSIBLE_DATE) -> None:
        self._comments = comments
        self.min_date = min_date
        self._partial = bytearray()
        self._discarding = False  # inside an overlong line: drop bytes up to the next newline
        self._in_comment = False  # inside a comment line (comments=True): drop silently up to the newline
        self._lines: deque[bytes | NmeaRejected] = deque()
        self._events: deque[NmeaEvent] = deque()
        self._epoch: _Epoch | None = None
        self._epoch_emitted = False
        self._dated: datetime | None = None  # time of the last epoch whose RMC gave a date we accept
        self._eof = False
        self._closed = False
        self.ignored = 0  # well-formed sentences of types we do not use

    # --- framing ---

    def receive_data(self, data: bytes) -> None:
        """Feed bytes as they come; ``b""`` means end of data (flushes the last line and the open epoch)."""
        if self._eof:
            return
        if not data:
            self._eof = True
            if self._partial and not (self._discarding or self._in_comment):
                self._lines.append(bytes(self._partial))
            self._partial.clear()
            return
        for token in _TOKENS.finditer(data):
            piece = token.group()
            if piece == b"\n":
                if not (self._discarding or self._in_comment):
                    self._lines.append(bytes(self._partial))
                self._partial.clear()
                self._discarding = self._in_comment = False
            elif self._in_comment:
                continue
            elif piece == b"$":
                # A new sentence starts: what came before it on this line is junk (binary frames of a receiver
                # interleaving them, a cut-off sentence). It is refused, and framing resynchronises here.
                junk = bytes(self._partial).strip()
                if junk and not self._discarding:
                    self._lines.append(NmeaRejected("junk before sentence", junk))
                self._partial[:] = b"$"
                self._discarding = False
            elif self._discarding:
                continue
            elif self._comments and not self._partial and piece[:1] in (b"#", b"{"):
                self._in_comment = True
            else:
                room = MAX_NMEA_LINE - len(self._partial)
                if len(piece) <= room:
                    self._partial += piece
                else:
                    head = bytes(self._partial + piece[:room])
                    self._lines.append(NmeaRejected(f"line too long (over {MAX_NMEA_LINE} bytes)", head))
                    self._partial.clear()
                    self._discarding = True

    def next_event(self) -> NmeaEvent | None:
        """The next fix or refusal, or None when more data is needed (or, after end of data, when done)."""
        while not self._events:
            if self._lines:
                item = self._lines.popleft()
                if isinstance(item, NmeaRejected):
                    self._events.append(item)
                else:
                    self._line(item)
            elif self._eof and not self._closed:
                self._closed = True
                self._close_epoch()
            else:
                return None
        return self._events.popleft()

    # --- sentences ---

    def _line(self, raw: bytes) -> None:
        line = raw.strip()
        if not line:
            return
        if self._comments and line[:1] in (b"#", b"{"):
            return
        dollar = line.rfind(b"$")
        if dollar < 0:
            self._events.append(NmeaRejected("not an NMEA sentence", raw))
            return
        if dollar > 0:
            self._events.append(NmeaRejected("junk before sentence", line[:dollar]))
            line = line[dollar:]
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self._events.append(NmeaRejected("non-ASCII bytes in sentence", line))
            return
        if not text.isprintable():
            self._events.append(NmeaRejected("control characters in sentence", line))
            return
        try:
            msg = pynmea2.parse(text, check=True)
        except pynmea2.SentenceTypeError:
            self.ignored += 1  # checksum was good (checked first); a type pynmea2 does not know
            return
        except pynmea2.ChecksumError as exc:
            reason = "missing checksum" if "missing" in str(exc) else "bad checksum"
            self._events.append(NmeaRejected(reason, line))
            return
        except (pynmea2.ParseError, ValueError, IndexError, TypeError, AttributeError):
            self._events.append(NmeaRejected("malformed sentence", line))
            return
        kind = str(getattr(msg, "sentence_type", ""))
        if (
            not isinstance(msg, pynmea2.TalkerSentence)
            or kind not in _USED_TYPES
            or str(getattr(msg, "talker", "")) not in GNSS_TALKERS
        ):
            self.ignored += 1
            return
        try:
            if kind == "RMC":
                self._rmc(msg)
            elif kind in _QUALITY_TYPES:
                self._quality(msg, kind)
            elif kind == "GSA":
                self._gsa(msg)
            else:
                self._vtg(msg)
        except _FieldError as exc:
            self._events.append(NmeaRejected(f"{kind}: {exc}", line))
        except (KeyError, IndexError):
            self._events.append(NmeaRejected(f"{kind}: missing fields", line))

    def _open(self, kind: str, tod: time | None) -> _Epoch | None:
        """The epoch a timed sentence belongs to; None when it repeats a type already in this epoch.

        Another time closes the open epoch. A repeat with the same time (``GPGGA`` then ``GLGGA``) adds
        nothing: the first sentence of each type wins. A repeat without any time (a cold-start receiver
        sending empty sentences each second) closes the epoch, since there is nothing else to tell them apart.
        """
        ep = self._epoch
        if ep is not None and ep.tod == tod and kind in ep.seen:
            if tod is not None:
                return None
            ep = None
        if ep is None or ep.tod != tod:
            self._close_epoch()
            ep = self._epoch = _Epoch(tod=tod)
            self._epoch_emitted = False
        ep.seen.add(kind)
        return ep

    def _maybe_emit(self) -> None:
        ep = self._epoch
        if (
            ep is not None
            and not self._epoch_emitted
            and "RMC" in ep.seen
            and "GSA" in ep.seen
            and ep.seen & _QUALITY_TYPES
        ):
            self._emit(ep)
            self._epoch_emitted = True

    def _emit(self, ep: _Epoch) -> None:
        fix = ep.to_fix(self.min_date, self._dated)
        if fix.time is not None and ep.day is not None:
            self._dated = fix.time
        self._events.append(fix)

    def _close_epoch(self) -> None:
        if self._epoch is not None and not self._epoch_emitted and self._epoch.seen & _TIMED_TYPES:
            self._emit(self._epoch)
        self._epoch = None
        self._epoch_emitted = False

    def _rmc(self, msg: Any) -> None:
        tod = _time_of_day(_field(msg, "timestamp"))
        status = _field(msg, "status")
        lat = _coordinate(_field(msg, "lat"), _field(msg, "lat_dir"), "latitude", 90.0)
        lon = _coordinate(_field(msg, "lon"), _field(msg, "lon_dir"), "longitude", 180.0)
        knots = _speed_knots(_field(msg, "spd_over_grnd"))
        track = _track(_field(msg, "true_course"))
        _no_null_island(lat, lon)
        raw_date = _field(msg, "datestamp")
        day = _date(raw_date)
        mode_indicator = _field(msg, "mode_indicator") if len(msg.data) > 11 else ""
        ep = self._open("RMC", tod)
        if ep is None:
            return
        ep.day = day
        ep.date_refused = raw_date != "" and day is None
        ep.rmc_valid = status == "A" and mode_indicator != "N"
        if lat is not None and lon is not None:
            ep.lat, ep.lon = lat, lon
        ep.speed_mps = None if knots is None else knots * KNOT_MPS
        ep.track_deg = track
        self._maybe_emit()

    def _quality(self, msg: Any, kind: str) -> None:
        """GGA or GNS: fix quality, satellites, HDOP, altitude (and the position when RMC gave none)."""
        tod = _time_of_day(_field(msg, "timestamp"))
        lat = _coordinate(_field(msg, "lat"), _field(msg, "lat_dir"), "latitude", 90.0)
        lon = _coordinate(_field(msg, "lon"), _field(msg, "lon_dir"), "longitude", 180.0)
        _no_null_island(lat, lon)
        quality: int | None = None
        if kind == "GGA":
            quality = _opt_int(_field(msg, "gps_qual"), "quality")
            fixed = None if quality is None else quality > 0
        else:
            modes = _field(msg, "mode_indicator")
            fixed = bool(set(modes) & _GNS_FIX_MODES) if modes else None
        sats = _opt_int(_field(msg, "num_sats"), "satellites")
        hdop = _opt_float(_field(msg, "horizontal_dil" if kind == "GGA" else "hdop"), "hdop")
        if hdop is not None and hdop < 0:
            raise _FieldError(f"negative hdop {hdop!r}")
        alt = _opt_float(_field(msg, "altitude"), "altitude")
        if alt is not None and not MIN_ALT_M <= alt <= MAX_ALT_M:
            raise _FieldError(f"altitude out of range {alt!r}")
        ep = self._open(kind, tod)
        if ep is None:
            return
        if ep.seen & _QUALITY_TYPES - {kind}:
            self._maybe_emit()
            return  # GGA and GNS of one epoch: the first one wins
        if kind == "GGA":
            ep.gga_quality = quality
        else:
            ep.gns_valid = fixed
        ep.satellites = sats
        ep.hdop = hdop
        if lat is not None and lon is not None:
            if ep.lat is None:
                ep.lat, ep.lon = lat, lon
            ep.alt_m = alt if fixed else None
        self._maybe_emit()

    def _vtg(self, msg: Any) -> None:
        """VTG: speed and track for the open epoch when its RMC gave none (timeless, like GSA)."""
        track = _track(_field(msg, "true_track"))
        knots = _speed_knots(_field(msg, "spd_over_grnd_kts"))
        if knots is None:
            kmh = _speed_knots(_field(msg, "spd_over_grnd_kmph"))
            knots = None if kmh is None else kmh / 1.852
        if _field(msg, "faa_mode") == "N":
            return  # the receiver says this velocity is not a fix
        ep = self._epoch
        if ep is None or self._epoch_emitted or "VTG" in ep.seen:
            return
        ep.seen.add("VTG")
        if ep.speed_mps is None and knots is not None:
            ep.speed_mps = knots * KNOT_MPS
        if ep.track_deg is None:
            ep.track_deg = track

    def _gsa(self, msg: Any) -> None:
        mode = _opt_int(_field(msg, "mode_fix_type"), "fix type")
        if mode is not None and mode not in (1, 2, 3):
            raise _FieldError(f"bad fix type {mode!r}")
        hdop = _opt_float(_field(msg, "hdop"), "hdop")
        ep = self._epoch
        if ep is None or self._epoch_emitted:
            return  # no open epoch: belongs to one already emitted (or none seen yet)
        if "GSA" not in ep.seen:
            ep.seen.add("GSA")
            ep.gsa_mode = mode
            if ep.hdop is None:
                ep.hdop = hdop
        self._maybe_emit()


def _speed_knots(raw: str) -> float | None:
    knots = _opt_float(raw, "speed")
    if knots is not None and knots < 0:
        raise _FieldError(f"negative speed {knots!r}")
    if knots is not None and knots * KNOT_MPS > MAX_SPEED_MPS:
        raise _FieldError(f"speed out of range {knots!r}")
    return knots


def _track(raw: str) -> float | None:
    track = _opt_float(raw, "track")
    if track is not None and not 0.0 <= track <= 360.0:
        raise _FieldError(f"track out of range {track!r}")
    return None if track is None else track % 360.0


def _no_null_island(lat: float | None, lon: float | None) -> None:
    """0 N 0 E to the digit is what receivers print before a fix (no car trains in the Gulf of Guinea)."""
    if lat == 0.0 and lon == 0.0:
        raise _FieldError("placeholder position 0N 0E")


# --- gpsd TPV view ---------------------------------------------------------------------------------------------


def fix_to_tpv(fix: GpsFix) -> dict[str, object]:
    """The fix in gpsd's TPV vocabulary: class, mode, time (ISO 8601 UTC, ms, ``Z``; absent when unknown),
    lat/lon (mode >= 2), alt (mode 3), speed (m/s), track (degrees)."""
    tpv: dict[str, object] = {"class": "TPV", "mode": fix.mode}
    if fix.time is not None:
        tpv["time"] = fix.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{fix.time.microsecond // 1000:03d}Z"
    if fix.mode >= 2 and fix.lat is not None and fix.lon is not None:
        tpv["lat"] = round(fix.lat, 9)
        tpv["lon"] = round(fix.lon, 9)
    if fix.mode == 3 and fix.alt_m is not None:
        tpv["alt"] = fix.alt_m
    if fix.speed_mps is not None:
        tpv["speed"] = round(fix.speed_mps, 3)
    if fix.track_deg is not None:
        tpv["track"] = fix.track_deg
    return tpv


# --- builders (for simulators and round-trip tests) ----------------------------------------------------------


def checksum(body: str) -> int:
    """XOR of the characters between ``$`` and ``*``."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return value


def _frame(body: str) -> bytes:
    return f"${body}*{checksum(body):02X}\r\n".encode("ascii")


def _fmt_coordinate(value: float, width: int, hemis: tuple[str, str]) -> tuple[str, str]:
    """Signed degrees -> (``dddmm.mmmmm``, hemisphere), rounded on 1e-5 minute (about 2 cm)."""
    units = round(abs(value) * 60 * 100_000)  # 1e-5 minutes
    deg, rest = divmod(units, 60 * 100_000)
    minutes, frac = divmod(rest, 100_000)
    return f"{deg:0{width}d}{minutes:02d}.{frac:05d}", hemis[0] if value >= 0 else hemis[1]


def _fmt_time(t: datetime) -> tuple[str, str]:
    u = t.astimezone(UTC)
    centis = round(u.microsecond / 10_000)
    if centis == 100:  # rounds up into the next second
        u = u.replace(microsecond=0) + timedelta(seconds=1)
        centis = 0
    return f"{u:%H%M%S}.{centis:02d}", f"{u:%d%m%y}"


def build_rmc(
    t: datetime,
    lat: float,
    lon: float,
    speed_mps: float,
    track_deg: float,
    valid: bool = True,
    talker: str = "GN",
) -> bytes:
    """One RMC sentence (with ``\\r\\n``) for an aware time, signed degrees, m/s and degrees true."""
    if t.tzinfo is None:
        raise ValueError("build_rmc needs an aware datetime")
    hms, dmy = _fmt_time(t)
    la, ns = _fmt_coordinate(lat, 2, ("N", "S"))
    lo, ew = _fmt_coordinate(lon, 3, ("E", "W"))
    status, mode = ("A", "A") if valid else ("V", "N")
    knots = max(0.0, speed_mps) / KNOT_MPS
    body = f"{talker}RMC,{hms},{status},{la},{ns},{lo},{ew},{knots:.3f},{track_deg % 360.0:.2f},{dmy},,,{mode}"
    return _frame(body)


def build_gga(
    t: datetime,
    lat: float,
    lon: float,
    alt_m: float = 20.0,
    satellites: int = 12,
    hdop: float = 0.9,
    quality: int = 1,
    talker: str = "GN",
) -> bytes:
    """One GGA sentence; ``quality`` 0 = no fix, 1 = GPS, 2 = DGPS, 4 = RTK fixed."""
    if t.tzinfo is None:
        raise ValueError("build_gga needs an aware datetime")
    hms, _ = _fmt_time(t)
    la, ns = _fmt_coordinate(lat, 2, ("N", "S"))
    lo, ew = _fmt_coordinate(lon, 3, ("E", "W"))
    body = f"{talker}GGA,{hms},{la},{ns},{lo},{ew},{quality},{satellites:02d},{hdop:.1f},{alt_m:.1f},M,0.0,M,,"
    return _frame(body)


def build_gsa(
    mode: int = 3,
    prns: tuple[int, ...] = (1, 3, 8, 11, 14, 17, 22, 28),
    pdop: float = 1.6,
    hdop: float = 0.9,
    vdop: float = 1.3,
    talker: str = "GN",
) -> bytes:
    """One GSA sentence: automatic selection, ``mode`` 1/2/3, up to 12 satellite ids."""
    if mode not in (1, 2, 3):
        raise ValueError("GSA mode is 1, 2 or 3")
    ids = [f"{p:02d}" for p in prns[:12]] + [""] * (12 - min(12, len(prns)))
    body = f"{talker}GSA,A,{mode},{','.join(ids)},{pdop:.1f},{hdop:.1f},{vdop:.1f}"
    return _frame(body)


def nmea_sentences(fix: GpsFix, talker: str = "GN") -> bytes:
    """RMC + GGA + GSA for one fix: what a receiver sends each second (the simulator's output).

    Needs ``fix.time``, ``lat`` and ``lon``; missing speed/track/alt/satellites/hdop get neutral defaults.
    """
    if fix.time is None or fix.lat is None or fix.lon is None:
        raise ValueError("nmea_sentences needs a fix with time, lat and lon")
    sats = fix.satellites if fix.satellites is not None else 12
    hdop = fix.hdop if fix.hdop is not None else 0.9
    mode = fix.mode if fix.valid else 1
    return (
        build_rmc(fix.time, fix.lat, fix.lon, fix.speed_mps or 0.0, fix.track_deg or 0.0, fix.valid, talker)
        + build_gga(
            fix.time,
            fix.lat,
            fix.lon,
            fix.alt_m if fix.alt_m is not None else 0.0,
            sats,
            hdop,
            1 if fix.valid else 0,
            talker,
        )
        + build_gsa(mode, tuple(range(1, min(sats, 12) + 1)), hdop=hdop, talker=talker)
    )
