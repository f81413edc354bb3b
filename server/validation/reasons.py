"""Reason codes of minute verdicts, with the text an operator reads in English and Chinese."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a minute is invalid. The value is the code stored beside a verdict and returned by the API."""

    NO_FIX = "no_fix"
    OUTSIDE_TIME_WINDOW = "outside_time_window"
    ENGINE_OFF = "engine_off"
    STATIONARY = "stationary"
    FACE_FAILED = "face_failed"
    BAD_COURSE = "bad_course"
    DAILY_CAP = "daily_cap"
    # minute rules that look at the minute alone
    OUTSIDE_TEACHING_AREA = "outside_teaching_area"
    GNSS_TIME_MISMATCH = "gnss_time_mismatch"
    RECORD_DATE_MISMATCH = "record_date_mismatch"
    TIME_IN_FUTURE = "time_in_future"
    BACKFILL_TOO_LATE = "backfill_too_late"
    COACH_NOT_LICENSED = "coach_not_licensed"
    FOREIGN_SCHOOL = "foreign_school"
    FOREIGN_CAR = "foreign_car"
    SPEED_MISMATCH = "speed_mismatch"
    # minute rules that look at the session
    TELEPORT = "teleport"
    FACE_OVERDUE = "face_overdue"
    PHOTO_MISSING = "photo_missing"
    # session rules (every minute of the session gets the code)
    SESSION_TOO_SHORT = "session_too_short"
    SESSION_LOW_VALID = "session_low_valid"
    SESSION_PHOTOS_MISSING = "session_photos_missing"
    # session rules on the photos and the server's own findings about them
    SERVER_FACE_MISMATCH = "server_face_mismatch"
    DUPLICATE_PHOTO = "duplicate_photo"
    FIRST_PHOTO_NOT_SIGN_IN = "first_photo_not_sign_in"
    LAST_PHOTO_NOT_SIGN_OUT = "last_photo_not_sign_out"
    # rules across sessions and terminals
    TIME_BACKWARDS = "time_backwards"
    STUDENT_OVERLAP = "student_overlap"
    COACH_OVERLAP = "coach_overlap"
    REPLAYED_TRACK = "replayed_track"
    # manual review
    MANUAL_FAILED = "manual_failed"
    # the exam side
    EXAM_REJECTED = "exam_rejected"


#: Reasons that point to fraud rather than to a bad minute: a minute or session with one of them goes to the review
#: queue (it stays invalid until an operator passes it).
REVIEW_REASONS: frozenset[str] = frozenset(
    {
        Reason.TELEPORT,
        Reason.GNSS_TIME_MISMATCH,
        Reason.RECORD_DATE_MISMATCH,
        Reason.TIME_IN_FUTURE,
        Reason.TIME_BACKWARDS,
        Reason.STUDENT_OVERLAP,
        Reason.COACH_OVERLAP,
        Reason.FOREIGN_SCHOOL,
        Reason.EXAM_REJECTED,
        Reason.REPLAYED_TRACK,
        Reason.FOREIGN_CAR,
        Reason.SPEED_MISMATCH,
        Reason.SERVER_FACE_MISMATCH,
        Reason.DUPLICATE_PHOTO,
    }
)


