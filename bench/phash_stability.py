"""Perceptual hash of evidence photos: how stable under re-encoding, rescaling and re-captioning, how far apart for
different photos and for frames of one video, as the server would hash them (biometrics.phash).

    .venv/bin/python bench/phash_stability.py [--faces ../shared/testdata/faces]

Every photo of the shared faces (people folders and multi/) and of simulators/data/faces is letterboxed into a
640x480 camera frame and made into an evidence JPEG (agent.photos.evidence_jpeg, a 3-line caption); then:

- **same photo**: that JPEG re-encoded (quality 50, 70, 95), rescaled (0.5x, 0.75x, 1.5x), re-captioned (another
  time and place), cropped by 8 px at the top left; Hamming distance to the original's hash;
- **different photos**: every pair of different source photos;
- **one video**: frames of ../shared/testdata/faces/video/short_hamilton_clip.mp4 (640x360) 1, 2 and 4 s apart.
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from biometrics.phash import hamming, phash  # noqa: E402

FACES = ROOT.parent / "shared" / "testdata" / "faces"
DEMO = ROOT / "simulators" / "data" / "faces"
CAPTION_A = ["school 3711020000000001  terminal 3711020000000009", "coach 3711020000000101  student 3711020000000201",
             "2026-11-28T08:15:00Z  35.416000,119.527000"]  # fmt: skip
CAPTION_B = ["school 3711020000000001  terminal 3711020000000009", "coach 3711020000000101  student 3711020000000202",
             "2026-11-29T16:45:30Z  35.398211,119.533704"]  # fmt: skip


def camera_frame(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as opened:
        im = opened.convert("RGB")
    im.thumbnail((640, 480))
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(im, ((640 - im.width) // 2, (480 - im.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def jpeg_rgb(data: bytes) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def variants(evidence: bytes, rgb: Any) -> dict[str, Any]:
    from PIL import Image

    from agent.photos import evidence_jpeg

    out: dict[str, Any] = {}
    with Image.open(io.BytesIO(evidence)) as opened:
        im = opened.convert("RGB")
        for q in (50, 70, 95):
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=q)
            out[f"re-encoded q{q}"] = jpeg_rgb(buf.getvalue())
        for f in (0.5, 0.75, 1.5):
            buf = io.BytesIO()
            size = (round(im.width * f), round(im.height * f))
            im.resize(size, Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
            out[f"rescaled {f}x"] = jpeg_rgb(buf.getvalue())
        buf = io.BytesIO()
        im.crop((8, 8, im.width, im.height)).save(buf, "JPEG", quality=80)
        out["cropped 8 px"] = jpeg_rgb(buf.getvalue())
    out["re-captioned"] = jpeg_rgb(evidence_jpeg(rgb, CAPTION_B))
    return out


def measure(faces: Path) -> dict[str, Any]:
    import cv2
    import numpy as np

    from agent.photos import evidence_jpeg

    sources = sorted(p for p in faces.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sources += sorted(p for p in DEMO.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    hashes: dict[str, int] = {}
    same: dict[str, list[int]] = {}
    for path in sources:
        rgb = camera_frame(path)
        evidence = evidence_jpeg(rgb, CAPTION_A)
        h = phash(jpeg_rgb(evidence))
        hashes[str(path)] = h
        for label, img in variants(evidence, rgb).items():
            same.setdefault(label, []).append(hamming(h, phash(img)))
    different = [hamming(a, b) for a, b in itertools.combinations(hashes.values(), 2)]
    # frames of one video, as evidence photos
    clip: dict[str, list[int]] = {}
    cap = cv2.VideoCapture(str(faces / "video" / "short_hamilton_clip.mp4"))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    cap.release()
    clip_hashes = [phash(jpeg_rgb(evidence_jpeg(f, CAPTION_A))) for f in frames]
    for seconds in (1, 2, 4):
        step = round(seconds * 29.97)
        clip[f"{seconds} s apart"] = [hamming(clip_hashes[i], clip_hashes[i + step])
                                      for i in range(0, len(frames) - step, 5)]  # fmt: skip
    return {"sources": len(sources), "same": same, "different": different, "clip": clip}


def _s(values: list[int]) -> str:
    return f"min {min(values)}, median {statistics.median(values):g}, max {max(values)} (n={len(values)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--faces", type=Path, default=FACES)
    args = ap.parse_args()
    if not (args.faces / "PROVENANCE.md").is_file():
        sys.exit(f"face test data not found: {args.faces}")
    r = measure(args.faces)
    print(f"{r['sources']} source photos; Hamming distance of 64-bit pHash")
    for label, values in r["same"].items():
        print(f"same photo, {label:<16} {_s(values)}")
    print(f"different photos            {_s(r['different'])}")
    for label, values in r["clip"].items():
        print(f"one video, frames {label:<10} {_s(values)}")


if __name__ == "__main__":
    main()
