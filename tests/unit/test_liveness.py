"""The liveness judge on synthetic sequences: a 3D face model projected frame by frame (live), the same face as a flat
print moved by homographies (photo), frozen and looped feeds. No camera, no model: biometrics.liveness is pure."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from biometrics.liveness import (
    Challenge,
    FaceSighting,
    LivenessFrame,
    LivenessReason,
    blinked,
    ear_of,
    homography_residual,
    judge,
    shape_of,
    yaw_of,
)
from firmware_protocols.envelope import canonical_json

SIZE = (240, 320)  # frame height, width


def _face3d(eye_open: float) -> dict[str, list[tuple[float, float, float]]]:
    """A rough 68-point head in face_recognition's layout, units of half the eye distance, z towards the camera."""

    def eye(cx: float) -> list[tuple[float, float, float]]:
        h = 0.05 * eye_open
        return [(cx - 0.15, 0, 0), (cx - 0.05, -h, 0.02), (cx + 0.05, -h, 0.02), (cx + 0.15, 0, 0),
                (cx + 0.05, h, 0.02), (cx - 0.05, h, 0.02)]  # fmt: skip

    chin = [(0.95 * math.cos(a), 0.2 + 1.0 * math.sin(a), 0.1 - 0.8 * abs(math.cos(a)))
            for a in np.linspace(math.pi, 0, 17)[::-1] * -1 + math.pi]  # fmt: skip
    return {
        "chin": chin,
        "left_eyebrow": [(-0.8 + 0.12 * k, -0.25 - 0.04 * math.sin(k), 0.05) for k in range(5)],
        "right_eyebrow": [(0.3 + 0.12 * k, -0.25 - 0.04 * math.sin(k), 0.05) for k in range(5)],
        "nose_bridge": [(0.0, -0.05 + 0.12 * k, 0.12 + 0.12 * k) for k in range(4)],
        "nose_tip": [(-0.15 + 0.075 * k, 0.5, 0.45 + 0.1 * (1 - abs(k - 2) / 2)) for k in range(5)],
        "left_eye": eye(-0.5),
        "right_eye": eye(0.5),
        "top_lip": [(-0.35 + 0.7 * k / 11, 0.75 - 0.05 * math.sin(math.pi * k / 11), 0.2) for k in range(12)],
        "bottom_lip": [(0.35 - 0.7 * k / 11, 0.82 + 0.05 * math.sin(math.pi * k / 11), 0.18) for k in range(12)],
    }


def _project(face: dict[str, list[tuple[float, float, float]]], yaw_deg: float, rng: np.random.Generator,
             shift: tuple[float, float] = (0.0, 0.0)) -> dict[str, list[tuple[float, float]]]:  # fmt: skip
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    out = {}
    for name, pts in face.items():
        out[name] = [(160 + shift[0] + 50 * (x * c + z * s) + rng.normal(0, 0.3),
                      110 + shift[1] + 50 * y + rng.normal(0, 0.3)) for x, y, z in pts]  # fmt: skip
    return out


def _box(lm: dict[str, list[tuple[float, float]]]) -> tuple[int, int, int, int]:
    pts = shape_of(lm)
    return int(pts[:, 1].min()) - 20, int(pts[:, 0].max()) + 5, int(pts[:, 1].max()) + 5, int(pts[:, 0].min()) - 5


