"""Face templates: wire form round trips, refusals with reasons, distance, and the match decision (pure)."""

from __future__ import annotations

import base64
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from biometrics.engine import FaceMatch, match_templates
from biometrics.errors import TemplateDecodeError
from biometrics.templates import (
    DEFAULT_MATCH_THRESHOLD,
    MAX_ENCODED_LENGTH,
    TEMPLATE_SIZE,
    FaceTemplate,
    decode_template,
    distance,
    encode_template,
    is_match,
)


def template(seed: int) -> FaceTemplate:
    rng = np.random.default_rng(seed)
    return FaceTemplate.from_sequence(rng.normal(0, 0.1, TEMPLATE_SIZE))


finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def test_round_trip_is_exact() -> None:
    t = template(1)
    text = encode_template(t)
    assert text.startswith("fr1:")
    assert len(text) == MAX_ENCODED_LENGTH == 4 + 684
    back = decode_template(text)
    assert back.same_as(t)
    assert back.vector.dtype == np.float32
    assert encode_template(back) == text
    assert FaceTemplate.decode(t.encode()).same_as(t)


@given(st.lists(finite_f32, min_size=TEMPLATE_SIZE, max_size=TEMPLATE_SIZE))
def test_round_trip_any_finite_values(values: list[float]) -> None:
    t = FaceTemplate.from_sequence(values)
    assert decode_template(encode_template(t)).same_as(t)


def test_wire_form_is_little_endian_float32() -> None:
    values = (np.arange(TEMPLATE_SIZE) / 10).astype(np.float32)
    text = encode_template(FaceTemplate(values))
    raw = base64.b64decode(text[4:])
    assert raw[:8] == np.array([0.0, 0.1], dtype="<f4").tobytes()
    assert np.array_equal(np.frombuffer(raw, "<f4"), values)


def test_float64_from_face_recognition_becomes_float32() -> None:
    values = np.linspace(-0.3, 0.3, TEMPLATE_SIZE)  # face_recognition returns float64
    t = FaceTemplate.from_sequence(values)
    assert t.vector.dtype == np.float32
    assert np.allclose(t.vector, values, atol=1e-7)


def test_template_is_immutable() -> None:
    t = template(2)
    with pytest.raises(ValueError):
        t.vector[0] = 1.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fr2:" + base64.b64encode(bytes(512)).decode(), "unknown face template version 'fr2'"),
        ("xxxx" + base64.b64encode(bytes(512)).decode(), "unknown face template version"),
        ("fr1:" + base64.b64encode(bytes(508)).decode(), "characters"),
        ("fr1:" + "!" * 684, "not valid base64"),
        ("fr1:" + base64.b64encode(np.full(128, np.nan, "<f4").tobytes()).decode(), "finite"),
        ("", "characters"),
    ],
)
def test_decode_refuses_with_reason(text: str, reason: str) -> None:
    with pytest.raises(TemplateDecodeError, match=reason):
        decode_template(text)


def test_decode_refuses_non_string() -> None:
    with pytest.raises(TemplateDecodeError, match="string"):
        decode_template(b"fr1:" + bytes(684))  # type: ignore[arg-type]


def test_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="128"):
        FaceTemplate.from_sequence([0.0] * 127)


def test_distance_is_euclidean_and_symmetric() -> None:
    a = FaceTemplate(np.zeros(TEMPLATE_SIZE, np.float32))
    v = np.zeros(TEMPLATE_SIZE, np.float32)
    v[0], v[1] = 0.3, 0.4
    b = FaceTemplate(v)
    assert distance(a, b) == pytest.approx(0.5)
    assert distance(b, a) == distance(a, b)
    assert distance(a, a) == 0.0
    t1, t2 = template(3), template(4)
    assert distance(t1, t2) == pytest.approx(float(np.linalg.norm(t1.vector - t2.vector)), rel=1e-6)


def test_threshold_is_strict() -> None:
    a = FaceTemplate(np.zeros(TEMPLATE_SIZE, np.float32))
    v = np.zeros(TEMPLATE_SIZE, np.float32)
    v[0] = 0.5
    assert DEFAULT_MATCH_THRESHOLD == 0.5
    assert not is_match(a, FaceTemplate(v))
    v[0] = 0.49
    assert is_match(a, FaceTemplate(v))


def offset(base: FaceTemplate, d: float) -> FaceTemplate:
    v = base.vector.copy()
    v[0] += d
    return FaceTemplate(v)


def test_match_decision() -> None:
    me = template(5)
    candidates = {"me": offset(me, 0.3), "other": offset(me, 0.9)}
    assert match_templates([], candidates) == FaceMatch(0, None, None, "no_face")
    assert match_templates([me, me], candidates) == FaceMatch(2, None, None, "several_faces")
    assert match_templates([me], {}) == FaceMatch(1, None, None, "no_match")
    got = match_templates([me], candidates)
    assert got.person_id == "me" and got.reason is None and got.matched
    assert got.distance == pytest.approx(0.3, abs=1e-6)
    far = match_templates([me], {"other": offset(me, 0.9)})
    assert far.person_id is None and far.reason == "no_match"
    assert far.distance == pytest.approx(0.9, abs=1e-6)
    assert match_templates([me], candidates, threshold=0.2).reason == "no_match"


def test_importing_biometrics_loads_no_heavy_library() -> None:
    code = (
        "import sys, biometrics, biometrics.engine; "
        "print(sorted(m for m in ('face_recognition', 'dlib', 'cv2', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
