"""Perceptual hash of evidence photos (biometrics.phash): the caption band is not hashed, re-encoding barely moves the
hash, a different picture is far from it (measured on real photos in bench/phash_stability.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from agent.photos import evidence_jpeg
from biometrics.phash import frame_area, from_hex, grey, hamming, phash, to_hex


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 230, (12, 16, 3), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(40, 0).repeat(40, 1))  # 480x640, blocks like a scene's large shapes


def decoded(jpeg: bytes, quality: int | None = None) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        rgb = im.convert("RGB")
        if quality is not None:
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=quality)
            return decoded(buf.getvalue())
        return np.asarray(rgb)


@pytest.mark.parametrize("lines", [1, 3])
def test_the_caption_band_is_cut_off(lines: int) -> None:
    caption = [f"line {k} 2026-11-28T08:15:00Z 35.416000,119.527000" for k in range(lines)]
    photo = decoded(evidence_jpeg(scene(1), caption))
    assert photo.shape[0] > 480 and frame_area(grey(photo)).shape[0] == 480


def test_recaptioned_and_reencoded_copies_stay_close_and_other_pictures_do_not() -> None:
    a = phash(decoded(evidence_jpeg(scene(1), ["2026-11-28T08:15:00Z"])))
    again = phash(decoded(evidence_jpeg(scene(1), ["2026-11-29T16:45:30Z  somewhere else"]), quality=55))
    other = phash(decoded(evidence_jpeg(scene(2), ["2026-11-28T08:15:00Z"])))
    assert hamming(a, again) <= 2 and hamming(a, other) > 10


def test_a_dark_photo_is_hashed_whole_and_hex_round_trips() -> None:
    dark = np.full((480, 640, 3), 5, np.uint8)
    assert frame_area(grey(dark)).shape[0] == 480
    h = phash(scene(3))
    assert from_hex(to_hex(h)) == h and len(to_hex(h)) == 16
    with pytest.raises(ValueError):
        from_hex("abc")
    with pytest.raises(ValueError):
        phash(np.zeros((4, 4), np.uint8))