#: code → (English, 中文). ``daily_cap`` is applied by the caller from :func:`server.hours.apply_daily_cap`.
REASONS: dict[str, tuple[str, str]] = {
    Reason.NO_FIX: (
        "No usable position: the second-30 fix is missing or not a 2D/3D fix, or too few valid fixes in the minute",
        "无有效定位：第30秒定位缺失或未定位，或本分钟有效定位点过少",
    ),
    Reason.OUTSIDE_TIME_WINDOW: (
        "Practical training outside the allowed time window (Beijing time)",
        "实操培训不在允许的培训时段内（北京时间）",
    ),
    Reason.ENGINE_OFF: ("Engine speed 0: the engine was off", "发动机转速为0：车辆未启动"),
    Reason.STATIONARY: (
        "Speed or distance 0 for too many consecutive minutes: the car was parked",
        "连续多分钟速度或里程为0：车辆静止",
    ),
    Reason.FACE_FAILED: (
        "The last face check of the session failed",
        "本次培训最近一次人脸比对未通过",
    ),
    Reason.BAD_COURSE: ("The course code is not a valid national course code", "课程编码不符合全国统一编码"),
    Reason.DAILY_CAP: (
        "Over the student's daily cap of practical or classroom minutes (Beijing day)",
        "超过学员每日学时上限（按北京日期）",
    ),
    Reason.OUTSIDE_TEACHING_AREA: (
        "The second-30 fix lies outside the school's teaching area for this part",
        "第30秒定位点不在该培训部分的教学区域内",
    ),
    Reason.GNSS_TIME_MISMATCH: (
        "The GNSS time of the second-30 fix does not match the minute's time: the terminal clock was changed",
        "第30秒卫星定位时间与学时记录时间不符：终端时钟被修改",
    ),
    Reason.RECORD_DATE_MISMATCH: (
        "The date in the record number is not the Beijing date of the minute",
        "学时记录编号中的日期与该分钟的北京日期不符",
    ),
    Reason.TIME_IN_FUTURE: (
        "The minute is dated after the server received it",
        "学时记录时间晚于平台接收时间",
    ),
    Reason.BACKFILL_TOO_LATE: (
        "The minute arrived later than the backfill window allows",
        "学时记录补传超过允许的补传期限",
    ),
    Reason.COACH_NOT_LICENSED: (
        "The coach is not registered or not licensed to teach the course's licence class",
        "教练员未备案或不具备该培训车型的准教资格",
    ),
    Reason.FOREIGN_SCHOOL: (
        "The student, coach or terminal belong to different schools",
        "学员、教练员与计时终端不属于同一培训机构",
    ),
    Reason.FOREIGN_CAR: (
        "The car's VIN is not the VIN of the car the terminal is bound to: the terminal was moved into another car",
        "车辆识别代号（VIN）与计时终端绑定的教练车不符：终端被移装到其他车辆",
    ),
    Reason.SPEED_MISMATCH: (
        "Satellite positions say the car drove while its own speed (OBD) stayed at 0: the positions come from an "
        "emulator or a spoofer",
        "卫星定位显示车辆行驶，而车辆自身车速（OBD）始终为0：定位数据来自模拟器或伪造",
    ),
    Reason.TELEPORT: (
        "The position jumped between consecutive minutes faster than any car drives (GPS teleport or spoofing)",
        "相邻分钟定位点间的速度超出车辆可能（定位漂移或伪造）",
    ),
    Reason.FACE_OVERDUE: (
        "No passing face check of the student within the re-check interval",
        "超过规定间隔未进行学员人脸比对",
    ),
    Reason.PHOTO_MISSING: (
        "No photo was taken in this minute's photo window",
        "该分钟所在的拍照周期内没有照片",
    ),
    Reason.SESSION_TOO_SHORT: (
        "The session covers less than the minimum distance",
        "本次培训行驶里程低于最低要求",
    ),
    Reason.SESSION_LOW_VALID: (
        "Too few of the session's minutes are valid",
        "本次培训有效学时比例低于要求",
    ),
    Reason.SESSION_PHOTOS_MISSING: (
        "Consecutive photo windows of the session have no photo: the whole session is invalid",
        "本次培训连续多个拍照周期无照片：整次培训无效",
    ),
    Reason.SERVER_FACE_MISMATCH: (
        "The server's own face check of a photo the terminal passed found another person, no face or several faces",
        "终端判定通过的照片经平台复核为他人、无人脸或多人脸",
    ),
    Reason.DUPLICATE_PHOTO: (
        "A photo of the session is a copy of a photo taken earlier (reused photo)",
        "本次培训的照片与此前拍摄的照片重复（照片被重复使用）",
    ),
    Reason.FIRST_PHOTO_NOT_SIGN_IN: (
        "The session's first photo is not the student's sign-in photo",
        "本次培训的第一张照片不是学员签到照片",
    ),
    Reason.LAST_PHOTO_NOT_SIGN_OUT: (
        "The session's last photo is not the student's sign-out photo",
        "本次培训的最后一张照片不是学员签退照片",
    ),
    Reason.TIME_BACKWARDS: (
        "The minute is dated earlier than a minute the terminal recorded before it (backdated record)",
        "该分钟的时间早于终端此前记录的学时（倒签记录）",
    ),
    Reason.STUDENT_OVERLAP: (
        "The same student trained in the same minute on another terminal",
        "同一学员同一时间在另一计时终端培训",
    ),
    Reason.COACH_OVERLAP: (
        "The same coach taught in the same minute on another terminal",
        "同一教练员同一时间在另一计时终端带教",
    ),
    Reason.REPLAYED_TRACK: (
        "The minute's track repeats position for position the track of an earlier minute (an emulator replaying a "
        "recorded drive)",
        "本分钟轨迹与更早的一分钟逐点完全相同（模拟器回放录制的轨迹）",
    ),
    Reason.MANUAL_FAILED: ("An operator failed this minute in review", "人工审核不通过"),
    Reason.EXAM_REJECTED: (
        "The exam system rejected this minute in a stage review: it waits for an operator's decision",
        "考试系统阶段审核退回该学时，待人工复核",
    ),
}


def describe(code: str, lang: str = "en") -> str:
    """The readable text of a reason code (``lang`` ``"en"`` or ``"zh"``); an unknown code is returned as is."""
    texts = REASONS.get(code)
    if texts is None:
        return code
    return texts[1] if lang.startswith("zh") else texts[0]
