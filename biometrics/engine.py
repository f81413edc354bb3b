"""FaceEngine: the adapter around dlib (face_recognition's models and calls) that finds faces and turns them into
templates.

dlib and PIL are imported lazily (in the constructor and in :meth:`FaceEngine.load_image`), never when this module is
imported, so importing ``biometrics`` stays cheap for code that only compares templates. Their exceptions are
translated into :mod:`biometrics.errors`. The computations are face_recognition 1.3's (same model files from
``face_recognition_models``, same dlib calls); we call dlib directly so that the 68-point landmark model loads only
when landmarks are needed (see :class:`_Models`).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
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

TRACK_MARGIN = 0.5
"""Margin around a tracked face's last box, as a fraction of its side on each side, where :meth:`FaceEngine.track`
looks for it in the next frame: 125 ms apart a turning head moves well under half a face."""

TRACK_FACE_PX = 90
"""A tracked face's window is scaled so that the face is this wide: just over the HOG detector's 80 px window,
so no upsampling is needed (4-7 ms a window here, against 40 ms for a 640x480 frame)."""

REDETECT_EVERY = 4
"""In :meth:`FaceEngine.track`, every this many frames a cheap full-frame detection (no upsample) looks for faces
that came into view (8 ms at 320 px)."""

NEW_FACE_OVERLAP = 0.3
"""A detected box overlapping a tracked one by this much (intersection over union) is the same face."""

MODEL_5_POINT = "shape_predictor_5_face_landmarks.dat"
MODEL_68_POINT = "shape_predictor_68_face_landmarks.dat"
MODEL_RESNET = "dlib_face_recognition_resnet_model_v1.dat"

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


class _Models:
    """dlib's models as face_recognition ships them (``face_recognition_models``), loaded once per process.

    The HOG detector, the 5-point aligner and the ResNet encoder load with the first engine (~45 MB); the 68-point
    landmark model (~70 MB resident) loads only when landmarks are first asked for (liveness), so a terminal with
    liveness off and the server's photo re-checks never hold it. face_recognition's own import would load all four
    models (and its CNN detector, which we never use) and pkg_resources (~10 MB), so we load them ourselves, with
    the same calls and files: the numbers are face_recognition's to the bit."""

    _lock = threading.Lock()
    _dlib: Any = None
    _dir: Path | None = None
    detector: Any = None
    aligner: Any = None  # 5 points: what face_recognition.face_encodings aligns with (model="small")
    encoder: Any = None
    landmarker: Any = None  # 68 points, lazily

    @classmethod
    def load(cls) -> type[_Models]:
        with cls._lock:
            if cls.encoder is not None:
                return cls
            try:
                import dlib
            except ImportError as exc:
                raise EngineUnavailable(
                    f"dlib is not usable ({exc}); install dlib-bin, face_recognition --no-deps and "
                    "face_recognition_models (see scripts/bootstrap.sh)"
                ) from exc
            spec = importlib.util.find_spec("face_recognition_models")  # its __init__ imports pkg_resources: skip it
            if spec is None or not spec.submodule_search_locations:
                raise EngineUnavailable("face_recognition_models is not installed")
            folder = Path(next(iter(spec.submodule_search_locations))) / "models"
            try:
                detector = dlib.get_frontal_face_detector()
                aligner = dlib.shape_predictor(str(folder / MODEL_5_POINT))
                encoder = dlib.face_recognition_model_v1(str(folder / MODEL_RESNET))
            except RuntimeError as exc:  # dlib: missing or corrupt model file
                raise EngineUnavailable(f"face models in {folder} cannot be loaded: {exc}") from exc
            cls._dlib, cls._dir = dlib, folder
            cls.detector, cls.aligner, cls.encoder = detector, aligner, encoder
            return cls

    @classmethod
    def landmarks_68(cls) -> Any:
        with cls._lock:
            if cls.landmarker is None:
                assert cls._dir is not None and cls._dlib is not None  # noqa: S101 - load() ran first
                try:
                    cls.landmarker = cls._dlib.shape_predictor(str(cls._dir / MODEL_68_POINT))
                except RuntimeError as exc:
                    raise EngineUnavailable(f"68-point landmark model cannot be loaded: {exc}") from exc
            return cls.landmarker

    @classmethod
    def rect(cls, box: Box) -> Any:
        top, right, bottom, left = box
        return cls._dlib.rectangle(left, top, right, bottom)


