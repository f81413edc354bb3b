"""Evidence photos on the terminal: the JPEG and its caption, the owner-only bounded photo store (kept until the server
acks, refused before records suffer), the records-first rule of sync, and the photo's hash in the signed bodies."""

from __future__ import annotations

import io
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from agent import photos as photos_mod
from agent.identity import CheckedFace
from agent.photos import ACKED, REJECTED, SENT, UNLINKED, WAITING, PhotoStore, caption_lines, evidence_jpeg
from agent.runtime import ROSTER_FILE, TerminalRuntime
from agent.session import EmitRecord, TrainingSession
from agent.store import ACKED as RECORD_ACKED
from agent.store import RecordStore
from agent.sync import RecordSync
from firmware_protocols import topics
from firmware_protocols.messages import PhotoAck, PhotoStatus, PhotoUpload, Roster, RosterPerson, photo_sha256
from firmware_protocols.records import RecordKind

T = "T000000000000001"
AT = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def frame(w: int = 1280, h: int = 960, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_the_evidence_jpeg_is_downscaled_and_captioned_under_the_frame() -> None:
    lines = caption_lines(terminal=T, school="S000000000000001", coach="C000000000000001", student=None, at=AT,
                          lat=35.416, lon=119.527)  # fmt: skip
    assert lines[-1] == "2026-11-27T02:00:00Z  35.416000,119.527000" and "student -" in lines[1]
    src = np.zeros((960, 1280, 3), np.uint8)
    src[:, :, 1] = 200
    jpeg = evidence_jpeg(src, lines)
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.width == 640 and img.height == 480 + 14 * 3 + 4
    px = np.asarray(img.convert("RGB"))
    assert abs(int(px[240, 320, 1]) - 200) < 8  # the frame itself is untouched by the caption
    assert px[480:].max() > 200 and px[480:, :, 1].mean() < 100  # white text on a black band below it
    assert len(evidence_jpeg(frame())) < photos_mod.MAX_PHOTO_BYTES  # even pure noise fits


def store(tmp_path: Path, **kw: Any) -> PhotoStore:
    return PhotoStore(tmp_path / "photos.sqlite", **kw)


def test_photos_are_kept_owner_only_and_deleted_only_when_the_server_acked(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ps = store(tmp_path)
        sha = ps.put(b"\xff\xd8\xffone", AT)
    finally:
        os.umask(old)
    assert sha == photo_sha256(b"\xff\xd8\xffone")
    for name in ("photos.sqlite", "photos.sqlite-wal"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    assert ps.get(sha)["status"] == UNLINKED and ps.sendable(10) == []  # type: ignore[index]  # no record yet
    assert ps.link(sha, 1, 4)
    [due] = ps.sendable(10)
    assert (due.sha256, due.chain, due.seq, due.jpeg) == (sha, 1, 4, b"\xff\xd8\xffone")
    ps.mark_sent(due, datetime.now(UTC) + timedelta(seconds=60))
    assert ps.sendable(10) == [] and ps.get(sha)["status"] == SENT  # type: ignore[index]  # in flight
    ps.held(sha, datetime.now(UTC) - timedelta(seconds=1))  # the server's "pending": due again
    assert [p.sha256 for p in ps.sendable(10)] == [sha] and ps.get(sha)["has_bytes"]  # type: ignore[index]
    assert ps.acked(sha) and not ps.acked(sha)
    assert ps.get(sha) == {"sha256": sha, "chain": 1, "seq": 4, "status": ACKED, "reason": None, "size": 6,
                           "has_bytes": False}  # fmt: skip
    other = ps.put(b"\xff\xd8\xfftwo", AT)
    assert other is not None and ps.link(other, 1, 6)
    [sent] = ps.sendable(10)
    ps.mark_sent(sent, datetime.now(UTC))
    assert ps.rejected(other, "not_named")
    assert ps.sendable(10) == [] and ps.get(other)["has_bytes"]  # type: ignore[index]  # evidence kept


def test_two_checks_with_byte_identical_photos_each_send_theirs(tmp_path: Path) -> None:
    """A frozen feed can give the same JPEG twice in one second: each record naming it gets its own upload."""
    ps = store(tmp_path)
    jpeg = b"\xff\xd8\xffsame"
    sha = ps.put(jpeg, AT)
    assert sha is not None and ps.link(sha, 1, 3)
    [first] = ps.sendable(10)
    ps.mark_sent(first, datetime.now(UTC) + timedelta(seconds=60))
    assert ps.put(jpeg, AT) == sha and ps.link(sha, 1, 5)
    assert ps.acked(sha)  # the first upload's ack releases the first only
    [twin] = ps.sendable(10)
    assert (twin.chain, twin.seq, twin.jpeg) == (1, 5, jpeg)


def test_the_photo_store_is_bounded_and_gives_way_to_records(tmp_path: Path, monkeypatch: Any) -> None:
    ps = store(tmp_path, max_photos=2)
    assert ps.put(b"\xff\xd8\xff1", AT) and ps.put(b"\xff\xd8\xff2", AT)
    assert ps.put(b"\xff\xd8\xff3", AT) is None and ps.refused == 1
    small = store(tmp_path / "b", max_bytes=10)
    assert small.put(b"\xff\xd8\xff" + bytes(20), AT) is None
    monkeypatch.setattr(photos_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": 10 * 1024 * 1024})())
    low = store(tmp_path / "c")  # 10 MiB free < MIN_FREE_BYTES: the rest is for records
    assert low.put(b"\xff\xd8\xff4", AT) is None and low.counts() == {"refused": 1}


def test_orphan_photos_are_pruned_but_linked_ones_are_not(tmp_path: Path) -> None:
    ps = store(tmp_path)
    orphan, linked = ps.put(b"\xff\xd8\xffa", AT), ps.put(b"\xff\xd8\xffb", AT)
    assert orphan and linked and ps.link(linked, 1, 2)
    assert ps.prune_orphans(datetime.now(UTC)) == 0  # too young
    assert ps.prune_orphans(datetime.now(UTC) + photos_mod.ORPHAN_AFTER + timedelta(minutes=1)) == 1
    assert ps.get(orphan) is None and ps.get(linked)["status"] == WAITING  # type: ignore[index]


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Any:
        self.messages.append((topic, payload))
        return type("Info", (), {"rc": 0})()

    def is_connected(self) -> bool:
        return True


def test_sync_sends_photos_only_after_records_and_only_once_their_record_is_acked(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    records = RecordStore(tmp_path / "records.sqlite", T, key, tmp_path / "chain")
    records.ensure_genesis(AT)
    ps = store(tmp_path)
    jpeg = evidence_jpeg(frame(64, 48), ["x"])
    sha = ps.put(jpeg, AT)
    assert sha is not None
    check = records.append(EmitRecord(RecordKind.FACE_CHECK, AT, {"person": "P000000000000001", "role": "student",
                                      "result": "pass", "session": None, "trigger": "login", "distance": 300,
                                      "photo": sha}))  # fmt: skip
    ps.link(sha, check.chain, check.seq)
    sync = RecordSync(records, T, "127.0.0.1", 1, key, lambda r: None, photos=ps)
    fake = Published()
    sync.client = fake  # type: ignore[assignment]
    sync._send_photos()
    assert fake.messages == []  # records pending: no photo
    records.mark(0, 0, "x", RECORD_ACKED)  # (a wrong hash marks nothing)
    for r in records.pending(10):
        records.mark(r.chain, r.seq, r.hash, RECORD_ACKED)
    sync._send_photos()
    [(topic, payload)] = fake.messages
    assert topic == topics.up_photos(T)
    sent = PhotoUpload.decode(payload)
    assert (sent.sha256, sent.chain, sent.seq, sent.jpeg) == (sha, check.chain, check.seq, jpeg)
    sync._send_photos()
    assert len(fake.messages) == 1  # in flight: not sent twice
    sync._handle_photo_ack(PhotoAck(sha, PhotoStatus.STORED))
    assert ps.get(sha)["status"] == ACKED and not ps.get(sha)["has_bytes"]  # type: ignore[index]
    assert sync.stats.photos_acked == 1
    records.close()


def test_a_photo_of_a_rejected_record_is_not_sent(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    records = RecordStore(tmp_path / "records.sqlite", T, key, tmp_path / "chain")
    records.ensure_genesis(AT)
    ps = store(tmp_path)
    sha = ps.put(b"\xff\xd8\xffz", AT)
    assert sha is not None
    check = records.append(EmitRecord(RecordKind.FACE_CHECK, AT, {"person": "P000000000000001", "role": "student",
                                      "result": "pass", "session": None, "photo": sha}))  # fmt: skip
    ps.link(sha, check.chain, check.seq)
    for r in records.pending(10):
        records.mark(r.chain, r.seq, r.hash, "rejected" if r.seq == check.seq else RECORD_ACKED, "bad")
    sync = RecordSync(records, T, "127.0.0.1", 1, key, lambda r: None, photos=ps)
    sync.client = Published()  # type: ignore[assignment]
    sync._send_photos()
    assert sync.client.messages == [] and ps.get(sha)["status"] == REJECTED  # type: ignore[attr-defined,index]
    records.close()


def test_the_photo_hash_is_in_the_face_check_and_the_login_bodies() -> None:
    face = CheckedFace("pass", "C000000000000001", 0.31, jpeg=b"\xff\xd8\xffjpeg")
    sha = photo_sha256(b"\xff\xd8\xffjpeg")
    assert face.photo_sha256 == sha and face.to_body() == {"result": "pass", "distance": 310, "photo": sha}
    check, login = TrainingSession(T).coach_login("C000000000000001", face, AT)
    assert check.kind is RecordKind.FACE_CHECK and check.body["photo"] == sha  # type: ignore[union-attr]
    assert login.body["face"]["photo"] == sha  # type: ignore[union-attr]
    plain = CheckedFace("camera_error", None)
    assert "photo" not in plain.to_body()
    [no_photo] = TrainingSession(T).coach_login("C000000000000001", plain, AT)
    assert "photo" not in no_photo.body  # type: ignore[union-attr]


def test_face_templates_on_the_terminal_are_owner_only(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    records = RecordStore(tmp_path / "records.sqlite", T, key, tmp_path / "chain")
    runtime = TerminalRuntime(T, records, TrainingSession(T), None, tmp_path)
    old = os.umask(0o000)  # even a careless umask
    try:
        runtime.on_roster(Roster(T, "S000000000000001", AT, (RosterPerson("C000000000000001", "Wang", ("C1",),
                                                                           "fr1:x"),), ()))  # fmt: skip
    finally:
        os.umask(old)
    path = tmp_path / ROSTER_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"fr1:x" in path.read_bytes()
    records.close()


@pytest.mark.parametrize("liveness", ["off"])
def test_a_face_check_carries_the_jpeg_of_its_frame(liveness: str) -> None:
    from agent.camera import FakeCamera
    from agent.identity import IdentityChecker
    from biometrics.engine import FaceMatch

    class OneFace:
        def identify(self, image: Any, candidates: Any, threshold: float) -> FaceMatch:
            return FaceMatch(1, "P", 0.2, None)

    checker = IdentityChecker(FakeCamera([frame(320, 240)]), OneFace(), 0.5, liveness=liveness,  # type: ignore[arg-type]
                              caption=lambda: ["school S1"])  # fmt: skip
    outcome = checker.check({"P": object()})
    assert isinstance(outcome, CheckedFace) and outcome.jpeg is not None
    img = Image.open(io.BytesIO(outcome.jpeg))
    assert img.size == (320, 240 + 14 + 4) and outcome.to_body()["photo"] == photo_sha256(outcome.jpeg)
