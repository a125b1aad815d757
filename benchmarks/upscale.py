"""Super-resolution speed and memory: Real-ESRGAN's RRDBNet at its real size (random weights), tiled.

    python benchmarks/upscale.py [--sizes 1 4 16] [--scales 2 4] [--tile 512] [--overlap 16] [--device cpu]

Each (scale, size) runs in a fresh process, so its peak RSS is its own: the network (16.7 M parameters,
67 MB in float32), one tile's activations, one band of tiles in float32 and the uint8 output. A row
"untiled" runs the whole picture as one ×2 tile, for comparison. The input is a real photo (the
astronaut) enlarged to the size asked for; the weights are random, so only time and memory mean
anything. Prints a Markdown table for benchmarks/README.md.

On a CPU the real network costs ~4 min per input megapixel at ×2 (~40 GFLOP/s on one core; 4.5 T
multiply-adds per megapixel) and ~4× that at ×4, so ``--real-tiles K`` (default 2) runs only the last
K tiles through the network and the others through a nearest-neighbour stand-in of the same output
shape: the tiling, blending and output buffers run in full (memory measured), the network's time is
per measured tile × tiles (extrapolated; all tiles have the same size up to rounding). 0: all real.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(scale: int, mp: float, tile: int, overlap: int, device: str, real_tiles: int) -> dict:
    """Upscale a ``mp``-megapixel picture ``scale`` × in this process; timings and peak memory."""
    import cv2
    import numpy as np
    import torch
    from common import peak_rss_gb
    from skimage import data

    from easyphoto.diffusion import upscale as up
    from easyphoto.diffusion.upscale import RRDBNet, upscale_image

    real_run, net_s, calls = up._run, [], []

    def run(net, part, device, dtype):  # noqa: ANN001, ANN202
        calls.append(1)
        # The real tiles are the last ones: their activations then sit beside the (almost) whole output.
        if real_tiles and len(calls) <= n_tiles - real_tiles:
            return np.repeat(np.repeat(part, net.scale, 0), net.scale, 1).astype(np.float32)
        t = time.perf_counter()
        res = real_run(net, part, device, dtype)
        net_s.append(time.perf_counter() - t)
        return res

    up._run = run

    torch.set_num_threads(1)
    side = int(round((mp * 1e6) ** 0.5))
    picture = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    torch.manual_seed(0)
    net = RRDBNet(scale=scale).eval()
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    net = net.to(device, dtype)
    padded = [v + (-v % net.fold) for v in picture.shape[:2]]
    n_tiles = (len(up._cells(padded[0], tile, net.fold)) - 1) * (
        len(up._cells(padded[1], tile, net.fold)) - 1
    )
    base = peak_rss_gb()
    tiles: list[int] = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = upscale_image(
        net,
        picture,
        tile=tile,
        overlap=overlap,
        device=device,
        dtype=dtype,
        on_tile=lambda k, n: tiles.append(n),
    )
    wall = time.perf_counter() - t0
    per_tile = sum(net_s) / len(net_s)
    seconds = wall - sum(net_s) + per_tile * tiles[-1]  # the stand-in tiles cost ~0: replaced by the net's
    row = {
        "scale": scale, "mp": round(side * side / 1e6, 2), "side": side, "out": list(out.shape[:2]),
        "tile": tile, "tiles": tiles[-1], "real_tiles": len(net_s), "s_per_tile": round(per_tile, 1),
        "seconds": round(seconds, 1), "s_per_mp": round(seconds / mp, 1),
        "rss_before_gb": round(base, 2), "peak_rss_gb": round(peak_rss_gb(), 2),
        "output_mb": round(out.nbytes / 1e6), "finite": bool(np.isfinite(out).all()),
    }  # fmt: skip
    if device.startswith("cuda"):
        row["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16], help="input megapixels")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--untiled", type=float, default=1.0, help="also run this size as one tile (0: no)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--real-tiles", type=int, default=2, help="tiles run through the network (0: all)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        scale, mp, tile = json.loads(args.one)
        print(json.dumps(one(scale, mp, tile, args.overlap, args.device, args.real_tiles)))
        return
    runs = [(s, mp, args.tile) for s in args.scales for mp in args.sizes]
    if args.untiled:
        runs += [(2, args.untiled, 100_000)]  # ×2 only: ×4 untiled needs > 10 GB at 1 MP
    head = ["scale", "input MP", "output", "tiles (through the net)", "s per tile", "time s",
            "s per input MP", "RSS before / peak GB", "output MB"]  # fmt: skip
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for scale, mp, tile in runs:
        cmd = [sys.executable, __file__, "--one", json.dumps([scale, mp, tile]),
               "--overlap", str(args.overlap), "--device", args.device,
               "--real-tiles", str(args.real_tiles)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| ×{scale} | {mp} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        untiled = tile >= 100_000
        tiles = "1 (untiled)" if untiled else f"{r['tiles']} of ≤ {tile} px ({r['real_tiles']})"
        time_s = f"{r['seconds']}" + ("" if r["real_tiles"] == r["tiles"] else " (extrapolated)")
        vram = f", VRAM {r['peak_vram_gb']}" if "peak_vram_gb" in r else ""
        rss = f"{r['rss_before_gb']} / {r['peak_rss_gb']}{vram}"
        cells = [f"×{scale}", r["mp"], f"{r['out'][1]}×{r['out'][0]}", tiles, r["s_per_tile"], time_s,
                 r["s_per_mp"], rss, r["output_mb"]]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