def _texture(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (SIZE[0] // 8, SIZE[1] // 8), dtype=np.uint8).repeat(8, 0).repeat(8, 1)


def _frames(landmarks: list[dict[str, list[tuple[float, float]]]], images: list[np.ndarray]) -> list[LivenessFrame]:
    return [LivenessFrame(img, 0.125 * k, (FaceSighting(_box(lm), lm),))
            for k, (lm, img) in enumerate(zip(landmarks, images, strict=True))]  # fmt: skip


def _moving_images(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    base = _texture(rng)
    return [np.roll(base, (3 * k, 2 * k), axis=(0, 1)) for k in range(n)]


def live(yaws: Sequence[float], opens: Sequence[float] | None = None, seed: int = 0) -> list[LivenessFrame]:
    rng = np.random.default_rng(seed)
    opens = opens or [1.0] * len(yaws)
    lms = [_project(_face3d(o), y, rng, (1.5 * k, 0.5 * k)) for k, (y, o) in enumerate(zip(yaws, opens, strict=True))]
    return _frames(lms, _moving_images(len(yaws), rng))


def photo(n: int, seed: int = 0, eye_open: float = 1.0) -> list[LivenessFrame]:
    """A print of a frontal face, waved: each frame the flat picture seen through another homography."""
    rng = np.random.default_rng(seed)
    flat = _project(_face3d(eye_open), 0.0, np.random.default_rng(99))
    lms = []
    for k in range(n):
        a = math.radians(4 * math.sin(k))
        h = np.array([[math.cos(a) * 1.05, -math.sin(a), 10 * math.sin(k)],
                      [math.sin(a), math.cos(a) * 0.95, 6 * math.cos(k)],
                      [3e-4 * math.sin(0.7 * k), 2e-4 * math.cos(k), 1.0]])  # fmt: skip
        warped = {}
        for name, pts in flat.items():
            p = np.c_[np.asarray(pts), np.ones(len(pts))] @ h.T
            warped[name] = [(u / w + rng.normal(0, 0.3), v / w + rng.normal(0, 0.3)) for u, v, w in p]
        lms.append(warped)
    return _frames(lms, _moving_images(n, rng))


TURN = [0, 4, 9, 14, 18, 20, 18, 14, 9, 4, 0, -3]
STILL = [2.0] * 12
BLINK = [1, 1, 1, 1, 0.5, 0.1, 0.2, 0.8, 1, 1, 1, 1]


def test_measures_of_one_face() -> None:
    rng = np.random.default_rng(0)
    open_eyes = _project(_face3d(1.0), 0.0, rng)
    assert ear_of(open_eyes) == pytest.approx(0.33, abs=0.03)
    assert ear_of(_project(_face3d(0.1), 0.0, rng)) < 0.1  # 0.03 plus landmark noise
    assert abs(yaw_of(open_eyes)) < 0.02
    assert yaw_of(_project(_face3d(1.0), 20.0, rng)) > 0.12  # nose tip ~0.55 forward: 0.55·sin 20° ≈ 0.19
    pts = shape_of(open_eyes)
    assert pts.shape == (72, 2)  # 68 points, the lips' corners counted in both lips as face_recognition does


def test_a_homography_of_a_plane_leaves_nothing_but_a_turned_head_does() -> None:
    rng = np.random.default_rng(1)
    src = shape_of(_project(_face3d(1.0), 0.0, rng))
    h = np.array([[0.9, 0.1, 5.0], [-0.05, 1.1, -3.0], [1e-4, -2e-4, 1.0]])
    p = np.c_[src, np.ones(len(src))] @ h.T
    assert homography_residual(src, p[:, :2] / p[:, 2:]) < 1e-6
    turned = shape_of(_project(_face3d(1.0), 20.0, rng))
    assert homography_residual(src, turned) > 2.0  # pixels, eye distance 50 px


def test_a_live_head_turn_passes() -> None:
    got = judge(live(TURN), Challenge.HEAD_TURN)
    assert got.passed and got.reason is None and got.challenge is Challenge.HEAD_TURN
    f = got.figures
    assert f.frames == f.face_frames == 12 and f.repeats == 0
    assert f.yaw_max is not None and f.yaw_min is not None and f.yaw_max - f.yaw_min > 0.12
    assert f.nonplanar is not None and f.nonplanar > 0.06


def test_a_live_blink_passes_and_an_unblinking_turn_does_not() -> None:
    got = judge(live([6 * math.sin(k) for k in range(12)], BLINK), Challenge.BLINK)
    assert got.passed, got
    assert got.figures.ear_min is not None and got.figures.ear_open is not None
    assert got.figures.ear_min < 0.65 * got.figures.ear_open
    no_blink = judge(live(TURN), Challenge.BLINK)
    assert (no_blink.passed, no_blink.reason) == (False, LivenessReason.NO_BLINK)


def test_eyes_that_close_and_stay_closed_are_no_blink() -> None:
    assert blinked([0.3, 0.3, 0.3, 0.1, 0.3, 0.3])
    assert not blinked([0.3, 0.3, 0.3, 0.3, 0.1, 0.1])  # never reopened
    assert not blinked([0.3, 0.29, 0.31, 0.3, 0.28, 0.3])  # landmark noise is not a blink
    assert not blinked([0.3, 0.1])


def test_a_still_head_fails_the_head_turn() -> None:
    got = judge(live([w + 20 for w in (0, 1, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1)]), Challenge.HEAD_TURN)
    assert (got.passed, got.reason) == (False, LivenessReason.NO_HEAD_TURN)


def test_a_live_still_head_blinking_is_not_flat() -> None:
    got = judge(live([20.0 + 0.5 * math.sin(k) for k in range(12)], BLINK), Challenge.BLINK)
    assert got.passed, got.figures
    assert got.figures.nonplanar is not None and got.figures.nonplanar < 0.06  # too still for the parallax test


def test_a_waved_photo_is_flat_and_answers_no_challenge() -> None:
    got = judge(photo(12), None)
    assert (got.passed, got.reason) == (False, LivenessReason.FLAT_FACE), got.figures
    assert got.figures.nonplanar is not None and got.figures.nonplanar < 0.03
    assert judge(photo(12), Challenge.BLINK).reason is LivenessReason.NO_BLINK
    assert judge(photo(12), Challenge.HEAD_TURN).reason is LivenessReason.NO_HEAD_TURN


def test_tilting_a_print_forward_is_not_a_blink() -> None:
    """A print tilted away squeezes the eyes like a blink: the plain EAR dips, the rectified EAR does not."""
    seq = photo(12)
    squeeze = [1, 1, 1, 1, 0.7, 0.45, 0.5, 0.9, 1, 1, 1, 1]
    tilted = []
    for f, k in zip(seq, squeeze, strict=True):
        (face,) = f.faces
        cy = 110.0
        lm = {n: [(x, cy + (y - cy) * k) for x, y in pts] for n, pts in face.landmarks.items()}
        tilted.append(LivenessFrame(f.image, f.t, (FaceSighting(_box(lm), lm),)))
    got = judge(tilted, Challenge.BLINK)
    assert (got.passed, got.reason) == (False, LivenessReason.NO_BLINK)
    fig = got.figures
    assert fig.ear_min is not None and fig.ear_open is not None and fig.ear_min < 0.65 * fig.ear_open  # fooled
    assert fig.rectified_ear_min is not None and fig.rectified_ear_open is not None
    assert fig.rectified_ear_min > 0.85 * fig.rectified_ear_open  # not fooled


def test_a_frozen_feed_and_a_short_loop_are_frozen() -> None:
    seq = live(TURN)
    frozen = [LivenessFrame(seq[0].image, 0.125 * k, seq[0].faces) for k in range(12)]
    got = judge(frozen, Challenge.HEAD_TURN)
    assert (got.passed, got.reason, got.figures.repeats) == (False, LivenessReason.FROZEN_FRAMES, 11)
    loop = [LivenessFrame(seq[k % 3].image, 0.125 * k, seq[k % 3].faces) for k in range(12)]
    assert judge(loop, Challenge.HEAD_TURN).reason is LivenessReason.FROZEN_FRAMES
    noisy = [LivenessFrame(np.clip(seq[0].image + np.random.default_rng(k).integers(0, 2, SIZE), 0, 255)
                           .astype(np.uint8), 0.125 * k, seq[0].faces) for k in range(12)]  # fmt: skip
    assert judge(noisy, None).reason is LivenessReason.FROZEN_FRAMES  # ±1 grey level of noise is still frozen


def test_moving_pixels_over_still_landmarks_are_no_motion() -> None:
    seq = live(STILL)
    still = [LivenessFrame(f.image, f.t, seq[0].faces) for f in seq]
    assert judge(still, None).reason is LivenessReason.NO_MOTION


def test_faces_missing_or_crowded() -> None:
    seq = live(TURN)
    empty = [LivenessFrame(f.image, f.t, ()) for f in seq]
    assert judge(empty, Challenge.BLINK).reason is LivenessReason.NO_FACE
    mostly_gone = [LivenessFrame(f.image, f.t, f.faces if k < 5 else ()) for k, f in enumerate(seq)]
    assert judge(mostly_gone, None).reason is LivenessReason.NO_FACE
    one_glance_away = [LivenessFrame(f.image, f.t, f.faces if k != 6 else ()) for k, f in enumerate(seq)]
    assert judge(one_glance_away, Challenge.HEAD_TURN).passed
    crowded = [LivenessFrame(f.image, f.t, f.faces * (2 if k % 2 else 1)) for k, f in enumerate(seq)]
    got = judge(crowded, None)
    assert (got.reason, got.figures.max_faces) == (LivenessReason.SEVERAL_FACES, 2)
    assert judge(seq[:4], None).reason is LivenessReason.TOO_FEW_FRAMES
    assert judge([], None).reason is LivenessReason.TOO_FEW_FRAMES


def test_frames_of_different_sizes_are_refused() -> None:
    seq = live(TURN)
    mixed = [*seq[:-1], LivenessFrame(np.zeros((10, 10), np.uint8), 2.0, seq[-1].faces)]
    with pytest.raises(ValueError, match="one size"):
        judge(mixed, None)


def test_the_verdict_goes_into_a_signed_record_as_integers() -> None:
    got = judge(live(TURN), "head_turn")
    body = got.to_body()
    assert body["passed"] is True and body["reason"] is None and body["challenge"] == "head_turn"
    assert body["frames"] == 12 and body["duration_ms"] == 1375
    assert all(v is None or isinstance(v, int | str | bool) for v in body.values())
    canonical_json(body)  # refuses floats
    refused = judge(photo(12), None).to_body()
    assert refused["reason"] == "flat_face" and json.loads(canonical_json(refused))["passed"] is False
