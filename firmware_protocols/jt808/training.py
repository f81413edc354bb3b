"""The training messages carried in the type-0x13 envelope (2016 national terminal <-> platform protocol).

Uplink (terminal -> platform, signed): 0x0101/0x0102 coach login/logout, 0x0201/0x0202 student login/logout,
0x0203 minute record (114 bytes), 0x0205 re-upload answer, 0x0301-0x0306 photos, 0x0501 parameter answer.
Downlink (platform -> terminal, unsigned): 0x8205 re-upload request, 0x8501 terminal parameters, 0x8502 training ban.
National numbers (student, coach, terminal) are 16 GBK characters; the course code is BCD[5] (10 digits); GNSS
blocks are ``Location`` in the training layout (vehicle speed and GNSS speed, extra items mileage and rpm).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Self

from firmware_protocols.identifiers import BEIJING, CourseCode, RecordNumber
from firmware_protocols.jt808.base import TrainingMessage
from firmware_protocols.jt808.errors import BodyError, EncodeError
from firmware_protocols.jt808.fields import (
    Reader,
    bcd_digits,
    bcd_time,
    bcd_time_of_day,
    digits_bcd,
    fixed_gbk,
    gbk_fixed,
    gbk_text,
    text_gbk,
    time_bcd,
    time_of_day_bcd,
    u8,
    u16,
    u32,
)
from firmware_protocols.jt808.header import Version
from firmware_protocols.jt808.location import Location

NUMBER = 16  # national number width
PHOTO_NO = 10
RECORD_NO = 26
MINUTE_RECORD_SIZE = 114

# 0x0305 event types
PHOTO_TIMED = 5
PHOTO_STUDENT_LOGIN = 17
PHOTO_STUDENT_LOGOUT = 18
PHOTO_DURING_TRAINING = 19
PHOTO_COACH_LOGIN = 20
PHOTO_COACH_LOGOUT = 21


def _number(r: Reader, what: str) -> str:
    return gbk_fixed(r.take(NUMBER, what), what)


def _gnss(r: Reader) -> Location:
    return Location.decode(r.rest(), Version.TRAINING)


def _course(r: Reader) -> str:
    return bcd_digits(r.take(5, "course"), "course")


def _tenths(value: float, what: str, top: int = 0xFFFF) -> int:
    raw = round(value * 10)
    if not 0 <= raw <= top:
        raise EncodeError(f"{what} {value} out of range", "value_out_of_range")
    return raw


@dataclass(frozen=True, slots=True)
class CoachLogin(TrainingMessage):
    """0x0101: coach number, identity card number (18), licence class taught (2), GNSS block."""

    MSG_ID = 0x0101
    NAME = "coach login"

    coach: str
    id_card: str
    car_class: str
    gnss: Location

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        coach = _number(r, "coach")
        id_card = gbk_fixed(r.take(18, "id card"), "id card")
        car_class = gbk_fixed(r.take(2, "car class"), "car class")
        return cls(coach, id_card, car_class, _gnss(r))

    def encode(self) -> bytes:
        return (
            fixed_gbk(self.coach, NUMBER, "coach")
            + fixed_gbk(self.id_card, 18, "id card")
            + fixed_gbk(self.car_class, 2, "car class")
            + self.gnss.encode(Version.TRAINING)
        )


@dataclass(frozen=True, slots=True)
class CoachLogout(TrainingMessage):
    """0x0102: coach number, GNSS block."""

    MSG_ID = 0x0102
    NAME = "coach logout"

    coach: str
    gnss: Location

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        return cls(_number(r, "coach"), _gnss(r))

    def encode(self) -> bytes:
        return fixed_gbk(self.coach, NUMBER, "coach") + self.gnss.encode(Version.TRAINING)


@dataclass(frozen=True, slots=True)
class StudentLogin(TrainingMessage):
    """0x0201: student, coach, course code BCD[5], class id DWORD (one training session), GNSS block."""

    MSG_ID = 0x0201
    NAME = "student login"

    student: str
    coach: str
    course: str
    class_id: int
    gnss: Location

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        student, coach = _number(r, "student"), _number(r, "coach")
        course = _course(r)
        return cls(student, coach, course, r.u32("class id"), _gnss(r))

    def encode(self) -> bytes:
        return (
            fixed_gbk(self.student, NUMBER, "student")
            + fixed_gbk(self.coach, NUMBER, "coach")
            + digits_bcd(self.course, 5, "course")
            + u32(self.class_id, "class id")
            + self.gnss.encode(Version.TRAINING)
        )


@dataclass(frozen=True, slots=True)
class StudentLogout(TrainingMessage):
    """0x0202: student, logout time BCD[6], minutes and distance (0.1 km) of this login, class id, GNSS block."""

    MSG_ID = 0x0202
    NAME = "student logout"

    student: str
    time: datetime | None
    minutes: int
    distance_km: float
    class_id: int
    gnss: Location

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        student = _number(r, "student")
        when = bcd_time(r.take(6, "logout time"), "logout time")
        minutes, distance = r.u16("minutes"), r.u16("distance")
        return cls(student, when, minutes, distance / 10, r.u32("class id"), _gnss(r))

    def encode(self) -> bytes:
        return (
            fixed_gbk(self.student, NUMBER, "student")
            + time_bcd(self.time, "logout time")
            + u16(self.minutes, "minutes")
            + u16(_tenths(self.distance_km, "distance"), "distance")
            + u32(self.class_id, "class id")
            + self.gnss.encode(Version.TRAINING)
        )


@dataclass(frozen=True, slots=True)
class MinuteRecord(TrainingMessage):
    """0x0203 a minute of training (114 bytes): the record's day is in its number, its time of day here."""

    MSG_ID = 0x0203
    NAME = "minute record"

    record_no: str
    report_type: int  # 1 automatic, 2 asked for by the platform (0x8205)
    student: str
    coach: str
    class_id: int
    time_of_day: time
    course: str
    status: int
    max_speed_kmh: float
    distance_km: float
    gnss: Location  # the fix at second 30: block + mileage and rpm items (38 bytes)

    @property
    def record_number(self) -> RecordNumber:
        return RecordNumber.parse(self.record_no)

    @property
    def course_code(self) -> CourseCode:
        return CourseCode.parse(self.course)

    @property
    def start(self) -> datetime:
        """Aware UTC start of the minute: the record number's Beijing date with this time of day."""
        day: date = self.record_number.day
        return datetime.combine(day, self.time_of_day, tzinfo=BEIJING).astimezone(UTC)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        record_no = gbk_fixed(r.take(RECORD_NO, "record number"), "record number")
        report_type = r.u8("report type")
        student, coach = _number(r, "student"), _number(r, "coach")
        class_id = r.u32("class id")
        tod = bcd_time_of_day(r.take(3, "time"), "time")
        course = _course(r)
        status = r.u8("status")
        max_speed, distance = r.u16("max speed"), r.u16("distance")
        return cls(
            record_no, report_type, student, coach, class_id, tod, course, status, max_speed / 10, distance / 10,
            _gnss(r),
        )  # fmt: skip

    def encode(self) -> bytes:
        return b"".join(
            (
                fixed_gbk(self.record_no, RECORD_NO, "record number"),
                u8(self.report_type, "report type"),
                fixed_gbk(self.student, NUMBER, "student"),
                fixed_gbk(self.coach, NUMBER, "coach"),
                u32(self.class_id, "class id"),
                time_of_day_bcd(self.time_of_day),
                digits_bcd(self.course, 5, "course"),
                u8(self.status, "status"),
                u16(_tenths(self.max_speed_kmh, "max speed"), "max speed"),
                u16(_tenths(self.distance_km, "distance"), "distance"),
                self.gnss.encode(Version.TRAINING),
            )
        )


