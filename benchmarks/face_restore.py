"""Face restoration cost: GFPGAN v1.4 (full size, random weights) on one face, and the blend back.

    python benchmarks/face_restore.py [--repeat 3] [--device cpu|cuda]

Prints the network's time per 512×512 face, the whole ``restore_faces`` call on a 1 MP and a 4 MP
portrait (alignment, network, inverse warp, feathered blend) and the peak memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_gb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import cv2
    import torch
    from skimage import data

    from easyphoto.diffusion.face_restore import GFPGAN, restore_faces
    from easyphoto.face.analyzer import FaceAnalyzer
    from easyphoto.stages.generate.restore import five_points

    torch.set_num_threads(1)
    t = time.perf_counter()
    net = GFPGAN().eval().to(args.device)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"build: {time.perf_counter() - t:.1f} s, {params:.1f} M parameters, device {args.device}")
    x = torch.rand(1, 3, 512, 512, device=args.device) * 2 - 1
    best = 1e9
    with torch.no_grad():
        for _ in range(args.repeat):
            t = time.perf_counter()
            net(x)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    print(f"network, one 512 px face: {best:.2f} s (best of {args.repeat})")
    analyzer = FaceAnalyzer()
    for side in (1024, 2048):
        image = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
        points = five_points(analyzer.largest(image))
        t = time.perf_counter()
        restore_faces(net, image, [points], 0.5, args.device)
        took = time.perf_counter() - t
        print(f"restore_faces on {side}x{side}: {took:.2f} s, peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
