"""Camera simulator: a real HTTP server that serves JPEG snapshots for several named cameras, as IP cameras do.

    GET  /cameras                        → {"cameras": {name: scene description}}
    GET  /cameras/{name}/snapshot.jpg    → the camera's current frame (image/jpeg)
    GET  /cameras/{name}/scene           → the scene description
    POST /cameras/{name}/scene           ← {"image": path} | {"held": path} | {"video": path, …} | {"multi": [path, …]}
                                           | {"empty": true}, each with an optional "exposure"

Scenes, i.e. what is in front of the camera:

- ``{"image": path}``: a still picture, served as is (JPEG) or re-encoded (PNG, …): the same bytes every time, as a
  frozen feed or a photo on a perfect stand gives. A liveness check sees ``frozen_frames``.
- ``{"held": path}``: the photo printed and held up by a hand: every frame shows it smaller than the frame on a
  dark background, moved by a small wobble (±2.5° roll, ±8 px, a slight perspective tilt), with sensor noise (σ 2
  grey levels) and light flicker; :data:`HELD_FRAMES` frames at :data:`HELD_FPS`, looping, seeded so runs repeat.
  Not frozen and not still: a liveness check must see that the face is flat (``flat_face``).
- ``{"video": path}``: a clip. Optional ``"start"``/``"end"`` (frame numbers, end excluded) keep a segment (the
  one that answers a challenge, or a short loop for a replay attack). ``"advance": "time"`` (default) plays it at
  the clip's frame rate with real time, looping: what a camera watching a live person sees. ``"advance":
  "request"`` serves the next frame at each snapshot request, moving ``"stride"`` frames on (default 1), so a test
  gets the same successive frames whatever its timing.
- ``{"multi": [path, path, …]}``: :data:`MULTI_MAX` at most pictures or clips side by side in one 640x480 frame
  (someone else in view: a passenger leaning in, a second person behind the driver), each in its own cell, with
  sensor noise; clips play in a loop, the scene as long as its longest clip (:data:`HELD_FRAMES` frames if all are
  pictures). A face check sees ``several_faces``.
- ``{"empty": true}``: an empty car seat: a plain grey frame with no face.
- ``"exposure"`` (0 < exposure ≤ 1, default 1) with any scene but ``empty``: the light that reaches the sensor, as a
  fraction. Below 1 every frame is darkened by that factor and gets sensor noise (σ :data:`DARK_NOISE_SIGMA` grey
  levels, seeded), as an underexposed camera at night or in a tunnel gives; a still picture then becomes
  :data:`HELD_FRAMES` frames that differ by their noise. :data:`DARK_EXPOSURE` is the "dark" mode of the tests.

:func:`demo_mode` gives the scene and the expected person for each named mode of the issue (genuine, other person,
printed photo, replayed loop, replayed recording, no face, two faces, dark) from the shipped demo faces.

Unknown camera: 404; a body that is not the JSON above, or a file that cannot be read: 400 with ``{"error": reason}``.

The same is available in-process through :meth:`CameraSimulator.set_scene`. Paths are read on the simulator's
machine. No imports from ``agent`` or ``server``: the terminal sees this only through its HTTP snapshot URL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
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

MULTI_MAX = 4
"""Most pictures or clips in one ``multi`` scene."""

DARK_NOISE_SIGMA = 2.0
"""Sensor noise (grey levels) added to an underexposed frame: the read noise does not scale down with the light."""

DARK_EXPOSURE = 0.04
"""Exposure of the "dark" mode: a cabin at night without infrared light (the brightest skin at ~10 grey levels)."""

CAMERA_MODES = (
    "genuine", "other_person", "printed_photo", "replayed_loop", "replayed_recording", "no_face", "two_faces", "dark",
)  # fmt: skip
"""Named modes of :func:`demo_mode`."""

HELD_FRAMES = 45
HELD_FPS = 15.0
"""A held photo loops every 3 s."""
HELD_PHOTO_HEIGHT = 300
"""Height (px) of the held photo inside the 640x480 frame: a print held at arm's length."""
HELD_BACKGROUND = 60
HELD_NOISE_SIGMA = 2.0
HELD_SEED = 1

