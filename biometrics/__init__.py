"""Face engine shared by the terminal and the server: detection, templates, comparison (face_recognition).

Importing this package is cheap: face_recognition, dlib and Pillow load only when a :class:`FaceEngine` is made.
"""

from biometrics.engine import FaceEngine, FaceMatch, match_templates
from biometrics.errors import (
    BiometricsError,
    EngineUnavailable,
    FaceEngineError,
    ImageUnreadable,
    TemplateDecodeError,
)
from biometrics.templates import (
    DEFAULT_MATCH_THRESHOLD,
    FaceTemplate,
    decode_template,
    distance,
    encode_template,
    is_match,
)

__all__ = [
    "DEFAULT_MATCH_THRESHOLD",
    "BiometricsError",
    "EngineUnavailable",
    "FaceEngine",
    "FaceEngineError",
    "FaceMatch",
    "FaceTemplate",
    "ImageUnreadable",
    "TemplateDecodeError",
    "decode_template",
    "distance",
    "encode_template",
    "is_match",
    "match_templates",
]
