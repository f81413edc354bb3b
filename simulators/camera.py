"""Camera simulator: a real HTTP server that serves JPEG snapshots for several named cameras, as IP cameras do.

    GET  /cameras                        → {"cameras": {name: scene description}}
    GET  /cameras/{name}/snapshot.jpg    → the camera's current frame (image/jpeg)
    GET  /cameras/{name}/scene           → the scene description
    POST /cameras/{name}/scene           ← {"image": path} | {"video": path} | {"empty": true}

A still image is served as is (JPEG) or re-encoded (PNG, …). A video's frames advance with real time at the
clip's frame rate and loop: what a camera watching a live person sees. ``{"empty": true}`` is an empty car
seat: a plain grey frame with no face. Unknown camera: 404; a body that is not the JSON above, or a file that
cannot be read: 400 with ``{"error": reason}``.

The same is available in-process through :meth:`CameraSimulator.set_scene`. Paths are read on the simulator's
machine. No imports from ``agent`` or ``server``: the terminal sees this only through its HTTP snapshot URL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

DEMO_FACES_DIR = Path(__file__).resolve().parent / "data" / "faces"
"""Shipped demo photos and clip; ``people.json`` there maps person → enrolment and live files."""

MAX_SCENE_BODY = 64 * 1024
"""Largest POST body accepted (a scene is a short JSON object)."""

MAX_VIDEO_FRAMES = 1800
"""Frames kept from a video scene (one minute at 30 fps), held in memory as JPEG."""

MAX_SOURCE_BYTES = 64 * 1024 * 1024
"""Largest image or video file a scene may load."""

EMPTY_FRAME_SIZE = (640, 480)
"""Width, height of the empty-seat frame."""

EMPTY_FRAME_GREY = 128
JPEG_QUALITY = 90
DEFAULT_FPS = 25.0
"""Frame rate assumed when a video file does not state one."""

DEFAULT_CAMERAS = ("cabin",)

SHUTDOWN_POLL = 0.05
"""Seconds between the server loop's checks for shutdown (the stdlib default 0.5 s slows every test)."""


class SceneError(ValueError):
    """A scene cannot be set: bad arguments, or a file that is missing or not an image/video."""


class UnknownCamera(KeyError):
    """No camera of that name in this simulator."""


def load_demo_people() -> dict[str, dict[str, Path]]:
    """person id → {"enrol": path, "live": path} from the shipped ``people.json``."""
    doc = json.loads((DEMO_FACES_DIR / "people.json").read_text(encoding="utf-8"))
    return {
        pid: {"enrol": DEMO_FACES_DIR / p["enrol"], "live": DEMO_FACES_DIR / p["live"]}
        for pid, p in doc["people"].items()
    }


def _encode_jpeg(frame: Any) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - only on an empty frame
        raise SceneError("cannot encode frame as JPEG")
    return bytes(buf)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise SceneError(f"{path}: no such file")
    if path.stat().st_size > MAX_SOURCE_BYTES:
        raise SceneError(f"{path}: larger than {MAX_SOURCE_BYTES} bytes")


@dataclass(frozen=True)
class _Scene:
    kind: str  # "empty" | "image" | "video"
    source: str | None
    frames: tuple[bytes, ...]
    fps: float
    started: float

    def frame_index(self, now: float) -> int:
        if len(self.frames) == 1:
            return 0
        return int((now - self.started) * self.fps) % len(self.frames)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.source is not None:
            d["source"] = self.source
        if self.kind == "video":
            d["frames"] = len(self.frames)
            d["fps"] = self.fps
        return d


def _empty_scene(now: float) -> _Scene:
    import numpy as np

    w, h = EMPTY_FRAME_SIZE
    frame = np.full((h, w, 3), EMPTY_FRAME_GREY, dtype=np.uint8)
    return _Scene("empty", None, (_encode_jpeg(frame),), 0.0, now)


def _image_scene(path: Path, now: float) -> _Scene:
    import cv2
    import numpy as np

    _check_file(path)
    data = path.read_bytes()
    frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise SceneError(f"{path}: not an image")
    jpeg = data if data[:3] == b"\xff\xd8\xff" else _encode_jpeg(frame)
    return _Scene("image", str(path), (jpeg,), 0.0, now)


