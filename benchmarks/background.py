"""Background replacement's own costs: the person mask and the composite at 1, 4 and 16 MP.

    python benchmarks/background.py [--repeat 3]

Prints, per size: the network (a 256×256 copy, so flat), the guided filter (on a ≤ 1024 px copy,
also flat), scaling the mask to full size, the composite, and the process's peak memory after each
size. The diffusion passes of ``restore`` / ``replace`` (painted) are SD1.5 passes at the work size
and are measured with the portrait in ``benchmarks/generate.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_gb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import cv2
    from skimage import data

    from easyphoto.face.person import PersonSegmenter, person_mask
    from easyphoto.stages.generate.background import composite

    t = time.perf_counter()
    seg = PersonSegmenter()
    print(f"model load: {1000 * (time.perf_counter() - t):.0f} ms")
    base = data.astronaut()
    print(f"{'size':>12} {'MP':>5} {'network':>8} {'mask':>8} {'composite':>9} {'peak GB':>8}  (ms, best)")
    for side in (1024, 2048, 4096):
        image = cv2.resize(base, (side, side), interpolation=cv2.INTER_CUBIC)
        backdrop = np.full_like(image, (40, 160, 60))
        best = {"network": 1e9, "mask": 1e9, "composite": 1e9}
        for _ in range(args.repeat):
            t = time.perf_counter()
            seg.raw(image)
            best["network"] = min(best["network"], time.perf_counter() - t)
            t = time.perf_counter()
            alpha = person_mask(image, seg)
            best["mask"] = min(best["mask"], time.perf_counter() - t)
            t = time.perf_counter()
            composite(image, alpha, backdrop)
            best["composite"] = min(best["composite"], time.perf_counter() - t)
        ms = {k: 1000 * v for k, v in best.items()}
        print(
            f"{side:>5}x{side:<6} {side * side / 1e6:>5.1f} {ms['network']:>8.0f} {ms['mask']:>8.0f} "
            f"{ms['composite']:>9.0f} {peak_rss_gb():>8.2f}"
        )


if __name__ == "__main__":
    main()