class FaceEngine:
    """Finds faces (dlib HOG detector), their landmarks (68 points) and encodes them (dlib ResNet, 128-d): the
    models and calls of face_recognition 1.3, made directly on dlib (see :class:`_Models`).

    Thread-safe: the dlib models are process-wide, so calls are serialised by one lock.
    """

    _lock = threading.Lock()

    def __init__(self, *, upsample: int = DEFAULT_UPSAMPLE, jitters: int = DEFAULT_JITTERS) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        if jitters < 1:
            raise ValueError("jitters must be >= 1")
        self._m = _Models.load()
        self.upsample = upsample
        self.jitters = jitters

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

    def locate(
        self, image_rgb: npt.NDArray[np.uint8], *, detect_width: int | None = None
    ) -> list[tuple[int, int, int, int]]:
        """Face boxes as (top, right, bottom, left) pixels, in detector order. ``detect_width``: detect on a copy
        downscaled to that width (see :data:`DETECT_WIDTH`), boxes scaled back to the image."""
        rgb = _as_rgb(image_rgb)
        small, scale = _downscaled(rgb, detect_width)
        with self._lock:
            found = self._locate(small, self.upsample)
        return _scaled_back(found, scale, rgb.shape)

    def encode(self, image_rgb: npt.NDArray[np.uint8]) -> list[FaceTemplate]:
        """One template per face found in an RGB image (HOG detector, :data:`DEFAULT_UPSAMPLE` upsample)."""
        rgb = _as_rgb(image_rgb)
        with self._lock:
            boxes = self._locate(rgb, self.upsample)
            return self._encode(rgb, boxes)

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
        """Every face with its box and 68 landmarks (``face_recognition.face_landmarks``' layout, large model).

        Detection runs on a copy downscaled to ``detect_width`` (None: full size); boxes are scaled back to the
        frame and the landmarks are found on the full frame, so they keep its precision.
        """
        rgb = _as_rgb(image_rgb)
        small, scale = _downscaled(rgb, detect_width)
        with self._lock:
            boxes = _scaled_back(self._locate(small, self.upsample), scale, rgb.shape)
            return [FaceSighting(box, self._landmarks(rgb, box)) for box in boxes]

    def track(
        self,
        frames: Sequence[npt.NDArray[np.uint8]],
        *,
        detect_width: int | None = DETECT_WIDTH,
        redetect_every: int = REDETECT_EVERY,
    ) -> list[list[FaceSighting]]:
        """The faces of each frame of a short sequence, as :meth:`sightings` would find them, at a fraction of the
        cost: a full detection (as :meth:`sightings`) until a face is found; then each face is looked for again
        only in a window around its last box (:data:`TRACK_MARGIN`), scaled so that the face is
        :data:`TRACK_FACE_PX` wide, without upsampling (~4 ms instead of ~40 ms a frame at 640×480). A face not
        found in its window is gone from that frame (no box is carried over without the detector's word), and
        when no face is left the next frame gets a full detection again. Every ``redetect_every`` frames a cheap
        full-frame detection (no upsample, :data:`DETECT_WIDTH`) adds faces that came into view (someone leaning
        in); a second face smaller than that detection sees is found only in frames that get the full one.
        """
        out: list[list[FaceSighting]] = []
        boxes: list[Box] = []
        with self._lock:
            for k, frame in enumerate(frames):
                rgb = _as_rgb(frame)
                if not boxes:
                    small, scale = _downscaled(rgb, detect_width)
                    boxes = _scaled_back(self._locate(small, self.upsample), scale, rgb.shape)
                else:
                    kept = [b for b in (self._relocate(rgb, box) for box in boxes) if b is not None]
                    if redetect_every > 0 and k % redetect_every == 0:
                        small, scale = _downscaled(rgb, detect_width)
                        for new in _scaled_back(self._locate(small, 0), scale, rgb.shape):
                            if all(_overlap(new, b) < NEW_FACE_OVERLAP for b in kept):
                                kept.append(new)
                    boxes = _distinct(kept)
                out.append([FaceSighting(box, self._landmarks(rgb, box)) for box in boxes])
        return out

    def encode_at(self, image_rgb: npt.NDArray[np.uint8], boxes: list[Box]) -> list[FaceTemplate]:
        """Templates of the faces in ``boxes`` (from :meth:`sightings`), without detecting again."""
        rgb = _as_rgb(image_rgb)
        if not boxes:
            return []
        with self._lock:
            return self._encode(rgb, boxes)

    # --- dlib calls (under the lock) -------------------------------------------------------------------

    def _locate(self, rgb: npt.NDArray[np.uint8], upsample: int) -> list[Box]:
        try:
            found = self._m.detector(rgb, upsample)
        except RuntimeError as exc:  # dlib reports its failures as RuntimeError
            raise FaceEngineError(f"face detection failed: {exc}") from exc
        h, w = rgb.shape[:2]
        return [(max(r.top(), 0), min(r.right(), w), min(r.bottom(), h), max(r.left(), 0)) for r in found]

    def _relocate(self, rgb: npt.NDArray[np.uint8], box: Box) -> Box | None:
        """The face near ``box`` in this frame (detected in a window around it), or None."""
        top, right, bottom, left = box
        side = max(right - left, bottom - top, 1)
        cy, cx = (top + bottom) / 2.0, (left + right) / 2.0
        half = side * (0.5 + TRACK_MARGIN)
        h, w = rgb.shape[:2]
        y0, y1 = max(0, int(cy - half)), min(h, int(cy + half) + 1)
        x0, x1 = max(0, int(cx - half)), min(w, int(cx + half) + 1)
        if y1 - y0 < 8 or x1 - x0 < 8:
            return None
        factor = TRACK_FACE_PX / side
        window = _resized(rgb[y0:y1, x0:x1], factor)
        found = self._locate(window, 0)
        if not found:
            return None
        fh, fw = window.shape[:2]
        sy, sx = (y1 - y0) / fh, (x1 - x0) / fw

        def back(b: Box) -> Box:
            t, r, bt, lf = b
            return (max(0, round(y0 + t * sy)), min(w, round(x0 + r * sx)), min(h, round(y0 + bt * sy)),
                    max(0, round(x0 + lf * sx)))  # fmt: skip

        return max((back(b) for b in found), key=lambda b: _overlap(b, box))

    def _landmarks(self, rgb: npt.NDArray[np.uint8], box: Box) -> dict[str, list[tuple[float, float]]]:
        predictor = _Models.landmarks_68()
        try:
            shape = predictor(rgb, _Models.rect(box))
        except RuntimeError as exc:
            raise FaceEngineError(f"face landmarks failed: {exc}") from exc
        pts = [(float(p.x), float(p.y)) for p in shape.parts()]
        if len(pts) != 68:
            raise FaceEngineError(f"face landmarks: expected 68 points, got {len(pts)}")
        return _as_features(pts)

    def _encode(self, rgb: npt.NDArray[np.uint8], boxes: list[Box]) -> list[FaceTemplate]:
        out = []
        for box in boxes:
            try:
                shape = self._m.aligner(rgb, _Models.rect(box))
                vector = self._m.encoder.compute_face_descriptor(rgb, shape, self.jitters)
            except RuntimeError as exc:
                raise FaceEngineError(f"face encoding failed: {exc}") from exc
            out.append(FaceTemplate.from_sequence(np.array(vector)))
        return out