@dataclass(frozen=True, slots=True)
class ReuploadRequest(TrainingMessage):
    """0x8205 the platform asks for minute records again: mode 1 by time (start..end), 2 by count."""

    MSG_ID = 0x8205
    NAME = "re-upload request"

    mode: int
    start: datetime | None
    end: datetime | None
    count: int

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        mode = r.u8("mode")
        start = bcd_time(r.take(6, "start"), "start")
        end = bcd_time(r.take(6, "end"), "end")
        out = cls(mode, start, end, r.u16("count"))
        r.end(cls.NAME)
        return out

    def encode(self) -> bytes:
        return u8(self.mode, "mode") + time_bcd(self.start) + time_bcd(self.end) + u16(self.count, "count")


@dataclass(frozen=True, slots=True)
class ResultReply(TrainingMessage):
    """A one-byte result answer (0x0205 re-upload, 0x0302 photo query, 0x0304 photo upload)."""

    result: int

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        out = cls(r.u8("result"))
        r.end(cls.NAME)
        return out

    def encode(self) -> bytes:
        return u8(self.result, "result")


@dataclass(frozen=True, slots=True)
class ReuploadReply(ResultReply):
    """0x0205: 1 uploading, 2 no SD card, 3 no such records, 4 will upload the results."""

    MSG_ID = 0x0205
    NAME = "re-upload reply"


