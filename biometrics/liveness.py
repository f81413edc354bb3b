"""Liveness judge: does a short frame sequence show a live face that answered its challenge? (sans-IO, numpy only)

The judge is pure: it gets frames already captured (numpy arrays), the faces found in each (boxes and the 68-point
landmarks of ``face_recognition.face_landmarks``) and the challenge the caller chose at random, and returns a
:class:`LivenessResult`. It never touches a camera, a clock or a model; the agent's ``IdentityChecker`` does the I/O.

What it checks, in this order (the first failure is the reason):

1. **Enough frames** (``too_few_frames``) with **one face** (``no_face``, ``several_faces``).
2. **Frozen or repeated frames** (``frozen_frames``): a grey 32x32 thumbnail of the face region is compared with every
   earlier one; a frame within :attr:`LivenessPolicy.frozen_delta` grey levels of an earlier frame is a repeat. A still
   picture re-served by a camera or a replay box, a still image encoded as a video, and a short loop (A B A B) are
   mostly repeats. A camera watching anything real shows sensor noise and motion above that.
3. **No motion** (``no_motion``): the landmarks must move by more than :attr:`LivenessPolicy.min_landmark_motion`
   (fraction of the eye distance) somewhere in the sequence. A photo on a stand in front of a real camera passes
   the frozen test (sensor noise) but not this one.
4. **The challenge**:
   - ``blink`` (``no_blink``): the eye aspect ratio (EAR, Soukupová and Čech 2016: eyelid gaps over eye width, both
     eyes averaged) must fall to :attr:`LivenessPolicy.blink_closed_ratio` of the open-eye level (the 75th percentile
     of the sequence) and open again afterwards. Relative, so narrow eyes are not refused. It must do so both as
     measured and *rectified* (the eyes mapped into the middle frame through the homography of the rigid landmarks),
     so tilting a print forward, which squeezes the eyes like a blink, does not count.
   - ``head_turn`` (``no_head_turn``): the nose tip's offset along the eye line, as a fraction of the eye distance (0
     facing the camera, about ±0.6·sin(yaw) turned), must sweep at least :attr:`LivenessPolicy.min_head_turn`. A
     photo turned in front of the camera keeps this ratio (it is unchanged by rotation, scale and a squeeze along
     the eye line), so tilting a print does not fake it.
   The challenge comes before the flat-face test so that a live person who did not do it is told so.
5. **Flat face** (``flat_face``), the photo-of-a-photo test: a print or a screen is a plane, and every view of a plane
   is exactly a homography of any other view. We fit a homography (8 degrees of freedom, least squares over all 68
   landmarks) from the middle frame's landmarks to each other frame's and keep the residual (fraction of the eye
   distance). A held, tilted, waved photo leaves only landmark jitter; a real head that turns, blinks or talks does
   not fit a plane. The 75th percentile over frames is used, so one bad landmark fit neither passes nor fails a
   sequence. This is geometry, not texture: a phone replaying a *video* of the person shows a real 3D face and passes
   it; the random challenge is what stands against a replay (a clip would have to contain that very action at that
   moment). One exception: under a ``blink`` challenge, a blink seen in the rectified EAR (above) is itself proof of
   a non-planar face (eyelids moving against a rigid face), so a live person who holds their head still and blinks
   is not refused as flat. A print with the eyes cut out and real eyes behind it would pass that way; it fails the
   ``head_turn`` challenge; a print held still fails ``frozen_frames``/``no_motion``, a waved one that happens to
   sweep the nose offset fails here.

Every measured figure is kept in :class:`LivenessFigures`, so the signed record says why a check passed or failed;
:meth:`LivenessResult.to_body` gives them as integers (thousandths), as signed payloads require.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]
Landmarks = Mapping[str, Sequence[Point]]
"""One face's landmarks as ``face_recognition.face_landmarks`` gives them: feature name → (x, y) points."""

Box = tuple[int, int, int, int]
"""A face box as face_recognition gives it: (top, right, bottom, left), pixels of the frame."""

#: Landmark groups in a fixed order (face_recognition's "large" 68-point model); their concatenation is the shape.
FEATURES = (
    "chin",
    "left_eyebrow",
    "right_eyebrow",
    "nose_bridge",
    "nose_tip",
    "left_eye",
    "right_eye",
    "top_lip",
    "bottom_lip",
)
_EYE_POINTS = 6
RIGID_FEATURES = ("chin", "left_eyebrow", "right_eyebrow", "nose_bridge", "nose_tip")
"""Landmarks a blink does not move (the jaw moves when talking, but not during a blink)."""

