"""Errors of the biometrics package.

    BiometricsError
    ├── TemplateDecodeError      a template string is not ours (bad tag, length, base64, numbers)
    └── FaceEngineError          the face engine could not do its work
        ├── EngineUnavailable    face_recognition / dlib / its models are not installed or fail to load
        └── ImageUnreadable      a file or buffer is not an image we can decode (missing, truncated, not an image)

"No face" and "several faces" are not errors: they are answers, reported in ``FaceMatch.reason``.
Third-party exceptions are translated here at the boundary (``raise Ours(...) from exc``).
"""

from __future__ import annotations


class BiometricsError(Exception):
    """Base of every error raised by the biometrics package."""


class TemplateDecodeError(BiometricsError, ValueError):
    """A face template string could not be decoded."""


class FaceEngineError(BiometricsError):
    """The face engine failed."""


class EngineUnavailable(FaceEngineError):
    """face_recognition (or dlib, or its model files) cannot be imported or loaded."""


class ImageUnreadable(FaceEngineError):
    """An image could not be read or decoded."""
