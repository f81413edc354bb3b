"""`jiapei face compare REFERENCE IMAGE…`: what the face engine sees in each image, against a reference face.

One JSON object a line, with the same functions the pipeline uses (``biometrics.FaceEngine``):

    {"image": "a.jpg", "faces": 1, "distance": 0.3861, "match": true}
    {"image": "group.jpg", "faces": 2, "distance": null, "match": null}
    {"image": "gone.jpg", "error": "gone.jpg: no such file"}

``distance`` is measured only when the image holds exactly one face and the reference does; ``match`` is
``distance < threshold``. The reference itself gets a line (with ``"reference": true``) only when it cannot serve
(unreadable, no face or several faces); the images are still reported, with null distances.

Exit status: 0 when every image was read, 1 when some image could not be, 2 when the reference is unusable or
the face engine is not installed.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, TextIO

import numpy as np
import numpy.typing as npt

from biometrics.errors import BiometricsError
from biometrics.templates import DEFAULT_MATCH_THRESHOLD, FaceTemplate, distance

EXIT_OK = 0
EXIT_IMAGE_ERROR = 1
EXIT_REFERENCE_ERROR = 2

DISTANCE_DECIMALS = 4


class FaceEngineLike(Protocol):
    def load_image(self, path: str) -> npt.NDArray[np.uint8]: ...

    def encode(self, image_rgb: npt.NDArray[np.uint8]) -> list[FaceTemplate]: ...


def _emit(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()


def _faces_of(engine: FaceEngineLike, path: str) -> list[FaceTemplate]:
    try:
        return engine.encode(engine.load_image(path))
    except BiometricsError:
        raise
    except Exception as exc:  # noqa: BLE001 - the command promises a JSON line, never a traceback
        raise BiometricsError(f"{path}: {type(exc).__name__}: {exc}") from exc


def run(
    reference: str,
    images: list[str],
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    *,
    engine: FaceEngineLike | None = None,
    out: TextIO | None = None,
) -> int:
    """Compare each image's face with the reference's; print one JSON line per image; return the exit status."""
    out = out if out is not None else sys.stdout
    if engine is None:
        try:
            from biometrics.engine import FaceEngine

            engine = FaceEngine()
        except BiometricsError as exc:
            _emit(out, {"image": reference, "reference": True, "error": str(exc)})
            return EXIT_REFERENCE_ERROR

    status = EXIT_OK
    ref: FaceTemplate | None = None
    try:
        ref_faces = _faces_of(engine, reference)
    except BiometricsError as exc:
        _emit(out, {"image": reference, "reference": True, "error": str(exc)})
        status = EXIT_REFERENCE_ERROR
    else:
        if len(ref_faces) == 1:
            ref = ref_faces[0]
        else:
            reason = "no face" if not ref_faces else f"{len(ref_faces)} faces"
            _emit(
                out,
                {
                    "image": reference,
                    "reference": True,
                    "faces": len(ref_faces),
                    "error": f"the reference must show exactly one face, found {reason}",
                },
            )
            status = EXIT_REFERENCE_ERROR

    for path in images:
        try:
            faces = _faces_of(engine, path)
        except BiometricsError as exc:
            _emit(out, {"image": path, "error": str(exc)})
            status = max(status, EXIT_IMAGE_ERROR)
            continue
        dist: float | None = None
        match: bool | None = None
        if ref is not None and len(faces) == 1:
            dist = round(distance(ref, faces[0]), DISTANCE_DECIMALS)
            match = distance(ref, faces[0]) < threshold
        _emit(out, {"image": path, "faces": len(faces), "distance": dist, "match": match})
    return status
