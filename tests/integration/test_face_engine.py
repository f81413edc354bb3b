"""FaceEngine on real photos with the real face_recognition/dlib: matches, refusals, and the shipped demo data.

Uses ../shared/testdata/faces (public photos from ageitgey/face_recognition, see its PROVENANCE.md) and the demo
copies in simulators/data/faces.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from biometrics import FaceEngine, FaceTemplate, ImageUnreadable, decode_template, distance, encode_template
from biometrics.templates import DEFAULT_MATCH_THRESHOLD
from simulators.camera import DEMO_FACES_DIR, load_demo_people

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "faces"
needs_testdata = pytest.mark.skipif(
    not FACES.is_dir(), reason=f"shared face test data not found at {FACES} (a plain clone has only the demo data)"
)

# (person, file) pairs of the shared test data used for enrolment and for the live side.
SAME_PERSON = [
    ("obama", "obama/obama_1.jpg", "obama/obama_2.jpg"),
    ("obama", "obama/obama_1.jpg", "obama/obama_3.jpg"),
    ("biden", "biden/biden_1.jpg", "biden/biden_2.jpg"),
    ("kit_harington", "kit_harington/kit_harington_1.jpg", "kit_harington/kit_harington_3.jpg"),
    ("rose_leslie", "rose_leslie/rose_leslie_1.jpg", "rose_leslie/rose_leslie_2.jpg"),
    ("alex_lacamoire", "alex_lacamoire/alex_lacamoire_1.jpg", "alex_lacamoire/alex_lacamoire_2.jpg"),
]
ENROLMENT = {
    "obama": "obama/obama_1.jpg",
    "biden": "biden/biden_1.jpg",
    "kit_harington": "kit_harington/kit_harington_1.jpg",
    "rose_leslie": "rose_leslie/rose_leslie_1.jpg",
    "alex_lacamoire": "alex_lacamoire/alex_lacamoire_1.jpg",
    "lin_manuel_miranda": "lin_manuel_miranda/lin_manuel_miranda_1.png",
}


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


_cache: dict[Path, list[FaceTemplate]] = {}


def faces(engine: FaceEngine, path: Path) -> list[FaceTemplate]:
    if path not in _cache:
        _cache[path] = engine.encode(engine.load_image(path))
    return _cache[path]


def one_face(engine: FaceEngine, path: Path) -> FaceTemplate:
    found = faces(engine, path)
    assert len(found) == 1, f"{path.name}: {len(found)} faces"
    return found[0]


@pytest.fixture(scope="module")
def enrolled(engine: FaceEngine) -> dict[str, FaceTemplate]:
    if not FACES.is_dir():
        pytest.skip(f"shared face test data not found at {FACES}")
    return {pid: one_face(engine, FACES / rel) for pid, rel in ENROLMENT.items()}


@needs_testdata
@pytest.mark.parametrize(("person", "enrol", "live"), SAME_PERSON)
def test_same_person_matches(
    engine: FaceEngine, enrolled: dict[str, FaceTemplate], person: str, enrol: str, live: str
) -> None:
    d = distance(one_face(engine, FACES / enrol), one_face(engine, FACES / live))
    assert 0.05 < d < DEFAULT_MATCH_THRESHOLD
    got = engine.identify(engine.load_image(FACES / live), enrolled)
    assert got.faces == 1 and got.person_id == person and got.reason is None
    assert got.distance is not None and got.distance < DEFAULT_MATCH_THRESHOLD


@needs_testdata
def test_different_people_do_not_match(engine: FaceEngine, enrolled: dict[str, FaceTemplate]) -> None:
    for (a, ta), (b, tb) in itertools.combinations(enrolled.items(), 2):
        assert distance(ta, tb) > 0.6, (a, b)
    obama_only = {"obama": enrolled["obama"]}
    got = engine.identify(engine.load_image(FACES / "biden/biden_2.jpg"), obama_only)
    assert got.faces == 1 and got.person_id is None and got.reason == "no_match"
    assert got.distance is not None and got.distance > 0.7


@needs_testdata
@pytest.mark.parametrize("name", ["two_people.jpg", "obama_and_biden.jpg", "kit_with_rose.jpg"])
def test_several_faces_are_refused(engine: FaceEngine, enrolled: dict[str, FaceTemplate], name: str) -> None:
    got = engine.identify(engine.load_image(FACES / "multi" / name), enrolled)
    assert got.faces >= 2
    assert got.person_id is None and got.distance is None and got.reason == "several_faces"


def test_empty_frame_has_no_face(engine: FaceEngine) -> None:
    grey = np.full((480, 640, 3), 128, np.uint8)
    got = engine.identify(grey, {})
    assert (got.faces, got.person_id, got.distance, got.reason) == (0, None, None, "no_face")


@needs_testdata
def test_templates_survive_the_wire(engine: FaceEngine) -> None:
    t = one_face(engine, FACES / "obama/obama_1.jpg")
    back = decode_template(encode_template(t))
    assert distance(t, back) == 0.0
    assert distance(back, one_face(engine, FACES / "obama/obama_2.jpg")) < DEFAULT_MATCH_THRESHOLD


def test_unreadable_images(engine: FaceEngine, tmp_path: Path) -> None:
    with pytest.raises(ImageUnreadable, match="no such file"):
        engine.load_image(tmp_path / "missing.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageUnreadable):
        engine.load_image(junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageUnreadable, match="not an image"):
        engine.load_image(text)
    with pytest.raises(ImageUnreadable, match="shape"):
        engine.encode(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageUnreadable, match="uint8"):
        engine.encode(np.zeros((4, 4, 3), np.float32))


# --- shipped demo data --------------------------------------------------------------------------------

DEMO = load_demo_people()


@pytest.fixture(scope="module")
def demo_enrolled(engine: FaceEngine) -> dict[str, FaceTemplate]:
    return {pid: one_face(engine, files["enrol"]) for pid, files in DEMO.items()}


def test_demo_folder_is_small_and_complete() -> None:
    assert len(DEMO) == 6
    for files in DEMO.values():
        assert files["enrol"].is_file() and files["live"].is_file()
    for name in ("LICENSE", "PROVENANCE.md", "people.json"):
        assert (DEMO_FACES_DIR / name).is_file()
    assert "Adam Geitgey" in (DEMO_FACES_DIR / "LICENSE").read_text()
    total = sum(p.stat().st_size for p in DEMO_FACES_DIR.iterdir())
    assert total < 400 * 1024


@pytest.mark.parametrize("person", [p for p in DEMO if DEMO[p]["live"].suffix == ".jpg"])
def test_demo_live_photo_matches_only_its_enrolment(
    engine: FaceEngine, demo_enrolled: dict[str, FaceTemplate], person: str
) -> None:
    live_img = engine.load_image(DEMO[person]["live"])
    assert max(live_img.shape[:2]) <= 320
    live = one_face(engine, DEMO[person]["live"])
    for other, t in demo_enrolled.items():
        d = distance(live, t)
        if other == person:
            assert d < DEFAULT_MATCH_THRESHOLD, (person, d)
        else:
            assert d > 0.6, (person, other, d)
    got = engine.identify(live_img, demo_enrolled)
    assert got.person_id == person


def test_demo_clip_shows_lin_manuel_miranda(engine: FaceEngine, demo_enrolled: dict[str, FaceTemplate]) -> None:
    import cv2

    cap = cv2.VideoCapture(str(DEMO["lin_manuel_miranda"]["live"]))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert 30 <= len(frames) <= 90
    results = [engine.identify(np.ascontiguousarray(f[:, :, ::-1]), demo_enrolled) for f in frames]
    found = [r for r in results if r.faces == 1]
    matched = [r for r in results if r.person_id == "lin_manuel_miranda"]
    assert len(found) >= 0.9 * len(frames)
    assert len(matched) >= 0.7 * len(frames)
    assert all(r.person_id in (None, "lin_manuel_miranda") for r in results)
    assert float(np.median([r.distance for r in found])) < DEFAULT_MATCH_THRESHOLD


def test_encode_time_of_a_demo_photo(engine: FaceEngine) -> None:
    img = engine.load_image(DEMO["obama"]["enrol"])
    engine.encode(img)
    t0 = time.perf_counter()
    engine.encode(img)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s here; generous for slow CI machines