@dataclass(frozen=True, slots=True)
class PhotoNowReply(TrainingMessage):
    """0x0301 answer to "take a photo now": result, upload mode, camera channel, picture size."""

    MSG_ID = 0x0301
    NAME = "photo now reply"

    result: int
    upload_mode: int
    camera: int
    size: int

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        out = cls(r.u8("result"), r.u8("upload mode"), r.u8("camera"), r.u8("size"))
        r.end(cls.NAME)
        return out

    def encode(self) -> bytes:
        head = u8(self.result, "result") + u8(self.upload_mode, "upload mode")
        return head + u8(self.camera, "camera") + u8(self.size, "size")


@dataclass(frozen=True, slots=True)
class PhotoQueryReply(ResultReply):
    """0x0302: 1 query started, 2 failed."""

    MSG_ID = 0x0302
    NAME = "photo query reply"


@dataclass(frozen=True, slots=True)
class PhotoQueryResult(TrainingMessage):
    """0x0303: whether this is the last part, how many photos match, and the photo numbers in this part."""

    MSG_ID = 0x0303
    NAME = "photo query result"

    done: bool
    total: int
    photos: tuple[str, ...]

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        done, total, count = r.u8("done"), r.u8("total"), r.u8("count")
        photos = tuple(gbk_fixed(r.take(PHOTO_NO, "photo number"), "photo number") for _ in range(count))
        r.end(cls.NAME)
        return cls(bool(done), total, photos)

    def encode(self) -> bytes:
        head = u8(int(self.done), "done") + u8(self.total, "total") + u8(len(self.photos), "count")
        return head + b"".join(fixed_gbk(p, PHOTO_NO, "photo number") for p in self.photos)


@dataclass(frozen=True, slots=True)
class PhotoUploadReply(ResultReply):
    """0x0304: 0 found, will upload; 1 no such photo."""

    MSG_ID = 0x0304
    NAME = "photo upload reply"


@dataclass(frozen=True, slots=True)
class PhotoInit(TrainingMessage):
    """0x0305 before a photo's packages: who, why (event type), how big, where, and the face-match confidence."""

    MSG_ID = 0x0305
    NAME = "photo init"

    photo_no: str
    person: str  # student or coach number
    upload_mode: int
    camera: int
    size: int
    event: int  # 5 timed, 17/18 student login/logout, 19 during training, 20/21 coach login/logout
    packages: int
    photo_bytes: int
    class_id: int
    gnss: Location
    face_confidence: int  # 0-100

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        photo_no = gbk_fixed(r.take(PHOTO_NO, "photo number"), "photo number")
        person = _number(r, "person")
        mode, camera, size, event = r.u8("upload mode"), r.u8("camera"), r.u8("size"), r.u8("event")
        packages, photo_bytes, class_id = r.u16("packages"), r.u32("photo size"), r.u32("class id")
        if r.left < 1:
            raise BodyError("photo init without face confidence", "body_too_short")
        gnss = Location.decode(r.take(r.left - 1, "gnss"), Version.TRAINING)
        return cls(photo_no, person, mode, camera, size, event, packages, photo_bytes, class_id, gnss, r.u8("face"))

    def encode(self) -> bytes:
        return b"".join(
            (
                fixed_gbk(self.photo_no, PHOTO_NO, "photo number"),
                fixed_gbk(self.person, NUMBER, "person"),
                u8(self.upload_mode, "upload mode") + u8(self.camera, "camera"),
                u8(self.size, "size") + u8(self.event, "event"),
                u16(self.packages, "packages"),
                u32(self.photo_bytes, "photo size"),
                u32(self.class_id, "class id"),
                self.gnss.encode(Version.TRAINING),
                u8(self.face_confidence, "face confidence"),
            )
        )


@dataclass(frozen=True, slots=True)
class PhotoData(TrainingMessage):
    """0x0306 the photo's bytes (the frame is sub-packaged when it does not fit one)."""

    MSG_ID = 0x0306
    NAME = "photo data"

    photo_no: str
    data: bytes

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        return cls(gbk_fixed(r.take(PHOTO_NO, "photo number"), "photo number"), r.rest())

    def encode(self) -> bytes:
        return fixed_gbk(self.photo_no, PHOTO_NO, "photo number") + self.data


_PARAMS = struct.Struct(">BBBBBHHHBBH")