THUMB_SIZE = 32
"""Side of the grey face thumbnail compared between frames: small enough to ignore JPEG blocks, large enough to
see an eyelid move on a 100 px face."""

FACE_MARGIN = 0.25
"""The face region is the union of the face boxes grown by this fraction on each side (head turns leave the box)."""


class Challenge(StrEnum):
    """What the person is asked to do while the frames are taken (chosen at random by the caller)."""

    BLINK = "blink"
    HEAD_TURN = "head_turn"


class LivenessReason(StrEnum):
    """Why a sequence was refused."""

    TOO_FEW_FRAMES = "too_few_frames"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    FROZEN_FRAMES = "frozen_frames"
    NO_MOTION = "no_motion"
    FLAT_FACE = "flat_face"
    NO_BLINK = "no_blink"
    NO_HEAD_TURN = "no_head_turn"


@dataclass(frozen=True)
class LivenessPolicy:
    """Thresholds of the judge. Defaults were measured on the shared test clip and on attacks built from the test
    photos (tests/integration/test_liveness_video.py); a deployment may tune them from policy data."""

    min_frames: int = 6
    """Fewer frames than this cannot show a blink or a turn (a capture normally takes 12 over ~1.5 s)."""

    min_face_fraction: float = 0.6
    """At least this share of the frames must hold exactly one face (one glance away is allowed)."""

    max_several_fraction: float = 0.34
    """More than this share of frames with several faces: someone else is in view."""

    frozen_delta: float = 1.0
    """Mean absolute grey difference (0-255) under which two thumbnails are the same picture. Measured on test
    photos: a still re-served 0.0; a still with sensor noise (σ 2) or JPEG re-encoding 0.19-0.53; the test clip at
    7.5 frames/s 22-32."""

    max_repeat_fraction: float = 0.5
    """More than this share of frames repeating an earlier one is a frozen or looped feed."""

    min_landmark_motion: float = 0.05
    """Largest landmark displacement (fraction of the eye distance) a live sequence must exceed. Landmark jitter on a
    noisy still photo already reaches 0.05-0.11, so this only stops a perfectly still picture that got past the
    frozen test; the flat-face test is what stops a photo with noise."""

    min_nonplanar: float = 0.06
    """Homography residual (RMS, fraction of the eye distance, 75th percentile over frames) a live face must exceed.
    Measured: test photos on a stand with sensor noise 0.014-0.021, held and waved (±6°, ±20 px, 8 % perspective)
    0.020-0.051; the test clip over 1.5 s 0.091-0.148, over 0.4 s 0.046-0.092. The margin is thin: a live person
    who holds perfectly still and only blinks may fall under it (the checker then retries with a new challenge)."""

    blink_closed_ratio: float = 0.65
    """A blink: EAR at or under this share of the open-eye EAR..."""

    blink_reopen_ratio: float = 0.85
    """...then back at or above this share of it in a later frame."""

    min_blink_eye_distance: float = 30.0
    """A blink counts only on a face whose eyes are at least this many pixels apart (median over the sequence).
    Below it an eye is a few pixels wide and its EAR is landmark noise: on the shipped 320x180 demo clip (eyes ~20 px
    apart, no blink in it) EAR swings 0.27-0.51 with the detector's box alone, enough to fake a blink. Such a face can
    still pass the head-turn challenge, which is measured on the whole face."""

    min_head_turn: float = 0.12
    """Sweep of the nose offset (fraction of the eye distance) a head turn must reach: about 12° of yaw."""


DEFAULT_POLICY = LivenessPolicy()


@dataclass(frozen=True)
class FaceSighting:
    """One face seen in one frame: its box and landmarks, in the frame's pixel coordinates."""

    box: Box
    landmarks: Landmarks


@dataclass(frozen=True)
class LivenessFrame:
    """One frame of a sequence: the image (HxW grey or HxWx3, uint8), its time (seconds, any origin, increasing)
    and the faces found in it."""

    image: npt.NDArray[np.uint8]
    t: float
    faces: tuple[FaceSighting, ...]


