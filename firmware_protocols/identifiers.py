"""National identifiers: 16-character numbers, the 26-character minute record number, the 10-digit course code, and
the car's own identity, its 17-character VIN (ISO 3779)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from firmware_protocols.errors import MalformedMessage

#: Beijing time (Asia/Shanghai has had no DST since 1991): every time on the national wire, and a record number's date.
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")

_NATIONAL_ID = re.compile(r"^[0-9A-Z]{16}$")
_RECORD_NO = re.compile(r"^([0-9A-Z]{16})(\d{6})(\d{4})$")
_COURSE = re.compile(r"^([1-4])(\d{2})([1-4])(\d{2})0000$")
#: ISO 3779 / GB 16735: 17 characters, digits and capital letters without I, O and Q (read as 1 and 0).
_VIN = re.compile(r"[0-9A-HJ-NPR-Z]{17}")  # with fullmatch: "$" would let a final newline through

#: Licence class → the two-digit class code of the course code.
CLASS_CODES: dict[str, str] = {
    "A1": "01", "A2": "02", "A3": "03", "B1": "11", "B2": "12", "C1": "21", "C2": "22", "C3": "23", "C4": "24",
    "C5": "25", "D": "31", "E": "32", "F": "33", "M": "41", "N": "42", "P": "43",
}  # fmt: skip
CLASS_BY_CODE = {code: cls for cls, code in CLASS_CODES.items()}
MODES = {1: "practical", 2: "classroom", 3: "simulator", 4: "remote"}
MAX_DAILY_SEQUENCE = 9999


def check_national_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NATIONAL_ID.match(value):
        raise MalformedMessage(f"{what} must be 16 characters 0-9A-Z, got {value!r}", f"bad_{what}")
    return value


def is_vin(value: object) -> bool:
    """A well-formed vehicle identification number: 17 characters ``0-9A-Z`` without I, O, Q. The check digit
    (position 9) is not checked: mandatory in China and North America only, imported cars may lack it."""
    return isinstance(value, str) and _VIN.fullmatch(value) is not None


def check_vin(value: object) -> str:
    if not isinstance(value, str) or not is_vin(value):
        raise MalformedMessage(f"VIN must be 17 characters 0-9A-Z without I, O, Q, got {value!r}", "bad_vin")
    return value


@dataclass(frozen=True, slots=True)
class RecordNumber:
    """``terminal (16) + YYMMDD (Beijing date) + daily sequence (4 digits from 0001)``."""

    terminal: str
    day: date
    sequence: int

    def __str__(self) -> str:
        return f"{self.terminal}{self.day:%y%m%d}{self.sequence:04d}"

    @classmethod
    def parse(cls, text: object) -> RecordNumber:
        m = _RECORD_NO.match(text) if isinstance(text, str) else None
        if m is None:
            raise MalformedMessage(f"record number must be 26 characters, got {text!r}", "bad_record_no")
        try:
            day = datetime.strptime(m.group(2), "%y%m%d").date()  # noqa: DTZ007 - a bare date
        except ValueError as exc:
            raise MalformedMessage(f"record number has no valid date: {text!r}", "bad_record_no") from exc
        seq = int(m.group(3))
        if not 1 <= seq <= MAX_DAILY_SEQUENCE:
            raise MalformedMessage(f"daily sequence out of range in {text!r}", "bad_record_no")
        return cls(m.group(1), day, seq)


def beijing_day(t: datetime) -> date:
    """The Beijing calendar day of an aware time (a student's 'day', a record number's date)."""
    if t.tzinfo is None:
        raise ValueError("naive datetime")
    return t.astimezone(BEIJING).date()


@dataclass(frozen=True, slots=True)
class CourseCode:
    """``mode (1) + class (2) + part (1) + item (2) + 0000``, e.g. 1212130000 = practical, C1, part 2, item 13."""

    mode: int
    class_code: str
    part: int
    item: int

    @property
    def licence_class(self) -> str:
        return CLASS_BY_CODE[self.class_code]

    def __str__(self) -> str:
        return f"{self.mode}{self.class_code}{self.part}{self.item:02d}0000"

    @classmethod
    def parse(cls, text: object) -> CourseCode:
        m = _COURSE.match(text) if isinstance(text, str) else None
        if m is None or m.group(2) not in CLASS_BY_CODE:
            raise MalformedMessage(
                f"course code must be 10 digits as in the national outline, got {text!r}", "bad_course"
            )
        return cls(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))

    @classmethod
    def of(cls, licence_class: str, part: int, item: int, mode: int = 1) -> CourseCode:
        return cls(mode, CLASS_CODES[licence_class], part, item)
