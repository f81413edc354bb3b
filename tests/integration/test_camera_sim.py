"""Camera simulator over real HTTP on a free port, read by the terminal's SnapshotCamera and OpenCVCamera."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.camera import Camera, CameraUnavailable, FakeCamera, OpenCVCamera, SnapshotCamera, open_camera
from biometrics import FaceEngine, FaceTemplate
from simulators.camera import CameraSimulator, SceneError, UnknownCamera, load_demo_people

DEMO = load_demo_people()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[CameraSimulator]:
    with CameraSimulator(["cabin", "road"], clock=clock) as s:
        yield s


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="module")
def enrolled(engine: FaceEngine) -> dict[str, FaceTemplate]:
    out = {}
    for pid, files in DEMO.items():
        (t,) = engine.encode(engine.load_image(files["enrol"]))
        out[pid] = t
    return out


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def rgb(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[:, :, ::-1])


def test_snapshot_camera_sees_the_scene_set_over_http(
    sim: CameraSimulator, engine: FaceEngine, enrolled: dict[str, FaceTemplate]
) -> None:
    cam = SnapshotCamera(sim.snapshot_url("cabin"), timeout=5)
    assert isinstance(cam, Camera)
    empty = cam.capture()
    assert empty.shape == (480, 640, 3) and empty.dtype == np.uint8
    assert engine.identify(rgb(empty), enrolled).reason == "no_face"

    status, body = post(f"{sim.url}/cameras/cabin/scene", json.dumps({"image": str(DEMO["obama"]["live"])}).encode())
    assert status == 200 and body["kind"] == "image"
    got = engine.identify(rgb(cam.capture()), enrolled)
    assert got.person_id == "obama" and got.distance is not None and got.distance < 0.5

    # the other camera is independent
    road = open_camera(sim.snapshot_url("road"))
    assert isinstance(road, SnapshotCamera)
    assert engine.identify(rgb(road.capture()), enrolled).reason == "no_face"

    status, body = post(f"{sim.url}/cameras/cabin/scene", b'{"empty": true}')
    assert status == 200 and body == {"kind": "empty"}
    assert engine.identify(rgb(cam.capture()), enrolled).reason == "no_face"


def test_python_api_sets_scenes(sim: CameraSimulator, engine: FaceEngine, enrolled: dict[str, FaceTemplate]) -> None:
    sim.set_scene("road", image=DEMO["rose_leslie"]["live"])
    frame = open_camera(sim.snapshot_url("road")).capture()
    assert engine.identify(rgb(frame), enrolled).person_id == "rose_leslie"
    status, body, _ = get(f"{sim.url}/cameras")
    assert json.loads(body)["cameras"]["road"]["kind"] == "image"
    with pytest.raises(UnknownCamera):
        sim.set_scene("boot", empty=True)
    with pytest.raises(SceneError, match="exactly one"):
        sim.set_scene("road", image=DEMO["obama"]["live"], empty=True)
    with pytest.raises(SceneError, match="no such file"):
        sim.set_scene("road", video="/nonexistent/clip.mp4")


def test_png_images_are_served_as_jpeg(sim: CameraSimulator, tmp_path: Path) -> None:
    import cv2

    png = tmp_path / "x.png"
    cv2.imwrite(str(png), np.full((20, 30, 3), 200, np.uint8))
    sim.set_scene("cabin", image=png)
    status, body, headers = get(sim.snapshot_url("cabin"))
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"


def test_video_frames_advance_with_time_and_loop(
    sim: CameraSimulator, clock: FakeClock, engine: FaceEngine, enrolled: dict[str, FaceTemplate]
) -> None:
    desc = sim.set_scene("cabin", video=DEMO["lin_manuel_miranda"]["live"])
    assert desc["kind"] == "video" and desc["frames"] == 34 and desc["fps"] == pytest.approx(14.985, abs=0.01)
    url = sim.snapshot_url("cabin")
    _, first, h0 = get(url)
    _, same, h1 = get(url)
    assert h0["X-Frame-Index"] == h1["X-Frame-Index"] == "0" and first == same
    clock.now += 1.0  # one second later: ~15 frames on
    _, later, h2 = get(url)
    assert h2["X-Frame-Index"] == "14" and later != first
    clock.now += 34 / desc["fps"]  # a whole loop later: the same frame again
    _, h3_body, h3 = get(url)
    assert h3["X-Frame-Index"] == "14" and h3_body == later

    cam = SnapshotCamera(url)
    got = engine.identify(rgb(cam.capture()), enrolled)
    assert got.faces == 1 and got.person_id in ("lin_manuel_miranda", None)
    assert got.distance is not None and got.distance < 0.6


def test_video_plays_in_real_time() -> None:
    with CameraSimulator() as s:
        s.set_scene("cabin", video=DEMO["lin_manuel_miranda"]["live"])
        url = s.snapshot_url("cabin")
        first = get(url)[2]["X-Frame-Index"]
        deadline = time.monotonic() + 3.0  # a frame lasts 67 ms; poll until it moves on
        while get(url)[2]["X-Frame-Index"] == first:
            assert time.monotonic() < deadline, "video frames do not advance"
            time.sleep(0.01)


def test_unknown_camera_is_404(sim: CameraSimulator) -> None:
    status, body, _ = get(f"{sim.url}/cameras/boot/snapshot.jpg")
    assert status == 404 and b"unknown camera" in body
    status, err = post(f"{sim.url}/cameras/boot/scene", b'{"empty": true}')
    assert status == 404 and "unknown camera" in err["error"]
    assert get(f"{sim.url}/nowhere")[0] == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "exactly one"),
        (b'{"image": "a.jpg", "empty": true}', "exactly one"),
        (b'{"colour": "red"}', "unknown fields"),
        (b'{"image": 3}', "path string"),
        (b'{"empty": "yes"}', "true or false"),
        (b'{"image": "/nonexistent/face.jpg"}', "no such file"),
        (b'{"video": "/nonexistent/clip.mp4"}', "no such file"),
    ],
)
def test_bad_scene_is_400_with_reason(sim: CameraSimulator, body: bytes, reason: str) -> None:
    status, err = post(f"{sim.url}/cameras/cabin/scene", body)
    assert status == 400
    assert reason in err["error"]
    assert sim.scene("cabin") == {"kind": "empty"}


def test_a_text_file_is_not_an_image(sim: CameraSimulator, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("hello")
    status, err = post(f"{sim.url}/cameras/cabin/scene", json.dumps({"image": str(notes)}).encode())
    assert status == 400 and "not an image" in err["error"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_snapshot_camera_on_a_dead_url_is_unavailable() -> None:
    cam = SnapshotCamera(f"http://127.0.0.1:{free_port()}/cameras/cabin/snapshot.jpg", timeout=2)
    with pytest.raises(CameraUnavailable, match="unreachable"):
        cam.capture()


def test_snapshot_camera_on_404_and_on_a_stopped_simulator(sim: CameraSimulator) -> None:
    with pytest.raises(CameraUnavailable, match="HTTP 404"):
        SnapshotCamera(f"{sim.url}/cameras/boot/snapshot.jpg").capture()
    with pytest.raises(CameraUnavailable, match="not an image"):
        SnapshotCamera(f"{sim.url}/cameras").capture()  # JSON, not a JPEG
    url = sim.snapshot_url("cabin")
    sim.stop()
    with pytest.raises(CameraUnavailable):
        SnapshotCamera(url, timeout=2).capture()


def test_snapshot_camera_times_out() -> None:
    with socket.socket() as server:  # accepts the connection, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        cam = SnapshotCamera(f"http://127.0.0.1:{server.getsockname()[1]}/snap.jpg", timeout=0.3)
        with pytest.raises(CameraUnavailable):
            cam.capture()


def test_opencv_camera_plays_a_file_in_a_loop() -> None:
    cam = OpenCVCamera(str(DEMO["lin_manuel_miranda"]["live"]))
    frames = [cam.capture() for _ in range(40)]  # 34 frames in the clip: reopened once
    cam.close()
    assert all(f.shape == (180, 320, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], frames[34])


def test_opencv_camera_missing_sources() -> None:
    with pytest.raises(CameraUnavailable, match="no such file"):
        OpenCVCamera("/nonexistent/cabin.mp4").capture()
    with pytest.raises(CameraUnavailable, match="device 97"):
        open_camera("97").capture()


def test_open_camera_parses_specs() -> None:
    assert isinstance(open_camera("http://10.0.0.9/snap.jpg"), SnapshotCamera)
    assert isinstance(open_camera("https://cam.local/snap.jpg"), SnapshotCamera)
    dev = open_camera("0")
    assert isinstance(dev, OpenCVCamera) and dev.source == 0
    f = open_camera("/var/cams/cabin.mp4")
    assert isinstance(f, OpenCVCamera) and f.source == "/var/cams/cabin.mp4"
    assert isinstance(open_camera("rtsp://10.0.0.9/stream"), OpenCVCamera)
    with pytest.raises(ValueError):
        open_camera("  ")
    with pytest.raises(ValueError):
        SnapshotCamera("ftp://x/snap.jpg")


def test_fake_camera() -> None:
    cam = FakeCamera()
    with pytest.raises(CameraUnavailable):
        cam.capture()
    cam.set_frames([np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)])
    assert [int(cam.capture().max()) for _ in range(3)] == [0, 1, 0]
    assert isinstance(cam, Camera)
