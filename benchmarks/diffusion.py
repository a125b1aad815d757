"""Diffusion core benchmark: load time, one UNet step, a 20-step inpaint with three ControlNets at 512 px.

Usage::

    python benchmarks/diffusion.py                       # tiny random model (built in a temp folder)
    python benchmarks/diffusion.py --full-size DIR       # real SD1.5 architecture, random weights
                                                         # (built into DIR if missing: ~10 GB)

On a CPU the full-size pipeline runs ``--steps`` denoising steps (default 1) and the 20-step time is
extrapolated as ``pipeline(steps) + (20 - steps) × one UNet+ControlNet step``; the output says so.
Peak memory is the process' peak RSS (``resource.getrusage``). torch uses ``--threads`` threads (1).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import add_model_args, ensure_model, peak_rss_gb

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONTROLNETS = ["canny", "openpose", "color"]
TARGET_STEPS = 20


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(model_dir: Path, label: str, size: int, steps: int, device: str | None) -> dict[str, object]:
    import numpy as np
    import torch
    from PIL import Image

    from easyphoto.config import ModelConfig
    from easyphoto.diffusion.controls import canny_image, color_image
    from easyphoto.diffusion.models import ModelCache

    row: dict[str, object] = {"model": label}
    start = time.perf_counter()
    cache = ModelCache(ModelConfig(base_model=str(model_dir), local_files_only=True), device=device)
    pipe = cache.inpaint_controlnet(CONTROLNETS)
    row["load_s"] = time.perf_counter() - start
    row["rss_after_load_gb"] = peak_rss_gb()
    dev, dtype = cache.device, cache.dtype

    # Inputs: a smooth picture with a face-sized disc, a square mask over the disc.
    y, x = np.mgrid[0:size, 0:size]
    pic = np.stack([x * 255 // size, y * 255 // size, 255 - x * 128 // size], axis=2).astype(np.uint8)
    pic[(x - size // 2) ** 2 + (y - size // 2) ** 2 < (size // 4) ** 2] = (230, 180, 150)
    image = Image.fromarray(pic)
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    controls = [Image.fromarray(canny_image(pic)), image, Image.fromarray(color_image(pic))]

    # One UNet step with classifier-free guidance (batch 2), then UNet + 3 ControlNets.
    latent = torch.randn(2, 4, size // 8, size // 8, dtype=dtype, device=dev)
    cond = torch.randn(2, 77, cache.text_encoder.config.hidden_size, dtype=dtype, device=dev)
    t = torch.tensor(500, device=dev)
    hint = torch.rand(2, 3, size, size, dtype=dtype, device=dev)
    nets = [cache.controlnet(n) for n in CONTROLNETS]

    def unet_step():
        with torch.inference_mode():
            return cache.unet(latent, t, encoder_hidden_states=cond).sample

    def control_step():
        with torch.inference_mode():
            down, mid = None, None
            for net in nets:
                d, m = net(latent, t, encoder_hidden_states=cond, controlnet_cond=hint, return_dict=False)
                down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
                mid = m if mid is None else mid + m
            return cache.unet(
                latent,
                t,
                encoder_hidden_states=cond,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample

    repeat = 3 if label == "tiny" else 1
    row["unet_step_s"], _ = timed(unet_step, repeat)
    row["control_step_s"], _ = timed(control_step, repeat)

    def inpaint():
        return pipe(
            "easyphoto_face, easyphoto, 1person, best quality",
            negative_prompt="lowres, blurry",
            image=image,
            mask_image=mask,
            control_image=controls,
            controlnet_conditioning_scale=[0.5, 0.5, 0.85],
            num_inference_steps=steps,
            strength=1.0,
            guidance_scale=7.0,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(0),
        ).images[0]

    row["pipeline_steps"] = steps
    row["pipeline_s"], result = timed(inpaint)
    if steps >= TARGET_STEPS:
        row["inpaint20_s"], row["extrapolated"] = row["pipeline_s"], False
    else:
        row["inpaint20_s"] = row["pipeline_s"] + (TARGET_STEPS - steps) * row["control_step_s"]
        row["extrapolated"] = True
    row["peak_rss_gb"] = peak_rss_gb()
    row["device"] = f"{dev} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} thread(s)"
    row["loads"] = dict(cache.load_count)
    row["image"] = result
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (512)")
    parser.add_argument("--steps", type=int, default=None, help="pipeline steps (tiny: 20, full-size: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default=None, help="cpu / cuda / mps (auto)")
    parser.add_argument("--save", type=Path, default=None, help="save the inpainted image here (PNG)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    full = args.full_size is not None
    model_dir, build_s, _keep = ensure_model(args)
    steps = args.steps or (1 if full else TARGET_STEPS)
    row = run(model_dir, "full-size" if full else "tiny", args.size, steps, args.device)
    if args.save:
        row["image"].save(args.save)

    print(f"\nEasyPhoto diffusion benchmark — {row['device']}, {args.size}×{args.size} px, CFG 7 (batch 2)")
    print(f"ControlNets: {', '.join(CONTROLNETS)}; weight loads: {row['loads']}\n")
    header = (
        "| model | build s | load s | UNet step s | UNet+3 CN step s | "
        f"inpaint {TARGET_STEPS} steps s | peak RSS GB |"
    )
    print(header)
    print("|" + "---|" * 7)
    inpaint = f"{row['inpaint20_s']:.1f}" + (" (extrapolated)" if row["extrapolated"] else "")
    build = f"{build_s:.1f}" if build_s is not None else "(existing)"
    print(
        f"| {row['model']} | {build} | {row['load_s']:.2f} | {row['unet_step_s']:.3f} | "
        f"{row['control_step_s']:.3f} | {inpaint} | {row['peak_rss_gb']:.2f} |"
    )
    if row["extrapolated"]:
        print(
            f"\nThe pipeline ran {row['pipeline_steps']} step(s) in {row['pipeline_s']:.1f} s (text "
            f"encoding, VAE encode/decode included); {TARGET_STEPS} steps ≈ that + "
            f"{TARGET_STEPS - row['pipeline_steps']} × the UNet+3 ControlNet step."
        )


if __name__ == "__main__":
    main()