@dataclass(frozen=True)
class LivenessFigures:
    """What the judge measured. None where it could not be measured (e.g. no face)."""

    frames: int = 0
    face_frames: int = 0
    max_faces: int = 0
    duration_s: float = 0.0
    repeats: int | None = None
    pixel_motion: float | None = None
    landmark_motion: float | None = None
    nonplanar: float | None = None
    ear_min: float | None = None
    ear_max: float | None = None
    ear_open: float | None = None
    rectified_ear_min: float | None = None
    rectified_ear_open: float | None = None
    yaw_min: float | None = None
    yaw_max: float | None = None

    def to_body(self) -> dict[str, int | None]:
        """Integers only (signed payloads refuse floats): fractions and EAR in thousandths, grey levels ×10, ms."""

        def milli(v: float | None) -> int | None:
            return None if v is None else round(v * 1000)

        return {
            "frames": self.frames,
            "face_frames": self.face_frames,
            "max_faces": self.max_faces,
            "duration_ms": round(self.duration_s * 1000),
            "repeats": self.repeats,
            "pixel_motion_x10": None if self.pixel_motion is None else round(self.pixel_motion * 10),
            "landmark_motion": milli(self.landmark_motion),
            "nonplanar": milli(self.nonplanar),
            "ear_min": milli(self.ear_min),
            "ear_max": milli(self.ear_max),
            "ear_open": milli(self.ear_open),
            "rectified_ear_min": milli(self.rectified_ear_min),
            "rectified_ear_open": milli(self.rectified_ear_open),
            "yaw_min": milli(self.yaw_min),
            "yaw_max": milli(self.yaw_max),
        }


@dataclass(frozen=True)
class LivenessResult:
    """The verdict: ``passed``, the ``reason`` of a refusal (None on a pass), the challenge asked and the figures."""

    passed: bool
    reason: LivenessReason | None
    challenge: Challenge | None
    figures: LivenessFigures = field(default_factory=LivenessFigures)

    def to_body(self) -> dict[str, Any]:
        """The result as it goes into a signed record (integers and strings only)."""
        return {
            "passed": self.passed,
            "reason": None if self.reason is None else self.reason.value,
            "challenge": None if self.challenge is None else self.challenge.value,
            **self.figures.to_body(),
        }


# --- geometry (pure) ----------------------------------------------------------------------------------------


def shape_of(landmarks: Landmarks) -> npt.NDArray[np.float64]:
    """The landmarks as an Nx2 float array, features in :data:`FEATURES` order (missing features are skipped)."""
    pts = [p for name in FEATURES for p in landmarks.get(name, ())]
    if not pts:
        raise ValueError("no landmarks")
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _eye(landmarks: Landmarks, name: str) -> npt.NDArray[np.float64]:
    eye = np.asarray(landmarks.get(name, ()), dtype=np.float64).reshape(-1, 2)
    if len(eye) != _EYE_POINTS:
        raise ValueError(f"{name} needs {_EYE_POINTS} points, got {len(eye)}")
    return eye


def eye_aspect_ratio(eye: npt.NDArray[np.float64]) -> float:
    """EAR of one eye's six points (corner, two upper lid, corner, two lower lid): (|p1-p5| + |p2-p4|) / 2|p0-p3|."""
    width = float(np.linalg.norm(eye[0] - eye[3]))
    if width == 0.0:
        return 0.0
    gaps = float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4]))
    return gaps / (2.0 * width)


def ear_of(landmarks: Landmarks) -> float:
    """Both eyes' EAR averaged."""
    return (eye_aspect_ratio(_eye(landmarks, "left_eye")) + eye_aspect_ratio(_eye(landmarks, "right_eye"))) / 2.0


def eye_distance(landmarks: Landmarks) -> float:
    """Distance between the two eye centres, in pixels: the unit of every landmark figure."""
    return float(np.linalg.norm(_eye(landmarks, "right_eye").mean(0) - _eye(landmarks, "left_eye").mean(0)))


def yaw_of(landmarks: Landmarks) -> float:
    """The nose tip's offset from the eyes' midpoint along the eye line, as a fraction of the eye distance.

    0 when facing the camera; its sign says the side. Unchanged by rotation, scale and a squeeze along the eye line.
    """
    left = _eye(landmarks, "left_eye").mean(0)
    right = _eye(landmarks, "right_eye").mean(0)
    tip = np.asarray(landmarks.get("nose_tip", ()), dtype=np.float64).reshape(-1, 2)
    if len(tip) == 0:
        raise ValueError("nose_tip has no points")
    axis = right - left
    norm2 = float(axis @ axis)
    if norm2 == 0.0:
        return 0.0
    return float((tip.mean(0) - (left + right) / 2.0) @ axis / norm2)


