"""Face verification accuracy on ../shared/testdata/faces: genuine/impostor distances, FAR and FRR at the threshold,
how small an error rate this data can demonstrate, and liveness per camera-simulator mode.

    .venv/bin/python bench/face_accuracy.py [--faces ../shared/testdata/faces] [--no-modes] [--json]

- **Photos**: every photo of the people folders (see the folder's PROVENANCE.md) encoded by
  :class:`biometrics.FaceEngine` as the server enrols (full size) and as the terminal sees (long side 640 px);
  every unordered pair is a trial (genuine: same folder; impostor: different folders).
- **Video**: frames 82-212 of ``video/short_hamilton_clip.mp4`` (Lin-Manuel Miranda facing the camera), every 4th,
  each against every photo: against his own photo genuine, against the others impostor. Frames of one clip are not
  independent trials (counted, and said so).
- **multi/**: the faces found in each picture (they must be refused as ``several_faces``; not scored as pairs).
- **Modes**: each :data:`simulators.camera.CAMERA_MODES` scene (shipped demo faces) against
  :class:`agent.identity.IdentityChecker` with liveness enforced, for both challenges.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from biometrics.accuracy import ErrorRates, error_rates, pair_distances, trials_needed  # noqa: E402
from biometrics.templates import DEFAULT_MATCH_THRESHOLD, FaceTemplate, distance  # noqa: E402

FACES = ROOT.parent / "shared" / "testdata" / "faces"
PEOPLE = ("obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire", "lin_manuel_miranda")
CLIP = Path("video") / "short_hamilton_clip.mp4"
CLIP_FACE_SEGMENT = (82, 213)
CLIP_STRIDE = 4
TERMINAL_SIDE = 640


def _shrunk(rgb: Any, side: int) -> Any:
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= side:
        return rgb
    f = side / max(h, w)
    return np.asarray(Image.fromarray(rgb).resize((round(w * f), round(h * f)), Image.Resampling.BOX))


def photo_templates(engine: Any, faces: Path, side: int | None) -> tuple[dict[str, list[FaceTemplate]], list[str]]:
    """person → one template per photo with exactly one face; and the photos refused (0 or several faces)."""
    out: dict[str, list[FaceTemplate]] = {}
    refused = []
    for person in PEOPLE:
        for path in sorted((faces / person).iterdir()):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            rgb = engine.load_image(path)
            found = engine.encode(rgb if side is None else _shrunk(rgb, side))
            if len(found) == 1:
                out.setdefault(person, []).append(found[0])
            else:
                refused.append(f"{person}/{path.name}: {len(found)} faces")
    return out, refused


def clip_distances(engine: Any, faces: Path, photos: dict[str, list[FaceTemplate]]) -> dict[str, Any]:
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(faces / CLIP))
    genuine: list[float] = []
    impostor: list[float] = []
    frames, with_face = 0, 0
    try:
        k = 0
        while True:
            ok, bgr = cap.read()
            if not ok or k >= CLIP_FACE_SEGMENT[1]:
                break
            if k >= CLIP_FACE_SEGMENT[0] and (k - CLIP_FACE_SEGMENT[0]) % CLIP_STRIDE == 0:
                frames += 1
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                found = engine.encode(rgb)
                if len(found) == 1:
                    with_face += 1
                    for person, ts in photos.items():
                        for t in ts:
                            (genuine if person == "lin_manuel_miranda" else impostor).append(distance(found[0], t))
            k += 1
    finally:
        cap.release()
    return {"frames": frames, "frames_with_one_face": with_face, "genuine": sorted(genuine),
            "impostor": sorted(impostor)}  # fmt: skip


def multi_faces(engine: Any, faces: Path) -> dict[str, int]:
    return {p.name: len(engine.locate(engine.load_image(p))) for p in sorted((faces / "multi").iterdir())
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")}  # fmt: skip


def camera_modes(engine: Any) -> list[dict[str, Any]]:
    from agent.camera import SnapshotCamera
    from agent.identity import IdentityChecker
    from simulators.camera import CAMERA_MODES, CameraSimulator, demo_mode, load_demo_people

    enrolled = {pid: engine.encode(engine.load_image(p["enrol"]))[0] for pid, p in load_demo_people().items()}
    rows = []
    with CameraSimulator(["cabin"]) as sim:
        for mode in CAMERA_MODES:
            for challenge in ("head_turn", "blink"):
                scene, person = demo_mode(mode)
                sim.set_scene("cabin", **scene)
                interval = 0.125 if scene.get("advance") != "request" else 0.0
                checker = IdentityChecker(SnapshotCamera(sim.snapshot_url("cabin")), engine, DEFAULT_MATCH_THRESHOLD,
                                          liveness="enforce", challenges=[challenge], interval=interval)  # fmt: skip
                o: Any = checker.check({person: enrolled[person]})
                rows.append({"mode": mode, "challenge": challenge, "expected_person": person, "result": o.result,
                             "matched": o.person, "distance": None if o.distance is None else round(o.distance, 3),
                             "liveness": None if o.liveness is None else (o.liveness.reason or "passed")})  # fmt: skip
    return rows


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def _rates(r: ErrorRates) -> str:
    return (f"FRR {r.false_rejects}/{r.genuine_pairs} = {r.frr:.1%} (95 % bound {r.frr_upper_95:.1%}); "
            f"FAR {r.false_accepts}/{r.impostor_pairs} = {r.far:.2%} (95 % bound {r.far_upper_95:.1%})")  # fmt: skip


def measure(faces: Path, *, modes: bool = True, threshold: float = DEFAULT_MATCH_THRESHOLD) -> dict[str, Any]:
    from biometrics.accuracy import PairDistances
    from biometrics.engine import FaceEngine

    engine = FaceEngine()
    report: dict[str, Any] = {"threshold": threshold, "faces": str(faces)}
    for label, side in (("photos_full", None), ("photos_640", TERMINAL_SIDE)):
        photos, refused = photo_templates(engine, faces, side)
        pairs = pair_distances(photos)
        r = error_rates(pairs, threshold)
        report[label] = {"people": len(photos), "photos": sum(len(v) for v in photos.values()), "refused": refused,
                         "genuine": pairs.genuine, "impostor": pairs.impostor, "rates": r.__dict__,
                         "frr_upper_95": r.frr_upper_95, "far_upper_95": r.far_upper_95}  # fmt: skip
        if side is None:
            full = photos
    clip = clip_distances(engine, faces, full)
    r = error_rates(PairDistances(clip["genuine"], clip["impostor"]), threshold)
    report["clip"] = {**clip, "rates": r.__dict__, "frr_upper_95": r.frr_upper_95, "far_upper_95": r.far_upper_95}
    report["multi"] = multi_faces(engine, faces)
    report["needed"] = {"far_0.01%": trials_needed(1e-4), "frr_1%": trials_needed(1e-2)}
    if modes:
        report["modes"] = camera_modes(engine)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--faces", type=Path, default=FACES)
    ap.add_argument("--threshold", type=float, default=DEFAULT_MATCH_THRESHOLD)
    ap.add_argument("--no-modes", dest="modes", action="store_false")
    ap.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    args = ap.parse_args()
    if not (args.faces / "PROVENANCE.md").is_file():
        sys.exit(f"face test data not found: {args.faces}")
    report = measure(args.faces, modes=args.modes, threshold=args.threshold)
    if args.json:
        print(json.dumps(report))
        return
    print(f"threshold {report['threshold']}  (min / median / max distances)")
    for label in ("photos_full", "photos_640"):
        part = report[label]
        r = ErrorRates(**part["rates"])
        print(f"{label}: {part['people']} people, {part['photos']} photos (refused: {part['refused'] or 'none'})")
        print(f"  genuine {_summary(part['genuine'])}; impostor {_summary(part['impostor'])}")
        print(f"  {_rates(r)}")
    clip = report["clip"]
    r = ErrorRates(**clip["rates"])
    print(f"clip: {clip['frames_with_one_face']}/{clip['frames']} frames with one face; genuine "
          f"{_summary(clip['genuine'])}; impostor {_summary(clip['impostor'])}")  # fmt: skip
    print(f"  {_rates(r)} (frames of one clip: not independent trials)")
    print(f"multi: faces found {report['multi']}")
    print(f"error-free independent trials needed: FAR < 0.01 %: {report['needed']['far_0.01%']:,} impostor pairs; "
          f"FRR < 1 %: {report['needed']['frr_1%']:,} genuine pairs")  # fmt: skip
    for row in report.get("modes", []):
        print(f"mode {row['mode']:<19} {row['challenge']:<9} → {row['result']:<13} matched {row['matched']} "
              f"distance {row['distance']} liveness {row['liveness']}")  # fmt: skip


if __name__ == "__main__":
    main()
