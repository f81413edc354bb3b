"""Fraud scenarios with faces: records that name each check photo's SHA-256 and the evidence photos themselves.

The tricks of ``domain.md`` "How hours get faked" that only the photos show. As :mod:`simulators.fraud` (whose
builders these reuse), the records are built and signed as a terminal does; besides them, each scenario carries the
``up/photos`` messages a terminal sends once a record is acked (:class:`firmware_protocols.messages.PhotoUpload`)
and the enrolment photo of each person, from which the server's office makes the face templates. Pictures are the
demo faces shipped in ``data/faces`` (MIT, see ``LICENSE`` and ``PROVENANCE.md`` there); the student of every
scenario is the one person with a clip, whose frames give as many genuine photos as a session takes.

============================  ===================================================================================
``reused_photo``              a later session shows photos of an earlier one again: one re-check the same JPEG
                              byte for byte, the other the same picture under a new caption (new bytes, new SHA-256)
``other_person_at_recheck``   at a random re-check another student of the school is at the wheel; the terminal
                              claims the face passed
============================  ===================================================================================

Each scenario has a control: a genuine session of the same student on a later day (:attr:`FaceScenario.control`),
and ``reused_photo``'s first session, the original, is genuine too. The coaches' face checks name no photo here:
their faces are not what these tricks are about (and the shipped faces hold one live photo a person, which two
checks a session would show twice). The scenarios share the clip's frames: each is meant for a database of its own.

Pillow draws the evidence photos and OpenCV reads the clip, both imported when a scenario is built.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_protocols.messages import PhotoUpload
from firmware_protocols.records import RecordKind, format_time
from simulators.fraud import (
    COURSE,
    RECHECK_AT,
    SCHOOL,
    FleetTerminal,
    Scenario,
    SessionPlan,
    _Builder,
    _face,
    _minute,
    _morning,
)

FACES_DIR = Path(__file__).resolve().parent / "data" / "faces"
#: The student of every scenario: enrolled from this photo, seen live in :data:`STUDENT_CLIP`.
STUDENT_ENROL = "lin_manuel_miranda_enrol.jpg"
STUDENT_CLIP = "lin_manuel_miranda_live.mp4"
#: Frames of the clip used as genuine photos. Measured with ``biometrics.FaceEngine`` as the server re-checks an
#: evidence photo (detection at 320 px, one upsample): one face each, 0.41-0.46 from the enrolment (threshold 0.5),
#: any two ≥ 0.22 apart (a copy is < 0.11) and ≥ 4 perceptual-hash bits apart (a copy is ≤ 2).
GENUINE_FRAMES = (7, 20, 2, 30, 8, 32, 21, 17, 10, 16)
#: Another enrolled student, and the coaches (who show no photo).
OTHER_STUDENT = ("kit_harington_enrol.jpg", "kit_harington_live.jpg")
COACH_ENROL = ("biden_enrol.jpg", "rose_leslie_enrol.jpg")
#: Evidence photos as the agent makes them (agent.photos): at most 640 px, a caption band of 14 px lines below.
PHOTO_MAX_SIDE = 640
CAPTION_LINE_PX = 14
PHOTO_QUALITY = 80
#: A photo goes up this long after the record that names it arrived (the terminal waits for the record's ack).
PHOTO_DELAY = timedelta(seconds=20)

#: A check's photo: made at the check's time (a fresh frame with its caption, or bytes shown again).
Shot = Callable[[datetime], bytes]


@dataclass(frozen=True)
class PhotoDelivery:
    """An ``up/photos`` message of a terminal and the moment the server receives it."""

    terminal: str
    payload: bytes
    arrive_at: datetime
    sha256: str


@dataclass
class FaceScenario(Scenario):
    faces: dict[str, Path] = field(default_factory=dict)  # person → enrolment photo
    photos: list[PhotoDelivery] = field(default_factory=list)
    control: set[str] = field(default_factory=set)  # record numbers of genuine sessions: nothing may be caught


# ---------------------------------------------------------------------------------------------- pictures


def face_file(name: str) -> Path:
    return FACES_DIR / name


@functools.cache
def clip_frames() -> tuple[Any, ...]:
    """The student's clip as RGB frames (read once)."""
    import cv2

    capture = cv2.VideoCapture(str(face_file(STUDENT_CLIP)))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame[:, :, ::-1].copy())  # OpenCV gives BGR
    finally:
        capture.release()
    if not frames:
        raise FileNotFoundError(f"no frames in {face_file(STUDENT_CLIP)}")
    return tuple(frames)