def _as_features(pts: list[tuple[float, float]]) -> dict[str, list[tuple[float, float]]]:
    """68 points in face_recognition.face_landmarks' named groups (the lips' corners in both lips, as it does)."""
    return {
        "chin": pts[0:17],
        "left_eyebrow": pts[17:22],
        "right_eyebrow": pts[22:27],
        "nose_bridge": pts[27:31],
        "nose_tip": pts[31:36],
        "left_eye": pts[36:42],
        "right_eye": pts[42:48],
        "top_lip": pts[48:55] + [pts[64], pts[63], pts[62], pts[61], pts[60]],
        "bottom_lip": pts[54:60] + [pts[48], pts[60], pts[67], pts[66], pts[65], pts[64]],
    }


def _scaled_back(found: list[Box], scale: float, shape: tuple[int, ...]) -> list[Box]:
    if scale == 1.0:
        return list(found)
    h, w = shape[:2]
    return [(max(0, round(t * scale)), min(w, round(r * scale)), min(h, round(b * scale)), max(0, round(x * scale)))
            for t, r, b, x in found]  # fmt: skip


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter_h = min(a[2], b[2]) - max(a[0], b[0])
    inter_w = min(a[1], b[1]) - max(a[3], b[3])
    if inter_h <= 0 or inter_w <= 0:
        return 0.0
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter
    return inter / union if union > 0 else 0.0


def _distinct(boxes: list[Box]) -> list[Box]:
    """Boxes without the ones that overlap an earlier one (two tracked faces that converged are one face)."""
    out: list[Box] = []
    for b in boxes:
        if all(_overlap(b, o) < NEW_FACE_OVERLAP for o in out):
            out.append(b)
    return out


def _resized(rgb: npt.NDArray[np.uint8], factor: float) -> npt.NDArray[np.uint8]:
    """``rgb`` scaled by ``factor`` (area average down, bilinear up)."""
    if abs(factor - 1.0) < 0.05:
        return np.ascontiguousarray(rgb)
    from PIL import Image

    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    method = Image.Resampling.BOX if factor < 1 else Image.Resampling.BILINEAR
    return np.ascontiguousarray(np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, method)))


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
