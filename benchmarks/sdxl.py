"""Text-to-photo's SDXL template: build, load, one UNet step, a whole template; tiny or full-size random.

Usage::

    python benchmarks/sdxl.py                          # tiny random SDXL (built in a temp folder), 1024 px
    python benchmarks/sdxl.py --full-size DIR          # SDXL base's architecture, random weights
                                                       # (built into DIR if missing: ~9.5 GB, float16)
    python benchmarks/sdxl.py --full-size DIR --size 512 --steps 1 --pose

The template is rendered with ``--steps`` steps (tiny: 30, the default of ``Text2PhotoConfig``;
full-size: 1) and the 30-step time is extrapolated as ``template(steps) + (30 - steps) × one UNet
step`` (with the pose ControlNet: UNet + ControlNet); the output says so. CFG 7 (a batch of 2 per step).
Peak memory is the process' peak RSS. torch uses ``--threads`` threads (1). Prints one Markdown row.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import peak_rss_gb

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_STEPS = 30


def _complete(folder: Path) -> bool:
    weights = "diffusion_pytorch_model.safetensors"
    return (folder / "model_index.json").is_file() and (
        folder / "controlnet" / "openpose" / weights
    ).is_file()


def _unet_step(cache, size: int, pose: bool) -> float:
    """One CFG step (batch 2) of the UNet, with the openpose ControlNet when ``pose``, in seconds."""
    import torch

    unet, dev, dt = cache.components()["unet"], cache.device, cache.dtype
    cfg = unet.config
    latent = torch.randn(2, 4, size // 8, size // 8, device=dev, dtype=dt)
    cond = torch.randn(2, 77, cfg.cross_attention_dim, device=dev, dtype=dt)
    pooled_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    added = {
        "text_embeds": torch.randn(2, pooled_dim, device=dev, dtype=dt),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, device=dev, dtype=dt),
    }
    t = torch.tensor(500, device=dev)
    start = time.perf_counter()
    with torch.inference_mode():
        extra = {}
        if pose:
            hint = torch.rand(2, 3, size, size, device=dev, dtype=dt)
            down, mid = cache.controlnet()(
                latent, t, encoder_hidden_states=cond, controlnet_cond=hint, added_cond_kwargs=added,
                return_dict=False,
            )  # fmt: skip
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        unet(latent, t, encoder_hidden_states=cond, added_cond_kwargs=added, **extra)
    return time.perf_counter() - start


def run(folder: Path, size: int, steps: int, pose: bool, device: str | None) -> dict[str, object]:
    import torch

    from easyphoto.config import ModelConfig
    from easyphoto.diffusion.sdxl import SDXLCache, render_template
    from easyphoto.stages.text2photo import draw_body_pose, presets

    row: dict[str, object] = {}
    start = time.perf_counter()
    cache = SDXLCache(ModelConfig(template_model=str(folder), local_files_only=True), device=device)
    cache.components()
    if pose:
        cache.controlnet()
    row["load_s"] = time.perf_counter() - start
    row["unet_step_s"] = min(_unet_step(cache, size, pose) for _ in range(1 if steps <= 2 else 3))
    control = draw_body_pose(presets()["poses"]["half_body"], size, size) if pose else None
    start = time.perf_counter()
    image = render_template(
        cache, "a studio portrait photo of a person", "blurry", width=size, height=size, steps=steps,
        guidance_scale=7.0, seed=0, pose=control,
    )  # fmt: skip
    row["template_s"] = time.perf_counter() - start
    row["template30_s"] = row["template_s"] + max(0, DEFAULT_STEPS - steps) * row["unet_step_s"]
    row["extrapolated"] = steps < DEFAULT_STEPS
    row["peak_rss_gb"] = peak_rss_gb()
    row["device"] = (
        f"{cache.device} {str(cache.dtype).removeprefix('torch.')}, {torch.get_num_threads()} thread(s)"
    )
    row["image"] = image
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full-size", metavar="DIR", type=Path, help="full-size random SDXL folder (built if absent)"
    )
    parser.add_argument(
        "--size", type=int, default=1024, help="template side in pixels (1024, SDXL's native)"
    )
    parser.add_argument("--steps", type=int, default=None, help="template steps (tiny: 30, full-size: 1)")
    parser.add_argument(
        "--pose", action="store_true", help="hold the template to a pose (openpose ControlNet)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default=None, help="cpu / cuda / mps (auto)")
    parser.add_argument("--save", type=Path, default=None, help="save the template here (PNG)")
    args = parser.parse_args()

    import torch

    from easyphoto.diffusion.tiny_sdxl import build_tiny_sdxl

    torch.set_num_threads(args.threads)
    full = args.full_size is not None
    keep = None if full else tempfile.TemporaryDirectory(prefix="easyphoto-sdxl-")
    folder = args.full_size if full else Path(keep.name) / "tiny-sdxl"  # type: ignore[union-attr]
    build = "(existing)"
    if not _complete(folder):
        start = time.perf_counter()
        build_tiny_sdxl(folder, seed=0, full_size=full)
        build = f"{time.perf_counter() - start:.1f}"
    steps = args.steps or (1 if full else DEFAULT_STEPS)
    row = run(folder, args.size, steps, args.pose, args.device)
    if args.save:
        from PIL import Image

        Image.fromarray(row["image"]).save(args.save)  # type: ignore[arg-type]
    label = ("full-size (random weights)" if full else "tiny") + (" + pose" if args.pose else "")
    print(f"\nSDXL template benchmark — {row['device']}, {args.size}×{args.size} px, CFG 7 (batch 2)\n")
    cols = f"template s ({steps} steps) | {DEFAULT_STEPS} steps s"
    print(f"| model | build s | load s | UNet step s | {cols} | peak RSS GB |")
    print("|" + "---|" * 7)
    t30 = f"{row['template30_s']:.1f}" + (" (extrapolated)" if row["extrapolated"] else "")
    print(
        f"| {label} | {build} | {row['load_s']:.2f} | {row['unet_step_s']:.3f} | {row['template_s']:.1f} | "
        f"{t30} | {row['peak_rss_gb']:.2f} |"
    )


if __name__ == "__main__":
    main()
