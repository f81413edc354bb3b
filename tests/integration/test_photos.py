"""Evidence photos end to end with real parts: the agent's runtime (real face engine, shipped demo faces), its record
and photo stores, RecordSync over a TLS Mosquitto, the server's IngestConsumer and Ingestor on a SQLite database.

Photos go up after their records, are stored once, re-checked by the server against the enrolment templates, and
flagged when the face is someone else's or the image was used before; a replay changes nothing and a photo that no
record names is refused. The order-independence cases (photo before its record) run on the Ingestor directly.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import COACH, COURSE_C1_PART2, SCHOOL, STUDENT, T0, TestTerminal, start_mosquitto
from sqlalchemy import func, select, update

from agent.camera import FakeCamera
from agent.identity import IdentityChecker
from agent.photos import ACKED, PhotoStore, evidence_jpeg
from agent.runtime import TerminalRuntime
from agent.session import TrainingSession
from agent.store import RecordStore
from agent.sync import RecordSync
from firmware_protocols import topics
from firmware_protocols.messages import PhotoStatus, PhotoUpload, Roster, RosterPerson
from firmware_protocols.records import RecordKind
from server.ingest import Ingestor
from server.models import Alarm, CheckPhoto, Coach, FaceVerdict, RawRecord, Student
from server.models import TrainingSession as SessionRow
from server.mqtt_consumer import IngestConsumer
from server.photos import (
    ALARM_DUPLICATE_PHOTO,
    ALARM_FACE_MISMATCH,
    ALARM_PHOTO_NOT_NAMED,
    PhotoIngest,
    use_photo_ingest,
)

FACES = Path(__file__).resolve().parents[2] / "simulators" / "data" / "faces"
OTHER_STUDENT = "P000000000000002"


def face_file(name: str) -> Path:
    path = FACES / name
    if not path.exists():
        pytest.skip(f"demo face photo {path} is missing")
    return path


@pytest.fixture(scope="module")
def engine() -> Any:
    from biometrics.engine import FaceEngine
    from biometrics.errors import EngineUnavailable

    try:
        return FaceEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"face engine not usable: {exc}")


def rgb(engine: Any, name: str) -> np.ndarray:
    return np.asarray(engine.load_image(face_file(name)))


def template(engine: Any, name: str) -> str:
    found = engine.encode(rgb(engine, name))
    assert len(found) == 1, name
    return str(found[0].encode())


def wait_for(what: str, predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)  # polling other threads' databases
    raise AssertionError(f"timed out waiting for {what}")


def enrol_faces(sf: Any, engine: Any) -> Roster:
    """Real enrolment templates: coach = Biden, student = Obama, another student = Kit Harington."""
    faces = {COACH: template(engine, "biden_enrol.jpg"), STUDENT: template(engine, "obama_enrol.jpg"),
             OTHER_STUDENT: template(engine, "kit_harington_enrol.jpg")}  # fmt: skip
    now = datetime.now(UTC)
    with sf() as s, s.begin():
        s.execute(update(Coach).where(Coach.id == COACH).values(face_template=faces[COACH]))
        s.execute(update(Student).where(Student.id == STUDENT).values(face_template=faces[STUDENT]))
        s.add(Student(id=OTHER_STUDENT, name="Student Zhao", school_id=SCHOOL, licence_class="C1",
                      face_template=faces[OTHER_STUDENT], photo_sha256=None, created_at=now))  # fmt: skip
    return Roster(TestTerminal().id, SCHOOL, now, (RosterPerson(COACH, "Coach Wang", ("C1",), faces[COACH]),),
                  (RosterPerson(STUDENT, "Student Li", ("C1",), faces[STUDENT]),
                   RosterPerson(OTHER_STUDENT, "Student Zhao", ("C1",), faces[OTHER_STUDENT])))  # fmt: skip


def count(sf: Any, model: Any, *where: Any) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def alarms(sf: Any, kind: str) -> list[Alarm]:
    with sf() as s:
        return list(s.scalars(select(Alarm).where(Alarm.kind == kind)))


def verdicts(sf: Any) -> list[FaceVerdict]:
    with sf() as s:
        return list(s.scalars(select(FaceVerdict).order_by(FaceVerdict.chain, FaceVerdict.seq)))


Rig = tuple["Car", Any, Ingestor, IngestConsumer]


class Car:
    """One terminal: runtime (camera → real face engine), record store, photo store, sync over TLS."""

    def __init__(self, tmp_path: Path, terminal: TestTerminal, broker: Any, engine: Any, roster: Roster) -> None:
        data = tmp_path / "agent"
        self.camera = FakeCamera()
        self.identity = IdentityChecker(self.camera, engine, 0.5, liveness="off")
        self.store = RecordStore(data / "records.sqlite", terminal.id, terminal.key, data / "chain")
        self.photos = PhotoStore(data / "photos.sqlite")
        self.runtime = TerminalRuntime(terminal.id, self.store, TrainingSession(terminal.id), self.identity, data,
                                       photos=self.photos)  # fmt: skip
        self.runtime.on_roster(roster)
        # The runtime's caption (school, coach, student, time, place) plus a counter: two checks within one second
        # give different JPEGs here, so the reused-picture case below is the perceptual one, not the exact one.
        numbers, captioned = itertools.count(1), self.identity.caption
        assert captioned is not None
        self.identity.caption = lambda: [*captioned(), f"check {next(numbers)}"]
        self.sync = RecordSync(self.store, terminal.id, broker.host, broker.port, terminal.key, lambda r: None,
                               tls=broker.tls(terminal.id), photos=self.photos)  # fmt: skip
        self.runtime.on_committed = self.sync.nudge
        self.runtime.start()
        wait_for("the roster in the runtime", lambda: self.runtime.roster is not None, 5)

    def shows(self, engine: Any, name: str) -> None:
        self.camera.set_frames([rgb(engine, name)[:, :, ::-1].copy()])  # the camera gives BGR

    def face_checks(self) -> list[Any]:
        return [r for r in self.store.records_between(1, 0, None) if r.kind == str(RecordKind.FACE_CHECK)]

    def close(self) -> None:
        self.sync.stop()
        self.runtime.stop()
        self.store.close()
        self.photos.close()


@pytest.fixture
def rig(tmp_path: Path, enrolled: Any, terminal: TestTerminal, engine: Any) -> Iterator[Rig]:
    roster = enrol_faces(enrolled, engine)
    broker = start_mosquitto(tmp_path)
    ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
    use_photo_ingest(ingestor, PhotoIngest(enrolled, lambda: datetime.now(UTC), engine=engine))
    consumer = IngestConsumer(ingestor, enrolled, broker.host, broker.port, resend_check_seconds=0.2,
                              tls=broker.context())  # fmt: skip
    consumer.start()
    car = Car(tmp_path, terminal, broker, engine, roster)
    try:
        yield car, enrolled, ingestor, consumer
    finally:
        car.close()
        consumer.stop()
        broker.process.terminate()
        broker.process.wait(5)


def test_photos_follow_their_records_are_stored_once_and_rechecked_by_the_server(
    rig: Rig, engine: Any
) -> None:
    car, sf, _, _ = rig
    car.sync.start()
    car.shows(engine, "biden_live.jpg")
    assert car.runtime.request("coach_login", person=COACH).ok
    car.shows(engine, "obama_live.jpg")
    assert car.runtime.request("student_login", person=STUDENT, course=COURSE_C1_PART2).ok

    checks = car.face_checks()
    assert len(checks) == 2 and all(len(c.body["photo"]) == 64 for c in checks)
    # the login records name the same photos as their face checks: the chain vouches for them
    logins = [r for r in car.store.records_between(1, 0, None) if r.kind in ("coach_login", "student_login")]
    assert [r.body["face"]["photo"] for r in logins] == [c.body["photo"] for c in checks]
    wait_for("both photos stored", lambda: count(sf, CheckPhoto) == 2 and len(verdicts(sf)) == 2)
    wait_for("both photos acked on the terminal",
             lambda: all((car.photos.get(c.body["photo"]) or {}).get("status") == ACKED for c in checks))  # fmt: skip

    with sf() as s:
        for c in checks:
            photo = s.get(CheckPhoto, c.body["photo"])
            record = s.scalar(select(RawRecord).where(RawRecord.chain == c.chain, RawRecord.seq == c.seq))
            assert photo is not None and record is not None
            assert (photo.chain, photo.seq, photo.status) == (c.chain, c.seq, "stored")
            assert photo.jpeg[:3] == b"\xff\xd8\xff" and photo.size == len(photo.jpeg) <= 360 * 1024
            assert record.received_at <= photo.received_at  # the record first, then its photo
    got = {(v.person_id, v.role): v for v in verdicts(sf)}
    coach, student = got[(COACH, "coach")], got[(STUDENT, "student")]
    assert coach.verdict == student.verdict == "match"
    assert student.distance is not None and student.distance < 500 and student.other_person in (COACH, OTHER_STUDENT)
    assert student.terminal_result == "pass" and student.duplicate is None and student.alarms == []
    assert student.session == f"{car.runtime.terminal}-1-{checks[1].seq + 1}"
    # photo bytes are gone from the terminal once acked; the note of what was sent stays
    assert all(not car.photos.get(c.body["photo"])["has_bytes"] for c in checks)  # type: ignore[index]
    assert car.sync.stats.photos_acked == 2


def test_a_replayed_photo_changes_nothing_and_an_unnamed_photo_is_refused(
    rig: Rig, engine: Any, terminal: TestTerminal
) -> None:
    car, sf, ingestor, consumer = rig
    car.sync.start()
    car.shows(engine, "biden_live.jpg")
    assert car.runtime.request("coach_login", person=COACH).ok
    check = car.face_checks()[0]
    wait_for("the photo's verdict", lambda: len(verdicts(sf)) == 1)
    with sf() as s:
        jpeg = s.get(CheckPhoto, check.body["photo"]).jpeg  # type: ignore[union-attr]
    replay = PhotoUpload.of(terminal.id, check.chain, check.seq, T0, jpeg).encode()
    before = (count(sf, CheckPhoto), count(sf, FaceVerdict), count(sf, Alarm))
    handled = consumer.stats["messages"]
    car.sync.client.publish(topics.up_photos(terminal.id), replay, qos=1)  # over the broker, as the terminal
    wait_for("the replay handled", lambda: consumer.stats["messages"] > handled)
    ack = ingestor.handle_message(topics.up_photos(terminal.id), replay)  # and straight in: the same answer
    assert ack is not None and ack.status is PhotoStatus.DUPLICATE  # type: ignore[union-attr]
    assert (count(sf, CheckPhoto), count(sf, FaceVerdict), count(sf, Alarm)) == before

    # A photo that names the genesis (seq 0), which names no photo: refused, with an alarm, never stored.
    stray = evidence_jpeg(rgb(engine, "obama_live.jpg"), ["stray"])
    unnamed = PhotoUpload.of(terminal.id, 1, 0, T0, stray).encode()
    car.sync.client.publish(topics.up_photos(terminal.id), unnamed, qos=1)
    wait_for("the refusal", lambda: bool(alarms(sf, ALARM_PHOTO_NOT_NAMED)))
    ack = ingestor.handle_message(topics.up_photos(terminal.id), unnamed)
    assert ack is not None and (ack.status, ack.reason) == (PhotoStatus.REJECTED, "not_named")  # type: ignore[union-attr]
    assert count(sf, CheckPhoto) == before[0] and count(sf, FaceVerdict) == before[1]


def test_another_persons_face_and_a_reused_photo_raise_alarms(rig: Rig, engine: Any) -> None:
    car, sf, _, _ = rig
    car.sync.start()
    car.shows(engine, "biden_live.jpg")
    assert car.runtime.request("coach_login", person=COACH).ok
    car.shows(engine, "obama_live.jpg")
    assert car.runtime.request("student_login", person=STUDENT, course=COURSE_C1_PART2).ok
    # A tampered terminal: it passes anyone (threshold 10) while Kit Harington sits in Obama's seat.
    car.identity.threshold = 10.0
    car.shows(engine, "kit_harington_live.jpg")
    assert car.runtime.request("student_logout").ok
    # Next session: the same still picture of Obama held to the camera again (a new caption, so a new SHA-256).
    car.shows(engine, "obama_live.jpg")
    assert car.runtime.request("student_login", person=STUDENT, course=COURSE_C1_PART2).ok
    wait_for("four verdicts", lambda: len(verdicts(sf)) == 4, 60)

    by_seq = {v.seq: v for v in verdicts(sf)}
    checks = car.face_checks()
    logout, relogin = by_seq[checks[2].seq], by_seq[checks[3].seq]
    assert (logout.terminal_result, logout.verdict, logout.person_id) == ("pass", "mismatch", STUDENT)
    assert logout.other_person == OTHER_STUDENT and logout.other_distance is not None and logout.other_distance < 500
    mismatch = alarms(sf, ALARM_FACE_MISMATCH)
    assert len(mismatch) == 1 and mismatch[0].detail["seq"] == checks[2].seq
    assert mismatch[0].detail["other_person"] == OTHER_STUDENT

    first_login = by_seq[checks[1].seq]
    assert relogin.photo_sha256 != first_login.photo_sha256
    assert relogin.duplicate == "near" and relogin.duplicate_of == f"{car.runtime.terminal}/1/{checks[1].seq}"
    assert relogin.session != first_login.session
    duplicate = alarms(sf, ALARM_DUPLICATE_PHOTO)
    assert len(duplicate) == 1 and duplicate[0].detail["seq"] == checks[3].seq
    assert first_login.duplicate is None and by_seq[checks[0].seq].duplicate is None


def test_a_photo_before_its_record_is_held_then_stored(enrolled: Any, terminal: TestTerminal, engine: Any) -> None:
    """Order independence: a photo may reach the server before the record that names it."""
    enrol_faces(enrolled, engine)
    ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
    rejudged: list[set[int]] = []
    photos = PhotoIngest(enrolled, lambda: datetime.now(UTC), engine=engine, after_verdict=rejudged.append)
    use_photo_ingest(ingestor, photos)
    jpeg = evidence_jpeg(rgb(engine, "obama_live.jpg"), ["school S1", "student P1"])
    genesis = terminal.genesis()
    login = terminal.record(RecordKind.FACE_CHECK, {"person": STUDENT, "role": "student", "result": "pass",
                            "session": "S1", "trigger": "login", "distance": 350, "seen": STUDENT,
                            "photo": PhotoUpload.of(terminal.id, 1, 1, T0, jpeg).sha256}, T0)  # fmt: skip
    upload = PhotoUpload.of(terminal.id, 1, 1, T0, jpeg).encode()
    topic = topics.up_photos(terminal.id)

    first = ingestor.handle_message(topic, upload)
    assert first is not None and first.status is PhotoStatus.PENDING  # type: ignore[union-attr]
    assert ingestor.handle_message(topic, upload).status is PhotoStatus.PENDING  # type: ignore[union-attr]
    assert count(enrolled, CheckPhoto, CheckPhoto.status == "pending") == 1 and verdicts(enrolled) == []

    ingestor.handle_batch(topics.up_records(terminal.id), terminal.batch([genesis, login]))
    resolved = photos.resolve_pending()  # the consumer's ticker does this
    assert [(t, a.status) for t, a in resolved] == [(terminal.id, PhotoStatus.STORED)]
    assert count(enrolled, CheckPhoto, CheckPhoto.status == "stored") == 1
    assert [v.verdict for v in verdicts(enrolled)] == ["match"]
    with enrolled() as s:  # the new verdict has its session judged again (the ledger, in the server)
        assert rejudged == [{s.scalar(select(SessionRow.id).where(SessionRow.session == "S1"))}]
    again = ingestor.handle_message(topic, upload)  # the terminal's resend after its pending answer
    assert again is not None and again.status is PhotoStatus.DUPLICATE  # type: ignore[union-attr]
    assert len(verdicts(enrolled)) == 1


def test_a_photo_whose_bytes_do_not_match_is_refused(enrolled: Any, terminal: TestTerminal, engine: Any) -> None:
    ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
    jpeg = evidence_jpeg(rgb(engine, "obama_live.jpg"))
    good = PhotoUpload.of(terminal.id, 1, 1, T0, jpeg).encode()
    other = evidence_jpeg(rgb(engine, "biden_live.jpg"))
    forged = good.replace(PhotoUpload.of(terminal.id, 1, 1, T0, jpeg).sha256.encode(),
                          PhotoUpload.of(terminal.id, 1, 1, T0, other).sha256.encode())  # fmt: skip
    ack = ingestor.handle_message(topics.up_photos(terminal.id), forged)
    assert ack is not None and (ack.status, ack.reason) == (PhotoStatus.REJECTED, "photo_hash_mismatch")  # type: ignore[union-attr]
    foreign = ingestor.handle_message(topics.up_photos("T000000000000009"), good)
    assert foreign is not None and foreign.reason == "terminal_mismatch"  # type: ignore[union-attr]
    assert count(enrolled, CheckPhoto) == 0


def test_terminal_files_holding_faces_are_owner_only(rig: Rig, engine: Any) -> None:
    car, _, _, _ = rig
    car.shows(engine, "biden_live.jpg")
    assert car.runtime.request("coach_login", person=COACH).ok
    data = car.store.path.parent
    for name in ("roster.json", "photos.sqlite", "photos.sqlite-wal"):
        mode = stat.S_IMODE(os.stat(data / name).st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"


def test_the_same_jpeg_named_by_two_checks_is_an_exact_duplicate(
    enrolled: Any, terminal: TestTerminal, engine: Any
) -> None:
    enrol_faces(enrolled, engine)
    ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
    use_photo_ingest(ingestor, PhotoIngest(enrolled, lambda: datetime.now(UTC), engine=engine))
    jpeg = evidence_jpeg(rgb(engine, "obama_live.jpg"), ["the one picture an emulator has"])
    sha = PhotoUpload.of(terminal.id, 1, 1, T0, jpeg).sha256
    records = [terminal.genesis()]
    for session in ("S1", "S2"):
        body = {"person": STUDENT, "role": "student", "result": "pass", "session": session, "trigger": "login",
                "distance": 300, "photo": sha}  # fmt: skip
        records.append(terminal.record(RecordKind.FACE_CHECK, body, T0))
    ingestor.handle_batch(topics.up_records(terminal.id), terminal.batch(records))
    topic = topics.up_photos(terminal.id)
    first = ingestor.handle_message(topic, PhotoUpload.of(terminal.id, 1, 1, T0, jpeg).encode())
    second = ingestor.handle_message(topic, PhotoUpload.of(terminal.id, 1, 2, T0, jpeg).encode())
    assert (first.status, second.status) == (PhotoStatus.STORED, PhotoStatus.DUPLICATE)  # type: ignore[union-attr]
    assert count(enrolled, CheckPhoto) == 1  # the bytes once
    v1, v2 = verdicts(enrolled)
    assert (v1.duplicate, v2.duplicate, v2.duplicate_of) == (None, "exact", f"{terminal.id}/1/1")
    assert [a.detail["seq"] for a in alarms(enrolled, ALARM_DUPLICATE_PHOTO)] == [2]


def test_a_reused_photo_without_a_face_is_a_perceptual_duplicate(
    enrolled: Any, terminal: TestTerminal, engine: Any
) -> None:
    """The face encoding cannot see a reused photo that shows no face (here: a picture upside down, which the
    detector does not read); its perceptual hash does, once re-encoded and re-captioned (new bytes, new SHA-256).
    A different photo stays apart."""
    import io

    from PIL import Image

    enrol_faces(enrolled, engine)
    ingestor = Ingestor(enrolled, lambda: datetime.now(UTC))
    use_photo_ingest(ingestor, PhotoIngest(enrolled, lambda: datetime.now(UTC), engine=engine))
    faceless = np.ascontiguousarray(rgb(engine, "obama_live.jpg")[::-1])
    first = evidence_jpeg(faceless, ["2026-11-28T08:15:00Z"])
    with Image.open(io.BytesIO(evidence_jpeg(faceless, ["2026-11-29T16:45:30Z  another place"]))) as im:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=55)  # re-encoded, as a forger's tool would
    again, different = buf.getvalue(), evidence_jpeg(np.ascontiguousarray(rgb(engine, "biden_live.jpg")[::-1]))
    photos = [first, again, different]
    records = [terminal.genesis()]
    for k, jpeg in enumerate(photos):
        body = {"person": STUDENT, "role": "student", "result": "pass", "session": f"S{k}", "trigger": "login",
                "distance": 300, "photo": PhotoUpload.of(terminal.id, 1, k + 1, T0, jpeg).sha256}  # fmt: skip
        records.append(terminal.record(RecordKind.FACE_CHECK, body, T0))
    ingestor.handle_batch(topics.up_records(terminal.id), terminal.batch(records))
    for k, jpeg in enumerate(photos):
        ingestor.handle_message(topics.up_photos(terminal.id), PhotoUpload.of(terminal.id, 1, k + 1, T0, jpeg).encode())
    v1, v2, v3 = verdicts(enrolled)
    assert [v.verdict for v in (v1, v2, v3)] == ["no_face"] * 3
    assert all(v.phash is not None and len(v.phash) == 16 for v in (v1, v2, v3))
    assert (v1.duplicate, v2.duplicate, v2.duplicate_of, v3.duplicate) == (None, "phash", f"{terminal.id}/1/1", None)
    (alarm,) = alarms(enrolled, ALARM_DUPLICATE_PHOTO)
    assert alarm.detail["seq"] == 2 and alarm.detail["phash_bits"] <= 2
