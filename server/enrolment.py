"""Enrolment photos: an uploaded registration photo becomes a face template on the server, or is refused with a reason.

The server computes the template itself (face_recognition's 128-d descriptor through :class:`biometrics.engine.
FaceEngine`): a client never supplies the numbers its people are recognised by. A photo is refused when it is not an
image (``not_an_image``), too big (``photo_too_large``: bytes; ``image_too_large``: pixels), shows no face
(``no_face``), several faces (``several_faces``) or a face smaller than :data:`MIN_FACE_PX` (``face_too_small``).
What is kept is a re-encoded JPEG (no EXIF: no camera, place or time metadata), at most :data:`STORED_MAX_SIDE` px.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from biometrics.templates import FaceTemplate, encode_template

#: Bytes of an uploaded photo: a phone's full-resolution JPEG fits; a video or archive does not.
MAX_PHOTO_BYTES = 8 * 1024 * 1024
#: Pixels of an uploaded photo before decoding further (a decompression bomb stops here).
MAX_PHOTO_PIXELS = 40_000_000
#: Longest side the photo is reduced to before detection, encoding and storage (a passport-style photo at 1024 px
#: holds a face of several hundred pixels; more only costs detection time).
STORED_MAX_SIDE = 1024
#: Smallest face (shorter side of the detector's box, at the stored size) a template is made from. dlib's model is
#: fed 150 px face chips; below ~80 px the descriptor is built from upscaled blur and matches strangers more easily.
MIN_FACE_PX = 80
JPEG_QUALITY = 90


class FaceFinder(Protocol):
    """What enrolment needs of :class:`biometrics.engine.FaceEngine` (a fake in tests)."""

    def locate(self, image_rgb: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]: ...

    def encode_at(self, image_rgb: npt.NDArray[np.uint8], boxes: list[Any]) -> list[FaceTemplate]: ...


class PhotoRefused(Exception):
    """An enrolment photo we do not make a template from: ``reason`` (machine code), HTTP ``status``."""

    def __init__(self, reason: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


@dataclass(frozen=True)
class EnrolledPhoto:
    template: str  # wire form (biometrics.templates)
    jpeg: bytes
    sha256: str
    width: int
    height: int
    face_box: tuple[int, int, int, int]  # top, right, bottom, left


def process_photo(data: bytes, engine: FaceFinder) -> EnrolledPhoto:
    """Check one registration photo and make its template; :class:`PhotoRefused` with the reason otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoRefused("photo_too_large", f"the photo has {len(data)} bytes; at most {MAX_PHOTO_BYTES}", 413)
    if not data:
        raise PhotoRefused("not_an_image", "the photo is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_PHOTO_PIXELS:
                raise PhotoRefused("image_too_large", f"{w}x{h} px is more than {MAX_PHOTO_PIXELS} px", 413)
            im.load()
            rgb_im = ImageOps.exif_transpose(im).convert("RGB")
    except PhotoRefused:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PhotoRefused("not_an_image", f"not an image we can read ({type(exc).__name__})") from exc
    rgb_im.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    rgb = np.ascontiguousarray(np.asarray(rgb_im, dtype=np.uint8))
    boxes = engine.locate(rgb)
    if not boxes:
        raise PhotoRefused("no_face", "no face found in the photo: a frontal, well-lit face, eyes open, no sunglasses")
    if len(boxes) > 1:
        raise PhotoRefused("several_faces", f"{len(boxes)} faces in the photo: it must show the enrolled person only")
    top, right, bottom, left = boxes[0]
    side = min(bottom - top, right - left)
    if side < MIN_FACE_PX:
        raise PhotoRefused("face_too_small", f"the face is {side} px across; at least {MIN_FACE_PX} px are needed "
                           f"(photo reduced to {rgb.shape[1]}x{rgb.shape[0]}): take it closer")  # fmt: skip
    templates = engine.encode_at(rgb, [boxes[0]])
    if len(templates) != 1:
        raise PhotoRefused("no_face", "the face could not be encoded")
    out = io.BytesIO()
    rgb_im.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)  # a fresh JPEG: no EXIF or other metadata
    jpeg = out.getvalue()
    return EnrolledPhoto(template=encode_template(templates[0]), jpeg=jpeg, sha256=hashlib.sha256(jpeg).hexdigest(),
                         width=rgb.shape[1], height=rgb.shape[0],
                         face_box=(int(top), int(right), int(bottom), int(left)))  # fmt: skip