ADVANCE_MODES = ("time", "request")
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
    kind: str  # "empty" | "image" | "held" | "video" | "multi"
    source: str | None
    frames: tuple[bytes, ...]
    fps: float
    started: float
    advance: str = "time"
    stride: int = 1
    segment: tuple[int, int] | None = None  # first and end (excluded) frame of a video kept
    exposure: float = 1.0
    sources: tuple[str, ...] = ()  # a multi scene's pictures and clips

    def frame_index(self, now: float, served: int) -> int:
        if len(self.frames) == 1:
            return 0
        if self.advance == "request":
            return (served * self.stride) % len(self.frames)
        return int((now - self.started) * self.fps) % len(self.frames)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.source is not None:
            d["source"] = self.source
        if self.kind in ("video", "held", "multi") or len(self.frames) > 1:
            d["frames"] = len(self.frames)
            d["fps"] = self.fps
        if self.sources:
            d["sources"] = list(self.sources)
        if self.exposure != 1.0:
            d["exposure"] = self.exposure
        if self.kind == "video":
            d["advance"] = self.advance
            if self.advance == "request":
                d["stride"] = self.stride
            if self.segment is not None:
                d["start"], d["end"] = self.segment
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


def _held_scene(path: Path, now: float) -> _Scene:
    """A printed photo held up by a hand: see the module docstring."""
    import cv2
    import numpy as np

    _check_file(path)
    photo = cv2.imdecode(np.frombuffer(path.read_bytes(), dtype=np.uint8), cv2.IMREAD_COLOR)
    if photo is None:
        raise SceneError(f"{path}: not an image")
    w, h = EMPTY_FRAME_SIZE
    scale = min(HELD_PHOTO_HEIGHT / photo.shape[0], (w * 0.7) / photo.shape[1])
    small = cv2.resize(photo, (max(1, int(photo.shape[1] * scale)), max(1, int(photo.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    canvas = np.full((h, w, 3), HELD_BACKGROUND, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    rng = np.random.default_rng(HELD_SEED)
    frames: list[bytes] = []
    for k in range(HELD_FRAMES):
        phase = 2 * np.pi * k / HELD_FRAMES * 4  # four slow sways per loop
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 2.5 * np.sin(phase), 1 + 0.03 * np.sin(phase * 0.5))
        m = np.vstack([m, [1.2e-4 * np.sin(phase * 1.1), 8e-5 * np.cos(phase), 1.0]])
        m[0, 2] += 8 * np.sin(phase * 1.3)
        m[1, 2] += 6 * np.cos(phase * 0.9)
        warped = cv2.warpPerspective(canvas, m, (w, h), borderValue=(HELD_BACKGROUND,) * 3)
        lit = warped.astype(np.float64) * (1 + 0.03 * np.sin(phase * 2)) + rng.normal(0, HELD_NOISE_SIGMA, warped.shape)
        frames.append(_encode_jpeg(np.clip(lit, 0, 255).astype(np.uint8)))
    return _Scene("held", str(path), tuple(frames), HELD_FPS, now)


def _video_scene(
    path: Path, now: float, *, start: int = 0, end: int | None = None, advance: str = "time", stride: int = 1
) -> _Scene:
    import cv2

    if start < 0 or (end is not None and end <= start):
        raise SceneError(f"bad segment: start {start}, end {end}")
    if advance not in ADVANCE_MODES:
        raise SceneError(f'"advance" must be one of {", ".join(ADVANCE_MODES)}')
    if stride < 1:
        raise SceneError('"stride" must be at least 1')
    _check_file(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SceneError(f"{path}: not a video OpenCV can open")
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or DEFAULT_FPS
        frames: list[bytes] = []
        index = 0
        while len(frames) < MAX_VIDEO_FRAMES and (end is None or index < end):
            ok, frame = cap.read()
            if not ok:
                break
            if index >= start:
                frames.append(_encode_jpeg(frame))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise SceneError(f"{path}: no frames could be read" + (f" from frame {start}" if start else ""))
    segment = None if start == 0 and end is None else (start, start + len(frames))
    fps = fps if fps > 0 else DEFAULT_FPS
    return _Scene("video", str(path), tuple(frames), fps, now, advance, stride, segment)


def _decoded(frames: Iterable[bytes]) -> list[Any]:
    import cv2
    import numpy as np

    return [cv2.imdecode(np.frombuffer(f, dtype=np.uint8), cv2.IMREAD_COLOR) for f in frames]


def _underexposed(scene: _Scene, exposure: float) -> _Scene:
    """``scene`` seen with ``exposure`` of its light: darker, with sensor noise (a still gets HELD_FRAMES frames)."""
    import numpy as np

    if not 0.0 < exposure <= 1.0:
        raise SceneError('"exposure" must be more than 0 and at most 1')
    if exposure == 1.0:
        return scene
    rng = np.random.default_rng(HELD_SEED)
    decoded = _decoded(scene.frames)
    if len(decoded) == 1:
        decoded = decoded * HELD_FRAMES
    frames = []
    for frame in decoded:
        dark = frame.astype(np.float64) * exposure + rng.normal(0, DARK_NOISE_SIGMA, frame.shape)
        frames.append(_encode_jpeg(np.clip(np.rint(dark), 0, 255).astype(np.uint8)))
    fps = scene.fps if scene.fps > 0 else HELD_FPS
    return replace(scene, frames=tuple(frames), fps=fps, exposure=exposure)


def _source_frames(path: Path) -> tuple[list[Any], float]:
    """A picture (one frame, fps 0) or a clip's frames (up to MAX_VIDEO_FRAMES) and its frame rate, decoded."""
    import cv2
    import numpy as np

    _check_file(path)
    still = cv2.imdecode(np.frombuffer(path.read_bytes(), dtype=np.uint8), cv2.IMREAD_COLOR)
    if still is not None:
        return [still], 0.0
    clip = _video_scene(path, 0.0)
    return _decoded(clip.frames), clip.fps


def _multi_scene(paths: list[Path], now: float) -> _Scene:
    """Pictures and clips side by side: see the module docstring."""
    import cv2
    import numpy as np

    if not 2 <= len(paths) <= MULTI_MAX:
        raise SceneError(f'"multi" takes 2-{MULTI_MAX} paths')
    sources = [_source_frames(p) for p in paths]
    w, h = EMPTY_FRAME_SIZE
    cell_w = w // len(paths)
    count = max(len(frames) for frames, _ in sources)
    if count == 1:
        count = HELD_FRAMES
    fps = max((fps for _, fps in sources), default=0.0) or HELD_FPS
    rng = np.random.default_rng(HELD_SEED)
    frames = []
    for k in range(count):
        canvas = np.full((h, w, 3), HELD_BACKGROUND, np.uint8)
        for i, (src, _) in enumerate(sources):
            item = src[k % len(src)]
            scale = min(cell_w / item.shape[1], h / item.shape[0])
            size = (max(1, int(item.shape[1] * scale)), max(1, int(item.shape[0] * scale)))
            small = cv2.resize(item, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            y, x = (h - small.shape[0]) // 2, i * cell_w + (cell_w - small.shape[1]) // 2
            canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        noisy = canvas.astype(np.float64) + rng.normal(0, HELD_NOISE_SIGMA, canvas.shape)
        frames.append(_encode_jpeg(np.clip(noisy, 0, 255).astype(np.uint8)))
    return _Scene("multi", None, tuple(frames), fps, now, sources=tuple(str(p) for p in paths))


def demo_mode(mode: str) -> tuple[dict[str, Any], str]:
    """The scene (keyword arguments of :meth:`CameraSimulator.set_scene`) and the person the terminal is told to
    expect, for one of :data:`CAMERA_MODES`, from the shipped demo faces (no shared test data needed):

    - ``genuine``: the demo clip of Lin-Manuel Miranda (a moving, turning face), expected: him;
    - ``other_person``: the same clip, expected: Barack Obama;
    - ``printed_photo``: Lin-Manuel Miranda's enrolment photo printed and held up (``held``);
    - ``replayed_loop``: three frames of the clip over and over (a replay box looping a short grab);
    - ``replayed_recording``: the whole clip replayed, as a recording of the person would be (it turns its head but
      never blinks: see the tests for what the challenge makes of it);
    - ``no_face``: the empty seat;
    - ``two_faces``: Barack Obama's and Joe Biden's photos side by side, expected: Obama;
    - ``dark``: the genuine clip at :data:`DARK_EXPOSURE`.

    Clips are served one frame per request, every 2nd frame (the ~8 frames/s a check samples at)."""
    people = load_demo_people()
    lin, obama, biden = people["lin_manuel_miranda"], people["obama"], people["biden"]
    clip: dict[str, Any] = {"video": lin["live"], "advance": "request", "stride": 2}
    modes: dict[str, tuple[dict[str, Any], str]] = {
        "genuine": (clip, "lin_manuel_miranda"),
        "other_person": (clip, "obama"),
        "printed_photo": ({"held": lin["enrol"]}, "lin_manuel_miranda"),
        "replayed_loop": ({"video": lin["live"], "start": 10, "end": 13, "advance": "request"}, "lin_manuel_miranda"),
        "replayed_recording": (clip, "lin_manuel_miranda"),
        "no_face": ({"empty": True}, "lin_manuel_miranda"),
        "two_faces": ({"multi": [obama["enrol"], biden["enrol"]]}, "obama"),
        "dark": ({**clip, "exposure": DARK_EXPOSURE}, "lin_manuel_miranda"),
    }
    if mode not in modes:
        raise SceneError(f"unknown camera mode {mode!r}; one of {', '.join(CAMERA_MODES)}")
    scene, person = modes[mode]
    return dict(scene), person


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
        self._served: dict[str, int] = {name: 0 for name in names}  # snapshots served since the scene was set
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
        held: str | Path | None = None,
        multi: Iterable[str | Path] | None = None,
        start: int = 0,
        end: int | None = None,
        advance: str = "time",
        stride: int = 1,
        exposure: float = 1.0,
    ) -> dict[str, Any]:
        """Show an image, a held photo, a video, several people or an empty seat on camera ``name`` (see the module
        docstring), in full light or underexposed (``exposure`` < 1).

        Exactly one of ``image``, ``held``, ``video``, ``multi``, ``empty=True``; ``start``, ``end``, ``advance``
        and ``stride`` apply to a video. Raises :class:`UnknownCamera` or :class:`SceneError`. Returns the scene
        description.
        """
        self._scene(name)
        sources = None if multi is None else [Path(p) for p in multi]
        given = (("image", image), ("held", held), ("video", video), ("multi", sources), ("empty", empty))
        chosen = [k for k, v in given if v]
        if len(chosen) != 1:
            raise SceneError('give exactly one of "image", "held", "video", "multi" or "empty": true')
        if not video and (start, end, advance, stride) != (0, None, "time", 1):
            raise SceneError('"start", "end", "advance" and "stride" apply to a video only')
        if empty and exposure != 1.0:
            raise SceneError('"exposure" does not apply to an empty seat')
        now = self._clock()
        if image:
            scene = _image_scene(Path(image), now)
        elif held:
            scene = _held_scene(Path(held), now)
        elif video:
            scene = _video_scene(Path(video), now, start=start, end=end, advance=advance, stride=stride)
        elif sources:
            scene = _multi_scene(sources, now)
        else:
            scene = _empty_scene(now)
        scene = _underexposed(scene, exposure)
        with self._lock:
            self._scenes[name] = scene
            self._served[name] = 0
        log.info("camera %s: %s", name, scene.describe())
        return scene.describe()

    def scene(self, name: str) -> dict[str, Any]:
        return self._scene(name).describe()

    def snapshot(self, name: str) -> tuple[bytes, int]:
        """The current JPEG of camera ``name`` and its frame index within the scene (a served snapshot: a video
        played per request moves on)."""
        now = self._clock()
        with self._lock:
            try:
                scene = self._scenes[name]
            except KeyError:
                raise UnknownCamera(name) from None
            index = scene.frame_index(now, self._served[name])
            self._served[name] += 1
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
        raise SceneError(
            'body must be a JSON object: {"image": path} | {"held": path} | {"video": path, …} | {"multi": [path, …]}'
            ' | {"empty": true}'
        )
    unknown = set(body) - {"image", "held", "video", "multi", "empty", "start", "end", "advance", "stride", "exposure"}
    if unknown:
        raise SceneError(f"unknown fields: {', '.join(sorted(unknown))}")
    image, held, video = body.get("image"), body.get("held"), body.get("video")
    empty = body.get("empty", False)
    for key, value in (("image", image), ("held", held), ("video", video)):
        if value is not None and (not isinstance(value, str) or not value):
            raise SceneError(f'"{key}" must be a non-empty path string')
    if not isinstance(empty, bool):
        raise SceneError('"empty" must be true or false')
    start, end, stride = body.get("start", 0), body.get("end"), body.get("stride", 1)
    for key, value in (("start", start), ("end", end), ("stride", stride)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SceneError(f'"{key}" must be an integer')
    advance = body.get("advance", "time")
    if not isinstance(advance, str):
        raise SceneError('"advance" must be "time" or "request"')
    multi = body.get("multi")
    if multi is not None and (not isinstance(multi, list) or not all(isinstance(p, str) and p for p in multi)):
        raise SceneError('"multi" must be a list of non-empty path strings')
    exposure = body.get("exposure", 1.0)
    if isinstance(exposure, bool) or not isinstance(exposure, int | float):
        raise SceneError('"exposure" must be a number')
    return sim.set_scene(
        name, image=image, held=held, video=video, multi=multi, empty=empty, start=start, end=end, advance=advance,
        stride=stride, exposure=float(exposure),
    )
