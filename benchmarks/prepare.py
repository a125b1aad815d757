"""Seconds per photo of training-photo preparation at ~1 MP on one core, split by step.

    OMP_NUM_THREADS=1 python benchmarks/prepare.py [--faces ../shared/faces] [--repeat 2]

Photos: every single-person photo of ``faces/identities`` resized to ~1 megapixel (written as JPEG to
a temporary folder), prepared with retouching on. Model loading is excluded (done before timing).
The detect step is split into HOG detection and the 68 landmarks by timing the landmark predictor
separately on the same boxes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from easyphoto import FaceAnalyzer, load_image  # noqa: E402
from easyphoto.config import PrepareConfig  # noqa: E402
from easyphoto.stages.prepare import prepare  # noqa: E402

STEPS = ["load", "detect", "landmarks", "embed", "quality", "crop", "select", "mask", "retouch", "write"]


def make_1mp(src_dir: Path, dst: Path) -> list[Path]:
    out = []
    for path in sorted(src_dir.glob("*/*")):
        img = load_image(path)
        h, w = img.shape[:2]
        s = (1_000_000 / (h * w)) ** 0.5
        img = cv2.resize(
            img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
        )
        target = dst / f"{path.parent.name}_{path.stem}.jpg"
        Image.fromarray(img).save(target, quality=92)
        out.append(target)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "faces")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    analyzer = FaceAnalyzer().load()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        photos = make_1mp(args.faces / "identities", tmpd)
        mp = np.mean([np.prod(load_image(p).shape[:2]) / 1e6 for p in photos])
        # Every identity is different: relax the identity rule so every photo goes all the way through.
        cfg = PrepareConfig(retouch=True, identity_threshold=10.0, max_photos=100, min_photos=1)
        totals: dict[str, float] = {}
        walls = []
        for r in range(args.repeat):
            t = time.perf_counter()
            prepared = prepare(photos, tmpd / f"out{r}", cfg, analyzer=analyzer)
            walls.append(time.perf_counter() - t)
            for k, v in prepared.timings.items():
                totals[k] = totals.get(k, 0.0) + v / args.repeat
        kept = len(prepared.kept)
        # Landmarks: time the 68-point predictor alone on each detected box; subtract from detect.
        lm_total = 0.0
        for p in photos:
            img = load_image(p)
            for face in analyzer.detect(img):
                t = time.perf_counter()
                analyzer.backend.landmarks(img, face.box)
                lm_total += time.perf_counter() - t
        totals["landmarks"] = lm_total
        totals["detect"] = totals.get("detect", 0.0) - lm_total
    n = len(photos)
    print(f"{n} photos at {mp:.2f} MP mean, {kept} kept and fully processed, one core, model load excluded")
    print(f"{'step':<10} {'s/photo':>8} {'share':>7}   (per-kept-photo steps divided by all photos)")
    total = sum(totals.get(s, 0.0) for s in STEPS)
    for step in STEPS:
        v = totals.get(step, 0.0)
        print(f"{step:<10} {v / n:>8.3f} {v / total:>7.1%}")
    print(f"{'total':<10} {total / n:>8.3f}")
    print(f"{'wall':<10} {min(walls) / n:>8.3f}   (best of {args.repeat} runs, s/photo)")
    if kept:
        per_kept = {s: totals.get(s, 0.0) / kept for s in ("crop", "mask", "retouch", "write")}
        print("per kept photo: " + ", ".join(f"{k} {v:.3f}" for k, v in per_kept.items()))


if __name__ == "__main__":
    main()
