"""Face templates: the 128 numbers face_recognition computes for one face, their wire form and distance.

Pure: numpy only, no detector, no file or network I/O. The terminal and the server both use this module,
so a template encoded on one side is decoded on the other bit for bit.

Wire form: ``"fr1:" + base64(128 little-endian float32)`` (4 + 684 characters). The tag names the model that
made the numbers (``fr1`` = dlib's ResNet face model as shipped with face_recognition 1.x); templates from
another model are not comparable, so a decoder refuses any tag it does not know rather than guess.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from biometrics.errors import TemplateDecodeError

TEMPLATE_SIZE = 128
"""Numbers in one face_recognition encoding (dlib's face descriptor)."""

TEMPLATE_TAG = "fr1"
"""Version tag of the wire form: the model family that produced the numbers, then the layout."""

_WIRE_DTYPE = np.dtype("<f4")
_ENCODED_LEN = len(TEMPLATE_TAG) + 1 + len(base64.b64encode(bytes(TEMPLATE_SIZE * 4)))
MAX_ENCODED_LENGTH = _ENCODED_LEN
"""Exact length of an encoded template; anything else is refused before decoding (bounded input)."""

DEFAULT_MATCH_THRESHOLD = 0.5
"""Euclidean distance below which two templates are taken to be the same person.

face_recognition's own default is 0.6 (dlib's model was trained so that 0.6 separates people on LFW with
99.38 % accuracy). On our test photos (../shared/testdata/faces) the same person measures 0.13-0.40 apart and
different people 0.82-0.92 apart; live video frames of one person reach 0.31-0.69 from an enrolment photo.
0.5 keeps a wide margin from the closest impostor seen (0.82) while accepting all still photos of the same
person; a live check averages several frames rather than loosening this. A stricter threshold is safer for
sign-in (a false accept lets someone else's hours count), which is why we do not use the looser 0.6.
"""


@dataclass(frozen=True, eq=False)
class FaceTemplate:
    """One face's 128-d descriptor as float32. Immutable; compare with :func:`distance`, not ``==``."""

    vector: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        arr = np.asarray(self.vector, dtype=np.float32)
        if arr.shape != (TEMPLATE_SIZE,):
            raise ValueError(f"a face template has {TEMPLATE_SIZE} numbers, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("a face template must hold finite numbers")
        arr = arr.copy()
        arr.setflags(write=False)
        object.__setattr__(self, "vector", arr)

    @classmethod
    def from_sequence(cls, values: Any) -> FaceTemplate:
        """Build from any 128-long sequence of numbers (e.g. a float64 array from face_recognition)."""
        return cls(np.asarray(values, dtype=np.float32))

    def encode(self) -> str:
        return encode_template(self)

    @classmethod
    def decode(cls, text: str) -> FaceTemplate:
        return decode_template(text)

    def same_as(self, other: FaceTemplate) -> bool:
        """Exact equality of the numbers (for round-trip checks)."""
        return bool(np.array_equal(self.vector, other.vector))

    def __repr__(self) -> str:
        head = ", ".join(f"{v:.3f}" for v in self.vector[:3])
        return f"FaceTemplate([{head}, …])"


def encode_template(template: FaceTemplate) -> str:
    """``fr1:`` + base64 of the 128 float32 in little-endian order."""
    raw = template.vector.astype(_WIRE_DTYPE, copy=False).tobytes()
    return f"{TEMPLATE_TAG}:{base64.b64encode(raw).decode('ascii')}"


def decode_template(text: str) -> FaceTemplate:
    """Inverse of :func:`encode_template`; raises :class:`TemplateDecodeError` with the reason."""
    if not isinstance(text, str):
        raise TemplateDecodeError(f"a face template is a string, got {type(text).__name__}")
    if len(text) != _ENCODED_LEN:
        raise TemplateDecodeError(f"a face template is {_ENCODED_LEN} characters, got {len(text)}")
    tag, sep, body = text.partition(":")
    if not sep or tag != TEMPLATE_TAG:
        raise TemplateDecodeError(f"unknown face template version {tag!r}, expected {TEMPLATE_TAG!r}")
    try:
        raw = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise TemplateDecodeError(f"face template is not valid base64: {exc}") from exc
    if len(raw) != TEMPLATE_SIZE * 4:
        raise TemplateDecodeError(f"face template holds {len(raw)} bytes, expected {TEMPLATE_SIZE * 4}")
    vector = np.frombuffer(raw, dtype=_WIRE_DTYPE).astype(np.float32)
    try:
        return FaceTemplate(vector)
    except ValueError as exc:
        raise TemplateDecodeError(str(exc)) from exc


def distance(a: FaceTemplate, b: FaceTemplate) -> float:
    """Euclidean distance between two templates (what face_recognition.face_distance computes)."""
    diff = a.vector.astype(np.float64) - b.vector.astype(np.float64)
    return float(np.linalg.norm(diff))


def is_match(a: FaceTemplate, b: FaceTemplate, threshold: float = DEFAULT_MATCH_THRESHOLD) -> bool:
    """Same person when strictly closer than ``threshold``."""
    return distance(a, b) < threshold