@dataclass(frozen=True, slots=True)
class TerminalParameters(TrainingMessage):
    """0x8501 the terminal's training parameters (``param_id`` 0: all; n: only the n-th field)."""

    MSG_ID = 0x8501
    NAME = "terminal parameters"

    param_id: int = 0
    photo_interval_min: int = 15
    photo_upload: int = 1  # 0 do not ask to upload, 1 ask
    announce: int = 1  # 1 read out extra messages, 2 do not
    ignition_off_stop_delay_min: int = 0
    ignition_off_gnss_interval_s: int = 3600
    ignition_off_coach_logout_min: int = 150
    reverify_interval_min: int = 30
    coach_cross_school: int = 2  # 1 allowed, 2 forbidden
    student_cross_school: int = 1  # 1 allowed, 2 forbidden
    reply_interval_s: int = 0

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) != _PARAMS.size:
            raise BodyError(f"terminal parameters of {len(data)} bytes, not {_PARAMS.size}", "body_length")
        return cls(*_PARAMS.unpack(data))

    def encode(self) -> bytes:
        try:
            return _PARAMS.pack(
                self.param_id,
                self.photo_interval_min,
                self.photo_upload,
                self.announce,
                self.ignition_off_stop_delay_min,
                self.ignition_off_gnss_interval_s,
                self.ignition_off_coach_logout_min,
                self.reverify_interval_min,
                self.coach_cross_school,
                self.student_cross_school,
                self.reply_interval_s,
            )
        except struct.error as exc:
            raise EncodeError(f"terminal parameter out of range: {exc}", "value_out_of_range") from exc


@dataclass(frozen=True, slots=True)
class TerminalParametersReply(TrainingMessage):
    """0x0501: result (0 set, 1 failed) and the parameter id it answers."""

    MSG_ID = 0x0501
    NAME = "terminal parameters reply"

    result: int
    param_id: int

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        out = cls(r.u8("result"), r.u8("param id"))
        r.end(cls.NAME)
        return out

    def encode(self) -> bytes:
        return u8(self.result, "result") + u8(self.param_id, "param id")


@dataclass(frozen=True, slots=True)
class TrainingBan(TrainingMessage):
    """0x8502 the platform bans (2) or allows (1) training on this terminal, with a message for the screen."""

    MSG_ID = 0x8502
    NAME = "training ban"

    status: int
    message: str = ""

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data)
        status = r.u8("status")
        text = gbk_text(r.take(r.u8("message length"), "message"), "message")
        r.end(cls.NAME)
        return cls(status, text)

    def encode(self) -> bytes:
        raw = text_gbk(self.message, "message")
        return u8(self.status, "status") + u8(len(raw), "message length") + raw


@dataclass(frozen=True, slots=True)
class TrainingUnknown(TrainingMessage):
    """An envelope id without a decoder here: its data as it came."""

    NAME = "unknown"

    id: int
    data: bytes

    @property
    def msg_id(self) -> int:
        return self.id

    def encode(self) -> bytes:
        return self.data


#: Envelope message id -> decoder of its data.
TRAINING_MESSAGES: dict[int, Callable[[bytes], TrainingMessage]] = {
    CoachLogin.MSG_ID: CoachLogin.decode,
    CoachLogout.MSG_ID: CoachLogout.decode,
    StudentLogin.MSG_ID: StudentLogin.decode,
    StudentLogout.MSG_ID: StudentLogout.decode,
    MinuteRecord.MSG_ID: MinuteRecord.decode,
    ReuploadRequest.MSG_ID: ReuploadRequest.decode,
    ReuploadReply.MSG_ID: ReuploadReply.decode,
    PhotoNowReply.MSG_ID: PhotoNowReply.decode,
    PhotoQueryReply.MSG_ID: PhotoQueryReply.decode,
    PhotoQueryResult.MSG_ID: PhotoQueryResult.decode,
    PhotoUploadReply.MSG_ID: PhotoUploadReply.decode,
    PhotoInit.MSG_ID: PhotoInit.decode,
    PhotoData.MSG_ID: PhotoData.decode,
    TerminalParameters.MSG_ID: TerminalParameters.decode,
    TerminalParametersReply.MSG_ID: TerminalParametersReply.decode,
    TrainingBan.MSG_ID: TrainingBan.decode,
}


def decode_training(msg_id: int, data: bytes) -> TrainingMessage:
    """An envelope's data -> its typed message (``TrainingUnknown`` for ids without a decoder)."""
    decoder = TRAINING_MESSAGES.get(msg_id)
    return TrainingUnknown(msg_id, data) if decoder is None else decoder(data)