def _video_scene(path: Path, now: float) -> _Scene:
    import cv2

    _check_file(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SceneError(f"{path}: not a video OpenCV can open")
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or DEFAULT_FPS
        frames: list[bytes] = []
        while len(frames) < MAX_VIDEO_FRAMES:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(_encode_jpeg(frame))
    finally:
        cap.release()
    if not frames:
        raise SceneError(f"{path}: no frames could be read")
    return _Scene("video", str(path), tuple(frames), fps if fps > 0 else DEFAULT_FPS, now)


class CameraSimulator:
    """Several simulated IP cameras behind one HTTP server on ``host:port`` (port 0: any free port).

    Use as a context manager, or :meth:`start` / :meth:`stop`. Every camera starts with an empty seat.
    ``clock`` (monotonic seconds) drives video playback; tests may inject their own.
    """

    def __init__(
        self,
        cameras: Iterable[str] = DEFAULT_CAMERAS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = list(cameras)
        if not names:
            raise ValueError("a camera simulator needs at least one camera")
        for name in names:
            if not name or "/" in name:
                raise ValueError(f"bad camera name {name!r}")
        self._clock = clock
        self._lock = threading.Lock()
        empty = _empty_scene(clock())
        self._scenes: dict[str, _Scene] = {name: empty for name in names}
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> CameraSimulator:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self._host, self._port), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, name="camera-sim", daemon=True
        )
        self._thread.start()
        log.info("camera simulator on %s with cameras %s", self.url, ", ".join(self.cameras))
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CameraSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (the server must be started)."""
        if self._server is None:
            raise RuntimeError("camera simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def snapshot_url(self, name: str) -> str:
        self._scene(name)
        return f"{self.url}/cameras/{quote(name, safe='')}/snapshot.jpg"

    @property
    def cameras(self) -> list[str]:
        return list(self._scenes)

    # --- scenes --------------------------------------------------------------------------------------

    def set_scene(
        self,
        name: str,
        *,
        image: str | Path | None = None,
        video: str | Path | None = None,
        empty: bool = False,
    ) -> dict[str, Any]:
        """Show an image, play a video (looping, real time) or an empty seat on camera ``name``.

        Exactly one of ``image``, ``video``, ``empty=True``. Raises :class:`UnknownCamera` or
        :class:`SceneError`. Returns the scene description.
        """
        self._scene(name)
        chosen = [k for k, v in (("image", image), ("video", video), ("empty", empty)) if v]
        if len(chosen) != 1:
            raise SceneError('give exactly one of "image", "video" or "empty": true')
        now = self._clock()
        if image:
            scene = _image_scene(Path(image), now)
        elif video:
            scene = _video_scene(Path(video), now)
        else:
            scene = _empty_scene(now)
        with self._lock:
            self._scenes[name] = scene
        log.info("camera %s: %s", name, scene.describe())
        return scene.describe()

    def scene(self, name: str) -> dict[str, Any]:
        return self._scene(name).describe()

    def snapshot(self, name: str) -> tuple[bytes, int]:
        """The current JPEG of camera ``name`` and its frame index within the scene."""
        scene = self._scene(name)
        index = scene.frame_index(self._clock())
        return scene.frames[index], index

    def _scene(self, name: str) -> _Scene:
        with self._lock:
            try:
                return self._scenes[name]
            except KeyError:
                raise UnknownCamera(name) from None


def _make_handler(sim: CameraSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "jiapei-camera-sim/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: HTTPStatus, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _route(self) -> tuple[str, str] | None:
            parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
            if parts == ["cameras"]:
                return ("", "")
            if len(parts) == 3 and parts[0] == "cameras":
                return (parts[1], parts[2])
            return None

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            route = self._route()
            if route == ("", ""):
                self._json(HTTPStatus.OK, {"cameras": {n: sim.scene(n) for n in sim.cameras}})
                return
            if route is None or route[1] not in ("snapshot.jpg", "scene"):
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
                return
            name, what = route
            try:
                if what == "scene":
                    self._json(HTTPStatus.OK, sim.scene(name))
                    return
                jpeg, index = sim.snapshot(name)
            except UnknownCamera:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"unknown camera {name!r}"})
                return
            self._send(HTTPStatus.OK, jpeg, "image/jpeg", {"X-Frame-Index": str(index)})

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self.do_GET()

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            route = self._route()
            if route is None or route[1] != "scene":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
                return
            name = route[0]
            if name not in sim.cameras:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"unknown camera {name!r}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_SCENE_BODY:
                self.close_connection = True
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"body must be 0-{MAX_SCENE_BODY} bytes"})
                return
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
                return
            try:
                scene = _scene_from_json(sim, name, body)
            except SceneError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._json(HTTPStatus.OK, scene)

    return Handler


def _scene_from_json(sim: CameraSimulator, name: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SceneError('body must be a JSON object: {"image": path} | {"video": path} | {"empty": true}')
    unknown = set(body) - {"image", "video", "empty"}
    if unknown:
        raise SceneError(f"unknown fields: {', '.join(sorted(unknown))}")
    image, video, empty = body.get("image"), body.get("video"), body.get("empty", False)
    for key, value in (("image", image), ("video", video)):
        if value is not None and (not isinstance(value, str) or not value):
            raise SceneError(f'"{key}" must be a non-empty path string')
    if not isinstance(empty, bool):
        raise SceneError('"empty" must be true or false')
    return sim.set_scene(name, image=image, video=video, empty=empty)
