"""The accuracy docs/faces.md reports, re-measured: FAR and FRR at the configured threshold on ../shared/testdata/faces
stay within the figures written there (bench/face_accuracy.py measures them; this test fails if a change to the
engine, the threshold or the data moves them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from biometrics.accuracy import error_rates, pair_distances, trials_needed, upper_bound_95
from biometrics.templates import DEFAULT_MATCH_THRESHOLD

ROOT = Path(__file__).resolve().parents[2]
FACES = ROOT.parent / "shared" / "testdata" / "faces"

pytestmark = pytest.mark.skipif(
    not (FACES / "PROVENANCE.md").is_file(), reason=f"shared face test data not found: {FACES} (see its PROVENANCE.md)"
)


@pytest.fixture(scope="module")
def accuracy() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import face_accuracy
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return face_accuracy


@pytest.fixture(scope="module")
def engine() -> Any:
    from biometrics.engine import FaceEngine

    return FaceEngine()


@pytest.mark.parametrize("side", [None, 640], ids=["full_size", "terminal_640"])
def test_photos_at_the_threshold(accuracy: Any, engine: Any, side: int | None) -> None:
    photos, refused = accuracy.photo_templates(engine, FACES, side)
    assert refused == [] and len(photos) == 6 and sum(len(v) for v in photos.values()) == 17
    pairs = pair_distances(photos)
    rates = error_rates(pairs, DEFAULT_MATCH_THRESHOLD)
    # docs/faces.md: 27 genuine and 109 impostor pairs, no error either way
    assert (rates.genuine_pairs, rates.impostor_pairs) == (27, 109)
    assert (rates.false_rejects, rates.false_accepts) == (0, 0)
    # and the margins reported there: genuine ≤ 0.46, impostor ≥ 0.68
    assert max(pairs.genuine) < 0.46 and min(pairs.impostor) > 0.68


def test_clip_frames_one_by_one(accuracy: Any, engine: Any) -> None:
    """Single video frames are the hard case (docs/faces.md): no false accept, but many single-frame rejects, which
    is why a check decides on the best of several frames and retries."""
    photos, _ = accuracy.photo_templates(engine, FACES, None)
    clip = accuracy.clip_distances(engine, FACES, photos)
    assert clip["frames_with_one_face"] >= 30
    from biometrics.accuracy import PairDistances

    rates = error_rates(PairDistances(clip["genuine"], clip["impostor"]), DEFAULT_MATCH_THRESHOLD)
    assert rates.false_accepts == 0 and min(clip["impostor"]) > 0.55
    assert rates.frr <= 0.45  # reported: 12 of 32 frames (37.5 %) at or past 0.5


def test_what_this_data_can_demonstrate() -> None:
    assert round(upper_bound_95(0, 109), 3) == 0.027 and round(upper_bound_95(0, 27), 3) == 0.105
    assert 29_000 < trials_needed(1e-4) < 31_000 and 290 < trials_needed(1e-2) < 310
