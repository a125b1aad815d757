"""Classical face-swap speed per stage: detect, warp, colour, mask, blend.

Usage:  python benchmarks/swap.py [--repeat 5]

Runs on scikit-image's astronaut put onto a mirrored, rotated, tinted copy of itself at 512 px and
at ~1 MP (both images upscaled 2×), plus a real pair from ../shared/faces when that folder exists.
Prints median milliseconds; "fusion" is everything after detection (target ≤ 500 ms per face at
512 px).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from easyphoto import FaceAnalyzer, load_image  # noqa: E402
from easyphoto.face.fusion import fuse_face  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces"
STAGES = ("warp", "colour", "mask", "blend")


def _template_from(image: np.ndarray) -> np.ndarray:
    img = image[:, ::-1].copy()
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.8)
    img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(img.astype(np.float32) * np.array([0.8, 0.9, 1.15]), 0, 255).astype(np.uint8)


def _bench(analyzer: FaceAnalyzer, template: np.ndarray, source: np.ndarray, repeat: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in ("detect", *STAGES, "fusion", "total")}
    for _ in range(repeat + 1):  # the first run warms caches (scipy import, models) and is dropped
        t0 = time.perf_counter()
        t_face, s_face = analyzer.largest(template), analyzer.largest(source)
        t1 = time.perf_counter()
        result = fuse_face(template, t_face, source, s_face, 1.0)
        t2 = time.perf_counter()
        runs["detect"].append(t1 - t0)
        for k in STAGES:
            runs[k].append(result.timings.get(k, 0.0))
        runs["fusion"].append(t2 - t1)
        runs["total"].append(t2 - t0)
    return {k: 1000 * statistics.median(v[1:]) for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from skimage import data

    analyzer = FaceAnalyzer().load()
    astro = data.astronaut()
    cases = [
        ("astronaut 512x512", _template_from(astro), astro),
        (
            "astronaut 1024x1024",
            cv2.resize(_template_from(astro), (1024, 1024), interpolation=cv2.INTER_CUBIC),
            cv2.resize(astro, (1024, 1024), interpolation=cv2.INTER_CUBIC),
        ),
    ]
    if (SHARED / "identities").is_dir():
        tpl = load_image(SHARED / "identities" / "pyfeat_f13" / "15-f13-anc-ph.jpg")
        src = load_image(SHARED / "identities" / "obama" / "obama.jpg")
        cases.append((f"real {tpl.shape[1]}x{tpl.shape[0]} <- {src.shape[1]}x{src.shape[0]}", tpl, src))

    print(
        f"# swap benchmark: {platform.processor() or platform.machine()}, OMP_NUM_THREADS=1, "
        f"median of {args.repeat} (ms)"
    )
    cols = ("detect", *STAGES, "fusion", "total")
    print(f"| case | {' | '.join(cols)} |")
    print("| --- |" + " ---: |" * len(cols))
    for name, template, source in cases:
        r = _bench(analyzer, template, source, args.repeat)
        print(f"| {name} | " + " | ".join(f"{r[c]:.0f}" for c in cols) + " |")
    print("detect = HOG + 68 landmarks on both images; fusion = warp + colour + mask + blend (+ overhead)")


if __name__ == "__main__":
    main()
