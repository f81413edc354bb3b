"""Enrolment from a photo (issue 4): the server computes the template with the real face engine, refuses photos it
cannot trust with a reason, and keeps the photo behind the roles allowed. Photos: ../shared/testdata/faces."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from biometrics.engine import FaceEngine
from biometrics.templates import decode_template, distance
from server import db
from server.api import create_app
from server.models import Coach, EnrolmentPhoto, School, Student
from server.policy import load_builtin_policy
from server.settings import Settings

FACES = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "faces"
SCHOOL = "3711020000000001"
ADMIN = {"Authorization": "Bearer enrol-admin"}
pytestmark = pytest.mark.skipif(not FACES.exists(), reason="../shared/testdata/faces is not here")


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture
def api(tmp_path: Path, engine: FaceEngine) -> Iterator[tuple[TestClient, Any]]:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    db.upgrade(url)
    sf = db.make_session_factory(db.make_engine(url))
    app = create_app(Settings(admin_token="enrol-admin", database_url=url, jwt_key="j" * 40), session_factory=sf,
                     policy=load_builtin_policy("demo"), face_engine=engine)  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/api/schools", json={"id": SCHOOL, "name": "s"}, headers=ADMIN).status_code == 201
        yield client, sf


def _enrol(client: TestClient, photo: bytes, pid: str = "3711020000000101", kind: str = "students",
           consent: str = "true") -> Any:  # fmt: skip
    data: dict[str, Any] = {"id": pid, "name": "李娜", "school": SCHOOL, "consent": consent}
    data.update({"class": "C1"} if kind == "students" else {"classes": ["C1", "C2"]})
    return client.post(f"/api/{kind}/enrol", data=data, files={"photo": ("p.jpg", photo, "image/jpeg")},
                       headers=ADMIN)  # fmt: skip


def test_a_photo_becomes_a_server_computed_template(api: tuple[TestClient, Any], engine: FaceEngine) -> None:
    client, sf = api
    r = _enrol(client, (FACES / "obama" / "obama_1.jpg").read_bytes())
    assert r.status_code == 201, r.text
    r2 = _enrol(client, (FACES / "biden" / "biden_2.jpg").read_bytes(), pid="3711020000000201", kind="coaches")
    assert r2.status_code == 201, r2.text
    with sf() as s:
        student = s.get(Student, "3711020000000101")
        photo = s.scalar(select(EnrolmentPhoto).where(EnrolmentPhoto.person_id == "3711020000000101"))
        assert student is not None and photo is not None and s.get(Coach, "3711020000000201") is not None
        assert student.photo_sha256 == photo.sha256 and photo.consent and photo.uploaded_by == "admin-token"
        stored = Image.open(io.BytesIO(photo.data))
        assert stored.format == "JPEG" and max(stored.size) <= 1024 and not stored.info.get("exif")
    # the template is the person's: another photo of them is close, someone else is far
    template = decode_template(student.face_template)
    same = engine.encode(engine.load_image(FACES / "obama" / "obama_2.jpg"))[0]
    other = engine.encode(engine.load_image(FACES / "biden" / "biden_1.jpg"))[0]
    assert distance(template, same) < 0.5 < distance(template, other)
    got = client.get("/api/students/3711020000000101/photo", headers=ADMIN)
    assert got.status_code == 200 and got.content == photo.data
    # re-enrolment replaces the template and keeps the old photo
    r3 = client.put("/api/students/3711020000000101/photo", data={"consent": "true"},
                    files={"photo": ("p.jpg", (FACES / "obama" / "obama_3.jpg").read_bytes(), "image/jpeg")},
                    headers=ADMIN)  # fmt: skip
    assert r3.status_code == 200 and r3.json()["sha256"] != photo.sha256
    with sf() as s:
        assert len(list(s.scalars(select(EnrolmentPhoto).where(EnrolmentPhoto.person_id == "3711020000000101")))) == 2


def _blank() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 140, 160)).save(out, "JPEG")
    return out.getvalue()


def _small_face() -> bytes:
    face = Image.open(FACES / "obama" / "obama_1.jpg").convert("RGB")
    canvas = Image.new("RGB", (1000, 1000), (200, 200, 200))
    canvas.paste(face.resize((face.width // 9, face.height // 9)), (450, 400))
    out = io.BytesIO()
    canvas.save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(("name", "photo", "status", "reason"), [
    ("two people", lambda: (FACES / "multi" / "two_people.jpg").read_bytes(), 422, "several_faces"),
    ("no face", _blank, 422, "no_face"),
    ("small face", _small_face, 422, "face_too_small"),
    ("not an image", lambda: b"%PDF-1.4 not a photo", 422, "not_an_image"),
    ("too big", lambda: b"\xff\xd8" + bytes(9 * 1024 * 1024), 413, "photo_too_large"),
])  # fmt: skip
def test_photos_we_cannot_trust_are_refused_with_a_reason(api: tuple[TestClient, Any], name: str, photo: Any,
                                                          status: int, reason: str) -> None:  # fmt: skip
    client, sf = api
    r = _enrol(client, photo())
    assert r.status_code == status and r.json()["reason"] == reason, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["detail"]
    with sf() as s:
        assert s.get(Student, "3711020000000101") is None and s.scalar(select(EnrolmentPhoto)) is None


def test_consent_is_required(api: tuple[TestClient, Any]) -> None:
    client, _sf = api
    r = _enrol(client, (FACES / "obama" / "obama_1.jpg").read_bytes(), consent="false")
    assert r.status_code == 422 and r.json()["reason"] == "no_consent"


def test_a_school_admin_enrols_only_its_own_school(api: tuple[TestClient, Any]) -> None:
    client, sf = api
    with sf() as s, s.begin():
        s.add(School(id="3711020000000002", name="other", created_at=datetime.now(UTC)))
    r = client.post("/api/operators", json={"username": "admin.one", "password": "a long password", "role":
                    "school_admin", "school": SCHOOL}, headers=ADMIN)  # fmt: skip
    assert r.status_code == 201
    tok = client.post("/api/auth/token", data={"username": "admin.one", "password": "a long password"}).json()
    auth = {"Authorization": f"Bearer {tok['access_token']}"}
    data = {"id": "3711020000000102", "name": "x", "school": "3711020000000002", "class": "C1", "consent": "true"}
    photo = {"photo": ("p.jpg", (FACES / "obama" / "obama_1.jpg").read_bytes(), "image/jpeg")}
    assert client.post("/api/students/enrol", data=data, files=photo, headers=auth).status_code == 403
    assert client.post("/api/students/enrol", data={**data, "school": SCHOOL}, files=photo,
                       headers=auth).status_code == 201  # fmt: skip
