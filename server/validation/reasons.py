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
        "Over the student's daily cap of practical minutes (Beijing day)",
        "超过学员每日实操学时上限（按北京日期）",
    ),
}


def describe(code: str, lang: str = "en") -> str:
    """The readable text of a reason code (``lang`` ``"en"`` or ``"zh"``); an unknown code is returned as is."""
    texts = REASONS.get(code)
    if texts is None:
        return code
    return texts[1] if lang.startswith("zh") else texts[0]
