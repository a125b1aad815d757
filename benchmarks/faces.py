"""Face-analysis speed: model load, and per-image load / detect / landmarks / embedding.

Usage:  python benchmarks/faces.py [--repeat 5] [--threads 1]

Runs on scikit-image's astronaut (512 px) and an upscaled 1 MP copy, plus real photos from
../shared/faces when that folder exists. Prints a table of median milliseconds.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from easyphoto import FaceAnalyzer, load_image  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _jpeg_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from skimage import data

    t0 = time.perf_counter()
    analyzer = FaceAnalyzer().load()
    load_ms = (time.perf_counter() - t0) * 1000

    astro = data.astronaut()
    cases: list[tuple[str, bytes]] = [
        ("astronaut 512x512", _jpeg_bytes(astro)),
        ("astronaut 1024x1024 (1 MP)", _jpeg_bytes(cv2.resize(astro, (1024, 1024)))),
    ]
    if SHARED.is_dir():
        for rel in ("identities/obama/obama.jpg", "misc/obama-1080p.jpg", "groups/six_people.jpg"):
            path = SHARED / rel
            if path.exists():
                img = load_image(path)
                cases.append((f"{path.name} {img.shape[1]}x{img.shape[0]}", path.read_bytes()))

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(f"model load (HOG + 68/5-point predictors + ResNet descriptor): {load_ms:.0f} ms")
    cols = ("faces", "load", "detect", "lmk/face", "emb/face", "total")
    header = f"{'image':34s} " + " ".join(f"{c:>8s}" for c in cols)
    print(header)
    print("-" * len(header))
    for label, blob in cases:
        image = load_image(blob)
        t_load = _median_ms(lambda b=blob: load_image(b), args.repeat)
        t_detect = _median_ms(lambda im=image: analyzer._hog_pass(im), args.repeat)
        faces = analyzer.detect(image)
        if faces:
            f = faces[0]
            t_lmk = _median_ms(lambda im=image, b=f.box: analyzer.backend.landmarks(im, b), args.repeat)
            t_emb = _median_ms(lambda im=image, b=f.box: analyzer.backend.embed(im, b, 1), args.repeat)
        else:
            t_lmk = t_emb = 0.0
        total = t_load + t_detect + len(faces) * (t_lmk + t_emb)
        print(
            f"{label:34s} {len(faces):8d} "
            + " ".join(f"{v:8.1f}" for v in (t_load, t_detect, t_lmk, t_emb, total))
        )
    print(
        "(milliseconds, median of",
        args.repeat,
        "runs; total = load + detect + faces x (landmarks + embedding))",
    )


if __name__ == "__main__":
    sys.exit(main())
