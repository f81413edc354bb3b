"""Perceptual hash of an evidence photo: a 64-bit DCT hash (pHash) of the camera frame, without its caption band.

Pure (numpy; Pillow only to shrink). An evidence photo (``agent.photos.evidence_jpeg``) is the frame with a black
caption band of white text under it; the band changes with every check (time, place) and would dominate the hash,
so :func:`frame_area` cuts it off first. The hash: the frame in grey, shrunk to 32x32 (area average), its 2-D DCT,
the 8x8 lowest frequencies, one bit each for "above their median" (Zauner 2010). Two photos' hashes are compared by
:func:`hamming` (0-64 differing bits).

What it is good for, measured on the shared test faces (bench/phash_stability.py, docs/faces.md): the same photo
re-encoded, rescaled or re-captioned stays within a few bits; different photos are far apart; two frames of one
continuous video a second or more apart are *not* reliably apart (a fixed cabin camera sees the same scene), so a
match of this hash alone says "the same picture", not "the same moment" only above that separation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

HASH_SIDE = 32
"""Side of the grey thumbnail the DCT is taken of."""

LOW_FREQ = 8
"""Side of the block of lowest frequencies kept: 64 bits."""

CAPTION_MAX_FRACTION = 0.3
"""At most this share of the photo's height is taken for a caption band (3 lines of 14 px under 480 px are 10 %)."""

CAPTION_BLACK = 16
CAPTION_WHITE = 160
CAPTION_BLACK_SHARE = 0.4
CAPTION_TEXT_SHARE = 0.6
"""A caption row is black background between white letters: at least CAPTION_BLACK_SHARE of its pixels at or under
CAPTION_BLACK grey levels (JPEG keeps a black band near 0; a dark suit or a dim cabin sits at 20-60), or, where long
text covers most of a narrow photo's row, some black and CAPTION_TEXT_SHARE black or white together."""


def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    out: npt.NDArray[np.float64] = m
    return out


_DCT = _dct_matrix(HASH_SIDE)


def grey(rgb: Any) -> npt.NDArray[np.float64]:
    arr = np.asarray(rgb)
    if arr.ndim == 3:
        out: npt.NDArray[np.float64] = arr[:, :, :3].astype(np.float64).mean(axis=2)
        return out
    if arr.ndim == 2:
        return arr.astype(np.float64)
    raise ValueError(f"an image must be HxW or HxWxC, got shape {arr.shape}")


def frame_area(g: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The photo without the caption band at its bottom (rows with black background), if there is one."""
    h = g.shape[0]
    dark = (g <= CAPTION_BLACK).mean(axis=1)
    light = (g >= CAPTION_WHITE).mean(axis=1)
    black = (dark >= CAPTION_BLACK_SHARE) | ((dark >= CAPTION_BLACK_SHARE / 3) & (dark + light >= CAPTION_TEXT_SHARE))
    bottom = h
    limit = h - int(h * CAPTION_MAX_FRACTION)
    while bottom > limit and black[bottom - 1]:
        bottom -= 1
    if bottom == limit:  # a dark photo, not a caption: keep it whole
        return g
    return g[:bottom] if bottom >= 8 else g


def phash(rgb: Any) -> int:
    """The 64-bit perceptual hash of a photo's frame area (an RGB or grey array)."""
    from PIL import Image

    g = frame_area(grey(rgb))
    if g.shape[0] < 8 or g.shape[1] < 8:
        raise ValueError("an image of at least 8x8 pixels is needed")
    small = np.asarray(
        Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)).resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX),
        dtype=np.float64,
    )
    coeffs = (_DCT @ small @ _DCT.T)[:LOW_FREQ, :LOW_FREQ].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def to_hex(h: int) -> str:
    return f"{h:016x}"


def from_hex(text: str) -> int:
    if len(text) != 16:
        raise ValueError("a perceptual hash is 16 hex digits")
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
