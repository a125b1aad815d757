"""What the IP-Adapter costs per portrait: the image encoder once per user, and per UNet step.

Builds SD1.5's real UNet with random weights plus a random full-face IP-Adapter of the real shapes
(CLIP ViT-H/14 encoder, 257 tokens into every cross-attention), then times:

* the encoder on one 224 px face (paid once per user: the embeddings are cached with the user model);
* one CFG UNet step (batch 2) at ``--size`` px without the adapter and with it at scale 0.7;
  the ratio is the per-step overhead (target ≤ 1.10×).

    python benchmarks/ip_adapter.py [--size 512] [--repeat 2] [--tiny]

``--tiny`` runs the same on the tiny model in seconds (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side, px (latents are size/8)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from easyphoto.diffusion.tiny import IP_ADAPTER_FILE, write_ip_adapter

    full = not args.tiny
    if full:
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2,
            attention_head_dim=8,
        )  # fmt: skip
    else:
        from easyphoto.diffusion.tiny import tiny_components

        unet = tiny_components()["unet"]
    unet.eval().requires_grad_(False)
    cross = unet.config.cross_attention_dim
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_ip_adapter(Path(tmp), unet, full_size=full)
        built = time.perf_counter() - t
        pipe = StableDiffusionPipeline(
            vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=None, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        latents = torch.randn(2, 4, args.size // 8, args.size // 8)
        text = torch.randn(2, 77, cross)
        step = torch.tensor(500)

        def plain() -> None:
            with torch.no_grad():
                unet(latents, step, encoder_hidden_states=text)

        t_plain = _best(plain, args.repeat)
        t = time.perf_counter()
        pipe.load_ip_adapter(
            tmp, subfolder="models", weight_name=IP_ADAPTER_FILE, image_encoder_folder="image_encoder"
        )
        loaded = time.perf_counter() - t
        from PIL import Image

        face = Image.fromarray((np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8))

        def encode():
            with torch.no_grad():
                return pipe.encode_image(face, "cpu", 1, output_hidden_states=True)

        t_encode = _best(encode, 1)
        pos, neg = encode()
        pipe.set_ip_adapter_scale(0.7)
        embeds = torch.cat([neg, pos])

        def with_ip() -> None:
            with torch.no_grad():
                unet(latents, step, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [embeds]})

        t_ip = _best(with_ip, args.repeat)
    print(f"model: {'full-size SD1.5 UNet + ViT-H/14 encoder' if full else 'tiny'} (random weights), "
          f"{args.size} px, CFG batch 2, {args.threads} thread(s)")  # fmt: skip
    print(f"build adapter files: {built:.1f} s; load_ip_adapter: {loaded:.1f} s")
    print(f"image encoder, one face (once per user): {t_encode:.2f} s")
    print(f"UNet step without adapter: {t_plain:.2f} s; with adapter at 0.7: {t_ip:.2f} s")
    print(f"per-step overhead ratio: {t_ip / t_plain:.3f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