def picture(name: str) -> Any:
    """A shipped photo as an RGB array."""
    import numpy as np
    from PIL import Image

    with Image.open(face_file(name)) as im:
        return np.asarray(im.convert("RGB"))


def evidence_photo(rgb: Any, caption: Sequence[str]) -> bytes:
    """An evidence JPEG as a terminal makes it: the frame (≤ 640 px) with the caption in a black band below it."""
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    img.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (img.width, img.height + CAPTION_LINE_PX * len(caption) + 4), (0, 0, 0))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(caption):
        draw.text((3, img.height + 2 + i * CAPTION_LINE_PX), line, fill=(255, 255, 255))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=PHOTO_QUALITY, optimize=True)
    return out.getvalue()


def fresh(rgb: Any, terminal: FleetTerminal, student: str, coach: str) -> Shot:
    """A frame captured at the check's time, captioned as the agent captions it (who, when, where)."""

    def shoot(at: datetime) -> bytes:
        return evidence_photo(rgb, [f"school {SCHOOL}  terminal {terminal.id}", f"coach {coach}  student {student}",
                                    f"{format_time(at)}  35.420000,119.520000"])  # fmt: skip

    return shoot


def shown_again(jpeg: bytes) -> Shot:
    """The very bytes of an earlier photo (an emulator's stored picture)."""
    return lambda _at: jpeg


# ---------------------------------------------------------------------------------------------- sessions


@dataclass
class FaceSession:
    records: list[bytes]
    numbers: list[str]
    photos: list[tuple[int, datetime, bytes]]  # (seq of the face check naming it, time taken, JPEG)


def record_face_session(plan: SessionPlan, shots: Sequence[Shot], claimed: float = 0.32) -> FaceSession:
    """As :func:`simulators.fraud.record_session`, the student's four checks (sign-in, the re-checks at
    :data:`~simulators.fraud.RECHECK_AT`, sign-out) each naming its photo; the terminal says every one passed at
    distance ``claimed``."""
    assert len(shots) == 2 + len(RECHECK_AT)
    t, out, numbers, photos = plan.terminal, [], [], []
    out.append(t.record(RecordKind.FACE_CHECK, _face(plan.coach, "coach", None, "login"), plan.start))
    out.append(t.record(RecordKind.COACH_LOGIN, {"coach": plan.coach, "face": {"result": "pass", "distance": 310}},
                        plan.start))  # fmt: skip
    session = plan.session_id or f"{t.id}-{t.chain}-{t.seq + 1}"

    def check(trigger: str, at: datetime, shot: Shot) -> tuple[dict[str, Any], int]:
        jpeg = shot(at)
        sha = hashlib.sha256(jpeg).hexdigest()
        body = {**_face(plan.student, "student", session, trigger), "distance": round(claimed * 1000), "photo": sha}
        seq = t.seq
        out.append(t.record(RecordKind.FACE_CHECK, body, at))
        photos.append((seq, at, jpeg))
        return {"result": "pass", "distance": body["distance"], "photo": sha}, seq

    face, face_seq = check("login", plan.start, shots[0])
    out.append(t.record(RecordKind.STUDENT_LOGIN, {"student": plan.student, "coach": plan.coach, "course": COURSE,
                                                   "session": session, "face": face}, plan.start))  # fmt: skip
    for i in range(plan.minutes):
        start = plan.start + timedelta(minutes=i)
        if i in RECHECK_AT:
            _, face_seq = check("random", start, shots[1 + RECHECK_AT.index(i)])
        raw, number = _minute(plan, i, start, session, face_seq)
        out.append(raw)
        numbers.append(number)
    end = plan.start + timedelta(minutes=plan.minutes)
    face, _ = check("logout", end, shots[-1])
    out.append(t.record(RecordKind.STUDENT_LOGOUT, {"student": plan.student, "coach": plan.coach, "session": session,
                                                    "minutes": plan.minutes, "face": face}, end))  # fmt: skip
    out.append(t.record(RecordKind.FACE_CHECK, _face(plan.coach, "coach", None, "logout"), end))
    out.append(t.record(RecordKind.COACH_LOGOUT, {"coach": plan.coach, "face": {"result": "pass"}}, end))
    return FaceSession(out, numbers, photos)


