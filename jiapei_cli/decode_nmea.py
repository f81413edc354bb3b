"""`jiapei decode nmea [--min-date YYYY-MM-DD] FILE|-`: one gpsd-style JSON line per fix (TPV) and per refused
input (ERROR).

Dates before ``--min-date`` (default: the live terminal's ``MIN_PLAUSIBLE_DATE``) are refused as time, as in the
agent; give an earlier one to see the times of old captures (``--min-date 2000-01-01``)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import BinaryIO, TextIO

from firmware_protocols.nmea import MIN_PLAUSIBLE_DATE, GpsFix, NmeaDecoder, fix_to_tpv

READ_CHUNK = 65536  # bytes per read: the decoder's line buffer stays bounded whatever the file size


def _emit(decoder: NmeaDecoder, out: TextIO) -> None:
    while (event := decoder.next_event()) is not None:
        if isinstance(event, GpsFix):
            obj: dict[str, object] = fix_to_tpv(event)
        else:
            obj = {"class": "ERROR", "reason": event.reason, "line": event.line.decode("ascii", "backslashreplace")}
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")


def decode_stream(src: BinaryIO, out: TextIO, min_date: date = MIN_PLAUSIBLE_DATE) -> None:
    """Decode every byte of ``src`` (comment lines of recorded logs skipped) and print what was seen."""
    decoder = NmeaDecoder(comments=True, min_date=min_date)
    while chunk := src.read(READ_CHUNK):
        decoder.receive_data(chunk)
        _emit(decoder, out)
    decoder.receive_data(b"")
    _emit(decoder, out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jiapei decode nmea")
    parser.add_argument("--min-date", type=date.fromisoformat, default=MIN_PLAUSIBLE_DATE)
    parser.add_argument("path")
    args = parser.parse_args(argv)
    return run(args.path, args.min_date)


def run(path: str, min_date: date = MIN_PLAUSIBLE_DATE) -> int:
    """Decode ``path`` ("-" for stdin). Returns 0, or 1 when the file cannot be read (reported as ERROR)."""
    out = sys.stdout
    try:
        if path == "-":
            decode_stream(sys.stdin.buffer, out, min_date)
        else:
            with open(path, "rb") as src:
                decode_stream(src, out, min_date)
    except OSError as exc:
        out.write(json.dumps({"class": "ERROR", "reason": f"cannot read {path}: {exc.strerror or exc}"}) + "\n")
        return 1
    except BrokenPipeError:  # pragma: no cover - `| head` closed the pipe
        return 0
    out.flush()
    return 0
