"""Cameras of the terminal: the `Camera` port, its OpenCV and HTTP-snapshot adapters, and an in-memory fake.

Every adapter returns frames as OpenCV gives them: HxWx3 uint8 in **BGR** order (convert with
``frame[:, :, ::-1]`` for the RGB that ``biometrics.FaceEngine`` wants). Every failure to get a frame -
camera unplugged, unreachable, timed out, answering with something that is not an image - is a
:class:`CameraUnavailable` with a message naming the camera; the caller logs it once and retries with backoff.

A liveness check needs a short sequence rather than one frame: :func:`capture_sequence` takes N frames from any
:class:`Camera` at a fixed pace (12 over ~1.4 s by default) and stamps each with the monotonic time it arrived.

OpenCV (``cv2``) is imported inside the adapters only, never when this module is imported.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]

DEFAULT_SNAPSHOT_TIMEOUT = 5.0
"""Seconds to wait for an IP camera's snapshot: long enough for a 4G link, short enough to retry soon."""

MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
"""Largest snapshot we read (a 1080p JPEG is ~0.5 MB); more is refused, never buffered."""

MAX_FRAME_PIXELS = 16_000_000
"""Largest decoded frame we accept (4K is 8.3 Mpx)."""

DEFAULT_SEQUENCE_FRAMES = 12
DEFAULT_SEQUENCE_INTERVAL = 0.125
"""Seconds between the frames of a sequence: 12 frames span ~1.4 s, time for a head turn, and a blink (0.1-0.4 s)
falls on at least one frame. Faster than most snapshot URLs refresh is pointless (repeated frames)."""

MAX_SEQUENCE_FRAMES = 100
"""Most frames one sequence may hold (each full-size frame is ~1 MB in memory)."""


class CameraUnavailable(Exception):
    """No frame could be had from a camera (missing, unreachable, timed out, or not sending an image)."""


@runtime_checkable
class Camera(Protocol):
    """A source of frames: :meth:`capture` returns the latest frame as BGR uint8, or raises CameraUnavailable."""

    def capture(self) -> Frame: ...

    def close(self) -> None: ...


def _decode_jpeg(data: bytes, what: str) -> Frame:
    import cv2

    frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if frame is None or frame.size == 0:
        raise CameraUnavailable(f"{what}: the {len(data)} bytes received are not an image")
    if frame.shape[0] * frame.shape[1] > MAX_FRAME_PIXELS:
        raise CameraUnavailable(f"{what}: frame {frame.shape[1]}x{frame.shape[0]} is too large")
    return np.ascontiguousarray(frame, dtype=np.uint8)


