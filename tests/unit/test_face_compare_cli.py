"""`jiapei face compare`: one JSON line per image, errors as lines, exit status; with a fake engine and the real one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from biometrics.errors import ImageUnreadable
from biometrics.templates import TEMPLATE_SIZE, FaceTemplate
from jiapei_cli.face_compare import EXIT_IMAGE_ERROR, EXIT_OK, EXIT_REFERENCE_ERROR, run
from simulators.camera import load_demo_people


def face(offset: float) -> FaceTemplate:
    v = np.zeros(TEMPLATE_SIZE, np.float32)
    v[0] = offset
    return FaceTemplate(v)


class FakeEngine:
    """Images are names: each maps to the faces the fake 'finds' in it."""

    def __init__(self, scenes: dict[str, list[FaceTemplate] | Exception]) -> None:
        self.scenes = scenes

    def load_image(self, path: str) -> npt.NDArray[np.uint8]:
        scene = self.scenes.get(path)
        if scene is None:
            raise ImageUnreadable(f"{path}: no such file")
        if isinstance(scene, Exception):
            raise scene
        return np.full((1, 1, 3), len(path), np.uint8)

    def encode(self, image_rgb: npt.NDArray[np.uint8]) -> list[FaceTemplate]:
        for path, scene in self.scenes.items():
            if len(path) == int(image_rgb[0, 0, 0]) and not isinstance(scene, Exception):
                return scene
        raise AssertionError("unknown image")


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


SCENES: dict[str, list[FaceTemplate] | Exception] = {
    "ref.jpg": [face(0.0)],
    "same.jpg": [face(0.3)],
    "other.jpg": [face(0.9)],
    "empty_seat.jpg": [],
    "two_faces.jpg": [face(0.1), face(0.2)],
    "broken.jpg": ImageUnreadable("broken.jpg: cannot decode image (truncated)"),
    "weird.png": SyntaxError("broken PNG file"),  # what Pillow raises on some corrupt PNGs
}


def test_one_line_per_image() -> None:
    out = io.StringIO()
    images = ["same.jpg", "other.jpg", "empty_seat.jpg", "two_faces.jpg"]
    assert run("ref.jpg", images, 0.5, engine=FakeEngine(SCENES), out=out) == EXIT_OK
    assert lines(out) == [
        {"image": "same.jpg", "faces": 1, "distance": pytest.approx(0.3), "match": True},
        {"image": "other.jpg", "faces": 1, "distance": pytest.approx(0.9), "match": False},
        {"image": "empty_seat.jpg", "faces": 0, "distance": None, "match": None},
        {"image": "two_faces.jpg", "faces": 2, "distance": None, "match": None},
    ]


def test_threshold_decides_match() -> None:
    out = io.StringIO()
    run("ref.jpg", ["same.jpg"], 0.25, engine=FakeEngine(SCENES), out=out)
    assert lines(out)[0]["match"] is False


def test_unreadable_images_are_lines_not_tracebacks() -> None:
    out = io.StringIO()
    images = ["missing.jpg", "broken.jpg", "weird.png", "same.jpg"]
    assert run("ref.jpg", images, 0.5, engine=FakeEngine(SCENES), out=out) == EXIT_IMAGE_ERROR
    got = lines(out)
    assert [g["image"] for g in got] == images
    assert got[0] == {"image": "missing.jpg", "error": "missing.jpg: no such file"}
    assert "truncated" in got[1]["error"]
    assert "SyntaxError" in got[2]["error"]
    assert got[3]["match"] is True


@pytest.mark.parametrize(
    ("reference", "error"),
    [("missing.jpg", "no such file"), ("empty_seat.jpg", "no face"), ("two_faces.jpg", "2 faces")],
)
def test_unusable_reference(reference: str, error: str) -> None:
    out = io.StringIO()
    status = run(reference, ["same.jpg", "empty_seat.jpg"], 0.5, engine=FakeEngine(SCENES), out=out)
    assert status == EXIT_REFERENCE_ERROR
    ref_line, *image_lines = lines(out)
    assert ref_line["image"] == reference and ref_line["reference"] is True and error in ref_line["error"]
    assert image_lines == [
        {"image": "same.jpg", "faces": 1, "distance": None, "match": None},
        {"image": "empty_seat.jpg", "faces": 0, "distance": None, "match": None},
    ]


def test_real_engine_on_demo_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = load_demo_people()
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    images = [str(demo["obama"]["live"]), str(demo["biden"]["live"]), str(junk)]
    status = run(str(demo["obama"]["enrol"]), images, 0.5)
    assert status == EXIT_IMAGE_ERROR
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert got[0]["faces"] == 1 and got[0]["match"] is True and 0.3 < got[0]["distance"] < 0.5
    assert got[1]["faces"] == 1 and got[1]["match"] is False and got[1]["distance"] > 0.7
    assert set(got[2]) == {"image", "error"}