def _normaliser(pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Hartley normalisation: centroid to the origin, mean distance √2 (keeps the DLT well conditioned)."""
    centre = pts.mean(0)
    spread = float(np.sqrt(((pts - centre) ** 2).sum(1)).mean()) or 1.0
    s = np.sqrt(2.0) / spread
    return np.array([[s, 0.0, -s * centre[0]], [0.0, s, -s * centre[1]], [0.0, 0.0, 1.0]])


def _apply(h: npt.NDArray[np.float64], pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    homog = np.c_[pts, np.ones(len(pts))] @ h.T
    w = homog[:, 2:3]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    out: npt.NDArray[np.float64] = homog[:, :2] / w
    return out


def fit_homography(src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The least-squares homography (3x3) taking the points ``src`` to ``dst`` (normalised DLT)."""
    if src.shape != dst.shape or len(src) < 5:
        raise ValueError("homography needs two matching sets of at least 5 points")
    ts, td = _normaliser(src), _normaliser(dst)
    s, d = _apply(ts, src), _apply(td, dst)
    rows = []
    for (x, y), (u, v) in zip(s, d, strict=True):
        rows.append([-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u])
        rows.append([0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows), full_matrices=False)  # only V is used: 2Nx9, not 2Nx2N
    h: npt.NDArray[np.float64] = np.linalg.inv(td) @ vt[-1].reshape(3, 3) @ ts
    return h


def homography_residual(src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]) -> float:
    """RMS distance (pixels of ``dst``) left after the least-squares homography src → dst.

    Zero (up to noise) when both point sets are views of one plane: a photo, a screen.
    """
    h = fit_homography(src, dst)
    return float(np.sqrt(((_apply(h, src) - dst) ** 2).sum(1).mean()))


def rectified_ear(landmarks: Landmarks, reference: Landmarks) -> float:
    """EAR of ``landmarks`` seen in ``reference``'s frame: the eyes are mapped through the homography that takes this
    face's rigid points (jaw, brows, nose) onto the reference's. Tilting or squeezing a print changes the plain EAR
    (a print tilted 50° forward looks like half-closed eyes); it does not change this one, which moves only when
    the eyelids move against the rest of the face."""
    h = fit_homography(_rigid(landmarks), _rigid(reference))
    left = _apply(h, _eye(landmarks, "left_eye"))
    right = _apply(h, _eye(landmarks, "right_eye"))
    return (eye_aspect_ratio(left) + eye_aspect_ratio(right)) / 2.0


def _rigid(landmarks: Landmarks) -> npt.NDArray[np.float64]:
    pts = [p for name in RIGID_FEATURES for p in landmarks.get(name, ())]
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


# --- pixels (pure) ------------------------------------------------------------------------------------------