class SnapshotCamera:
    """An IP camera's snapshot URL: each :meth:`capture` is one HTTP GET of a JPEG."""

    def __init__(self, url: str, timeout: float = DEFAULT_SNAPSHOT_TIMEOUT) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"a snapshot camera needs an http(s) URL, got {url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = url
        self.timeout = timeout

    def capture(self) -> Frame:
        what = f"snapshot camera {self.url}"
        request = urllib.request.Request(self.url, headers={"Accept": "image/jpeg"})  # noqa: S310 - scheme checked
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                data = response.read(MAX_SNAPSHOT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise CameraUnavailable(f"{what}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise CameraUnavailable(f"{what}: unreachable ({exc.reason})") from exc
        except TimeoutError as exc:
            raise CameraUnavailable(f"{what}: no answer within {self.timeout:g} s") from exc
        except OSError as exc:  # connection reset, refused mid-read, …
            raise CameraUnavailable(f"{what}: {exc}") from exc
        if len(data) > MAX_SNAPSHOT_BYTES:
            raise CameraUnavailable(f"{what}: snapshot larger than {MAX_SNAPSHOT_BYTES} bytes")
        return _decode_jpeg(data, what)

    def close(self) -> None:
        """Nothing is held between snapshots."""

    def __repr__(self) -> str:
        return f"SnapshotCamera({self.url!r})"


class OpenCVCamera:
    """``cv2.VideoCapture`` on a device index (``0`` = /dev/video0), a video file or a stream URL (rtsp://…).

    Opened on the first :meth:`capture`. A failed read closes the capture and opens it again once (a
    reconnected USB camera, a dropped stream; a video file starts over, so a file plays in a loop); if that
    fails too, :class:`CameraUnavailable` is raised and the next capture tries again.
    """

    def __init__(self, source: int | str) -> None:
        self.source = source
        self._cap: Any = None
        self._lock = threading.Lock()

    def _describe(self) -> str:
        return f"camera device {self.source}" if isinstance(self.source, int) else f"camera {self.source}"

    def _open(self) -> Any:
        import cv2

        src = self.source
        if isinstance(src, str) and "://" not in src and not Path(src).exists():
            raise CameraUnavailable(f"{self._describe()}: no such file")
        cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            raise CameraUnavailable(f"{self._describe()}: cannot be opened")
        return cap

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def capture(self) -> Frame:
        with self._lock:
            for attempt in range(2):
                if self._cap is None:
                    self._cap = self._open()
                ok, frame = self._cap.read()
                if ok and frame is not None:
                    return np.ascontiguousarray(frame, dtype=np.uint8)
                self._release()
                if attempt == 0:
                    log.debug("%s: read failed, reopening", self._describe())
            raise CameraUnavailable(f"{self._describe()}: no frame (disconnected or end of stream)")

    def close(self) -> None:
        with self._lock:
            self._release()

    def __repr__(self) -> str:
        return f"OpenCVCamera({self.source!r})"


class FakeCamera:
    """In-memory camera for tests: returns the given frames in turn (looping); raises when it has none."""

    def __init__(self, frames: Iterable[Frame] = ()) -> None:
        self._frames = [np.asarray(f, dtype=np.uint8) for f in frames]
        self._next = 0
        self.captures = 0

    def set_frames(self, frames: Iterable[Frame]) -> None:
        self._frames = [np.asarray(f, dtype=np.uint8) for f in frames]
        self._next = 0

    def capture(self) -> Frame:
        self.captures += 1
        if not self._frames:
            raise CameraUnavailable("fake camera: no frames")
        frame = self._frames[self._next % len(self._frames)]
        self._next += 1
        return frame.copy()

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class TimedFrame:
    """A frame of a sequence and when it arrived (monotonic seconds, any origin)."""

    t: float
    frame: Frame


def capture_sequence(
    camera: Camera,
    frames: int = DEFAULT_SEQUENCE_FRAMES,
    interval: float = DEFAULT_SEQUENCE_INTERVAL,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[TimedFrame]:
    """``frames`` captures from ``camera``, one every ``interval`` seconds (paced on ``clock``, not drifting with
    the time each capture takes). The first :class:`CameraUnavailable` ends the sequence and is raised."""
    if not 1 <= frames <= MAX_SEQUENCE_FRAMES:
        raise ValueError(f"a sequence holds 1-{MAX_SEQUENCE_FRAMES} frames, not {frames}")
    if interval < 0:
        raise ValueError("interval must not be negative")
    start = clock()
    out: list[TimedFrame] = []
    for k in range(frames):
        wait = start + k * interval - clock()
        if wait > 0:
            sleep(wait)
        frame = camera.capture()
        out.append(TimedFrame(clock(), frame))
    return out


def open_camera(spec: str, *, timeout: float = DEFAULT_SNAPSHOT_TIMEOUT) -> Camera:
    """A camera from its configured spec.

    - ``http://…`` or ``https://…``: :class:`SnapshotCamera` (an IP camera's JPEG snapshot URL);
    - digits (``"0"``): :class:`OpenCVCamera` on that device index;
    - anything else (a file path, ``rtsp://…``): :class:`OpenCVCamera` on it.

    Nothing is opened here; a missing camera shows at the first capture as :class:`CameraUnavailable`.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty camera spec")
    if spec.lower().startswith(("http://", "https://")):
        return SnapshotCamera(spec, timeout=timeout)
    if spec.isdigit():
        return OpenCVCamera(int(spec))
    return OpenCVCamera(spec)
