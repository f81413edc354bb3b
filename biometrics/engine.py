"""FaceEngine: the adapter around face_recognition (dlib) that finds faces and turns them into templates.

face_recognition, dlib and PIL are imported lazily (in the constructor and in :meth:`FaceEngine.load_image`),
never when this module is imported, so importing ``biometrics`` stays cheap for code that only compares
templates. Their exceptions are translated into :mod:`biometrics.errors`.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from biometrics.errors import EngineUnavailable, FaceEngineError, ImageUnreadable
from biometrics.liveness import Box, FaceSighting
from biometrics.templates import DEFAULT_MATCH_THRESHOLD, FaceTemplate, distance

log = logging.getLogger(__name__)

DEFAULT_UPSAMPLE = 1
"""Times the HOG detector upsamples the image before looking for faces.

dlib's HOG detector scans an 80x80 window, so without upsampling it misses faces smaller than about 80 px.
One upsample (face_recognition's own default) finds faces down to about 40 px: a driver's face seen by a
640x480 cabin camera, and every face of the 320 px demo photos in ``simulators/data/faces`` (with 0 upsamples
half of those were missed). Each upsample costs about 4x the detection time. Measured here (one core),
detection + encoding: ~0.1 s for a 320 px photo (detection alone 20-40 ms), 0.25-0.8 s for a 0.5-3 Mpx photo;
large photos are better downscaled by the caller.
"""

DEFAULT_JITTERS = 1
"""Re-samplings per face when encoding. More is slightly more stable and proportionally slower."""

DETECT_WIDTH = 320
"""Frames wider than this are downscaled (area average) before face *detection* in :meth:`FaceEngine.sightings`;
landmarks and encodings are then taken on the full frame inside the scaled-back boxes. Detection is the costly part
of a liveness sequence: on the shared 640x360 clip, 18 ms a frame at 320 px (1 upsample) against 74 ms at full
size, finding the face in 125 of 131 frames against 127; the 68 landmarks cost under 2 ms a face."""

MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width x height) we accept: beyond it an image is refused, not decoded into memory."""

NoMatchReason = Literal["no_face", "several_faces", "no_match"]


@dataclass(frozen=True)
class FaceMatch:
    """What :meth:`FaceEngine.identify` saw in one image.

    - ``faces``: how many faces were found.
    - ``person_id``: the matched candidate, or None.
    - ``distance``: distance from the single face to the closest candidate (None if no single face or no
      candidates).
    - ``reason``: why nobody matched: ``"no_face"``, ``"several_faces"`` or ``"no_match"``; None on a match.
    """

    faces: int
    person_id: str | None
    distance: float | None
    reason: NoMatchReason | None

    @property
    def matched(self) -> bool:
        return self.person_id is not None


def _as_rgb(image: Any) -> npt.NDArray[np.uint8]:
    """Check and normalise an image to a contiguous HxWx3 uint8 array (what dlib wants)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ImageUnreadable(f"an image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.stack([arr, arr, arr], axis=-1)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageUnreadable(f"an image must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageUnreadable("an image must not be empty")
    if arr.shape[0] * arr.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageUnreadable(f"image of {arr.shape[1]}x{arr.shape[0]} is larger than {MAX_IMAGE_PIXELS} px")
    return np.ascontiguousarray(arr)


class FaceEngine:
    """Finds faces (dlib HOG detector) and encodes them (dlib ResNet, 128-d) through face_recognition.

    Thread-safe: dlib's detector and models are shared module globals inside face_recognition, so calls are
    serialised by a lock.
    """

    def __init__(self, *, upsample: int = DEFAULT_UPSAMPLE, jitters: int = DEFAULT_JITTERS) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        if jitters < 1:
            raise ValueError("jitters must be >= 1")
        try:
            import face_recognition
        except ImportError as exc:
            raise EngineUnavailable(
                f"face_recognition is not usable ({exc}); install dlib-bin, face_recognition --no-deps "
                "and face_recognition_models (see scripts/bootstrap.sh)"
            ) from exc
        except SystemExit as exc:  # face_recognition exits when face_recognition_models is missing
            raise EngineUnavailable("face_recognition_models is not installed") from exc
        self._fr: Any = face_recognition
        self.upsample = upsample
        self.jitters = jitters
        self._lock = threading.Lock()

    # --- images -------------------------------------------------------------------------------------

    def load_image(self, path: str | PathLike[str] | BinaryIO) -> npt.NDArray[np.uint8]:
        """Read an image file (JPEG, PNG, …) as an RGB uint8 array; :class:`ImageUnreadable` if it cannot."""
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as exc:  # pragma: no cover - Pillow comes with the face stack
            raise EngineUnavailable(f"Pillow is not installed ({exc})") from exc
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageUnreadable(f"{path}: {w}x{h} is larger than {MAX_IMAGE_PIXELS} px")
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except ImageUnreadable:
            raise
        except FileNotFoundError as exc:
            raise ImageUnreadable(f"{path}: no such file") from exc
        except UnidentifiedImageError as exc:
            raise ImageUnreadable(f"{path}: not an image") from exc
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL: SyntaxError on bad PNG
            raise ImageUnreadable(f"{path}: cannot decode image ({exc})") from exc
        return rgb

    def decode_image(self, data: bytes) -> npt.NDArray[np.uint8]:
        """An image held in memory (a terminal's evidence JPEG) as RGB; :class:`ImageUnreadable` if it cannot."""
        return self.load_image(io.BytesIO(data))

    # --- faces --------------------------------------------------------------------------------------

    def locate(self, image_rgb: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        """Face boxes as (top, right, bottom, left) pixels, in detector order."""
        rgb = _as_rgb(image_rgb)
        with self._lock:
            return self._locate(rgb)

    def encode(self, image_rgb: npt.NDArray[np.uint8]) -> list[FaceTemplate]:
        """One template per face found in an RGB image (HOG detector, :data:`DEFAULT_UPSAMPLE` upsample)."""
        rgb = _as_rgb(image_rgb)
        with self._lock:
            boxes = self._locate(rgb)
            if not boxes:
                return []
            try:
                vectors = self._fr.face_encodings(rgb, known_face_locations=boxes, num_jitters=self.jitters)
            except RuntimeError as exc:  # dlib reports its failures as RuntimeError
                raise FaceEngineError(f"face encoding failed: {exc}") from exc
        return [FaceTemplate.from_sequence(v) for v in vectors]

    def identify(
        self,
        image_rgb: npt.NDArray[np.uint8],
        candidates: Mapping[str, FaceTemplate],
        threshold: float = DEFAULT_MATCH_THRESHOLD,
    ) -> FaceMatch:
        """Who, among ``candidates`` (person id → template), is the one face in the image.

        Exactly one face must be in view: none gives ``no_face``, more than one ``several_faces`` (someone
        else in the driver's seat camera is not for us to resolve). The closest candidate strictly below
        ``threshold`` matches; otherwise ``no_match`` with the closest distance seen.
        """
        templates = self.encode(image_rgb)
        return match_templates(templates, candidates, threshold)

    def sightings(
        self, image_rgb: npt.NDArray[np.uint8], *, detect_width: int | None = DETECT_WIDTH
    ) -> list[FaceSighting]:
        """Every face with its box and 68 landmarks (``face_recognition.face_landmarks``, large model).

        Detection runs on a copy downscaled to ``detect_width`` (None: full size); boxes are scaled back to the
        frame and the landmarks are found on the full frame, so they keep its precision.
        """
        rgb = _as_rgb(image_rgb)
        small, scale = _downscaled(rgb, detect_width)
        h, w = rgb.shape[:2]
        with self._lock:
            found = self._locate(small)
            boxes: list[Box] = [
                (max(0, round(t * scale)), min(w, round(r * scale)), min(h, round(b * scale)), max(0, round(x * scale)))
                for t, r, b, x in found
            ]
            if not boxes:
                return []
            try:
                marks = self._fr.face_landmarks(rgb, face_locations=boxes, model="large")
            except RuntimeError as exc:
                raise FaceEngineError(f"face landmarks failed: {exc}") from exc
        return [
            FaceSighting(box, {k: [(float(x), float(y)) for x, y in pts] for k, pts in lm.items()})
            for box, lm in zip(boxes, marks, strict=True)
        ]

    def encode_at(self, image_rgb: npt.NDArray[np.uint8], boxes: list[Box]) -> list[FaceTemplate]:
        """Templates of the faces in ``boxes`` (from :meth:`sightings`), without detecting again."""
        rgb = _as_rgb(image_rgb)
        if not boxes:
            return []
        with self._lock:
            try:
                vectors = self._fr.face_encodings(rgb, known_face_locations=boxes, num_jitters=self.jitters)
            except RuntimeError as exc:
                raise FaceEngineError(f"face encoding failed: {exc}") from exc
        return [FaceTemplate.from_sequence(v) for v in vectors]

    def _locate(self, rgb: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        try:
            boxes = self._fr.face_locations(rgb, number_of_times_to_upsample=self.upsample, model="hog")
        except RuntimeError as exc:
            raise FaceEngineError(f"face detection failed: {exc}") from exc
        return [tuple(int(v) for v in b) for b in boxes]  # type: ignore[misc]


def _downscaled(rgb: npt.NDArray[np.uint8], width: int | None) -> tuple[npt.NDArray[np.uint8], float]:
    """``rgb`` shrunk to ``width`` (area average) and the factor back to full size; unchanged if narrow enough."""
    h, w = rgb.shape[:2]
    if width is None or w <= width:
        return rgb, 1.0
    from PIL import Image

    height = max(1, round(h * width / w))
    small = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX), dtype=np.uint8)
    return np.ascontiguousarray(small), w / width


def match_templates(
    templates: list[FaceTemplate],
    candidates: Mapping[str, FaceTemplate],
    threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> FaceMatch:
    """The decision of :meth:`FaceEngine.identify`, from templates already computed (pure)."""
    faces = len(templates)
    if faces == 0:
        return FaceMatch(faces=0, person_id=None, distance=None, reason="no_face")
    if faces > 1:
        return FaceMatch(faces=faces, person_id=None, distance=None, reason="several_faces")
    if not candidates:
        return FaceMatch(faces=1, person_id=None, distance=None, reason="no_match")
    face = templates[0]
    best_id, best = min(((pid, distance(face, t)) for pid, t in candidates.items()), key=lambda x: x[1])
    if best < threshold:
        return FaceMatch(faces=1, person_id=best_id, distance=best, reason=None)
    return FaceMatch(faces=1, person_id=None, distance=best, reason="no_match")