class _FaceBuilder(_Builder):
    """Also enrols faces and sends each session's photos after the records that name them."""

    def __init__(self, name: str, expected: str, base: int) -> None:
        super().__init__(name, expected, base)
        self.scenario = FaceScenario(name, expected)

    @property
    def face_scenario(self) -> FaceScenario:
        assert isinstance(self.scenario, FaceScenario)
        return self.scenario

    def person(self, kind: str, enrol: str) -> str:
        number = self.new(kind)
        self.face_scenario.faces[number] = face_file(enrol)
        return number

    def face_session(self, plan: SessionPlan, shots: Sequence[Shot], *, suspect: bool = False,
                     control: bool = False) -> FaceSession:  # fmt: skip
        """Live: each record arrives a little after its minute, each photo :data:`PHOTO_DELAY` after its record."""
        done = record_face_session(plan, shots)
        arrivals = {}
        for i, raw in enumerate(done.records):
            when = plan.start + timedelta(minutes=min(i, plan.minutes), seconds=65)
            self.upload(plan.terminal, [raw], when)
            arrivals[plan.terminal.seq - len(done.records) + i] = when
        for seq, at, jpeg in done.photos:
            photo = PhotoUpload.of(plan.terminal.id, plan.terminal.chain, seq, at, jpeg)
            delivery = PhotoDelivery(plan.terminal.id, photo.encode(), arrivals[seq] + PHOTO_DELAY, photo.sha256)
            self.face_scenario.photos.append(delivery)
        if suspect:
            self.scenario.suspects.update(done.numbers)
        if control:
            self.face_scenario.control.update(done.numbers)
        return done


def _genuine(frames: Sequence[int], t: FleetTerminal, student: str, coach: str) -> list[Shot]:
    clip = clip_frames()
    return [fresh(clip[k], t, student, coach) for k in frames]


# ---------------------------------------------------------------------------------------------- scenarios


def reused_photo() -> FaceScenario:
    """Day 0: a genuine session. Day 1: the same student's session shows, at the first re-check, that session's
    re-check JPEG byte for byte and, at the second, its picture under a new caption. Day 2: a genuine control."""
    b = _FaceBuilder("reused_photo", "duplicate_photo", 1100)
    t = b.terminal(_morning() - timedelta(minutes=5))
    student, coach = b.person("P", STUDENT_ENROL), b.person("C", COACH_ENROL[0])
    first = b.face_session(SessionPlan(t, student, coach, _morning()), _genuine(GENUINE_FRAMES[:4], t, student, coach))
    reused = first.photos[1][2]  # the first re-check's JPEG
    again = fresh(clip_frames()[GENUINE_FRAMES[2]], t, student, coach)  # the same frame, a new time in its caption
    sign_in, sign_out = _genuine(GENUINE_FRAMES[4:6], t, student, coach)
    b.face_session(SessionPlan(t, student, coach, _morning(day=1)), [sign_in, shown_again(reused), again, sign_out],
                   suspect=True)  # fmt: skip
    b.face_session(SessionPlan(t, student, coach, _morning(day=2)), _genuine(GENUINE_FRAMES[6:10], t, student, coach),
                   control=True)  # fmt: skip
    return b.face_scenario


def other_person_at_recheck(seed: int = 7) -> FaceScenario:
    """Day 0: at one of the re-checks (drawn with ``seed``) another enrolled student sits at the wheel and the
    terminal (an emulator, or one told to pass anyone) says the face passed. Day 1: a genuine control."""
    b = _FaceBuilder("other_person_at_recheck", "server_face_mismatch", 1200)
    t = b.terminal(_morning() - timedelta(minutes=5))
    student, coach = b.person("P", STUDENT_ENROL), b.person("C", COACH_ENROL[1])
    other = b.person("P", OTHER_STUDENT[0])
    shots = _genuine(GENUINE_FRAMES[:4], t, student, coach)
    swapped = 1 + random.Random(seed).randrange(len(RECHECK_AT))  # noqa: S311 - a scenario's draw, not a secret
    shots[swapped] = fresh(picture(OTHER_STUDENT[1]), t, student, coach)
    b.face_session(SessionPlan(t, student, coach, _morning()), shots, suspect=True)
    b.face_session(SessionPlan(t, student, coach, _morning(day=1)), _genuine(GENUINE_FRAMES[6:10], t, student, coach),
                   control=True)  # fmt: skip
    assert other in b.face_scenario.students
    return b.face_scenario


FACE_SCENARIOS: dict[str, Callable[[], FaceScenario]] = {
    "reused_photo": reused_photo,
    "other_person_at_recheck": other_person_at_recheck,
}