def _grey(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    arr = np.asarray(image)
    if arr.ndim == 3:
        mean: npt.NDArray[np.float64] = arr[:, :, :3].astype(np.float64).mean(axis=2)
        return mean
    if arr.ndim == 2:
        return arr.astype(np.float64)
    raise ValueError(f"a frame must be HxW or HxWxC, got shape {arr.shape}")


def _region(frames: Sequence[LivenessFrame]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the face region: every face box, grown by FACE_MARGIN; the whole frame if none."""
    h, w = frames[0].image.shape[:2]
    boxes = [f.box for fr in frames for f in fr.faces]
    if not boxes:
        return 0, h, 0, w
    top, right = min(b[0] for b in boxes), max(b[1] for b in boxes)
    bottom, left = max(b[2] for b in boxes), min(b[3] for b in boxes)
    mh, mw = (bottom - top) * FACE_MARGIN, (right - left) * FACE_MARGIN
    t, b = max(0, int(top - mh)), min(h, int(bottom + mh) + 1)
    lft, r = max(0, int(left - mw)), min(w, int(right + mw) + 1)
    if b - t < 2 or r - lft < 2:
        return 0, h, 0, w
    return t, b, lft, r


def thumbnail(grey: npt.NDArray[np.float64], size: int = THUMB_SIZE) -> npt.NDArray[np.float64]:
    """Area-averaged ``size``x``size`` thumbnail (fewer pixels than ``size``: the crop itself)."""
    h, w = grey.shape
    if h < size or w < size:
        return grey
    rows = np.linspace(0, h, size + 1).astype(int)[:-1]
    cols = np.linspace(0, w, size + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(grey, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.r_[rows, h]), np.diff(np.r_[cols, w]))
    out: npt.NDArray[np.float64] = sums / counts
    return out


# --- the judge ----------------------------------------------------------------------------------------------


def judge(
    frames: Sequence[LivenessFrame],
    challenge: Challenge | str | None,
    policy: LivenessPolicy = DEFAULT_POLICY,
) -> LivenessResult:
    """Judge a frame sequence against ``challenge`` (None: passive signs only). See the module docstring."""
    ch = None if challenge is None else Challenge(challenge)
    n = len(frames)
    duration = float(frames[-1].t - frames[0].t) if n else 0.0
    single = [fr for fr in frames if len(fr.faces) == 1]
    several = sum(1 for fr in frames if len(fr.faces) > 1)
    base = {
        "frames": n,
        "face_frames": len(single),
        "max_faces": max((len(fr.faces) for fr in frames), default=0),
        "duration_s": duration,
    }

    def refuse(reason: LivenessReason, **figures: Any) -> LivenessResult:
        return LivenessResult(False, reason, ch, LivenessFigures(**{**base, **figures}))

    if n < policy.min_frames:
        return refuse(LivenessReason.TOO_FEW_FRAMES)
    shapes = {frame.image.shape[:2] for frame in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames of one sequence must have one size, got {sorted(shapes)}")
    if several > policy.max_several_fraction * n:
        return refuse(LivenessReason.SEVERAL_FACES)
    if len(single) < max(policy.min_face_fraction * n, policy.min_frames // 2, 2):
        return refuse(LivenessReason.NO_FACE)

    # Pixels: repeats and motion of the face region.
    top, bottom, left, right = _region(single)
    thumbs = [thumbnail(_grey(fr.image[top:bottom, left:right])) for fr in frames]  # crop, then grey
    repeats = 0
    for j in range(1, n):
        if min(float(np.abs(thumbs[j] - thumbs[i]).mean()) for i in range(j)) < policy.frozen_delta:
            repeats += 1
    pixel_motion = float(np.mean([np.abs(thumbs[j] - thumbs[j - 1]).mean() for j in range(1, n)]))
    figures: dict[str, Any] = {"repeats": repeats, "pixel_motion": pixel_motion}

    # Landmarks: motion, flatness, eyes and nose.
    lms = [fr.faces[0].landmarks for fr in single]
    pts = [shape_of(lm) for lm in lms]
    if len({p.shape for p in pts}) != 1:
        raise ValueError("every face must carry the same landmark features")
    iods = np.array([eye_distance(lm) for lm in lms])
    unit = float(np.median(iods)) or 1.0
    ref = pts[len(pts) // 2]
    motion = max(float(np.sqrt(((p - pts[0]) ** 2).sum(1)).max()) for p in pts) / unit
    residuals = [homography_residual(ref, p) / iod for k, (p, iod) in enumerate(zip(pts, iods, strict=True))
                 if k != len(pts) // 2 and iod > 0]  # fmt: skip
    nonplanar = float(np.percentile(residuals, 75)) if residuals else 0.0
    ears = np.array([ear_of(lm) for lm in lms])
    rectified = np.array([rectified_ear(lm, lms[len(lms) // 2]) for lm in lms])
    yaws = np.array([yaw_of(lm) for lm in lms])
    ear_open = float(np.percentile(ears, 75))
    figures |= {
        "landmark_motion": motion,
        "nonplanar": nonplanar,
        "ear_min": float(ears.min()),
        "ear_max": float(ears.max()),
        "ear_open": ear_open,
        "rectified_ear_min": float(rectified.min()),
        "rectified_ear_open": float(np.percentile(rectified, 75)),
        "yaw_min": float(yaws.min()),
        "yaw_max": float(yaws.max()),
    }

    if repeats > policy.max_repeat_fraction * (n - 1):
        return refuse(LivenessReason.FROZEN_FRAMES, **figures)
    if motion < policy.min_landmark_motion:
        return refuse(LivenessReason.NO_MOTION, **figures)
    blink = unit >= policy.min_blink_eye_distance and blinked(ears, policy) and blinked(rectified, policy)
    if ch is Challenge.BLINK and not blink:
        return refuse(LivenessReason.NO_BLINK, **figures)
    if ch is Challenge.HEAD_TURN and float(yaws.max() - yaws.min()) < policy.min_head_turn:
        return refuse(LivenessReason.NO_HEAD_TURN, **figures)
    if nonplanar < policy.min_nonplanar and not (ch is Challenge.BLINK and blink):
        return refuse(LivenessReason.FLAT_FACE, **figures)
    return LivenessResult(True, None, ch, LivenessFigures(**{**base, **figures}))


def blinked(ears: npt.NDArray[np.float64] | Sequence[float], policy: LivenessPolicy = DEFAULT_POLICY) -> bool:
    """An eye closure (EAR ≤ closed ratio × open level) followed by a reopening (≥ reopen ratio × open level)."""
    seq = np.asarray(ears, dtype=np.float64)
    if len(seq) < 3:
        return False
    open_level = float(np.percentile(seq, 75))
    if open_level <= 0.0:
        return False
    closed = np.flatnonzero(seq <= policy.blink_closed_ratio * open_level)
    if len(closed) == 0:
        return False
    return bool((seq[closed[0] + 1 :] >= policy.blink_reopen_ratio * open_level).any())
